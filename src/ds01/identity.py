"""Who is calling, from the kernel only (SO_PEERCRED), and the one username sanitiser.

Must not trust any name a client sends: the uid comes from the socket, the name and groups
from NSS (so LDAP users work).
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import re
import socket
import struct
from dataclasses import dataclass

from ds01.errors import NotFound, PermissionDenied, UsageError

_SAFE = re.compile(r"[a-z0-9]+")
_UNSAFE_RUN = re.compile(r"[^a-z0-9]+")
_CONTAINER_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]{0,62}")


def sanitize_username(name: str) -> str:
    """Deterministic, collision-free form of a user name for container, slice and group names.

    Names made only of [a-z0-9] are kept as they are. Any other name is lower-cased, runs of
    other characters become '_', and '_' plus 8 hex digits of the name's SHA-256 is appended,
    so 'h.baker@hertie-school.lan' → 'h_baker_hertie_school_lan_3f9a…'. A kept name has no
    '_', a changed one always has the hash: the two kinds cannot collide, and changed names
    differ unless their hashes do. No '-' is produced (systemd slice names treat it as nesting)
    and no '.' (ds01 uses it to join user and container name).
    """
    if not name:
        raise UsageError("empty user name", fix="Pass a real user name.")
    if _SAFE.fullmatch(name):
        return name
    base = _UNSAFE_RUN.sub("_", name.lower()).strip("_")[:40] or "user"
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{base}_{digest}"


def validate_container_name(name: str) -> str:
    """A user's short container name (the NAME in 'ds01 container deploy NAME')."""
    if not _CONTAINER_NAME.fullmatch(name) or ".." in name:
        raise UsageError(
            f"invalid container name {name!r}",
            why="Names are 1–63 characters: letters, digits, '_', '.', '-', starting with a "
            "letter or digit.",
            fix="Pick a name such as 'thesis' or 'exp-2'.",
        )
    return name


def docker_container_name(user: str, name: str) -> str:
    """The engine-side container name: '<sanitised user>.<name>'. The sanitised user never holds
    a '.', so the split is unambiguous and two (user, name) pairs never map to one name."""
    return f"{sanitize_username(user)}.{validate_container_name(name)}"


def user_slice(user: str) -> str:
    """systemd slice (cgroup parent) for a user's containers."""
    return f"ds01-{sanitize_username(user)}.slice"


@dataclass(frozen=True)
class Caller:
    uid: int
    gid: int
    pid: int
    name: str
    groups: frozenset[str]
    is_admin: bool

    @property
    def is_root(self) -> bool:
        return self.uid == 0


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def groups_of(user: str, primary_gid: int) -> frozenset[str]:
    """Group names of a user via NSS (getgrouplist covers LDAP/SSSD)."""
    names: set[str] = set()
    try:
        gids = os.getgrouplist(user, primary_gid)
    except OSError:
        gids = [primary_gid]
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def caller_from_uid(uid: int, gid: int, pid: int, admin_group: str | None) -> Caller:
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(
            f"uid {uid} has no user name",
            why="ds01 identifies callers by their account, and NSS does not know this uid.",
            fix="Ask an admin to check the account (getent passwd).",
        ) from None
    groups = groups_of(pw.pw_name, pw.pw_gid)
    is_admin = uid == 0 or (admin_group is not None and admin_group in groups)
    return Caller(uid=uid, gid=gid, pid=pid, name=pw.pw_name, groups=groups, is_admin=is_admin)


def caller_of_name(name: str, admin_group: str | None) -> Caller:
    """The owner of a container as a Caller (their limits, their groups), for what ds01d does on
    their behalf: restarting, judging or re-allocating their container."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise NotFound(
            f"the owner {name!r} has no account",
            fix="Ask an admin to check the account (getent passwd).",
        ) from None
    return caller_from_uid(pw.pw_uid, pw.pw_gid, 0, admin_group)


def caller_of_socket(sock: socket.socket, admin_group: str | None) -> Caller:
    pid, uid, gid = peer_credentials(sock)
    return caller_from_uid(uid, gid, pid, admin_group)
