"""The directories the daemon writes in, checked before it starts: a directory it cannot use
is one line naming the config key, the directory and what is wrong, not a file system error
from somewhere inside the start-up."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from netsonde.config import Config


class DirectoryError(Exception):
    """A directory the daemon needs cannot be created, read or written."""


def check(directory: Path, key: str) -> None:
    """Create ``directory`` if it is missing, then create, list and remove a file in it, as the
    daemon will. Raises DirectoryError naming ``key`` (the config key that set it)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise DirectoryError(f"{key} {directory}: a file is in the way, not a directory") from None
    except OSError as e:
        raise DirectoryError(f"{key} {directory}: cannot create it: {_reason(e)}") from None
    if not directory.is_dir():  # a symlink to a file
        raise DirectoryError(f"{key} {directory}: not a directory")
    try:
        os.listdir(directory)
    except OSError as e:
        raise DirectoryError(f"{key} {directory}: cannot read it: {_reason(e)}") from None
    try:
        fd, name = tempfile.mkstemp(prefix=".netsonde-check-", dir=directory)
    except OSError as e:
        raise DirectoryError(
            f"{key} {directory}: cannot create files in it: {_reason(e)}"
        ) from None
    os.close(fd)
    os.unlink(name)


def _reason(e: OSError) -> str:
    return e.strerror or str(e)


def check_all(cfg: Config) -> None:
    """Every directory the daemon writes in: the data directory and the pidfile's (where the
    status file is written too)."""
    check(cfg.data_dir, "[daemon] data_dir")
    if cfg.pidfile.parent != cfg.data_dir:
        check(cfg.pidfile.parent, "the directory of [daemon] pidfile")
