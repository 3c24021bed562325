"""A named `--user` in a container with a host directory (VS Code's `remoteUser: vscode`),
written as the attacks on it: the image says what a name means, and mallory writes the image.
Each image below is hers; each name must run as her uid and group or be refused — and what
the engine stores and runs is the numeric pair, never the name (gate/policy/named_user.py).
"""

from __future__ import annotations

import io
import pwd
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import STOPPABLE, TEST_IMAGE, GateWorld, gate_world, unique, user_dir

pytestmark = [pytest.mark.docker, pytest.mark.root]

PREFIX = "ds01-gatetest/named-user-"


@dataclass
class Lab:
    w: GateWorld
    mallory: str
    uid: int
    gid: int
    bob_uid: int
    workdir: str
    client: docker.DockerClient
    images: dict[str, str]


def _passwd_image(client: docker.DockerClient, tag: str, steps: str) -> str:
    """An image FROM the busybox test image with `steps` (shell) run as root at build time."""
    dockerfile = f"FROM {TEST_IMAGE}\nRUN {steps}\n"
    client.images.build(fileobj=io.BytesIO(dockerfile.encode()), tag=tag, rm=True)
    return tag


@pytest.fixture(scope="module")
def lab(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Lab]:
    # A probe container a ds01d that died mid-read would have left: removed by the next one.
    docker_client.containers.create(TEST_IMAGE, "true", labels={"ds01.probe": "accounts"})
    with gate_world(docker_host) as w:
        mallory = w.user("mallory")
        bob = w.user("bob")
        pw = pwd.getpwnam(mallory)
        uid, gid, bob_uid = pw.pw_uid, pw.pw_gid, pwd.getpwnam(bob).pw_uid
        me = f"{uid}:{gid}"
        add = "echo '{}' >> /etc/passwd"
        group = "echo '{}' >> /etc/group"
        recipes = {
            # the standard pattern: vscode at the caller's uid and group (what the Dev
            # Containers CLI's updateRemoteUserUID image does), listed in root's group too
            "mine": " && ".join(
                (
                    add.format(f"vscode:x:{me}::/home/vscode:/bin/sh"),
                    group.format(f"vscode:x:{gid}:"),
                    "sed -i 's/^root:x:0:$/root:x:0:vscode/' /etc/group",
                )
            ),
            "root": add.format("vscode:x:0:0::/root:/bin/sh"),
            "bob": add.format(f"vscode:x:{bob_uid}:{gid}::/home/vscode:/bin/sh"),
            "rootgroup": add.format(f"vscode:x:{uid}:0::/home/vscode:/bin/sh"),
            "first_wins": " && ".join(
                (
                    add.format("vscode:x:0:0::/root:/bin/sh"),
                    add.format(f"vscode:x:{me}::/home/vscode:/bin/sh"),
                )
            ),
            "malformed": add.format(f"vscode:x:{uid}x:{gid}::/home/vscode:/bin/sh"),
            "symlink": "mv /etc/passwd /etc/passwd.real && ln -s /etc/passwd.real /etc/passwd",
            "huge": " && ".join(
                (
                    add.format(f"vscode:x:{me}::/home/vscode:/bin/sh"),
                    "head -c 1100000 /dev/zero | tr '\\0' '#' >> /etc/passwd",
                )
            ),
            "none": "rm /etc/passwd /etc/group",
        }
        images = {
            key: _passwd_image(docker_client, f"{PREFIX}{key}:{unique('t')}", steps)
            for key, steps in recipes.items()
        }
        workdir = user_dir(mallory, unique("ws"))
        try:
            yield Lab(w, mallory, uid, gid, bob_uid, workdir, docker_client, images)
        finally:
            for tag in images.values():
                docker_client.images.remove(tag, force=True)


def run_as(lab: Lab, image: str, user: str, *cmd: str) -> tuple[int, str, str]:
    r = lab.w.docker(
        lab.mallory, "run", "--rm", "-v", f"{lab.workdir}:/ws", "--user", user, image, *cmd
    )
    return r.returncode, r.stdout, r.stderr


def test_a_name_the_image_maps_to_the_caller_runs_as_the_numbers(lab: Lab) -> None:
    rc, out, err = run_as(lab, lab.images["mine"], "vscode", "sh", "-c", "id -u; id -G; echo $HOME")
    assert rc == 0, err
    # Her uid and group alone: root's group lists vscode in the image, but the explicit gid
    # the gate forwards means no supplementary groups from the image's /etc/group.
    assert out.split() == [str(lab.uid), str(lab.gid), "/home/vscode"]


