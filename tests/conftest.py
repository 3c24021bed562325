"""Shared fixtures: a clean environment, the private Docker engine, real Unix users, a real
ds01d process on a simulated machine, and scripted Unix-socket servers. The helpers they use
live in support.py and local_servers.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from local_servers import Script, ScriptedUnixServer
from support import (
    _SCRUB,
    BASIC_CONFIG,
    BIN,
    ENV_DOCKER_HOST,
    MACHINES,
    ROOT,
    START_HINT,
    TEST_IMAGE,
    Daemon,
    Users,
    as_user,
    in_ci,
    need,
    short_tmp,
)

__all__ = [
    "BASIC_CONFIG",
    "BIN",
    "MACHINES",
    "ROOT",
    "TEST_IMAGE",
    "Daemon",
    "Users",
    "as_user",
    "in_ci",
    "need",
    "short_tmp",
]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test sees the developer's ds01 or Docker settings."""
    for name in _SCRUB:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The private engine's address (scripts/test-docker.sh); never the host's engine."""
    host = os.environ.get(ENV_DOCKER_HOST, "")
    need(bool(host), f"{ENV_DOCKER_HOST} is not set; {START_HINT}")
    return host


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    """The raw SDK, for what tests set up or check behind ds01's back."""
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{TEST_IMAGE} is missing on {docker_host}; {START_HINT}")
    yield client
    client.close()


@pytest.fixture
def users() -> Iterator[Users]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    need(shutil.which("useradd") is not None, "useradd is not installed")
    u = Users()
    yield u
    u.cleanup()


@pytest.fixture
def daemon_factory() -> Iterator[object]:
    made: list[Daemon] = []

    def make(
        config: str = BASIC_CONFIG,
        machine: str | Path = "8xH100-mig-mixed.yaml",
        docker_host: str | None = None,
        start: bool = True,
    ) -> Daemon:
        path = machine if isinstance(machine, Path) else MACHINES / machine
        d = Daemon(short_tmp(), config, path, docker_host)
        made.append(d)
        if start:
            d.start()
        return d

    yield make
    for d in made:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture
def scripted() -> Iterator[Callable[[Script], ScriptedUnixServer]]:
    """scripted(script): a ScriptedUnixServer (local_servers.py), closed after the test."""
    servers: list[ScriptedUnixServer] = []

    def start(script: Script) -> ScriptedUnixServer:
        servers.append(ScriptedUnixServer(script))
        return servers[-1]

    yield start
    for s in servers:
        s.close()
