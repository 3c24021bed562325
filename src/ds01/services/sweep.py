"""The invariant sweep: every running container with a ds01 owner is judged as the engine
stores it now (services/invariants.py); one that breaks an invariant is stopped and reported
(a `container` event `stopped` with reason `invariant`, and in `ds01 admin` orphans).

The gate and deploy judge every container before it runs; the sweep catches what changed
afterwards or came in another way: a host directory swapped for a symlink, a container an
admin started on the engine's own socket, an engine that stored more than it was asked.
Runs with each periodic reconcile pass. Talks to the engine and the store through the
container service; decides nothing itself.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from ds01.errors import Ds01Error, NotFound
from ds01.identity import caller_of_name
from ds01.services import invariants
from ds01.services.allocation import DAEMON
from ds01.services.containers import ContainerService
from ds01.services.invariants import Violation
from ds01.services.owners import ObjectKind
from ds01.store import events

log = logging.getLogger("ds01d.sweep")


@dataclass(frozen=True)
class Stopped:
    container_id: str
    name: str
    owner: str
    found: tuple[Violation, ...]


class InvariantSweep:
    def __init__(self, containers: ContainerService) -> None:
        self.containers = containers
        self.stopped: list[Stopped] = []  # the last pass's, for admins' views

    def run(self) -> list[Stopped]:
        """One pass over the running containers. Raises RuntimeUnavailable when Docker cannot
        be listed."""
        engine = self.containers.engine
        out = []
        listing = engine.list_managed(all=False)
        in_operation = self.containers.in_operation()
        for info in listing:
            owner_name = self.containers.owners.owner(ObjectKind.CONTAINER, info.id)
            if owner_name is None:
                continue  # not made by ds01: reconcile flags it if it holds GPUs
            try:
                busy = in_operation(info)
                data = engine.inspect(info.id)
                owner = caller_of_name(owner_name)
                row = self.containers.allocations.live_for_container_id(info.id)
                if row is None and busy:
                    continue  # a deploy or start binds it in a moment, or undoes it
                units = tuple(u.uuid for u in row.units) if row is not None else None
                found = invariants.judge(
                    engine, self.containers.owners, self.containers.config, owner, data, units
                )
            except NotFound:
                continue  # gone since the list
            except Ds01Error as err:
                log.error(
                    "invariant sweep: cannot judge %s: %s", info.name, " | ".join(err.lines())
                )
                continue
            if found:
                out.append(self._stop(info.id, info.name, owner_name, found))
        self.stopped = out
        return out

    def _stop(self, cid: str, name: str, owner: str, found: list[Violation]) -> Stopped:
        what = invariants.describe(found)
        log.warning("invariant sweep: stopping %s (%s): %s", name, owner, what)
        try:
            self.containers.engine.stop(cid, timeout_s=5)
        except Ds01Error as err:
            log.error("invariant sweep: could not stop %s: %s", name, " | ".join(err.lines()))
        with self.containers.allocations.db.transaction() as conn:
            events.record(
                conn,
                kind="container",
                action="stopped",
                reason="invariant",
                actor=DAEMON,
                user=owner,
                message=f"{name}: stopped, {what}",
                details={"container_id": cid, "violations": sorted({v.code for v in found})},
            )
        return Stopped(cid, name, owner, tuple(found))
