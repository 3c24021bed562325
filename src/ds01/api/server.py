"""The API server: aiohttp on a Unix socket, identity from SO_PEERCRED, one error mapping.

Handlers parse with api.schemas, call a service, and render. They never read NVML or Docker:
GPU facts come from the latest MachineSample the daemon keeps.

Every answer to a request that reached a handler is JSON: ds01 errors by kind (status_for),
aiohttp's own 4xx (a body over MAX_BODY, a body read too slowly) as usage errors, and anything
unexpected as a 500 "internal" error whose traceback goes to the log at a bounded rate.
Connection limits and timeouts: api/site.py.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ds01 import __version__
from ds01.api import convert
from ds01.api.schemas import (
    AllocateIn,
    DrainIn,
    HealthOut,
    LimitValue,
    LoopOut,
    OrphanOut,
    QuotaOut,
    ReleaseIn,
    StatusOut,
    UnitStatusOut,
    WhoAmIOut,
)
from ds01.api.site import GuardedSite, Guards, HttpLog
from ds01.errors import (
    Ds01Error,
    NotFound,
    PermissionDenied,
    Refusal,
    RuntimeUnavailable,
    StateDiskFull,
    UsageError,
)
from ds01.identity import Caller, caller_from_uid, peer_credentials, validate_container_name
from ds01.listener import ConnectionLimits, RateLimitedLog
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import MachineSample
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.containers import ContainerService
from ds01.services.grants import GrantService
from ds01.services.hostproc import HostProcessWatch

_M = TypeVar("_M", bound=BaseModel)
MAX_BODY = 64 * 1024

# The ds01 CLI holds one connection per command; `logs -f` and shells hold theirs while open.
API_LIMITS = ConnectionLimits(
    idle_timeout_s=60.0,
    head_timeout_s=15.0,
    body_timeout_s=30.0,
    max_connections=1024,
    max_connections_per_uid=64,
)
_LIMITS = web.AppKey("limits", ConnectionLimits)

log = logging.getLogger("ds01d.api")


@dataclass
class ApiDeps:
    allocations: AllocationService
    sample: Callable[[], MachineSample | None]
    backend_name: str
    docker_state: Callable[[], str] = lambda: "not configured"
    containers: ContainerService | None = None
    orphans: Callable[[], list[OrphanOut]] = lambda: []
    grants: GrantService | None = None
    host_processes: HostProcessWatch | None = None
    loops: Callable[[], dict[str, LoopOut]] = dict
    invariants: Callable[[], list[str]] = list


class _CallerCache:
    """uid → Caller for a short time: NSS (LDAP) lookups are too slow to do per request."""

    def __init__(self, ttl: float = 30.0) -> None:
        self.ttl = ttl
        self._items: dict[tuple[int, int], tuple[float, Caller]] = {}

    def get(self, pid: int, uid: int, gid: int, admin_group: str | None) -> Caller:
        now = time.monotonic()
        hit = self._items.get((uid, gid))
        if hit and now - hit[0] < self.ttl:
            c = hit[1]
            return Caller(c.uid, c.gid, pid, c.name, c.groups, c.is_admin)
        c = caller_from_uid(uid, gid, pid, admin_group)
        self._items[(uid, gid)] = (now, c)
        return c


def status_for(err: Ds01Error) -> int:
    if isinstance(err, UsageError):
        return 400
    if isinstance(err, PermissionDenied):
        return 403
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, Refusal):
        return 409
    if isinstance(err, RuntimeUnavailable):
        return 503
    if isinstance(err, StateDiskFull):
        return 507  # Insufficient Storage: nothing was saved; works again once there is space
    return 500


def error_response(err: Ds01Error) -> web.Response:
    return web.json_response(convert.error_body(err).model_dump(), status=status_for(err))


def ok(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> web.Response:
    if isinstance(model, BaseModel):
        data: Any = model.model_dump(mode="json")
    elif isinstance(model, list):
        data = [m.model_dump(mode="json") if isinstance(m, BaseModel) else m for m in model]
    else:
        data = model
    return web.json_response(data, status=status)


async def parse_body(request: web.Request, schema: type[_M]) -> _M:
    limits = request.config_dict.get(_LIMITS, API_LIMITS)
    try:
        async with asyncio.timeout(limits.body_timeout_s):
            raw = await request.read()
    except TimeoutError:
        raise web.HTTPRequestTimeout() from None
    if not raw:
        raw = b"{}"
    try:
        return schema.model_validate_json(raw)
    except ValidationError as e:
        first = e.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "body"
        raise UsageError(
            f"bad request: {loc}: {first['msg']}",
            fix="See 'ds01 --help' or the API description at /v1/openapi.json.",
        ) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def caller_of(request: web.Request) -> Caller:
    c = request["caller"]
    assert isinstance(c, Caller)
    return c


def _http_error(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (413, 408, 405, …) as ds01 error bodies."""
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        what = f"the request body is too large (the limit is {MAX_BODY} bytes)"
    elif isinstance(exc, web.HTTPRequestTimeout):
        what = "the request body came too slowly"
    else:
        what = f"the request was refused: {exc.reason}"
    resp = web.json_response(
        {"error": {"kind": "usage", "what": what, "why": None, "fix": None, "reason": None}},
        status=exc.status,
    )
    if exc.status in (408, 413):
        resp.force_close()  # what is left of the body is not read
    return resp


