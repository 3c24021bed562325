"""Crash at every step (issue 10): ds01d dies right after each side effect of deploy, start
(after its hold ended, and while held), recreate on other units, stop and retire; a new ds01d
starts with Docker up, or with Docker down and back later; then the invariants of
docs/allocation.md hold, checked from outside (the engine through the Docker SDK, the state
through SQLite):

  I1  no unit is in two live allocations;
  I2  every running ds01 container holds a live, active allocation for exactly its units;
  I3  no reservation is left over (each one was finished or undone);
  I4  the container is there unless it was retired or its deploy never finished;
  I5  every allocation's last audit event is its state, and no container the recovery
      removed is also audited as "running without a live allocation".

ds01d's own stop of an idle container (lifecycle_stop: the 'stopping' event written, the
engine stopped it, the allocation held) is driven by an idle countdown instead of a request;
after the restart the container is stopped and held once, for the deadline announced before
the crash and a hold that is not started again.

The fault points are ds01's own (ds01/faults.py): DS01_FAULT=<op>.<step> in ds01d's
environment makes it exit with 137 right after that step, like `kill -9`. Each test's name is
its row of the table: `<scenario>-<point>-docker_<up|down>-<outcome>`.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
import requests
from containers_support import (
    MACHINES,
    STOPPABLE,
    TEST_IMAGE,
    SocketRelay,
    short_tmp,
)

from ds01 import faults
from ds01.api.schemas import DeployIn, QueueEntryOut
from ds01.errors import Ds01Error
from ds01.inventory import sim
from support import Daemon, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root, pytest.mark.slow]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  gpu_hold_after_stop: {hold}
allocation:
  reservation_timeout: 3s
docker:
  host: unix://{relay}
"""
# The lifecycle stop's row: an idle countdown of 3 s on a machine with every GPU idle.
IDLE = "  idle_timeout: 3s\n  policy:\n    idle_samples: 1\n    warn_before: 1s\n"

# Outcomes, checked by _check():
GONE = "gone"  # no container, no live allocation
RUNNING = "running"  # the same container runs, active allocation for its units
RUNNING_NEW = "running_new"  # recreated: another container, on other units, runs
STOPPED = "stopped"  # the same container, stopped, no active allocation


@dataclass(frozen=True)
class Scenario:
    name: str
    op: str  # the faults.POINTS operation it drives
    hold: str  # gpu_hold_after_stop
    outcomes: dict[str, str]  # step → outcome


SCENARIOS = [
    Scenario(
        "deploy",
        "deploy",
        "0s",
        {"reserved": GONE, "created": GONE, "started": GONE, "activated": RUNNING},
    ),
    Scenario(
        "start_released",
        "start",
        "0s",
        {"reserved": STOPPED, "started": RUNNING, "activated": RUNNING},
    ),
    # While held the start takes no reservation: only its later points exist.
    Scenario("start_held", "start", "1h", {"started": RUNNING, "activated": RUNNING}),
    Scenario(
        "recreate",
        "recreate",
        "0s",
        {
            "reserved": STOPPED,
            "snapshot": STOPPED,
            "created": STOPPED,
            "old_removed": RUNNING_NEW,
            "renamed": RUNNING_NEW,
            "started": RUNNING_NEW,
        },
    ),
    Scenario("stop", "stop", "0s", {"stopped": STOPPED, "held": STOPPED}),
    Scenario("retire", "retire", "0s", {"removed": GONE, "released": GONE}),
    # ds01d stops an idle container (lifecycle/reclaim.py → ContainerService.stop_by_daemon).
    Scenario(
        "idle_stop",
        "lifecycle_stop",
        "1h",
        {"announced": STOPPED, "stopped": STOPPED, "held": STOPPED},
    ),
    # Through the Docker gate, as `docker create --gpus 1` and `docker start` would.
    Scenario("gate_create", "gate_create", "0s", {"answered": GONE, "recorded": GONE}),
    Scenario("gate_start", "gate_start", "0s", {"reserved": STOPPED, "started": RUNNING}),
    # The queue's dispatcher (services/queue.py) admits a queued deploy as capacity frees: the
    # entry marked admitting, then its deploy done. Either way the restarted ds01d starts it
    # exactly once (queued again, or settled as admitted).
    Scenario("queue", "queue", "0s", {"admitting": RUNNING, "deployed": RUNNING}),
    # A docker create the gate holds open (gate.queue: wait), as the dispatcher admits it: its
    # units reserved with the create intent, not yet handed over. The client's connection dies
    # with ds01d; the restarted one ends the entry (failed) and recovery releases the
    # reservation (with Docker away: only once Docker is back, never by its timeout).
    Scenario("queue_gate", "queue_gate", "0s", {"reserved": GONE}),
]

