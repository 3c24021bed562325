"""The queue (issue 16), end to end: a real ds01d on a full simulated machine (4 × A100), real
users, real containers on the private engine. Three users queue; as capacity frees (retire),
their containers start by themselves in the documented priority order, each user is told, and
`ds01 queue` positions agree; the queue survives a kill -9 and restart without loss or
duplication. Users are attackers too: another user's entry can be neither cancelled nor
explained, and what `--all` shows of it follows the privacy setting. Every wait is a bounded
poll; nothing is timed.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

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

from support import TEST_IMAGE, loop_passes, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

# cem's group has the group factor 1 (× 500 points): cem goes first although he queued last;
# ann and bob have no use and the same size, so the older entry (ann) goes before bob.
CONFIG = """\
admin_group: ds01t-admins
privacy: {privacy}
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
users:
  {fil}:
    max_runtime: 1h
groups:
  lab:
    members: [{cem}]
queue:
  weights: {{fairshare: 1000, age: 100, group: 500, size: 10}}
  group_priority: {{lab: 1}}
"""


@pytest.fixture
def machine() -> Iterator[Path]:
    base = short_tmp()
    path = base / "4xA100.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", path)
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def people(docker_client: docker.DockerClient) -> Iterator[dict[str, str]]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    names = {k: unique_user(k[:3]) for k in ("fil", "ann", "bob", "cem")}
    for name in names.values():
        add_user(users, name)
    try:
        yield names
    finally:
        remove_owned(docker_client, list(names.values()))
        users.cleanup()


def _queue(d: Daemon, user: str, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = cli_json(d, "queue", *args, user=user)
    return out


def _queued(d: Daemon, user: str, name: str) -> dict[str, Any]:
    """`ds01 container deploy NAME --queue --json` on the full machine: the entry."""
    r = d.cli(
        "container", "deploy", name, "--image", TEST_IMAGE, "--gpus", "1", "--queue",
        "--detach", "--json", "--", "sleep", "3600", user=user,
    )  # fmt: skip
    assert r.returncode == 0, f"{r.stdout}{r.stderr}"
    out = json.loads(r.stdout)
    assert set(out) == {"queued"}, out
    entry: dict[str, Any] = out["queued"]
    return entry


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def _notices(d: Daemon, user: str) -> list[str]:
    path = d.state_dir / "notifications.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        n["message"] for n in map(json.loads, lines) if n["user"] == user and n["topic"] == "queue"
    ]


def _admitted_order(d: Daemon) -> list[str]:
    return [
        str(r[0])
        for r in db_rows(
            d, "SELECT user FROM events WHERE kind = 'queue' AND action = 'admitted' ORDER BY id"
        )
    ]


def _entries(d: Daemon) -> list[tuple[int, str, str]]:
    return [
        (int(r[0]), str(r[1]), str(r[2]))
        for r in db_rows(d, "SELECT id, user, state FROM queue ORDER BY id")
    ]


def test_three_users_queue_and_start_in_priority_order_across_a_kill_9(
    docker_client: docker.DockerClient, docker_host: str, machine: Path, people: dict[str, str]
) -> None:
    fil, ann, bob, cem = people["fil"], people["ann"], people["bob"], people["cem"]
    d = Daemon(
        short_tmp(), CONFIG.format(privacy="show_all", cem=cem, fil=fil), machine, docker_host
    )
    d.start()
    try:
        # fil fills the machine: two containers of two GPUs each.
        deploy(d, fil, "f1", "--gpus", "2", command=("sleep", "3600"))
        deploy(d, fil, "f2", "--gpus", "2", command=("sleep", "3600"))

        # Over quota is refused as before, never queued: fil holds 4 of max_gpueq 4.
        r = d.cli(
            "container", "deploy", "more", "--image", TEST_IMAGE, "--gpus", "1", "--queue",
            "--detach", user=fil,
        )  # fmt: skip
        assert r.returncode == 1 and "gpueq" in r.stderr, r.stderr
        assert _entries(d) == []

        # Without --queue a full machine refuses, as before.
        r = d.cli(
            "container", "deploy", "now", "--image", TEST_IMAGE, "--gpus", "1", "--detach",
            user=ann,
        )  # fmt: skip
        assert r.returncode == 1, r.stdout
        assert _entries(d) == []

        a = _queued(d, ann, "a")
        b = _queued(d, bob, "b")
        c = _queued(d, cem, "c")
        assert (a["position"], a["state"], a["name"], a["request"]) == (1, "queued", "a", "1 GPU")
        assert c["position"] == 1  # cem's group priority puts him ahead at once

        # The same name twice is refused; the queue is unchanged.
        r = d.cli(
            "container", "deploy", "a", "--image", TEST_IMAGE, "--gpus", "1", "--queue",
            "--detach", user=ann,
        )  # fmt: skip
        assert r.returncode == 1 and "already have a request" in r.stderr, r.stderr
        assert len(_entries(d)) == 3

        # Each sees their own position; --all shows the whole order with user names
        # (privacy: show_all) but not the others' container names.
        assert [(e["id"], e["position"]) for e in _queue(d, ann)["entries"]] == [(a["id"], 2)]
        assert [(e["id"], e["position"]) for e in _queue(d, bob)["entries"]] == [(b["id"], 3)]
        everyone = _queue(d, bob, "--all")
        assert everyone["waiting"] == 3
        assert [(e["user"], e["position"], e["name"]) for e in everyone["entries"]] == [
            (cem, 1, None),
            (ann, 2, None),
            (bob, 3, "b"),
        ]

        # Estimated starts come from fil's max runtime (1 h, no GPU hold): cem and ann start
        # when f1 stops (its 2 GPUs), bob when f2 stops — as 'ds01 container list' says.
        def estimates() -> list[str | None]:
            out = [e.get("estimated_start") for e in _queue(d, bob, "--all")["entries"]]
            return out if all(out) else []

        starts = wait_for(estimates, "estimated start times", 60, detail=d.log)
        stops = {
            c["name"]: c["lifecycle"]["stop_at"] for c in cli_json(d, "container", "list", user=fil)
        }
        f1_first = _ts(stops["f1"]) <= _ts(stops["f2"])
        first, second = (stops["f1"], stops["f2"]) if f1_first else (stops["f2"], stops["f1"])
        assert [
            abs(_ts(s) - _ts(t)) <= 1 for s, t in zip(starts, [first, first, second], strict=True)
        ] == [
            True,
            True,
            True,
        ], (starts, stops)
        text = d.cli("queue", user=ann)
        assert text.returncode == 0 and "Queue (3 waiting)" in text.stdout, text.stdout
        assert "Starts (est.)" in text.stdout and f"ds01 queue explain {a['id']}" in text.stdout

        # explain: the factors' points add up to the priority, and the order follows them.
        totals = []
        for user, entry in ((cem, c), (ann, a), (bob, b)):
            x = cli_json(d, "queue", "explain", str(entry["id"]), user=user)
            assert [f["name"] for f in x["factors"]] == ["fairshare", "age", "group", "size"]
            assert x["total"] == pytest.approx(sum(f["points"] for f in x["factors"]), abs=1e-6)
            totals.append(x["total"])
        # Each total is worked out when it is asked for, and the age factor grows with time
        # (age weight 100 over queue.age_max, a day: ~0.001 points a second): ann's and bob's
        # differ by the second between their requests, which the time between the explain
        # calls can undo. The queue's order, decided at one moment, is checked above (--all).
        assert all(x >= y - 0.01 for x, y in itertools.pairwise(totals)), totals
        cem_x = cli_json(d, "queue", "explain", str(c["id"]), user=cem)
        assert {f["name"]: f["points"] for f in cem_x["factors"]}["group"] == 500.0

        # Attackers: bob can neither cancel nor explain ann's entry; bad ids are usage errors.
        for args in (("cancel", str(a["id"])), ("explain", str(a["id"]))):
            r = d.cli("queue", *args, user=bob)
            assert r.returncode == 1 and "not found" in r.stderr, (args, r.stderr)
        for bad in ("abc", "0", "-3"):
            r = d.cli("queue", "cancel", bad, user=bob)
            assert r.returncode == 2, (bad, r.stderr)
        assert [s for _, _, s in _entries(d)] == ["queued", "queued", "queued"]

        # Capacity frees: fil retires f1 (2 GPUs): cem, then ann start by themselves.
        d.cli("container", "retire", "f1", user=fil)
        wait_for(
            lambda: len(_admitted_order(d)) == 2 or None,
            "two queued containers to start",
            60,
            detail=d.log,
        )
        assert _admitted_order(d) == [cem, ann]
        for user, name in ((cem, "c"), (ann, "a")):
            box = docker_client.containers.get(f"{user}.{name}")
            assert box.status == "running"
            units = [
                str(u)
                for (u,) in db_rows(
                    d,
                    "SELECT au.unit_uuid FROM allocation_units au JOIN allocations al ON"
                    " al.id = au.allocation_id WHERE al.user = ? AND al.container = ?"
                    " AND al.state = 'active'",
                    user,
                    name,
                )
            ]
            assert len(units) == 1
            assert (
                process_env(docker_client, f"{user}.{name}")["NVIDIA_VISIBLE_DEVICES"] == units[0]
            )
            wait_for(lambda u=user: _notices(d, u) or None, f"{user} to be told", 30)
            assert f"'{name}' is running now" in _notices(d, user)[0]
        assert _queue(d, bob)["entries"][0]["position"] == 1
        mine = _queue(d, ann)["entries"]
        assert mine == []  # admitted: no longer waiting

        # kill -9, restart with privacy hide_others: bob's entry is still there, once.
        d.kill9()
        d.write_config(CONFIG.format(privacy="hide_others", cem=cem, fil=fil))
        d.start()
        assert [(u, s) for _, u, s in _entries(d)] == [
            (ann, "admitted"),
            (bob, "queued"),
            (cem, "admitted"),
        ]
        assert [e["position"] for e in _queue(d, bob)["entries"]] == [1]
        # hide_others: others see the line but not who is in it.
        hidden = _queue(d, ann, "--all")
        assert [(e["user"], e["name"], e["mine"]) for e in hidden["entries"]] == [
            (None, None, False)
        ]

        # The rest frees: bob's container starts, once.
        d.cli("container", "retire", "f2", user=fil)
        wait_for(
            lambda: len(_admitted_order(d)) == 3 or None,
            "bob's container to start",
            60,
            detail=d.log,
        )
        assert _admitted_order(d) == [cem, ann, bob]
        assert [s for _, _, s in _entries(d)] == ["admitted", "admitted", "admitted"]
        assert [x.name for x in docker_client.containers.list(filters={"name": bob})] == [
            f"{bob}.b"
        ]
        wait_for(lambda: _notices(d, bob) or None, "bob to be told", 30)
        assert _queue(d, bob, "--all")["waiting"] == 0
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def test_cancel_is_the_owners_and_an_admins_and_is_audited(
    docker_client: docker.DockerClient, docker_host: str, machine: Path, people: dict[str, str]
) -> None:
    fil, ann, bob = people["fil"], people["ann"], people["bob"]
    d = Daemon(
        short_tmp(),
        CONFIG.format(privacy="show_all", cem=people["cem"], fil=fil),
        machine,
        docker_host,
    )
    d.start()
    try:
        deploy(d, fil, "f1", "--gpus", "2", command=("sleep", "3600"))
        deploy(d, fil, "f2", "--gpus", "2", command=("sleep", "3600"))
        a = _queued(d, ann, "a")
        b = _queued(d, bob, "b")
        out = cli_json(d, "queue", "cancel", str(a["id"]), user=ann)
        assert (out["id"], out["state"]) == (a["id"], "cancelled")
        # Cancelling twice: refused, nothing changes.
        r = d.cli("queue", "cancel", str(a["id"]), user=ann)
        assert r.returncode == 1 and "cancelled" in r.stderr, r.stderr
        # root is an admin: may cancel bob's.
        out = cli_json(d, "queue", "cancel", str(b["id"]))
        assert out["state"] == "cancelled"
        events = db_rows(
            d,
            "SELECT actor, user, reason FROM events WHERE kind = 'queue' AND action ="
            " 'cancelled' ORDER BY id",
        )
        assert events == [(ann, ann, "user_cancel"), ("root", bob, "admin_cancel")]
        # Nothing starts for a cancelled entry when capacity frees.
        r = d.cli("container", "retire", "f1", user=fil)
        assert r.returncode == 0, r.stderr
        loop_passes(d, "queue", 3)  # whole dispatcher passes after the release
        assert _admitted_order(d) == []
        assert docker_client.containers.list(all=True, filters={"label": f"ds01.owner={ann}"}) == []
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


# Backfill: ann's 2-GPU request heads the line (oldest; size counts nothing here). When one GPU
# frees, cem's 1-GPU request (no max_runtime: it could run past ann's start) waits, and bob's
# (max_runtime 10m: back long before fil's containers reach their 1 h limit) starts.
BACKFILL = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
users:
  {fil}:
    max_runtime: 1h
  {bob}:
    max_runtime: 10m
queue:
  weights: {{fairshare: 1000, age: 100, group: 0, size: 0}}
"""


