"""Checks of layer 2 and of Docker access: the gate is the only way in, nvidia is not default.

    docker.users-not-in-docker-group  no ds01 user is in `docker` (root-equivalent)
    docker.gate-group                 gate_group exists and every ds01 user is in it
    docker.no-nvidia-default          daemon.json (and the running engine, live) has no nvidia
                                      default runtime
    docker.nvidia-envvar-refused      the NVIDIA runtime ignores NVIDIA_VISIBLE_DEVICES in
                                      unprivileged containers
    docker.files-current              the layer-2 files are what apply writes

The engine is asked over its Unix socket with httpx (GET /info), not with the Docker SDK (only
runtime/ imports that). Repairs: gpasswd for gate-group members (live only) and re-rendering
ds01's keys; removing someone from `docker` is left to the admin.
"""

from __future__ import annotations

import json
import subprocess
import tomllib

import httpx

from ds01.engineaddr import EngineAddress
from ds01.host.doctor.base import Context, Result, Status
from ds01.host.doctor.files import files_current
from ds01.host.render import DOCKER_DAEMON_JSON, NVIDIA_RUNTIME_KEYS, NVIDIA_RUNTIME_TOML
from ds01.host.users import add_member_command, ds01_users, group_id, missing_from
from ds01.identity import unix_groups

_SKIP_NO_CONFIG = "config invalid (see config.valid)"
ENVVAR_KEY = "accept-nvidia-visible-devices-envvar-when-unprivileged"


def check_users_not_in_docker_group(ctx: Context) -> Result:
    rid = "docker.users-not-in-docker-group"
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    if group_id("docker") is None:
        return Result(rid, Status.PASS, "there is no docker group")
    people = ds01_users(ctx.config).present
    inside = [u for u in people if "docker" in unix_groups(u)]
    if not inside:
        return Result(rid, Status.PASS, f"none of {len(people)} ds01 users is in docker")
    return Result(
        rid,
        Status.FAIL,
        "ds01 users in the docker group (root-equivalent, bypasses the gate): " + ", ".join(inside),
        [f"in docker: {u}" for u in inside],
        "gpasswd --delete USER docker for each (left to you: it may break their workflows); "
        "they reach Docker through the ds01 gate (DOCKER_HOST).",
    )


def check_gate_group(ctx: Context) -> Result:
    rid = "docker.gate-group"
    config = ctx.config
    if config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    group = config.host.gate_group
    if group_id(group) is None:
        return Result(
            rid,
            Status.FAIL,
            f"the gate group '{group}' does not exist: nobody can use the ds01 Docker gate",
            fix="Run `ds01 host apply --only docker` on the host (it creates the group).",
        )
    people = ds01_users(config).present
    missing = missing_from(group, people)
    if not missing:
        return Result(rid, Status.PASS, f"all {len(people)} ds01 users are in '{group}'")

    def repair() -> list[str]:
        done = []
        for user in missing:
            argv = add_member_command(user, group)
            subprocess.run(argv, capture_output=True, check=True, timeout=60)
            done.append(" ".join(argv))
        return done

    return Result(
        rid,
        Status.WARN,
        f"{len(missing)} ds01 users cannot use the Docker gate: {', '.join(missing)}",
        [f"not in {group}: {u}" for u in missing],
        f"gpasswd --add USER {group} (`ds01 doctor --fix` does, on the live host).",
        repair if ctx.live else None,
    )


def _engine_default_runtime(ctx: Context) -> str | None:
    """The running engine's DefaultRuntime, or a note why it is unknown (prefixed '?')."""
    if ctx.config is None:
        return None
    host = ctx.config.docker.host
    address = EngineAddress.parse(host)  # the config loader checked it
    if address.scheme != "unix" or address.path is None:
        return f"? engine at {host} not asked (only unix sockets are)"
    socket = address.path
    try:
        with httpx.Client(
            transport=httpx.HTTPTransport(uds=socket), base_url="http://docker", timeout=5.0
        ) as client:
            info = client.get("/info").json()
    except (httpx.HTTPError, ValueError, OSError) as err:
        return f"? engine at {host} not reachable ({type(err).__name__})"
    return str(info.get("DefaultRuntime", "?")) if isinstance(info, dict) else "?"


