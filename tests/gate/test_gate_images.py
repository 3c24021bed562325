"""Images, tags and builds through the gate, attacked by a real user (mallory) with the real
docker CLI and raw HTTP: overwriting shared and other users' tags (tag, build -t, commit,
import, load, pull, rmi), builds on other users' networks and containers, BuildKit's control
API, other users' private images (an `ENV HF_TOKEN=…`), and where legacy build steps run.

Images are built locally only (no registry): FROM the test image.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import (
    DOCKER_CLI,
    STOPPABLE,
    TEST_IMAGE,
    GateWorld,
    as_user,
    gate_world,
    unique,
    user_dir,
)

from ds01.gate.refusal import RULES
from ds01.runtime.spec import cgroup_parent

pytestmark = [pytest.mark.docker, pytest.mark.root]

V = "/v1.41"
LEGACY = {"DOCKER_BUILDKIT": "0"}


@dataclass
class Lab:
    w: GateWorld
    alice: str
    mallory: str
    shared: str  # a tag made behind ds01's back (an admin, or before ds01 recorded tags)
    shared_id: str
    evil: str  # mallory's own image
    client: docker.DockerClient


def build(w: GateWorld, user: str, dockerfile: str, *args: str) -> tuple[int, str]:
    """docker build (legacy builder) of `dockerfile` as `user`: (exit status, output)."""
    ctx = user_dir(user, unique("ctx"))
    r = as_user(user, ["sh", "-c", f"cat > {ctx}/Dockerfile"], input=dockerfile)
    assert r.returncode == 0, r.stderr
    r = w.docker(user, "build", *args, ctx, env=LEGACY, timeout=180)
    return r.returncode, r.stdout + r.stderr


@pytest.fixture(scope="module")
def lab(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Lab]:
    with gate_world(docker_host) as w:
        alice, mallory = w.user("alice"), w.user("mallory")
        shared = f"labshared{unique('')}:latest"
        dockerfile = io.BytesIO(f"FROM {TEST_IMAGE}\nLABEL lab={shared}\n".encode())
        shared_id = docker_client.images.build(fileobj=dockerfile, tag=shared, rm=True)[0].id
        evil = f"{mallory}/evil:latest"
        rc, out = build(w, mallory, f'FROM {TEST_IMAGE}\nCMD ["echo", "pwned"]\n', "-t", evil)
        assert rc == 0, out
        yield Lab(w, alice, mallory, shared, shared_id, evil, docker_client)
        for image in docker_client.images.list():
            for t in image.tags:
                if t == shared or t.split("/")[0] in (alice, mallory):
                    docker_client.images.remove(t, noprune=False)


def refused(out: str, rule_what: str) -> None:
    assert "ds01: " + rule_what in out, out


def tag_id(lab: Lab, tag: str) -> str:
    return str(lab.client.images.get(tag).id)


# ---- attack 7: overwriting tags -----------------------------------------------------------


def test_tag_onto_shared_tag_refused(lab: Lab) -> None:
    r = lab.w.docker(lab.mallory, "tag", lab.evil, lab.shared)
    assert r.returncode != 0
    refused(r.stderr, f"docker tag to {lab.shared!r} was refused: that tag exists and is shared")
    assert tag_id(lab, lab.shared) == lab.shared_id


def test_build_t_onto_shared_tag_refused(lab: Lab) -> None:
    rc, out = build(lab.w, lab.mallory, f"FROM {TEST_IMAGE}\n", "-t", lab.shared)
    assert rc != 0
    refused(out, f"docker build -t {lab.shared!r} was refused: that tag exists and is shared")
    assert tag_id(lab, lab.shared) == lab.shared_id


def test_commit_onto_shared_tag_refused(lab: Lab) -> None:
    name = unique("c")
    r = lab.w.docker(lab.mallory, "create", "--name", name, TEST_IMAGE, "true")
    assert r.returncode == 0, r.stderr
    r = lab.w.docker(lab.mallory, "commit", name, lab.shared)
    assert r.returncode != 0
    refused(r.stderr, f"docker commit to {lab.shared!r} was refused: that tag exists")
    assert tag_id(lab, lab.shared) == lab.shared_id
    lab.w.docker(lab.mallory, "rm", name)


def test_import_onto_shared_tag_refused(lab: Lab) -> None:
    path = os.path.join(user_dir(lab.mallory, "imp"), "rootfs.tar")
    as_user(lab.mallory, ["tar", "cf", path, "-C", "/etc", "hostname"])
    r = lab.w.docker(lab.mallory, "import", path, lab.shared)
    assert r.returncode != 0
    refused(r.stderr, f"docker import to {lab.shared!r} was refused: that tag exists")
    assert tag_id(lab, lab.shared) == lab.shared_id


def test_pull_onto_locally_built_tag_refused(lab: Lab) -> None:
    r = lab.w.docker(lab.mallory, "pull", lab.shared)
    assert r.returncode != 0
    refused(r.stderr, f"docker pull onto {lab.shared!r} was refused: that tag exists and is shared")
    assert "pull by digest: docker pull NAME@sha256:" in r.stderr
    assert tag_id(lab, lab.shared) == lab.shared_id


def test_rmi_of_shared_tag_refused(lab: Lab) -> None:
    r = lab.w.docker(lab.mallory, "rmi", lab.shared)
    assert r.returncode != 0
    refused(r.stderr, f"removing tag {lab.shared!r} was refused: it is not yours")
    r = lab.w.docker(lab.mallory, "rmi", "-f", lab.shared_id)
    assert r.returncode != 0
    assert "ds01: removing image" in r.stderr and "are not yours" in r.stderr
    assert tag_id(lab, lab.shared) == lab.shared_id


def test_other_users_tag_is_theirs_alone(lab: Lab) -> None:
    theirs = f"{lab.alice}/model:v1"
    rc, out = build(lab.w, lab.alice, f"FROM {TEST_IMAGE}\nENV V=1\n", "-t", theirs)
    assert rc == 0, out
    alice_id = tag_id(lab, theirs)
    r = lab.w.docker(lab.mallory, "tag", lab.evil, theirs)
    refused(
        r.stderr, f"docker tag to {theirs!r} was refused: that tag exists and is another user's"
    )
    r = lab.w.docker(lab.mallory, "rmi", theirs)
    refused(r.stderr, f"removing tag {theirs!r} was refused: it is not yours")
    assert tag_id(lab, theirs) == alice_id
    # alice moves and removes her own tag
    rc, out = build(lab.w, lab.alice, f"FROM {TEST_IMAGE}\nENV V=2\n", "-t", theirs)
    assert rc == 0, out
    assert tag_id(lab, theirs) != alice_id
    r = lab.w.docker(lab.alice, "rmi", theirs)
    assert r.returncode == 0, r.stderr


def test_load_onto_shared_tag_is_put_back(lab: Lab) -> None:
    """docker load names its tags inside the archive: an archive of mallory's image under the
    shared name loads, the shared tag is put back and the load is answered as refused."""
    home = user_dir(lab.mallory, "load")
    saved, forged = os.path.join(home, "evil.tar"), os.path.join(home, "forged.tar")
    r = lab.w.docker(lab.mallory, "save", "-o", saved, lab.evil)
    assert r.returncode == 0, r.stderr
    mine = f"{lab.mallory}/loaded:v1"
    _retag_archive(saved, forged, [lab.shared, mine])
    os.chown(forged, *_ids(lab.mallory))
    r = lab.w.docker(lab.mallory, "load", "-i", forged)
    assert r.returncode != 0
    refused(r.stderr, f"docker load was refused for {lab.shared}: those tags exist")
    assert tag_id(lab, lab.shared) == lab.shared_id
    assert tag_id(lab, mine) == tag_id(lab, lab.evil)  # her own new tag stays, and is hers
    r = lab.w.docker(lab.mallory, "rmi", mine)
    assert r.returncode == 0, r.stderr


def _retag_archive(src: str, dst: str, tags: list[str]) -> None:
    """A copy of a `docker save` archive whose manifest names `tags`."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read() if member.isfile() else None  # type: ignore[union-attr]
            if member.name == "manifest.json" and data is not None:
                manifest = json.loads(data)
                manifest[0]["RepoTags"] = tags
                data = json.dumps(manifest).encode()
                member.size = len(data)
            elif member.name == "repositories":
                continue
            tout.addfile(member, io.BytesIO(data) if data is not None else None)