# Steps after which an intent is open, i.e. whose outcome must wait for Docker to return.
WITH_INTENT = {
    ("deploy", "reserved"),
    ("deploy", "created"),
    ("deploy", "started"),
    ("start_released", "reserved"),
    ("start_released", "started"),
    *(("recreate", step) for step in faults.POINTS["recreate"]),
    *(("gate_create", step) for step in faults.POINTS["gate_create"]),
    *(("gate_start", step) for step in faults.POINTS["gate_start"]),
    ("queue_gate", "reserved"),
}


def _cases() -> Iterator[Any]:
    for sc in SCENARIOS:
        for step, outcome in sc.outcomes.items():
            for down in (False, True):
                if down and (sc.name, step) not in WITH_INTENT:
                    continue
                docker = "down" if down else "up"
                yield pytest.param(
                    sc, step, down, id=f"{sc.name}-{sc.op}.{step}-docker_{docker}-{outcome}"
                )


def test_the_table_covers_every_fault_point() -> None:
    for op, steps in faults.POINTS.items():
        covered = {s for sc in SCENARIOS if sc.op == op for s in sc.outcomes}
        assert covered == set(steps), f"{op}: fault points without a crash test"


@dataclass
class World:
    d: Daemon
    relay: SocketRelay
    client: docker.DockerClient
    name: str

    @property
    def docker_name(self) -> str:
        return f"root.{self.name}"

    def rows(self, sql: str, *params: object) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.d.state_dir / 'ds01.db'}?mode=ro", uri=True)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def container(self) -> Any | None:
        found = self.client.containers.list(all=True, filters={"name": f"^/{self.docker_name}$"})
        return found[0] if found else None


@pytest.fixture
def world(docker_host: str, docker_client: docker.DockerClient) -> Iterator[World]:
    base = short_tmp()
    relay = SocketRelay(base / "docker.sock", docker_host)
    relay.start()
    d = Daemon(base, "", MACHINES / "4xA100-40GB.yaml", None)
    w = World(d, relay, docker_client, f"crash{uuid.uuid4().hex[:8]}")
    try:
        yield w
    finally:
        d.stop()
        relay.stop()
        for c in docker_client.containers.list(all=True, filters={"label": "ds01.owner=root"}):
            if (
                c.name == w.docker_name
                or c.name.startswith(w.docker_name + "-")  # the queue row's filler
                or c.name.startswith("ds01-recreate-")
            ):
                c.remove(force=True)


def _units_of(container: Any) -> list[str]:
    reqs = container.attrs["HostConfig"].get("DeviceRequests") or []
    return sorted(u for r in reqs for u in (r.get("DeviceIDs") or []))


def _crash(w: World, call: Any) -> None:
    """Run the operation the armed ds01d dies in; it must die at the fault point."""
    with pytest.raises((Ds01Error, docker.errors.DockerException, requests.RequestException)):
        call()
    assert w.d.proc is not None
    rc = w.d.proc.wait(timeout=60)
    w.d.proc = None
    assert rc == faults.EXIT_STATUS, w.d.log()[-2000:]
    assert "fault point" in w.d.log()


