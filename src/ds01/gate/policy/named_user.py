"""A named `--user` (`docker run/exec --user vscode`, VS Code Dev Containers' `remoteUser`) in
a container with host directories mounted: allowed exactly when the name means the caller.

Such a container must run as its owner (create.py, I9). A name means nothing to the gate by
itself: the engine would look it up in the container's /etc/passwd and /etc/group, which the
caller wrote (any image can say `vscode:x:0:0`, or give `vscode` another user's uid, or list
`vscode` in `root:x:0:vscode`). So the gate reads those two files itself, resolves the name as
runc does (the first entry with that name wins; `NAME` alone takes the entry's primary group;
`NAME:GROUP` the named or numeric group), allows it only when the uid is the caller's and the
gid one of the caller's groups, and forwards the numeric `uid:gid` pair — never the name, so
the engine cannot resolve it differently, and with the group explicit runc adds no
supplementary groups from the image's /etc/group.

The files are read from the *image* the container was made from (content-addressed, so an
answer is kept per image ID), through a probe container the gate creates from it — no
mounts, no network, never started — with the engine's archive API (HEAD for size and type,
then GET), and removes at once. Never from a host path (a symlinked /etc/passwd in a rootfs
would be followed on the host), and never through the user's container: for a container with
host directories the engine mounts them again, as root, for every archive read. Each file
must be a regular file of at most MAX_FILE_BYTES; anything else is refused. What the files
say decides only whether the caller meant themselves: whatever they contain, what runs is
the caller's uid and one of the caller's groups.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import tarfile
import time
from dataclasses import dataclass
from typing import Any

from ds01.gate.engine import query_json, seg
from ds01.gate.policy.context import Ctx
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.identity import Caller

MAX_FILE_BYTES = 1024 * 1024
CACHE_MAX = 256
PROBE_LABEL = "ds01.probe"
# Go's fs.ModeType (dir, symlink, named pipe, socket, device, char device, irregular): the
# engine's path stat gives the mode with these bits.
GO_MODE_TYPE = (1 << 31) | (1 << 27) | (1 << 25) | (1 << 24) | (1 << 26) | (1 << 21) | (1 << 19)


@dataclass(frozen=True)
class Accounts:
    """An image's /etc/passwd and /etc/group as runc reads them: the first entry of each name.
    users: name → (uid, gid), None for an entry whose ids are not numbers; groups: name →
    gid (None likewise)."""

    users: dict[str, tuple[int, int] | None]
    groups: dict[str, int | None]


def _number(text: str) -> int | None:
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 10 else None


def parse_passwd(text: str) -> dict[str, tuple[int, int] | None]:
    users: dict[str, tuple[int, int] | None] = {}
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) < 4 or not fields[0] or fields[0] in users:
            continue
        uid, gid = _number(fields[2]), _number(fields[3])
        users[fields[0]] = (uid, gid) if uid is not None and gid is not None else None
    return users


def parse_group(text: str) -> dict[str, int | None]:
    groups: dict[str, int | None] = {}
    for line in text.splitlines():
        fields = line.strip().split(":")
        if len(fields) < 3 or not fields[0] or fields[0] in groups:
            continue
        groups[fields[0]] = _number(fields[2])
    return groups


def is_named(user: str) -> bool:
    """True when `--user` names a user or group rather than giving numbers."""
    name, _, group = user.partition(":")
    return not name.isdigit() or (bool(group) and not group.isdigit())


@dataclass(frozen=True)
class Resolved:
    uid: int
    gid: int

    @property
    def spec(self) -> str:
        return f"{self.uid}:{self.gid}"


class Unresolvable(Exception):
    """The name cannot be resolved to numbers (not in the image, or a malformed entry)."""


def resolve(accounts: Accounts, user: str, caller_gid: int) -> Resolved:
    """`NAME`, `NAME:GROUP`, `UID:GROUP` or `NAME:GID` → numbers, as runc resolves them; a
    numeric uid with no group takes the caller's primary group (create.py does the same)."""
    name, _, group = user.partition(":")
    if name.isdigit():
        uid: int | None = int(name)
        gid: int | None = caller_gid
    else:
        if name not in accounts.users:
            raise Unresolvable(f"there is no user {name!r} in the image's /etc/passwd")
        entry = accounts.users[name]
        if entry is None:
            raise Unresolvable(f"the image's /etc/passwd entry for {name!r} is not readable")
        uid, gid = entry
    if group:
        if group.isdigit():
            gid = int(group)
        elif group not in accounts.groups:
            raise Unresolvable(f"there is no group {group!r} in the image's /etc/group")
        else:
            gid = accounts.groups[group]
            if gid is None:
                raise Unresolvable(f"the image's /etc/group entry for {group!r} is not readable")
    assert uid is not None and gid is not None
    return Resolved(uid, gid)


# Image ID (content-addressed: what it holds never changes) → its accounts, per engine.
_cache: dict[tuple[str, str], Accounts] = {}
_reading: dict[tuple[str, str], asyncio.Task[Accounts]] = {}
_swept: set[str] = set()  # engines whose leftover probes this process has removed
_STARTED = time.time()


async def image_accounts(ctx: Ctx, image_id: str) -> Accounts:
    """The image's accounts, read once per image (concurrent callers share one read)."""
    key = (ctx.config.docker.host, image_id)
    hit = _cache.get(key)
    if hit is not None:
        return hit
    task = _reading.get(key)
    if task is None:
        task = asyncio.ensure_future(_read_accounts(ctx, image_id))
        _reading[key] = task
        task.add_done_callback(lambda _t: _reading.pop(key, None))
    accounts = await asyncio.shield(task)
    if len(_cache) >= CACHE_MAX:
        _cache.clear()
    _cache[key] = accounts
    return accounts


