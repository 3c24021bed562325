"""Admins' reservations with real containers on the private engine and real Unix users.

1. The queue's dispatcher, in process with a clock the test moves (deterministic): before a
   window only entries that must end before it are backfilled onto reserved GPUs; the
   reservation's user's entry starts on them as soon as one is free although the head of the
   line still waits; a used reservation keeps its GPUs until its end, when the head starts;
   unused reserved GPUs return after the grace period and the waiting head starts on them.
2. A real ds01d: an admin reserves from the command line; another user is refused with a
   message that names the reservation and says what to do; the reserved user deploys onto the
   reserved GPU (pinned, as NVIDIA_VISIBLE_DEVICES shows); the reservation survives a kill -9;
   an admin's `unreserve` frees the GPU. Every wait is a bounded poll; nothing is timed.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from containers_support import (
    MACHINES,
    Daemon,
    Users,
    add_user,
    cli_json,
    db_rows,
    deploy,
    need,
    process_env,
    remove_owned,
    short_tmp,
    unique_user,
)

from ds01.config import Config, parse_config_text
from ds01.errors import Refusal, RefusalReason
from ds01.identity import Caller, caller_of_name
from ds01.inventory.select import open_backend
from ds01.runtime.engine import Engine
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.containers import ContainerService, DeployRequest
from ds01.services.queue import QueueService
from ds01.store.db import Database
from support import TEST_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.root]

H = 3600.0
ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())


@pytest.fixture
def people(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    names = {k: unique_user(k[:3]) for k in ("ann", "bob", "cem")}
    for name in names.values():
        add_user(users, name)
    try:
        yield names
    finally:
        remove_owned(docker_client, list(names.values()))
        users.cleanup()


# ---- 1. the dispatcher, with a clock the test moves ----------------------------------------


@dataclass
class Line:
    queue: QueueService
    svc: AllocationService
    now: list[float]
    p: dict[str, str]

    def caller(self, key: str) -> Caller:
        return caller_of_name(self.p[key])

    def request(self, name: str) -> DeployRequest:
        return DeployRequest(
            name=name,
            image=TEST_IMAGE,
            allocation=AllocationRequest.from_options(gpus=1),
            command=("sleep", "3600"),
        )

    def deploy_or_queue(self, key: str, name: str) -> Refusal | None:
        """`ds01 container deploy NAME --gpus 1 --queue`: the refusal that queued it, or None
        when it started at once."""
        req = self.request(name)
        try:
            self.queue.containers.deploy(self.caller(key), req)
        except Refusal as refusal:
            self.queue.enqueue(self.caller(key), req, refusal)
            return refusal
        return None

    def units_of(self, key: str) -> list[str]:
        return sorted(u.name for a in self.svc.all_live() if a.user == self.p[key] for u in a.units)

    def admitting(self) -> list[tuple[str, str]]:
        """Each attempt to start an entry (the head's too, when it is refused again)."""
        with self.svc.db.transaction(immediate=False) as conn:
            return [
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    "SELECT user, reason FROM events WHERE kind = 'queue' AND"
                    " action = 'admitting' ORDER BY id"
                )
            ]


LINE_CONFIG = """\
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
users:
  {bob}:
    max_runtime: 30m
reservations:
  grace: 30m
queue:
  weights: {{fairshare: 0, age: 100, group: 0, size: 0}}  # first come, first served
"""


@pytest.fixture
def line(tmp_path: Path, docker_host: str, people: dict[str, str]) -> Iterator[Line]:
    config: Config = parse_config_text(LINE_CONFIG.format(bob=people["bob"]), "test.yaml")
    now = [1_800_000_000.0]
    db = Database(tmp_path / "ds01.db")
    svc = AllocationService(db, lambda: config, clock=lambda: now[0])
    backend = open_backend("sim", MACHINES / "4xA100-40GB.yaml")
    svc.sync_units(backend.sample())
    backend.close()
    containers = ContainerService(svc, Engine(docker_host), lambda: config)
    yield Line(QueueService(containers, None, clock=lambda: now[0]), svc, now, people)
    db.close()


