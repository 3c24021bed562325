"""The escape catalogue: every way out of the gate's policy that the issue names, plus variants,
tried by a real user (mallory) with the real docker CLI or with raw HTTP on the gate socket —
each must be refused with the rule's message, and recorded as a `gate` audit event.

alice owns the things mallory reaches for: a running container (by name, ID and ID prefix), an
exec instance in it, a volume, a network, and an image her container runs on. Her container
must still be running, untouched, at the end.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import docker
import pytest
from gate_support import (
    STOPPABLE,
    TEST_IMAGE,
    Agent,
    GateWorld,
    as_user,
    chunked,
    gate_world,
    unique,
    user_dir,
)

from ds01.gate.refusal import RULES

pytestmark = [pytest.mark.docker, pytest.mark.root]

V = "/v1.41"


@dataclass
class Scene:
    w: GateWorld
    alice: str
    mallory: str
    fmt: dict[str, str]
    agent: Agent
    seen_rules: set[str]


@pytest.fixture(scope="module")
def scene(docker_host: str, docker_client: docker.DockerClient) -> Iterator[Scene]:
    with gate_world(docker_host) as w:
        alice, mallory = w.user("alice"), w.user("mallory")
        alice_home = os.path.expanduser(f"~{alice}")
        own = user_dir(mallory, "work")
        as_user(mallory, ["ln", "-s", "/etc", os.path.expanduser(f"~{mallory}/etclink")])
        as_user(mallory, ["sh", "-c", f"echo data > {own}/f.txt"])
        ctx_dir = user_dir(mallory, "ctx")
        as_user(mallory, ["sh", "-c", f"printf 'FROM {TEST_IMAGE}\\n' > {ctx_dir}/Dockerfile"])
        image = f"ds01-gatetest/alice-img:{unique('t')}"
        docker_client.images.get(TEST_IMAGE).tag(image)
        victim = unique("victim")
        r = w.docker(alice, "run", "-d", "--name", victim, image, *STOPPABLE)
        assert r.returncode == 0, r.stderr
        victim_id = r.stdout.strip()
        vol, net = unique("alicevol"), unique("alicenet")
        assert w.docker(alice, "volume", "create", vol).returncode == 0
        r = w.docker(alice, "network", "create", "--internal", net)
        assert r.returncode == 0, r.stderr
        alice_exec = docker_client.api.exec_create(victim_id, ["true"])["Id"]
        mine = unique("mine")
        r = w.docker(
            mallory, "run", "-d", "--name", mine, "-v", f"{own}:/w", TEST_IMAGE, *STOPPABLE
        )
        assert r.returncode == 0, r.stderr
        engine_sock = docker_host.removeprefix("unix://")
        fmt = {
            "alice": alice,
            "alice_home": alice_home,
            "victim": victim,
            "victim_id": victim_id,
            "victim_prefix": victim_id[:7],
            "alice_vol": vol,
            "alice_net": net,
            "alice_image": image,
            "alice_exec": alice_exec,
            "own": own,
            "mine": mine,
            "etclink": os.path.expanduser(f"~{mallory}/etclink"),
            "ctx": ctx_dir,
            "gate_sock": w.gate,
            "engine_sock": engine_sock,
            "image": TEST_IMAGE,
            # the name with its first letter percent-encoded (after the '%')
            "victim_hex": f"{ord(victim[0]):02x}{victim[1:]}",
        }
        with w.agent(mallory) as agent:
            yield Scene(w, alice, mallory, fmt, agent, set())
        for n in docker_client.networks.list(names=[net]):
            n.remove()
        docker_client.images.remove(image, force=True)


# ---- the catalogue -----------------------------------------------------------------------


@dataclass(frozen=True)
class Cli:
    args: tuple[str, ...]


@dataclass(frozen=True)
class Api:
    method: str
    path: str
    body: Any = None
    raw_body: bytes | None = None
    headers: tuple[tuple[str, str], ...] = ()


Attempt = Cli | Api | Callable[[Scene], Api]


def run(*opts: str) -> Cli:
    return Cli(("run", "--rm", *opts, "{image}", "true"))


def create(host_config: dict[str, Any] | None = None, **top: Any) -> Api:
    body: dict[str, Any] = {"Image": TEST_IMAGE, "Cmd": ["true"], **top}
    if host_config is not None:
        body["HostConfig"] = host_config
    return Api("POST", f"{V}/containers/create", body)


def chunked_privileged(scene: Scene) -> Api:
    data = json.dumps({"Image": TEST_IMAGE, "HostConfig": {"Privileged": True}}).encode()
    return Api(
        "POST",
        f"{V}/containers/create",
        raw_body=chunked(data),
        headers=(("Transfer-Encoding", "chunked"), ("Content-Type", "application/json")),
    )


def by_ref(method: str, template: str, body: Any = None) -> list[tuple[str, Attempt]]:
    return [
        (label, Api(method, template.replace("REF", "{" + key + "}"), body))
        for label, key in (("name", "victim"), ("id", "victim_id"), ("id prefix", "victim_prefix"))
    ]


CASES: list[tuple[str, Attempt, str, str]] = [
    # host privileges
    ("--privileged", run("--privileged"), "create.privileged", "--privileged was refused"),
    (
        "--cap-add SYS_ADMIN",
        run("--cap-add", "SYS_ADMIN"),
        "create.cap_add",
        "--cap-add SYS_ADMIN was refused",
    ),
    ("--cap-add ALL", run("--cap-add", "ALL"), "create.cap_add", "--cap-add ALL was refused"),
    (
        "--cap-add cap_net_admin (lower case, CAP_ prefix)",
        run("--cap-add", "cap_net_admin"),
        "create.cap_add",
        "--cap-add NET_ADMIN was refused",
    ),
    (
        "--security-opt seccomp=unconfined",
        run("--security-opt", "seccomp=unconfined"),
        "create.security_opt",
        "--security-opt seccomp=unconfined was refused",
    ),
    (
        "--security-opt apparmor=unconfined",
        run("--security-opt", "apparmor=unconfined"),
        "create.security_opt",
        "apparmor=unconfined was refused",
    ),
    (
        "--security-opt no-new-privileges=false",
        run("--security-opt", "no-new-privileges=false"),
        "create.security_opt",
        "no-new-privileges=false was refused",
    ),
    (
        "--security-opt label=disable",
        run("--security-opt", "label=disable"),
        "create.security_opt",
        "label=disable was refused",
    ),
    (
        "--security-opt systempaths=unconfined",
        run("--security-opt", "systempaths=unconfined"),
        "create.engine_setting",
        "systempaths=unconfined",
    ),
    ("--pid host", run("--pid", "host"), "create.namespace", "--pid host was refused"),
    ("--ipc host", run("--ipc", "host"), "create.namespace", "--ipc host was refused"),
    ("--uts host", run("--uts", "host"), "create.namespace", "--uts host was refused"),
    ("--userns host", run("--userns", "host"), "create.namespace", "--userns host was refused"),
    ("--network host", run("--network", "host"), "create.namespace", "--network host was refused"),
    (
        "--cgroupns host",
        run("--cgroupns", "host"),
        "create.namespace",
        "--cgroupns host was refused",
    ),
    (
        "--device /dev/nvidia0",
        run("--device", "/dev/nvidia0"),
        "create.devices",
        "--device /dev/nvidia0 was refused",
    ),
    (
        "--device-cgroup-rule",
        run("--device-cgroup-rule", "c 195:* rwm"),
        "create.devices",
        "--device-cgroup-rule c 195:* rwm was refused",
    ),
    (
        "--runtime nvidia",
        run("--runtime", "nvidia"),
        "create.runtime",
        "--runtime nvidia was refused",
    ),
    (
        "--cgroup-parent system.slice",
        run("--cgroup-parent", "system.slice"),
        "create.cgroup_parent",
        "--cgroup-parent system.slice was refused",
    ),
    (
        "--oom-kill-disable",
        run("--oom-kill-disable"),
        "create.engine_setting",
        "--oom-kill-disable was refused",
    ),
    (
        "--log-driver syslog",
        run("--log-driver", "syslog"),
        "create.engine_setting",
        "--log-driver syslog was refused",
    ),
    # GPUs and what ds01 sets
    ("--gpus all", run("--gpus", "all"), "gpu.all", "--gpus all was refused"),
    (
        "-e NVIDIA_VISIBLE_DEVICES=all",
        run("-e", "NVIDIA_VISIBLE_DEVICES=all"),
        "create.reserved_env",
        "-e NVIDIA_VISIBLE_DEVICES was refused",
    ),
    (
        "-e CUDA_VISIBLE_DEVICES=0",
        run("-e", "CUDA_VISIBLE_DEVICES=0"),
        "create.reserved_env",
        "-e CUDA_VISIBLE_DEVICES was refused",
    ),
    (
        "-e NVIDIA_DRIVER_CAPABILITIES with an undocumented capability",
        run("-e", "NVIDIA_DRIVER_CAPABILITIES=compute,mig-config"),
        "create.reserved_env",
        "-e NVIDIA_DRIVER_CAPABILITIES was refused: NVIDIA_DRIVER_CAPABILITIES=compute,mig-config"
        " is not a list of the documented driver capabilities",
    ),
    (
        "-e NVIDIA_MIG_CONFIG_DEVICES=all",
        run("-e", "NVIDIA_MIG_CONFIG_DEVICES=all"),
        "create.reserved_env",
        "-e NVIDIA_MIG_CONFIG_DEVICES was refused: NVIDIA_MIG_CONFIG_DEVICES is set by ds01",
    ),
    (
        "--label ds01.owner=another user",
        run("--label", "ds01.owner={alice}"),
        "create.reserved_label",
        "--label with label ds01.owner was refused",
    ),
    (
        "--label ds01.allocation=1",
        run("--label", "ds01.allocation=1"),
        "create.reserved_label",
        "label ds01.allocation was refused",
    ),
    # host paths
    ("-v /:/host", run("-v", "/:/host"), "create.mount_path", "you may not mount /"),
    (
        "a volume on NVIDIA's device-list path",
        run("-v", "/var/run/nvidia-container-devices/all"),
        "create.device_list_mount",
        "/var/run/nvidia-container-devices/all",
    ),
    (
        "a tmpfs on NVIDIA's device-list path",
        run("--tmpfs", "/run/nvidia-container-devices/GPU-0"),
        "create.device_list_mount",
        "/run/nvidia-container-devices/GPU-0",
    ),
    (
        "a bind of one's own dir onto NVIDIA's device-list path",
        run("-v", "{own}:/var/run/nvidia-container-devices/x/../all"),
        "create.device_list_mount",
        "/var/run/nvidia-container-devices/x/../all",
    ),
    ("-v /etc:/e", run("-v", "/etc:/e"), "create.mount_path", "you may not mount /etc"),
    ("-v /proc:/p", run("-v", "/proc:/p"), "create.mount_path", "you may not mount /proc"),
    ("-v /sys:/s", run("-v", "/sys:/s"), "create.mount_path", "you may not mount /sys"),
    ("-v /dev:/d", run("-v", "/dev:/d"), "create.mount_path", "you may not mount /dev"),
    (
        "-v /var/run/docker.sock:/s",
        run("-v", "/var/run/docker.sock:/s"),
        "create.mount_path",
        "you may not mount /var/run/docker.sock",
    ),
    (
        "-v the engine's socket",
        run("-v", "{engine_sock}:/s"),
        "create.mount_path",
        "you may not mount {engine_sock}",
    ),
    (
        "-v the gate's own socket",
        run("-v", "{gate_sock}:/s"),
        "create.mount_path",
        "you may not mount {gate_sock}",
    ),
    (
        "-v another user's home",
        run("-v", "{alice_home}:/h"),
        "create.mount_path",
        "you may not mount {alice_home}",
    ),
    (
        "-v a symlink the user made to /etc",
        run("-v", "{etclink}:/e"),
        "create.mount_path",
        "you may not mount {etclink} (resolves to /etc)",
    ),
    (
        "--mount type=bind,source=/etc",
        run("--mount", "type=bind,source=/etc,target=/e"),
        "create.mount_path",
        "you may not mount /etc",
    ),
    (
        "--mount bind-propagation=rshared",
        run("--mount", "type=bind,source={own},target=/w,bind-propagation=rshared"),
        "create.mount_option",
        "bind-propagation=rshared was refused",
    ),
    (
        "--mount a volume whose driver options bind /etc",
        run(
            "--mount",
            "type=volume,source=evil,target=/v,volume-opt=type=none,"
            "volume-opt=device=/etc,volume-opt=o=bind",
        ),
        "create.mount_option",
        "volume driver options",
    ),
    (
        "-v another user's volume",
        run("-v", "{alice_vol}:/v"),
        "create.volume_owner",
        "you may not mount volume",
    ),
    (
        "docker volume create binding /etc",
        Cli(
            (
                "volume",
                "create",
                "--opt",
                "type=none",
                "--opt",
                "device=/etc",
                "--opt",
                "o=bind",
                "evilvol",
            )
        ),
        "volume.driver",
        "a volume with driver local and options",
    ),
    # containers with host directories run as their owner
    (
        "--user 0 with a host directory",
        run("-u", "0", "-v", "{own}:/w"),
        "create.user",
        "--user 0 with host directories mounted was refused",
    ),
    (
        "--restart always with a host directory",
        Cli(("run", "-d", "--restart", "always", "-v", "{own}:/w", "{image}", "true")),
        "create.restart_policy",
        "--restart always with host directories mounted was refused",
    ),
    (
        "exec -u 0 into a container with a host directory",
        Cli(("exec", "-u", "0", "{mine}", "true")),
        "exec.user",
        "docker exec --user 0",
    ),
    (
        "docker cp into a container with a host directory (the archive PUT)",
        Api("PUT", f"{V}/containers/{{mine}}/archive?path=/tmp", raw_body=b"\0" * 1024),
        "container.archive_put",
        "copying into container",
    ),
    (
        "exec --privileged into one's own container",
        Cli(("exec", "--privileged", "{mine}", "true")),
        "exec.privileged",
        "docker exec --privileged",
    ),
    # ports, limits
    ("-p 80:80", run("-p", "80:80"), "create.port", "-p 80:80/tcp was refused"),
    (
        "--cpus 8 (limit 1)",
        run("--cpus", "8"),
        "create.limit",
        "--cpus 8 is above your limit of 1 CPUs",
    ),
    (
        "--memory 4g (limit 512m)",
        run("--memory", "4g"),
        "create.limit",
        "--memory 4g is above your limit of 512m",
    ),
    (
        "--shm-size 1g (limit 64m)",
        run("--shm-size", "1g"),
        "create.limit",
        "--shm-size 1g is above your limit of 64m",
    ),
    (
        "--pids-limit 100000 (limit 500)",
        run("--pids-limit", "100000"),
        "create.limit",
        "--pids-limit 100000 is above your limit of 500",
    ),
    # other users' containers, networks, images, volumes
    (
        "--volumes-from another user's container",
        run("--volumes-from", "{victim}"),
        "create.container_ref",
        "--volumes-from {victim} was refused",
    ),
    (
        "--pid container:another user's",
        run("--pid", "container:{victim}"),
        "create.container_ref",
        "--pid container: {victim} was refused",
    ),
    (
        "--network container:another user's",
        run("--network", "container:{victim}"),
        "create.container_ref",
        "--network container: {victim} was refused",
    ),
    (
        "--network another user's network",
        run("--network", "{alice_net}"),
        "create.network",
        "you may not use network",
    ),
    (
        "docker exec into another user's container",
        Cli(("exec", "{victim}", "true")),
        "container.not_owner",
        "you have no container named",
    ),
    (
        "docker stop another user's container by ID",
        Cli(("stop", "{victim_id}")),
        "container.not_owner",
        "you may not stop container",
    ),
    (
        "docker rm -f another user's container by ID prefix",
        Cli(("rm", "-f", "{victim_prefix}")),
        "container.not_owner",
        "you may not remove container",
    ),
    (
        "docker logs another user's container",
        Cli(("logs", "{victim}")),
        "container.not_owner",
        "you have no container named",
    ),
    (
        "docker rmi an image another user's container uses",
        Cli(("rmi", "-f", "{alice_image}")),
        "image.in_use",
        "another user's container uses it",
    ),
    (
        "docker volume rm another user's volume",
        Cli(("volume", "rm", "{alice_vol}")),
        "volume.not_owner",
        "you may not remove volume",
    ),
    (
        "docker network rm another user's network",
        Cli(("network", "rm", "{alice_net}")),
        "network.not_owner",
        "you may not remove network",
    ),
    (
        "docker network create -d macvlan",
        Cli(("network", "create", "-d", "macvlan", "-o", "parent=lo", "evilnet")),
        "network.driver",
        "a network with driver macvlan",
    ),
    # engine-wide
    (
        "docker plugin ls",
        Cli(("plugin", "ls")),
        "endpoint.admin_only",
        "GET /plugins is for admins",
    ),
    (
        "docker swarm init",
        Cli(("swarm", "init")),
        "endpoint.admin_only",
        "POST /swarm/init is for admins",
    ),
    (
        "docker build --network host",
        Cli(("build", "--network", "host", "-q", "{ctx}")),
        "build.option",
        "docker build with networkmode=host was refused",
    ),
    (
        "docker import from a URL",
        Cli(("import", "http://169.254.169.254/x", "stolen")),
        "image.import_url",
        "importing an image from",
    ),
    (
        "docker image prune -a",
        Cli(("image", "prune", "-a", "-f")),
        "image.prune_all",
        "pruning all unused images was refused",
    ),
    # raw API: bodies and framing
    (
        "create with an empty body",
        Api("POST", f"{V}/containers/create", raw_body=b""),
        "body.empty",
        "container create with an empty body was refused",
    ),
    (
        "create with a body that is not JSON",
        Api("POST", f"{V}/containers/create", raw_body=b'{"Image": '),
        "body.unparsable",
        "the body is not valid JSON",
    ),
    (
        "create with Transfer-Encoding: chunked asking for privileged",
        chunked_privileged,
        "create.privileged",
        "--privileged was refused",
    ),
    (
        "create with 'privileged' in lower case",
        create({"privileged": True}),
        "create.privileged",
        "--privileged was refused",
    ),
    (
        "create with Binds spelled with a long s (Go folds it)",
        create({"Bind\u017f": ["/etc:/e"]}),
        "create.mount_path",
        "you may not mount /etc",
    ),
    (
        "create with Privileged twice in different case",
        Api(
            "POST",
            f"{V}/containers/create",
            raw_body=b'{"Image":"x","HostConfig":{"Privileged":false,"PRIVILEGED":true}}',
        ),
        "body.unparsable",
        "appears twice",
    ),
    (
        "create with HostConfig fields at the top level (old API form)",
        create(None, Privileged=True),
        "create.unknown_field",
        "the field Privileged",
    ),
    (
        "create with a percent-encoded path",
        Api(
            "POST",
            f"{V}/containers/%63reate",
            {"Image": TEST_IMAGE, "HostConfig": {"Privileged": True}},
        ),
        "create.privileged",
        "--privileged was refused",
    ),
    (
        "create without a version prefix",
        Api(
            "POST",
            "/containers/create",
            {"Image": TEST_IMAGE, "HostConfig": {"CapAdd": ["SYS_ADMIN"]}},
        ),
        "create.cap_add",
        "--cap-add SYS_ADMIN was refused",
    ),
    (
        "create with a body over 1 MiB",
        create(None, Labels={"pad": "x" * (1024 * 1024 + 10)}),
        "body.too_large",
        "was refused (the limit is",
    ),
    (
        "create with an unknown HostConfig field",
        create({"Capabilities": ["CAP_SYS_ADMIN"]}),
        "create.cap_add",
        "setting the capability set was refused",
    ),
    (
        "create with MaskedPaths emptied",
        create({"MaskedPaths": []}),
        "create.engine_setting",
        "MaskedPaths",
    ),
    *[
        (
            f"inspect another user's container by {label}",
            a,
            "container.not_owner",
            "you may not inspect container",
        )
        for label, a in by_ref("GET", f"{V}/containers/REF/json")
    ],
    *[
        (
            f"exec create in another user's container by {label}",
            a,
            "container.not_owner",
            "you may not run commands in container",
        )
        for label, a in by_ref("POST", f"{V}/containers/REF/exec", {"Cmd": ["id"]})
    ],
    *[
        (
            f"stop another user's container by {label}",
            a,
            "container.not_owner",
            "you may not stop container",
        )
        for label, a in by_ref("POST", f"{V}/containers/REF/stop")
    ],
    *[
        (
            f"logs of another user's container by {label}",
            a,
            "container.not_owner",
            "you may not read the logs of container",
        )
        for label, a in by_ref("GET", f"{V}/containers/REF/logs?stdout=1")
    ],
    (
        "attach (hijack) to another user's container",
        Api(
            "POST",
            f"{V}/containers/{{victim}}/attach?stream=1&stdout=1",
            headers=(("Connection", "Upgrade"), ("Upgrade", "tcp")),
        ),
        "container.not_owner",
        "you may not attach to container",
    ),
    (
        "start another user's exec instance",
        Api("POST", f"{V}/exec/{{alice_exec}}/start", {"Detach": False}),
        "container.not_owner",
        "you may not run commands in container",
    ),
    (
        "commit another user's container",
        Api("POST", f"{V}/commit?container={{victim}}"),
        "container.not_owner",
        "you may not commit container",
    ),
    (
        "export another user's container",
        Api("GET", f"{V}/containers/{{victim_prefix}}/export"),
        "container.not_owner",
        "you may not export container",
    ),
    (
        "percent-encoded name of another user's container",
        Api("GET", f"{V}/containers/%{{victim_hex}}/json"),
        "container.not_owner",
        "you may not inspect container",
    ),
    (
        "prune with filters in a form body",
        Api(
            "POST",
            f"{V}/containers/prune",
            raw_body=b"filters=%7B%7D",
            headers=(("Content-Type", "application/x-www-form-urlencoded"),),
        ),
        "request.form_body",
        "application/x-www-form-urlencoded body was refused",
    ),
    (
        "an endpoint the gate does not know",
        Api("GET", f"{V}/debug/pprof/heap"),
        "endpoint.unknown",
        "GET /debug/pprof/heap is not a Docker API call the ds01 gate allows",
    ),
    (
        "GET /secrets",
        Api("GET", f"{V}/secrets"),
        "endpoint.admin_only",
        "GET /secrets is for admins",
    ),
    (
        "Connection: Upgrade on a plain request",
        Api("GET", f"{V}/containers/json", headers=(("Connection", "Upgrade"), ("Upgrade", "h2c"))),
        "request.upgrade",
        "with Connection: Upgrade was refused",
    ),
    (
        "the filters parameter twice",
        Api("GET", f"{V}/containers/json?filters=%7B%7D&filters=%7B%7D"),
        "request.query",
        "the filters parameter was sent more than once",
    ),
]


def _fill(text: str, fmt: dict[str, str]) -> str:
    return text.format(**fmt)


@pytest.mark.parametrize(
    ("attempt", "rule", "fragment"),
    [pytest.param(a, r, f, id=name) for name, a, r, f in CASES],
)
def test_escape_is_refused(scene: Scene, attempt: Attempt, rule: str, fragment: str) -> None:
    fmt = scene.fmt
    expected = _fill(fragment, fmt)
    # Mount and quota refusals carry the shared check's own why/fix (the same text as
    # `ds01 container deploy`); every other rule carries the table's.
    why = "" if rule in ("create.mount_path", "gpu.quota") else RULES[rule].why
    if isinstance(attempt, Cli):
        args = [_fill(a, fmt) for a in attempt.args]
        r = scene.w.docker(scene.mallory, *args)
        assert r.returncode != 0, f"docker {' '.join(args)} was not refused:\n{r.stdout}"
        assert f"ds01: {expected}" in r.stderr or expected in r.stderr, r.stderr
        assert why[:60] in " ".join(r.stderr.split()), r.stderr
    else:
        api = attempt(scene) if callable(attempt) else attempt
        reply = scene.agent.request(
            api.method,
            _fill(api.path, fmt),
            api.body,
            raw_body=api.raw_body,
            headers={k: v for k, v in api.headers},
        )
        assert reply.status == RULES[rule].status, (reply.status, reply.message)
        assert reply.message.startswith("ds01: "), reply.message
        assert expected in reply.message, reply.message
        assert why in reply.message
    scene.seen_rules.add(rule)


def test_catalogue_has_at_least_forty_attempts() -> None:
    assert len(CASES) >= 40
    assert len({name for name, *_ in CASES}) == len(CASES)


def test_every_refusal_was_audited(scene: Scene) -> None:
    """`ds01 events --kind gate` shows mallory's refusals to mallory (with the rule as reason),
    and nothing of hers to alice."""
    wanted = set(scene.seen_rules)
    if not wanted:
        pytest.skip("no catalogue case ran in this session")
    r = scene.w.d.cli("events", "--kind", "gate", "--json", "--limit", "10000", user=scene.mallory)
    assert r.returncode == 0, r.stderr
    evs = json.loads(r.stdout)
    assert wanted - {e["reason"] for e in evs} == set()
    assert all(e["user"] == scene.mallory and e["kind"] == "gate" for e in evs)
    assert any(
        e["reason"] == "create.privileged" and "POST /containers/create" in e["message"]
        for e in evs
    )
    r = scene.w.d.cli("events", "--kind", "gate", "--json", user=scene.alice)
    assert json.loads(r.stdout) == []


def test_victim_is_untouched(scene: Scene, docker_client: docker.DockerClient) -> None:
    c = docker_client.containers.get(scene.fmt["victim_id"])
    assert c.status == "running"
    assert c.labels["ds01.owner"] == scene.alice
    r = scene.w.docker(scene.alice, "ps", "--format", "{{.Names}}")
    assert scene.fmt["victim"] in r.stdout.split()
    # mallory's list shows only her own container
    r = scene.w.docker(scene.mallory, "ps", "-a", "--format", "{{.Names}}")
    assert r.stdout.split() == [scene.fmt["mine"]]


def test_mounted_directory_swapped_for_a_symlink_is_refused_at_start(scene: Scene) -> None:
    """Checked at create, and again at every start the gate forwards: the engine resolves the
    path anew each time."""
    w, mallory = scene.w, scene.mallory
    swap = user_dir(mallory, "swap")
    name = unique("swapped")
    r = w.docker(mallory, "create", "--name", name, "-v", f"{swap}:/w", TEST_IMAGE, "true")
    assert r.returncode == 0, r.stderr
    as_user(mallory, ["sh", "-c", f"rmdir {swap} && ln -s /etc {swap}"])
    r = w.docker(mallory, "start", name)
    assert r.returncode != 0
    assert f"ds01: starting container {name!r} was refused: it mounts {swap}: " in r.stderr
    assert f"you may not mount {swap} (resolves to /etc)" in r.stderr
    w.docker(mallory, "rm", name)
