"""GPU requests in a container create (HostConfig.DeviceRequests) become ds01 allocations.

`--gpus N` → N whole GPUs; `--gpus '"device=ID,…"'` → exactly those units (UUIDs from
`ds01 gpu status`, or whole-GPU indices), honoured only when they are free and within quota;
`--gpus all` → refused with a hint, unless the gate settings map it to the caller's maximum.
The scheduler decides (same quotas and texts as `ds01 container deploy`); the request is then
rewritten to exactly the allocated UUIDs (driver nvidia), never a count. Every container made
through the gate gets an allocation, a CPU-only one when it asks for no GPU, as deploy does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ds01.errors import Ds01Error, Refusal, RefusalReason, UsageError
from ds01.gate.engine import seg
from ds01.gate.policy.context import Ctx
from ds01.gate.policy.jsonbody import as_int, as_list, as_str, as_str_map, canonical
from ds01.gate.refusal import GateRefusal, from_error
from ds01.model.inventory import Unit, UnitKind
from ds01.runtime.spec import NVIDIA_DRIVER
from ds01.scheduler.snapshot import Request, RequestKind
from ds01.services.allocation import AllocationRequest
from ds01.services.status import quota
from ds01.store.allocations import AllocationRow
from ds01.store.intents import Intent, IntentOp

REQUEST_FIELDS = ("Driver", "Count", "DeviceIDs", "Capabilities", "Options")


@dataclass(frozen=True)
class Wait:
    """What a create that may wait in the queue waits for (gate.queue: wait)."""

    request: AllocationRequest
    refusal: Refusal  # the scheduler's no_capacity refusal, word for word
    what: str  # '--gpus 2'


class WaitInLine(Exception):
    """Raised by allocate() instead of a capacity refusal when the create may wait; the gate
    (gate/queued.py) holds the request open and judges it again once the queue admits it."""

    def __init__(self, wait: Wait) -> None:
        super().__init__(wait.what)
        self.wait = wait


@dataclass(frozen=True)
class GpuAsk:
    """count: N GPUs, -1 for all; device_ids: specific units (count is then 0)."""

    count: int
    device_ids: tuple[str, ...] = ()


def parse(value: Any) -> GpuAsk | None:
    """The one GPU request in DeviceRequests, or None. Anything else there is refused."""
    asks: list[GpuAsk] = []
    for i, raw in enumerate(as_list(value, "HostConfig.DeviceRequests")):
        where = f"HostConfig.DeviceRequests[{i}]."
        req = canonical(raw, REQUEST_FIELDS, where, rule="gpu.request")
        driver = as_str(req.get("Driver"), where + "Driver")
        caps = [
            str(c)
            for group in as_list(req.get("Capabilities"), where + "Capabilities")
            for c in as_list(group, where + "Capabilities")
        ]
        if driver not in ("", NVIDIA_DRIVER) or (driver == "" and "gpu" not in caps):
            raise GateRefusal(
                "create.devices",
                f"a device request for driver {driver or '(any)'} with capabilities "
                f"{caps or '(none)'} was refused",
                summary=f"DeviceRequests[{i}]",
            )
        if as_str_map(req.get("Options"), where + "Options"):
            raise GateRefusal("gpu.request", "GPU request options were refused")
        ids = tuple(str(x).strip() for x in as_list(req.get("DeviceIDs"), where + "DeviceIDs"))
        count = as_int(req.get("Count"), where + "Count")
        if ids and count:
            raise GateRefusal("gpu.request", "a GPU request with both a count and device IDs")
        if count < -1:
            raise GateRefusal("gpu.request", f"--gpus {count} is not a number of GPUs")
        if ids or count:
            asks.append(GpuAsk(count, ids))
    if len(asks) > 1:
        raise GateRefusal("gpu.request", "more than one --gpus request in one container")
    return asks[0] if asks else None


def docker_gpus(request: Request) -> str:
    """The suggested request (scheduler/options.py suggested()) as docker's --gpus: a number
    of whole GPUs, or a MIG slice by UUID (docker has no MIG profile option)."""
    if request.kind is RequestKind.MIG and request.profiles:
        return (
            f"--gpus '\"device=UUID\"' with the UUID of a free {request.profiles[0]} slice"
            " from 'ds01 gpu status'"
        )
    return f"--gpus {request.count}"


def describe(ask: GpuAsk | None) -> str:
    if ask is None:
        return "no GPU"
    if ask.device_ids:
        return f'--gpus "device={",".join(ask.device_ids)}"'
    return "--gpus all" if ask.count == -1 else f"--gpus {ask.count}"


async def _request(
    ctx: Ctx, ask: GpuAsk | None, name: str | None
) -> tuple[AllocationRequest, tuple[Unit, ...]]:
    """The allocation request for an ask, and the exact units wanted (for device=…)."""
    if ask is None:
        return AllocationRequest(RequestKind.CPU, container=name), ()
    if ask.count == -1:
        if ctx.config.gate.gpus_all != "max":
            _, suggested = await ctx.run(ctx.deps.allocations.offers, ctx.caller)
            raise GateRefusal(
                "gpu.all",
                "--gpus all was refused",
                fix=f"Ask for what your limits allow: {docker_gpus(suggested)} (see 'ds01 quota').",
                summary="--gpus all",
            )
        return AllocationRequest.from_options(gpus=await _most(ctx), container=name), ()
    if ask.count > 0:
        return AllocationRequest.from_options(gpus=ask.count, container=name), ()
    views = [v for v in await ctx.run(ctx.deps.allocations.status) if not v.unit.gone]
    by_uuid = {v.unit.unit.uuid: v.unit.unit for v in views}
    by_name = {u.name: u for u in by_uuid.values() if u.kind is UnitKind.MIG}
    chosen = []
    for dev in ask.device_ids:
        unit = by_uuid.get(dev) or by_name.get(dev)  # a UUID, or a slice's name ('7/1.0')
        if unit is None and dev.isdigit():
            matches = [u for u in by_uuid.values() if u.gpu_index == int(dev)]
            whole = [u for u in matches if u.kind is UnitKind.GPU]
            if matches and not whole:
                raise GateRefusal(
                    "gpu.request",
                    f"GPU {dev} is split into MIG slices and cannot be given whole",
                    fix="Name a MIG slice by its UUID or its name such as "
                    f"'{matches[0].name}' (see 'ds01 gpu status'), or use --gpus N.",
                )
            unit = whole[0] if whole else None
        if unit is None:
            raise GateRefusal("gpu.request", f"there is no GPU or MIG unit {dev!r} on this machine")
        chosen.append(unit)
    wanted = tuple(dict.fromkeys(u.uuid for u in chosen))
    kinds = {u.kind for u in chosen}
    if kinds == {UnitKind.GPU}:
        req = AllocationRequest.from_options(gpus=len(wanted), container=name)
    elif kinds == {UnitKind.MIG}:
        profiles = tuple(u.profile or "" for u in chosen)
        if not all(profiles):
            raise GateRefusal("gpu.request", "a MIG unit without a known profile was named")
        req = AllocationRequest.from_options(mig=profiles, container=name)
    else:
        raise GateRefusal("gpu.request", "whole GPUs and MIG slices in one request")
    return req, tuple({u.uuid: u for u in chosen}.values())


async def _most(ctx: Ctx) -> int:
    """`--gpus all` mapped to a number: the whole GPUs the caller may still take (at least 1,
    so that a caller with none left gets the scheduler's quota refusal)."""
    q = await ctx.run(quota, ctx.deps.allocations, ctx.caller)
    most = q.resolved.limits.max_units_per_container
    return max(1, min(most, math.floor(float(q.left))))


async def _forget_removed(ctx: Ctx, name: str) -> None:
    """Release the caller's live allocations named `name` whose container is gone (Docker's
    destroy event may not have been handled yet when the name is reused at once)."""
    svc = ctx.deps.allocations
    for row in await ctx.run(svc.live_allocations, ctx.caller, False):
        if row.container != name or row.container_id is None:
            continue
        status, _ = await ctx.engine.get(f"/containers/{seg(row.container_id)}/json")
        if status == 404:
            await ctx.run(svc.release_by_daemon, row.id, "container_removed")


async def allocate(ctx: Ctx, ask: GpuAsk | None, name: str | None) -> AllocationRow:
    """Allocate for a container about to be created; GateRefusal with the scheduler's texts.
    After a wait in the queue, the admitted allocation instead. WaitInLine when capacity (not
    quota) refuses a count of GPUs and the config says such a create waits (gate.queue)."""
    if ctx.admitted is not None:
        return ctx.admitted
    try:
        req, units = await _request(ctx, ask, name)
        wanted = tuple(u.uuid for u in units)
    except UsageError as err:
        raise GateRefusal("gpu.request", f"{describe(ask)} was refused: {err.what}") from None
    svc = ctx.deps.allocations
    if name:
        await _forget_removed(ctx, name)
    try:
        # The intent lets a restarted ds01d remove the container if the create dies half-way
        # (services/recovery.py); activate or release closes it.
        row = await ctx.run(
            svc.allocate,
            ctx.caller,
            req,
            preferred_units=wanted,
            intent=Intent(IntentOp.CREATE, ctx.caller.name),
        )
    except Refusal as err:
        if (
            err.reason is RefusalReason.NO_CAPACITY
            and not wanted
            and ask is not None
            and ctx.config.gate.queue == "wait"
            and ctx.deps.queue is not None
        ):
            # A copy without the traceback: the scheduler's frames are not kept while it waits.
            refusal = Refusal(err.reason, err.what, err.why, err.fix)
            raise WaitInLine(Wait(req, refusal, describe(ask))) from None
        raise from_error("gpu.quota", err) from None
    except Ds01Error as err:
        raise from_error("gpu.quota", err) from None
    if wanted and sorted(u.uuid for u in row.units) != sorted(wanted):
        got = {u.uuid for u in row.units}
        await ctx.run(svc.release_by_daemon, row.id, "device_unavailable")
        busy = [f"{u.title} ({u.uuid})" for u in units if u.uuid not in got]
        raise GateRefusal(
            "gpu.device_unavailable",
            f"{describe(ask)} was refused: {', '.join(busy)} "
            f"{'is' if len(busy) == 1 else 'are'} not free",
        )
    return row
