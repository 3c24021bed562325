"""The one judge of a container as the engine stored it: the invariants every ds01 container
must hold before it runs, whoever asked for it and however (gate, `ds01 container deploy`,
a start, an update, a container found running by reconcile).

Requests are checked field by field where they arrive; this module checks the *outcome* — the
engine's inspect data — because what a container can reach also depends on API versions,
other containers (`--volumes-from`), images (`VOLUME`, `ENV`), and the host filesystem at the
moment of use. The invariants (issue 9, deliverable 3):

  I1  not privileged; no added capabilities beyond the admin's list, no capability set
  I2  no host pid/ipc/uts/userns/network namespace; a `container:` namespace or
      `--volumes-from` only of a container of the same owner
  I3  no devices, no device cgroup rules; runtime runc (or the engine's default)
  I4  security options at their defaults or stricter: seccomp/AppArmor not unconfined,
      masked and read-only /proc paths kept, no real-time CPU, no OOM-kill opt-out
  I5  cgroup parent = the owner's
  I6  limits ≤ the owner's, in every equivalent field: NanoCpus / CpuQuota+CpuPeriod,
      Memory, MemorySwap, ShmSize and no tmpfs over /dev/shm, PidsLimit
  I7  GPU device requests by exact IDs only, ⊆ the container's live allocation, each with
      ds01's device-list mount; no other mount at NVIDIA's device-list path; CPU-only
      containers carry NVIDIA_VISIBLE_DEVICES=void, GPU ones no wider value
  I8  every host path (bind, inherited through --volumes-from) is its own resolved path and
      one the owner may mount (read-only where the share is); volumes use the local driver
  I9  a container that sees a host path runs as the owner's uid and one of the owner's gids,
      with no-new-privileges and no restart policy

`violations()` is pure over the inspect data and an `Expectation` (the facts about the owner,
computed by the caller). Must not talk to the engine or the database.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ds01.config import Config
from ds01.errors import Ds01Error
from ds01.identity import Caller, group_ids
from ds01.model.limits import Limits
from ds01.runtime.engine import Engine
from ds01.runtime.spec import (
    DEVICE_LIST_DIR,
    ENV_VISIBLE_DEVICES,
    NVIDIA_DRIVER,
    VISIBLE_DEVICES_CPU_ONLY,
    cgroup_parent,
    is_device_list_path,
    normalize_cap,
)
from ds01.runtime.stamp import effective_cpus, swap_allowed
from ds01.services.hostpaths import allowed_host_path, host_fitted
from ds01.services.owners import ObjectKind, OwnerBook

DEFAULT_SHM = 64 * 1024 * 1024
NO_NEW_PRIVILEGES = frozenset(
    {"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"}
)
NAMESPACES = ("PidMode", "IpcMode", "UTSMode", "UsernsMode", "NetworkMode")


@dataclass(frozen=True)
class Violation:
    """One broken invariant: `code` (I1…I9 family name) and what was found."""

    code: str
    detail: str

    def __str__(self) -> str:
        return self.detail


@dataclass(frozen=True)
class Expectation:
    """What the container's owner may have.

    units: the unit UUIDs of the container's live allocation (empty: CPU-only; None: no live
    allocation, so no GPU at all). host_path(path, read_write) says why the owner may not mount
    a host path, or None when they may. container_owner(ref) is the recorded owner of another
    container (by name or ID), None when unknown.
    """

    owner: str
    uid: int
    gid: int
    gids: frozenset[int]
    owner_is_root: bool
    limits: Limits
    cap_add: frozenset[str]
    cgroup_parent: str
    units: tuple[str, ...] | None
    runtimes: frozenset[str]
    host_path: Callable[[str, bool], str | None]
    container_owner: Callable[[str], str | None]


def violations(data: Mapping[str, Any], exp: Expectation) -> list[Violation]:
    """Every invariant the stored container breaks; empty when it may run."""
    hc: Mapping[str, Any] = data.get("HostConfig") or {}
    cfg: Mapping[str, Any] = data.get("Config") or {}
    mounts = [m for m in data.get("Mounts") or [] if isinstance(m, dict)]
    out: list[Violation] = []
    out += _privileges(data, hc, exp)
    out += _namespaces(hc, exp)
    out += _limits(hc, mounts, exp.limits)
    out += _gpus(hc, cfg, mounts, exp)
    host_paths, found = _mounts(mounts, exp)
    out += found
    if host_paths and not exp.owner_is_root:
        out += _runs_as_owner(hc, cfg, exp, host_paths)
    return out


def _v(code: str, detail: str) -> Violation:
    return Violation(code, detail)


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


# ---- I1, I3, I4, I5 -----------------------------------------------------------------------


def _privileges(
    data: Mapping[str, Any], hc: Mapping[str, Any], exp: Expectation
) -> list[Violation]:
    out = []
    if hc.get("Privileged"):
        out.append(_v("privileged", "it is privileged"))
    extra = sorted({normalize_cap(str(c)) for c in hc.get("CapAdd") or []} - exp.cap_add)
    if extra:
        out.append(_v("capabilities", f"it adds the capabilities {', '.join(extra)}"))
    if hc.get("Capabilities"):
        out.append(_v("capabilities", "it replaces the capability set"))
    if hc.get("Devices") or hc.get("DeviceCgroupRules"):
        out.append(_v("devices", "it has host devices or device cgroup rules"))
    runtime = str(hc.get("Runtime") or "runc")
    if runtime not in exp.runtimes:
        out.append(_v("runtime", f"it uses the runtime {runtime}"))
    for opt in hc.get("SecurityOpt") or []:
        if str(opt).strip().lower() not in NO_NEW_PRIVILEGES:
            out.append(_v("security_opt", f"it has the security option {opt}"))
    if str(data.get("AppArmorProfile") or "").lower() == "unconfined":
        out.append(_v("security_opt", "its AppArmor profile is unconfined"))
    if hc.get("MaskedPaths") == [] or hc.get("ReadonlyPaths") == []:
        out.append(_v("security_opt", "its masked or read-only /proc paths were removed"))
    if _int(hc.get("CpuRealtimePeriod")) or _int(hc.get("CpuRealtimeRuntime")):
        out.append(_v("engine_setting", "it asks for real-time CPU time"))
    if hc.get("OomKillDisable"):
        out.append(_v("engine_setting", "it opts out of the OOM killer"))
    if _int(hc.get("OomScoreAdj")) < 0:
        out.append(_v("engine_setting", "it lowers its OOM score"))
    parent = str(hc.get("CgroupParent") or "")
    if parent != exp.cgroup_parent:
        out.append(
            _v(
                "cgroup_parent",
                f"its cgroup parent is {parent or '(none)'}, not {exp.cgroup_parent}",
            )
        )
    return out


# ---- I2 -----------------------------------------------------------------------------------


def _namespaces(hc: Mapping[str, Any], exp: Expectation) -> list[Violation]:
    out = []
    for key in NAMESPACES:
        value = str(hc.get(key) or "")
        if value.lower() == "host":
            out.append(_v("namespace", f"it shares the host's namespace ({key}=host)"))
        elif value.startswith("container:"):
            ref = value.split(":", 1)[1]
            if exp.container_owner(ref) != exp.owner:
                out.append(_v("namespace", f"it joins the namespace of container {ref}, not yours"))
    for raw in hc.get("VolumesFrom") or []:
        ref = str(raw).split(":", 1)[0]
        if exp.container_owner(ref) != exp.owner:
            out.append(_v("volumes_from", f"it takes the volumes of container {ref}, not yours"))
    return out


# ---- I6 -----------------------------------------------------------------------------------


def _limits(hc: Mapping[str, Any], mounts: list[dict[str, Any]], lim: Limits) -> list[Violation]:
    out = []
    cpus = effective_cpus(hc)
    if lim.cpus is not None and (cpus is None or cpus > lim.cpus + 1e-9):
        shown = "no CPU limit" if cpus is None else f"{cpus:g} CPUs"
        out.append(_v("limit", f"it has {shown}; your limit is {lim.cpus:g}"))
    if lim.memory_bytes is not None:
        memory, swap = _int(hc.get("Memory")), _int(hc.get("MemorySwap"))
        if memory <= 0 or memory > lim.memory_bytes:
            out.append(_v("limit", f"its memory limit {memory or 'none'} is above yours"))
        elif (
            swap < 0
            or (swap == 0 and 2 * memory > swap_allowed(memory, lim))
            or (swap > swap_allowed(memory, lim))
        ):
            out.append(_v("limit", f"its memory+swap limit {swap} is above yours"))
    if lim.shm_bytes is not None and (_int(hc.get("ShmSize")) or DEFAULT_SHM) > lim.shm_bytes:
        out.append(_v("limit", f"its /dev/shm size {hc.get('ShmSize')} is above yours"))
    tmpfs = hc.get("Tmpfs") or {}
    shm_mounts = [m for m in mounts if m.get("Type") == "tmpfs" and _norm(m) == "/dev/shm"]
    if (isinstance(tmpfs, dict) and any(_clean(str(k)) == "/dev/shm" for k in tmpfs)) or shm_mounts:
        out.append(_v("limit", "it mounts its own tmpfs over /dev/shm, past the --shm-size limit"))
    if lim.pids is not None:
        pids = _int(hc.get("PidsLimit"))
        if pids <= 0 or pids > lim.pids:
            out.append(
                _v("limit", f"its process limit {pids if pids > 0 else 'none'} is above yours")
            )
    return out


# ---- I7 -----------------------------------------------------------------------------------


def _gpus(
    hc: Mapping[str, Any], cfg: Mapping[str, Any], mounts: list[dict[str, Any]], exp: Expectation
) -> list[Violation]:
    out = []
    allowed = set(exp.units or ())
    asked: list[str] = []
    for req in hc.get("DeviceRequests") or []:
        if not isinstance(req, dict):
            continue
        ids = [str(i) for i in req.get("DeviceIDs") or []]
        if _int(req.get("Count")) != 0 or str(req.get("Driver") or "") != NVIDIA_DRIVER:
            out.append(_v("gpus", "it asks for GPUs by count or by another driver, not by ID"))
        asked += ids
    foreign = sorted(set(asked) - allowed)
    if foreign:
        out.append(_v("gpus", f"it asks for {', '.join(foreign)}, outside its live allocation"))
    ours = {f"{DEVICE_LIST_DIR}/{u}" for u in asked}
    listed = set()
    for m in mounts:
        dest = str(m.get("Destination") or "")
        if not is_device_list_path(dest):
            continue
        if dest in ours and m.get("Type") == "bind" and m.get("Source") == "/dev/null":
            listed.add(dest)
        else:
            out.append(_v("device_list", f"it mounts {dest}, where NVIDIA reads a GPU list"))
    missing = sorted(ours - listed)
    if missing:
        out.append(_v("device_list", f"it lacks ds01's device-list mounts {', '.join(missing)}"))
    visible = _env(cfg).get(ENV_VISIBLE_DEVICES)
    if not asked and visible != VISIBLE_DEVICES_CPU_ONLY:
        out.append(_v("gpus", f"a CPU-only container must have {ENV_VISIBLE_DEVICES}=void"))
    if asked and visible is not None and not set(visible.split(",")) <= set(asked):
        out.append(_v("gpus", f"its {ENV_VISIBLE_DEVICES}={visible} is wider than its GPUs"))
    return out


def _env(cfg: Mapping[str, Any]) -> dict[str, str]:
    """The environment as the process sees it (a later entry wins)."""
    out = {}
    for entry in cfg.get("Env") or []:
        key, _, value = str(entry).partition("=")
        out[key] = value
    return out


# ---- I8, I9 -------------------------------------------------------------------------------


def _clean(path: str) -> str:
    return os.path.normpath("/" + path.lstrip("/"))


def _norm(m: Mapping[str, Any]) -> str:
    return _clean(str(m.get("Destination") or ""))


def _mounts(mounts: list[dict[str, Any]], exp: Expectation) -> tuple[list[str], list[Violation]]:
    host_paths: list[str] = []
    out = []
    for m in mounts:
        kind, dest = str(m.get("Type") or ""), str(m.get("Destination") or "")
        if is_device_list_path(dest):
            continue  # judged with the GPUs
        if kind == "bind":
            source = str(m.get("Source") or "")
            host_paths.append(source)
            if exp.owner_is_root:
                continue
            why = exp.host_path(source, bool(m.get("RW", True)))
            if why is not None:
                out.append(_v("host_path", f"it mounts {source}: {why}"))
        elif kind == "volume":
            if str(m.get("Driver") or "local") != "local":
                out.append(
                    _v("host_path", f"its volume at {dest} uses the driver {m.get('Driver')}")
                )
        elif kind != "tmpfs":
            out.append(_v("host_path", f"it has a {kind or 'typeless'} mount at {dest}"))
    return host_paths, out


def _runs_as_owner(
    hc: Mapping[str, Any], cfg: Mapping[str, Any], exp: Expectation, paths: list[str]
) -> list[Violation]:
    out = []
    where = ", ".join(paths[:3])
    uid, sep, gid = str(cfg.get("User") or "").partition(":")
    if not (
        uid.isdigit() and int(uid) == exp.uid and sep and gid.isdigit() and int(gid) in exp.gids
    ):
        out.append(
            _v(
                "user",
                f"it mounts {where} but runs as {cfg.get('User') or 'the image user (root)'}, "
                f"not {exp.uid}:{exp.gid}",
            )
        )
    extra = [g for g in hc.get("GroupAdd") or [] if not (str(g).isdigit() and int(g) in exp.gids)]
    if extra:
        out.append(_v("user", f"it mounts {where} and adds the groups {extra}"))
    opts = {str(o).strip().lower() for o in hc.get("SecurityOpt") or []}
    if not opts & NO_NEW_PRIVILEGES:
        out.append(_v("user", f"it mounts {where} without no-new-privileges"))
    restart = (hc.get("RestartPolicy") or {}).get("Name") or ""
    if restart not in ("", "no"):
        out.append(_v("user", f"it mounts {where} with the restart policy {restart}"))
    return out


# ---- facts about an owner -----------------------------------------------------------------


def host_path_rule(owner: Caller, config: Config) -> Callable[[str, bool], str | None]:
    """The mount rule of services.hostpaths.allowed_host_path, for a path the engine stored:
    allowed only if it is its own resolved path (a symlink swapped in since is refused), and
    read-only where the share is."""

    def check(path: str, read_write: bool) -> str | None:
        try:
            grant = allowed_host_path(owner, path, config, directories_only=False)
        except Ds01Error as err:
            return err.what
        if grant.real != path:
            return f"it now resolves to {grant.real}"
        if grant.read_only and read_write:
            return "that share is read-only"
        return None

    return check


def owner_gids(owner: Caller) -> frozenset[int]:
    """The group IDs a container of `owner` may run with: those NSS gave with the owner's
    account (Caller.gids, no second lookup per container), else asked now."""
    if owner.gids:
        return owner.gids | {owner.gid}
    return group_ids(owner.name, owner.gid)


def describe(found: list[Violation]) -> str:
    return "; ".join(str(v) for v in found)


def expectation_for(
    owner: Caller,
    config: Config,
    *,
    cgroup_driver: str,
    default_runtime: str,
    units: tuple[str, ...] | None,
    container_owner: Callable[[str], str | None],
) -> Expectation:
    """The facts about `owner` that the invariants compare a container with."""
    limits = host_fitted(config.resolve(owner.name, owner.groups).limits)
    return Expectation(
        owner=owner.name,
        uid=owner.uid,
        gid=owner.gid,
        gids=owner_gids(owner),
        owner_is_root=owner.is_root,
        limits=limits,
        cap_add=frozenset(normalize_cap(c) for c in config.gate.cap_add),
        cgroup_parent=cgroup_parent(owner.name, cgroup_driver),
        units=units,
        runtimes=frozenset({"runc", default_runtime or "runc"}),
        host_path=host_path_rule(owner, config),
        container_owner=container_owner,
    )


def judge(
    engine: Engine,
    owners: OwnerBook,
    config: Config,
    owner: Caller,
    data: Mapping[str, Any],
    units: tuple[str, ...] | None,
) -> list[Violation]:
    """violations() for a container of `owner`, with the engine's facts read through `engine`
    (the daemon's side: deploy and the invariant sweep; the gate has its own async reader)."""
    exp = expectation_for(
        owner,
        config,
        cgroup_driver=engine.info_cgroup_driver(),
        default_runtime=engine.info_default_runtime(),
        units=units,
        container_owner=lambda ref: owners.owner(ObjectKind.CONTAINER, ref),
    )
    return violations(data, exp)
