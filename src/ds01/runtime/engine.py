"""The Docker engine, as ds01 uses it: one Engine over the Docker SDK on root's socket.

Owns every call to the engine (create, start, stop, remove, inspect, list, logs, events, image
checks, snapshots, interactive shells via shell.py) and the translation of every Docker SDK /
requests / socket error into the ds01 error tree at this boundary, keeping the cause with
``from`` (STYLE 6):

    engine down or unreachable, timeouts      → RuntimeUnavailable, in user words (down.py)
    missing image (create, pull)              → Refusal(IMAGE_NOT_FOUND)
    name conflict on create (409)             → Refusal(NAME_IN_USE)
    missing container                         → NotFound
    any other engine error                    → EngineError

Must not decide policy (who may do what, which GPUs): it executes specs that were already
decided. The runtime package is the only ds01 code that imports ``docker``.

The SDK client is made lazily and remade after a failure: the SDK asks the engine for its API
version when the client is built, so building it at daemon start would make dockerd's restart a
ds01d crash.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn
from urllib.parse import quote, urlencode

import docker
import docker.errors
import requests
import urllib3.exceptions
from docker.utils import parse_repository_tag

from ds01 import unixhttp
from ds01.errors import Ds01Error, NotFound, Refusal, RefusalReason
from ds01.model.limits import STOP_GRACE_S
from ds01.runtime.down import engine_unreachable
from ds01.runtime.eventstream import RawEvents
from ds01.runtime.shell import ShellSession, open_engine_socket, start_exec_upgraded
from ds01.runtime.spec import (
    LABEL_ALLOCATION,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    NVIDIA_DRIVER,
    ContainerSpec,
    is_device_list_path,
)
from ds01.runtime.stamp import create_body

__all__ = [
    "DEFAULT_HOST",
    "ContainerInfo",
    "Engine",
    "EngineError",
    "EventStream",
    "ShellSession",
    "container_info",
]

DEFAULT_HOST = "unix:///var/run/docker.sock"
DEFAULT_TIMEOUT_S = 60

_FIX_IMAGE = "Build or pull the image first (docker build / docker pull), or ask an admin for it."


class EngineError(Ds01Error):
    """The engine answered, but refused or failed in a way ds01 has no specific error for."""

    kind = "engine"


@dataclass(frozen=True)
class MountInfo:
    type: str  # bind | volume | tmpfs
    source: str
    target: str
    read_only: bool


@dataclass(frozen=True)
class ContainerInfo:
    """What ds01 reads back about one of its containers (from ``docker inspect``).

    owner, short_name, allocation_id come from ds01's labels (runtime/stamp.py); allocation_id
    is None when the container has none. gpu_device_ids are the IDs in HostConfig.DeviceRequests;
    gpu_unpinned is True when a GPU request asks by count (``--gpus all`` / ``--gpus 2``) rather
    than by IDs — such a container can see GPUs ds01 did not give it (BRIEF §6 item 3).
    started_at / finished_at are None when the engine has never started / stopped it.
    """

    id: str
    name: str
    short_name: str | None
    owner: str | None
    allocation_id: int | None
    image: str
    state: str  # created | running | paused | restarting | removing | exited | dead
    exit_code: int | None
    created: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    gpu_device_ids: tuple[str, ...]
    gpu_unpinned: bool
    # What `inspect` shows: the user's mounts (not NVIDIA's device-list binds), the environment
    # as the engine stored it (image ENV included; secrets are the API's to hide) and limits
    # (None: none set).
    mounts: tuple[MountInfo, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    cpus: float | None = None
    memory_bytes: int | None = None
    memory_swap_bytes: int | None = None  # memory + swap (-1: unlimited swap)
    shm_bytes: int | None = None
    pids: int | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"


class EventStream:
    """Container events of ds01-managed containers, as decoded dicts, until ``until`` or close().

    close() may be called from another thread to end a blocking iteration. The stream also ends
    when the engine goes away (the SDK reports that as a normal end): a caller without ``until``
    must treat an end as "disconnected" — list again, then subscribe again.
    """

    def __init__(
        self, stream: Any, translate: Callable[[], contextlib.AbstractContextManager[None]]
    ):
        self._stream = stream
        self._translate = translate

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self

    def __next__(self) -> dict[str, Any]:
        with self._translate():
            event: dict[str, Any] = next(self._stream)
        return event

    def close(self) -> None:
        # Closing an already closed or broken stream is fine: we only want it to stop.
        with contextlib.suppress(Exception):
            self._stream.close()

    def __enter__(self) -> EventStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Engine:
    """One Docker engine, addressed by ``host`` (``unix:///…`` or ``tcp://…``).

    Thread-safe as far as the SDK is (requests sessions are shared across threads in practice;
    ds01d calls the engine from a few worker threads). Container arguments take an ID or a name.
    """

    def __init__(self, host: str = DEFAULT_HOST, *, timeout_s: int = DEFAULT_TIMEOUT_S) -> None:
        self.host = host
        self.timeout_s = timeout_s
        self._client: docker.DockerClient | None = None
        self._cgroup_driver: str | None = None  # per client: it changes only with dockerd
        self._default_runtime = "runc"
        # list_managed: container ID → (summary State, Status, name; what inspect gave).
        self._info_cache: dict[str, tuple[tuple[str, str, str], ContainerInfo]] = {}
        self._lock = threading.Lock()
        self._light: unixhttp.Pool | None = None  # running(): kept-alive, standard library

    # -- plumbing -------------------------------------------------------------------------

    def _docker(self) -> docker.DockerClient:
        """Called only inside _translate(action): a client that cannot be built (the engine is
        down) is reported as that action failing, in the words the user's command used."""
        with self._lock:
            if self._client is None:
                # version=None: negotiate the API version with the engine (needs it up).
                self._client = docker.DockerClient(
                    base_url=self.host, version=None, timeout=self.timeout_s
                )
                # The engine is ds01d's own (docker.host), never reached through a proxy: spare
                # requests from reading proxy and netrc settings from the environment on every
                # call (measurable CPU per call; bench/gate.py).
                self._client.api.trust_env = False
            return self._client

    def _api(self) -> docker.APIClient:
        return self._docker().api

    def retarget(self, host: str) -> None:
        """Talk to the engine at `host` from the next call on (a config reload)."""
        self.close()
        self.host = host

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = None
            if self._light is not None:
                self._light.close()
            self._light = None
            self._cgroup_driver = None
            self._info_cache = {}

    def _unreachable(self, action: str, exc: BaseException) -> NoReturn:
        # Drop the client: the next call renegotiates with whatever engine is there by then.
        self._client = None
        self._cgroup_driver = None
        raise engine_unreachable(action, self.host, exc) from exc

    @contextlib.contextmanager
    def _translate(
        self,
        action: str,
        *,
        container: str | None = None,
        image: str | None = None,
        name_conflict: bool = False,
    ) -> Iterator[None]:
        """Map SDK, requests and socket errors to ds01 errors (most specific first)."""
        try:
            yield
        except docker.errors.ImageNotFound as exc:
            raise Refusal(
                RefusalReason.IMAGE_NOT_FOUND,
                f"cannot {action}: image {image!r} is not on this machine",
                why=_explain(exc),
                fix=_FIX_IMAGE,
            ) from exc
        except docker.errors.NotFound as exc:
            if container:
                what = f"container {container!r} does not exist"
            elif image:
                what = f"image {image!r} does not exist"
            else:
                what = "it no longer exists"
            raise NotFound(f"cannot {action}: {what}", why=_explain(exc)) from exc
        except docker.errors.APIError as exc:
            # 409 means a name conflict only on create; elsewhere (e.g. removing a running
            # container without force) it is a plain engine refusal.
            if exc.status_code == 409 and name_conflict:
                raise Refusal(
                    RefusalReason.NAME_IN_USE,
                    f"cannot {action}: the name {container!r} is already in use",
                    why=_explain(exc),
                    fix="Pick another name, or remove the old container first.",
                ) from exc
            raise EngineError(
                f"cannot {action}: the Docker engine refused",
                why=_explain(exc),
                fix="If the reason is unclear, an admin can look at the dockerd log.",
            ) from exc
        except (
            requests.exceptions.RequestException,
            urllib3.exceptions.HTTPError,
            http.client.HTTPException,
            OSError,
        ) as exc:
            # Connection refused, socket missing, read timeout, a stream cut mid-way.
            self._unreachable(action, exc)
        except docker.errors.DockerException as exc:
            # Raised when the client cannot be built, e.g. "Error while fetching server API
            # version" — the engine did not answer the version handshake.
            self._unreachable(action, exc)

    # -- engine ---------------------------------------------------------------------------

    def ping(self) -> bool:
        """True when the engine answers; RuntimeUnavailable when it does not."""
        with self._translate("ping the Docker engine"):
            return bool(self._api().ping())

    def info_cgroup_driver(self) -> str:
        """The engine's cgroup driver: "systemd" or "cgroupfs" (``docker info``), read once per
        connection (``docker info`` is slow on a busy engine; the driver changes only with a
        dockerd restart, which drops the connection)."""
        if self._cgroup_driver is None:
            with self._translate("read the Docker engine's info"):
                info = self._api().info()
            self._cgroup_driver = str(info.get("CgroupDriver", ""))
            self._default_runtime = str(info.get("DefaultRuntime") or "runc")
        return self._cgroup_driver

    def info_default_runtime(self) -> str:
        """The runtime the engine gives a container that names none (``docker info``)."""
        self.info_cgroup_driver()
        return self._default_runtime

    # -- images ---------------------------------------------------------------------------

    def image_exists(self, ref: str) -> bool:
        return self.image_id(ref) is not None

    def image_id(self, ref: str) -> str | None:
        """The ID (sha256:…) of the image `ref` names, None when there is none."""
        with self._translate("look up an image", image=ref):
            try:
                return str(self._docker().images.get(ref).id)
            except docker.errors.NotFound:
                return None

    def pull(self, ref: str, progress: Callable[[Mapping[str, Any]], None] | None = None) -> None:
        """Pull ``ref`` (``name[:tag]``, ``name@digest``; tag defaults to latest), reporting each
        progress message to ``progress``. A failed pull is Refusal(IMAGE_NOT_FOUND)."""
        repository, tag = parse_repository_tag(ref)
        action = f"pull {ref}"
        try:
            with self._translate(action, image=ref):
                for message in self._api().pull(
                    repository, tag=tag or "latest", stream=True, decode=True
                ):
                    # Failures after the stream starts arrive as a message, with HTTP 200.
                    if "error" in message:
                        raise _PullFailed(str(message.get("error")))
                    if progress is not None:
                        progress(message)
        except (EngineError, NotFound, _PullFailed) as exc:
            why = exc.why if isinstance(exc, Ds01Error) else str(exc)
            raise Refusal(
                RefusalReason.IMAGE_NOT_FOUND,
                f"cannot {action}: the image could not be pulled",
                why=why,
                fix=_FIX_IMAGE,
            ) from exc

    # -- containers -----------------------------------------------------------------------

    def create(self, spec: ContainerSpec, *, name: str | None = None) -> str:
        """Create (not start) the container, named spec.docker_name unless `name` is given (a
        recreate makes the new container beside the old one, then renames it); returns its ID.
        The body is runtime/stamp.create_body: the stamp the gate puts on its creates too."""
        body = create_body(spec, self.info_cgroup_driver())
        docker_name = name or spec.docker_name
        with self._translate(
            f"create container {docker_name}",
            container=docker_name,
            image=spec.image,
            name_conflict=True,
        ):
            # The SDK leaves this one untyped; it posts the body as given.
            create: Callable[..., dict[str, Any]] = self._api().create_container_from_config
            result = create(body, name=docker_name)
        return str(result["Id"])

    def rename(self, container: str, name: str) -> None:
        with self._translate(f"rename container {container}", container=container):
            self._api().rename(container, name)

    def start(self, container: str) -> None:
        with self._translate(f"start container {container}", container=container):
            self._api().start(container)

    def stop(self, container: str, timeout_s: int = STOP_GRACE_S) -> None:
        """SIGTERM, then SIGKILL after timeout_s. Stopping a stopped container is a no-op."""
        with self._translate(f"stop container {container}", container=container):
            self._api().stop(container, timeout=timeout_s)

    def restart(self, container: str, timeout_s: int = STOP_GRACE_S) -> None:
        with self._translate(f"restart container {container}", container=container):
            self._api().restart(container, timeout=timeout_s)

    def wait(self, container: str, timeout_s: int) -> int | None:
        """Block until the container exits; its exit code, or None if it is still running after
        timeout_s."""
        action = f"wait for container {container}"
        with self._translate(action, container=container):
            try:
                result = self._api().wait(container, timeout=timeout_s)
            except (requests.exceptions.Timeout, requests.exceptions.ConnectionError) as exc:
                # docker's Unix-socket adapter reports a read timeout as a ConnectionError
                # wrapping urllib3's ReadTimeoutError; only that case means "still running".
                if isinstance(exc, requests.exceptions.Timeout) or any(
                    isinstance(arg, urllib3.exceptions.ReadTimeoutError) for arg in exc.args
                ):
                    return None
                raise
        return int(result.get("StatusCode", -1))

    def remove(self, container: str, *, force: bool = False) -> None:
        """Remove the container (force: even when running). Its anonymous volumes go with it."""
        with self._translate(f"remove container {container}", container=container):
            self._api().remove_container(container, v=True, force=force)

    def inspect(self, container: str) -> dict[str, Any]:
        with self._translate(f"inspect container {container}", container=container):
            data: dict[str, Any] = self._api().inspect_container(container)
        return data

    def running(self, container: str) -> bool:
        """Whether the container runs now (ContainerInfo.running); False when it is gone.

        ds01d's reconciler asks this for each die/start event it acts on: on a Unix socket it is
        one GET on a kept-alive connection in the standard library (unixhttp.Pool): 0.14 ms of
        CPU where the SDK's inspect cost 0.65 ms (measured on a 2-core VM), on every `docker
        run` through the gate. Errors are inspect()'s."""
        action = f"inspect container {container}"
        if not self.host.startswith("unix://"):
            try:
                return container_info(self.inspect(container)).running
            except NotFound:
                return False
        with self._lock:
            if self._light is None:
                self._light = unixhttp.Pool(self.host.removeprefix("unix://"), self.timeout_s)
            light = self._light
        try:
            reply = light.request("GET", f"/containers/{quote(container, safe='')}/json")
            data = json.loads(reply.body) if reply.status == 200 else None
        except (OSError, ValueError) as exc:  # no engine, a cut or garbled answer
            self._unreachable(action, exc)
        if reply.status == 404:
            return False
        if not isinstance(data, dict):
            raise EngineError(
                f"cannot {action}: the Docker engine refused",
                why=_message_of(reply.body) or f"HTTP {reply.status}",
                fix="If the reason is unclear, an admin can look at the dockerd log.",
            )
        return container_info(data).running

    def find(self, docker_name: str) -> dict[str, Any] | None:
        """The inspect data of the container with exactly this name, or None."""
        with self._translate(f"look up container {docker_name}", container=docker_name):
            try:
                data: dict[str, Any] = self._api().inspect_container(docker_name)
            except docker.errors.NotFound:
                return None
        # The engine also resolves IDs and ID prefixes; only an exact name counts here.
        return data if data.get("Name") == f"/{docker_name}" else None

    def list_managed(self, *, all: bool = True) -> list[ContainerInfo]:
        """Every container labelled ds01.managed=true (all=False: running ones only).

        The list call's summary lacks what ContainerInfo needs from ``docker inspect``
        (DeviceRequests, start/finish times, exit code), but an inspect per container made a
        list of 50 cost ~50 engine round trips. So the last ContainerInfo of each container is
        kept and reused while the summary's State and Status text are unchanged: DeviceRequests,
        labels, image and creation time never change, and the times and exit code change only
        with the state, which moves Status ("Up 3 hours" → "Exited (0) 2 seconds ago").
        """
        with self._translate("list containers"):
            summaries = self._api().containers(all=all, filters={"label": f"{LABEL_MANAGED}=true"})
        cache = self._info_cache
        fresh: dict[str, tuple[tuple[str, str, str], ContainerInfo]] = {}
        infos = []
        for summary in summaries:
            cid = str(summary["Id"])
            names = summary.get("Names") or [""]
            key = (str(summary.get("State")), str(summary.get("Status")), str(names[0]))
            hit = cache.get(cid)
            if hit is not None and hit[0] == key:
                info = hit[1]
            else:
                try:
                    info = container_info(self.inspect(cid))
                except NotFound:
                    continue  # removed between the list and the inspect
            fresh[cid] = (key, info)
            infos.append(info)
        if all:  # a running-only list would drop the stopped containers' entries
            self._info_cache = fresh
        else:
            self._info_cache = {**cache, **fresh}
        return infos

    def logs(
        self, container: str, *, follow: bool = False, tail: int | None = None
    ) -> Iterator[bytes]:
        """The container's output (stdout and stderr) as chunks; tail=None means everything."""
        action = f"read logs of {container}"
        with self._translate(action, container=container):
            stream = self._api().logs(
                container, stream=True, follow=follow, tail="all" if tail is None else tail
            )
        return self._stream_logs(stream, action, container)

    def _stream_logs(self, stream: Any, action: str, container: str) -> Iterator[bytes]:
        try:
            while True:
                with self._translate(action, container=container):
                    chunk = next(stream, None)
                if chunk is None:
                    return
                yield bytes(chunk)
        finally:
            stream.close()

    def commit(self, container: str, repository: str, tag: str = "latest") -> str:
        """Snapshot the container's filesystem as image ``repository:tag``; returns the image ID.
        Mounted paths are not part of it. The container is paused while it is copied."""
        with self._translate(f"snapshot container {container}", container=container):
            result = self._api().commit(container, repository=repository, tag=tag)
        return str(result["Id"])

    def exec_shell(
        self,
        container: str,
        *,
        user: str,
        cmd: tuple[str, ...],
        env: Mapping[str, str] | None = None,
        tty: bool = True,
    ) -> ShellSession:
        """Start ``cmd`` in the running container as ``user`` ("uid:gid") and return the session
        (close it when done): on a new tty (raw bytes both ways), or with ``tty=False`` on plain
        pipes, whose output the engine multiplexes (ShellSession.tty says which). The caller
        decides the user; this does not."""
        action = f"{'open a shell' if tty else 'run a command'} in container {container}"
        with self._translate(action, container=container):
            api = self._api()
            created = api.exec_create(
                container,
                list(cmd),
                stdin=True,
                tty=tty,
                user=user,
                environment=dict(env) if env else None,
            )
            exec_id = str(created["Id"])
            api_version = api.api_version
        sock = open_engine_socket(self.host)
        try:
            with self._translate(action, container=container):
                status, reason, body = start_exec_upgraded(sock, api_version, exec_id, tty=tty)
        except BaseException:
            sock.close()
            raise
        if status not in (101, 200):
            sock.close()
            message = _message_of(body) or f"HTTP {status} {reason}"
            if status == 404:
                raise NotFound(f"cannot {action}: it does not exist", why=message)
            raise EngineError(f"cannot {action}: the Docker engine refused", why=message)
        return ShellSession(exec_id, sock, self._exec_inspect, self._exec_resize, tty=tty)

    def _exec_inspect(self, exec_id: str) -> dict[str, object]:
        with self._translate("read a shell's status"):
            return dict(self._api().exec_inspect(exec_id))

    def _exec_resize(self, exec_id: str, rows: int, cols: int) -> None:
        with self._translate("resize a shell"):
            self._api().exec_resize(exec_id, height=rows, width=cols)

    def events(
        self,
        since: datetime | int | None = None,
        until: datetime | int | None = None,
        filters: Mapping[str, str | list[str]] | None = None,
    ) -> EventStream:
        """Container events of ds01-managed containers (label ds01.managed=true), oldest first.

        ``filters`` adds engine filters (e.g. {"event": ["die", "destroy"]}); the type and
        label filters are always ds01's. Without ``until`` the stream blocks for new events.
        """
        merged: dict[str, Any] = dict(filters or {})
        extra_labels = merged.get("label", [])
        merged["type"] = ["container"]
        # The engine ANDs label filters: a caller may narrow (ds01.owner=…), never widen.
        merged["label"] = [
            f"{LABEL_MANAGED}=true",
            *([extra_labels] if isinstance(extra_labels, str) else extra_labels),
        ]
        action = "subscribe to Docker events"
        if self.host.startswith("ssh://"):  # only the SDK speaks ssh
            with self._translate(action):
                stream = self._api().events(since=since, until=until, filters=merged, decode=True)
            return EventStream(stream, lambda: self._translate("read Docker events"))
        query = {"filters": json.dumps(merged)}
        for key, value in (("since", since), ("until", until)):
            if value is not None:
                query[key] = str(int(value.timestamp()) if isinstance(value, datetime) else value)
        sock = open_engine_socket(self.host, action)
        try:
            with self._translate(action):
                raw = RawEvents(sock, f"/events?{urlencode(query)}", self.timeout_s)
                if raw.status != 200:
                    raise EngineError(
                        f"cannot {action}: the Docker engine refused",
                        why=_message_of(raw.error_body()) or f"HTTP {raw.status}",
                        fix="If the reason is unclear, an admin can look at the dockerd log.",
                    )
        except BaseException:
            sock.close()
            raise
        return EventStream(raw, lambda: self._translate("read Docker events"))


class _PullFailed(Exception):
    """A pull stream reported an error message."""


def _message_of(body: bytes) -> str:
    """The "message" of an engine error body (JSON), or the body as text."""
    try:
        data = json.loads(body)
    except ValueError:
        return body.decode(errors="replace").strip()
    return str(data.get("message", "")) if isinstance(data, dict) else str(data)


def _explain(exc: docker.errors.APIError) -> str:
    """The engine's own words for an error ("No such image: …", "Conflict. The container name…")."""
    return str(exc.explanation or exc)


def _parse_time(value: object) -> datetime | None:
    """Docker's RFC 3339 times (nanoseconds are cut to microseconds by Python 3.11+); the zero
    time Docker uses for "never" is None."""
    if not isinstance(value, str) or not value or value.startswith("0001-01-01"):
        return None
    try:
        return datetime.fromisoformat(value).astimezone(UTC)
    except ValueError:
        return None


def container_info(data: Mapping[str, Any]) -> ContainerInfo:
    """ContainerInfo from ``docker inspect`` data."""
    config = data.get("Config") or {}
    labels = config.get("Labels") or {}
    state = data.get("State") or {}
    host_config = data.get("HostConfig") or {}
    ids: list[str] = []
    unpinned = False
    for request in host_config.get("DeviceRequests") or []:
        capabilities = [c for group in request.get("Capabilities") or [] for c in group]
        if request.get("Driver") != NVIDIA_DRIVER and "gpu" not in capabilities:
            continue
        ids.extend(request.get("DeviceIDs") or [])
        if request.get("Count"):
            unpinned = True
    allocation = labels.get(LABEL_ALLOCATION)
    exit_code = state.get("ExitCode")
    return ContainerInfo(
        id=str(data.get("Id", "")),
        name=str(data.get("Name", "")).lstrip("/"),
        short_name=labels.get(LABEL_NAME),
        owner=labels.get(LABEL_OWNER),
        allocation_id=int(allocation) if allocation and allocation.isdigit() else None,
        image=str(config.get("Image", "")),
        state=str(state.get("Status", "unknown")),
        exit_code=exit_code if isinstance(exit_code, int) else None,
        created=_parse_time(data.get("Created")),
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        gpu_device_ids=tuple(ids),
        gpu_unpinned=unpinned,
        mounts=tuple(
            MountInfo(
                type=str(m.get("Type", "")),
                source=str(m.get("Source") or m.get("Name") or ""),
                target=str(m.get("Destination", "")),
                read_only=not m.get("RW", True),
            )
            for m in data.get("Mounts") or []
            if not is_device_list_path(str(m.get("Destination", "")))
        ),
        env=tuple((k, v) for k, _, v in (str(e).partition("=") for e in config.get("Env") or [])),
        cpus=nano / 1e9 if (nano := _positive(host_config.get("NanoCpus"))) else None,
        memory_bytes=_positive(host_config.get("Memory")),
        memory_swap_bytes=host_config.get("MemorySwap") or None,
        shm_bytes=_positive(host_config.get("ShmSize")),
        pids=_positive(host_config.get("PidsLimit")),
    )


def _positive(value: object) -> int | None:
    """A Docker limit as set, or None where it is unset (0, -1, absent)."""
    return value if isinstance(value, int) and value > 0 else None