def test_the_engine_stores_the_numeric_pair_not_the_name(lab: Lab) -> None:
    name = unique("nu")
    r = lab.w.docker(
        lab.mallory,
        "create",
        "--name",
        name,
        "-v",
        f"{lab.workdir}:/ws",
        "--user",
        "vscode",
        lab.images["mine"],
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    stored = lab.client.api.inspect_container(name)
    assert stored["Config"]["User"] == f"{lab.uid}:{lab.gid}"
    lab.w.docker(lab.mallory, "rm", "-f", name)


def test_exec_with_a_name_that_is_the_caller_runs_and_one_that_is_not_is_refused(lab: Lab) -> None:
    name = unique("nx")
    r = lab.w.docker(
        lab.mallory,
        "run",
        "-d",
        "--name",
        name,
        "-v",
        f"{lab.workdir}:/ws",
        lab.images["mine"],
        *STOPPABLE,
    )
    assert r.returncode == 0, r.stderr
    ok = lab.w.docker(lab.mallory, "exec", "-u", "vscode", name, "sh", "-c", "id -u; id -G")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [str(lab.uid), str(lab.gid)]
    as_root = lab.w.docker(lab.mallory, "exec", "-u", "root", name, "id", "-u")
    assert as_root.returncode != 0
    assert (
        "ds01: docker exec --user root with host directories mounted was refused: 'root' is "
        f"uid 0 in the image, not you (uid {lab.uid})"
    ) in as_root.stderr
    group_root = lab.w.docker(lab.mallory, "exec", "-u", "vscode:root", name, "id", "-u")
    assert group_root.returncode != 0
    assert "its group is gid 0 in the image, which is not one of your groups" in group_root.stderr
    lab.w.docker(lab.mallory, "rm", "-f", name)


@pytest.mark.parametrize(
    ("image", "user", "says"),
    [
        pytest.param(
            "root", "vscode", "'vscode' is uid 0 in the image, not you", id="vscode is root"
        ),
        pytest.param(
            "bob", "vscode", "'vscode' is uid {bob_uid} in the image, not you", id="vscode is bob"
        ),
        pytest.param(
            "rootgroup", "vscode", "its group is gid 0 in the image", id="vscode's group is root"
        ),
        pytest.param(
            "first_wins",
            "vscode",
            "'vscode' is uid 0 in the image, not you",
            id="the first of two vscode entries counts, as in runc",
        ),
        pytest.param(
            "malformed",
            "vscode",
            "the image's /etc/passwd entry for 'vscode' is not readable",
            id="an entry whose uid is not a number (runc reads it as 0)",
        ),
        pytest.param(
            "symlink",
            "vscode",
            "the image's /etc/passwd could not be read (it is not a regular file)",
            id="a symlinked /etc/passwd is never followed",
        ),
        pytest.param(
            "huge",
            "vscode",
            "the image's /etc/passwd could not be read (it is larger than 1024 KiB)",
            id="an /etc/passwd over 1 MiB",
        ),
        pytest.param(
            "none", "vscode", "there is no user 'vscode' in the image's /etc/passwd", id="no passwd"
        ),
        pytest.param(
            "mine",
            "vscode:nosuchgroup",
            "there is no group 'nosuchgroup' in the image's /etc/group",
            id="an unknown group",
        ),
        pytest.param("mine", "root", "'root' is uid 0 in the image, not you", id="root by name"),
    ],
)
def test_a_name_that_is_not_the_caller_is_refused(
    lab: Lab, image: str, user: str, says: str
) -> None:
    rc, out, err = run_as(lab, lab.images[image], user, "id", "-u")
    assert rc != 0, out
    expected = f"ds01: docker run --user {user} with host directories mounted was refused: "
    assert expected + says.format(bob_uid=lab.bob_uid) in err, err
    assert "updateRemoteUserUID" in err  # what to do instead
    # Nothing was left behind: the refused container was never made.
    mine = lab.client.containers.list(all=True, filters={"ancestor": lab.images[image]})
    assert mine == []


def test_no_probe_container_is_left_behind(lab: Lab) -> None:
    """The gate reads an image's accounts through a container of its own, removed at once;
    one left from before ds01d started (the fixture's) is removed before the first probe."""
    left = lab.client.containers.list(all=True, filters={"label": "ds01.probe"})
    assert left == []


def test_without_a_host_directory_a_name_goes_to_the_engine_unchanged(lab: Lab) -> None:
    """No host path, no run-as-you rule: root in one's own container is fine there."""
    r = lab.w.docker(lab.mallory, "run", "--rm", "--user", "vscode", lab.images["root"], "id", "-u")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0"
