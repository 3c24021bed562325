"""Engine against a real, private Docker engine (scripts/test-docker.sh): GPU pinning proved from
inside the container, limits in the engine and in the container's cgroup, owner labels, error
mapping, listing and events.

The private engine has a stand-in nvidia-container-runtime-hook on its PATH, so Docker accepts
DeviceRequests and hands the requested IDs to the container as NVIDIA_VISIBLE_DEVICES (BRIEF §5).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import docker
import pytest

from ds01.errors import NotFound, Refusal, RefusalReason, RuntimeUnavailable
from ds01.runtime import ContainerSpec, Engine

GPU = "GPU-5a3b1c2d-1111-2222-3333-444444444444"
MIG = "MIG-9e8d7c6b-5555-6666-7777-888888888888"
OWNER_SANITISED = "h_baker_hertie_school_lan_f9aae0b9"
ENV_ALL_IMAGE = "ds01-test/env-all:latest"

MakeSpec = Callable[..., ContainerSpec]
Cleanup = Callable[[str], str]


def run_to_exit(engine: Engine, spec: ContainerSpec, cleanup: Cleanup) -> tuple[int, str]:
    """Create and start the container, wait for it to exit; (exit code, its output)."""
    cid = cleanup(engine.create(spec))
    engine.start(cid)
    code = engine.wait(cid, timeout_s=60)
    assert code is not None, "container still running after 60 s"
    return code, b"".join(engine.logs(cid)).decode()


def sh(script: str) -> tuple[str, ...]:
    return ("sh", "-c", script)


@pytest.fixture(scope="session")
def env_all_image(
    docker_client: docker.DockerClient, tmp_path_factory: pytest.TempPathFactory
) -> str:
    """An image whose ENV says NVIDIA_VISIBLE_DEVICES=all, like CUDA base images (BRIEF §6.3)."""
    context = tmp_path_factory.mktemp("env-all")
    (context / "Dockerfile").write_text(
        "FROM ds01-test/busybox:latest\nENV NVIDIA_VISIBLE_DEVICES=all\n"
    )
    docker_client.images.build(path=str(context), tag=ENV_ALL_IMAGE, rm=True)
    return ENV_ALL_IMAGE


# -- GPU pinning, proved inside the container ---------------------------------------------


@pytest.mark.docker
def test_container_sees_exactly_its_units(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    spec = make_spec(
        name=short_name, gpu_uuids=(GPU, MIG), command=sh('echo "[$NVIDIA_VISIBLE_DEVICES]"')
    )
    assert run_to_exit(engine, spec, cleanup) == (0, f"[{GPU},{MIG}]\n")


@pytest.mark.docker
def test_image_env_all_cannot_widen_the_pin(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str, env_all_image: str
) -> None:
    spec = make_spec(
        name=short_name,
        image=env_all_image,
        gpu_uuids=(MIG,),
        command=sh('echo "[$NVIDIA_VISIBLE_DEVICES]"'),
    )
    assert run_to_exit(engine, spec, cleanup) == (0, f"[{MIG}]\n")


@pytest.mark.docker
def test_cpu_only_container_gets_void_even_from_an_image_that_says_all(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str, env_all_image: str
) -> None:
    spec = make_spec(
        name=short_name, image=env_all_image, command=sh('echo "[$NVIDIA_VISIBLE_DEVICES]"')
    )
    code, out = run_to_exit(engine, spec, cleanup)
    assert (code, out) == (0, "[void]\n")
    assert engine.inspect(spec.docker_name)["HostConfig"]["DeviceRequests"] in (None, [])


@pytest.mark.docker
def test_device_request_is_recorded_as_given(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    cid = cleanup(engine.create(make_spec(name=short_name, gpu_uuids=(GPU, MIG))))
    assert engine.inspect(cid)["HostConfig"]["DeviceRequests"] == [
        {
            "Driver": "nvidia",
            "Count": 0,
            "DeviceIDs": [GPU, MIG],
            "Capabilities": [["gpu"]],
            "Options": {},
        }
    ]


# -- limits, user, labels, cgroup ---------------------------------------------------------

# Prints the limits as the container's own cgroup sees them, on cgroup v2 or v1.
CGROUP_SCRIPT = r"""
if [ -f /sys/fs/cgroup/memory.max ]; then
    mem=$(cat /sys/fs/cgroup/memory.max); swap=$(cat /sys/fs/cgroup/memory.swap.max)
    pids=$(cat /sys/fs/cgroup/pids.max); cpu=$(cat /sys/fs/cgroup/cpu.max | tr ' ' /)
