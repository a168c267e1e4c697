"""Registration with lookup services (the seed's ``registerLS``): ``settings.py`` the
``[registration]`` section, ``registrar.py`` the supervised thread that registers each service,
keeps it alive, registers it again when the lookup service forgot it, and deregisters on stop.
The daemon gives it the registrants (each service's ``lookup_data``, the measurement point's
tests)."""

from __future__ import annotations

from netsonde.registration.registrar import Registrant, Registrar
from netsonde.registration.settings import NAME, SECTIONS, RegistrationSection

__all__ = ["NAME", "SECTIONS", "Registrant", "Registrar", "RegistrationSection"]