def _ids(user: str) -> tuple[int, int]:
    import pwd

    pw = pwd.getpwnam(user)
    return pw.pw_uid, pw.pw_gid


# ---- private images -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def secret(lab: Lab) -> tuple[str, str]:
    tag = f"{lab.alice}/secret:v1"
    # Unique content: an identical image left by an earlier run would already exist, unrecorded.
    dockerfile = f"FROM {TEST_IMAGE}\nENV HF_TOKEN=hf_secret\nLABEL run={unique('r')}\n"
    rc, out = build(lab.w, lab.alice, dockerfile, "-t", tag)
    assert rc == 0, out
    return tag, tag_id(lab, tag)


def test_private_image_hidden_from_others(lab: Lab, secret: tuple[str, str]) -> None:
    tag, image_id = secret
    for ref in (tag, image_id, image_id.removeprefix("sha256:")[:10]):
        r = lab.w.docker(lab.mallory, "image", "inspect", ref)
        assert r.returncode != 0
        assert "hf_secret" not in r.stdout
        refused(r.stderr, f"you may not inspect image {ref!r}: it is another user's private image")
    for args, action in (
        (("history", tag), "read the history of"),
        (("save", "-o", os.path.join(user_dir(lab.mallory, "out"), "s.tar"), tag), "save"),
        (("tag", tag, f"{lab.mallory}/copy:v1"), "tag"),
    ):
        r = lab.w.docker(lab.mallory, *args)
        refused(r.stderr, f"you may not {action} image {tag!r}")
    r = lab.w.docker(lab.mallory, "images", "-a", "--format", "{{.ID}}")
    assert r.returncode == 0, r.stderr
    assert image_id.removeprefix("sha256:")[:12] not in r.stdout.split()
    assert lab.shared_id.removeprefix("sha256:")[:12] in r.stdout.split()