def test_the_dispatcher_and_backfill_respect_a_reservation(line: Line) -> None:
    t0 = line.now[0]
    ann, bob, cem = line.p["ann"], line.p["bob"], line.p["cem"]
    line.svc.reservations.create(ROOT, ["2,3"], "1h", "2h", ann, "paper deadline")
    # cem holds GPUs 0-1 with no known end; GPUs 2-3 are ann's from +1 h.
    held = line.svc.allocate(line.caller("cem"), AllocationRequest.from_options(gpus=2))
    line.svc.activate(held.id, container_id=None, actor=cem, reason="test")
    refused = line.deploy_or_queue("cem", "c")  # no max_runtime: could run into the window
    assert refused is not None and refused.reason is RefusalReason.NO_CAPACITY
    assert f"reserved for {ann}" in (refused.why or "")
    full = Refusal(RefusalReason.NO_CAPACITY, "no free GPU")
    for name in ("b1", "b2"):  # bob queued two while the machine was full
        line.queue.enqueue(line.caller("bob"), line.request(name), full)
    etas = {p.entry.user: p.estimated_start for p in line.queue.entries(ROOT, all_users=True)}
    # cem, the head: when the unused reservation returns (+1 h and its 30 min grace).
    assert etas[cem] == t0 + 1.5 * H

    # The head waits; bob's 30 min max_runtime ends before the window: his entries are
    # backfilled onto GPUs 2 and 3, each with a warning saying until when.
    assert len(line.queue.dispatch()) == 2
    assert line.admitting() == [(cem, "capacity"), (bob, "backfill"), (bob, "backfill")]
    assert line.units_of("bob") == ["2", "3"]

    # ann queues (her GPUs are lent); bob's first container ends (his max_runtime): GPU 2 is
    # hers again, and her entry starts on it although cem, ahead of her, still waits.
    assert line.deploy_or_queue("ann", "a") is not None
    line.now[0] = t0 + 30 * 60
    line.queue.containers.retire(line.caller("bob"), "b1")
    assert len(line.queue.dispatch()) == 1, line.admitting()
    assert line.admitting()[-2:] == [(cem, "capacity"), (ann, "reservation")]
    assert line.units_of("ann") == ["2"]
    assert [p.entry.user for p in line.queue.entries(ROOT, all_users=True)] == [cem]

    # The window opens, ann's reservation is in use: it stays hers until its end (+3 h).
    line.now[0] = t0 + H
    line.svc.expire_due()
    line.queue.containers.retire(line.caller("bob"), "b2")
    line.now[0] = t0 + 2 * H
    line.svc.expire_due()
    assert line.queue.dispatch() == []  # GPU 3 is free, and ann's: cem still waits
    line.now[0] = t0 + 3 * H
    line.svc.expire_due()  # the window is over: GPU 3 returns to the pool
    assert len(line.queue.dispatch()) == 1
    assert line.admitting()[-1] == (cem, "capacity")
    assert line.units_of("cem") == ["0", "1", "3"]


def test_unused_reserved_gpus_return_after_the_grace_period_and_the_head_starts(
    line: Line,
) -> None:
    t0 = line.now[0]
    cem = line.p["cem"]
    line.svc.reservations.create(ROOT, ["0,1,2,3"], "now", "4h", line.p["ann"], "course")
    assert line.deploy_or_queue("cem", "c") is not None
    assert line.queue.dispatch() == []
    [entry] = line.queue.entries(ROOT, all_users=True)
    assert entry.estimated_start == t0 + 0.5 * H
    line.now[0] = t0 + 0.5 * H  # ann never came: the GPUs return
    line.svc.expire_due()
    assert len(line.queue.dispatch()) == 1
    assert line.admitting() == [(cem, "capacity"), (cem, "capacity")]  # refused, then started
    assert line.units_of("cem") == ["0"]


# ---- 2. a real ds01d, real users, the command line ------------------------------------------

