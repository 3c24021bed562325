"""Stop → hold → release, start again (same units, or recreated on others), retire, and the
reconciler's answer to containers stopped or removed behind ds01's back — with a real ds01d,
real users and the private Docker engine. gpu_hold_after_stop is 2 s; every wait is a bounded
poll, nothing asserts how long a step took.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from containers_support import (
    Users,
    add_user,
    cli_json,
    containers_of,
    db_allocation,
    db_events,
    db_live,
    deploy,
    exec_in,
    need,
    process_env,
    remove_owned,
    running_daemon,
    unique_user,
    user_dir,
)

from support import wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 3
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
  gpu_hold_after_stop: 2s
  cpus: 1
  memory: 128m
"""
WHOLE_GPU_INDICES = ("0", "1", "2", "3")  # 8xH100-mig-mixed: GPUs 0-3 are not MIG-enabled


@dataclass
class Env:
    d: Any
    alice: str
    bob: str


@pytest.fixture(scope="module")
def env(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Env]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    alice, bob = unique_user("alice"), unique_user("bob")
    try:
        add_user(users, alice)
        add_user(users, bob)
        with running_daemon(CONFIG, docker_host) as d:
            try:
                yield Env(d, alice, bob)
            finally:
                remove_owned(docker_client, [alice, bob])
    finally:
        users.cleanup()


@pytest.fixture
def clean(env: Env, docker_client: docker.DockerClient) -> Iterator[Env]:
    """Each test starts and ends with no containers and no live allocation."""
    yield env
    for user in (env.alice, env.bob):
        for c in containers_of(docker_client, user):
            env.d.cli("container", "retire", c.labels["ds01.name"], user=user)
    remove_owned(docker_client, [env.alice, env.bob])
    wait_for(lambda: not db_live(env.d), "every allocation to be released")


def _inspect(env: Env, user: str, name: str) -> dict[str, Any]:
    out = cli_json(env.d, "container", "inspect", name, user=user)
    assert isinstance(out, dict)
    return out


def _released(env: Env, alloc_id: int) -> str | None:
    state, reason = db_allocation(env.d, alloc_id)
    return reason if state == "released" else None


