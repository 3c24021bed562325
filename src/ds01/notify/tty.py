"""The terminal channel: write a message to every terminal a user is logged in on.

Owns finding a user's terminals — login sessions from utmp (what `who` reads), plus any
pseudo-terminal under /dev/pts the user owns (tmux and screen panes are often not in utmp) —
and writing to them the way `wall` does. Must not block: terminals are opened non-blocking and
one that cannot take the message now is skipped, never waited for. A terminal is written only
if it is a character device owned by the user at the moment it is open (checked on the open
descriptor), so a stale utmp line or a reassigned pty never reaches someone else.
"""

from __future__ import annotations

import os
import pwd
import re
import stat
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from ds01.timetext import clock

UTMP_PATH = Path("/var/run/utmp")
PTS_DIR = Path("/dev/pts")
DEV_DIR = Path("/dev")

# struct utmp (glibc, Linux; the same on x86_64 and aarch64): 384 bytes.
#   short ut_type; (2 pad) pid_t ut_pid; char ut_line[32]; char ut_id[4]; char ut_user[32];
#   char ut_host[256]; struct {short e_termination, e_exit}; int32 ut_session;
#   struct {int32 tv_sec, tv_usec}; int32 ut_addr_v6[4]; char unused[20];
UTMP_RECORD = struct.Struct("<h2xi32s4s32s256shhi2i4i20x")
USER_PROCESS = 7

# C0 controls except newline, DEL and C1 controls: nothing that can move a cursor or start an
# escape sequence reaches a terminal.
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


@dataclass(frozen=True)
class UtmpEntry:
    type: int
    pid: int
    line: str  # terminal relative to /dev: "pts/3", "tty1"
    user: str
    host: str
    login_time: int


def _text(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def read_utmp(path: Path = UTMP_PATH) -> list[UtmpEntry]:
    """Every record of a utmp file; an absent or unreadable file has none."""
    try:
        data = path.read_bytes()
    except OSError:
        return []
    out: list[UtmpEntry] = []
    size = UTMP_RECORD.size
    for off in range(0, len(data) - size + 1, size):
        ut_type, pid, line, _id, user, host, _term, _exit, _session, sec, _usec, *_addr = (
            UTMP_RECORD.unpack_from(data, off)
        )
        out.append(UtmpEntry(ut_type, pid, _text(line), _text(user), _text(host), sec))
    return out


def pack_utmp(entry: UtmpEntry) -> bytes:
    """One utmp record (tests and demos write these; ds01 itself only reads utmp)."""
    return UTMP_RECORD.pack(
        entry.type,
        entry.pid,
        entry.line.encode()[:32],
        entry.line.encode()[-4:],
        entry.user.encode()[:32],
        entry.host.encode()[:256],
        0,
        0,
        0,
        entry.login_time,
        0,
        0,
        0,
        0,
        0,
    )


def _owned_char_device(path: Path, uid: int) -> bool:
    try:
        st = path.stat(follow_symlinks=False)
    except OSError:
        return False
    return stat.S_ISCHR(st.st_mode) and st.st_uid == uid


def _login_terminal(line: str, dev: Path) -> Path | None:
    """A utmp line as a path under /dev, or None when it points anywhere else."""
    if not line or line.startswith("/") or ".." in line.split("/") or ":" in line:
        return None  # X displays (":0") and anything that is not a terminal under /dev
    return dev / line


def terminals_of(
    uid: int,
    *,
    utmp: Path = UTMP_PATH,
    pts_dir: Path = PTS_DIR,
    dev: Path = DEV_DIR,
) -> list[Path]:
    """The user's terminals: utmp login sessions, then other ptys they own; each once."""
    # Ownership decides, not utmp's user field: it keeps only 32 bytes of a name (LDAP names
    # can be longer) and login programs chown the terminal to the user they log in.
    found: dict[Path, None] = {}
    for e in read_utmp(utmp):
        if e.type != USER_PROCESS:
            continue
        path = _login_terminal(e.line, dev)
        if path is not None and _owned_char_device(path, uid):
            found[path] = None
    for path in _ptys(pts_dir):
        if _owned_char_device(path, uid):
            found[path] = None
    return list(found)


def _ptys(pts_dir: Path) -> Iterator[Path]:
    try:
        names = sorted(os.listdir(pts_dir), key=lambda n: (len(n), n))
    except OSError:
        return
    for n in names:
        if n.isdigit():
            yield pts_dir / n


def sanitize(message: str) -> str:
    return _CONTROL.sub("", message)


def banner(message: str, when: datetime | None = None) -> bytes:
    """The bytes written to a terminal: a header line like wall's, then the message."""
    at = clock(when or datetime.now())
    body = sanitize(message).strip("\n").replace("\n", "\r\n")
    return f"\r\n\r\n*** ds01: message from ds01d at {at} ***\r\n{body}\r\n\r\n".encode()


def write_terminal(path: Path, uid: int, data: bytes) -> None:
    """Write to one terminal without blocking; OSError when it is not the user's or is full."""
    fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISCHR(st.st_mode) or st.st_uid != uid:
            raise PermissionError(f"{path} is not a terminal owned by uid {uid}")
        view = memoryview(data)
        while view:
            n = os.write(fd, view)  # BlockingIOError when the terminal stopped reading
            view = view[n:]
    finally:
        os.close(fd)


@dataclass(frozen=True)
class TtyResult:
    written: tuple[str, ...]
    failed: tuple[str, ...]  # "path: why"


def write_to_user(
    user: str,
    message: str,
    *,
    utmp: Path = UTMP_PATH,
    pts_dir: Path = PTS_DIR,
    dev: Path = DEV_DIR,
    when: datetime | None = None,
) -> TtyResult:
    """Write the message to every terminal of `user` (none when NSS does not know them)."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return TtyResult((), ())
    data = banner(message, when)
    written: list[str] = []
    failed: list[str] = []
    for path in terminals_of(uid, utmp=utmp, pts_dir=pts_dir, dev=dev):
        try:
            write_terminal(path, uid, data)
        except OSError as e:
            failed.append(f"{path}: {e.strerror or e}")
        else:
            written.append(str(path))
    return TtyResult(tuple(written), tuple(failed))
