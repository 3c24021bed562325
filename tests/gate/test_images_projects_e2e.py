"""Images and projects end to end (issue 18 items 1-2), as real users through the gate: a new
user goes from nothing to a GPU container running their project with their packages using
only `ds01 project init` and `ds01 project launch`; `ds01 image build/add/list/rm` build
through the user's own Docker access and see only their own and the lab's shared images; bad
input is refused with nothing changed; re-running init and launch is safe.

No registry is reachable: the framework base (config images.frameworks.pytorch) is a busybox
image made here with stand-in `pip` and `apt-get` that record what they were asked to install,
and a `vscode` user as the Dev Containers images have. The real framework bases are checked
as text only (tests/images/test_dockerfile.py).
"""

from __future__ import annotations

import io
import json
import pwd
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import docker
import pytest
from gate_support import BIN, TEST_IMAGE, GateWorld, gate_world, need, run_as, unique

from ds01.identity import sanitize_username
from support import ROOT

pytestmark = [pytest.mark.docker, pytest.mark.root]

BASE = f"ds01-imgtest/framework-base:{unique('t')}"
DEVCONTAINER = ROOT / ".cache/devcontainers-cli/node_modules/.bin/devcontainer"
STAND_IN_PIP = r"""#!/bin/sh
# Stand-in for pip (no registry here): records what it is asked to install.
while [ $# -gt 0 ]; do
  case "$1" in
    install|--no-cache-dir) ;;
    -r) shift; grep -v '^#' "$1" | grep . >> /opt/pip-installed ;;
    no-such-package) echo "ERROR: No matching distribution found for $1" >&2; exit 1 ;;
    *) echo "$1" >> /opt/pip-installed ;;
  esac
  shift
done
"""
STAND_IN_APT = """#!/bin/sh
[ "$1" = update ] || echo "$@" >> /opt/apt-installed
"""
BASE_DOCKERFILE = f"""\
FROM {TEST_IMAGE}
COPY pip apt-get /bin/
RUN chmod 755 /bin/pip /bin/apt-get && mkdir -p /opt /var/lib/apt/lists \\
 && echo 'vscode:x:1000:1000:vscode:/home/vscode:/bin/sh' >> /etc/passwd \\
 && echo 'vscode:x:1000:' >> /etc/group \\
 && mkdir -p /home/vscode && chown 1000:1000 /home/vscode
"""