def test_private_image_usable_by_its_owner(lab: Lab, secret: tuple[str, str]) -> None:
    tag, image_id = secret
    r = lab.w.docker(lab.alice, "image", "inspect", "--format", "{{json .Config.Env}}", tag)
    assert r.returncode == 0, r.stderr
    assert "HF_TOKEN=hf_secret" in r.stdout
    r = lab.w.docker(lab.alice, "run", "--rm", tag, "sh", "-c", "echo $HF_TOKEN")
    assert (r.returncode, r.stdout) == (0, "hf_secret\n"), r.stderr
    r = lab.w.docker(lab.alice, "images", "--format", "{{.ID}}")
    assert image_id.removeprefix("sha256:")[:12] in r.stdout.split()


def test_private_image_not_runnable_by_others(lab: Lab, secret: tuple[str, str]) -> None:
    tag, _ = secret
    r = lab.w.docker(lab.mallory, "run", "--rm", tag, "sh", "-c", "echo $HF_TOKEN")
    assert "hf_secret" not in r.stdout
    refused(r.stderr, f"you may not create containers from image {tag!r}")


def test_private_image_not_deployable_by_others(lab: Lab, secret: tuple[str, str]) -> None:
    tag, _ = secret
    r = lab.w.d.cli(
        "container", "deploy", "peek", "--image", tag, "--cpu-only", "--detach", user=lab.mallory
    )
    if r.returncode == 0:
        lab.w.d.cli("container", "retire", "peek", user=lab.mallory)
    assert r.returncode == 1, r.stdout + r.stderr
    assert f"you may not deploy image {tag!r}: it is another user's private image" in r.stderr


# ---- a legacy build's Dockerfile names another user's private image ------------------------


