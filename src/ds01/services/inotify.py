"""Linux inotify through ctypes: watch directories, read what changed in them, without blocking.

Small on purpose (ds01d watches /dev for the device watch, services/devicewatch.py): no library
on PyPI that ds01 already depends on does this, and the kernel interface is three calls. The
file descriptor is non-blocking and close-on-exec; the daemon registers it with its event loop
(`loop.add_reader`) and calls `read()` when it is readable. Linux only; `Inotify()` raises
OSError where inotify is unavailable (the caller then polls).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import struct
from dataclasses import dataclass

IN_ATTRIB = 0x00000004  # owner, mode, timestamps changed
IN_MOVED_FROM = 0x00000040
IN_MOVED_TO = 0x00000080
IN_CREATE = 0x00000100
IN_DELETE = 0x00000200
IN_DELETE_SELF = 0x00000400
IN_Q_OVERFLOW = 0x00004000  # events were lost: look at everything again
IN_IGNORED = 0x00008000  # the watch is gone (its directory was removed)
IN_ONLYDIR = 0x01000000
IN_NONBLOCK = os.O_NONBLOCK
IN_CLOEXEC = os.O_CLOEXEC

_HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)


@dataclass(frozen=True)
class Event:
    wd: int
    mask: int
    name: str  # the entry in the watched directory ("" for the directory itself)


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


class Inotify:
    def __init__(self) -> None:
        self._libc = _libc()
        fd = int(self._libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC))
        if fd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_init1: {os.strerror(err)}")
        self._fd = fd

    def fileno(self) -> int:
        return self._fd

    def add(self, path: str | os.PathLike[str], mask: int) -> int:
        """Watch a directory; returns the watch descriptor (the same one for the same path)."""
        wd = int(self._libc.inotify_add_watch(self._fd, os.fsencode(path), ctypes.c_uint32(mask)))
        if wd < 0:
            err = ctypes.get_errno()
            raise OSError(err, f"inotify_add_watch {path}: {os.strerror(err)}")
        return wd

    def read(self) -> list[Event]:
        """Every event queued now ([] when none: the descriptor does not block)."""
        events: list[Event] = []
        while True:
            try:
                data = os.read(self._fd, 64 * 1024)
            except BlockingIOError:
                return events
            except OSError as e:
                if e.errno == errno.EINTR:
                    continue
                raise
            if not data:
                return events
            offset = 0
            while offset + _HEADER.size <= len(data):
                wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
                raw = data[offset + _HEADER.size : offset + _HEADER.size + length]
                events.append(Event(wd, mask, os.fsdecode(raw.rstrip(b"\0"))))
                offset += _HEADER.size + length

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
