"""Fixtures for ds01.runtime: a real, private Docker engine (scripts/test-docker.sh), never the
host's. Tests that need it are marked ``@pytest.mark.docker`` and use ``engine``."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from ds01.errors import NotFound
from ds01.model import GpuEq, Limits
from ds01.runtime import ContainerSpec, Engine

ENV_DOCKER_HOST = "DS01_TEST_DOCKER_HOST"
TEST_IMAGE = "ds01-test/busybox:latest"
START_HINT = (
    'start the private engine: eval "$(scripts/test-docker.sh start /tmp/ds01-dockerd)" '
    "(stop it with: scripts/test-docker.sh stop /tmp/ds01-dockerd)"
)


@pytest.fixture(scope="session")
def docker_host() -> str:
    """The private engine's address. Skips locally when it is not set; fails in CI, where a
    silently skipped Docker suite would hide every runtime regression."""
    host = os.environ.get(ENV_DOCKER_HOST)
    if not host:
        if os.environ.get("CI"):
            pytest.fail(
                f"{ENV_DOCKER_HOST} is not set: the Docker tests must run in CI; {START_HINT}"
            )
        pytest.skip(f"{ENV_DOCKER_HOST} is not set; {START_HINT}")
    return host


@pytest.fixture(scope="session")
def docker_client(docker_host: str) -> Iterator[docker.DockerClient]:
    """The raw SDK, for what tests set up behind ds01's back (images, unmanaged containers)."""
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    try:
        client.images.get(TEST_IMAGE)
    except docker.errors.ImageNotFound:
        pytest.fail(f"{TEST_IMAGE} is missing on {docker_host}; {START_HINT}")
    yield client
    client.close()


@pytest.fixture(scope="session")
def engine(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Engine]:
    eng = Engine(docker_host, timeout_s=60)
    yield eng
    eng.close()


@pytest.fixture
def cleanup(engine: Engine) -> Iterator[Callable[[str], str]]:
    """Register a container (name or ID) to force-remove after the test; returns it."""
    names: list[str] = []

    def register(name: str) -> str:
        names.append(name)
        return name

    yield register
    for name in reversed(names):
        with contextlib.suppress(NotFound):
            engine.remove(name, force=True)


@pytest.fixture
def short_name() -> str:
    """A container name no other test (or earlier run against the same engine) uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def _limits(**overrides: object) -> Limits:
    base: dict[str, object] = {
        "max_gpueq": GpuEq.of(1),
        "max_units_per_container": 2,
        "max_containers": 3,
        "allow_full_gpu": True,
    }
    base.update(overrides)
    return Limits(**base)  # type: ignore[arg-type]


def _spec(**overrides: object) -> ContainerSpec:
    fields: dict[str, object] = {
        "owner": "h.baker@hertie-school.lan",
        "uid": 4242,
        "gid": 4343,
        "name": "thesis",
        "image": TEST_IMAGE,
        "limits": _limits(),
    }
    fields.update(overrides)
    return ContainerSpec(**fields)  # type: ignore[arg-type]


@pytest.fixture
def make_limits() -> Callable[..., Limits]:
    """Limits with the quota fields filled in; container limits (cpus, memory_bytes, …) as
    keyword arguments."""
    return _limits


@pytest.fixture
def make_spec() -> Callable[..., ContainerSpec]:
    """A ContainerSpec for the test image, owned by 'h.baker@hertie-school.lan' (uid 4242,
    gid 4343), named 'thesis'; any field as a keyword argument."""
    return _spec