@pytest.mark.parametrize(("sc", "step", "docker_down"), list(_cases()))
def test_crash_at_every_step(world: World, sc: Scenario, step: str, docker_down: bool) -> None:
    w = world
    config = CONFIG.format(hold=sc.hold, relay=w.relay.path)
    if sc.op == "lifecycle_stop":
        config = "gpu:\n  sample_interval: 1s\n" + config.replace(
            "allocation:\n", IDLE + "allocation:\n"
        )
        w.d.machine = w.d.base / "4xA100.yaml"
        shutil.copy(MACHINES / "4xA100-40GB.yaml", w.d.machine)
        for gpu in ("0", "1", "2", "3"):
            sim.set_utilization(w.d.machine, gpu, 0)
    if sc.op == "queue_gate":
        config += "gate:\n  queue: wait\n"
    w.d.write_config(config)
    w.d.extra_env = {faults.ENV: f"{sc.op}.{step}"}
    w.d.start()
    body = DeployIn(name=w.name, image=TEST_IMAGE, gpus=1, command=list(STOPPABLE))
    before: Any = None
    if sc.name.startswith("gate_"):
        before = _through_the_gate(w, sc)
    with w.d.client() as c:
        if sc.name.startswith("gate_"):
            pass
        elif sc.name == "deploy":
            _crash(w, lambda: c.deploy(body))
        elif sc.name == "queue":
            _queue_and_free(w, c, body)
            _died(w)  # the dispatcher admits it when the filler is retired: ds01d dies
        elif sc.name == "queue_gate":
            _gate_waits_and_free(w, c)
        else:
            c.deploy(body)
            before = w.container()
            assert before is not None
            if sc.name == "idle_stop":
                _died(w)  # the idle countdown runs out: ds01d dies stopping the container
            elif sc.name == "stop":
                _crash(w, lambda: c.container_op(w.name, "stop"))
            elif sc.name == "retire":
                _crash(w, lambda: c.container_op(w.name, "retire"))
            else:
                c.container_op(w.name, "stop")
                if sc.name == "recreate":
                    # Its unit is taken from it: starting again must recreate it elsewhere.
                    c.drain(_units_of(before)[0], reason="test: force a recreate")
                _crash(w, lambda: c.container_op(w.name, "start"))

    w.d.extra_env = {}
    if docker_down:
        w.relay.stop()
        w.d.start()
        # Docker is away: nothing can be decided, and the reservation outlives its timeout
        # (a container may run on its units) instead of being handed to someone else.
        time.sleep(4)  # deliberately past reservation_timeout (3s): it must not expire
        open_intents = w.rows("SELECT allocation_id FROM intents")
        assert len(open_intents) == 1
        ((state,),) = w.rows("SELECT state FROM allocations WHERE id = ?", open_intents[0][0])
        assert state == "reserved"
        w.relay.start()
        wait_for(lambda: not w.rows("SELECT 1 FROM intents") or None, "recovery", timeout=30)
    else:
        w.d.start()  # recovers before it answers
    if sc.name == "queue":
        # Started once: the entry admitted, bound to the one container of its name.
        wait_for(
            lambda: w.rows("SELECT state FROM queue") == [("admitted",)] or None,
            "the queue entry to be admitted",
            timeout=60,
            detail=w.d.log,
        )
        now = w.container()
        assert now is not None
        assert w.rows("SELECT container_id FROM queue") == [(now.id,)]
        admitted = w.rows("SELECT 1 FROM events WHERE kind = 'queue' AND action = 'admitted'")
        assert len(admitted) == 1
    if sc.name == "queue_gate":
        # Its client is gone with the old ds01d: ended, never admitted into a container.
        wait_for(
            lambda: w.rows("SELECT state FROM queue") == [("failed",)] or None,
            "the gate's queue entry to be ended",
            timeout=60,
            detail=w.d.log,
        )
    if sc.name == "idle_stop":
        # The restarted ds01d finishes the stop on its own passes (the countdown resumed).
        wait_for(
            lambda: w.rows("SELECT 1 FROM allocations WHERE state = 'held'") or None,
            "the idle container's allocation to be held",
            timeout=30,
        )

    _check(w, sc.outcomes[step], before)
    if sc.name == "idle_stop":
        _check_idle_stop(w)