def test_stop_holds_the_gpus_then_releases_them_and_start_gets_the_same_units_back(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    out = deploy(env.d, env.alice, "hold", "--gpus", "1")
    units, alloc_id = [u["uuid"] for u in out["gpus"]], out["allocation"]["id"]

    r = env.d.cli("container", "stop", "hold", user=env.alice)
    assert r.returncode == 0, r.stderr
    # The command reports the hold (it may expire before the next look: it is only 2 s).
    assert "hold: exited; allocation held until" in r.stdout

    assert wait_for(lambda: _released(env, alloc_id), "the hold to end") == "hold_expired"
    actions = [a for a, _ in db_events(env.d, alloc_id)]
    assert actions == ["reserved", "activated", "held", "released"]
    # The container stays, stopped, still configured with its old units.
    stopped = _inspect(env, env.alice, "hold")
    assert (stopped["state"], stopped["allocation"], stopped["gpu_device_ids"]) == (
        "exited",
        None,
        units,
    )

    r = env.d.cli("container", "start", "hold", user=env.alice)
    assert r.returncode == 0, r.stderr
    started = _inspect(env, env.alice, "hold")
    assert started["id"] == out["id"]  # the same container: nothing was recreated
    assert started["state"] == "running"
    assert started["allocation"]["state"] == "active"
    assert started["allocation"]["id"] != alloc_id  # a new allocation…
    assert [u["uuid"] for u in started["gpus"]] == units  # …of the same, free, units
    assert process_env(docker_client, out["docker_name"])["NVIDIA_VISIBLE_DEVICES"] == units[0]


def test_start_recreates_the_container_on_other_units_when_its_units_were_taken(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    workspace = user_dir(env.alice, "moving-ws")
    out = deploy(env.d, env.alice, "moving", "--gpus", "1", "--workspace", workspace)
    (old_unit,) = [u["uuid"] for u in out["gpus"]]
    old_index = str(out["gpus"][0]["gpu_index"])
    alloc_id = out["allocation"]["id"]
    # A change to the container's own filesystem (not a mount), made before the stop.
    exec_in(docker_client, out["docker_name"], "sh", "-c", "echo kept > /tmp/survivor")

    assert env.d.cli("container", "stop", "moving", user=env.alice).returncode == 0
    wait_for(lambda: _released(env, alloc_id), "the hold to end")

    # Bob takes exactly alice's old GPU: the other whole GPUs are drained meanwhile.
    others = [i for i in WHOLE_GPU_INDICES if i != old_index]
    snapshot = f"ds01-snapshot/{out['docker_name']}"
    with env.d.client() as c:
        for i in others:
            c.drain(i, "test: steer bob to alice's old GPU")
        try:
            taker = deploy(env.d, env.bob, "taker", "--gpus", "1")
        finally:
            for i in others:
                c.drain(i, "test done", undrain=True)
    assert [u["uuid"] for u in taker["gpus"]] == [old_unit]

    try:
        r = env.d.cli("container", "start", "moving", user=env.alice)
        assert r.returncode == 0, r.stderr
        now = _inspect(env, env.alice, "moving")
        (new_unit,) = [u["uuid"] for u in now["gpus"]]
        assert new_unit != old_unit
        assert now["gpu_device_ids"] == [new_unit]
        assert (now["state"], now["allocation"]["state"]) == ("running", "active")
        assert now["id"] != out["id"]  # recreated…
        with pytest.raises(docker.errors.NotFound):
            docker_client.containers.get(out["id"])  # …and the old one is gone
        assert [c.name for c in containers_of(docker_client, env.alice)] == [out["docker_name"]]
        # Pinned to the new unit; the file written before the stop survived; the mount too.
        name = out["docker_name"]
        assert process_env(docker_client, name)["NVIDIA_VISIBLE_DEVICES"] == new_unit
        assert exec_in(docker_client, name, "cat", "/tmp/survivor") == "kept\n"
        exec_in(docker_client, name, "touch", "/workspace/after-recreate")
        assert os.path.exists(os.path.join(workspace, "after-recreate"))
        new_alloc = now["allocation"]["id"]
        assert ("activated", "restarted_on_new_units") in db_events(env.d, new_alloc)
        # Two users never share a unit, before or after.
        live_units = [u for a in cli_json(env.d, "admin", "alloc", "list") for u in a["units"]]
        assert sorted(u["uuid"] for u in live_units) == sorted([old_unit, new_unit])
        # The command survived the recreate: the container still stops at once on TERM.
        assert env.d.cli("container", "stop", "moving", user=env.alice).returncode == 0
    finally:
        env.d.cli("container", "retire", "moving", user=env.alice)
        with contextlib.suppress(docker.errors.ImageNotFound):
            docker_client.images.remove(snapshot, force=True)


def test_restart_within_the_hold_keeps_the_allocation(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    out = deploy(env.d, env.alice, "again", "--mig", "3g.40gb")
    r = env.d.cli("container", "restart", "again", user=env.alice)
    assert r.returncode == 0, r.stderr
    now = _inspect(env, env.alice, "again")
    assert (now["id"], now["state"]) == (out["id"], "running")
    assert now["allocation"]["id"] == out["allocation"]["id"]
    assert now["allocation"]["state"] == "active"
    assert now["gpus"] == out["gpus"]


def test_retire_removes_the_container_and_frees_its_units_at_once(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    workspace = user_dir(env.alice, "retire-ws")
    out = deploy(env.d, env.alice, "done", "--gpus", "2", "--workspace", workspace)
    exec_in(docker_client, out["docker_name"], "touch", "/workspace/result")
    r = env.d.cli("container", "retire", "done", user=env.alice)
    assert r.returncode == 0, r.stderr
    assert "done retired" in r.stdout
    # No waiting: by the time the command returns, the units are free and the container gone.
    assert db_allocation(env.d, out["allocation"]["id"]) == ("released", "retired")
    assert db_live(env.d) == []
    assert containers_of(docker_client, env.alice) == []
    assert os.path.exists(os.path.join(workspace, "result"))  # mounted directories stay


def test_limits_are_the_ones_in_force_when_the_container_is_created(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    before = deploy(env.d, env.bob, "before", "--cpu-only")
    env.d.write_config(CONFIG.replace("memory: 128m", "memory: 192m"))
    try:
        _reload(env)
        after = deploy(env.d, env.bob, "after", "--cpu-only")
    finally:
        env.d.write_config(CONFIG)
        _reload(env)
    memory = {
        out["name"]: docker_client.containers.get(out["id"]).attrs["HostConfig"]["Memory"]
        for out in (before, after)
    }
    assert memory == {"before": 128 * 1024 * 1024, "after": 192 * 1024 * 1024}


def _reload(env: Env) -> None:
    """SIGHUP, then wait until ds01d logs that it read the file again."""
    done = env.d.log().count("config reloaded")
    env.d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: env.d.log().count("config reloaded") > done, "the config reload")


def test_list_follows_state_changes_made_behind_ds01s_back(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    # ds01d keeps what it last read about each container while Docker's list shows the same
    # state: a change must still show up at once.
    env = clean
    out = deploy(env.d, env.alice, "seen", "--cpu-only")

    def listed() -> dict[str, Any]:
        (row,) = cli_json(env.d, "container", "list", user=env.alice)
        assert isinstance(row, dict)
        return row

    first = listed()
    assert (first["state"], first["finished_at"]) == ("running", None)
    docker_client.containers.get(out["id"]).stop(timeout=5)
    stopped = listed()
    assert stopped["state"] == "exited"
    assert stopped["finished_at"] is not None
    docker_client.containers.get(out["id"]).start()
    again = listed()
    assert again["state"] == "running"
    assert again["started_at"] >= stopped["finished_at"] >= first["started_at"]


# ---- reconcile ---------------------------------------------------------------------------


def test_a_container_removed_behind_ds01s_back_releases_its_allocation(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    out = deploy(env.d, env.bob, "gone", "--gpus", "1")
    docker_client.containers.get(out["id"]).remove(force=True)
    reason = wait_for(lambda: _released(env, out["allocation"]["id"]), "the release")
    assert reason == "container_removed"
    assert db_live(env.d) == []


def test_a_container_stopped_behind_ds01s_back_is_held_then_released(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    env = clean
    out = deploy(env.d, env.bob, "halted", "--mig", "3g.40gb")
    alloc_id = out["allocation"]["id"]
    docker_client.containers.get(out["id"]).stop(timeout=5)
    assert wait_for(lambda: _released(env, alloc_id), "the release") == "hold_expired"
    assert db_events(env.d, alloc_id)[-2:] == [
        ("held", "container_exited"),
        ("released", "hold_expired"),
    ]
    # ds01 shows it as a stopped container whose GPUs went back.
    listed = _inspect(env, env.bob, "halted")
    assert (listed["state"], listed["allocation"]) == ("exited", None)


def test_start_is_refused_when_the_workspace_became_a_symlink_elsewhere(
    clean: Env, docker_client: docker.DockerClient
) -> None:
    """The engine mounts the workspace again at every start, following whatever the path is
    by then: ds01 judges the container as stored before it starts it (issue 9)."""
    env = clean
    workspace = user_dir(env.alice, "swap-ws")
    out = deploy(env.d, env.alice, "swap", "--cpu-only", "--workspace", workspace)
    r = env.d.cli("container", "stop", "swap", user=env.alice)
    assert r.returncode == 0, r.stderr
    os.rmdir(workspace)
    os.symlink("/etc", workspace)
    r = env.d.cli("container", "start", "swap", user=env.alice)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "container 'swap' may not start: it mounts " in r.stderr
    assert "(resolves to /etc)" in r.stderr
    state = docker_client.api.inspect_container(out["docker_name"])["State"]
    assert state["Running"] is False
    os.unlink(workspace)


def test_stop_and_restart_say_what_they_wait_for_and_warn_when_sigkill_was_needed(
    clean: Env,
) -> None:
    """The progress line names SIGTERM and the SIGKILL that follows; a program that exits on
    SIGTERM gets no warning, one that ignores it (sleep as PID 1) is killed and the command
    warns — after `stop`, and after `restart`, whose start resets the exit code (issue 13)."""
    env = clean
    deploy(env.d, env.alice, "polite", "--cpu-only")
    deploy(env.d, env.alice, "stubborn", "--cpu-only", command=("sleep", "infinity"))
    said = "(SIGTERM now; SIGKILL in 10 s if it has not exited)..."

    r = env.d.cli("container", "stop", "polite", user=env.alice)
    assert r.returncode == 0, r.stderr
    assert f"Stopping polite {said}" in r.stderr, r.stderr
    assert "warning" not in r.stderr and "polite: exited" in r.stdout

    killed = "warning: it did not exit within 10 s of SIGTERM and was killed (SIGKILL)"
    r = env.d.cli("container", "stop", "stubborn", user=env.alice)
    assert r.returncode == 0, r.stderr
    assert f"Stopping stubborn {said}" in r.stderr and killed in r.stderr, r.stderr
    assert _inspect(env, env.alice, "stubborn")["exit_code"] == 137

    r = env.d.cli("container", "restart", "stubborn", user=env.alice)
    assert r.returncode == 0, r.stderr
    assert f"Restarting stubborn: stopping {said}" in r.stderr, r.stderr
    assert "stubborn: running" in r.stdout
    assert killed not in r.stderr  # it was not running: nothing needed killing

    r = env.d.cli("container", "restart", "stubborn", user=env.alice)
    assert r.returncode == 0, r.stderr
    assert killed in r.stderr and "stubborn: running" in r.stdout, r.stdout + r.stderr

    r = env.d.cli("container", "stop", "polite", user=env.alice)  # already stopped
    assert r.returncode == 0 and "warning" not in r.stderr, r.stderr