def _base_context() -> io.BytesIO:
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, text in (
            ("Dockerfile", BASE_DOCKERFILE),
            ("pip", STAND_IN_PIP),
            ("apt-get", STAND_IN_APT),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    buf.seek(0)
    return buf


@dataclass
class Lab:
    w: GateWorld
    alice: str
    bob: str
    client: docker.DockerClient

    def ds01(self, user: str, *args: str) -> tuple[int, str, str]:
        r = run_as(user, [str(BIN / "ds01"), *args], env=self.w.d.env, timeout=300)
        return r.returncode, r.stdout, r.stderr

    def home(self, user: str) -> Path:
        return Path(pwd.getpwnam(user).pw_dir)

    def ref(self, user: str, name: str) -> str:
        return f"ds01-{sanitize_username(user)}/{name}:latest"

    def has_image(self, ref: str) -> bool:
        try:
            self.client.images.get(ref)
        except docker.errors.ImageNotFound:
            return False
        return True

    def installed(self, ref: str) -> list[str]:
        """What the stand-in pip recorded in the image (read behind ds01's back, as root)."""
        out = self.client.containers.run(ref, ["cat", "/opt/pip-installed"], remove=True)
        return out.decode().split()


@pytest.fixture(scope="module")
def lab(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Lab]:
    docker_client.images.build(fileobj=_base_context(), custom_context=True, tag=BASE, rm=True)
    extra = f"images:\n  frameworks:\n    pytorch: {BASE}\n"
    try:
        with gate_world(docker_host, extra_config=extra) as w:
            lab = Lab(w, w.user("alice"), w.user("bob"), docker_client)
            try:
                yield lab
            finally:
                for user in (lab.alice, lab.bob):
                    prefix = f"ds01-{sanitize_username(user)}/"
                    for image in docker_client.images.list():
                        for tag in image.tags:
                            # Theirs, and the Dev Containers CLI's uid-remapping image.
                            if tag.startswith((prefix, "vsc-thesis-")):
                                docker_client.images.remove(tag, force=True)
    finally:
        docker_client.images.remove(BASE, force=True)


def jsonc(path: Path) -> dict[str, object]:
    lines = path.read_text().splitlines()
    text = "\n".join(x for x in lines if not x.strip().startswith("//"))
    return json.loads(text)  # type: ignore[no-any-return]


def test_a_new_user_goes_from_nothing_to_a_gpu_container_with_their_packages(lab: Lab) -> None:
    a = lab.alice
    rc, out, err = lab.ds01(a, "project", "init", "thesis", "--pip", "numpy>=1.0", "--pip", "tqdm")
    assert rc == 0, err + out
    project = lab.home(a) / "workspace" / "thesis"
    for sub in ("data", "models", "notebooks", "src", ".git"):
        assert (project / sub).is_dir(), sub
    for name in ("README.md", ".gitignore", "Dockerfile", "requirements.txt"):
        assert (project / name).is_file(), name
    assert "data/*" in (project / ".gitignore").read_text().splitlines()
    assert (project / "README.md").stat().st_uid == pwd.getpwnam(a).pw_uid
    pyproject = (project / "pyproject.toml").read_text()
    assert f'image = "{lab.ref(a, "thesis")}"' in pyproject
    assert "gpus = 1" in pyproject
    dev = jsonc(project / ".devcontainer/devcontainer.json")
    assert dev["image"] == lab.ref(a, "thesis")
    assert dev["remoteUser"] == "vscode"
    assert dev["runArgs"] == ["--gpus", "1"]
    # The student adds a package the way the README says.
    with (project / "requirements.txt").open("a") as f:
        f.write("scipy\n")

    rc, out, err = lab.ds01(a, "project", "launch", "thesis", "--detach")
    assert rc == 0, err + out
    assert "Step 1/" in err  # the build's progress streamed
    rc, out, err = lab.ds01(a, "container", "inspect", "thesis", "--json")
    assert rc == 0, err
    info = json.loads(out)
    assert info["image"] == lab.ref(a, "thesis")
    assert len(info["gpus"]) == 1
    unit = info["gpus"][0]["uuid"]
    rc, out, err = lab.ds01(
        a,
        "container",
        "exec",
        "thesis",
        "--",
        "sh",
        "-c",
        "tr '\\0' '\\n' < /proc/1/environ | grep ^NVIDIA_VISIBLE_DEVICES=; "
        "cat /opt/pip-installed; pwd; cat README.md | head -1; id -u; echo made > src/here.txt",
    )
    assert rc == 0, err + out
    lines = out.splitlines()
    assert lines[0] == f"NVIDIA_VISIBLE_DEVICES={unit}"
    assert lines[1:5] == ["scipy", "numpy>=1.0", "tqdm", "/workspace"]  # requirements first
    assert lines[5] == "# thesis"
    assert lines[6] == str(pwd.getpwnam(a).pw_uid)
    made = project / "src" / "here.txt"
    assert made.read_text() == "made\n"
    assert made.stat().st_uid == pwd.getpwnam(a).pw_uid
    # The gate recorded the build as alice's: her docker lists it, bob's does not.
    r = lab.w.docker(a, "images", "--format", "{{.Repository}}")
    assert f"ds01-{sanitize_username(a)}/thesis" in r.stdout.split()
    r = lab.w.docker(lab.bob, "images", "--format", "{{.Repository}}")
    assert f"ds01-{sanitize_username(a)}/thesis" not in r.stdout.split()


def test_rerunning_init_and_launch_keeps_everything(lab: Lab) -> None:
    a = lab.alice
    project = lab.home(a) / "workspace" / "thesis"
    (project / "README.md").write_text("# my own words\n")
    dockerfile = (project / "Dockerfile").read_text() + "ENV MINE=1\n"
    (project / "Dockerfile").write_text(dockerfile)
    before = {
        p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git/" not in str(p)
    }
    rc, out, err = lab.ds01(a, "project", "init", "thesis", "--pip", "pandas")
    assert rc == 0, err + out
    assert "kept    README.md" in out
    assert "kept    Dockerfile" in out
    assert "--pip/--apt not added: the Dockerfile exists" in out
    after = {p: p.read_bytes() for p in project.rglob("*") if p.is_file() and ".git/" not in str(p)}
    assert after == before
    rc, out, err = lab.ds01(a, "container", "inspect", "thesis", "--json")
    first_id = json.loads(out)["id"]
    rc, out, err = lab.ds01(a, "project", "launch", "thesis", "--detach")
    assert rc == 0, err + out
    assert "thesis: kept (already running)" in out
    rc, out, err = lab.ds01(a, "container", "inspect", "thesis", "--json")
    assert json.loads(out)["id"] == first_id
    rc, out, err = lab.ds01(a, "container", "stop", "thesis")
    assert rc == 0, err + out
    rc, out, err = lab.ds01(a, "project", "launch", "thesis", "--detach")
    assert rc == 0, err + out
    assert "thesis: started (was exited)" in out
    rc, out, err = lab.ds01(a, "container", "inspect", "thesis", "--json")
    info = json.loads(out)
    assert (info["id"], info["state"]) == (first_id, "running")


def test_vs_code_dev_containers_open_the_project_with_its_image_and_a_gpu(lab: Lab) -> None:
    """The Dev Containers CLI (scripts/devcontainer-cli.sh) on the folder `project init` made,
    unchanged: its uid-remapping image of the project's image, the container through the gate
    with --gpus 1, and commands as `vscode` mapped to the user."""
    need(DEVCONTAINER.exists(), f"{DEVCONTAINER} is missing: run scripts/devcontainer-cli.sh")
    a = lab.alice
    project = lab.home(a) / "workspace" / "thesis"
    env = {"DOCKER_HOST": lab.w.docker_host}
    r = run_as(
        a, [str(DEVCONTAINER), "up", "--workspace-folder", str(project)], env=env, timeout=300
    )
    assert r.returncode == 0, r.stderr + r.stdout
    assert json.loads(r.stdout.strip().splitlines()[-1])["outcome"] == "success"
    script = (
        "id -u; cat /opt/pip-installed | tr '\\n' ' '; echo; pwd; "
        "tr '\\0' '\\n' < /proc/1/environ | grep ^NVIDIA_VISIBLE_DEVICES="
    )
    r = run_as(
        a,
        [str(DEVCONTAINER), "exec", "--workspace-folder", str(project), "sh", "-c", script],
        env=env,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    lines = r.stdout.strip().splitlines()[-4:]
    assert lines[0] == str(pwd.getpwnam(a).pw_uid)
    assert lines[1].split() == ["scipy", "numpy>=1.0", "tqdm"]
    assert lines[2] == "/workspaces/thesis"
    assert re.fullmatch(r"NVIDIA_VISIBLE_DEVICES=(GPU|MIG)-[0-9a-f-]+", lines[3]), lines[3]


def test_image_build_add_and_the_kept_dockerfile(lab: Lab) -> None:
    b = lab.bob
    rc, out, err = lab.ds01(b, "image", "build", "bobimg", "--pip", "torchvision", "--apt", "git")
    assert rc == 0, err + out
    ref = lab.ref(b, "bobimg")
    kept = lab.home(b) / ".config/ds01/dockerfiles/bobimg/Dockerfile"
    assert f"Dockerfile: {kept}" in out
    assert "'torchvision'" in kept.read_text()
    assert lab.installed(ref) == ["torchvision"]
    labels = lab.client.images.get(ref).labels
    assert labels["ds01-image.name"] == "bobimg"
    assert labels["ds01-image.framework"] == "pytorch"
    rc, out, err = lab.ds01(b, "image", "add", "bobimg", "pandas==2.2.0")
    assert rc == 0, err + out
    assert lab.installed(ref) == ["torchvision", "pandas==2.2.0"]
    assert kept.read_text().rstrip().endswith("'pandas==2.2.0'")


def test_a_failing_build_says_why_and_an_edited_dockerfile_is_never_replaced(lab: Lab) -> None:
    b = lab.bob
    kept = lab.home(b) / ".config/ds01/dockerfiles/failing/Dockerfile"
    rc, out, err = lab.ds01(b, "image", "build", "failing", "--pip", "no-such-package")
    assert rc == 1, err + out
    assert "building" in err and "failed" in err
    assert "No matching distribution found for no-such-package" in err  # the step's own words
    assert not lab.has_image(lab.ref(b, "failing"))
    # Not edited: a second try with the right name rewrites it and builds.
    rc, out, err = lab.ds01(b, "image", "build", "failing", "--pip", "numpy")
    assert rc == 0, err + out
    assert "'no-such-package'" not in kept.read_text()
    # `image add` of a package that fails puts the Dockerfile back as it was.
    before = kept.read_text()
    image_id = lab.client.images.get(lab.ref(b, "failing")).id
    rc, out, err = lab.ds01(b, "image", "add", "failing", "no-such-package")
    assert rc == 1, err + out
    assert kept.read_text() == before
    assert lab.client.images.get(lab.ref(b, "failing")).id == image_id
    # Edited: a new template would overwrite the edits, so it is refused; --rebuild builds it.
    kept.write_text(before + "RUN echo edited >> /opt/pip-installed\n")
    lab.client.images.remove(lab.ref(b, "failing"))
    rc, out, err = lab.ds01(b, "image", "build", "failing", "--pip", "scipy")
    assert rc == 1, err + out
    assert "has your edits; ds01 does not replace it" in err
    assert "edited" in kept.read_text()
    rc, out, err = lab.ds01(b, "image", "build", "failing", "--rebuild")
    assert rc == 0, err + out
    assert lab.installed(lab.ref(b, "failing")) == ["numpy", "edited"]


def test_image_list_shows_own_and_shared_only(lab: Lab) -> None:
    rc, out, err = lab.ds01(lab.alice, "image", "list", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    tags = {t: r for r in rows for t in r["tags"]}
    mine = tags[lab.ref(lab.alice, "thesis")]
    assert mine["yours"] is True and mine["owner"] == lab.alice
    assert tags[TEST_IMAGE]["owner"] == "shared" and tags[TEST_IMAGE]["yours"] is False
    assert lab.ref(lab.bob, "bobimg") not in tags
    assert all(r["owner"] in (lab.alice, "shared") for r in rows)
    rc, out, err = lab.ds01(lab.alice, "image", "list")
    assert rc == 0, err
    assert "yours" in out and "shared" in out


def test_image_rm_of_another_users_image_is_refused_with_what_to_do(lab: Lab) -> None:
    theirs = lab.ref(lab.bob, "bobimg")
    rc, _out, err = lab.ds01(lab.alice, "image", "rm", theirs)
    assert rc == 1
    assert "ds01 image list shows yours" in err
    assert "Traceback" not in err
    assert lab.has_image(theirs)
    rc, _out, err = lab.ds01(lab.alice, "image", "rm", BASE)  # shared: the lab's
    assert rc == 1
    assert "not yours" in err
    assert lab.has_image(BASE)
    # Their own: removed, the Dockerfile kept for a rebuild.
    rc, out, err = lab.ds01(lab.bob, "image", "rm", "bobimg")
    assert rc == 0, err + out
    kept = lab.home(lab.bob) / ".config/ds01/dockerfiles/bobimg/Dockerfile"
    assert f"Its Dockerfile stays: {kept}" in out
    assert not lab.has_image(theirs)
    assert kept.is_file()


def test_nobody_else_can_put_a_tag_in_a_users_ds01_namespace(lab: Lab) -> None:
    """`project launch` runs ds01-<user>/NAME when it exists: a tag put there by another user
    (pointing at a shared image of their choosing) would have it run their pick with the
    user's files mounted. The gate keeps ds01-<user>/ to that user, whichever way a tag is
    written."""
    squat = f"ds01-{sanitize_username(lab.alice)}/squat:latest"
    r = lab.w.docker(lab.bob, "tag", TEST_IMAGE, squat)
    assert r.returncode != 0
    assert "holds another user's ds01 images" in r.stderr
    r = lab.w.docker(
        lab.bob,
        "build",
        "-t",
        squat,
        "-",
        stdin=f"FROM {TEST_IMAGE}\n",
        env={"DOCKER_BUILDKIT": "0"},
    )
    assert r.returncode != 0
    assert "holds another user's ds01 images" in r.stderr + r.stdout
    archive = lab.home(lab.bob) / "squat.tar"
    lab.client.images.get(TEST_IMAGE).tag(squat)
    try:
        with archive.open("wb") as f:
            for chunk in lab.client.images.get(squat).save(named=True):
                f.write(chunk)
    finally:
        lab.client.images.remove(squat)
    archive.chmod(0o644)
    r = lab.w.docker(lab.bob, "load", "-i", str(archive))
    assert r.returncode != 0
    assert "namespace" in r.stderr
    assert not lab.has_image(squat)
    # Their own namespace, and names outside any user's, stay open to them.
    own = f"ds01-{sanitize_username(lab.bob)}/mine:latest"
    r = lab.w.docker(lab.bob, "tag", TEST_IMAGE, own)
    assert r.returncode == 0, r.stderr
    lab.w.docker(lab.bob, "rmi", own)


BAD_INPUT = [
    pytest.param(
        ["image", "build", "x1", "--framework", "caffe"],
        2,
        "unknown framework",
        id="unknown framework",
    ),
    pytest.param(
        ["image", "build", "x2", "-r", "/nonexistent/requirements.txt"],
        2,
        "not found",
        id="missing requirements file",
    ),
    pytest.param(
        ["image", "build", "x3", "--pip", "numpy; touch /pwned"],
        2,
        "not a pip package name",
        id="shell metacharacters",
    ),
    pytest.param(
        ["image", "build", "x4", "--pip", "numpy\nRUN touch /pwned"],
        2,
        "not a pip package name",
        id="a newline adding an instruction",
    ),
    pytest.param(
        ["image", "build", "x5", "--apt", "git`id`"],
        2,
        "not a apt package name",
        id="backticks in an apt package",
    ),
    pytest.param(
        ["image", "build", "x6", "--from", "ds01-imgtest/nowhere:1"],
        1,
        "could not be pulled",
        id="a base image not here and not pullable",
    ),
    pytest.param(["image", "build", "Bad_Name"], 2, "invalid image name", id="a bad image name"),
    pytest.param(
        ["project", "init", "x7", "--framework", "caffe"],
        2,
        "unknown framework",
        id="project with an unknown framework",
    ),
    pytest.param(["project", "launch", "x8"], 2, "you have no project", id="launch of no project"),
]


@pytest.mark.parametrize(("args", "code", "message"), BAD_INPUT)
def test_bad_input_is_refused_and_changes_nothing(
    lab: Lab, args: list[str], code: int, message: str
) -> None:
    name = args[2]
    rc, out, err = lab.ds01(lab.alice, *args)
    assert rc == code, err + out
    assert message in err
    assert "Traceback" not in err
    home = lab.home(lab.alice)
    assert not (home / ".config/ds01/dockerfiles" / name).exists()
    assert not (home / "workspace" / name).exists()
    assert not lab.has_image(lab.ref(lab.alice, name.lower()))


def test_building_an_existing_name_is_refused_and_add_with_a_bad_package_changes_nothing(
    lab: Lab,
) -> None:
    ref = lab.ref(lab.alice, "thesis")
    image_id = lab.client.images.get(ref).id
    rc, _out, err = lab.ds01(lab.alice, "image", "build", "thesis")
    assert rc == 1
    assert "you already have an image 'thesis'" in err and "ds01 image add thesis" in err
    project = lab.home(lab.alice) / "workspace" / "thesis"
    dockerfile = (project / "Dockerfile").read_text()
    rc, _out, err = lab.ds01(lab.alice, "image", "add", "thesis", "ok", "bad;name")
    assert rc == 2
    assert (project / "Dockerfile").read_text() == dockerfile
    assert lab.client.images.get(ref).id == image_id
