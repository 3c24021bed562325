"""`GET /v1/container-stats` and `/v1/container-stats/{name}` (issue 18, item 4): the running
containers' CPU, memory and GPUs, joined from what ds01d keeps in memory — the cgroup readings
of lifecycle/containerstats.py, the latest GPU sample (per-unit use, services/unituse.py) — and
the live allocations (one database read). No Docker call, except to tell "not running" from
"not yours" when a named container has no reading.

Privacy as `container list`: a user sees their own containers only, `?all=1` is for admins.
The path is not /v1/containers/stats: that is where a container named 'stats' is inspected.
"""

from __future__ import annotations

from collections.abc import Mapping

from aiohttp import web

from ds01.api import convert
from ds01.api.http import ApiDeps, caller_of, deps_of, flag, off_loop, ok
from ds01.api.schemas import ContainerStatsOut, UnitStatsOut
from ds01.errors import StateError
from ds01.identity import docker_container_name, validate_container_name
from ds01.lifecycle.containerstats import ContainerReading
from ds01.model.allocation import AllocState
from ds01.model.inventory import UnitKind
from ds01.scheduler.snapshot import UnitUse
from ds01.store.allocations import AllocationRow

MIG_NOTE = "MIG devices report no utilization (NVML); memory in use is their activity signal"


def _pct(used: int | None, limit: int | None) -> float | None:
    return None if used is None or not limit else round(100.0 * used / limit, 1)


def stats_out(
    row: AllocationRow,
    reading: ContainerReading | None,
    use: Mapping[str, UnitUse],
    gpu_sampled_at: str | None,
) -> ContainerStatsOut:
    assert row.container_id is not None
    fallback = row.container or row.container_id[:12]  # before the first read of it
    gpus = []
    for u in row.units:
        got = use.get(u.uuid)
        mig = u.kind is not UnitKind.GPU
        gpus.append(
            UnitStatsOut(
                uuid=u.uuid,
                name=u.name,
                model=u.model,
                profile=u.profile,
                memory_used_mib=got.memory_used_mib if got else None,
                memory_total_mib=u.memory_total_mib,
                utilization_pct=None if mig or got is None else got.utilization_pct,
                note=MIG_NOTE if mig else None,
            )
        )
    r = reading
    return ContainerStatsOut(
        name=r.name if r else fallback,
        docker_name=r.docker_name if r else fallback,
        id=row.container_id,
        owner=row.user,
        taken_at=convert.iso(r.taken_at) if r else None,
        cpu_pct=r.cpu_pct if r else None,
        cpu_limit=r.cpu_limit if r else None,
        memory_used_bytes=r.memory_used_bytes if r else None,
        memory_limit_bytes=r.memory_limit_bytes if r else None,
        memory_pct=_pct(r.memory_used_bytes, r.memory_limit_bytes) if r else None,
        gpus=gpus,
        gpu_sampled_at=gpu_sampled_at,
    )


def _running(deps: ApiDeps, user: str | None) -> list[ContainerStatsOut]:
    """Every running container's stats (user: only theirs), by owner and name."""
    readings = deps.container_stats()
    sample = deps.sample()
    taken = sample.taken_at.isoformat(timespec="seconds") if sample and sample.taken_at else None
    use = deps.allocations.unit_use()
    rows = [
        r
        for r in deps.allocations.all_live()
        # A running container holds an active allocation (a CPU-only one too).
        if r.state is AllocState.ACTIVE and r.container_id and (user is None or r.user == user)
    ]
    out = [stats_out(r, readings.get(r.container_id or ""), use, taken) for r in rows]
    return sorted(out, key=lambda s: (s.owner, s.name))


async def list_stats(request: web.Request) -> web.Response:
    deps = deps_of(request)
    caller = caller_of(request)
    if flag(request, "all"):
        deps.allocations.require_admin(caller, "reading everyone's container stats")
        return ok(await off_loop(_running, deps, None))
    return ok(await off_loop(_running, deps, caller.name))


async def one_stats(request: web.Request) -> web.Response:
    deps = deps_of(request)
    caller = caller_of(request)
    name = validate_container_name(request.match_info["name"])
    docker_name = docker_container_name(caller.name, name)
    for s in await off_loop(_running, deps, caller.name):
        if s.docker_name == docker_name or s.name == name:
            return ok(s)
    containers = deps.containers
    assert containers is not None  # served only with it (api/routes.py: Needs)
    view = await off_loop(containers.inspect, caller, name)  # not yours: NotFound
    raise StateError(
        f"'{name}' is not running ({view.info.state}): it has no stats",
        why="ds01d reads CPU, memory and GPU use of running containers only.",
        fix=f"Start it with: ds01 container start {name}",
    )
