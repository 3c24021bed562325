"""Reconciler.on_event reads a container event as every Engine API version writes it: API 1.52
(Docker 29) dropped the old top-level `id` and `status` fields that earlier versions still sent
next to `Actor.ID` and `Action`. An event the reconciler cannot read would leave a removed
container's GPUs held until the next full pass. On a real state database and the simulated
4×A100; a destroy asks the engine nothing, so no engine is needed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ds01.identity import Caller
from ds01.model.allocation import AllocState
from ds01.runtime.engine import Engine
from ds01.scheduler.snapshot import RequestKind
from ds01.services.allocation import AllocationRequest
from ds01.services.containers import ContainerService
from ds01.services.reconcile import Reconciler
from support import ServiceWorld

ROOT = Caller(uid=0, gid=0, pid=0, name="root", groups=frozenset())
CID = "c" * 64
ATTRS = {"ds01.managed": "true", "ds01.owner": "root", "name": "root.job"}


def destroy(api: str) -> dict[str, Any]:
    event: dict[str, Any] = {
        "Type": "container",
        "Action": "destroy",
        "Actor": {"ID": CID, "Attributes": ATTRS},
        "scope": "local",
        "time": 1_800_000_000,
        "timeNano": 1_800_000_000_000_000_000,
    }
    if api == "1.51":
        event |= {"status": "destroy", "id": CID, "from": "img"}
    return event


@pytest.mark.parametrize("api", ["1.51", "1.52"], ids=["API 1.51 (id, status)", "API 1.52"])
def test_a_destroyed_containers_allocation_is_released(tmp_path: Path, api: str) -> None:
    world = ServiceWorld(tmp_path)
    service = ContainerService(world.svc, Engine("unix:///nonexistent"), lambda: world.svc.config)
    alloc = world.svc.allocate(ROOT, AllocationRequest(RequestKind.GPUS, count=1))
    world.svc.activate(alloc.id, container_id=CID, actor="root", reason="deployed")
    Reconciler(service).on_event(destroy(api))
    row = world.svc.get(ROOT, alloc.id)
    assert (row.state, row.release_reason) == (AllocState.RELEASED, "container_removed")