@pytest.mark.parametrize(
    ("dockerfile", "args"),
    [
        ("FROM {tag}\nRUN cat /etc/hostname\n", ()),
        ("ARG BASE={tag}\nFROM $BASE\n", ()),
        ("ARG BASE\nFROM ${{BASE:-{tag}}}\n", ()),
        ("ARG BASE={image}\nFROM ${{BASE}}\n", ("--build-arg", "BASE={tag}")),
        ("FROM {image} AS one\nFROM one\nCOPY --from={tag} /etc /x\n", ()),
        ("# escape=`\nFROM {image}\nCOPY `\n  --from={tag} /etc /x\n", ()),
        ("from {image}\nonbuild copy --from={tag} /etc /x\n", ()),
        ("FROM {image}\n", ("-f", "Dockerfile.lab")),
    ],
    ids=[
        "FROM the tag",
        "FROM an ARG default",
        "FROM ${ARG:-default}",
        "FROM an ARG given by --build-arg",
        "COPY --from= the image",
        "COPY --from= after a backtick continuation",
        "ONBUILD COPY --from= (lower case)",
        "FROM in a Dockerfile named by -f",
    ],
)
def test_build_on_another_users_private_image_is_refused(
    lab: Lab, secret: tuple[str, str], dockerfile: str, args: tuple[str, ...]
) -> None:
    tag, _ = secret
    text = dockerfile.format(tag=tag, image=TEST_IMAGE)
    args = tuple(a.format(tag=tag) for a in args)
    if "-f" in args:
        text = f"FROM {tag}\n"
        ctx = user_dir(lab.mallory, unique("ctx"))
        as_user(lab.mallory, ["sh", "-c", f"cat > {ctx}/Dockerfile.lab"], input=text)
        as_user(lab.mallory, ["sh", "-c", f"echo 'FROM {TEST_IMAGE}' > {ctx}/Dockerfile"])
        r = lab.w.docker(
            lab.mallory, "build", "-f", f"{ctx}/Dockerfile.lab", ctx, env=LEGACY, timeout=180
        )
        rc, out = r.returncode, r.stdout + r.stderr
    else:
        rc, out = build(lab.w, lab.mallory, text, *args)
    assert rc != 0, out
    refused(out, f"you may not build from image {tag!r}: it is another user's private image")
    assert "hf_secret" not in out


def test_build_from_a_base_whose_onbuild_trigger_copies_a_private_image_is_refused(
    lab: Lab, secret: tuple[str, str]
) -> None:
    tag, _ = secret
    base = f"{lab.mallory}/trigger:{unique('t')}"
    rc, out = build(lab.w, lab.mallory, f"FROM {TEST_IMAGE}\n", "-t", base)
    assert rc == 0, out
    # The trigger is put in by a commit --change (the gate checks Dockerfiles, not commits).
    name = unique("trig")
    assert lab.w.docker(lab.mallory, "create", "--name", name, base, "true").returncode == 0
    r = lab.w.docker(
        lab.mallory, "commit", "--change", f"ONBUILD COPY --from={tag} /etc /x", name, base
    )
    assert r.returncode == 0, r.stderr
    lab.w.docker(lab.mallory, "rm", name)
    rc, out = build(lab.w, lab.mallory, f"FROM {base}\n")
    assert rc != 0, out
    refused(out, f"you may not build from image {tag!r}")


def test_a_compressed_build_context_is_refused(lab: Lab) -> None:
    rc, out = build(lab.w, lab.mallory, f"FROM {TEST_IMAGE}\n", "--compress")
    assert rc != 0, out
    refused(out, "a gzip-compressed build context (docker build --compress) was refused")


def test_builds_on_own_and_shared_images_and_stages_still_work(
    lab: Lab, secret: tuple[str, str]
) -> None:
    tag, _ = secret
    rc, out = build(
        lab.w,
        lab.alice,
        f"ARG BASE={TEST_IMAGE}\nFROM $BASE AS one\nRUN echo one > /one\n"
        f"FROM {tag}\nCOPY --from=one /one /one\nCOPY --from=0 /one /two\n"
        f"FROM {lab.shared}\n",
    )
    assert rc == 0, out


# ---- attack 4: build networks -------------------------------------------------------------


def test_build_network_of_others_refused(lab: Lab) -> None:
    w = lab.w
    net, box = unique("alicenet"), unique("alicebox")
    assert w.docker(lab.alice, "network", "create", net).returncode == 0
    r = w.docker(lab.alice, "run", "-d", "--name", box, TEST_IMAGE, *STOPPABLE)
    assert r.returncode == 0, r.stderr
    step = f"FROM {TEST_IMAGE}\nRUN true\n"
    rc, out = build(w, lab.mallory, step, "--network", f"container:{box}")
    assert rc != 0
    refused(out, f"docker build --network container:{box} was refused: it is another user's")
    rc, out = build(w, lab.mallory, step, "--network", net)
    assert rc != 0
    refused(out, f"docker build --network {net} was refused: it is another user's network")
    own = unique("mallorynet")
    assert w.docker(lab.mallory, "network", "create", own).returncode == 0
    for mode in (own, "none", "default"):
        rc, out = build(w, lab.mallory, step + f"RUN echo {mode}\n", "--network", mode)
        assert rc == 0, out
    w.docker(lab.alice, "rm", "-f", box)
    for user, name in ((lab.alice, net), (lab.mallory, own)):
        w.docker(user, "network", "rm", name)


