"""`docker run --gpus N` waiting in ds01's queue (gate.queue: wait; issue 16 item 1), end to end:
a real ds01d on a simulated 4 × A100 machine, the private engine, real users running the real
docker CLI through the gate. On a full machine a run that quota allows waits (its docker client
blocks; `ds01 queue` shows the entry, marked docker), and proceeds when another user's container
is removed, on exactly the unit the queue admitted. Cancelling the entry, its expiry
(queue.max_wait), the client going away (Ctrl-C), or ds01d killed with -9, ends the entry with
nothing left reserved and no container made. Over quota is still refused at once;
queue.max_per_user bounds the requests a user can hold open; with gate.queue: refuse (the
default) nothing waits. Every wait is a bounded poll; nothing is timed.
"""

from __future__ import annotations

import json
import pwd
import signal
import sqlite3
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from gate_support import BIN, DOCKER_CLI, MACHINES, STOPPABLE, TEST_IMAGE, GateWorld, gate_world

from support import loop_passes, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

WAIT = """\
gate:
  queue: wait
queue:
  max_per_user: 2
"""


@dataclass
class World:
    w: GateWorld
    ann: str
    bob: str
    cat: str


@pytest.fixture(scope="module")
def world(docker_host: str, docker_client: docker.DockerClient) -> Iterator[World]:
    with gate_world(docker_host, machine=MACHINES / "4xA100-40GB.yaml", extra_config=WAIT) as w:
        yield World(w, w.user("ann"), w.user("bob"), w.user("cat"))