def _queue_and_free(w: World, c: Any, body: DeployIn) -> None:
    """A full machine (two GPUs drained, a filler on the other two), the deploy queued, then
    the filler retired: the dispatcher takes the entry."""
    for unit in c.gpu_status().units[:2]:
        c.drain(unit.uuid, reason="test: a full machine")
    filler = DeployIn(name=f"{w.name}-f", image=TEST_IMAGE, gpus=2, command=list(STOPPABLE))
    c.deploy(filler)
    queued = c.deploy_or_queue(body.model_copy(update={"queue": True}))
    assert isinstance(queued, QueueEntryOut) and queued.state == "queued", queued
    with contextlib.suppress(Ds01Error, requests.RequestException):
        c.container_op(filler.name, "retire")  # ds01d may die before it answers


def _gate_waits_and_free(w: World, c: Any) -> None:
    """A full machine, a docker create through the gate waiting in the queue for one GPU, then
    the filler retired: the dispatcher reserves the create's unit and ds01d dies."""
    for unit in c.gpu_status().units[:2]:
        c.drain(unit.uuid, reason="test: a full machine")
    filler = DeployIn(name=f"{w.name}-f", image=TEST_IMAGE, gpus=2, command=list(STOPPABLE))
    c.deploy(filler)
    gate = docker.DockerClient(base_url=f"unix://{w.d.run_dir / 'docker.sock'}", timeout=120)
    gpu = docker.types.DeviceRequest(count=1, capabilities=[["gpu"]])
    failed: list[BaseException] = []

    def create() -> None:
        try:
            gate.containers.create(
                TEST_IMAGE, list(STOPPABLE), name=w.docker_name, device_requests=[gpu]
            )
        except Exception as err:
            failed.append(err)

    waiting = threading.Thread(target=create)
    waiting.start()
    try:
        wait_for(
            lambda: w.rows("SELECT state FROM queue") == [("queued",)] or None,
            "the gate's create to wait in the queue",
        )
        with contextlib.suppress(Ds01Error, requests.RequestException):
            c.container_op(filler.name, "retire")  # ds01d may die before it answers
        _died(w)
        waiting.join(timeout=60)
        assert not waiting.is_alive() and failed, "the waiting create outlived ds01d"
    finally:
        gate.close()


def _died(w: World) -> None:
    """ds01d dies at the armed point on its own (no request drives it)."""
    assert w.d.proc is not None
    rc = w.d.proc.wait(timeout=60)
    w.d.proc = None
    assert rc == faults.EXIT_STATUS, w.d.log()[-2000:]
    assert "fault point" in w.d.log()


def _check_idle_stop(w: World) -> None:
    """The stop the restarted ds01d finishes is the one announced before the crash — every
    'stopping' event names the same deadline — and the allocation is held once, its hold
    running from then (not started again by the restart)."""
    (cid,) = [c for (c,) in w.rows("SELECT DISTINCT container_id FROM allocations")]
    ((alloc_id, state, hold_until),) = w.rows(
        "SELECT id, state, hold_until FROM allocations WHERE container_id = ?", cid
    )
    assert state == "held"
    stops = w.rows(
        "SELECT json_extract(details, '$.deadline') FROM events WHERE allocation_id = ?"
        " AND action = 'stopping'",
        alloc_id,
    )
    assert len({d for (d,) in stops}) == 1, stops
    helds = w.rows(
        "SELECT ts FROM events WHERE allocation_id = ? AND kind = 'alloc' AND action = 'held'",
        alloc_id,
    )
    assert len(helds) == 1, helds
    assert abs(hold_until - (helds[0][0] + 3600)) < 1


