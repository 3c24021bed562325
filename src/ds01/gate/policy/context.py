"""What every rule gets: the caller, the recognised request, the daemon's services, the engine
client — and what every rule returns: a Plan saying how to forward the request."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ParamSpec, Protocol, TypeVar

from ds01 import identity
from ds01.config import Config
from ds01.gate.engine import EngineClient
from ds01.gate.policy.endpoints import GateRequest
from ds01.gate.settings import GateSettings
from ds01.identity import Caller
from ds01.services.allocation import AllocationService
from ds01.services.containers import ContainerService
from ds01.services.queue import QueueService
from ds01.store.allocations import AllocationRow

P = ParamSpec("P")
T = TypeVar("T")

# Called once the engine's response status is known: (status, whole body when the plan asked
# for it, else None) → a replacement body, or None to forward the engine's.
After = Callable[[int, bytes | None], Awaitable[bytes | None]]
Abort = Callable[[], Awaitable[None]]
# Called once a streamed answer has been forwarded whole (or the stream broke): (status).
Finished = Callable[[int], Awaitable[None]]


class BodyCheck(Protocol):
    """Judges a streamed request body as it passes: `feed` sees every byte in order (and may
    refuse early); the body's last bytes are held back until `finish` has passed."""

    def feed(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...


@dataclass
class GateDeps:
    allocations: AllocationService
    containers: ContainerService
    config: Callable[[], Config]
    engine: EngineClient
    settings: GateSettings
    # The queue (gate.queue: wait holds a create open while its entry waits); None: refuse.
    queue: QueueService | None = None
    # docker.host → cgroup driver; docker.host + "#runtime" → the engine's default runtime
    cgroup_driver: dict[str, str] = field(default_factory=dict)
    # full container ID → (monotonic time, inspect data): what ownership reads of a container
    # (owner and allocation labels, mounts, device requests) never changes after creation.
    inspected: dict[str, tuple[float, dict[str, Any]]] = field(default_factory=dict)


@dataclass
class Ctx:
    deps: GateDeps
    caller: Caller
    req: GateRequest
    config: Config
    admin: bool | None = None  # is_admin, when the caller worked it out already
    # The allocation the queue admitted for this create after it waited (gate/queued.py): the
    # create is judged again and made on exactly these units instead of allocating.
    admitted: AllocationRow | None = None

    @property
    def is_admin(self) -> bool:
        if self.admin is None:
            self.admin = identity.is_admin(self.caller, self.config)
        return self.admin

    @property
    def engine(self) -> EngineClient:
        return self.deps.engine

    async def run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """A blocking call (the database, NSS, the filesystem) off the event loop."""
        return await asyncio.to_thread(fn, *args, **kwargs)

    async def cgroup_driver(self) -> str:
        return (await self._engine_info())[0]

    async def default_runtime(self) -> str:
        return (await self._engine_info())[1]

    async def _engine_info(self) -> tuple[str, str]:
        """(cgroup driver, default runtime) of the engine, read once per engine address."""
        host = self.config.docker.host
        driver = self.deps.cgroup_driver.get(host)
        runtime = self.deps.cgroup_driver.get(host + "#runtime", "runc")
        if driver is None:
            status, info = await self.engine.get("/info")
            driver = str(info.get("CgroupDriver", "")) if status == 200 and info else ""
            if driver:
                runtime = str(info.get("DefaultRuntime") or "runc")
                self.deps.cgroup_driver[host] = driver
                self.deps.cgroup_driver[host + "#runtime"] = runtime
        return driver or "cgroupfs", runtime


@dataclass
class Plan:
    """How to forward a checked request: the path and query to send (canonical, without the
    version prefix), a replacement body (sent with Content-Length) or None to stream the
    client's, and hooks for the engine's answer: headers to replace in its head, an observer
    of a streamed body's bytes (tap) and a hook for when that stream has ended (finished)."""

    path: str
    query: list[tuple[str, str]]
    body: bytes | None = None
    capture_response: bool = False
    after: After | None = None
    on_abort: Abort | None = None
    response_headers: dict[str, str] = field(default_factory=dict)
    tap: Callable[[bytes], None] | None = None
    finished: Finished | None = None
    body_check: BodyCheck | None = None
    # A streamed answer of JSON lines (events): each line is forwarded only if this says so.
    line_filter: Callable[[bytes], Awaitable[bool]] | None = None
    # A non-admin's container list: answered from a shared flight (gate/flights.py), narrowed
    # to what this user owns (filters.ContainerList.for_owner) instead of forwarded.
    shared_list_owner: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


# Where the rules put the owner ds01 recorded for an engine object into the engine's data for
# it (no engine field has a ':' in its name, so an engine reply can never carry it).
OWNER_KEY = "ds01:owner"


def recorded_owner(data: dict[str, Any]) -> str | None:
    """The recorded owner put into `data` under OWNER_KEY; None (admins only) when ds01 did not
    make the object. Never a ds01.owner label: an image LABEL or a legacy build step forges it."""
    owner = data.get(OWNER_KEY)
    return owner if isinstance(owner, str) else None


def passthrough(ctx: Ctx) -> Plan:
    return Plan(ctx.req.path, list(ctx.req.query))
