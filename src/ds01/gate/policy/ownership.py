"""Container-scoped operations: whose container is it? Asked of the engine, never guessed.

A container may be named in a path by name, full ID or ID prefix (and URL-encoded). The gate
inspects it on root's engine socket (GET /containers/{ref}/json), reads the owner ds01 recorded
for its full ID when the gate or `ds01 container deploy` created it (services/owners.py; the
ds01.owner label is a display copy that an image LABEL or a legacy build step can forge), and
forwards the request with the *full ID* in the path, so the engine acts on exactly the container
that was checked (a rename or a new container with the same name in between cannot redirect it).
A container without a record belongs to no user: only admins act on it. Missing containers are
answered 404 by the gate itself.

Container names with a '.' are ds01's namespace: '<sanitised user>.<name>' is what `ds01
container deploy` names a user's container, so only that user may create or rename to such a
name (check_container_name).

Admins (root, the admin group) may act on any container. Exec instances are checked through
their container. Also here: what start/restart/remove mean for the container's allocation, and
the per-operation rules (exec bodies, copying into containers with host directories, update).
"""

from __future__ import annotations

import os
import re
import time
from typing import Any

from ds01 import faults
from ds01.errors import Ds01Error, NotFound
from ds01.gate.engine import seg
from ds01.gate.policy import limits as limits_rules
from ds01.gate.policy import named_user
from ds01.gate.policy.context import OWNER_KEY, After, Ctx, Plan, recorded_owner
from ds01.gate.policy.jsonbody import (
    as_bool,
    as_list,
    as_str,
    canonical,
    dump,
    parse_object,
)
from ds01.gate.refusal import GateRefusal, LocalReply, from_error
from ds01.identity import Caller, caller_of_name, not_yours, sanitize_username
from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, container_info
from ds01.runtime.nvenv import env_problem
from ds01.runtime.spec import is_device_list_path
from ds01.services.owners import ObjectKind
from ds01.services.recovery import reallocation_request
from ds01.store.intents import Intent, IntentOp

EXEC_FIELDS = (
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "Detach",
    "DetachKeys",
    "Tty",
    "Env",
    "Cmd",
    "Privileged",
    "User",
    "WorkingDir",
    "ConsoleSize",
    "Container",  # sent by older SDKs; the engine uses the path (set to the checked ID below)
)
EXEC_START_FIELDS = ("Detach", "Tty", "ConsoleSize")
UPDATE_FIELDS = (
    "RestartPolicy",
    "CpuShares",
    "NanoCpus",
    "CpuPeriod",
    "CpuQuota",
    "CpusetCpus",
    "CpusetMems",
    "Memory",
    "MemoryReservation",
    "MemorySwap",
    "KernelMemory",
    "KernelMemoryTCP",
    "PidsLimit",
    "BlkioWeight",
)


_FULL_ID = re.compile(r"[0-9a-f]{64}")
INSPECT_TTL_S = 30.0
INSPECT_CACHE_MAX = 4096


async def inspect(ctx: Ctx, ref: str, *, kind: str = "container") -> dict[str, Any]:
    """The engine's inspect data for a container named by name, ID or ID prefix, with the
    owner ds01 recorded for its full ID (OWNER_KEY; read it with owner_of). Answers for a
    full ID are kept briefly (docker run asks attach, start and wait about the same ID): the
    parts the rules read are fixed at creation, and an ID is never reused."""
    full = _FULL_ID.fullmatch(ref) is not None
    if full:
        hit = ctx.deps.inspected.get(ref)
        if hit is not None and time.monotonic() - hit[0] < INSPECT_TTL_S:
            return await _with_owner(ctx, hit[1])
    status, data = await ctx.engine.get(f"/containers/{seg(ref)}/json")
    if status == 404:
        ctx.deps.inspected.pop(ref, None)
        raise LocalReply(404, f"No such {kind}: {ref}")
    if status != 200 or not isinstance(data, dict):
        raise LocalReply(502, f"ds01: the engine could not look up container {ref!r} ({status})")
    _keep(ctx, str(data.get("Id", "")), data)
    return await _with_owner(ctx, data)


