"""`ds01 container exec`, `shell` with input from a pipe, and `inspect`, as a real user through
the real CLI against a real ds01d on the private Docker engine."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from containers_support import (
    BIN,
    Users,
    add_user,
    as_user,
    cli_json,
    deploy,
    need,
    remove_owned,
    running_daemon,
    uid_of,
    unique_user,
    user_dir,
)

pytestmark = [pytest.mark.docker, pytest.mark.root]

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_containers: 4
  allow_full_gpu: true
  gpu_hold_after_stop: 2s
  memory: 256m
  pids: 200
"""


@dataclass
class World:
    d: Any
    user: str
    other: str
    workspace: str


@pytest.fixture(scope="module")
def world(docker_host: str, docker_client: docker.DockerClient) -> Iterator[World]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    user, other = unique_user("exa"), unique_user("exb")
    try:
        add_user(users, user)
        add_user(users, other)
        workspace = user_dir(user, "ws")
        with running_daemon(CONFIG, docker_host) as d:
            try:
                deploy(
                    d,
                    user,
                    "box",
                    "--cpu-only",
                    "--workspace",
                    workspace,
                    *("-e", "API_TOKEN=s3cr3t-a", "-e", "Db_Password=s3cr3t-b"),
                    *("-e", "ssh_key_file=s3cr3t-c", "-e", "PLAIN=visible"),
                )
                deploy(d, user, "idle", "--cpu-only")
                r = d.cli("container", "stop", "idle", user=user)
                assert r.returncode == 0, r.stderr
                yield World(d, user, other, workspace)
            finally:
                remove_owned(docker_client, [user, other])
    finally:
        users.cleanup()


def _ds01(world: World, *args: str, user: str | None = None, stdin: str | None = None) -> Any:
    kw: dict[str, Any] = {"env": world.d.env}
    if stdin is None:
        kw["stdin"] = open(os.devnull)  # noqa: SIM115 (closed with the process)
    else:
        kw["input"] = stdin
    return as_user(user or world.user, [str(BIN / "ds01"), *args], **kw)


# ---- exec --------------------------------------------------------------------------------


def test_exec_runs_as_the_user_and_passes_the_exit_status_and_streams_through(
    world: World,
) -> None:
    r = _ds01(world, "container", "exec", "box", "--", "sh", "-c", "id -u; echo oops >&2; exit 7")
    assert r.returncode == 7, r.stderr
    assert r.stdout == f"{uid_of(world.user)}\n"
    assert r.stderr == "oops\n"


def test_exec_success_and_large_output_arrive_whole(world: World) -> None:
    r = _ds01(world, "container", "exec", "box", "--", "seq", "1", "100000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "".join(f"{i}\n" for i in range(1, 100001))


def test_exec_forwards_piped_input(world: World) -> None:
    r = _ds01(world, "container", "exec", "box", "--", "tr", "a-z", "A-Z", stdin="hello\nworld\n")
    assert (r.returncode, r.stdout) == (0, "HELLO\nWORLD\n"), r.stderr


def test_exec_of_a_missing_program_passes_the_engines_status(world: World) -> None:
    r = _ds01(world, "container", "exec", "box", "--", "no-such-program")
    assert r.returncode in (126, 127), (r.stdout, r.stderr)
    assert "no-such-program" in r.stdout + r.stderr


def test_exec_in_a_stopped_container_is_refused_with_what_to_do(world: World) -> None:
    r = _ds01(world, "container", "exec", "idle", "--", "true")
    assert r.returncode == 1
    assert "cannot run a command in container 'idle': it is not running (exited)" in r.stderr
    assert "Start it first: ds01 container start idle" in r.stderr
    assert "Traceback" not in r.stderr


def test_exec_in_another_users_container_is_refused(world: World) -> None:
    r = _ds01(world, "container", "exec", "box", "--", "true", user=world.other)
    assert r.returncode == 1
    assert "you have no container named 'box'" in r.stderr, r.stderr


def test_exec_without_a_command_is_a_usage_error(world: World) -> None:
    r = _ds01(world, "container", "exec", "box")
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr


# ---- shell with input from a pipe ---------------------------------------------------------


def test_shell_with_piped_input_prints_the_output_and_exit_status(world: World) -> None:
    r = _ds01(world, "container", "shell", "box", stdin="id -u\necho done >&2\nexit 4\n")
    assert r.returncode == 4, r.stderr
    assert r.stdout == f"{uid_of(world.user)}\n"
    assert r.stderr == "done\n"


def test_shell_with_piped_input_ends_at_the_end_of_input(world: World) -> None:
    r = _ds01(world, "container", "shell", "box", stdin="echo one\necho two\n")
    assert (r.returncode, r.stdout) == (0, "one\ntwo\n"), r.stderr


# ---- inspect -----------------------------------------------------------------------------


def test_inspect_json_has_mounts_limits_and_env_with_secrets_hidden(world: World) -> None:
    out = cli_json(world.d, "container", "inspect", "box", user=world.user)
    assert out["mounts"] == [
        {"type": "bind", "source": world.workspace, "target": "/workspace", "read_only": False}
    ]
    assert out["limits"]["memory_bytes"] == 256 * 1024 * 1024
    assert out["limits"]["pids"] == 200
    env = out["env"]
    assert (env["API_TOKEN"], env["Db_Password"], env["ssh_key_file"]) == ("***",) * 3
    assert env["PLAIN"] == "visible"
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void"
    assert out["gpus"] == [] and out["note"]


def test_inspect_table_shows_them_and_never_a_secret(world: World) -> None:
    r = _ds01(world, "container", "inspect", "box")
    assert r.returncode == 0, r.stderr
    assert "s3cr3t" not in r.stdout
    for text in (
        f"{world.workspace} → /workspace",
        "memory 256m",
        "pids 200",
        "API_TOKEN=***",
        "PLAIN=visible",
        "none (CPU only)",
    ):
        assert text in r.stdout, r.stdout
    # Hidden from the view only: the container itself has the value.
    r = _ds01(world, "container", "exec", "box", "--", "sh", "-c", 'echo "$API_TOKEN"')
    assert (r.returncode, r.stdout) == (0, "s3cr3t-a\n"), r.stderr