else
    mem=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)
    swap=$(( $(cat /sys/fs/cgroup/memory/memory.memsw.limit_in_bytes) - mem ))
    pids=$(cat /sys/fs/cgroup/pids/pids.max)
    cpu=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us)/$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
fi
shm=$(df -k /dev/shm | tail -n 1 | awk '{print $2}')
echo "mem=$mem swap=$swap pids=$pids cpu=$cpu shm_kib=$shm id=$(id -u):$(id -g)"
"""


@pytest.mark.docker
def test_limits_and_user_hold_inside_the_container(
    engine: Engine,
    make_spec: MakeSpec,
    make_limits: Callable[..., object],
    cleanup: Cleanup,
    short_name: str,
) -> None:
    lim = make_limits(cpus=0.5, memory_bytes=64 * 2**20, shm_bytes=16 * 2**20, pids=64)
    spec = make_spec(name=short_name, limits=lim, command=sh(CGROUP_SCRIPT))
    code, out = run_to_exit(engine, spec, cleanup)
    assert (code, out) == (
        0,
        "mem=67108864 swap=0 pids=64 cpu=50000/100000 shm_kib=16384 id=4242:4343\n",
    )
    host_config = engine.inspect(spec.docker_name)["HostConfig"]
    assert {
        k: host_config[k] for k in ("NanoCpus", "Memory", "MemorySwap", "ShmSize", "PidsLimit")
    } == {
        "NanoCpus": 500000000,
        "Memory": 67108864,
        "MemorySwap": 67108864,
        "ShmSize": 16777216,
        "PidsLimit": 64,
    }
    assert engine.inspect(spec.docker_name)["Config"]["User"] == "4242:4343"


@pytest.mark.docker
def test_container_runs_in_its_owners_cgroup(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    expected_parent = {
        "cgroupfs": f"/ds01/{OWNER_SANITISED}",
        "systemd": f"ds01-{OWNER_SANITISED}.slice",
    }[engine.info_cgroup_driver()]
    cid = cleanup(engine.create(make_spec(name=short_name, command=("sleep", "300"))))
    engine.start(cid)
    data = engine.inspect(cid)
    assert data["HostConfig"]["CgroupParent"] == expected_parent
    # Read from the host (tests run where the private engine runs): the process really sits
    # under the owner's node, whatever the container's cgroup namespace shows it.
    cgroups = Path(f"/proc/{data['State']['Pid']}/cgroup").read_text()
    if engine.info_cgroup_driver() == "cgroupfs":
        assert f"/ds01/{OWNER_SANITISED}/{cid}" in cgroups
    else:
        assert f"/ds01.slice/ds01-{OWNER_SANITISED}.slice/docker-{cid}.scope" in cgroups


@pytest.mark.docker
def test_ds01_labels_win_over_user_labels(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    spec = make_spec(
        name=short_name,
        allocation_id=17,
        labels={"ds01.owner": "mallory", "ds01.managed": "false", "project": "llm"},
    )
    cid = cleanup(engine.create(spec))
    labels = dict(engine.inspect(cid)["Config"]["Labels"])
    created = labels.pop("ds01.created")
    assert labels == {
        "project": "llm",
        "ds01.managed": "true",
        "ds01.owner": "h.baker@hertie-school.lan",
        "ds01.name": short_name,
        "ds01.allocation": "17",
    }
    assert created.endswith("+00:00")


# -- lifecycle and reading back -----------------------------------------------------------


@pytest.mark.docker
def test_start_restart_stop_remove(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    spec = make_spec(name=short_name, command=("sleep", "300"))
    cid = cleanup(engine.create(spec))
    assert engine.find(spec.docker_name)["State"]["Status"] == "created"  # type: ignore[index]
    engine.start(cid)
    engine.restart(cid, timeout_s=1)
    assert engine.inspect(cid)["State"]["Status"] == "running"
    engine.stop(cid, timeout_s=1)
    assert engine.inspect(cid)["State"]["Status"] == "exited"
    engine.remove(cid)
    assert engine.find(spec.docker_name) is None


@pytest.mark.docker
def test_wait_returns_none_while_the_container_runs(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    cid = cleanup(engine.create(make_spec(name=short_name, command=("sleep", "300"))))
    engine.start(cid)
    assert engine.wait(cid, timeout_s=1) is None
    assert engine.inspect(cid)["State"]["Status"] == "running"


@pytest.mark.docker
def test_an_event_stream_without_until_can_be_closed_from_another_thread(
    engine: Engine,
) -> None:
    # The daemon's reconcile loop blocks on this stream; shutting down must unblock it.
    stream = engine.events()
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.extend(stream), daemon=True)
    reader.start()
    stream.close()
    reader.join(timeout=30)
    assert not reader.is_alive()


@pytest.mark.docker
def test_logs_tail_and_both_streams(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    spec = make_spec(name=short_name, command=sh("echo one; echo two; echo oops >&2; echo three"))
    run_to_exit(engine, spec, cleanup)
    assert b"".join(engine.logs(spec.docker_name, tail=1)) in (b"three\n", b"oops\n")
    # stdout and stderr are separate pipes: their relative order is not guaranteed.
    lines = b"".join(engine.logs(spec.docker_name)).splitlines()
    assert [line for line in lines if line != b"oops"] == [b"one", b"two", b"three"]
    assert b"oops" in lines


@pytest.mark.docker
def test_list_managed_returns_only_ds01_containers(
    engine: Engine,
    docker_client: docker.DockerClient,
    make_spec: MakeSpec,
    cleanup: Cleanup,
    short_name: str,
) -> None:
    spec = make_spec(
        name=short_name, gpu_uuids=(GPU, MIG), allocation_id=17, command=("sleep", "300")
    )
    cid = cleanup(engine.create(spec))
    # Someone else's container claiming an owner but not created by ds01.
    stray = docker_client.containers.create(
        "ds01-test/busybox:latest", ["true"], labels={"ds01.owner": "h.baker@hertie-school.lan"}
    )
    cleanup(str(stray.id))

    infos = {i.id: i for i in engine.list_managed()}
    assert stray.id not in infos
    mine = infos[cid]
    assert (
        mine.name,
        mine.short_name,
        mine.owner,
        mine.allocation_id,
        mine.image,
        mine.state,
        mine.started_at,
        mine.gpu_device_ids,
        mine.gpu_unpinned,
    ) == (
        f"{OWNER_SANITISED}.{short_name}",
        short_name,
        "h.baker@hertie-school.lan",
        17,
        "ds01-test/busybox:latest",
        "created",
        None,
        (GPU, MIG),
        False,
    )
    assert mine.created is not None
    assert cid not in {i.id for i in engine.list_managed(all=False)}
    engine.start(cid)
    assert {i.id: i.state for i in engine.list_managed(all=False)}[cid] == "running"


@pytest.mark.docker
def test_events_report_die_and_destroy_of_managed_containers_only(
    engine: Engine,
    docker_client: docker.DockerClient,
    make_spec: MakeSpec,
    cleanup: Cleanup,
    short_name: str,
) -> None:
    since = int(time.time()) - 1
    spec = make_spec(name=short_name, command=("true",))
    cid = cleanup(engine.create(spec))
    engine.start(cid)
    assert engine.wait(cid, timeout_s=60) == 0
    engine.remove(cid)
    stray = docker_client.containers.run("ds01-test/busybox:latest", ["true"], detach=True)
    stray.wait(timeout=60)
    stray.remove()

    # `until` in the near future makes the engine end the stream by itself: no test timeout.
    with engine.events(
        since=since, until=int(time.time()) + 2, filters={"event": ["die", "destroy"]}
    ) as stream:
        events = list(stream)
    assert [e["Action"] for e in events if e.get("id") == cid] == ["die", "destroy"]
    assert not [e for e in events if e.get("id") == stray.id]
    assert all(e["Actor"]["Attributes"]["ds01.managed"] == "true" for e in events)


def read_until_eof(sock: socket.socket) -> bytes:
    sock.settimeout(60)  # a hung shell fails the test instead of hanging it
    out = bytearray()
    while chunk := sock.recv(4096):
        out += chunk
    return bytes(out)


@pytest.mark.docker
def test_shell_session_runs_as_the_given_user_and_reports_the_exit_code(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    cid = cleanup(engine.create(make_spec(name=short_name, command=("sleep", "300"))))
    engine.start(cid)
    with engine.exec_shell(
        cid, user="4242:4343", cmd=sh('echo "id=$(id -u):$(id -g) tty=$(tty)"; exit 3')
    ) as session:
        out = read_until_eof(session.sock)
        assert (out, session.exit_code()) == (b"id=4242:4343 tty=/dev/pts/0\r\n", 3)


@pytest.mark.docker
def test_shell_session_is_interactive(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    cid = cleanup(engine.create(make_spec(name=short_name, command=("sleep", "300"))))
    engine.start(cid)
    with engine.exec_shell(cid, user="4242:4343", cmd=("sh",)) as session:
        session.resize(40, 100)
        session.sock.sendall(b"stty size; echo $((6 * 7)); exit 5\n")
        out = read_until_eof(session.sock)
        assert b"40 100\r\n" in out and b"42\r\n" in out
        assert session.exit_code() == 5


@pytest.mark.docker
def test_shell_in_a_missing_container_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound):
        engine.exec_shell("nobody.nothing", user="1:1", cmd=("sh",))


@pytest.mark.docker
def test_commit_snapshots_the_containers_files(
    engine: Engine,
    docker_client: docker.DockerClient,
    make_spec: MakeSpec,
    cleanup: Cleanup,
    short_name: str,
) -> None:
    spec = make_spec(name=short_name, command=sh("echo kept > /tmp/state"))
    run_to_exit(engine, spec, cleanup)
    image_id = engine.commit(spec.docker_name, f"ds01-snapshot/{short_name}")
    after = make_spec(
        name=f"{short_name}-2", image=f"ds01-snapshot/{short_name}", command=sh("cat /tmp/state")
    )
    try:
        assert image_id.startswith("sha256:")
        assert run_to_exit(engine, after, cleanup) == (0, "kept\n")
    finally:
        # The snapshot image outlives containers: remove it here, its user first.
        with contextlib.suppress(NotFound):
            engine.remove(after.docker_name, force=True)
        docker_client.images.remove(image_id, force=True)


# -- errors mapped at the boundary --------------------------------------------------------


@pytest.mark.docker
def test_missing_image_is_refused_with_image_not_found(
    engine: Engine, make_spec: MakeSpec, short_name: str
) -> None:
    with pytest.raises(Refusal) as exc:
        engine.create(make_spec(name=short_name, image="ds01-test/not-built:1"))
    assert exc.value.reason is RefusalReason.IMAGE_NOT_FOUND
    assert isinstance(exc.value.__cause__, docker.errors.ImageNotFound)


@pytest.mark.docker
def test_pull_without_a_reachable_registry_is_refused_cleanly(engine: Engine) -> None:
    with pytest.raises(Refusal) as exc:
        engine.pull("registry.invalid/ds01/none:1")
    assert exc.value.reason is RefusalReason.IMAGE_NOT_FOUND


@pytest.mark.docker
def test_image_exists(engine: Engine) -> None:
    assert (
        engine.image_exists("ds01-test/busybox:latest"),
        engine.image_exists("ds01-test/no:1"),
    ) == (
        True,
        False,
    )


@pytest.mark.docker
def test_duplicate_name_is_refused_with_name_in_use(
    engine: Engine, make_spec: MakeSpec, cleanup: Cleanup, short_name: str
) -> None:
    cleanup(engine.create(make_spec(name=short_name)))
    with pytest.raises(Refusal) as exc:
        engine.create(make_spec(name=short_name))
    assert exc.value.reason is RefusalReason.NAME_IN_USE


@pytest.mark.docker
@pytest.mark.parametrize("op", ["inspect", "start", "stop", "restart", "remove", "logs"])
def test_missing_container_is_not_found(engine: Engine, op: str) -> None:
    with pytest.raises(NotFound):
        result = getattr(engine, op)("nobody.nothing")
        if isinstance(result, Iterator):
            list(result)


@pytest.mark.docker
def test_find_of_a_missing_name_is_none(engine: Engine) -> None:
    assert engine.find("nobody.nothing") is None


@pytest.fixture(params=["missing socket file", "socket nobody listens on"])
def dead_host(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    path = tmp_path / "docker.sock"
    if request.param == "socket nobody listens on":
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(path))
        s.close()  # the file stays; connecting to it is refused
    yield f"unix://{path}"


def test_engine_down_is_runtime_unavailable(dead_host: str, make_spec: MakeSpec) -> None:
    engine = Engine(dead_host, timeout_s=5)
    with pytest.raises(RuntimeUnavailable) as exc:
        engine.ping()
    err = exc.value
    # In a user's words: what failed, why in plain words, what to do; never the SDK's text.
    assert err.what == "cannot ping the Docker engine: the Docker engine is not reachable"
    assert err.why is not None and err.why.startswith("Docker is not running")
    assert err.fix is not None and "systemctl status docker" in err.fix
    shown = "\n".join(err.lines())
    for sdk_text in ("Error", "Connection aborted", "Errno", "urllib3", "HTTPConnection"):
        assert sdk_text not in shown
    assert err.__cause__ is not None  # the SDK's exception stays attached, for the log
    with pytest.raises(RuntimeUnavailable):
        engine.create(make_spec())
    with pytest.raises(RuntimeUnavailable):
        engine.list_managed()
