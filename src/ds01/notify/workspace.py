"""The workspace channel: a notice appended to a file at the top of the container's mounted
workspace (the host directory behind /workspace), where the user sees it from inside the
container, in Jupyter's or VS Code's file list.

ds01d is root and the directory belongs to the user, who may have put anything under the
file's name: a symlink or hard link to a file of root's, a FIFO that would block the writer, a
device node (made as root inside their own container). So, in this order:
- the directory is opened once (O_DIRECTORY, O_NOFOLLOW on its last component) and must be a
  directory owned by the user; every later step is relative to that descriptor, so renaming
  or replacing the directory afterwards changes nothing;
- the file is opened O_PATH | O_NOFOLLOW, which opens nothing: no device's open() runs, no
  FIFO waits; a symlink fails with ELOOP;
- that descriptor must be a regular file owned by the user with one link (a hard link to
  someone else's file has two, or another owner);
- only then is that same inode opened for appending, through /proc/self/fd (never by name
  again, so nothing can be swapped in between), non-blocking;
- a missing file is created with O_EXCL (never opening what appeared meanwhile) and given to
  the user. A file over max_size is replaced by a new one made under a random name and
  renamed over it: rename replaces the name, never writes to what the name pointed at.
Nothing is ever truncated, followed, or written through a name twice.

Must not block the caller for long: the notifier runs it on its own worker (an NFS workspace
can hang), and raises OSError for every refusal, with why.
"""

from __future__ import annotations

import errno
import os
import secrets
import stat
from datetime import datetime
from pathlib import Path

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NEW_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_MODE = 0o644


def entry(message: str, when: datetime) -> bytes:
    """One notice as the file holds it: a header line with the date and time, the text."""
    body = "".join(c for c in message if c == "\n" or (c >= " " and c != "\x7f")).strip("\n")
    return f"--- ds01, {when:%Y-%m-%d %H:%M} ---\n{body}\n\n".encode()


def append(directory: Path, name: str, data: bytes, uid: int, gid: int, *, max_size: int) -> str:
    """Append `data` to `directory`/`name` as described above; returns what was done
    ("appended", "created", "started afresh"). OSError when it must not or cannot."""
    if "/" in name or name in ("", ".", ".."):
        raise OSError(errno.EINVAL, f"not a plain file name: {name!r}")
    dfd = os.open(directory, _DIR_FLAGS)
    try:
        st = os.fstat(dfd)
        if st.st_uid != uid:
            raise PermissionError(
                errno.EPERM, f"{directory} belongs to uid {st.st_uid}, not to the user ({uid})"
            )
        try:
            pfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            _create(dfd, name, data, uid, gid)
            return "created"
        try:
            size = _checked(pfd, name, uid)
            if size + len(data) > max_size:
                _replace(dfd, name, data, uid, gid)
                return "started afresh"
            _append_to(pfd, data)
        finally:
            os.close(pfd)
        return "appended"
    finally:
        os.close(dfd)


def _checked(pfd: int, name: str, uid: int) -> int:
    """The size of the file behind an O_PATH descriptor, if it is one ds01 may append to."""
    st = os.fstat(pfd)
    if stat.S_ISLNK(st.st_mode):
        raise OSError(errno.ELOOP, f"{name} is a symbolic link: not followed")
    if not stat.S_ISREG(st.st_mode):
        raise OSError(errno.EINVAL, f"{name} is not a regular file")
    if st.st_uid != uid:
        raise PermissionError(errno.EPERM, f"{name} belongs to uid {st.st_uid}, not the user")
    if st.st_nlink != 1:
        raise PermissionError(errno.EMLINK, f"{name} has {st.st_nlink} links: not written")
    return st.st_size


def _append_to(pfd: int, data: bytes) -> None:
    # Re-opening the O_PATH descriptor's own inode: the name is not looked up again.
    fd = os.open(f"/proc/self/fd/{pfd}", os.O_WRONLY | os.O_APPEND | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        if os.fstat(fd).st_ino != os.fstat(pfd).st_ino:
            raise OSError(errno.ESTALE, "the file changed while it was opened")
        _write_all(fd, data)
    finally:
        os.close(fd)


def _create(dfd: int, name: str, data: bytes, uid: int, gid: int) -> None:
    fd = os.open(name, _NEW_FLAGS, _MODE, dir_fd=dfd)
    try:
        os.fchown(fd, uid, gid)
        os.fchmod(fd, _MODE)  # whatever ds01d's umask
        _write_all(fd, data)
    finally:
        os.close(fd)


def _replace(dfd: int, name: str, data: bytes, uid: int, gid: int) -> None:
    temp = f".{name}.{secrets.token_hex(6)}"
    _create(dfd, temp, data, uid, gid)
    try:
        os.rename(temp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
    except OSError:
        os.unlink(temp, dir_fd=dfd)
        raise


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
