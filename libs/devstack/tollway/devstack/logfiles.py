"""Log files of the local stack's processes: private to the user who runs the stack.

A log may hold request ids, account ids and error details; nobody else on the machine reads it.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def open_private_log(path: Path) -> IO[bytes]:
    """Open ``path`` for appending, created (or narrowed to) mode 0600, in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.parent.chmod(PRIVATE_DIR)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
    os.fchmod(fd, PRIVATE_FILE)  # a file left by an older run may be world-readable
    return os.fdopen(fd, "ab")