def _keep(ctx: Ctx, full_id: str, data: dict[str, Any]) -> None:
    if len(ctx.deps.inspected) >= INSPECT_CACHE_MAX:
        ctx.deps.inspected.clear()
    ctx.deps.inspected[full_id] = (time.monotonic(), data)


def remember(ctx: Ctx, data: dict[str, Any], owner: str) -> None:
    """Keep the inspect data of a container just created, read fresh and judged (create.py),
    with the owner just recorded for it: the attach, wait and start that follow a create in
    `docker run` then find its owner without asking the engine again."""
    full_id = str(data.get("Id", ""))
    if _FULL_ID.fullmatch(full_id) is not None:
        _keep(ctx, full_id, {**data, OWNER_KEY: owner})


async def _with_owner(ctx: Ctx, data: dict[str, Any]) -> dict[str, Any]:
    """Look the owner record up unless one was found before: a record never changes once
    made, but one may appear after a first look (the gate records it when the engine has
    answered the create), so "no owner" is never kept."""
    if data.get(OWNER_KEY) is None:
        owners = ctx.deps.containers.owners
        data[OWNER_KEY] = await ctx.run(owners.owner, ObjectKind.CONTAINER, str(data.get("Id")))
    return data


def owner_of(data: dict[str, Any]) -> str | None:
    """The recorded owner of a container from inspect() (context.recorded_owner)."""
    return recorded_owner(data)


def check_container_name(ctx: Ctx, name: str) -> None:
    """Names with a '.' are '<sanitised user>.<name>', the names `ds01 container deploy` gives
    (identity.docker_container_name): a user may create or rename a container to one only
    under their own prefix, so nobody can squat the name of another user's next deploy."""
    bare = name.removeprefix("/")  # the engine accepts "/name" and stores "name"
    if "." not in bare or ctx.is_admin:
        return
    prefix = bare.split(".", 1)[0]
    mine = sanitize_username(ctx.caller.name)
    if prefix != mine:
        raise GateRefusal(
            "create.name_reserved",
            f"the container name {bare!r} was refused: names '<user>.<name>' are reserved for "
            f"that user's ds01 containers (yours start with '{mine}.')",
            summary=f"name {bare}",
        )


def short_name(data: dict[str, Any]) -> str:
    return str(data.get("Name", "")).lstrip("/") or str(data.get("Id", ""))[:12]


def require_owner(ctx: Ctx, data: dict[str, Any], ref: str, action: str) -> None:
    if ctx.is_admin or owner_of(data) == ctx.caller.name:
        return
    raise GateRefusal(
        "container.not_owner",
        f"you may not {action} container {ref!r}: {not_yours(ref)}",
        summary=f"{ctx.req.endpoint} on {short_name(data)}",
    )


async def owned(ctx: Ctx, ref: str, action: str) -> dict[str, Any]:
    data = await inspect(ctx, ref)
    require_owner(ctx, data, ref, action)
    return data


def host_binds(data: dict[str, Any]) -> list[str]:
    """Host paths bind-mounted into a container (from its inspect data)."""
    return [
        str(m.get("Source", ""))
        for m in data.get("Mounts") or []
        if isinstance(m, dict)
        and m.get("Type") == "bind"
        and not is_device_list_path(str(m.get("Destination") or ""))  # ds01's GPU list
    ]


ACTIONS = {
    "container.inspect": "inspect",
    "container.top": "list the processes of",
    "container.logs": "read the logs of",
    "container.changes": "inspect",
    "container.export": "export",
    "container.stats": "read the stats of",
    "container.resize": "resize",
    "container.start": "start",
    "container.stop": "stop",
    "container.restart": "restart",
    "container.kill": "kill",
    "container.update": "update",
    "container.rename": "rename",
    "container.pause": "pause",
    "container.unpause": "unpause",
    "container.attach": "attach to",
    "container.wait": "wait for",
    "container.remove": "remove",
    "container.archive_stat": "copy from",
    "container.archive_get": "copy from",
    "container.archive_put": "copy into",
    "container.exec": "run commands in",
    "container.commit": "commit",
}


