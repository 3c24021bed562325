"""Everyday Docker work through the gate, as a real user with real clients: the docker CLI
(run --rm, run -i with stdin half-close, run -it on a terminal, run -d + logs -f + exec -it +
attach + stop + rm, cp both ways, build with the legacy builder and with BuildKit, ps, events),
docker-compose (Debian's 1.29), and the Docker Python SDK. Whatever they print must arrive
unchanged: the gate streams bodies and hijacked connections byte for byte.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import docker
import pytest
from gate_support import (
    BIN,
    STOPPABLE,
    TEST_IMAGE,
    GateWorld,
    gate_world,
    need,
    run_as,
    unique,
    user_dir,
)

from support import run_in_pty, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]


@dataclass
class Everyday:
    w: GateWorld
    alice: str
    bob: str


@pytest.fixture(scope="module")
def day(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Everyday]:
    with gate_world(docker_host) as w:
        yield Everyday(w, w.user("alice"), w.user("bob"))


def test_run_rm_prints_output(day: Everyday) -> None:
    r = day.w.docker(day.alice, "run", "--rm", TEST_IMAGE, "echo", "hello from the gate")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hello from the gate\n"


def test_run_i_with_piped_stdin_ends_on_eof(day: Everyday) -> None:
    """`echo hi | docker run -i IMG cat`: the client's end of input must reach the container."""
    r = day.w.docker(day.alice, "run", "--rm", "-i", TEST_IMAGE, "cat", stdin="hi\n", timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "hi\n"


def test_run_i_carries_binary_data_exactly(day: Everyday) -> None:
    data = "".join(chr(32 + (i * 7919) % 90) for i in range(300_000)) + "\n"
    r = day.w.docker(day.alice, "run", "--rm", "-i", TEST_IMAGE, "md5sum", stdin=data)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == hashlib.md5(data.encode()).hexdigest()


def test_run_it_on_a_terminal(day: Everyday) -> None:
    rc, out = run_in_pty(
        day.alice,
        ["docker", "run", "--rm", "-it", TEST_IMAGE, "sh"],
        {"DOCKER_HOST": day.w.docker_host},
        steps=[(b"# ", b"echo sum=$((40+2))\r"), (b"sum=42", b"exit 3\r")],
    )
    assert "sum=42" in out, out
    assert rc == 3, out


def test_detached_logs_exec_attach_stop_rm(day: Everyday) -> None:
    w, alice = day.w, day.alice
    name = unique("life")
    script = 'trap "exit 0" TERM; i=0; while :; do i=$((i+1)); echo line-$i; sleep 0.2; done'
    r = w.docker(alice, "run", "-d", "--name", name, TEST_IMAGE, "sh", "-c", script)
    assert r.returncode == 0, r.stderr
    # logs -f streams live: stop following once a few lines came
    proc = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={_uid(alice)}",
            f"--regid={_gid(alice)}",
            "--init-groups",
            "docker",
            "logs",
            "-f",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DOCKER_HOST": w.docker_host,
            "HOME": os.path.expanduser(f"~{alice}"),
        },
    )
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(5)]
    proc.kill()
    proc.wait()
    assert lines == [f"line-{i}\n" for i in range(1, 6)]
    # exec -it on a terminal
    rc, out = run_in_pty(
        alice,
        ["docker", "exec", "-it", name, "sh"],
        {"DOCKER_HOST": w.docker_host},
        steps=[(b"# ", b"echo in-$((6*7))\r"), (b"in-42", b"exit\r")],
    )
    assert rc == 0 and "in-42" in out, out
    # attach (no stdin) sees the running output; stopping the container ends it
    attach = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={_uid(alice)}",
            f"--regid={_gid(alice)}",
            "--init-groups",
            "docker",
            "attach",
            "--no-stdin",
            name,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DOCKER_HOST": w.docker_host,
            "HOME": os.path.expanduser(f"~{alice}"),
        },
    )
    assert attach.stdout is not None
    assert attach.stdout.readline().startswith("line-")
    assert w.docker(alice, "stop", name).returncode == 0
    attach.wait(timeout=30)
    assert attach.returncode == 0
    r = w.docker(alice, "ps", "-a", "--filter", f"name={name}", "--format", "{{.Status}}")
    assert r.stdout.startswith("Exited (0)")
    assert w.docker(alice, "rm", name).returncode == 0
    assert name not in w.docker(alice, "ps", "-a", "--format", "{{.Names}}").stdout


