"""VS Code Dev Containers through the gate, with the real CLI (@devcontainers/cli, installed by
scripts/devcontainer-cli.sh): the example configuration (examples/devcontainer/) with a
`vscode` remoteUser, the default bind-mounted workspace and a GPU, as a real user. The CLI
builds its uid-remapping image through the gate, runs the container, and runs the lifecycle
commands as `vscode` — which the gate lets through because the image maps it to the user
(gate/policy/named_user.py). The image stands in for mcr.microsoft.com/devcontainers/base
(no registry here): busybox with a `vscode` user at uid 1000, as those images have.
"""

from __future__ import annotations

import io
import json
import os
import pwd
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from gate_support import TEST_IMAGE, GateWorld, gate_world, need, run_as, unique

from support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.root]

CLI = ROOT / ".cache/devcontainers-cli/node_modules/.bin/devcontainer"
EXAMPLE = ROOT / "examples/devcontainer/devcontainer.json"
BASE = "ds01-gatetest/devcontainer-base:latest"
# What the Dev Containers base images have: a vscode user at 1000 with a home of its own.
BASE_DOCKERFILE = f"""\
FROM {TEST_IMAGE}
RUN echo 'vscode:x:1000:1000:vscode:/home/vscode:/bin/sh' >> /etc/passwd \\
 && echo 'vscode:x:1000:' >> /etc/group \\
 && mkdir -p /home/vscode && chown 1000:1000 /home/vscode
"""
POST_CREATE = (
    "id -u > made-by-post-create && id -g >> made-by-post-create "
    "&& echo $HOME >> made-by-post-create"
)


@dataclass
class Dev:
    w: GateWorld
    user: str
    uid: int
    gid: int
    project: Path


def example_config(image: str) -> dict[str, object]:
    """The example with its whole-line // comments dropped (JSONC), on the stand-in image."""
    text = "\n".join(
        line for line in EXAMPLE.read_text().splitlines() if not line.strip().startswith("//")
    )
    config: dict[str, object] = json.loads(text)
    config["image"] = image
    return config


@pytest.fixture(scope="module")
def dev(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Dev]:
    need(CLI.exists(), f"{CLI} is missing: run scripts/devcontainer-cli.sh")
    need(shutil.which("node") is not None, "node is missing: run .ci/setup-system.sh")
    docker_client.images.build(fileobj=io.BytesIO(BASE_DOCKERFILE.encode()), tag=BASE, rm=True)
    with gate_world(docker_host) as w:
        user = w.user("dev")
        pw = pwd.getpwnam(user)
        project = Path(pw.pw_dir) / unique("proj")
        config = example_config(BASE)
        assert config["remoteUser"] == "vscode"
        assert config["runArgs"] == ["--gpus", "1"]
        config["postCreateCommand"] = POST_CREATE
        (project / ".devcontainer").mkdir(parents=True)
        (project / ".devcontainer/devcontainer.json").write_text(json.dumps(config, indent=2))
        for path in (
            project,
            project / ".devcontainer",
            project / ".devcontainer/devcontainer.json",
        ):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        try:
            yield Dev(w, user, pw.pw_uid, pw.pw_gid, project)
        finally:
            for image in docker_client.images.list():
                for tag in image.tags:
                    # The CLI's uid-remapping images of this module's projects.
                    if tag.startswith(("vsc-proj", "vsc-vol")):
                        docker_client.images.remove(tag, force=True)
    docker_client.images.remove(BASE, force=True)


def devcontainer(dev: Dev, *args: str) -> tuple[int, str, str]:
    r = run_as(
        dev.user,
        [str(CLI), *args],
        env={"DOCKER_HOST": dev.w.docker_host},
        timeout=300,
    )
    return r.returncode, r.stdout, r.stderr


def outcome(stdout: str) -> dict[str, object]:
    """The CLI's result: the last line of its output is one JSON object."""
    return json.loads(stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def test_devcontainer_up_runs_the_post_create_command_as_the_user(dev: Dev) -> None:
    rc, out, err = devcontainer(dev, "up", "--workspace-folder", str(dev.project))
    assert rc == 0, err + out
    result = outcome(out)
    assert result["outcome"] == "success", result
    assert result["remoteUser"] == "vscode"
    made = dev.project / "made-by-post-create"
    # vscode is the user: the file on the host is theirs, the numbers are theirs, and the
    # home is vscode's from the image.
    assert made.read_text().split() == [str(dev.uid), str(dev.gid), "/home/vscode"]
    st = made.stat()
    assert (st.st_uid, st.st_gid) == (dev.uid, dev.gid)


def test_devcontainer_exec_runs_as_the_user_with_the_allocated_gpu(dev: Dev) -> None:
    rc, out, err = devcontainer(
        dev,
        "exec",
        "--workspace-folder",
        str(dev.project),
        "sh",
        "-c",
        "id -u; id -G; pwd; tr '\\0' '\\n' < /proc/1/environ | grep ^NVIDIA_VISIBLE_DEVICES=",
    )
    assert rc == 0, err + out
    lines = out.strip().splitlines()[-4:]
    assert lines[:3] == [str(dev.uid), str(dev.gid), f"/workspaces/{dev.project.name}"]
    # --gpus 1 from the example: ds01 allocated one unit and pinned the container to it.
    assert re.fullmatch(r"NVIDIA_VISIBLE_DEVICES=(GPU|MIG)-[0-9a-f-]+", lines[3]), lines[3]


def test_a_second_up_finds_the_container_and_does_not_run_post_create_again(dev: Dev) -> None:
    made = dev.project / "made-by-post-create"
    made.unlink()
    rc, out, err = devcontainer(dev, "up", "--workspace-folder", str(dev.project))
    assert rc == 0, err + out
    assert outcome(out)["outcome"] == "success"
    assert not made.exists()  # its marker in /home/vscode/.devcontainer says it ran


def test_the_named_volume_layout_runs_as_root(dev: Dev) -> None:
    """docs/devcontainers.md's alternative: the workspace in a named volume, no host
    directory, so root in the container is allowed (nothing it writes reaches the host)."""
    project = Path(pwd.getpwnam(dev.user).pw_dir) / unique("vol")
    volume = unique("src")
    config = {
        "image": BASE,
        "workspaceMount": f"source={volume},target=/workspaces/{project.name},type=volume",
        "workspaceFolder": f"/workspaces/{project.name}",
        "remoteUser": "root",
        "postCreateCommand": "id -u > made-by-post-create",
    }
    (project / ".devcontainer").mkdir(parents=True)
    (project / ".devcontainer/devcontainer.json").write_text(json.dumps(config))
    for path in (project, project / ".devcontainer", project / ".devcontainer/devcontainer.json"):
        os.chown(path, dev.uid, dev.gid)
    rc, out, err = devcontainer(dev, "up", "--workspace-folder", str(project))
    assert rc == 0, err + out
    assert outcome(out)["remoteUser"] == "root"
    rc, out, err = devcontainer(
        dev, "exec", "--workspace-folder", str(project), "cat", "made-by-post-create"
    )
    assert rc == 0, err + out
    assert out.strip().splitlines()[-1] == "0"
    r = dev.w.docker(dev.user, "volume", "ls", "-q")
    assert volume in r.stdout.split()  # the user's own volume
