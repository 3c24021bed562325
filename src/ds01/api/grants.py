"""Bare-metal grant, access and host-process endpoints (docs/grants.md).

Every service call runs off the event loop (granting and revoking may also run gpasswd for
compute_gate: uvm). The host-process list is the watch's last scan: no /proc or NVML read per
request.
"""

from __future__ import annotations

from aiohttp import web

from ds01.api import convert
from ds01.api.http import caller_of, deps_of, off_loop, ok, parse_body
from ds01.api.schemas import AccessEntryOut, AccessOut, GrantIn, GrantOut, HostProcessOut, RevokeIn
from ds01.identity import require_admin
from ds01.services.grants import AccessEntry, GrantService
from ds01.services.hostproc import HostProcess
from ds01.store.grants import GrantRow


def grant_out(g: GrantRow) -> GrantOut:
    return GrantOut(
        id=g.id,
        user=g.user,
        granted_by=g.granted_by,
        reason=g.reason,
        granted_at=convert.iso(g.created_at) or "",
        until=convert.iso(g.until),
        permanent=g.until is None,
        ended_at=convert.iso(g.ended_at),
        end_reason=g.end_reason,
        ended_by=g.ended_by,
    )


def access_entry_out(e: AccessEntry) -> AccessEntryOut:
    g = e.grant
    return AccessEntryOut(
        user=e.user,
        kind=e.kind,
        until=convert.iso(e.until),
        reason=g.reason if g else None,
        granted_by=g.granted_by if g else None,
        granted_at=convert.iso(g.created_at) if g else None,
        grant_id=g.id if g else None,
    )


def host_process_out(p: HostProcess) -> HostProcessOut:
    return HostProcessOut(
        pid=p.pid,
        user=p.user,
        uid=p.uid,
        name=p.name,
        status=p.status.value,
        gpu_uuids=list(p.gpu_uuids),
        gpu_indices=list(p.gpu_indices),
        unit_uuids=list(p.unit_uuids),
        used_memory_mib=p.used_memory_mib,
        container_id=p.container_id,
        allocation_id=p.allocation_id,
        cause=p.cause,
        policy=p.policy,
        action=p.action,
        first_seen=convert.iso(p.first_seen) or "",
    )


def _service(request: web.Request) -> GrantService:
    svc = deps_of(request).grants
    assert svc is not None  # the routes are served only with it (api/routes.py: Needs)
    return svc


async def grant(request: web.Request) -> web.Response:
    body = await parse_body(request, GrantIn)
    row = await off_loop(
        _service(request).grant,
        caller_of(request),
        body.user,
        duration=body.duration,
        permanent=body.permanent,
        reason=body.reason,
    )
    return ok(grant_out(row), status=201)


async def revoke(request: web.Request) -> web.Response:
    body = await parse_body(request, RevokeIn)
    row = await off_loop(_service(request).revoke, caller_of(request), body.user, body.reason)
    return ok(grant_out(row))


async def list_grants(request: web.Request) -> web.Response:
    entries = await off_loop(_service(request).list_access, caller_of(request))
    return ok([access_entry_out(e) for e in entries])


async def access(request: web.Request) -> web.Response:
    a = await off_loop(_service(request).access_of, caller_of(request).name)
    return ok(
        AccessOut(
            user=a.user,
            state=a.state.value,
            until=convert.iso(a.until),
            reason=a.reason,
            how=a.how,
        )
    )


async def host_processes(request: web.Request) -> web.Response:
    deps = deps_of(request)
    require_admin(caller_of(request), deps.allocations.config, "listing host GPU processes")
    watch = deps.host_processes
    procs = watch.processes() if watch is not None else []
    return ok([host_process_out(p) for p in procs])
