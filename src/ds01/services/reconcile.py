"""Keep allocations in step with what really happened to containers (containers issue §4).

A ds01 container stopped or removed behind ds01's back → its allocation is held or released;
a running container without a live allocation → flagged for admins (and an event). Runs at
daemon start, on every Docker event, and periodically to catch events missed while Docker or
ds01d was down.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ds01.errors import Ds01Error, NotFound
from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, container_info
from ds01.services.allocation import DAEMON
from ds01.services.containers import ContainerService
from ds01.store import events

log = logging.getLogger("ds01d.reconcile")


@dataclass(frozen=True)
class Orphan:
    info: ContainerInfo
    problem: str


class Reconciler:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.allocations = containers.allocations
        self.orphans: list[Orphan] = []
        self._flagged: set[str] = set()

    def run(self, *, startup: bool = False) -> None:
        """One full pass. Raises RuntimeUnavailable when Docker cannot be listed."""
        infos = self.containers.engine.list_managed(all=True)
        by_id = {i.id: i for i in infos}
        by_alloc = {i.allocation_id: i for i in infos if i.allocation_id is not None}
        for row in self.allocations.all_live():
            info = by_id.get(row.container_id or "") or by_alloc.get(row.id)
            if row.state is AllocState.RESERVED:
                if startup:
                    # Whatever deploy created this reservation died with the old daemon.
                    if info is not None:
                        self._remove_half_deployed(info)
                    self.allocations.release_by_daemon(row.id, "daemon_restarted")
                continue
            if info is None:
                if row.container is not None or row.container_id is not None:
                    self.allocations.release_by_daemon(row.id, "container_removed")
                continue
            self.apply(info, row_state=row.state, alloc_id=row.id)
        orphans = []
        live_ids = {r.container_id for r in self.allocations.all_live() if r.container_id}
        live_allocs = {r.id for r in self.allocations.all_live()}
        for i in infos:
            bound = i.id in live_ids or (i.allocation_id in live_allocs)
            if i.running and not bound:
                orphans.append(Orphan(i, "running without a live allocation"))
            elif i.gpu_unpinned:
                orphans.append(Orphan(i, "asks for GPUs by count, not by UUID"))
        self._flag(orphans)

    def _flag(self, orphans: list[Orphan]) -> None:
        self.orphans = orphans
        now = {o.info.id for o in orphans}
        for o in orphans:
            if o.info.id in self._flagged:
                continue
            with self.allocations.db.transaction() as conn:
                events.record(
                    conn,
                    kind="container",
                    action="orphan",
                    reason="reconcile",
                    actor=DAEMON,
                    user=o.info.owner,
                    message=f"{o.info.name}: {o.problem}",
                    details={
                        "container_id": o.info.id,
                        "gpu_device_ids": list(o.info.gpu_device_ids),
                    },
                )
        self._flagged = now

    def _remove_half_deployed(self, info: ContainerInfo) -> None:
        try:
            self.containers.engine.remove(info.id, force=True)
        except Ds01Error as err:
            log.error("could not remove half-deployed container %s: %s", info.name, err)
            return
        with self.allocations.db.transaction() as conn:
            events.record(
                conn,
                kind="container",
                action="removed",
                reason="deploy_interrupted",
                actor=DAEMON,
                user=info.owner,
                message=f"{info.name}: removed, its deploy did not finish",
            )

    def apply(self, info: ContainerInfo, *, row_state: AllocState, alloc_id: int) -> None:
        if row_state is AllocState.ACTIVE and not info.running:
            self.allocations.hold(alloc_id, actor=DAEMON, reason="container_exited")
        elif row_state is AllocState.HELD and info.running:
            self.allocations.activate(
                alloc_id, container_id=info.id, actor=DAEMON, reason="container_started"
            )

    def _outdated(self, cid: str, *, started: bool) -> bool:
        """True when the container is no longer in the state the event reports: a 'die' that
        is handled only after a restart already brought the container back must not hold
        its allocation (and a late 'start' must not activate a stopped one)."""
        try:
            running = container_info(self.containers.engine.inspect(cid)).running
        except NotFound:
            running = False  # removed since: its destroy event follows
        return running != started

    def on_event(self, event: dict[str, object]) -> None:
        """React to one Docker container event (die, stop, start, destroy)."""
        action = str(event.get("Action") or event.get("status") or "")
        cid = str(event.get("id") or "")
        if action not in ("die", "stop", "start", "destroy") or not cid:
            return
        if cid in self.containers.acting_on:
            return  # a user command is changing it and records the transition itself
        row = self.allocations.live_for_container_id(cid)
        if row is None:
            actor = event.get("Actor")
            attrs = actor.get("Attributes", {}) if isinstance(actor, dict) else {}
            label = attrs.get("ds01.allocation") if isinstance(attrs, dict) else None
            if label is not None and str(label).isdigit():
                candidate = self.allocations.get_any(int(str(label)))
                if candidate is not None and candidate.state is not AllocState.RELEASED:
                    row = candidate
        if row is None or row.state is AllocState.RESERVED:
            return  # not bound yet: the deploy in progress owns it
        if action != "destroy" and self._outdated(cid, started=action == "start"):
            return
        if action == "destroy":
            self.allocations.release_by_daemon(row.id, "container_removed")
        elif action in ("die", "stop") and row.state is AllocState.ACTIVE:
            self.allocations.hold(row.id, actor=DAEMON, reason="container_exited")
        elif action == "start" and row.state is AllocState.HELD:
            self.allocations.activate(
                row.id, container_id=cid, actor=DAEMON, reason="container_started"
            )
