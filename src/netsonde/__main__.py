"""``python -m netsonde``: the same as the ``netsonde`` command (used to re-execute)."""

from netsonde.cli import main

main()
