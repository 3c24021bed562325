"""Keep allocations in step with what really happened to containers (containers issue §4).

A ds01 container stopped or removed behind ds01's back → its allocation is held or released;
a running container without a live allocation → flagged for admins (and an event). Runs at
daemon start, on every Docker event, and periodically to catch events missed while Docker or
ds01d was down.

A container is tied to an allocation only by the allocation's container_id column (set by every
activation) and to a user only by its owner record (services/owners.py). The ds01.allocation and
ds01.owner labels are never acted on: a Dockerfile `LABEL ds01.allocation=<id>` built with the
legacy builder makes build containers that carry them, and their destroy event once released
another user's allocation. The one use of a label is at startup, as a hint to find a deploy that
died half-way; the hint is verified against the database (_half_deployed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ds01.errors import Ds01Error, NotFound
from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, container_info
from ds01.services.allocation import DAEMON
from ds01.services.containers import ContainerService
from ds01.services.owners import ObjectKind
from ds01.store import events
from ds01.store.allocations import AllocationRow

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
        # Allocations first, containers second: a deploy that finishes in between was still
        # reserved when read (and is skipped), never "live without its container" (issue 10 D2).
        live = self.allocations.all_live()
        infos = self.containers.engine.list_managed(all=True)
        by_id = {i.id: i for i in infos}
        live_ids = {r.container_id for r in live if r.container_id}
        for row in live:
            if row.state is AllocState.RESERVED:
                if startup:
                    # Whatever deploy created this reservation died with the old daemon.
                    for half in self._half_deployed(row, infos, live_ids):
                        self._remove_half_deployed(half)
                    self.allocations.release_by_daemon(row.id, "daemon_restarted")
                continue
            info = by_id.get(row.container_id or "")
            if info is None:
                if row.container is not None or row.container_id is not None:
                    self.allocations.release_by_daemon(row.id, "container_removed")
                continue
            self.apply(info, row_state=row.state, alloc_id=row.id)
        orphans = []
        live_ids = {r.container_id for r in self.allocations.all_live() if r.container_id}
        for i in infos:
            if i.running and i.id not in live_ids:
                orphans.append(Orphan(i, "running without a live allocation"))
            elif i.gpu_unpinned:
                orphans.append(Orphan(i, "asks for GPUs by count, not by UUID"))
        self._flag(orphans)

    def _half_deployed(
        self, row: AllocationRow, infos: list[ContainerInfo], live_ids: set[str]
    ) -> list[ContainerInfo]:
        """The containers a deploy of the reserved allocation `row` made before ds01d died.

        Found by their ds01.allocation label, which anyone can forge, so each is checked
        against the database: not bound to another live allocation, and either recorded as
        made by ds01 for the allocation's user (deploy records right after the create), or
        unrecorded (the gate died between the engine's answer and its record), never started
        and labelled with that user. Whatever passes is a container no user but the
        allocation's owner could act on and that never ran: removing a forged one (a legacy
        build step of someone's image) costs its builder a build step, and nobody a container.
        """
        owners = self.containers.owners.owners(
            ObjectKind.CONTAINER, [i.id for i in infos if i.allocation_id == row.id]
        )
        out = []
        for info in infos:
            if info.allocation_id != row.id or info.id in live_ids:
                continue
            recorded = owners.get(info.id)
            if recorded == row.user or (
                recorded is None
                and info.owner == row.user
                and info.started_at is None
                and info.state == "created"
            ):
                out.append(info)
        return out

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
        self.containers.owners.forget(ObjectKind.CONTAINER, info.id)
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
        if action == "destroy":
            # The engine says it is gone (IDs are never reused): its owner record goes too.
            self.containers.owners.forget(ObjectKind.CONTAINER, cid)
        if cid in self.containers.acting_on:
            return  # a user command is changing it and records the transition itself
        # Only the allocation bound to this container ID: never one its labels name (the
        # event's Actor.Attributes are the container's labels, forgeable by any image).
        row = self.allocations.live_for_container_id(cid)
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