async def _sweep_stale_probes(ctx: Ctx) -> None:
    """Once per engine and process, before its first probe: remove probes a ds01d that died
    mid-read left behind (never started; only this process makes them from now on)."""
    host = ctx.config.docker.host
    if host in _swept:
        return
    _swept.add(host)
    status, found = await ctx.engine.get(
        f"/containers/json?all=1&filters={query_json({'label': [PROBE_LABEL]})}"
    )
    for item in found if status == 200 and isinstance(found, list) else []:
        # Only those made before this process started: a probe of this process is in use.
        if isinstance(item, dict) and item.get("Id") and _created(item) < _STARTED:
            await ctx.engine.request("DELETE", f"/containers/{seg(str(item['Id']))}?force=1&v=1")


def _created(item: dict[str, Any]) -> float:
    value = item.get("Created")
    return float(value) if isinstance(value, int | float) else float("inf")


async def _read_accounts(ctx: Ctx, image_id: str) -> Accounts:
    await _sweep_stale_probes(ctx)
    status, made = await ctx.engine.request(
        "POST",
        "/containers/create",
        {
            "Image": image_id,
            "Entrypoint": ["/nonexistent"],
            "Cmd": [],
            "NetworkDisabled": True,
            "Labels": {PROBE_LABEL: "accounts"},
            "HostConfig": {"NetworkMode": "none"},
        },
    )
    if status != 201 or not isinstance(made, dict) or not made.get("Id"):
        raise LocalReply(
            502, f"ds01: the gate could not read the users of image {image_id[:19]} ({status})"
        )
    probe = str(made["Id"])
    try:
        passwd = await _read_file(ctx, probe, "/etc/passwd")
        group = await _read_file(ctx, probe, "/etc/group")
    finally:
        await ctx.engine.request("DELETE", f"/containers/{probe}?force=1&v=1")
    return Accounts(parse_passwd(passwd or ""), parse_group(group or ""))


async def _read_file(ctx: Ctx, container: str, path: str) -> str | None:
    """A small regular file from a container's filesystem; None when it does not exist."""
    target = f"/containers/{seg(container)}/archive?path={seg(path)}"
    head, _ = await ctx.engine.exchange("HEAD", target)
    if head.status == 404:
        return None
    stat = _path_stat(head.headers.get("X-Docker-Container-Path-Stat"))
    if head.status != 200 or stat is None:
        raise _unreadable(path, f"the engine answered {head.status}")
    mode, size = stat
    if mode & GO_MODE_TYPE:
        raise _unreadable(path, "it is not a regular file")
    if size > MAX_FILE_BYTES:
        raise _unreadable(path, f"it is larger than {MAX_FILE_BYTES // 1024} KiB")
    rhead, data = await ctx.engine.exchange("GET", target)
    if rhead.status != 200:
        raise _unreadable(path, f"the engine answered {rhead.status}")
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
            member = tar.next()
            if member is None or not member.isreg() or member.size > MAX_FILE_BYTES:
                raise _unreadable(path, "it is not a regular file")
            f = tar.extractfile(member)
            content = f.read(MAX_FILE_BYTES + 1) if f is not None else b""
    except tarfile.TarError:
        raise _unreadable(path, "the engine's archive could not be read") from None
    return content.decode("utf-8", errors="replace")


def _path_stat(header: str | None) -> tuple[int, int] | None:
    """(Go FileMode bits, size) from the engine's X-Docker-Container-Path-Stat header."""
    if not header:
        return None
    try:
        stat: Any = json.loads(base64.b64decode(header))
        return int(stat["mode"]), int(stat["size"])
    except (ValueError, KeyError, TypeError):
        return None


FIX = (
    "Use a user the image maps to your uid and group (VS Code Dev Containers: remoteUser with "
    "updateRemoteUserUID left on, see docs/devcontainers.md), --user $(id -u):$(id -g), or "
    "leave --user out and the gate runs it as you."
)


def _unreadable(path: str, why: str) -> Unresolvable:
    return Unresolvable(f"the image's {path} could not be read ({why})")


async def numeric_for_caller(
    ctx: Ctx, image_id: str, user: str, gids: set[int], *, rule: str, where: str
) -> str:
    """The numeric `uid:gid` a named --user stands for, when that is the caller and one of
    their groups (`gids`); else GateRefusal(rule) saying what the name is in the image."""
    caller: Caller = ctx.caller
    try:
        got = resolve(await image_accounts(ctx, image_id), user, caller.gid)
    except Unresolvable as err:
        raise GateRefusal(
            rule,
            f"{where} --user {user} with host directories mounted was refused: {err}",
            fix=FIX,
            summary=f"user {user}",
        ) from None
    if got.uid != caller.uid:
        raise GateRefusal(
            rule,
            f"{where} --user {user} with host directories mounted was refused: {user!r} is "
            f"uid {got.uid} in the image, not you (uid {caller.uid})",
            fix=FIX,
            summary=f"user {user}={got.spec}",
        )
    if got.gid not in gids:
        raise GateRefusal(
            rule,
            f"{where} --user {user} with host directories mounted was refused: its group is "
            f"gid {got.gid} in the image, which is not one of your groups (yours: {caller.gid})",
            fix=FIX,
            summary=f"user {user}={got.spec}",
        )
    return got.spec
