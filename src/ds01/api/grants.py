"""Bare-metal grant, access and host-process endpoints (docs/grants.md).

Granting and revoking may run gpasswd (compute_gate: uvm), so they run in a worker thread. The
host-process list is the watch's last scan: no /proc or NVML read per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from ds01.api import convert
from ds01.api.schemas import AccessEntryOut, AccessOut, GrantIn, GrantOut, HostProcessOut, RevokeIn
from ds01.identity import Caller
from ds01.services.grants import AccessEntry, GrantService
from ds01.services.hostproc import HostProcess, HostProcessWatch
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


def add_routes(
    app: web.Application,
    grants: GrantService,
    hostproc: HostProcessWatch | None,
    caller_of: Callable[[web.Request], Caller],
    parse_body: Any,
    ok: Callable[..., web.Response],
) -> None:
    async def grant(request: web.Request) -> web.Response:
        body: GrantIn = await parse_body(request, GrantIn)
        caller = caller_of(request)
        row = await asyncio.to_thread(
            lambda: grants.grant(
                caller,
                body.user,
                duration=body.duration,
                permanent=body.permanent,
                reason=body.reason,
            )
        )
        return ok(grant_out(row), status=201)

    async def revoke(request: web.Request) -> web.Response:
        body: RevokeIn = await parse_body(request, RevokeIn)
        row = await asyncio.to_thread(grants.revoke, caller_of(request), body.user, body.reason)
        return ok(grant_out(row))

    async def list_grants(request: web.Request) -> web.Response:
        entries = await asyncio.to_thread(grants.list_access, caller_of(request))
        return ok([access_entry_out(e) for e in entries])

    async def access(request: web.Request) -> web.Response:
        c = caller_of(request)
        a = await asyncio.to_thread(grants.access_of, c.name)
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
        grants.allocations.require_admin(caller_of(request), "listing host GPU processes")
        procs = hostproc.processes() if hostproc is not None else []
        return ok([host_process_out(p) for p in procs])

    app.router.add_post("/v1/admin/grants", grant)
    app.router.add_post("/v1/admin/grants/revoke", revoke)
    app.router.add_get("/v1/admin/grants", list_grants)
    app.router.add_get("/v1/access", access)
    app.router.add_get("/v1/admin/host-processes", host_processes)