DAEMON_CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 4
  max_units_per_container: 4
  max_containers: 4
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
"""


def test_an_admin_reserves_a_gpu_others_are_refused_and_its_user_deploys(
    docker_client: docker.DockerClient, docker_host: str, people: dict[str, str]
) -> None:
    ann, bob = people["ann"], people["bob"]
    base = short_tmp()
    machine = base / "4xA100.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", machine)
    d = Daemon(base, DAEMON_CONFIG, machine, docker_host)
    d.start()
    try:
        # Only an admin may reserve; bad input is a usage error (2) that changes nothing.
        r = d.cli("admin", "reserve", "3", "--from", "now", "--to", "2h", "--for", ann,
                  "--reason", "thesis", user=bob)  # fmt: skip
        assert r.returncode == 1 and "reserving GPUs is for admins" in r.stderr, r.stderr
        r = d.cli("admin", "reserve", "9", "--from", "now", "--to", "2h", "--for", ann,
                  "--reason", "thesis")  # fmt: skip
        assert r.returncode == 2 and "no unit or GPU here is called '9'" in r.stderr, r.stderr
        r = d.cli("admin", "reserve", "3", "--from", "now", "--to", "2h", "--for",
                  "nosuchuser", "--reason", "thesis")  # fmt: skip
        assert r.returncode == 2 and "no user or group of that name" in r.stderr, r.stderr
        assert db_rows(d, "SELECT id FROM reservations") == []

        made = cli_json(d, "admin", "reserve", "2,3", "--from", "now", "--to", "2h",
                        "--for", ann, "--reason", "thesis deadline")  # fmt: skip
        assert (made["unit_names"], made["user"], made["status"]) == (["2", "3"], ann, "waiting")

        # bob fills what is free, then is refused with a message that says what to do.
        deploy(d, bob, "b1", "--gpus", "2", command=("sleep", "3600"))
        r = d.cli("container", "deploy", "b2", "--image", TEST_IMAGE, "--gpus", "1",
                  "--detach", user=bob)  # fmt: skip
        assert r.returncode == 1, r.stdout + r.stderr
        assert f"reserved for {ann}" in r.stderr and f"reservation {made['id']}" in r.stderr
        assert "--queue" in r.stderr, r.stderr

        # ann deploys onto her reserved GPUs (GPU 2 first): her container sees exactly it.
        out = deploy(d, ann, "a1", "--gpus", "1", command=("sleep", "3600"))
        uuid = out["gpus"][0]["uuid"]
        assert uuid == made["units"][0]
        assert process_env(docker_client, f"{ann}.a1")["NVIDIA_VISIBLE_DEVICES"] == uuid
        listed = cli_json(d, "admin", "reservations")
        assert [(x["id"], x["status"]) for x in listed] == [(made["id"], "in_use")]
        # Wide enough for every cell on one line: a reservation that ends tomorrow shows its
        # date too, and at 80 columns the reason would wrap.
        table = d.cli("admin", "reservations", env={"COLUMNS": "200"})
        assert table.returncode == 0 and "thesis deadline" in table.stdout, table.stdout
        assert "in_use" in table.stdout and ann in table.stdout
        # ann can read what was reserved for her in her own audit log
        mine = cli_json(d, "events", "--kind", "admin", user=ann)
        assert [e["action"] for e in mine] == ["reserve", "reservation_used"], mine

        # kill -9 and restart: still reserved for ann, bob still refused.
        d.kill9()
        d.start()
        r = d.cli("container", "deploy", "b3", "--image", TEST_IMAGE, "--gpus", "1",
                  "--detach", user=bob)  # fmt: skip
        assert r.returncode == 1 and f"reserved for {ann}" in r.stderr, r.stderr

        # The admin ends it: bob gets the GPU ann did not take.
        r = d.cli("admin", "unreserve", str(made["id"]), "--reason", "deadline moved")
        assert r.returncode == 0, r.stderr
        out = deploy(d, bob, "b4", "--gpus", "1", command=("sleep", "3600"))
        assert out["gpus"][0]["uuid"] == made["units"][1]
        actions = [
            str(x[0])
            for x in db_rows(d, "SELECT action FROM events WHERE kind = 'admin' ORDER BY id")
        ]
        assert actions == ["reserve", "reservation_used", "unreserve"]
    finally:
        d.stop()
        shutil.rmtree(base, ignore_errors=True)
