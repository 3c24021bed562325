"""What every API handler shares: the daemon's parts a handler may use (ApiDeps, reached with
deps_of), the caller the middleware found, reading a body, rendering JSON, and off_loop — the
one way a handler makes a blocking call (the state database, NSS, Docker, the filesystem).

A handler runs on ds01d's event loop, which also serves every user's `docker` commands through
the gate: anything that may wait goes through off_loop, never straight into a handler.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar, cast

from aiohttp import web
from pydantic import BaseModel, ValidationError

from ds01.api.schemas import LoopOut, OrphanOut
from ds01.errors import NotFound, UsageError
from ds01.identity import Caller, CallerCache
from ds01.lifecycle.containerstats import ContainerReading
from ds01.lifecycle.countdown import Outlook
from ds01.lifecycle.exemptions import Exemptions
from ds01.listener import ConnectionLimits
from ds01.model.inventory import MachineSample
from ds01.services.allocation import AllocationService
from ds01.services.containers import ContainerService, ContainerView
from ds01.services.grants import GrantService
from ds01.services.hostproc import HostProcessWatch
from ds01.services.queue import QueueService
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database, would_have_waited

P = ParamSpec("P")
T = TypeVar("T")
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


async def off_loop(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A blocking call in a worker thread: the event loop serves others meanwhile."""
    return await asyncio.to_thread(fn, *args, **kwargs)


class Decider:
    """Runs the allocation decisions (allocate, release: services/allocation.py) on the event
    loop when that cannot wait, else in a worker thread. The thread hop was a third of an
    allocate+release cycle's CPU (bench/RESULTS.md, alloc).

    Such a decision waits for nothing but the state database: no NSS (the caller's groups
    came with the caller), no Docker, no other file, and it changes nothing outside the
    database before it commits (what follows a release starts a thread). So it runs here when
    no other thread of ds01d holds the database, with SQLite told not to wait for another
    process's lock; should it meet one, its transaction rolls back and a worker thread does
    it again, waiting as long as it must (tests/daemon/test_event_loop.py).

    Decisions that arrive together (requests read in the same pass of the loop) share one
    transaction, each in its own savepoint (its own `with db.transaction()` nests): one
    commit for all of them, the costliest step of a decision. Each is still atomic, a refused
    one rolls back alone, and no answer leaves before the commit that made it durable."""

    def __init__(self) -> None:
        self._off: asyncio.Future[Any] | None = None  # the decision now in a worker thread
        self._batch: list[tuple[Callable[[], Any], asyncio.Future[Any]]] = []

    async def run(self, db: Database, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        while True:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            if not self._batch:
                asyncio.get_running_loop().call_soon(self._decide, db)
            self._batch.append((functools.partial(fn, *args, **kwargs), done))
            outcome = await done
            if outcome is not _IN_A_THREAD:
                return cast(T, outcome)
            off = self._off
            if off is None or off.done():
                break
            # A decision already waits in a worker for the database: wait for it and try here
            # again, rather than line up another thread behind it.
            await asyncio.wait([off])
        fut = asyncio.ensure_future(off_loop(fn, *args, **kwargs))
        self._off = fut
        return await fut

    def _decide(self, db: Database) -> None:
        """The decisions gathered since the last pass, in one transaction; each waiter gets
        its result, its error, or _IN_A_THREAD (another connection holds the lock)."""
        batch, self._batch = self._batch, []
        outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        with db.without_waiting() as here:
            if here:
                try:
                    with db.transaction():
                        for call, done in batch:
                            try:
                                outcomes.append((done, call(), None))
                            except Exception as e:  # its savepoint rolled back; others stand
                                outcomes.append((done, None, e))
                except Exception as e:  # BEGIN or COMMIT failed: none of them was saved
                    outcomes = [(done, None, e) for _, done in batch]
            else:
                outcomes = [(done, _IN_A_THREAD, None) for _, done in batch]
        for done, value, err in outcomes:
            if done.cancelled():
                continue
            if err is not None and would_have_waited(err):
                # Another process holds the write lock (an admin's sqlite3): rolled back
                # having changed nothing; a worker thread waits for it.
                done.set_result(_IN_A_THREAD)
            elif err is not None:
                done.set_exception(err)
            else:
                done.set_result(value)


_IN_A_THREAD = object()  # a decision the loop could not make now: a worker thread makes it


@dataclass
class ApiDeps:
    """The daemon's parts the handlers use. `sample`, `docker_state`, `orphans`, `loops` and
    `invariants` read what ds01d keeps in memory (no I/O). Without `containers` or `grants`
    their endpoints are not served (api/routes.py: Needs)."""

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
    restart_needed: Callable[[], list[str]] = list
    callers: CallerCache = field(default_factory=CallerCache)
    # Idle and runtime countdowns per allocation id, as users see them (lifecycle/reclaim.py).
    outlooks: Callable[[list[AllocationRow]], dict[int, Outlook]] = lambda rows: {}
    keep_alive: Callable[[Caller, ContainerView, str], None] = lambda c, v, d: None
    exemptions: Exemptions | None = None
    queue: QueueService | None = None  # the queue's endpoints (api/queue.py)
    decider: Decider = field(default_factory=Decider)
    # The running containers' cgroup readings (lifecycle/containerstats.py): container stats.
    container_stats: Callable[[], Mapping[str, ContainerReading]] = lambda: {}


DEPS = web.AppKey("deps", ApiDeps)
LIMITS = web.AppKey("limits", ConnectionLimits)
CALLER = web.RequestKey("caller", Caller)  # set by the middleware (api/server.py)


def deps_of(request: web.Request) -> ApiDeps:
    return request.config_dict[DEPS]


def caller_of(request: web.Request) -> Caller:
    c = request[CALLER]
    assert isinstance(c, Caller)
    return c


def flag(request: web.Request, name: str) -> bool:
    """A yes/no query parameter (?all=1)."""
    return request.query.get(name) in ("1", "true", "yes")


async def parse_body(request: web.Request, schema: type[_M]) -> _M:
    if request.content.is_eof():  # all of it came with the head: nothing to wait for
        raw = await request.read()
    else:
        limits = request.config_dict.get(LIMITS, API_LIMITS)
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


async def not_found(request: web.Request) -> web.Response:
    """The catch-all route's handler: every path ds01d does not serve (api/server.py)."""
    raise NotFound(
        f"no API endpoint {request.method} {request.path}",
        fix="See /v1/openapi.json for the endpoints.",
    )


def ok(model: BaseModel | list[Any] | dict[str, Any], status: int = 200) -> web.Response:
    """A JSON answer. Models are encoded by pydantic's own encoder (compiled): a third of an
    allocate's cost was dumping models to dicts and re-encoding them with json.dumps."""
    if isinstance(model, BaseModel):
        body = model.model_dump_json().encode()
    elif isinstance(model, list):
        body = b"[" + b",".join(_json(m) for m in model) + b"]"
    else:
        body = _json(model)
    return web.Response(body=body, status=status, content_type="application/json")


def _json(value: Any) -> bytes:
    if isinstance(value, BaseModel):
        return value.model_dump_json().encode()
    return json.dumps(value).encode()
