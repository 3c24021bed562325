"""Writing a file so that readers see the old content or the new, never a part: the one atomic
writer for ds01d's host-access file, `ds01 host apply`'s host files and `ds01 gpu sim set`."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


def write_atomic(
    path: Path, text: str, mode: int | None = None, *, keep_owner: bool = False
) -> None:
    """Replace `path` with `text` through a temporary file in the same directory and a rename.

    mode: the new file's mode (None: the old file's, else 0644). keep_owner: when running as
    root, give the new file the old one's owner and group (a host file an admin chowned).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.stat() if path.exists() else None
    if mode is None:
        mode = (old.st_mode & 0o7777) if old is not None else 0o644
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".ds01-tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as out:
            out.write(text)
            out.flush()
            os.fchmod(out.fileno(), mode)
            if keep_owner and old is not None and os.geteuid() == 0:
                os.fchown(out.fileno(), old.st_uid, old.st_gid)
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
