"""GPU and MIG unit endpoints: `ds01 gpu status` (services/status.py assembles it) and an
admin's drain / undrain."""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, off_loop, ok, parse_body
from ds01.api.schemas import DrainIn, StatusOut, UnitProcessOut, UnitStatusOut
from ds01.services.status import GpuStatus, UnitLine, UnitProcess, gpu_status


def process_out(p: UnitProcess) -> UnitProcessOut:
    if not p.owner_shown:  # another user's, under privacy: hide_others
        return UnitProcessOut(
            pid=None, name=None, owner="(hidden)", used_memory_mib=None, foreign=p.foreign
        )
    return UnitProcessOut(
        pid=p.pid, name=p.name, owner=p.owner, used_memory_mib=p.used_memory_mib, foreign=p.foreign
    )


def unit_status_out(line: UnitLine) -> UnitStatusOut:
    u, a = line.row.unit, line.allocation
    shown = a if line.holder_shown else None
    return UnitStatusOut(
        **convert.unit_out(u),
        drained=line.row.drained,
        drain_reason=line.row.drain_reason,
        user=shown.user if shown else ("(hidden)" if a else None),
        allocation_id=shown.id if shown else None,
        state=a.state.value if a else None,
        container=shown.container if shown else None,
        hold_until=convert.iso(a.hold_until) if a else None,
        utilization_pct=line.utilization_pct,
        memory_used_mib=line.memory_used_mib,
        processes=[process_out(p) for p in line.processes],
        busy=line.busy,
    )


def status_out(status: GpuStatus, backend: str) -> StatusOut:
    sample = status.sample
    return StatusOut(
        backend=backend,
        sampled_at=sample.taken_at.isoformat(timespec="seconds")
        if sample and sample.taken_at
        else None,
        units=[unit_status_out(line) for line in status.units],
        free_gpueq=round(float(status.free), 4),
        total_gpueq=round(float(status.total), 4),
        warnings=list(sample.warnings) if sample else [],
    )


async def get_status(request: web.Request) -> web.Response:
    deps = deps_of(request)
    status = await off_loop(gpu_status, deps.allocations, caller_of(request), deps.sample())
    return ok(status_out(status, deps.backend_name))


async def drain(request: web.Request) -> web.Response:
    body = await parse_body(request, DrainIn)
    undrain = request.match_info["op"] == "undrain"
    hit = await off_loop(
        deps_of(request).allocations.drain,
        caller_of(request),
        body.target,
        body.reason,
        drained=not undrain,
    )
    return ok({"units": hit, "drained": not undrain})
