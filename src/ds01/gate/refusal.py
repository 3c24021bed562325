"""Every refusal the gate gives, in one table, and how it is rendered.

Owns the rule ids (``create.privileged``, ``container.not_owner``, …), the RefusalReason each
maps to, the HTTP status, and the "why" and "instead" texts. A policy module raises
``GateRefusal(rule_id, what)``; the server renders it as ``403 {"message": "..."}``, which the
docker CLI prints as ``Error response from daemon: <message>``, and records it as a ``gate``
audit event. The message has the shape of every ds01 error: what was refused, why, what to do.

docs/gate.md lists every rule here (a test keeps the two in step). Must not decide anything.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from typing import Final

from ds01.errors import Ds01Error, Refusal, RefusalReason

R = RefusalReason


@dataclass(frozen=True)
class Rule:
    id: str
    reason: RefusalReason
    why: str
    instead: str
    status: int = 403


_RULES: tuple[Rule, ...] = (
    # ---- endpoints ------------------------------------------------------------------------
    Rule(
        "endpoint.unknown",
        R.ENDPOINT_NOT_ALLOWED,
        "The ds01 gate forwards only the Docker API calls it has rules for; anything else is "
        "refused so that nothing unchecked reaches the engine.",
        "If a tool you rely on needs this call, tell an admin (ds01 events --kind gate shows "
        "what was refused).",
    ),
    Rule(
        "endpoint.admin_only",
        R.ADMIN_ONLY,
        "Swarm, nodes, services, secrets, configs, plugins, distribution and whole-engine "
        "reports act on the engine every user shares.",
        "Ask a lab admin.",
    ),
    Rule(
        "request.form_body",
        R.BAD_REQUEST,
        "The engine would read form fields from the body and let them override the query the "
        "gate checked.",
        "Send parameters in the URL query, as the docker CLI and SDKs do.",
    ),
    Rule(
        "request.upgrade",
        R.BAD_REQUEST,
        "Only attach, exec and BuildKit sessions switch a connection to a raw stream.",
        "Drop the Connection: Upgrade header.",
    ),
    Rule(
        "request.query",
        R.BAD_REQUEST,
        "The gate must read the same parameters the engine will read; repeated or unreadable "
        "parameters could be read differently.",
        "Send each parameter once, with valid JSON for filters.",
    ),
    Rule(
        "request.api_version",
        R.BAD_REQUEST,
        "Old Docker API versions read requests differently: below 1.24 a start request may "
        "carry host settings (mounts, host namespaces, --privileged) that the gate never sees.",
        "Use a current docker CLI or SDK (they negotiate the version themselves), or send "
        "/v1.41/… requests.",
    ),
    Rule(
        "body.not_allowed",
        R.BAD_REQUEST,
        "This call takes no request body; old API versions read container settings from one, "
        "so the gate refuses any body it would not be able to check.",
        "Send the request without a body (the docker CLI and SDKs do).",
    ),
    Rule(
        "body.empty",
        R.BAD_REQUEST,
        "The gate checks every container, exec and volume/network request before the engine "
        "sees it; an empty or missing body cannot be checked.",
        "Send the request as JSON (the docker CLI and SDKs do).",
    ),
    Rule(
        "body.unparsable",
        R.BAD_REQUEST,
        "A body the gate cannot read exactly as the engine would is not forwarded.",
        "Send one JSON object, UTF-8, each key once.",
    ),
    Rule(
        "body.too_large",
        R.BAD_REQUEST,
        "Bodies the gate checks are read into memory first, so their size is capped.",
        "Send a smaller request; image build contexts and archives are not limited.",
        status=413,
    ),
    # ---- container create -----------------------------------------------------------------
    Rule(
        "create.unknown_field",
        R.POLICY,
        "The gate forwards only fields it knows the meaning of; an unknown field could grant "
        "something the gate never checked.",
        "Drop the field, or ask an admin to add a rule for it.",
    ),
    Rule(
        "create.privileged",
        R.HOST_PRIVILEGE,
        "A privileged container has every device and capability of the host: it can take "
        "over the machine and every user's GPUs.",
        "Run without --privileged. To see GPU processes, use 'ds01 gpu status'; for a specific "
        "need, ask an admin.",
    ),
    Rule(
        "create.cap_add",
        R.HOST_PRIVILEGE,
        "Added capabilities (SYS_ADMIN, NET_ADMIN, SYS_PTRACE, …) let a container act on the "
        "host kernel beyond its own processes.",
        "Run without --cap-add, or ask an admin to allow the one capability you need.",
    ),
    Rule(
        "create.security_opt",
        R.HOST_PRIVILEGE,
        "seccomp, AppArmor and SELinux profiles and no-new-privileges are what keep a container's "
        "root from the host kernel.",
        "Drop --security-opt (only no-new-privileges=true is accepted).",
    ),
    Rule(
        "create.namespace",
        R.HOST_PRIVILEGE,
        "Sharing a host namespace (pid, ipc, uts, userns, network, cgroup) exposes other users' "
        "processes, traffic and resources to the container.",
        "Drop the --pid/--ipc/--uts/--userns/--network/--cgroupns=host option. To see your GPU "
        "processes use 'ds01 gpu status'; to publish a port use -p PORT:PORT.",
    ),
    Rule(
        "create.devices",
        R.HOST_PRIVILEGE,
        "Host devices bypass ds01's GPU allocation (a /dev/nvidia* node is a GPU nobody "
        "allocated to you) and the device cgroup.",
        "Ask for GPUs with --gpus N (ds01 pins the units it allocates); for other devices ask "
        "an admin.",
    ),
    Rule(
        "create.runtime",
        R.HOST_PRIVILEGE,
        "Another runtime (e.g. nvidia) can inject every GPU of the host regardless of ds01's "
        "allocation.",
        "Drop --runtime; ask for GPUs with --gpus N.",
    ),
    Rule(
        "create.cgroup_parent",
        R.RESERVED_SETTING,
        "ds01 places every container under its owner's cgroup, where per-user accounting and "
        "limits apply.",
        "Drop --cgroup-parent.",
    ),
    Rule(
        "create.reserved_env",
        R.RESERVED_SETTING,
        "ds01 pins each container to the GPUs allocated to it; these variables would select "
        "others.",
        "Drop them; ask for GPUs with --gpus N (ds01 sets the variables for you).",
    ),
    Rule(
        "create.reserved_label",
        R.RESERVED_SETTING,
        "Labels under ds01. name the owner and the allocation; ds01 sets them from your "
        "identity, so no label can claim another owner.",
        "Drop the ds01.* labels; use your own prefix for your labels.",
    ),
    Rule(
        "create.mount_path",
        R.PATH_NOT_ALLOWED,
        "Only directories you own, or shared paths the admin listed, can be mounted; system "
        "paths and other users' homes never.",
        "Mount a directory in your home, or ask an admin to share this one.",
    ),
    Rule(
        "create.device_list_mount",
        R.RESERVED_SETTING,
        "NVIDIA's runtime reads a container's GPU list from mounts under "
        "/var/run/nvidia-container-devices; only ds01 puts the allocated GPUs there.",
        "Mount somewhere else; ask for GPUs with --gpus N.",
    ),
    Rule(
        "create.mount_missing",
        R.BAD_REQUEST,
        "Docker would create a missing host path as root.",
        "Create it first (mkdir -p), then try again.",
    ),
    Rule(
        "create.mount_option",
        R.POLICY,
        "Mount options that propagate mounts to the host, or volume driver options (which can "
        "bind any host path), are outside what a container needs.",
        "Use plain -v SRC:DST[:ro] or --mount type=bind|volume|tmpfs without driver options.",
    ),
    Rule(
        "create.volume_owner",
        R.NOT_OWNER,
        "Volumes belong to the user who made them.",
        "Use one of your volumes ('docker volume ls') or pick another name.",
    ),
    Rule(
        "create.user",
        R.POLICY,
        "Processes that write into a mounted host directory run as you: a root process could "
        "leave set-uid files in your home.",
        "Run as yourself: --user $(id -u):$(id -g), or leave --user out and the gate sets it.",
    ),
    Rule(
        "create.restart_policy",
        R.POLICY,
        "The gate checks mounted host directories each time a container starts; the engine "
        "would restart it on its own without that check.",
        "Drop --restart for containers with host directories (a named volume has no such limit).",
    ),
    Rule(
        "create.engine_setting",
        R.HOST_PRIVILEGE,
        "This setting changes how the engine isolates the container (masked /proc paths, "
        "annotations, storage and log drivers, real-time scheduling, OOM protection).",
        "Drop the option; if you really need it, ask an admin.",
    ),
    Rule(
        "create.port",
        R.POLICY,
        "Host ports below 1024 are for system services.",
        "Publish on a port of 1024 or above, e.g. -p 8888:8888.",
    ),
    Rule(
        "create.limit",
        R.POLICY,
        "Each user's containers get at most the CPUs, memory, shared memory and processes "
        "their ds01 limits allow.",
        "Ask for less (see 'ds01 quota'), or leave the option out to get your limit.",
    ),
    Rule(
        "create.container_ref",
        R.NOT_OWNER,
        "Joining another container's namespaces, volumes or links reaches into it; only your "
        "own containers can be used this way.",
        "Name one of your own containers.",
    ),
    Rule(
        "create.network",
        R.NOT_OWNER,
        "Networks belong to the user who made them.",
        "Use one of your networks ('docker network ls'), bridge, or none.",
    ),
    Rule(
        "create.name_reserved",
        R.NOT_OWNER,
        "Container names '<user>.<name>' are the names 'ds01 container deploy' gives that "
        "user's containers; taking one would block their deploy.",
        "Pick a name without a '.', or start it with your own user name and a '.'.",
    ),
    # ---- GPUs -----------------------------------------------------------------------------
    Rule(
        "gpu.all",
        R.POLICY,
        "GPUs are shared: ds01 gives each container the units allocated to it, never all of them.",
        "Ask for a number: --gpus 1 (or 2, up to your limit; see 'ds01 quota').",
    ),
    Rule(
        "gpu.request",
        R.BAD_REQUEST,
        "The gate turns one GPU request into an allocation; this one it cannot read as whole "
        "GPUs or units.",
        "Use --gpus N, or --gpus '\"device=UUID,…\"' with UUIDs from 'ds01 gpu status'.",
    ),
    Rule(
        "gpu.device_unavailable",
        R.NO_CAPACITY,
        "A specific unit is given only when it is free and within your quota.",
        "Ask for a number instead (--gpus N), or pick a free unit from 'ds01 gpu status'.",
    ),
    Rule(
        "gpu.quota",
        R.MAX_GPUEQ,
        "The scheduler's quota and capacity rules apply to containers made through the gate "
        "exactly as to 'ds01 container deploy' (the message carries the scheduler's own text).",
        "Do what the scheduler's message says; 'ds01 quota' shows what you hold.",
    ),
    Rule(
        "gpu.queue_limit",
        R.POLICY,
        "With gate.queue: wait, a create that no free GPU can meet waits in ds01's queue; "
        "queue.max_per_user bounds the waiting requests of each user (deploys and docker "
        "creates together), and one container name waits once.",
        "Wait for one to start, or cancel one: 'ds01 queue', 'ds01 queue cancel ID'.",
    ),
    Rule(
        "gpu.queue_ended",
        R.NO_CAPACITY,
        "The create waited in ds01's queue and its entry ended before GPUs freed up: "
        "cancelled, expired after queue.max_wait, or it can no longer start.",
        "Run it again when GPUs are free ('ds01 gpu status'); 'ds01 queue' shows how it ended.",
    ),
    Rule(
        "container.reallocate",
        R.NO_CAPACITY,
        "The container's GPUs were released while it was stopped and are now in use elsewhere; "
        "a container's GPUs cannot change after it is created.",
        "Remove it and run it again (docker rm NAME; docker run --gpus N …).",
    ),
    # ---- existing containers --------------------------------------------------------------
    Rule(
        "container.not_owner",
        R.NOT_OWNER,
        "Containers belong to the user who created them; only they (and admins) may inspect, "
        "run commands in, stop or remove them.",
        "Use your own containers ('docker ps -a' lists them).",
    ),
    Rule(
        "container.archive_put",
        R.POLICY,
        "Files copied in by the engine are written as root, also into mounted host directories "
        "(a set-uid file there would work on the host).",
        "Copy the file into the mounted directory on the host instead (cp FILE ~/…).",
    ),
    Rule(
        "container.archive_get",
        R.POLICY,
        "For docker cp and export the engine mounts the container's host directories again, as "
        "root, following whatever the host path is by then (a symlink swapped in since could "
        "point anywhere).",
        "Copy from the mounted directory on the host, or stream files out with docker exec "
        "(docker exec NAME tar -C /dir -c . | tar -x).",
    ),
    Rule(
        "container.update",
        R.POLICY,
        "Only CPU, memory, process limits within your ds01 limits and the restart policy can be "
        "changed on a running container.",
        "Update within 'ds01 quota', or remove the container and run it again.",
    ),
    Rule(
        "container.invariant",
        R.HOST_PRIVILEGE,
        "ds01 checks every container as the engine stored it before it runs: no host "
        "privileges, devices or namespaces, only your own host paths (run as you), your limits, "
        "and exactly your allocated GPUs. This one breaks that (a created one is removed again).",
        "Run it without what the message names; 'ds01 quota' shows your limits. If ds01 made "
        "it this way, tell an admin.",
    ),
    Rule(
        "create.shm_tmpfs",
        R.POLICY,
        "A tmpfs over /dev/shm would bypass the shared-memory limit.",
        "Use --shm-size within your limit ('ds01 quota').",
    ),
    Rule(
        "exec.privileged",
        R.HOST_PRIVILEGE,
        "A privileged exec has every capability of the host.",
        "Run docker exec without --privileged.",
    ),
    Rule(
        "exec.user",
        R.POLICY,
        "In a container with a mounted host directory, commands run as you (root could leave "
        "set-uid files in your home).",
        "Drop --user, or use --user $(id -u):$(id -g).",
    ),
    # ---- images, volumes, networks --------------------------------------------------------
    Rule(
        "image.in_use",
        R.NOT_OWNER,
        "Another user's container runs on this image; removing it would break their work.",
        "Remove only images your own containers use; 'docker ps -a' shows yours.",
    ),
    Rule(
        "image.not_owner",
        R.NOT_OWNER,
        "Images a user builds, commits, imports or loads are theirs alone: they can hold that "
        "user's files and secrets (an ENV HF_TOKEN=…).",
        "Use your own images or shared ones ('docker images' lists those you may use); to share "
        "an image, ask an admin to tag it.",
    ),
    Rule(
        "image.tag_not_owner",
        R.NOT_OWNER,
        "A tag names what everyone who runs it gets: only the user who made it may move or "
        "remove it, and tags made by admins (or before ds01 recorded tags) are shared and "
        "read-only.",
        "Use a name of your own, e.g. <you>/NAME:TAG ('docker images' shows the tags).",
    ),
    Rule(
        "build.buildkit",
        R.POLICY,
        "BuildKit speaks HTTP/2 inside its connection, which the gate cannot check: it could "
        "prune everyone's build cache or reach the host's network.",
        "Build with the classic builder: DOCKER_BUILDKIT=0 docker build … (docker 23 and newer "
        "without the buildx plugin do this by themselves; unset DOCKER_BUILDKIT=1).",
    ),
    Rule(
        "image.import_url",
        R.POLICY,
        "The engine would fetch the URL as root from inside the host's network.",
        "Download the archive yourself, then: docker import FILE.",
    ),
    Rule(
        "image.prune_all",
        R.ADMIN_ONLY,
        "Pruning all unused images removes other users' images too.",
        "Prune dangling images only (docker image prune, without -a), or remove your images "
        "by name.",
    ),
    Rule(
        "build.option",
        R.HOST_PRIVILEGE,
        "Build steps would run in the host's network or outside your cgroup, or a pulled base "
        "image would replace a tag others use.",
        "Drop --network host / --cgroup-parent / --pull from docker build (docker pull the base "
        "image first).",
    ),
    Rule(
        "build.context",
        R.BAD_REQUEST,
        "The gate reads a build's Dockerfile from its context as it passes, to check the images "
        "it builds on; a context it cannot read as the engine would (compressed, its Dockerfile "
        "a link, missing, repeated or over 1 MiB, a FROM it cannot expand) is not forwarded.",
        "Build without --compress, with a plain Dockerfile in the context directory and FROM "
        "lines that name images (or ARGs with values).",
    ),
    Rule(
        "volume.not_owner",
        R.NOT_OWNER,
        "Volumes belong to the user who made them.",
        "Use your own volumes ('docker volume ls').",
    ),
    Rule(
        "volume.driver",
        R.POLICY,
        "Volume drivers and driver options can bind any host path into a volume.",
        "Create a plain local volume: docker volume create NAME.",
    ),
    Rule(
        "network.not_owner",
        R.NOT_OWNER,
        "Networks belong to the user who made them; the built-in ones are shared and fixed.",
        "Use your own networks ('docker network ls').",
    ),
    Rule(
        "network.driver",
        R.POLICY,
        "Network drivers other than bridge, and driver options, attach containers to the "
        "host's own interfaces.",
        "Create a plain network: docker network create NAME.",
    ),
    Rule(
        "network.subnet",
        R.POLICY,
        "A network's address range becomes a route on the host; one that overlaps the lab's "
        "own networks would send the host's traffic for them into your network.",
        "Let Docker pick the range: docker network create NAME.",
    ),
)

RULES: Final[dict[str, Rule]] = {r.id: r for r in _RULES}


class GateRefusal(Exception):
    """A request the gate will not forward. `what` names the refused thing; why/fix default to
    the rule's texts (a scheduler refusal brings its own)."""

    def __init__(
        self,
        rule: str,
        what: str,
        *,
        why: str | None = None,
        fix: str | None = None,
        reason: RefusalReason | None = None,
        summary: str | None = None,
    ) -> None:
        if rule not in RULES:
            raise KeyError(f"unknown gate rule {rule!r}")
        super().__init__(what)
        r = RULES[rule]
        self.rule = rule
        self.what = what
        self.why = why if why is not None else r.why
        self.fix = fix if fix is not None else r.instead
        self.reason = reason or r.reason
        self.status = r.status
        self.summary = summary

    def lines(self) -> list[str]:
        return [line for line in (self.what, self.why, self.fix) if line]

    @property
    def message(self) -> str:
        """What the docker CLI shows after "Error response from daemon: "."""
        return "ds01: " + "\n".join(self.lines())


