"""Fixtures for ds01.runtime: a real, private Docker engine (scripts/test-docker.sh), never the
host's. Tests that need it are marked ``@pytest.mark.docker`` and use ``engine``."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Callable, Iterator

import docker
import pytest

from ds01.errors import NotFound
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits
from ds01.runtime import ContainerSpec, Engine

TEST_IMAGE = "ds01-test/busybox:latest"


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
