"""Container use cases: deploy, start/stop/restart, retire, list, logs, inspect, reconcile.

GPU lifetime is decoupled from container lifetime (containers issue §3): stopping holds the
allocation for gpu_hold_after_stop, then it is released while the container stays; starting a
container whose allocation was released allocates again.

Docker calls never happen inside a database transaction: every step is either a short
transaction (through AllocationService) or an engine call, and every failure path undoes what
the steps before it did, so a failed deploy leaves neither an allocation nor a container.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

from ds01 import faults
from ds01.config import Config
from ds01.errors import (
    Ds01Error,
    NotFound,
    Refusal,
    RefusalReason,
    RuntimeUnavailable,
    UsageError,
)
from ds01.identity import (
    Caller,
    docker_container_name,
    is_admin,
    not_yours,
    validate_container_name,
)
from ds01.model.allocation import AllocState
from ds01.model.limits import SIGKILL_EXIT, STOP_GRACE_S
from ds01.runtime.engine import ContainerInfo, Engine, ShellSession
from ds01.runtime.nvenv import env_problem
from ds01.runtime.spec import DEVICE_LIST_DIRS, ContainerSpec, WorkspaceMount
from ds01.services import invariants
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.hostpaths import allowed_host_path, host_fitted
from ds01.services.owners import ObjectKind, OwnerBook
from ds01.services.recovery import Recovery, reallocation_request
from ds01.store.allocations import AllocationRow
from ds01.store.intents import Intent, IntentOp

log = logging.getLogger("ds01d.containers")

DAEMON = "ds01d"

WORKSPACE_TARGET = "/workspace"
DATA_TARGET = "/data"

Progress = Callable[[str], None]
# bash when the image has it, else sh; a login-less shell works for uids without a passwd entry.
SHELL_CMD = ("/bin/sh", "-c", "command -v bash >/dev/null 2>&1 && exec bash || exec sh")


@dataclass(frozen=True)
class DeployRequest:
    name: str
    image: str
    allocation: AllocationRequest
    workspace: str | None = None
    data: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    command: tuple[str, ...] | None = None
    interactive: bool = False


@dataclass(frozen=True)
class ContainerView:
    """A container joined with its live allocation (if any)."""

    info: ContainerInfo
    allocation: AllocationRow | None
    warnings: tuple[str, ...] = ()  # e.g. a unit busy outside ds01 (scheduler/busy.py)


def _no_progress(_: str) -> None:
    return None


def _killed_warning(before: ContainerInfo, after: ContainerInfo) -> tuple[str, ...]:
    """A warning when a stop of a running container ended in SIGKILL (exit code 137): its
    program did not exit within STOP_GRACE_S of SIGTERM, so it could not save its work."""
    if not before.running or after.exit_code != SIGKILL_EXIT:
        return ()
    return (
        f"it did not exit within {STOP_GRACE_S} s of SIGTERM and was killed (SIGKILL); "
        "make its program save and exit on SIGTERM (docs/containers.md, 'Stop, hold, start')",
    )


class ContainerService:
    def __init__(
        self,
        allocations: AllocationService,
        engine: Engine,
        config: Callable[[], Config],
    ) -> None:
        self.allocations = allocations
        self.engine = engine
        self._config = config
        self.owners = OwnerBook(allocations.db)
        self.recovery = Recovery(allocations, engine, self.owners, config)
        allocations.on_released.append(self._stop_released)
        # Containers a user command is stopping, starting or removing right now: the Docker
        # events these cause are that command's to record (reason "stopped", "retired"…), so
        # the reconciler leaves them alone instead of racing it with "container_exited" or
        # "container_removed". Events arriving after the command are no-ops anyway.
        self.acting_on: set[str] = set()

    @contextlib.contextmanager
    def _acting(self, container_id: str) -> Iterator[None]:
        self.acting_on.add(container_id)
        try:
            yield
        finally:
            self.acting_on.discard(container_id)

    @property
    def config(self) -> Config:
        return self._config()

    def _stop_released(self, row: AllocationRow) -> None:
        """A released allocation's container must not keep running on the units (invariant
        I2: they may be handed out at once). Stopped in the background: the release answers
        now, and the reconcile pass stops it too if this fails."""
        if row.container_id is None or row.state is not AllocState.ACTIVE:
            return
        cid = row.container_id

        def stop() -> None:
            try:
                with self._acting(cid):
                    self.engine.stop(cid)
            except Ds01Error as err:
                log.warning("could not stop %s after its allocation was released: %s", cid, err)

        threading.Thread(target=stop, name="stop-released", daemon=True).start()

    # ---- checks ----------------------------------------------------------------------

    def _mounts(self, caller: Caller, req: DeployRequest) -> tuple[WorkspaceMount, ...]:
        out: list[WorkspaceMount] = []
        if req.workspace is not None:  # "" is a mistake, not "no workspace"
            out.append(self._allowed_mount(caller, req.workspace, WORKSPACE_TARGET, rw=True))
        seen = set()
        for d in req.data:
            m = self._allowed_mount(caller, d, "", rw=False)
            base = os.path.basename(m.host_path.rstrip("/")) or "data"
            target = f"{DATA_TARGET}/{base}"
            if target in seen:
                raise UsageError(
                    f"two --data directories are both named '{base}'",
                    fix="Mount directories with different names.",
                )
            seen.add(target)
            out.append(WorkspaceMount(m.host_path, target, m.read_only))
        return tuple(out)

    def _allowed_mount(self, caller: Caller, path: str, target: str, rw: bool) -> WorkspaceMount:
        """A directory the caller owns (read-write) or a shared path from the config
        (allowed_host_path decides; the Docker gate uses the same rule for -v and --mount)."""
        grant = allowed_host_path(caller, path, self.config)
        return WorkspaceMount(grant.real, target, read_only=grant.read_only or not rw)

    def _check_env(self, env: dict[str, str]) -> None:
        bad = sorted(f"{k} ({why})" for k, v in env.items() if (why := env_problem(k, v)))
        if bad:
            raise Refusal(
                RefusalReason.POLICY,
                f"you may not set {', '.join(bad)}",
                why="ds01 pins each container to the GPUs allocated to it; these variables "
                "would select others.",
                fix="Drop them; use --gpus N, --mig PROFILE or --gpueq X instead.",
            )

    def _find_owned(self, caller: Caller, name: str) -> ContainerInfo:
        validate_container_name(name)
        docker_name = docker_container_name(caller.name, name)
        data = self.engine.find(docker_name)
        if data is None:
            raise NotFound(
                not_yours(name),
                fix="See your containers with 'ds01 container list'.",
            )
        from ds01.runtime.engine import container_info

        info = container_info(data)
        # Names are derived from the owner, but the owner record is checked too: never act on
        # a container ds01 did not make for this caller (its ds01.owner label proves nothing).
        if self.owners.owner(ObjectKind.CONTAINER, info.id) != caller.name:
            raise NotFound(not_yours(name), fix="See your containers with 'ds01 container list'.")
        return info

    # ---- deploy ----------------------------------------------------------------------

    def deploy(
        self, caller: Caller, req: DeployRequest, progress: Progress = _no_progress
    ) -> ContainerView:
        validate_container_name(req.name)
        self._check_env(req.env)
        mounts = self._mounts(caller, req)
        resolved = self.allocations.limits_for(caller)
        docker_name = docker_container_name(caller.name, req.name)

        progress("checking the Docker engine")
        self._require_engine()
        if self.engine.find(docker_name) is not None:
            raise Refusal(
                RefusalReason.NAME_IN_USE,
                f"you already have a container named '{req.name}'",
                fix=f"Start it (ds01 container start {req.name}), retire it "
                f"(ds01 container retire {req.name}), or pick another name.",
            )
        if not self.engine.image_exists(req.image):
            progress(f"pulling {req.image}")
            self.engine.pull(req.image, lambda m: progress(_pull_line(m)))
        self._require_usable_image(caller, req.image)

        progress("allocating GPUs")
        # The intent is written with the reservation: whatever happens from here on, a
        # restarted ds01d (or this one, when Docker returns) finishes or undoes this deploy.
        warnings: list[str] = []
        alloc = self.allocations.allocate(
            caller,
            _with_container(req.allocation, req.name),
            intent=Intent(IntentOp.DEPLOY, caller.name, docker_name=docker_name),
            on_warning=warnings.append,
        )
        faults.point("deploy.reserved")
        with self.recovery.undo_on_failure(alloc.id):
            spec = ContainerSpec(
                owner=caller.name,
                uid=caller.uid,
                gid=caller.gid,
                name=req.name,
                image=req.image,
                limits=host_fitted(resolved.limits),
                command=req.command,
                env=req.env,
                gpu_uuids=tuple(u.uuid for u in alloc.units),
                mounts=mounts,
                allocation_id=alloc.id,
                tty=req.interactive,
                stdin_open=req.interactive,
                working_dir=WORKSPACE_TARGET if req.workspace else None,
            )
            progress("creating the container")
            container_id = self.engine.create(spec)
            # Recorded before anything else can fail: the record, not a label, makes it the
            # caller's (and lets recovery tell it from a forged one).
            self.owners.record(ObjectKind.CONTAINER, container_id, caller.name, origin="deploy")
            faults.point("deploy.created")
            stored = self.engine.inspect(container_id)
            found = invariants.judge(
                self.engine, self.owners, self.config, caller, stored, spec.gpu_uuids
            )
            if found:
                raise Refusal(
                    RefusalReason.POLICY,
                    f"the container made from {req.image} breaks ds01's rules: "
                    + invariants.describe(found),
                    why="ds01 checks every container as the engine stored it before it runs; "
                    "an image can add volumes (e.g. on NVIDIA's device-list path, where the "
                    "runtime reads a container's GPU list) and settings a request did not ask for.",
                    fix="Use an image without a VOLUME under /var/run/nvidia-container-devices; "
                    "if the message names something else, tell an admin.",
                )
            progress("starting the container")
            self.engine.start(container_id)
            faults.point("deploy.started")
            row = self.allocations.activate(
                alloc.id, container_id=container_id, actor=caller.name, reason="deployed"
            )
            faults.point("deploy.activated")
        info = self._info(container_id)
        return ContainerView(info, row, tuple(warnings))

    def _require_usable_image(self, caller: Caller, image: str) -> None:
        """Another user's private image (OwnerBook.private_image_of_another, the gate's rule
        too) may not be deployed: its files and ENV may hold their secrets."""
        image_id = self.engine.image_id(image)
        if (
            image_id is not None
            and not is_admin(caller, self.config)
            and self.owners.private_image_of_another(image_id, caller.name)
        ):
            raise Refusal(
                RefusalReason.NOT_OWNER,
                f"you may not deploy image {image!r}: it is another user's private image",
                why="Images a user builds, commits, imports or loads can hold their files and "
                "secrets; they are theirs alone.",
                fix="Use your own image or a shared one (docker images); ask an admin to share "
                "one.",
            )

    def _require_engine(self) -> None:
        # ping() raises when the engine does not answer (it returns False only for an odd
        # answer): both become the one message for users, the engine's detail as the why.
        try:
            up = self.engine.ping()
            detail = "ds01d cannot create or change containers while Docker is down."
        except RuntimeUnavailable as err:
            up, detail = False, err.why or err.what
        if not up:
            raise RuntimeUnavailable(
                "the Docker engine is not reachable",
                why=detail,
                fix="Try again in a minute; if it persists, tell an admin (systemctl status "
                "docker). GPU status and quotas keep working.",
            )

    def main_pid(self, container_id: str) -> int | None:
        """The host PID of the container's first process (the engine's State.Pid), None when
        it is not running: for reading its cgroup (lifecycle/cpu.py)."""
        pid = self.engine.inspect(container_id).get("State", {}).get("Pid")
        return pid if isinstance(pid, int) and pid > 0 else None

    def _info(self, container: str) -> ContainerInfo:
        from ds01.runtime.engine import container_info

        return container_info(self.engine.inspect(container))

    # ---- lifecycle -------------------------------------------------------------------

    def stop(self, caller: Caller, name: str) -> ContainerView:
        info = self._find_owned(caller, name)
        self._require_engine()
        with self._acting(info.id):
            self.engine.stop(info.id)
            faults.point("stop.stopped")
            row = self._hold_after_stop(info, actor=caller.name, reason="stopped")
            faults.point("stop.held")
        after = self._info(info.id)
        return ContainerView(after, row, _killed_warning(info, after))

    def stop_by_daemon(self, row: AllocationRow, reason: str) -> ContainerView | None:
        """ds01d stops the container of an active allocation (lifecycle: idle_timeout,
        max_runtime) the way `ds01 container stop` does — SIGTERM, SIGKILL after STOP_GRACE_S —
        and holds the allocation. Only a container ds01 made for the allocation's owner (its
        owner record, never a label) and still bound to this very allocation; anything else is
        left alone (None). Never signals a process itself."""
        cid = row.container_id
        if cid is None or self.owners.owner(ObjectKind.CONTAINER, cid) != row.user:
            return None
        info = self._info(cid)
        bound = self.allocation_of(info)
        if bound is None or bound.id != row.id or bound.state is not AllocState.ACTIVE:
            return None  # stopped, retired or re-bound since the decision
        with self._acting(cid):
            self.engine.stop(cid)
            faults.point("lifecycle_stop.stopped")
            held = self._hold_after_stop(info, actor=DAEMON, reason=reason)
            faults.point("lifecycle_stop.held")
        after = self._info(cid)
        return ContainerView(after, held, _killed_warning(info, after))

    def in_operation(self) -> Callable[[ContainerInfo], bool]:
        """Whether an operation is at work on a container: a command of this process acting on
        it, or an open intent (a deploy, start, recreate or create not yet bound or undone)
        naming it. Read once per pass, after the engine's listing and before the containers'
        allocations: an operation that ends in between has bound its container by then."""
        live, open_intents = self.allocations.live_and_intents()
        claimed = {
            ref
            for i in open_intents
            for ref in (i.intent.container_id, i.intent.docker_name, i.intent.new_name)
            if ref
        }
        reserved = {r.id for r in live if r.state is AllocState.RESERVED}

        def busy(info: ContainerInfo) -> bool:
            return (
                info.id in self.acting_on
                or info.id in claimed
                or info.name in claimed
                or info.allocation_id in reserved
            )

        return busy

    def allocation_of(self, info: ContainerInfo) -> AllocationRow | None:
        """The live allocation bound to the container's ID in the database. Never the one its
        ds01.allocation label names: a label is forgeable (an image LABEL, a legacy build
        step), and every activation binds the container ID (AllocationService.activate)."""
        return self.allocations.live_for_container_id(info.id)

    def _hold_after_stop(
        self, info: ContainerInfo, actor: str, reason: str
    ) -> AllocationRow | None:
        row = self.allocation_of(info)
        if row is None or row.state is not AllocState.ACTIVE:
            return row
        held = self.allocations.hold(row.id, actor=actor, reason=reason)
        return held if held.state is not AllocState.RELEASED else None

    def start(self, caller: Caller, name: str) -> ContainerView:
        info = self._find_owned(caller, name)
        self._require_engine()
        row = self.allocation_of(info)
        if row is not None:  # still held (or active): it starts on its own units
            self._require_sound(caller, info, tuple(u.uuid for u in row.units), name)
            with self._acting(info.id):
                self.engine.start(info.id)
                faults.point("start.started")
                if row.state is not AllocState.ACTIVE:
                    row = self.allocations.activate(
                        row.id, container_id=info.id, actor=caller.name, reason="started"
                    )
                faults.point("start.activated")
            return ContainerView(self._info(info.id), row)
        return self._start_again(caller, info, name)

    def _require_sound(
        self, caller: Caller, info: ContainerInfo, units: tuple[str, ...], name: str
    ) -> None:
        found = invariants.judge(
            self.engine, self.owners, self.config, caller, self.engine.inspect(info.id), units
        )
        if found:
            raise Refusal(
                RefusalReason.POLICY,
                f"container '{name}' may not start: {invariants.describe(found)}",
                why="ds01 checks every container as the engine stores it before it runs.",
                fix=f"Retire it (ds01 container retire {name}) and deploy it again; if the "
                "message names a mounted directory, put the directory back first.",
            )

    def _start_again(self, caller: Caller, info: ContainerInfo, name: str) -> ContainerView:
        """Start a container whose allocation was released: allocate again.

        Docker cannot change a container's devices, so the same units are asked for first.
        When they are taken, the container is recreated on the new units from a snapshot of
        its filesystem (docker commit); mounted workspaces are untouched.
        """
        # Not existing_container=True: with its allocation released, this container no longer
        # counts towards max_containers, so starting it must be checked like a new one (else
        # stop → release → deploy another → start the first runs one over the limit).
        wanted = tuple(info.gpu_device_ids)
        row = self.allocations.allocate(
            caller,
            reallocation_request(self.allocations, info, caller.name, info.short_name),
            preferred_units=wanted,
            intent=Intent(IntentOp.START, caller.name, container_id=info.id),
        )
        faults.point("start.reserved")
        with self.recovery.undo_on_failure(row.id), self._acting(info.id):
            if sorted(u.uuid for u in row.units) != sorted(wanted):
                self._recreate(caller, info, row)
                return self._view_by_name(caller, name)
            self._require_sound(caller, info, wanted, name)
            self.engine.start(info.id)
            faults.point("start.started")
            row = self.allocations.activate(
                row.id, container_id=info.id, actor=caller.name, reason="started"
            )
            faults.point("start.activated")
        return ContainerView(self._info(info.id), row)

    def _recreate(self, caller: Caller, info: ContainerInfo, row: AllocationRow) -> None:
        """Make the container again on the units of `row`: the new one is created beside the
        old one and only then is the old one removed (never a moment without the user's
        container); recovery finishes or undoes each step (services/recovery.py)."""
        temp_name = f"ds01-recreate-{row.id}"
        self.allocations.replace_intent(
            row.id,
            Intent(
                IntentOp.RECREATE,
                caller.name,
                docker_name=info.name,
                container_id=info.id,
                new_name=temp_name,
            ),
        )
        faults.point("recreate.reserved")
        data = self.engine.inspect(info.id)
        snapshot = self.engine.commit(info.id, f"ds01-snapshot/{info.name}")
        faults.point("recreate.snapshot")
        cfg = data.get("Config") or {}
        env = dict(e.split("=", 1) for e in (cfg.get("Env") or []) if "=" in e)
        env = {k: v for k, v in env.items() if env_problem(k, v) is None}
        # The user's directories only: the device-list binds name the old units, and the new
        # spec adds those of the new ones.
        mounts = tuple(
            WorkspaceMount(m["Source"], m["Destination"], not m.get("RW", True))
            for m in (data.get("Mounts") or [])
            if m.get("Type") == "bind"
            and not any(str(m.get("Destination", "")).startswith(d + "/") for d in DEVICE_LIST_DIRS)
        )
        resolved = self.allocations.limits_for(caller)
        spec = ContainerSpec(
            owner=caller.name,
            uid=caller.uid,
            gid=caller.gid,
            name=info.short_name or info.name,
            image=snapshot,
            limits=host_fitted(resolved.limits),
            command=tuple(cfg.get("Cmd") or ()) or None,
            env=env,
            gpu_uuids=tuple(u.uuid for u in row.units),
            mounts=mounts,
            allocation_id=row.id,
            tty=bool(cfg.get("Tty")),
            stdin_open=bool(cfg.get("OpenStdin")),
            working_dir=cfg.get("WorkingDir") or None,
        )
        new_id = self.engine.create(spec, name=temp_name)
        self.owners.record(ObjectKind.CONTAINER, new_id, caller.name, origin="deploy")
        faults.point("recreate.created")
        self.engine.remove(info.id, force=True)
        self.owners.forget(ObjectKind.CONTAINER, info.id)
        faults.point("recreate.old_removed")
        new = self._info(new_id)
        self.recovery.finish_recreate(row, new, info.name, quiet=False)

    def restart(self, caller: Caller, name: str) -> ContainerView:
        stopped = self.stop(caller, name)
        started = self.start(caller, name)
        # The start resets the exit code: say here that the stop needed SIGKILL.
        return replace(started, warnings=stopped.warnings + started.warnings)

    def retire(self, caller: Caller, name: str) -> str:
        """Stop and remove the container and release its GPUs at once."""
        info = self._find_owned(caller, name)
        self._require_engine()
        with self._acting(info.id):
            self.engine.remove(info.id, force=True)
            faults.point("retire.removed")
            row = self.allocation_of(info)
            if row is not None:
                self.allocations.release_by_daemon(row.id, "retired")
            faults.point("retire.released")
            self.owners.forget(ObjectKind.CONTAINER, info.id)
        return info.id

    # ---- reads -----------------------------------------------------------------------

    def list(self, caller: Caller, all_users: bool) -> list[ContainerView]:
        if all_users:
            self.allocations.require_admin(caller, "listing everyone's containers")
        self._require_engine()
        # Whose each container is comes from the owner records, and so does the owner shown: a
        # build container with a forged ds01.owner label shows no owner (admins see it so).
        infos = self.engine.list_managed(all=True)
        owners = self.owners.owners(ObjectKind.CONTAINER, [i.id for i in infos])
        infos = [replace(i, owner=owners.get(i.id)) for i in infos]
        if not all_users:
            infos = [i for i in infos if i.owner == caller.name]
        by_container = {r.container_id: r for r in self.allocations.all_live() if r.container_id}
        out = [ContainerView(i, by_container.get(i.id)) for i in infos]
        return sorted(out, key=lambda v: (v.info.owner or "", v.info.short_name or v.info.name))

    def _view_by_name(self, caller: Caller, name: str) -> ContainerView:
        info = self._find_owned(caller, name)
        return ContainerView(info, self.allocation_of(info))

    def inspect(self, caller: Caller, name: str) -> ContainerView:
        return self._view_by_name(caller, name)

    def open_shell(self, caller: Caller, name: str, *, tty: bool = True) -> ShellSession:
        """A shell in the caller's running container, as the caller's uid:gid: on a tty, or
        (tty=False, for input from a pipe or file) on plain pipes."""
        return self._exec(caller, name, SHELL_CMD, tty=tty, what="open a shell in")

    def exec(self, caller: Caller, name: str, cmd: tuple[str, ...]) -> ShellSession:
        """Run one command in the caller's running container, as the caller's uid:gid, without
        a tty (its stdout and stderr stay apart; see runtime/shell.Demux)."""
        if not cmd or not cmd[0]:
            raise UsageError(
                "no command to run",
                fix=f"Name one after --, e.g. ds01 container exec {name} -- nvidia-smi",
            )
        return self._exec(caller, name, cmd, tty=False, what="run a command in")

    def _exec(
        self, caller: Caller, name: str, cmd: tuple[str, ...], *, tty: bool, what: str
    ) -> ShellSession:
        info = self._find_owned(caller, name)
        if not info.running:
            raise Refusal(
                RefusalReason.POLICY,
                f"cannot {what} container '{name}': it is not running ({info.state})",
                why="Commands and shells run inside the container's processes, which exist only "
                "while it runs.",
                fix=f"Start it first: ds01 container start {name}",
            )
        return self.engine.exec_shell(info.id, user=f"{caller.uid}:{caller.gid}", cmd=cmd, tty=tty)

    def logs(self, caller: Caller, name: str, follow: bool, tail: int | None) -> Iterator[bytes]:
        info = self._find_owned(caller, name)
        return self.engine.logs(info.id, follow=follow, tail=tail)


def _with_container(req: AllocationRequest, name: str) -> AllocationRequest:
    return AllocationRequest(req.kind, req.count, req.profiles, req.gpueq, container=name)


def _pull_line(message: object) -> str:
    if isinstance(message, dict):
        parts = [str(message.get(k)) for k in ("id", "status", "progress") if message.get(k)]
        return " ".join(parts) or "pulling"
    return "pulling"