def test_cp_both_ways(day: Everyday) -> None:
    w, alice = day.w, day.alice
    home = user_dir(alice, "cp")
    payload = os.urandom(3 * 1024 * 1024)
    src = os.path.join(home, "blob.bin")
    with open(src, "wb") as f:
        f.write(payload)
    os.chown(src, _uid(alice), _gid(alice))
    name = unique("cp")
    assert w.docker(alice, "run", "-d", "--name", name, TEST_IMAGE, *STOPPABLE).returncode == 0
    r = w.docker(alice, "cp", src, f"{name}:/tmp/blob.bin")
    assert r.returncode == 0, r.stderr
    r = w.docker(alice, "exec", name, "md5sum", "/tmp/blob.bin")
    assert r.stdout.split()[0] == hashlib.md5(payload).hexdigest()
    back = os.path.join(home, "back.bin")
    r = w.docker(alice, "cp", f"{name}:/tmp/blob.bin", back)
    assert r.returncode == 0, r.stderr
    with open(back, "rb") as f:
        assert f.read() == payload
    w.docker(alice, "rm", "-f", name)


def test_build_legacy_and_buildkit(day: Everyday, docker_client: docker.DockerClient) -> None:
    w, alice = day.w, day.alice
    ctx = user_dir(alice, "build")
    with open(os.path.join(ctx, "Dockerfile"), "w") as f:
        f.write(
            f"FROM {TEST_IMAGE}\nCOPY data.txt /data.txt\nRUN echo built >> /data.txt\n"
            'CMD ["cat", "/data.txt"]\n'
        )
    with open(os.path.join(ctx, "data.txt"), "w") as f:
        f.write("context\n")
    for p in ("Dockerfile", "data.txt"):
        os.chown(os.path.join(ctx, p), _uid(alice), _gid(alice))
    tag = f"ds01-gatetest/{alice}:legacy"
    r = w.docker(alice, "build", "-t", tag, ctx, env={"DOCKER_BUILDKIT": "0"})
    assert r.returncode == 0, r.stderr
    r = w.docker(alice, "run", "--rm", tag)
    assert r.stdout == "context\nbuilt\n", r.stderr
    # BuildKit (Debian's docker 20.10 client has it built in) is refused: its /session is
    # HTTP/2 the gate cannot check. That client prints only the upgrade's status.
    need(os.path.exists("/usr/bin/docker"), "Debian's docker.io client is not installed")
    r = w.docker(alice, "build", ctx, cli="/usr/bin/docker", env={"DOCKER_BUILDKIT": "1"})
    assert (r.returncode, r.stderr) == (
        1,
        "failed to dial gRPC: unable to upgrade to h2c, received 403\n",
    )
    # Without DOCKER_BUILDKIT it builds with the legacy builder (the gate's _ping says so).
    tag2 = f"ds01-gatetest/{alice}:default"
    r = w.docker(alice, "build", "-t", tag2, ctx, cli="/usr/bin/docker")
    assert r.returncode == 0, r.stderr
    r = w.docker(alice, "run", "--rm", tag2)
    assert r.stdout == "context\nbuilt\n", r.stderr
    for t in (tag, tag2):
        docker_client.images.remove(t, force=True)


def test_ps_and_events_show_only_ones_own(day: Everyday) -> None:
    w = day.w
    since = str(int(time.time()) - 1)
    mine, theirs = unique("mine"), unique("theirs")
    assert w.docker(day.alice, "run", "--name", mine, TEST_IMAGE, "true").returncode == 0
    assert w.docker(day.bob, "run", "--name", theirs, TEST_IMAGE, "true").returncode == 0
    seen = w.container_events(day.alice, since, str(int(time.time()) + 1))
    names = {name for name, _ in seen}
    assert mine in names and theirs not in names
    assert (mine, "start") in seen
    ps = w.docker(day.alice, "ps", "-a", "--format", "{{.Names}}").stdout.split()
    assert mine in ps and theirs not in ps
    assert w.docker(day.alice, "ps", "-a", "--filter", f"name={theirs}", "-q").stdout == ""
    w.docker(day.alice, "rm", mine)
    w.docker(day.bob, "rm", theirs)


COMPOSE = """\
version: "3.8"
services:
  web:
    image: {image}
    command: sh -c 'trap "exit 0" TERM; echo web up; while :; do sleep 1; done'
    volumes:
      - data:/data
  worker:
    image: {image}
    command: sh -c 'trap "exit 0" TERM; echo worker up; while :; do sleep 1; done'
    network_mode: none
volumes:
  data:
"""