def build_app(deps: ApiDeps) -> web.Application:
    cache = _CallerCache()
    svc = deps.allocations
    unexpected = RateLimitedLog(log)

    @web.middleware
    async def identity_and_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        sock = transport.get_extra_info("socket") if transport is not None else None
        if sock is None:
            raise web.HTTPBadRequest(text="connection closed")
        try:
            pid, uid, gid = peer_credentials(sock)
            request["caller"] = cache.get(pid, uid, gid, svc.config.admin_group)
            return await handler(request)
        except Ds01Error as err:
            return error_response(err)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return _http_error(exc)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception:
            unexpected.log(
                logging.ERROR,
                "handler",
                "%s %s failed unexpectedly",
                request.method,
                request.path[:200],
                exc_info=True,
            )
            return error_response(
                Ds01Error(
                    "ds01d failed on this request (an internal error)",
                    fix="Tell an admin; the ds01d log has the details (journalctl -u ds01d).",
                )
            )

    app = web.Application(middlewares=[identity_and_errors], client_max_size=MAX_BODY)

    async def health(request: web.Request) -> web.Response:
        return ok(
            HealthOut(
                status="ok",
                version=__version__,
                backend=deps.backend_name,
                docker=deps.docker_state(),
                loops=deps.loops(),
                invariants=deps.invariants(),
            )
        )

    async def whoami(request: web.Request) -> web.Response:
        c = caller_of(request)
        return ok(
            WhoAmIOut(
                user=c.name,
                uid=c.uid,
                groups=sorted(c.groups),
                admin=c.is_root or svc.config.is_admin(c.name, c.groups),
            )
        )

    async def gpu_status(request: web.Request) -> web.Response:
        c = caller_of(request)
        hide = svc.config.privacy == "hide_others" and not (
            c.is_root or svc.config.is_admin(c.name, c.groups)
        )
        sample = deps.sample()
        util: dict[str, float | None] = {}
        mem_used: dict[str, int | None] = {}
        if sample is not None:
            for g in sample.gpus:
                util[g.uuid] = g.utilization_pct
                mem_used[g.uuid] = g.memory_used_mib
                for m in g.mig_devices:
                    mem_used[m.uuid] = m.memory_used_mib
        units = []
        free = GpuEq(0)
        total = GpuEq(0)
        for view in svc.status():
            u = view.unit.unit
            a = view.allocation
            total = total + u.gpueq
            if a is None and not view.unit.drained:
                free = free + u.gpueq
            mine = a is not None and a.user == c.name
            shown = a is not None and (mine or not hide)
            units.append(
                UnitStatusOut(
                    **convert.unit_out(u),
                    drained=view.unit.drained,
                    drain_reason=view.unit.drain_reason,
                    user=a.user if shown and a else ("(hidden)" if a else None),
                    allocation_id=a.id if shown and a else None,
                    state=a.state.value if a else None,
                    container=a.container if shown and a else None,
                    hold_until=convert.iso(a.hold_until) if a else None,
                    utilization_pct=util.get(u.uuid),
                    memory_used_mib=mem_used.get(u.uuid),
                )
            )
        return ok(
            StatusOut(
                backend=deps.backend_name,
                sampled_at=sample.taken_at.isoformat(timespec="seconds")
                if sample and sample.taken_at
                else None,
                units=units,
                free_gpueq=round(float(free), 4),
                total_gpueq=round(float(total), 4),
                warnings=list(sample.warnings) if sample else [],
            )
        )

    async def allocate(request: web.Request) -> web.Response:
        body = await parse_body(request, AllocateIn)
        if body.container is not None:
            # The one name rule: the name reaches other users' tables and the audit log.
            validate_container_name(body.container)
        if body.gpus is not None:
            req = AllocationRequest(RequestKind.GPUS, count=body.gpus, container=body.container)
        elif body.mig is not None:
            req = AllocationRequest(
                RequestKind.MIG, profiles=tuple(body.mig), container=body.container
            )
        elif body.gpueq is not None:
            req = AllocationRequest(
                RequestKind.GPUEQ, gpueq=GpuEq(body.gpueq), container=body.container
            )
        else:
            req = AllocationRequest(RequestKind.CPU, container=body.container)
        row = svc.allocate(caller_of(request), req)
        return ok(convert.allocation_out(row), status=201)

    async def list_allocations(request: web.Request) -> web.Response:
        all_users = request.query.get("all") in ("1", "true", "yes")
        rows = svc.live_allocations(caller_of(request), all_users)
        return ok([convert.allocation_out(r) for r in rows])

    def _alloc_id(request: web.Request) -> int:
        text = request.match_info["id"]
        # Digits only, and no more than a database row ID has: int() of 5,000 digits raises a
        # message about sys.set_int_max_str_digits, and a 2**64 an OverflowError in SQLite.
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and int(text) < 2**63):
            raise UsageError(f"allocation id must be a number, got {text[:40]!r}")
        return int(text)

    async def get_allocation(request: web.Request) -> web.Response:
        return ok(convert.allocation_out(svc.get(caller_of(request), _alloc_id(request))))

    async def release_allocation(request: web.Request) -> web.Response:
        body = await parse_body(request, ReleaseIn)
        row = svc.release(caller_of(request), _alloc_id(request), body.reason)
        return ok(convert.allocation_out(row))

    async def quota(request: web.Request) -> web.Response:
        c = caller_of(request)
        resolved = svc.limits_for(c)
        lim = resolved.limits
        rows = svc.live_allocations(c, all_users=False)
        used = GpuEq.total(r.gpueq for r in rows)
        limits = {
            f.name: LimitValue(
                value=_jsonable(getattr(lim, f.name)),
                source=resolved.sources.get(_CONFIG_KEY.get(f.name, f.name), "defaults"),
            )
            for f in fields(lim)
            if f.name not in ("group",)
        }
        return ok(
            QuotaOut(
                user=c.name,
                group=resolved.group,
                limits=limits,
                allocations=[convert.allocation_out(r) for r in rows],
                used_gpueq=round(float(used), 4),
                used_gpueq_exact=used.as_text(),
                max_gpueq=round(float(lim.max_gpueq), 4),
                remaining_gpueq=round(float(lim.max_gpueq - used), 4),
                containers=len({r.container or f"#{r.id}" for r in rows}),
                max_containers=lim.max_containers,
                exempt=svc.config.is_exempt(c.name),
            )
        )

    async def list_events(request: web.Request) -> web.Response:
        q = request.query
        since: float | None = None
        if "since" in q:
            try:
                since = float(q["since"])
            except ValueError:
                raise UsageError("since must be a unix timestamp") from None
        try:
            limit = max(1, min(int(q.get("limit", "1000")), 10000))
        except ValueError:
            raise UsageError("limit must be a number") from None
        evs = svc.events(
            caller_of(request), user=q.get("user"), since=since, kind=q.get("kind"), limit=limit
        )
        return ok([convert.event_out(e) for e in evs])

    async def drain(request: web.Request) -> web.Response:
        body = await parse_body(request, DrainIn)
        undrain = request.match_info["op"] == "undrain"
        hit = svc.drain(caller_of(request), body.target, body.reason, drained=not undrain)
        return ok({"units": hit, "drained": not undrain})

    async def openapi(request: web.Request) -> web.Response:
        from ds01.api.openapi import openapi_document

        return web.json_response(openapi_document())

    async def not_found(request: web.Request) -> web.Response:
        raise NotFound(
            f"no API endpoint {request.method} {request.path}",
            fix="See /v1/openapi.json for the endpoints.",
        )

    app.router.add_get("/v1/health", health)
    app.router.add_get("/v1/whoami", whoami)
    app.router.add_get("/v1/gpu/status", gpu_status)
    app.router.add_post("/v1/allocations", allocate)
    app.router.add_get("/v1/allocations", list_allocations)
    app.router.add_get("/v1/allocations/{id}", get_allocation)
    app.router.add_post("/v1/allocations/{id}/release", release_allocation)
    app.router.add_get("/v1/quota", quota)
    app.router.add_get("/v1/events", list_events)
    app.router.add_post("/v1/admin/{op:drain|undrain}", drain)
    app.router.add_get("/v1/openapi.json", openapi)
    if deps.containers is not None:
        from ds01.api.containers import add_routes

        add_routes(app, deps.containers, caller_of, parse_body, ok, deps.orphans)
    if deps.grants is not None:
        from ds01.api.grants import add_routes as add_grant_routes

        add_grant_routes(app, deps.grants, deps.host_processes, caller_of, parse_body, ok)
    app.router.add_route("*", "/{tail:.*}", not_found)
    return app