def _through_the_gate(w: World, sc: Scenario) -> Any:
    gate = docker.DockerClient(base_url=f"unix://{w.d.run_dir / 'docker.sock'}", timeout=60)
    gpu = docker.types.DeviceRequest(count=1, capabilities=[["gpu"]])

    def create() -> Any:
        return gate.containers.create(
            TEST_IMAGE, list(STOPPABLE), name=w.docker_name, device_requests=[gpu]
        )

    try:
        if sc.name == "gate_create":
            _crash(w, create)
            return None
        made = create()
        made.start()
        made.stop(timeout=5)
        # hold 0s: the stop event releases the allocation; the next start allocates again.
        wait_for(
            lambda: (
                not w.rows(
                    "SELECT id FROM allocations WHERE state != 'released' AND container_id = ?",
                    made.id,
                )
                or None
            ),
            "the stopped container's allocation to be released",
        )
        before = w.container()
        _crash(w, made.start)
        return before
    finally:
        gate.close()


def _check(w: World, outcome: str, before: Any) -> None:
    # I1
    doubles = w.rows(
        "SELECT au.unit_uuid FROM allocation_units au JOIN allocations a ON a.id ="
        " au.allocation_id WHERE a.state != 'released' GROUP BY au.unit_uuid HAVING COUNT(*) > 1"
    )
    assert doubles == []
    # I3
    assert w.rows("SELECT id FROM allocations WHERE state = 'reserved'") == []
    assert w.rows("SELECT allocation_id FROM intents") == []
    # I2 for every ds01 container of this test
    live = w.rows("SELECT id, state, container_id FROM allocations WHERE state != 'released'")
    for c in w.client.containers.list(filters={"label": "ds01.owner=root"}):
        if c.name != w.docker_name and not c.name.startswith("ds01-recreate-"):
            continue
        bound = [r for r in live if r[2] == c.id]
        assert len(bound) == 1 and bound[0][1] == "active", (c.name, live)
        units = sorted(
            u
            for (u,) in w.rows(
                "SELECT unit_uuid FROM allocation_units WHERE allocation_id = ?", bound[0][0]
            )
        )
        assert units == _units_of(c)
    # I4 and the outcome
    now = w.container()
    temp = w.client.containers.list(all=True, filters={"name": "^/ds01-recreate-"})
    assert [t for t in temp if t.labels.get("ds01.owner") == "root"] == []
    if outcome == GONE:
        assert now is None
        assert live == []
    else:
        assert now is not None
        running = now.status == "running"
        assert running == (outcome in (RUNNING, RUNNING_NEW)), now.status
        if before is not None:
            assert (now.id != before.id) == (outcome == RUNNING_NEW)
            if outcome == RUNNING_NEW:
                assert _units_of(now) != _units_of(before)
        if outcome == STOPPED:
            assert [r for r in live if r[2] == now.id and r[1] == "active"] == []
    # I5: each allocation's last alloc event says its state
    last = dict(
        w.rows(
            "SELECT allocation_id, action FROM events WHERE id IN (SELECT MAX(id) FROM events"
            " WHERE kind = 'alloc' AND allocation_id IS NOT NULL GROUP BY allocation_id)"
        )
    )
    said = {"reserved": "reserved", "active": "activated", "held": "held", "released": "released"}
    for alloc_id, state in w.rows("SELECT id, state FROM allocations"):
        assert last.get(alloc_id) == said[state], (alloc_id, state, last.get(alloc_id))
    removed = {
        r[0]
        for r in w.rows(
            "SELECT json_extract(details, '$.container_id') FROM events"
            " WHERE kind = 'container' AND action = 'removed'"
        )
    }
    orphaned = {
        r[0]
        for r in w.rows(
            "SELECT json_extract(details, '$.container_id') FROM events"
            " WHERE kind = 'container' AND action = 'orphan'"
        )
    }
    assert removed & orphaned == set()