def test_compose_up_and_down(day: Everyday, docker_client: docker.DockerClient) -> None:
    """Debian's docker-compose (1.29, Python) — a project network, a named volume, two
    services — all made through the gate and owned by the user."""
    compose = shutil.which("docker-compose")
    need(compose is not None, "docker-compose is not installed (apt-get install docker-compose)")
    assert compose is not None
    w, alice = day.w, day.alice
    proj = user_dir(alice, "proj")
    with open(os.path.join(proj, "docker-compose.yml"), "w") as f:
        f.write(COMPOSE.format(image=TEST_IMAGE))
    env = {"DOCKER_HOST": w.docker_host, "COMPOSE_PROJECT_NAME": unique("p")}
    r = run_as(alice, [compose, "up", "-d"], env=env, cwd=proj, timeout=180)
    assert r.returncode == 0, r.stderr
    project = env["COMPOSE_PROJECT_NAME"]
    running = {
        c.name: c
        for c in docker_client.containers.list(
            filters={"label": f"com.docker.compose.project={project}"}
        )
    }
    assert len(running) == 2
    assert {c.labels["ds01.owner"] for c in running.values()} == {alice}

    def both_logged() -> str | None:
        out = run_as(alice, [compose, "logs"], env=env, cwd=proj).stdout
        return out if "worker up" in out and "web up" in out else None

    logs = wait_for(both_logged, "both services to log")
    assert "worker up" in logs
    vols = docker_client.volumes.list(filters={"label": f"com.docker.compose.project={project}"})
    assert [v.attrs["Labels"]["ds01.owner"] for v in vols] == [alice]
    r = run_as(alice, [compose, "down", "-v"], env=env, cwd=proj, timeout=180)
    assert r.returncode == 0, r.stderr
    assert not docker_client.containers.list(
        all=True, filters={"label": f"com.docker.compose.project={project}"}
    )


SDK = """
import io, sys, tarfile, docker
c = docker.DockerClient(base_url=sys.argv[1], timeout=60)
img = sys.argv[2]
out = c.containers.run(img, ["echo", "sdk says hi"], remove=True)
print("run:", out.decode().strip())
k = c.containers.run(img, ["sh", "-c", "trap 'exit 0' TERM; echo ready; while :; do sleep 1; done"],
                     detach=True, name=sys.argv[3])
code, o = k.exec_run(["sh", "-c", "echo exec $((2+3))"])
print("exec:", code, o.decode().strip())
buf = io.BytesIO()
with tarfile.open(fileobj=buf, mode="w") as t:
    data = b"put by the sdk"
    info = tarfile.TarInfo("f.txt"); info.size = len(data)
    t.addfile(info, io.BytesIO(data))
print("put:", k.put_archive("/tmp", buf.getvalue()))
stream, _ = k.get_archive("/tmp/f.txt")
raw = b"".join(stream)
with tarfile.open(fileobj=io.BytesIO(raw)) as t:
    print("get:", t.extractfile("f.txt").read().decode())
print("list:", [x.name for x in c.containers.list()])
print("logs:", k.logs().decode().strip())
k.stop(timeout=5)
k.remove()
print("done")
"""


def test_python_sdk(day: Everyday) -> None:
    name = unique("sdk")
    r = run_as(day.alice, [str(BIN / "python"), "-c", SDK, day.w.docker_host, TEST_IMAGE, name])
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "run: sdk says hi",
        "exec: 0 exec 5",
        "put: True",
        "get: put by the sdk",
        f"list: ['{name}']",
        "logs: ready",
        "done",
    ]


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _gid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_gid


def test_a_name_can_be_reused_at_once(day: Everyday) -> None:
    """`docker run --rm --name X` again right after the last one ended: the old allocation is
    released even if Docker's destroy event has not been handled yet."""
    name = unique("again")
    for i in range(3):
        r = day.w.docker(day.bob, "run", "--rm", "--name", name, TEST_IMAGE, "echo", str(i))
        assert (r.returncode, r.stdout) == (0, f"{i}\n"), r.stderr


def test_live_events_and_stats_stream(day: Everyday, docker_client: docker.DockerClient) -> None:
    """`docker events` (following) shows one's own container starting as it happens; `docker
    stats` reads a live stats stream."""
    w, alice = day.w, day.alice
    name = unique("live")
    listeners = docker_client.info()["NEventsListener"]
    events = subprocess.Popen(
        [
            "setpriv",
            f"--reuid={_uid(alice)}",
            f"--regid={_gid(alice)}",
            "--init-groups",
            "docker",
            "events",
            "--filter",
            "type=container",
            "--filter",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={
            "PATH": "/usr/local/bin:/usr/bin:/bin",
            "DOCKER_HOST": w.docker_host,
            "HOME": os.path.expanduser(f"~{alice}"),
        },
    )
    try:
        # Subscribed once the engine counts one more event listener (the gate's stream).
        wait_for(
            lambda: docker_client.info()["NEventsListener"] > listeners,
            "`docker events` to subscribe through the gate",
        )
        r = w.docker(alice, "run", "-d", "--name", name, TEST_IMAGE, *STOPPABLE)
        assert r.returncode == 0, r.stderr
        assert events.stdout is not None
        assert events.stdout.readline().strip() == name
    finally:
        events.kill()
        events.wait()
    r = w.docker(alice, "stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == name
    w.docker(alice, "rm", "-f", name)
