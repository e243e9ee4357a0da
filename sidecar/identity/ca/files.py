"""Atomic file writes: a reader (a sidecar watching its cert files, a second `sidecar ca`)
sees the old file or the new one, never half of one.

The data goes to a temporary file in the same directory, created 0600 and then given its
final mode (so a key is never readable by others, even for an instant), is flushed to disk, and is
renamed over the target; the directory is then synced so the rename survives a crash.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["KEY_MODE", "PUBLIC_MODE", "write_atomic"]

KEY_MODE = 0o600
PUBLIC_MODE = 0o644


def write_atomic(path: Path, data: bytes, mode: int = PUBLIC_MODE) -> None:
    # mkstemp creates the file 0600 whatever the umask; fchmod then sets the final mode.
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), mode)
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