def test_backfill_starts_only_what_cannot_delay_the_head(
    docker_client: docker.DockerClient, docker_host: str, machine: Path, people: dict[str, str]
) -> None:
    fil, ann, bob, cem = people["fil"], people["ann"], people["bob"], people["cem"]
    d = Daemon(short_tmp(), BACKFILL.format(fil=fil, bob=bob), machine, docker_host)
    d.start()
    try:
        deploy(d, fil, "f1", "--gpus", "2", command=("sleep", "3600"))
        deploy(d, fil, "f2", "--gpus", "1", command=("sleep", "3600"))
        deploy(d, fil, "f3", "--gpus", "1", command=("sleep", "3600"))
        r = d.cli(
            "container", "deploy", "a", "--image", TEST_IMAGE, "--gpus", "2", "--queue",
            "--detach", "--json", "--", "sleep", "3600", user=ann,
        )  # fmt: skip
        assert r.returncode == 0 and "queued" in json.loads(r.stdout), r.stdout + r.stderr
        c = _queued(d, cem, "c")
        b = _queued(d, bob, "b")
        # The head's start becomes known once fil's containers have their runtime countdowns.
        wait_for(
            lambda: all(e.get("estimated_start") for e in _queue(d, ann)["entries"]) or None,
            "ann's estimated start",
            60,
            detail=d.log,
        )
        assert d.cli("container", "retire", "f3", user=fil).returncode == 0
        wait_for(lambda: _admitted_order(d) == [bob] or None, "bob's backfill", 60, detail=d.log)
        loop_passes(d, "queue", 3)
        assert _admitted_order(d) == [bob]
        assert [(u, s) for _, u, s in _entries(d)] == [
            (ann, "queued"),
            (cem, "queued"),
            (bob, "admitted"),
        ]
        reasons = db_rows(
            d, "SELECT user, reason FROM events WHERE kind = 'queue' AND action = 'admitting'"
        )
        assert (bob, "backfill") in reasons and (cem, "backfill") not in reasons
        assert [e["position"] for e in _queue(d, cem)["entries"]] == [2]
        assert c["id"] != b["id"]
        assert docker_client.containers.get(f"{bob}.b").status == "running"
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