def check_no_nvidia_default(ctx: Context) -> Result:
    rid = "docker.no-nvidia-default"
    evidence: list[str] = []
    bad: list[str] = []
    path = ctx.at(DOCKER_DAEMON_JSON)
    try:
        data = json.loads(path.read_text() or "{}")
        runtime = data.get("default-runtime") if isinstance(data, dict) else "(not an object)"
        evidence.append(f"{DOCKER_DAEMON_JSON}: default-runtime = {runtime or '(unset: runc)'}")
        if runtime == "nvidia":
            bad.append(DOCKER_DAEMON_JSON)
    except FileNotFoundError:
        evidence.append(f"{DOCKER_DAEMON_JSON}: absent (default runtime runc)")
    except (OSError, ValueError) as err:
        return Result(
            rid,
            Status.FAIL,
            f"{DOCKER_DAEMON_JSON} is unreadable: {err}",
            fix="Fix the JSON; Docker refuses to start with it either.",
        )
    if ctx.live:
        engine = _engine_default_runtime(ctx)
        if engine is not None and engine.startswith("?"):
            evidence.append(f"running engine: {engine.removeprefix('? ')}")
        elif engine is not None:
            evidence.append(f"running engine: DefaultRuntime = {engine}")
            if engine == "nvidia":
                bad.append("the running engine")
    if not bad:
        return Result(rid, Status.PASS, "nvidia is not Docker's default runtime", evidence)
    file_result = files_current(ctx, rid, "docker", "")
    return Result(
        rid,
        Status.FAIL,
        "nvidia is the default runtime of "
        + " and ".join(bad)
        + ": an image's ENV NVIDIA_VISIBLE_DEVICES=all would expose every GPU",
        evidence,
        "Run `ds01 host apply --only docker` (removes only that key), then restart Docker.",
        file_result.repair,
    )


def check_nvidia_envvar_refused(ctx: Context) -> Result:
    rid = "docker.nvidia-envvar-refused"
    path = ctx.at(NVIDIA_RUNTIME_TOML)
    hook = ctx.at("/usr/bin/nvidia-container-runtime-hook")
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError:
        installed = hook.exists()
        return Result(
            rid,
            Status.FAIL if installed else Status.WARN,
            f"{NVIDIA_RUNTIME_TOML} is missing"
            + ("" if installed else " (the NVIDIA Container Toolkit seems not installed)"),
            [],
            "Run `ds01 host apply --only docker`.",
            files_current(ctx, rid, "docker", "").repair,
        )
    except (OSError, tomllib.TOMLDecodeError) as err:
        return Result(
            rid,
            Status.FAIL,
            f"{NVIDIA_RUNTIME_TOML} is unreadable: {err}",
            fix="Fix the TOML, then run `ds01 host apply --only docker`.",
        )
    evidence = [f"{key} = {data.get(key, '(unset)')}" for key in NVIDIA_RUNTIME_KEYS]
    if data.get(ENVVAR_KEY) is False:
        return Result(
            rid,
            Status.PASS,
            "unprivileged containers cannot select GPUs through NVIDIA_VISIBLE_DEVICES",
            evidence,
        )
    return Result(
        rid,
        Status.FAIL,
        "the NVIDIA runtime honours NVIDIA_VISIBLE_DEVICES in unprivileged containers",
        evidence,
        "Run `ds01 host apply --only docker` (sets only ds01's keys; `ds01 doctor --fix` does).",
        files_current(ctx, rid, "docker", "").repair,
    )


def check_files_current(ctx: Context) -> Result:
    return files_current(
        ctx, "docker.files-current", "docker", "the NVIDIA runtime config and daemon.json"
    )
