"""Which containers a restarted ds01d removes as a create that died half-way (Recovery.
half_deployed), on a real state database: the ds01.allocation label only finds candidates; the
owner records decide. A label anyone can forge (a legacy build step of an image with
`LABEL ds01.allocation=<id> ds01.owner=<user>`) must never get another user's container removed.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from ds01.model.allocation import AllocState
from ds01.runtime.engine import ContainerInfo, Engine
from ds01.services.allocation import AllocationService
from ds01.services.containers import ContainerService
from ds01.services.owners import ObjectKind
from ds01.services.reconcile import Reconciler
from ds01.store.allocations import AllocationRow
from ds01.store.db import Database

RESERVED = AllocationRow(
    id=7,
    user="alice",
    uid=1001,
    group=None,
    container="job",
    container_id=None,
    state=AllocState.RESERVED,
    request={"kind": "cpu"},
    created_at=1000.0,
    updated_at=1000.0,
    expires_at=1120.0,
    hold_until=None,
    released_at=None,
    release_reason=None,
    units=(),
)


def _no_config() -> Any:
    raise AssertionError("the half-deploy check reads no config")


def info(cid: str, *, owner: str, alloc: int = 7, state: str = "created") -> ContainerInfo:
    started = datetime(2026, 1, 1, tzinfo=UTC) if state != "created" else None
    return ContainerInfo(
        id=cid * 64,
        name=f"c{cid}",
        short_name=None,
        owner=owner,
        allocation_id=alloc,
        image="img",
        state=state,
        exit_code=None,
        created=None,
        started_at=started,
        finished_at=None,
        gpu_device_ids=(),
        gpu_unpinned=False,
    )


@pytest.fixture
def reconciler(tmp_path: Path) -> Reconciler:
    db = Database(tmp_path / "ds01.db")
    # The engine is never asked: the check reads the listing it is given and the database.
    svc = ContainerService(
        AllocationService(db, _no_config), Engine("unix:///nonexistent"), _no_config
    )
    return Reconciler(svc)


def test_only_containers_the_database_ties_to_the_allocations_user_are_removed(
    reconciler: Reconciler,
) -> None:
    owners = reconciler.containers.owners
    deployed = info("a", owner="alice")  # deploy recorded it, then ds01d died
    owners.record(ObjectKind.CONTAINER, deployed.id, "alice", origin="deploy")
    gate_made = info("b", owner="alice")  # the gate died between the engine's 201 and its record
    bobs = info("c", owner="alice", state="running")  # bob's, its labels forged as alice's R
    owners.record(ObjectKind.CONTAINER, bobs.id, "bob", origin="gate")
    bobs_stopped = info("d", owner="alice", state="exited")
    owners.record(ObjectKind.CONTAINER, bobs_stopped.id, "bob", origin="gate")
    ran = info("e", owner="alice", state="exited")  # unrecorded but it ran: not a half-deploy
    other_user = info("f", owner="mallory")  # unrecorded, labelled for someone else
    bound = info("1", owner="alice")  # alice's, bound to another live allocation
    owners.record(ObjectKind.CONTAINER, bound.id, "alice", origin="gate")
    other_alloc = info("2", owner="alice", alloc=8)
    owners.record(ObjectKind.CONTAINER, other_alloc.id, "alice", origin="deploy")
    infos = [deployed, gate_made, bobs, bobs_stopped, ran, other_user, bound, other_alloc]

    got = reconciler.containers.recovery.half_deployed(RESERVED, infos, {bound.id})

    assert [i.name for i in got] == ["ca", "cb"]
