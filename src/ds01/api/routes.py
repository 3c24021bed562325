"""The one table of API endpoints: build_app (api/server.py) registers each route's handler from
it and the OpenAPI description (api/openapi.py, docs/openapi.json) is written from it, so the
two cannot differ. A path may constrain a segment as aiohttp does (`{op:drain|undrain}`); the
description shows the segment's name (`{op}`).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from aiohttp import web
from pydantic import BaseModel

from ds01.api import (
    allocations,
    containers,
    containerstats,
    events,
    grants,
    lifecycle,
    queue,
    reports,
    reservations,
    system,
    top,
    units,
)
from ds01.api import schemas as s

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class Needs(Enum):
    """The daemon part an endpoint is served with (ApiDeps): without it, it is not served."""

    NOTHING = "nothing"
    CONTAINERS = "containers"
    GRANTS = "grants"
    LIFECYCLE = "lifecycle"
    QUEUE = "queue"


@dataclass(frozen=True)
class Route:
    method: str  # lower case, as OpenAPI writes it
    path: str  # aiohttp's form
    handler: Handler
    summary: str
    body: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    many: bool = False  # the response is a list of `response`
    needs: Needs = Needs.NOTHING

    @property
    def documented_path(self) -> str:
        """The path as OpenAPI writes it: `{op:drain|undrain}` → `{op}`."""
        return re.sub(r"\{(\w+):[^}]*\}", r"{\1}", self.path)


_C, _G, _L, _Q = Needs.CONTAINERS, Needs.GRANTS, Needs.LIFECYCLE, Needs.QUEUE

ROUTES: tuple[Route, ...] = (
    Route("get", "/v1/health", system.health, "Daemon health", response=s.HealthOut),
    Route(
        "get",
        "/v1/whoami",
        system.whoami,
        "Who ds01d thinks you are (SO_PEERCRED)",
        response=s.WhoAmIOut,
    ),
    Route(
        "get",
        "/v1/gpu/status",
        units.get_status,
        "Every unit with its holder",
        response=s.StatusOut,
    ),
    Route(
        "get",
        "/v1/top",
        top.top,
        "What ds01 top shows, in one answer (?events=N recent events, 10)",
        response=s.TopOut,
    ),
    Route(
        "post",
        "/v1/allocations",
        allocations.allocate,
        "Reserve GPUs or MIG slices",
        s.AllocateIn,
        s.AllocationOut,
    ),
    Route(
        "get",
        "/v1/allocations",
        allocations.list_allocations,
        "Live allocations (yours; ?all=1 for admins; ?gpus=1 only those holding units)",
        response=s.AllocationOut,
        many=True,
    ),
    Route(
        "get",
        "/v1/allocations/{id}",
        allocations.get_allocation,
        "One allocation",
        response=s.AllocationOut,
    ),
    Route(
        "post",
        "/v1/allocations/{id}/release",
        allocations.release_allocation,
        "Release an allocation",
        s.ReleaseIn,
        s.AllocationOut,
    ),
    Route(
        "get",
        "/v1/quota",
        allocations.get_quota,
        "Your limits, holdings and what is left",
        response=s.QuotaOut,
    ),
    Route(
        "get",
        "/v1/events",
        events.list_events,
        "Audit log (yours; admins: all, ?user=&kind=&since=)",
        response=s.EventOut,
        many=True,
    ),
    Route(
        "get",
        "/v1/reports/usage",
        reports.usage_report,
        "Usage report: GPU hours, idle share, energy, CO2 (yours; admins: all),"
        " ?from=&to=&by=user|group&user=&series=1",
        response=s.UsageReportOut,
    ),
    Route(
        "post",
        "/v1/admin/{op:drain|undrain}",
        units.drain,
        "Drain or undrain a unit or GPU (op: drain|undrain; admin)",
        s.DrainIn,
    ),
    Route("get", "/v1/openapi.json", system.openapi_json, "This description"),
    Route(
        "post",
        "/v1/containers",
        containers.deploy,
        "Deploy a container (NDJSON progress lines, then the result)",
        s.DeployIn,
        s.ContainerOut,
        needs=_C,
    ),
    Route(
        "get",
        "/v1/containers",
        containers.list_containers,
        "Your containers (?all=1 for admins)",
        response=s.ContainerOut,
        many=True,
        needs=_C,
    ),
    Route(
        "get",
        "/v1/container-stats",
        containerstats.list_stats,
        "Your running containers' CPU, memory and GPU use (?all=1 for admins)",
        response=s.ContainerStatsOut,
        many=True,
        needs=_C,
    ),
    Route(
        "get",
        "/v1/container-stats/{name}",
        containerstats.one_stats,
        "One of your running containers' CPU, memory and GPU use",
        response=s.ContainerStatsOut,
        needs=_C,
    ),
    Route(
        "get",
        "/v1/containers/{name}",
        containers.inspect,
        "One of your containers",
        response=s.ContainerOut,
        needs=_C,
    ),
    Route(
        "post",
        "/v1/containers/{name}/{op:start|stop|restart|retire}",
        containers.operate,
        "start | stop | restart (ContainerOut) or retire (container removed, GPUs released)",
        response=s.ContainerOut,
        needs=_C,
    ),
    Route(
        "post",
        "/v1/containers/{name}/keep-alive",
        containers.keep_alive,
        "Hold off the idle stop of one of your containers (bounded by policy.max_keepalive)",
        body=s.KeepAliveIn,
        response=s.ContainerOut,
        needs=_C,
    ),
    Route(
        "get",
        "/v1/containers/{name}/logs",
        containers.logs,
        "Output (?follow=1&tail=N), streamed",
        needs=_C,
    ),
    Route(
        "get",
        "/v1/containers/{name}/shell",
        containers.shell,
        "Shell (WebSocket upgrade; ?tty=0 for input from a pipe: output framed as for exec)",
        needs=_C,
    ),
    Route(
        "get",
        "/v1/containers/{name}/exec",
        containers.exec_command,
        "Run one command without a tty (WebSocket upgrade; ?cmd=ARG repeated)",
        needs=_C,
    ),
    Route(
        "get",
        "/v1/queue",
        queue.list_queue,
        "Your queued deploys with their positions (?all=1: everyone's, as privacy allows)",
        response=s.QueueOut,
        needs=_Q,
    ),
    Route(
        "post",
        "/v1/queue/{id}/cancel",
        queue.cancel,
        "Cancel a queued deploy (its owner or an admin)",
        response=s.QueueEntryOut,
        needs=_Q,
    ),
    Route(
        "get",
        "/v1/queue/{id}/explain",
        queue.explain,
        "A queued deploy's priority, factor by factor",
        response=s.QueueExplainOut,
        needs=_Q,
    ),
    Route(
        "post",
        "/v1/admin/reservations",
        reservations.reserve,
        "Reserve units for a user or group over a window (admin)",
        s.ReserveIn,
        s.ReservationOut,
    ),
    Route(
        "get",
        "/v1/admin/reservations",
        reservations.list_reservations,
        "Open reservations (?all=1: also those ended in the last week) (admin)",
        response=s.ReservationOut,
        many=True,
    ),
    Route(
        "post",
        "/v1/admin/reservations/{id}/cancel",
        reservations.cancel,
        "End a reservation now: its units return to the pool (admin)",
        s.UnreserveIn,
        s.ReservationOut,
    ),
    Route(
        "get",
        "/v1/admin/orphans",
        containers.list_orphans,
        "Containers running without a live allocation (admin)",
        response=s.OrphanOut,
        many=True,
        needs=_C,
    ),
    Route(
        "post",
        "/v1/admin/exemptions",
        lifecycle.exempt,
        "Exempt a user from the idle or runtime limit until a time (admin)",
        s.ExemptIn,
        s.ExemptionOut,
        needs=_L,
    ),
    Route(
        "post",
        "/v1/admin/exemptions/end",
        lifecycle.unexempt,
        "End a user's exemption now (admin)",
        s.UnexemptIn,
        s.ExemptionOut,
        needs=_L,
    ),
    Route(
        "get",
        "/v1/admin/exemptions",
        lifecycle.list_exemptions,
        "Exemptions in force (admin)",
        response=s.ExemptionOut,
        many=True,
        needs=_L,
    ),
    Route(
        "post",
        "/v1/admin/grants",
        grants.grant,
        "Grant bare-metal GPU access (admin)",
        s.GrantIn,
        s.GrantOut,
        needs=_G,
    ),
    Route(
        "post",
        "/v1/admin/grants/revoke",
        grants.revoke,
        "Revoke a grant (admin)",
        s.RevokeIn,
        s.GrantOut,
        needs=_G,
    ),
    Route(
        "get",
        "/v1/admin/grants",
        grants.list_grants,
        "Exempt users and live grants (admin)",
        response=s.AccessEntryOut,
        many=True,
        needs=_G,
    ),
    Route(
        "get",
        "/v1/access",
        grants.access,
        "Your bare-metal GPU access",
        response=s.AccessOut,
        needs=_G,
    ),
    Route(
        "get",
        "/v1/admin/host-processes",
        grants.host_processes,
        "GPU processes on the bare host (admin)",
        response=s.HostProcessOut,
        many=True,
        needs=_G,
    ),
)