def _with_id(ctx: Ctx, full_id: str) -> str:
    ref = ctx.req.params["id"]
    prefix = "/containers/"
    rest = ctx.req.path[len(prefix) + len(ref) :]
    return f"{prefix}{full_id}{rest}"


async def container_op(ctx: Ctx, body: bytes | None) -> Plan:
    """Any /containers/{id}/… operation: ownership, then the operation's own rule."""
    ref = ctx.req.params["id"]
    name = ctx.req.name
    data = await owned(ctx, ref, ACTIONS.get(name, "use"))
    full_id = str(data["Id"])
    plan = Plan(_with_id(ctx, full_id), list(ctx.req.query))
    if name in ARCHIVE_OPS and host_binds(data) and not ctx.caller.is_root:
        # The engine re-mounts every bind source as root for these, following a symlink
        # swapped in since: the host path could be anything by then. The caller can reach
        # those directories on the host anyway.
        raise GateRefusal(
            ARCHIVE_OPS[name],
            f"copying {'into' if name == 'container.archive_put' else 'out of'} container "
            f"{ref!r} was refused: it has host directories mounted "
            f"({', '.join(host_binds(data))})",
            summary=f"{ctx.req.endpoint} path={ctx.req.query_first('path')}",
        )
    if name == "container.exec":
        plan.body = await _check_exec(ctx, data, body or b"")
        await _judge_before_run(ctx, full_id, None, "running commands in")
    elif name == "container.update":
        plan.body = await _check_update(ctx, data, body or b"")
        plan.capture_response = True
        plan.after = _judge_after_update(ctx, full_id)
    elif name == "container.unpause":
        await _judge_before_run(ctx, full_id, None, "unpausing")
    elif name in ("container.start", "container.restart"):
        await _bind_allocation(ctx, data, plan)
        units = plan.notes.get("units")
        await _judge_before_run(ctx, full_id, units, ACTIONS[name] + "ing")
    elif name == "container.remove":
        plan.after = _release_after_remove(ctx, data)
    elif name == "container.rename":
        check_container_name(ctx, ctx.req.query_first("name") or "")
    return plan


ARCHIVE_OPS = {
    "container.archive_put": "container.archive_put",
    "container.archive_get": "container.archive_get",
    "container.archive_stat": "container.archive_get",
    "container.export": "container.archive_get",
}


async def _judge_before_run(
    ctx: Ctx, container_id: str, units: tuple[str, ...] | None, action: str
) -> None:
    """Refuse to let a container run (or run more) unless it holds every invariant as the
    engine stores it now. `units`: its allocation's units when the caller knows them (start),
    else read from its live allocation."""
    from ds01.gate.policy import outcome

    data = await outcome.fresh_inspect(ctx, container_id)
    owners = ctx.deps.containers.owners
    owner_name = await ctx.run(owners.owner, ObjectKind.CONTAINER, container_id)
    if owner_name is None:
        return  # no ds01 owner: only admins reach it, and they act with their own judgement
    owner = await ctx.run(_owner_caller, ctx, owner_name)
    if units is None:
        row = await ctx.run(ctx.deps.allocations.live_for_container_id, container_id)
        units = tuple(u.uuid for u in row.units) if row is not None else None
    found = await outcome.judge(ctx, data, owner, units)
    if found:
        raise outcome.refusal(short_name(data), action, found)


def _judge_after_update(ctx: Ctx, container_id: str) -> After:
    """An update is judged by what the engine then stored; a container it leaves outside the
    invariants is stopped (the engine cannot undo an update)."""

    async def after(status: int, _body: bytes | None) -> bytes | None:
        if status != 200:
            return None
        try:
            await _judge_before_run(ctx, container_id, None, "updating")
        except GateRefusal:
            await ctx.engine.request("POST", f"/containers/{container_id}/kill")
            raise
        return None

    return after


async def commit(ctx: Ctx, body: bytes | None) -> Plan:
    ref = ctx.req.query_first("container") or ""
    if not ref:
        return Plan(ctx.req.path, list(ctx.req.query))
    data = await owned(ctx, ref, "commit")
    query = [(k, str(data["Id"]) if k == "container" else v) for k, v in ctx.req.query]
    return Plan(ctx.req.path, query)


