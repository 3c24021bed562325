"""`ds01 container deploy --mig 1g.10gb+me` end to end, as a real user through the real CLI and
ds01d on the private Docker engine, on the test machine tests/fixtures/machines/mig-variants.yaml
(GPU 0: A100-80GB as 3g.40gb + 2g.20gb + 1g.10gb + 1g.10gb+me; GPU 1: RTX PRO 6000 Blackwell as
1g.24gb+me.all + 1g.24gb-me + 2g.48gb+gfx; GPU 2: a whole H100).

The container must see exactly the +me slice, and a name that is not a profile must be the one
usage error of model/profile.py from the CLI (exit 2) and from the API alike.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import pytest
from containers_support import (
    Users,
    add_user,
    api_deploy,
    cli_json,
    containers_of,
    deploy,
    need,
    process_env,
    remove_owned,
    running_daemon,
    unique_user,
)

from ds01.errors import MigProfileError
from ds01.model.profile import parse_profile

pytestmark = [pytest.mark.docker, pytest.mark.root]

MACHINE = Path(__file__).resolve().parents[1] / "fixtures" / "machines" / "mig-variants.yaml"
CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 3
  max_units_per_container: 2
  max_containers: 4
  allow_full_gpu: true
"""


@dataclass
class World:
    d: Any
    user: str


@pytest.fixture(scope="module")
def world(docker_host: str, docker_client: docker.DockerClient) -> Iterator[World]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    user = unique_user("migme")
    try:
        add_user(users, user)
        with running_daemon(CONFIG, docker_host, MACHINE) as d:
            try:
                yield World(d, user)
            finally:
                remove_owned(docker_client, [user])
    finally:
        users.cleanup()


def unit_with(world: World, profile: str) -> str:
    """The UUID `ds01 gpu status` gives the one unit of this profile."""
    status = cli_json(world.d, "gpu", "status", user=world.user)
    (uuid,) = [u["uuid"] for u in status["units"] if u["profile"] == profile]
    return str(uuid)


@pytest.mark.parametrize("profile", ["1g.10gb+me", "1g.24gb+me.all", "1g.24gb-me", "2g.48gb+gfx"])
def test_deploy_pins_exactly_the_slice_of_that_variant(
    world: World, docker_client: docker.DockerClient, profile: str
) -> None:
    name = "v" + str(abs(hash(profile)) % 10**6)
    out = deploy(world.d, world.user, name, "--mig", profile)
    assert [(u["kind"], u["profile"]) for u in out["gpus"]] == [("mig", profile)]
    expected = unit_with(world, profile)
    assert [u["uuid"] for u in out["gpus"]] == [expected]
    env = process_env(docker_client, out["docker_name"])
    assert env["NVIDIA_VISIBLE_DEVICES"] == expected
    r = world.d.cli("container", "retire", name, user=world.user)
    assert r.returncode == 0, r.stderr


def test_a_bad_name_is_the_same_usage_error_from_the_cli_and_the_api(
    world: World, docker_client: docker.DockerClient
) -> None:
    with pytest.raises(MigProfileError) as err:
        parse_profile("1g.10gb+mee")
    what, why, fix = err.value.lines()

    r = world.d.cli(
        "container", "deploy", "typo", "--image", "ds01-test/busybox:latest", "--detach",
        "--mig", "1g.10gb+mee", user=world.user,
    )  # fmt: skip
    assert r.returncode == 2, r.stdout + r.stderr
    # (Progress lines come first: the deploy checks the engine before it allocates.)
    assert r.stderr.splitlines()[-3:] == [f"error: {what}", f"  {why}", f"  {fix}"]

    got = api_deploy(world.d, world.user, name="typo2", mig=["1g.10gb+mee"])
    assert (got["error"]["kind"], got["error"]["what"], got["error"]["why"]) == (
        "usage",
        what,
        why,
    )
    assert containers_of(docker_client, world.user) == []
