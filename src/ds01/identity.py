"""Who is calling, from the kernel only (SO_PEERCRED); whether they are an admin (the one rule:
is_admin); the caller cache api.sock and the gate share; and the one username sanitiser.

Must not trust any name a client sends: the uid comes from the socket, the name and groups
from NSS (so LDAP users work). NSS may be slow (LDAP): the event loop asks CallerCache, which
looks up in threads of its own.
"""

from __future__ import annotations

import asyncio
import dataclasses
import grp
import hashlib
import os
import pwd
import re
import socket
import struct
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

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


def not_yours(name: str) -> str:
    """The one wording for a container the caller may not touch, in the CLI and the gate alike:
    it says the same whether the container is another user's or does not exist, so it reveals
    neither that the name is taken nor by whom."""
    return f"you have no container named '{name}'"


def user_slice(user: str) -> str:
    """systemd slice (cgroup parent) for a user's containers."""
    return f"ds01-{sanitize_username(user)}.slice"


@dataclass(frozen=True)
class Caller:
    """A process at the other end of a socket (or a container's owner, pid 0): its account and
    Unix groups. Whether it is an admin depends on the config too: is_admin(caller, config)."""

    uid: int
    gid: int
    pid: int
    name: str
    groups: frozenset[str]
    # Group IDs from the same NSS answer as `groups` (primary included), so that judging a
    # container's groups (services/invariants.py) asks NSS nothing more; empty when not known.
    gids: frozenset[int] = frozenset()

    @property
    def is_root(self) -> bool:
        return self.uid == 0


class AdminRule(Protocol):
    """What is_admin needs of the config (ds01.config.Config): the admin group, and whether the
    file places a user among the admins."""

    @property
    def admin_group(self) -> str: ...

    def is_admin(self, user: str, unix_groups: Iterable[str] = ...) -> bool: ...


def is_admin(caller: Caller, config: AdminRule) -> bool:
    """The one admin rule: root, or an admin by the config (in the Unix group `admin_group`, or
    placed by the file in the admin group; Config.is_admin)."""
    return caller.is_root or config.is_admin(caller.name, caller.groups)


def require_admin(caller: Caller, config: AdminRule, what: str) -> None:
    """PermissionDenied unless is_admin; `what` names the action ("draining GPUs")."""
    if not is_admin(caller, config):
        raise PermissionDenied(
            f"{what} is for admins",
            why=f"You ({caller.name}) are not root or in the '{config.admin_group}' group.",
            fix="Ask a lab admin.",
        )


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return pid, uid, gid


def group_ids(user: str, primary_gid: int) -> frozenset[int]:
    """The IDs of a user's groups via NSS, the primary one included (getgrouplist covers
    LDAP/SSSD)."""
    try:
        return frozenset({primary_gid, *os.getgrouplist(user, primary_gid)})
    except OSError:
        return frozenset({primary_gid})


def group_names(gids: Iterable[int]) -> frozenset[str]:
    """The names of these group IDs (NSS); an ID without a name is left out."""
    names: set[str] = set()
    for gid in gids:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:
            continue
    return frozenset(names)


def unix_groups(user: str) -> frozenset[str]:
    """A user's group names by account name (NSS); empty when NSS does not know the user."""
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return frozenset()
    return group_names(group_ids(user, pw.pw_gid))


def caller_from_uid(uid: int, gid: int, pid: int) -> Caller:
    """Blocking (NSS): the event loop asks CallerCache.get instead."""
    try:
        pw = pwd.getpwuid(uid)
    except KeyError:
        raise PermissionDenied(
            f"uid {uid} has no user name",
            why="ds01 identifies callers by their account, and NSS does not know this uid.",
            fix="Ask an admin to check the account (getent passwd).",
        ) from None
    gids = group_ids(pw.pw_name, pw.pw_gid)
    return Caller(uid=uid, gid=gid, pid=pid, name=pw.pw_name, groups=group_names(gids), gids=gids)


def caller_of_name(name: str) -> Caller:
    """The owner of a container as a Caller (their limits, their groups), for what ds01d does on
    their behalf: restarting, judging or re-allocating their container. Blocking (NSS)."""
    try:
        pw = pwd.getpwnam(name)
    except KeyError:
        raise NotFound(
            f"the owner {name!r} has no account",
            fix="Ask an admin to check the account (getent passwd).",
        ) from None
    return caller_from_uid(pw.pw_uid, pw.pw_gid, 0)


CALLER_TTL_S = 30.0
NSS_THREADS = 4


class CallerCache:
    """(uid, gid) → Caller for `ttl` seconds, for api.sock and the gate alike (one instance in
    ds01d): an NSS (LDAP) lookup is too slow to do per request, and never runs on the event loop.

    Lookups run in threads of the cache's own, so that they never queue behind worker threads
    waiting for the state database's lock; connections of one uid arriving together share one
    lookup. A failed lookup (an unknown uid) is not kept: the next connection asks again.
    """

    def __init__(self, ttl: float = CALLER_TTL_S, threads: int = NSS_THREADS) -> None:
        self.ttl = ttl
        self._items: dict[tuple[int, int], tuple[float, Caller]] = {}
        self._pending: dict[tuple[int, int], asyncio.Future[Caller]] = {}
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ds01-nss")
        self._names: dict[str, tuple[float, Caller]] = {}

    def of_name(self, name: str) -> Caller:
        """An allocation's owner as a Caller (caller_of_name), kept for `ttl` seconds: ds01d's
        own passes over every allocation (the lifecycle, each sample) would otherwise ask NSS
        once per allocation per pass. Blocking on a miss: call it from a worker thread, never
        the event loop. An account NSS does not know is kept too, as a Caller without groups
        (uid and gid -1), so its allocations are judged on the defaults, not skipped."""
        hit = self._names.get(name)
        now = time.monotonic()
        if hit is not None and now - hit[0] < self.ttl:
            return hit[1]
        try:
            caller = caller_of_name(name)
        except NotFound:
            caller = Caller(uid=-1, gid=-1, pid=0, name=name, groups=frozenset())
        self._names[name] = (now, caller)
        return caller

    async def get(self, pid: int, uid: int, gid: int) -> Caller:
        """The caller with this socket peer's credentials (pid is the peer's own)."""
        key = (uid, gid)
        hit = self._items.get(key)
        if hit is not None and time.monotonic() - hit[0] < self.ttl:
            return dataclasses.replace(hit[1], pid=pid)
        fut = self._pending.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().run_in_executor(
                self._pool, caller_from_uid, uid, gid, pid
            )
            self._pending[key] = fut
            fut.add_done_callback(lambda f: self._looked_up(key, f, time.monotonic()))
        # Shielded: one waiter's cancellation (its client went away) leaves the lookup to the
        # others.
        return dataclasses.replace(await asyncio.shield(fut), pid=pid)

    def _looked_up(self, key: tuple[int, int], fut: asyncio.Future[Caller], at: float) -> None:
        self._pending.pop(key, None)
        if not fut.cancelled() and fut.exception() is None:
            self._items[key] = (at, fut.result())

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