async def exec_op(ctx: Ctx, body: bytes | None) -> Plan:
    exec_id = ctx.req.params["id"]
    status, info = await ctx.engine.get(f"/exec/{seg(exec_id)}/json")
    if status == 404 or not isinstance(info, dict):
        raise LocalReply(404, f"No such exec instance: {exec_id}")
    container = str(info.get("ContainerID", ""))
    data = await inspect(ctx, container)
    require_owner(ctx, data, short_name(data), "run commands in")
    plan = Plan(ctx.req.path, list(ctx.req.query))
    if ctx.req.name == "exec.start":
        spec = canonical(
            parse_object(body or b"", "exec start", empty_ok=True), EXEC_START_FIELDS, ""
        )
        plan.body = dump(spec)
    return plan


# ---- exec -------------------------------------------------------------------------------


async def _check_exec(ctx: Ctx, data: dict[str, Any], body: bytes) -> bytes:
    spec = canonical(parse_object(body, "exec create"), EXEC_FIELDS, "")
    ref = short_name(data)
    if as_bool(spec.get("Privileged"), "Privileged"):
        raise GateRefusal(
            "exec.privileged",
            f"docker exec --privileged into {ref!r} was refused",
            summary=f"exec {ref} privileged",
        )
    own = set((data.get("Config") or {}).get("Env") or [])
    for entry in as_list(spec.get("Env"), "Env"):
        key, _, value = as_str(entry, "Env").partition("=")
        # The container's own value passes: VS Code and the Dev Containers CLI run commands
        # with the environment they read from the container (a variable read at exec does
        # not change the devices the container was created with).
        why = None if entry in own else env_problem(key, value)
        if why:
            raise GateRefusal(
                "create.reserved_env",
                f"docker exec -e {key} was refused: {why}",
                summary=f"exec {ref} env {key}",
            )
    user = as_str(spec.get("User"), "User")
    caller = ctx.caller
    if user and host_binds(data) and not caller.is_root and named_user.is_named(user):
        # `exec --user vscode` (VS Code's remoteUser): the numbers the image gives the name,
        # if they are the caller's.
        gids = await ctx.run(caller_gids, caller)
        user = spec["User"] = await named_user.numeric_for_caller(
            ctx, str(data.get("Image", "")), user, gids, rule="exec.user", where="docker exec"
        )
    if user and host_binds(data) and not caller.is_root and not user_is_caller(caller, user):
        raise GateRefusal(
            "exec.user",
            f"docker exec --user {user} into {ref!r} was refused: it has host directories mounted",
            summary=f"exec {ref} user {user}",
        )
    if user and host_binds(data) and not user.partition(":")[2]:
        # 'exec -u UID' alone runs with gid 0 (root's group): give it the caller's own group.
        spec["User"] = f"{user.partition(':')[0]}:{caller.gid}"
    if "Container" in spec:
        spec["Container"] = str(data["Id"])
    return dump(spec)


def user_is_caller(caller: Caller, user: str) -> bool:
    """'uid' or 'uid:gid' (numbers) naming the caller and one of their groups."""
    uid_text, _, gid_text = user.partition(":")
    if not uid_text.isdigit() or int(uid_text) != caller.uid:
        return False
    return not gid_text or (gid_text.isdigit() and int(gid_text) in caller_gids(caller))


def caller_gids(caller: Caller) -> set[int]:
    try:
        return {caller.gid, *os.getgrouplist(caller.name, caller.gid)}
    except OSError:
        return {caller.gid}


# ---- update -----------------------------------------------------------------------------


async def _check_update(ctx: Ctx, data: dict[str, Any], body: bytes) -> bytes:
    spec = canonical(
        parse_object(body, "container update"), UPDATE_FIELDS, "", rule="container.update"
    )
    limits = (await ctx.run(ctx.deps.allocations.limits_for, ctx.caller)).limits
    if not ctx.caller.is_root:
        limits_rules.check_caps(spec, limits, rule="container.update", partial=True)
    restart = canonical(spec.get("RestartPolicy"), ("Name", "MaximumRetryCount"), "RestartPolicy.")
    if (
        as_str(restart.get("Name"), "RestartPolicy.Name") not in ("", "no")
        and host_binds(data)
        and not ctx.caller.is_root
    ):
        raise GateRefusal(
            "create.restart_policy",
            f"a restart policy for {short_name(data)!r} was refused: it has host directories "
            "mounted",
        )
    return dump(spec)