def from_error(rule: str, err: Ds01Error) -> GateRefusal:
    """A ds01 error (a scheduler refusal, a mount check) with its own what/why/fix, filed under
    a gate rule; the RefusalReason stays the error's own when it has one."""
    return GateRefusal(
        rule,
        err.what,
        why=err.why or "",
        fix=err.fix or "",
        reason=err.reason if isinstance(err, Refusal) else None,
    )


def json_body(message: str) -> bytes:
    return json.dumps({"message": message}).encode()


def response_bytes(status: int, message: str, *, close: bool) -> bytes:
    """A complete HTTP/1.1 response carrying Docker's error shape {"message": ...}."""
    body = json_body(message)
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Error"
    head = (
        f"HTTP/1.1 {status} {phrase}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Server: ds01-gate\r\n" + ("Connection: close\r\n" if close else "") + "\r\n"
    )
    return head.encode("latin-1") + body


class LocalReply(Exception):
    """An answer the gate gives itself without being a policy refusal: a container that does not
    exist (404, worded as the engine words it), or the engine being unreachable (502)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def engine_down(detail: str) -> LocalReply:
    return LocalReply(
        502,
        "ds01: the Docker engine is not reachable\n"
        f"{detail}\n"
        "Try again in a minute; if it persists, tell an admin (systemctl status docker).",
    )