def test_build_reserved_label_refused(lab: Lab) -> None:
    rc, out = build(lab.w, lab.mallory, f"FROM {TEST_IMAGE}\n", "--label", "ds01.owner=alice")
    assert rc != 0
    refused(out, "docker build with label ds01.owner was refused")


# ---- builds run as the user ---------------------------------------------------------------


def test_legacy_build_runs_in_users_cgroup_with_limits(lab: Lab) -> None:
    tag = f"{lab.alice}/cg:v1"
    rc, out = build(
        lab.w,
        lab.alice,
        f"FROM {TEST_IMAGE}\nRUN cat /proc/self/cgroup > /cg; "
        "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/memory/memory.limit_in_bytes "
        "> /mem 2>/dev/null; true\n",
        "-t",
        tag,
    )
    assert rc == 0, out
    r = lab.w.docker(lab.alice, "run", "--rm", tag, "cat", "/cg", "/mem")
    assert r.returncode == 0, r.stderr
    driver = lab.client.info()["CgroupDriver"]
    parent = cgroup_parent(lab.alice, driver)
    lines = r.stdout.splitlines()
    cgroups = [line.split(":", 2)[2] for line in lines if line.count(":") >= 2]
    assert cgroups and all(parent in c for c in cgroups), r.stdout
    assert lines[-1] == str(512 * 1024 * 1024)
    rc, out = build(lab.w, lab.alice, f"FROM {TEST_IMAGE}\n", "--memory", "1g")
    assert rc != 0
    refused(out, "--memory 1g is above your limit of 512m")
    rc, out = build(lab.w, lab.alice, f"FROM {TEST_IMAGE}\n", "--cgroup-parent", "/")
    refused(out, "docker build with cgroupparent=/ was refused")


# ---- attack 9: BuildKit -------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/grpc", "/session"])
def test_buildkit_control_api_refused(lab: Lab, path: str) -> None:
    headers = {"Connection": "Upgrade", "Upgrade": "h2c"}
    with lab.w.agent(lab.mallory) as agent:
        reply = agent.request("POST", V + path, headers=headers)
    assert reply.status == 403
    assert reply.message.startswith(f"ds01: BuildKit (POST {path}) was refused\n")
    assert "DOCKER_BUILDKIT=0 docker build" in reply.message


def test_ping_says_legacy_builder(lab: Lab) -> None:
    with lab.w.agent(lab.mallory) as agent:
        for method in ("GET", "HEAD"):
            reply = agent.request(method, "/_ping")
            assert reply.status == 200
            assert "Builder-Version: 1" in reply.headers.split("\r\n")


def test_buildkit_clients(lab: Lab) -> None:
    """Debian's docker 20.10 CLI with DOCKER_BUILDKIT=1 is refused (it prints only the status
    of its /session upgrade; the audit event says what to do); without it, and the newer CLI
    without buildx, build with the legacy builder."""
    ctx = user_dir(lab.mallory, unique("bk"))
    as_user(lab.mallory, ["sh", "-c", f"echo 'FROM {TEST_IMAGE}' > {ctx}/Dockerfile"])
    if os.path.exists("/usr/bin/docker"):
        r = lab.w.docker(
            lab.mallory, "build", ctx, cli="/usr/bin/docker", env={"DOCKER_BUILDKIT": "1"}
        )
        # It opens /session and sends the build at once; whichever refusal it reads first is
        # what it prints (the build's carries the gate's message).
        assert r.returncode == 1, r.stderr
        assert r.stderr in (
            "failed to dial gRPC: unable to upgrade to h2c, received 403\n",
            "Error response from daemon: ds01: BuildKit (docker build with version=2) was refused"
            f"\n{RULES['build.buildkit'].why}\n{RULES['build.buildkit'].instead}\n",
        ), r.stderr
        r = lab.w.docker(lab.mallory, "build", "-q", ctx, cli="/usr/bin/docker")
        assert r.returncode == 0, r.stderr
    r = lab.w.docker(lab.mallory, "build", "-q", ctx, cli=DOCKER_CLI)
    assert r.returncode == 0, r.stderr
    r = lab.w.docker(lab.mallory, "build", "-q", ctx, cli=DOCKER_CLI, env={"DOCKER_BUILDKIT": "1"})
    assert r.returncode != 0
    assert "BuildKit is enabled but the buildx component is missing" in r.stderr, r.stderr