QUOTA = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 4
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
users:
  {ann}:
    max_gpueq: 1
queue:
  weights: {{fairshare: 1000, age: 100, group: 0, size: 0}}
"""


def test_an_entry_whose_user_is_at_quota_waits_without_blocking_others(
    docker_client: docker.DockerClient, docker_host: str, machine: Path, people: dict[str, str]
) -> None:
    """ann (max_gpueq 1) queues two 1-GPU deploys, then bob one. Two GPUs free: ann's first
    starts; her second would put her over quota, so it stays queued saying why, and bob's
    starts. When ann retires her first, her second starts."""
    fil, ann, bob = people["fil"], people["ann"], people["bob"]
    d = Daemon(short_tmp(), QUOTA.format(ann=ann), machine, docker_host)
    d.start()
    try:
        deploy(d, fil, "f1", "--gpus", "2", command=("sleep", "3600"))
        deploy(d, fil, "f2", "--gpus", "2", command=("sleep", "3600"))
        a1 = _queued(d, ann, "a1")
        a2 = _queued(d, ann, "a2")
        _queued(d, bob, "b")
        assert d.cli("container", "retire", "f1", user=fil).returncode == 0
        wait_for(lambda: len(_admitted_order(d)) == 2 or None, "two starts", 60, detail=d.log)
        loop_passes(d, "queue", 3)
        assert _admitted_order(d) == [ann, bob]
        waiting = _queue(d, ann)["entries"]
        assert [(e["id"], e["state"], e["position"]) for e in waiting] == [(a2["id"], "queued", 1)]
        assert "gpueq" in (waiting[0]["note"] or ""), waiting
        # Tried again only when allocations change, not at every pass: each try audits a
        # refusal (the pass that admitted bob, the next one; none in the three passes after).
        refused = db_rows(
            d,
            "SELECT COUNT(*) FROM events WHERE kind = 'alloc' AND action = 'refused'"
            " AND user = ? AND reason = 'max_gpueq'",
            ann,
        )
        assert refused[0][0] <= 2, refused
        assert a1["id"] in {i for i, _, state in _entries(d) if state == "admitted"}
        assert d.cli("container", "retire", "a1", user=ann).returncode == 0
        wait_for(lambda: len(_admitted_order(d)) == 3 or None, "ann's second", 60, detail=d.log)
        assert _admitted_order(d) == [ann, bob, ann]
        assert docker_client.containers.get(f"{ann}.a2").status == "running"
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)