def background_run(w: GateWorld, user: str, *args: str) -> subprocess.Popen[str]:
    """`docker run ARGS` as `user` through the gate, left running (it may wait in the queue)."""
    pw = pwd.getpwnam(user)
    env = {
        "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
        "HOME": pw.pw_dir,
        "USER": user,
        "LANG": "C.UTF-8",
        "DOCKER_HOST": w.docker_host,
    }
    cmd = ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups"]
    return subprocess.Popen(
        [*cmd, DOCKER_CLI, "run", *args],
        env=env,
        cwd=pw.pw_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def queue_of(w: GateWorld, user: str) -> list[dict[str, Any]]:
    r = w.d.cli("queue", "--json", user=user)
    assert r.returncode == 0, r.stderr
    entries: list[dict[str, Any]] = json.loads(r.stdout)["entries"]
    return entries


def waiting_entry(w: GateWorld, user: str, proc: subprocess.Popen[str]) -> dict[str, Any]:
    """The user's one waiting gate entry, once it is there (the run still blocked)."""

    def there() -> dict[str, Any] | None:
        assert proc.poll() is None, proc.communicate()
        mine = [e for e in queue_of(w, user) if e["origin"] == "gate"]
        return mine[0] if mine else None

    entry: dict[str, Any] = wait_for(there, f"{user}'s docker run to wait in the queue", 60)
    return entry


def entry_row(w: GateWorld, entry_id: int) -> tuple[str, str | None, int | None, str | None]:
    con = sqlite3.connect(f"file:{w.d.state_dir / 'ds01.db'}?mode=ro", uri=True, timeout=10)
    try:
        row = con.execute(
            "SELECT state, note, allocation_id, container_id FROM queue WHERE id = ?", (entry_id,)
        ).fetchone()
    finally:
        con.close()
    return (str(row[0]), row[1], row[2], row[3])


def live_units(w: GateWorld, user: str) -> dict[str | None, list[str]]:
    r = w.d.cli("quota", "--json", user=user)
    assert r.returncode == 0, r.stderr
    return {
        a["container"]: [u["uuid"] for u in a["units"]] for a in json.loads(r.stdout)["allocations"]
    }


def visible(w: GateWorld, user: str, name: str) -> list[str]:
    r = w.docker(user, "exec", name, "cat", "/proc/1/environ")
    assert r.returncode == 0, r.stderr
    env = dict(e.split("=", 1) for e in r.stdout.split("\0") if "=" in e)
    value = env.get("NVIDIA_VISIBLE_DEVICES", "")
    return value.split(",") if value else []


def containers(w: GateWorld, user: str) -> list[str]:
    r = w.docker(user, "ps", "-a", "--format", "{{.Names}}")
    assert r.returncode == 0, r.stderr
    return sorted(r.stdout.split())


def run_d(w: GateWorld, user: str, name: str, gpus: int) -> None:
    r = w.docker(user, "run", "-d", "--name", name, "--gpus", str(gpus), TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr


def rm(w: GateWorld, user: str, *names: str) -> None:
    r = w.docker(user, "rm", "-f", *names)
    assert r.returncode == 0, r.stderr


def notices(w: GateWorld, user: str) -> list[str]:
    """What ds01d told `user` about the queue (the notifications log, every channel's copy)."""
    path = w.d.state_dir / "notifications.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [
        n["message"] for n in map(json.loads, lines) if n["user"] == user and n["topic"] == "queue"
    ]


def gate_reasons(w: GateWorld, user: str) -> list[str]:
    r = w.d.cli("events", "--kind", "gate", "--json", user=user)
    assert r.returncode == 0, r.stderr
    return [e["reason"] for e in json.loads(r.stdout)]


def clear(w: World) -> None:
    for user in (w.ann, w.bob, w.cat):
        names = containers(w.w, user)
        if names:
            rm(w.w, user, *names)


def test_a_waiting_run_proceeds_on_the_unit_the_queue_admits(world: World) -> None:
    w = world.w
    clear(world)
    run_d(w, world.ann, "ann-full", 2)
    run_d(w, world.cat, "cat-full", 2)
    proc = background_run(
        w, world.bob, "-d", "--name", "bob-w", "--gpus", "1", TEST_IMAGE, *STOPPABLE
    )
    entry = waiting_entry(w, world.bob, proc)
    assert (entry["name"], entry["request"], entry["state"], entry["position"]) == (
        "bob-w",
        "1 GPU",
        "queued",
        1,
    )
    assert entry["image"] == TEST_IMAGE
    explained = w.d.cli("queue", "explain", str(entry["id"]), "--json", user=world.bob)
    assert explained.returncode == 0, explained.stderr
    assert json.loads(explained.stdout)["entry"]["origin"] == "gate"
    shown = w.d.cli("queue", user=world.bob)
    assert "bob-w (d" in shown.stdout, shown.stdout  # "(docker)", as wide as the table lets it
    # Nothing is held for bob while he waits, and his docker client is still blocked.
    assert live_units(w, world.bob) == {}
    assert proc.poll() is None
    freed = live_units(w, world.ann)["ann-full"]
    rm(w, world.ann, "ann-full")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "waited" in err and f"(entry {entry['id']})" in err, err
    held = live_units(w, world.bob)["bob-w"]
    assert len(held) == 1 and held[0] in freed
    assert visible(w, world.bob, "bob-w") == held
    state, _, alloc_id, container_id = entry_row(w, entry["id"])
    assert state == "admitted" and alloc_id is not None
    assert container_id == out.strip()
    assert queue_of(w, world.bob) == []
    # bob was told on his channels when it began to wait and when it got its GPU.
    told = notices(w, world.bob)
    assert any(f"waits in the queue as entry {entry['id']}" in m for m in told), told
    assert any(f"(queue entry {entry['id']}) got {held[0]}" in m for m in told), told


def test_cancelling_the_entry_ends_the_run_and_reserves_nothing(world: World) -> None:
    w = world.w
    # bob-w (1) and cat-full (2) run: ann's one more fills the machine.
    run_d(w, world.ann, "ann-1", 1)
    proc = background_run(
        w, world.bob, "--rm", "--name", "bob-c", "--gpus", "1", TEST_IMAGE, "true"
    )
    entry = waiting_entry(w, world.bob, proc)
    # Another user cannot cancel it (not found for them), bob can.
    other = w.d.cli("queue", "cancel", str(entry["id"]), user=world.cat)
    assert other.returncode != 0 and proc.poll() is None
    r = w.d.cli("queue", "cancel", str(entry["id"]), user=world.bob)
    assert r.returncode == 0, r.stderr
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "was given up: it was cancelled" in err, err
    assert entry_row(w, entry["id"])[0] == "cancelled"
    assert list(live_units(w, world.bob)) == ["bob-w"]
    assert containers(w, world.bob) == ["bob-w"]
    assert "gpu.queue_ended" in gate_reasons(w, world.bob)


def test_a_client_that_goes_away_leaves_the_queue_and_gets_nothing(world: World) -> None:
    w = world.w
    proc = background_run(
        w, world.bob, "-d", "--name", "bob-gone", "--gpus", "1", TEST_IMAGE, *STOPPABLE
    )
    entry = waiting_entry(w, world.bob, proc)
    proc.send_signal(signal.SIGINT)  # Ctrl-C: the docker CLI exits, its connection closes
    proc.communicate(timeout=60)

    def ended() -> tuple[str, str | None, int | None, str | None] | None:
        row = entry_row(w, entry["id"])
        return row if row[0] != "queued" else None

    state, note, alloc_id, _ = wait_for(ended, "the entry to end", 60)
    assert (state, alloc_id) == ("cancelled", None)
    assert note is not None and "went away" in note
    # Capacity frees: nothing starts for bob.
    rm(w, world.ann, "ann-1")
    loop_passes(w.d, "queue")
    assert list(live_units(w, world.bob)) == ["bob-w"]
    assert containers(w, world.bob) == ["bob-w"]


def test_over_quota_is_refused_at_once_even_on_a_full_machine(world: World) -> None:
    w = world.w
    run_d(w, world.ann, "ann-1", 1)  # full again
    # bob holds 1 GPU of his max_gpueq 2: two more is over his quota, not a capacity matter.
    r = w.docker(world.bob, "run", "--rm", "--gpus", "2", TEST_IMAGE, "true", timeout=60)
    assert r.returncode != 0
    assert gate_reasons(w, world.bob)[-1] == "gpu.quota"
    assert queue_of(w, world.bob) == []


def test_max_per_user_bounds_the_requests_a_user_holds_open(world: World) -> None:
    w = world.w
    procs = [
        background_run(
            w, world.ann, "--rm", "--name", f"ann-q{i}", "--gpus", "1", TEST_IMAGE, "true"
        )
        for i in range(2)
    ]
    try:
        wait_for(
            lambda: len([e for e in queue_of(w, world.ann) if e["state"] == "queued"]) == 2,
            "two waiting runs",
            60,
        )
        r = w.docker(world.ann, "run", "--rm", "--gpus", "1", TEST_IMAGE, "true", timeout=60)
        assert r.returncode != 0
        assert "at most 2" in r.stderr, r.stderr
        assert gate_reasons(w, world.ann)[-1] == "gpu.queue_limit"
        assert len(queue_of(w, world.ann)) == 2
    finally:
        for p in procs:
            p.send_signal(signal.SIGINT)
            p.communicate(timeout=60)
    wait_for(lambda: queue_of(w, world.ann) == [], "ann's entries to end", 60)
    assert list(live_units(w, world.ann)) == ["ann-1"]


def test_refuse_mode_refuses_at_once(world: World) -> None:
    w = world.w
    config = w.d.config_path.read_text()
    w.d.write_config(config.replace("queue: wait", "queue: refuse"))
    _reload(w)
    try:
        r = w.docker(world.bob, "run", "--rm", "--gpus", "1", TEST_IMAGE, "true", timeout=60)
        assert r.returncode != 0
        assert gate_reasons(w, world.bob)[-1] == "gpu.quota"
        r = w.d.cli("events", "--kind", "gate", "--json", user=world.bob)
        assert json.loads(r.stdout)[-1]["details"]["refusal_reason"] == "no_capacity"
        assert queue_of(w, world.bob) == []
    finally:
        w.d.write_config(config)
        _reload(w)


def test_a_run_waiting_past_max_wait_is_given_up(world: World) -> None:
    w = world.w
    config = w.d.config_path.read_text()
    proc = background_run(
        w, world.bob, "--rm", "--name", "bob-x", "--gpus", "1", TEST_IMAGE, "true"
    )
    entry = waiting_entry(w, world.bob, proc)
    w.d.write_config(config.replace("  max_per_user: 2\n", "  max_per_user: 2\n  max_wait: 1s\n"))
    _reload(w)
    try:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert "was given up: it was expired" in err, err
        assert entry_row(w, entry["id"])[0] == "expired"
        assert list(live_units(w, world.bob)) == ["bob-w"]
        assert containers(w, world.bob) == ["bob-w"]
    finally:
        w.d.write_config(config)
        _reload(w)


def test_a_kill_9_while_a_run_waits_leaks_nothing(world: World) -> None:
    w = world.w
    proc = background_run(
        w, world.bob, "-d", "--name", "bob-k", "--gpus", "1", TEST_IMAGE, *STOPPABLE
    )
    entry = waiting_entry(w, world.bob, proc)
    w.d.kill9()
    proc.communicate(timeout=60)
    assert proc.returncode != 0  # its connection died with ds01d
    w.d.start()
    wait_for(lambda: entry_row(w, entry["id"])[0] != "queued", "the orphaned entry to end", 60)
    state, note, alloc_id, _ = entry_row(w, entry["id"])
    assert (state, alloc_id) == ("cancelled", None), note
    rm(w, world.ann, "ann-1")
    loop_passes(w.d, "queue")
    assert list(live_units(w, world.bob)) == ["bob-w"]
    assert containers(w, world.bob) == ["bob-w"]
    clear(world)


def _reload(w: GateWorld) -> None:
    assert w.d.proc is not None
    done = w.d.log().count("config reloaded")
    w.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: w.d.log().count("config reloaded") > done, "the config reload")
