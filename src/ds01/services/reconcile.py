"""Keep allocations in step with what really happened to containers (containers issue §4).

A ds01 container stopped or removed behind ds01's back → its allocation is held or released.
A ds01 container running on GPUs without a live allocation (started behind ds01's back, or
a start cut short) → it gets the same units again when its hold merely ran out and they are
free, else it is stopped (invariant I2, docs/allocation.md); anything else running without an
allocation is flagged for admins (and an event). Operations that died half-way are finished or
undone first (services/recovery.py). Runs at daemon start, on every Docker event, and
periodically to catch events missed while Docker or ds01d was down.

A container is tied to an allocation only by the allocation's container_id column (set by every
activation) and to a user only by its owner record (services/owners.py). The ds01.allocation and
ds01.owner labels are never acted on: a Dockerfile `LABEL ds01.allocation=<id>` built with the
legacy builder makes build containers that carry them, and their destroy event once released
another user's allocation. The one use of a label is to find a create that died half-way; the
hint is verified against the database (Recovery.half_deployed).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ds01.errors import Ds01Error, NotFound, Refusal, RefusalReason
from ds01.identity import caller_of_name
from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, container_info
from ds01.services.allocation import DAEMON
from ds01.services.containers import ContainerService
from ds01.services.owners import ObjectKind
from ds01.services.recovery import REALLOCATE_AFTER, reallocation_request
from ds01.store import events
from ds01.store.intents import Intent, IntentOp

log = logging.getLogger("ds01d.reconcile")


@dataclass(frozen=True)
class Orphan:
    info: ContainerInfo
    problem: str


# The container events on_event acts on; ds01d subscribes to these only (a `docker run --rm`
# also sends create, attach and resize, each parsed in ds01d's watcher for nothing).
EVENT_ACTIONS = ("die", "stop", "start", "destroy")


class Reconciler:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.allocations = containers.allocations
        self.recovery = containers.recovery
        self.orphans: list[Orphan] = []
        self._flagged: set[str] = set()

    def run(self, *, startup: bool = False) -> None:
        """One full pass. Raises RuntimeUnavailable when Docker cannot be listed."""
        # Operations that died half-way first (an earlier process's, or ones that lost Docker
        # while undoing themselves): every pass, so also as soon as Docker returns.
        self.recovery.run()
        # Allocations first, containers second: a deploy that finishes in between was still
        # reserved when read (and is skipped), never "live without its container" (issue 10 D2).
        live, open_intents = self.allocations.live_and_intents()
        with_intent = {i.allocation_id for i in open_intents}
        infos = self.containers.engine.list_managed(all=True)
        by_id = {i.id: i for i in infos}
        bound = {r.container_id for r in live if r.container_id}
        removed: set[str] = set()
        for row in live:
            if row.state is AllocState.RESERVED:
                if startup and row.id not in with_intent:
                    # A reservation from before intents (or the API's own): whatever made it
                    # died with the old daemon; its containers are found by their label.
                    for half in self.recovery.half_deployed(row, infos, bound):
                        self.recovery.remove_half_made(half, row.user, "deploy_interrupted")
                        removed.add(half.id)
                    self.allocations.release_by_daemon(row.id, "daemon_restarted")
                continue
            if row.container_id in self.containers.acting_on:
                continue  # a retire, stop or start at work on it records its own transition
            info = by_id.get(row.container_id or "")
            if info is None:
                if row.container is not None or row.container_id is not None:
                    self.allocations.release_by_daemon(row.id, "container_removed")
                continue
            self.apply(info, row_state=row.state, alloc_id=row.id)
        self._flag(self._orphans([i for i in infos if i.id not in removed]))

    def _orphans(self, infos: list[ContainerInfo]) -> list[Orphan]:
        """Running containers without a live allocation, judged after the listing: a deploy or
        start that completed meanwhile is bound by now, or still has its intent."""
        out = []
        in_operation = self.containers.in_operation()
        for i in infos:
            if (
                i.running
                and not in_operation(i)
                and self.allocations.live_for_container_id(i.id) is None
            ):
                problem = self._repair(i)
                if problem is not None:
                    out.append(Orphan(i, problem))
            elif i.gpu_unpinned:
                out.append(Orphan(i, "asks for GPUs by count, not by UUID"))
        return out

    def _repair(self, info: ContainerInfo) -> str | None:
        """A ds01 container that runs without a live allocation (started behind ds01's back,
        or a start cut short) must not keep units someone else may be given (invariant I2):
        its owner gets the same units again if they are free and within quota; otherwise it is
        stopped. Returns the problem to show admins, None when repaired or gone."""
        try:
            info = container_info(self.containers.engine.inspect(info.id))
        except NotFound:
            return None
        if not info.running or self.allocations.live_for_container_id(info.id) is not None:
            return None  # stopped, or bound, since the listing
        owner = self.containers.owners.owner(ObjectKind.CONTAINER, info.id)
        if owner is None or not info.gpu_device_ids:
            return "running without a live allocation"
        wanted = tuple(info.gpu_device_ids)
        last = self.allocations.last_for_container_id(info.id)
        try:
            if last is None or last.release_reason not in REALLOCATE_AFTER:
                # Its units were taken from it (a release, an expired reservation): started
                # again behind ds01's back, it does not get them back.
                reason = last.release_reason if last is not None else "never allocated"
                raise Refusal(RefusalReason.POLICY, f"its allocation ended: {reason}")
            caller = caller_of_name(owner)
            row = self.allocations.allocate(
                caller,
                reallocation_request(self.allocations, info, owner, info.short_name),
                existing_container=True,
                preferred_units=wanted,
                # A crash before the activation below: recovery finds it running on exactly
                # these units and completes it (services/recovery.py, start).
                intent=Intent(IntentOp.START, owner, container_id=info.id),
            )
        except Ds01Error as err:
            why = err.what
        else:
            if sorted(u.uuid for u in row.units) == sorted(wanted):
                self.allocations.activate(
                    row.id, container_id=info.id, actor=DAEMON, reason="container_started"
                )
                return None
            self.allocations.release_by_daemon(row.id, "units_taken")
            why = "its GPUs are held by another allocation"
        self.containers.engine.stop(info.id)
        with self.allocations.db.transaction() as conn:
            events.record(
                conn,
                kind="container",
                action="stopped",
                reason="no_allocation",
                actor=DAEMON,
                user=owner,
                message=f"{info.name}: stopped, it ran on GPUs without an allocation ({why})",
                details={"container_id": info.id, "gpu_device_ids": list(wanted)},
            )
        log.warning("stopped %s: running on %s without an allocation (%s)", info.name, wanted, why)
        return None

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
        # Gone (removed since) counts as stopped: its destroy event follows.
        return self.containers.engine.running(cid) != started

    def on_event(self, event: dict[str, object]) -> None:
        """React to one Docker container event (EVENT_ACTIONS)."""
        # Engine API 1.52 (Docker 29) no longer sends the old top-level `status` and `id`.
        actor = event.get("Actor")
        action = str(event.get("Action") or event.get("status") or "")
        cid = str((actor.get("ID") if isinstance(actor, dict) else None) or event.get("id") or "")
        if action not in EVENT_ACTIONS or not cid:
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
        stopped = action in ("die", "stop")
        if (stopped and row.state is not AllocState.ACTIVE) or (
            action == "start" and row.state is not AllocState.HELD
        ):
            return  # nothing to change: no need to ask the engine (an inspect per event)
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
