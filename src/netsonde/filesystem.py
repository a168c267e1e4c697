"""What is wrong with the file system under a directory, when a write there failed or a file
there stopped changing: read-only, out of space, out of inodes. What SQLite's "unable to open
database file" and a status file that is no longer updated leave out.

A bottom-layer module: it imports nothing from netsonde.
"""

from __future__ import annotations

import os
from pathlib import Path


def trouble(directory: Path) -> str | None:
    """One phrase ("/x is on a read-only file system"), or None when nothing is found."""
    try:
        st = os.statvfs(directory)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"{directory} is on a read-only file system"
    # f_bavail, not f_bfree: what a process that is not root may still use.
    if st.f_blocks and st.f_bavail == 0:
        return f"no space left on the file system of {directory}"
    if st.f_files and st.f_favail == 0:
        return f"no free inodes left on the file system of {directory}"
    return None