# Limits fields whose config key (the key ResolvedLimits.sources uses) has another name.
_CONFIG_KEY = {
    "memory_bytes": "memory",
    "memory_swap_bytes": "memory_swap",
    "shm_bytes": "shm",
    "max_runtime_s": "max_runtime",
    "idle_timeout_s": "idle_timeout",
    "gpu_hold_after_stop_s": "gpu_hold_after_stop",
    "group_max_gpueq": "max_gpueq_total",
}


def _jsonable(v: object) -> object:
    if isinstance(v, GpuEq):
        return v.as_text()
    return v


async def serve(
    app: web.Application, path: str, mode: int = 0o666, limits: ConnectionLimits = API_LIMITS
) -> web.AppRunner:
    """Listen on a Unix socket with the given mode (0666: every local user may ask), with the
    connection limits and timeouts of api/site.py."""
    app[_LIMITS] = limits
    guards = Guards()
    app.middlewares.insert(0, guards.middleware)
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        logger=HttpLog(logging.getLogger("ds01d.api")),
        # Ours (api/site.py) close idle connections and slow heads; aiohttp's is only a backstop.
        keepalive_timeout=limits.idle_timeout_s + limits.head_timeout_s,
    )
    await runner.setup()
    if os.path.exists(path):
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(path)
    finally:
        os.umask(old)
    os.chmod(path, mode)
    sock.listen(512)
    site = GuardedSite(runner, sock, limits, guards)
    await site.start()
    return runner
