"""Finish or undo container operations that stopped half-way (issue 10 §2).

Every multi-step operation — deploy, a start that allocates again, a recreate on other units,
the gate's create — writes an intent record in the transaction that reserves its units
(store/intents.py). The operation closes it by activating or releasing the allocation. When it
cannot (ds01d was killed, Docker went away while undoing), the intent stays, its reservation
does not expire, and this module resolves it as soon as it can see the containers: at start-up
and on every reconcile pass, so also when Docker returns. Each resolution is the same code an
operation uses to undo itself on failure.

How each is resolved (the container states are read from the engine, never from labels alone):

deploy    remove the container it made (by name, if labelled with the allocation and made for
          the user), release: a deploy nobody was told succeeded is rolled back.
create    the same for the gate's create, whose container is found by its allocation label.
start     the container runs on exactly the reserved units → activate; otherwise release.
recreate  the old container still exists → remove the new one, release (the user keeps the old
          container, stopped, as before). The old one is gone → finish: rename, start, activate.
          ds01 never removes the old container before the new one exists (invariant I4).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress

from ds01 import faults
from ds01.config import Config
from ds01.errors import Ds01Error, NotFound, Refusal, RefusalReason, RuntimeUnavailable
from ds01.identity import caller_of_name
from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, Engine, container_info
from ds01.services import invariants
from ds01.services.allocation import DAEMON, AllocationRequest, AllocationService
from ds01.services.owners import ObjectKind, OwnerBook
from ds01.store import events
from ds01.store.allocations import AllocationRow
from ds01.store.intents import PROCESS, IntentOp, IntentRow

log = logging.getLogger("ds01d.recovery")


class Recovery:
    def __init__(
        self,
        allocations: AllocationService,
        engine: Engine,
        owners: OwnerBook,
        config: Callable[[], Config],
    ) -> None:
        self.allocations = allocations
        self.engine = engine
        self.owners = owners
        self._config = config
        # Intents of this process whose operation gave up on them (Docker went away while it
        # undid itself): nobody works on them any more, so recovery may.
        self.abandoned: set[int] = set()

    # ---- entry points ----------------------------------------------------------------

    def run(self) -> int:
        """Resolve every intent nobody is working on; the number resolved. Raises
        RuntimeUnavailable when Docker does not answer (the intents stay for the next pass)."""
        done = 0
        listing: list[ContainerInfo] | None = None
        for row in self.allocations.open_intents():
            if row.process == PROCESS and row.allocation_id not in self.abandoned:
                continue  # an operation of this process is still at work on it
            if row.intent.op is IntentOp.CREATE and listing is None:
                listing = self.engine.list_managed(all=True)
            try:
                self.resolve(row, listing or [], interrupted=True)
            except RuntimeUnavailable:
                raise
            except Ds01Error as err:
                # This one stays open for the next pass; the others go ahead.
                log.error(
                    "could not resolve the %s of allocation %s: %s",
                    row.intent.op.value,
                    row.allocation_id,
                    " | ".join(err.lines()),
                )
                continue
            done += 1
        return done

    @contextmanager
    def undo_on_failure(self, alloc_id: int) -> Iterator[None]:
        """Around an operation's steps: any failure resolves its intent at once (the same
        rules as after a crash); when that cannot be done now, recovery does it later."""
        try:
            yield
        except BaseException as exc:
            log.warning("operation on allocation %s failed, resolving it: %r", alloc_id, exc)
            row = self.allocations.intent_of(alloc_id)
            if row is not None:
                try:
                    self.resolve(row, [], interrupted=False)
                except Ds01Error as err:
                    self.abandoned.add(alloc_id)
                    log.error(
                        "could not resolve allocation %s now, recovery retries when Docker "
                        "answers: %s",
                        alloc_id,
                        " | ".join(err.lines()),
                    )
            raise

    # ---- one intent ------------------------------------------------------------------

    def resolve(self, row: IntentRow, listing: list[ContainerInfo], *, interrupted: bool) -> None:
        """Finish or undo one intent. `interrupted`: its process died (reasons say so)."""
        alloc = self.allocations.get_any(row.allocation_id)
        if alloc is None or alloc.state is not AllocState.RESERVED:
            # Activated or released already: the intent outlived nothing.
            self.allocations.close_intent(row.allocation_id)
        else:
            op = row.intent.op
            if op is IntentOp.DEPLOY:
                self._undo_deploy(
                    alloc, row, "deploy_interrupted" if interrupted else "deploy_failed"
                )
            elif op is IntentOp.CREATE:
                self._undo_create(alloc, listing)
            elif op is IntentOp.START:
                self._resolve_start(alloc, row, interrupted)
            else:
                self._resolve_recreate(alloc, row, interrupted)
        self.abandoned.discard(row.allocation_id)

    def _undo_deploy(self, alloc: AllocationRow, row: IntentRow, reason: str) -> None:
        data = self.engine.find(row.intent.docker_name) if row.intent.docker_name else None
        if data is not None:
            info = container_info(data)
            if info.allocation_id == alloc.id and self.owners.owner(
                ObjectKind.CONTAINER, info.id
            ) in (alloc.user, None):
                self.remove_half_made(info, alloc.user, reason)
        self.allocations.release_by_daemon(alloc.id, reason)

    def _undo_create(self, alloc: AllocationRow, listing: list[ContainerInfo]) -> None:
        bound = {r.container_id for r in self.allocations.all_live() if r.container_id}
        for info in self.half_deployed(alloc, listing, bound):
            self.remove_half_made(info, alloc.user, "create_interrupted")
        self.allocations.release_by_daemon(alloc.id, "create_interrupted")

    def _resolve_start(self, alloc: AllocationRow, row: IntentRow, interrupted: bool) -> None:
        info = self._inspect(row.intent.container_id)
        units = sorted(u.uuid for u in alloc.units)
        if info is not None and info.running and sorted(info.gpu_device_ids) == units:
            # It runs on exactly what was reserved for it: the start happened, finish it.
            self.allocations.activate(
                alloc.id, container_id=info.id, actor=DAEMON, reason="start_completed"
            )
            return
        self.allocations.release_by_daemon(
            alloc.id, "start_interrupted" if interrupted else "start_failed"
        )

    def _resolve_recreate(self, alloc: AllocationRow, row: IntentRow, interrupted: bool) -> None:
        old = self._inspect(row.intent.container_id)
        new = self._new_container(alloc, row, old)
        if old is not None:
            # Not past the point of no return: the user keeps the old container, as it was.
            if new is not None:
                self.remove_half_made(new, alloc.user, "restart_undone")
            self.allocations.release_by_daemon(
                alloc.id, "restart_interrupted" if interrupted else "restart_failed"
            )
            return
        if new is None:
            # Cannot happen by construction (create precedes remove); nothing left to run.
            log.error("recreate of allocation %s: neither container exists", alloc.id)
            self.allocations.release_by_daemon(alloc.id, "restart_interrupted")
            return
        self.finish_recreate(alloc, new, row.intent.docker_name or new.name, quiet=interrupted)

    def finish_recreate(
        self, alloc: AllocationRow, new: ContainerInfo, docker_name: str, *, quiet: bool
    ) -> None:
        """The old container is gone: give the new one its name, start it, activate. A start
        that is refused keeps the container (the user's only copy now), stopped, and frees the
        units; the refusal is raised to the user unless `quiet` (nobody is waiting for it)."""
        if new.name != docker_name:
            self.engine.rename(new.id, docker_name)
            faults.point("recreate.renamed")
        try:
            owner = caller_of_name(alloc.user)
            units = tuple(u.uuid for u in alloc.units)
            found = invariants.judge(
                self.engine, self.owners, self._config(), owner, self.engine.inspect(new.id), units
            )
            if found:
                raise Refusal(
                    RefusalReason.POLICY,
                    f"container '{new.short_name or docker_name}' may not start: "
                    + invariants.describe(found),
                    why="ds01 checks every container as the engine stores it before it runs.",
                    fix="Retire it and deploy it again; if the message names a mounted "
                    "directory, put the directory back first.",
                )
            self.engine.start(new.id)
        except RuntimeUnavailable:
            raise
        except Ds01Error as err:
            self._note(alloc.user, new, "left_stopped", "restart_failed", err.what)
            self.allocations.release_by_daemon(alloc.id, "restart_failed")
            if quiet:
                return
            raise
        faults.point("recreate.started")
        self.allocations.activate(
            alloc.id, container_id=new.id, actor=DAEMON, reason="restarted_on_new_units"
        )

    # ---- shared pieces ---------------------------------------------------------------

    def half_deployed(
        self, alloc: AllocationRow, listing: list[ContainerInfo], bound: set[str]
    ) -> list[ContainerInfo]:
        """The containers a create for the reserved allocation `alloc` made before it died.

        Found by their ds01.allocation label, which anyone can forge, so each is checked
        against the database: not bound to a live allocation (`bound`), and either recorded as
        made by ds01 for the allocation's user (the records follow the create), or unrecorded
        (ds01d died between the engine's answer and its record), never started and labelled
        with that user. Whatever passes is a container no user but the allocation's owner
        could act on and that never ran: removing a forged one (a legacy build step of
        someone's image) costs its builder a build step, and nobody a container.
        """
        owners = self.owners.owners(
            ObjectKind.CONTAINER, [i.id for i in listing if i.allocation_id == alloc.id]
        )
        out = []
        for info in listing:
            if info.allocation_id != alloc.id or info.id in bound:
                continue
            recorded = owners.get(info.id)
            if recorded == alloc.user or (
                recorded is None
                and info.owner == alloc.user
                and info.started_at is None
                and info.state == "created"
            ):
                out.append(info)
        return out

    def remove_half_made(self, info: ContainerInfo, user: str, reason: str) -> None:
        """Remove a container an unfinished operation made (never a user's finished one)."""
        with suppress(NotFound):
            self.engine.remove(info.id, force=True)
        self.owners.forget(ObjectKind.CONTAINER, info.id)
        self._note(
            user, info, "removed", reason, "removed, the operation that made it did not finish"
        )

    def _note(self, user: str, info: ContainerInfo, action: str, reason: str, what: str) -> None:
        with self.allocations.db.transaction() as conn:
            events.record(
                conn,
                kind="container",
                action=action,
                reason=reason,
                actor=DAEMON,
                user=user,
                message=f"{info.name}: {what}",
                details={"container_id": info.id},
            )

    def _inspect(self, container_id: str | None) -> ContainerInfo | None:
        if not container_id:
            return None
        try:
            return container_info(self.engine.inspect(container_id))
        except NotFound:
            return None

    def _new_container(
        self, alloc: AllocationRow, row: IntentRow, old: ContainerInfo | None
    ) -> ContainerInfo | None:
        """The container a recreate made: by its temporary name, or already renamed."""
        for name in (row.intent.new_name, row.intent.docker_name):
            data = self.engine.find(name) if name else None
            if data is None:
                continue
            info = container_info(data)
            if (
                (old is None or info.id != old.id)
                and info.allocation_id == alloc.id
                and self.owners.owner(ObjectKind.CONTAINER, info.id) in (alloc.user, None)
            ):
                return info
        return None


# How an allocation ended when its container may get the same units again if started behind
# ds01's back (as `ds01 container start` would): it stopped and its hold ran out. Anything else
# (a user's or admin's release, an expired reservation) means those units were taken from it.
REALLOCATE_AFTER = frozenset({"hold_expired", "stopped", "container_exited"})


def reallocation_request(
    allocations: AllocationService, info: ContainerInfo, owner: str, container: str | None
) -> AllocationRequest:
    """What to ask for when a container whose allocation ended starts again: the shape of the
    last allocation the database bound to this container (never one a label names), if it was
    this owner's."""
    old = allocations.last_for_container_id(info.id)
    if old is not None and old.user == owner:
        return AllocationRequest.from_json(old.request, container=container)
    return AllocationRequest.from_json({"kind": "cpu"}, container=container)