# ---- host directories and allocations at start, restart and remove ---------------------


def _owner_caller(ctx: Ctx, owner: str) -> Caller:
    if owner == ctx.caller.name:
        return ctx.caller
    try:
        return caller_of_name(owner)
    except NotFound:
        raise GateRefusal(
            "container.reallocate", f"the owner {owner!r} of this container has no account"
        ) from None


async def _bind_allocation(ctx: Ctx, data: dict[str, Any], plan: Plan) -> None:
    """A ds01 container starts only with a live allocation: one released while the container
    was stopped is made again, on the same units, or the start is refused. The allocation is
    the one bound to the container's ID in the database, never one a label names."""
    owner = owner_of(data)
    if owner is None:
        return  # not made by ds01 or the gate (admins only get here)
    info = container_info(data)
    svc = ctx.deps.allocations
    row = await ctx.run(ctx.deps.containers.allocation_of, info)
    fresh = False
    if row is None:
        row = await _reallocate(ctx, info, owner)
        fresh = True
        faults.point("gate_start.reserved")
    alloc_id = row.id
    plan.notes["units"] = tuple(u.uuid for u in row.units)
    actor = ctx.caller.name

    async def after(status: int, _body: bytes | None) -> bytes | None:
        if status in (204, 304):
            if fresh:
                faults.point("gate_start.started")
            current = await ctx.run(svc.get_any, alloc_id)
            if current is not None and current.state is not AllocState.ACTIVE:
                await ctx.run(
                    svc.activate, alloc_id, container_id=info.id, actor=actor, reason="started"
                )
        elif fresh:
            await ctx.run(svc.release_by_daemon, alloc_id, "start_failed")
        return None

    async def abort() -> None:
        if fresh:
            await ctx.run(svc.release_by_daemon, alloc_id, "start_failed")

    plan.after = after
    plan.on_abort = abort


async def _reallocate(ctx: Ctx, info: ContainerInfo, owner_name: str) -> Any:
    """A new allocation for the recorded owner, on the container's units, shaped like the last
    allocation the database bound to this container (services/recovery.reallocation_request).
    Its intent record lets a restarted ds01d finish or undo the start (services/recovery.py)."""
    svc = ctx.deps.allocations
    owner = await ctx.run(_owner_caller, ctx, owner_name)
    request = await ctx.run(reallocation_request, svc, info, owner_name, info.short_name)
    wanted = tuple(info.gpu_device_ids)
    try:
        row = await ctx.run(
            svc.allocate,
            owner,
            request,
            existing_container=True,
            preferred_units=wanted,
            intent=Intent(IntentOp.START, owner_name, container_id=info.id),
        )
    except Ds01Error as err:
        raise from_error("gpu.quota", err) from None
    if sorted(u.uuid for u in row.units) != sorted(wanted):
        await ctx.run(svc.release_by_daemon, row.id, "restart_failed")
        raise GateRefusal(
            "container.reallocate",
            f"container {info.name!r} cannot start: its GPUs ({', '.join(wanted)}) are in use "
            "by another allocation",
        )
    return row


def _release_after_remove(ctx: Ctx, data: dict[str, Any]) -> After:
    """Once the engine has removed the container: release the allocation bound to its ID and
    drop its owner record (IDs are never reused, so this only keeps the table small)."""
    info = container_info(data)

    async def after(status: int, _body: bytes | None) -> bytes | None:
        if status != 204:
            return None
        ctx.deps.inspected.pop(info.id, None)
        row = await ctx.run(ctx.deps.containers.allocation_of, info)
        if row is not None:
            await ctx.run(ctx.deps.allocations.release_by_daemon, row.id, "container_removed")
        await ctx.run(ctx.deps.containers.owners.forget, ObjectKind.CONTAINER, info.id)
        return None

    return after
