"""POST /containers/create: the body rules, then the stamping.

Read whole (capped), parsed strictly (jsonbody), every field known by name — Config at the top
level (the engine also reads HostConfig fields there, for old clients: unknown to the gate, so
refused), HostConfig, NetworkingConfig. Refused: empty or unparsable bodies; --privileged; added
capabilities outside the allow-list; weakened security options; host pid/ipc/uts/userns/network/
cgroup namespaces; devices and device cgroup rules; other runtimes; a cgroup parent; masked-path,
annotation, storage, log-driver and OOM settings; GPU-selecting environment variables; ds01.*
labels; host ports below 1024; other users' containers, networks and volumes; host paths the
caller may not use (mounts.py); limits above the caller's (limits.py).

Containers with host directories run as the caller (uid:gid), with no-new-privileges and no
restart policy: a root process, or a set-uid binary in the image, could otherwise leave set-uid
root files in the caller's home. A named --user there is resolved in the image's own accounts
and forwarded as the caller's numbers, or refused (named_user.py).

Then the gate allocates (gpus.py), and stamps what ds01 owns, overwriting the request: labels
ds01.managed/owner/allocation/name/created, the per-user cgroup parent, DeviceRequests = the
allocated UUIDs (or NVIDIA_VISIBLE_DEVICES=void for CPU-only), and the limits. After the engine
answers: 201 → the allocation becomes active on the new container ID; anything else → released.
"""

from __future__ import annotations

import json
import logging
import posixpath
from typing import Any

from ds01 import faults
from ds01.gate.policy import gpus, images, limits, mounts, named_user, outcome, ownership
from ds01.gate.policy import volumes_networks as vn
from ds01.gate.policy.context import Ctx, Plan
from ds01.gate.policy.jsonbody import (
    as_bool,
    as_int,
    as_list,
    as_str,
    as_str_map,
    canonical,
    dump,
    parse_object,
    short,
)
from ds01.gate.refusal import GateRefusal, LocalReply
from ds01.runtime import stamp
from ds01.runtime.nvenv import env_problem
from ds01.runtime.spec import cgroup_parent, normalize_cap
from ds01.services.hostpaths import host_fitted
from ds01.services.owners import ObjectKind

log = logging.getLogger("ds01d.gate")

CONFIG_FIELDS = (
    "Hostname",
    "Domainname",
    "User",
    "AttachStdin",
    "AttachStdout",
    "AttachStderr",
    "ExposedPorts",
    "Tty",
    "OpenStdin",
    "StdinOnce",
    "Env",
    "Cmd",
    "Healthcheck",
    "ArgsEscaped",
    "Image",
    "Volumes",
    "WorkingDir",
    "Entrypoint",
    "NetworkDisabled",
    "MacAddress",
    "OnBuild",
    "Labels",
    "StopSignal",
    "StopTimeout",
    "Shell",
    "HostConfig",
    "NetworkingConfig",
)
# Checked by a rule below (or by mounts/limits/gpus).
HOST_CHECKED = (
    "Binds",
    "Mounts",
    "NetworkMode",
    "PortBindings",
    "RestartPolicy",
    "VolumeDriver",
    "VolumesFrom",
    "CapAdd",
    "Capabilities",
    "CgroupnsMode",
    "GroupAdd",
    "IpcMode",
    "Cgroup",
    "Links",
    "OomScoreAdj",
    "PidMode",
    "Privileged",
    "SecurityOpt",
    "StorageOpt",
    "UTSMode",
    "UsernsMode",
    "ShmSize",
    "Runtime",
    "Isolation",
    "LogConfig",
    "MaskedPaths",
    "ReadonlyPaths",
    "Annotations",
    "CgroupParent",
    "Devices",
    "DeviceCgroupRules",
    "DeviceRequests",
    "CpuRealtimePeriod",
    "CpuRealtimeRuntime",
    "OomKillDisable",
    "NanoCpus",
    "CpuPeriod",
    "CpuQuota",
    "Memory",
    "MemorySwap",
    "PidsLimit",
)
# Any value is fine: they shape the container inside its own namespaces and cgroup.
HOST_FREE = (
    "ContainerIDFile",
    "AutoRemove",
    "CapDrop",
    "Dns",
    "DnsOptions",
    "DnsSearch",
    "ExtraHosts",
    "PublishAllPorts",
    "ReadonlyRootfs",
    "Tmpfs",
    "Sysctls",
    "ConsoleSize",
    "Init",
    "Ulimits",
    "CpuShares",
    "BlkioWeight",
    "BlkioWeightDevice",
    "BlkioDeviceReadBps",
    "BlkioDeviceWriteBps",
    "BlkioDeviceReadIOps",
    "BlkioDeviceWriteIOps",
    "CpusetCpus",
    "CpusetMems",
    "KernelMemory",
    "KernelMemoryTCP",
    "MemoryReservation",
    "MemorySwappiness",
    "CpuCount",
    "CpuPercent",
    "IOMaximumIOps",
    "IOMaximumBandwidth",
)
HOST_FIELDS = HOST_CHECKED + HOST_FREE
ENDPOINT_FIELDS = (
    "IPAMConfig",
    "Links",
    "Aliases",
    "NetworkID",
    "EndpointID",
    "Gateway",
    "IPAddress",
    "IPPrefixLen",
    "IPv6Gateway",
    "GlobalIPv6Address",
    "GlobalIPv6PrefixLen",
    "MacAddress",
    "DriverOpts",
    "DNSNames",
)
ALLOWED_SECURITY_OPTS = frozenset(
    {"no-new-privileges", "no-new-privileges=true", "no-new-privileges:true"}
)
CREATE_FROM = "create containers from"
BUILTIN_NET_MODES = frozenset({"", "default", "bridge", "none"})
LOG_DRIVERS = frozenset({"", "json-file", "local", "none"})


def _refuse(rule: str, what: str, summary: str | None = None) -> GateRefusal:
    return GateRefusal(rule, what, summary=summary or what)


# ---- host privileges --------------------------------------------------------------------


def _privileges(ctx: Ctx, hc: dict[str, Any]) -> None:
    if as_bool(hc.get("Privileged"), "HostConfig.Privileged"):
        raise _refuse("create.privileged", "--privileged was refused", "Privileged=true")
    allowed = {normalize_cap(c) for c in ctx.config.gate.cap_add}
    for cap in as_list(hc.get("CapAdd"), "HostConfig.CapAdd"):
        name = normalize_cap(as_str(cap, "HostConfig.CapAdd"))
        if name == "ALL" or name not in allowed:
            raise _refuse("create.cap_add", f"--cap-add {name} was refused", f"CapAdd={name}")
    if hc.get("Capabilities") is not None:
        raise _refuse(
            "create.cap_add",
            "setting the capability set was refused",
            f"Capabilities={short(hc.get('Capabilities'))}",
        )
    opts = [
        as_str(o, "HostConfig.SecurityOpt")
        for o in as_list(hc.get("SecurityOpt"), "HostConfig.SecurityOpt")
    ]
    for opt in opts:
        if opt.strip().lower() not in ALLOWED_SECURITY_OPTS:
            raise _refuse(
                "create.security_opt", f"--security-opt {opt} was refused", f"SecurityOpt={opt}"
            )
    for key, flag, ok in (
        ("PidMode", "--pid", ("",)),
        ("IpcMode", "--ipc", ("", "private", "shareable", "none")),
        ("UTSMode", "--uts", ("",)),
        ("UsernsMode", "--userns", ("",)),
        ("CgroupnsMode", "--cgroupns", ("", "private")),
        ("NetworkMode", "--network", ()),
    ):
        value = as_str(hc.get(key), f"HostConfig.{key}")
        if value.lower() == "host" or (
            ok and value not in ok and not value.startswith("container:")
        ):
            raise _refuse("create.namespace", f"{flag} {value} was refused", f"{key}={value}")
    devices = as_list(hc.get("Devices"), "HostConfig.Devices")
    if devices:
        first = devices[0].get("PathOnHost", "?") if isinstance(devices[0], dict) else devices[0]
        raise _refuse(
            "create.devices", f"--device {first} was refused", f"Devices={short(devices)}"
        )
    rules = as_list(hc.get("DeviceCgroupRules"), "HostConfig.DeviceCgroupRules")
    if rules:
        raise _refuse(
            "create.devices",
            f"--device-cgroup-rule {rules[0]} was refused",
            f"DeviceCgroupRules={short(rules)}",
        )
    runtime = as_str(hc.get("Runtime"), "HostConfig.Runtime")
    if runtime not in ("", "runc"):
        raise _refuse("create.runtime", f"--runtime {runtime} was refused", f"Runtime={runtime}")
    parent = as_str(hc.get("CgroupParent"), "HostConfig.CgroupParent")
    if parent:
        raise _refuse(
            "create.cgroup_parent",
            f"--cgroup-parent {parent} was refused",
            f"CgroupParent={parent}",
        )
    _engine_settings(hc)


async def _ipc_host(ctx: Ctx, hc: dict[str, Any]) -> None:
    """--ipc host is what PyTorch guides suggest for DataLoader workers' shared memory: the
    refusal names what gives that instead, with the caller's own limit."""
    value = as_str(hc.get("IpcMode"), "HostConfig.IpcMode")
    if value.lower() != "host":
        return
    shm = (await ctx.run(ctx.deps.allocations.limits_for, ctx.caller)).limits.shm_bytes
    fix = (
        "For shared memory (PyTorch DataLoader workers), drop --ipc host: your containers get "
        + (
            f"a /dev/shm of your limit, {limits.size_text(shm)}, without asking; --shm-size "
            f"asks for less (up to {limits.size_text(shm)}; 'ds01 quota' shows it)."
            if shm is not None
            else "the /dev/shm you ask for with --shm-size (e.g. --shm-size 16g)."
        )
    )
    raise GateRefusal(
        "create.namespace", f"--ipc {value} was refused", fix=fix, summary="IpcMode=host"
    )


def _engine_settings(hc: dict[str, Any]) -> None:
    checks: list[tuple[bool, str]] = [
        (hc.get("MaskedPaths") is not None, "--security-opt systempaths=unconfined (MaskedPaths)"),
        (hc.get("ReadonlyPaths") is not None, "changing ReadonlyPaths"),
        (bool(hc.get("Annotations")), "--annotation"),
        (bool(hc.get("StorageOpt")), "--storage-opt"),
        (as_str(hc.get("VolumeDriver"), "VolumeDriver") not in ("", "local"), "--volume-driver"),
        (bool(as_str(hc.get("Cgroup"), "Cgroup")), "HostConfig.Cgroup"),
        (as_int(hc.get("CpuRealtimePeriod"), "CpuRealtimePeriod") != 0, "--cpu-rt-period"),
        (as_int(hc.get("CpuRealtimeRuntime"), "CpuRealtimeRuntime") != 0, "--cpu-rt-runtime"),
        (as_bool(hc.get("OomKillDisable"), "OomKillDisable"), "--oom-kill-disable"),
        (as_int(hc.get("OomScoreAdj"), "OomScoreAdj") < 0, "a negative --oom-score-adj"),
        (as_str(hc.get("Isolation"), "Isolation") not in ("", "default"), "--isolation"),
    ]
    log = canonical(hc.get("LogConfig"), ("Type", "Config"), "HostConfig.LogConfig.")
    driver = as_str(log.get("Type"), "LogConfig.Type")
    checks.append((driver not in LOG_DRIVERS, f"--log-driver {driver}"))
    for bad, what in checks:
        if bad:
            raise _refuse("create.engine_setting", f"{what} was refused")


# ---- environment, labels, ports ---------------------------------------------------------


def _env(top: dict[str, Any]) -> list[str]:
    env = [as_str(e, "Env") for e in as_list(top.get("Env"), "Env")]
    for entry in env:
        key, _, value = entry.partition("=")
        why = env_problem(key, value)
        if why:
            raise _refuse("create.reserved_env", f"-e {key} was refused: {why}", f"Env {key}")
    return env


def _labels(top: dict[str, Any]) -> dict[str, str]:
    labels = as_str_map(top.get("Labels"), "Labels")
    vn.check_labels(labels, "--label")
    return labels


def _shm(hc: dict[str, Any]) -> None:
    """/dev/shm is sized by --shm-size (capped); a tmpfs of one's own there is not."""
    targets = [str(t) for t in (hc.get("Tmpfs") or {})] if isinstance(hc.get("Tmpfs"), dict) else []
    for raw in as_list(hc.get("Mounts"), "HostConfig.Mounts"):
        if isinstance(raw, dict):
            m = canonical(
                raw, mounts.MOUNT_FIELDS, "HostConfig.Mounts[].", rule="create.mount_option"
            )
            if as_str(m.get("Type"), "Type") == "tmpfs":
                targets.append(as_str(m.get("Target"), "Target"))
    for target in targets:
        if posixpath.normpath("/" + target.strip().lstrip("/")) == "/dev/shm":
            raise _refuse("create.shm_tmpfs", f"a tmpfs at {target} was refused", f"tmpfs {target}")


def _ports(hc: dict[str, Any]) -> None:
    bindings = hc.get("PortBindings") or {}
    if not isinstance(bindings, dict):
        raise GateRefusal("body.unparsable", "HostConfig.PortBindings must be an object")
    for port, items in bindings.items():
        for raw in as_list(items, f"PortBindings[{port}]"):
            b = canonical(raw, ("HostIp", "HostPort"), f"HostConfig.PortBindings[{port}].")
            host_port = as_str(b.get("HostPort"), "HostPort")
            low = host_port.split("-", 1)[0].strip()
            if low and low != "0" and (not low.isdigit() or int(low) < 1024):
                raise _refuse(
                    "create.port",
                    f"-p {host_port}:{port} was refused",
                    f"PortBindings {host_port}:{port}",
                )


# ---- references to other containers and networks ----------------------------------------


async def _container_ref(ctx: Ctx, ref: str, what: str) -> str:
    data = await ownership.inspect(ctx, ref)
    if not ctx.is_admin and ownership.owner_of(data) != ctx.caller.name:
        raise _refuse(
            "create.container_ref",
            f"{what} {ref} was refused: that container is not yours",
            f"{what} {ref}",
        )
    return str(data["Id"])


async def _container_refs(ctx: Ctx, hc: dict[str, Any]) -> list[str]:
    """Resolve references to other containers (must be the caller's) to full IDs; the host
    paths the container inherits through --volumes-from."""
    for key, flag in (("PidMode", "--pid"), ("IpcMode", "--ipc"), ("NetworkMode", "--network")):
        value = as_str(hc.get(key), key)
        if value.startswith("container:"):
            full = await _container_ref(ctx, value.split(":", 1)[1], f"{flag} container:")
            hc[key] = f"container:{full}"
    volumes_from = []
    inherited: list[str] = []
    for raw in as_list(hc.get("VolumesFrom"), "HostConfig.VolumesFrom"):
        ref, sep, mode = as_str(raw, "VolumesFrom").partition(":")
        full = await _container_ref(ctx, ref, "--volumes-from")
        volumes_from.append(full + sep + mode)
        # Its host directories come along: the run-as-you rules apply to them too.
        inherited += ownership.host_binds(await ownership.inspect(ctx, full))
    if volumes_from:
        hc["VolumesFrom"] = volumes_from
    hc["Links"] = await _links(ctx, hc.get("Links"), "HostConfig.Links") or None
    return inherited


async def _links(ctx: Ctx, value: Any, where: str) -> list[str]:
    out = []
    for raw in as_list(value, where):
        ref, sep, alias = as_str(raw, where).partition(":")
        await _container_ref(ctx, ref, "--link")
        out.append(ref + sep + alias)
    return out


async def endpoint_settings(ctx: Ctx, raw: Any, where: str) -> dict[str, Any]:
    ep = canonical(raw, ENDPOINT_FIELDS, where)
    if as_str_map(ep.get("DriverOpts"), where + "DriverOpts"):
        raise _refuse("create.engine_setting", "network endpoint driver options were refused")
    if ep.get("Links"):
        ep["Links"] = await _links(ctx, ep.get("Links"), where + "Links")
    return ep


async def _networks(ctx: Ctx, hc: dict[str, Any], net: dict[str, Any]) -> None:
    mode = as_str(hc.get("NetworkMode"), "NetworkMode")
    if mode not in BUILTIN_NET_MODES and not mode.startswith("container:"):
        await vn.require_network(ctx, mode, "use", builtin_ok=True)
    endpoints = net.get("EndpointsConfig") or {}
    if not isinstance(endpoints, dict):
        raise GateRefusal("body.unparsable", "NetworkingConfig.EndpointsConfig must be an object")
    out = {}
    for name, raw in endpoints.items():
        if name not in BUILTIN_NET_MODES:
            await vn.require_network(ctx, name, "use", builtin_ok=True)
        out[name] = await endpoint_settings(ctx, raw, f"NetworkingConfig.EndpointsConfig[{name}].")
    if endpoints:
        net["EndpointsConfig"] = out


# ---- containers with host directories ---------------------------------------------------


def _host_dir_rules(ctx: Ctx, top: dict[str, Any], hc: dict[str, Any], paths: list[str]) -> None:
    if not paths or ctx.caller.is_root:
        return
    caller = ctx.caller
    user = as_str(top.get("User"), "User")
    if not user:
        top["User"] = f"{caller.uid}:{caller.gid}"
    elif not ownership.user_is_caller(caller, user):
        raise _refuse(
            "create.user",
            f"--user {user} with host directories mounted was refused",
            f"User={user} binds={paths}",
        )
    elif not user.partition(":")[2]:
        # '-u UID' alone runs with gid 0 (root's group): give it the caller's own group.
        top["User"] = f"{user.partition(':')[0]}:{caller.gid}"
    gids = ownership.caller_gids(caller)
    for g in as_list(hc.get("GroupAdd"), "HostConfig.GroupAdd"):
        text = as_str(g, "GroupAdd")
        if not (text.isdigit() and int(text) in gids):
            raise _refuse(
                "create.user", f"--group-add {text} with host directories mounted was refused"
            )
    restart = canonical(
        hc.get("RestartPolicy"), ("Name", "MaximumRetryCount"), "HostConfig.RestartPolicy."
    )
    if as_str(restart.get("Name"), "RestartPolicy.Name") not in ("", "no"):
        raise _refuse(
            "create.restart_policy",
            f"--restart {restart.get('Name')} with host directories mounted was refused",
        )
    # no-new-privileges is stamped with the rest (runtime/stamp.py).


async def _named_user(
    ctx: Ctx, top: dict[str, Any], image: dict[str, Any] | None, paths: list[str]
) -> None:
    """`--user vscode` with host directories: the numeric pair, if the image's own accounts
    say the name is the caller (named_user.py); else refused."""
    user = as_str(top.get("User"), "User")
    if not paths or ctx.caller.is_root or not user or not named_user.is_named(user):
        return
    if image is None:
        # The docker CLI pulls on a 404 and creates again; nothing to resolve the name in yet.
        raise LocalReply(404, f"No such image: {as_str(top.get('Image'), 'Image')}")
    gids = await ctx.run(ownership.caller_gids, ctx.caller)
    top["User"] = await named_user.numeric_for_caller(
        ctx, str(image.get("Id", "")), user, gids, rule="create.user", where="docker run"
    )


# ---- the rule, end to end ---------------------------------------------------------------


async def check_create(ctx: Ctx, body: bytes | None) -> Plan:
    data = parse_object(body or b"", "container create")
    top = canonical(data, CONFIG_FIELDS, "")
    hc = canonical(top.get("HostConfig"), HOST_FIELDS, "HostConfig.")
    net = canonical(top.get("NetworkingConfig"), ("EndpointsConfig",), "NetworkingConfig.")
    name = ctx.req.query_first("name") or ""

    # 1. Pure checks: nothing is asked of anyone yet.
    ownership.check_container_name(ctx, name)
    await _ipc_host(ctx, hc)
    _privileges(ctx, hc)
    env = _env(top)
    labels = _labels(top)
    _ports(hc)
    _shm(hc)
    mounts.check_body_volumes(top)
    ask = gpus.parse(hc.get("DeviceRequests"))
    resolved = await ctx.run(ctx.deps.allocations.limits_for, ctx.caller)
    caps = host_fitted(resolved.limits)
    limits.check_caps(hc, caps)
    # 2. Checks that ask the engine (the image, other containers, networks, volumes).
    image = await images.usable_image(ctx, as_str(top.get("Image"), "Image"), CREATE_FROM)
    inherited = await _container_refs(ctx, hc)
    await _networks(ctx, hc, net)
    found = await mounts.check(ctx, hc)
    await _named_user(ctx, top, image, found.host_paths + inherited)
    _host_dir_rules(ctx, top, hc, found.host_paths + inherited)
    # 3. Side effects, only once everything passed: volumes, then the allocation.
    await mounts.create_volumes(ctx, found)
    driver = await ctx.cgroup_driver()
    row = await gpus.allocate(ctx, ask, name or None)

    # 4. Stamp what ds01 owns, over whatever the request said: the stamp deploy uses too.
    units = tuple(u.uuid for u in row.units)
    top["Env"] = env
    top["Labels"] = labels
    top["HostConfig"] = hc
    stamp.apply(
        top,
        stamp.Stamp(
            owner=ctx.caller.name,
            name=name,
            allocation_id=row.id,
            units=units,
            cgroup_parent=cgroup_parent(ctx.caller.name, driver),
            limits=caps,
            host_dirs=bool(found.host_paths or inherited) and not ctx.caller.is_root,
        ),
    )
    if net:
        top["NetworkingConfig"] = net

    svc = ctx.deps.allocations
    actor = ctx.caller.name

    async def after(status: int, reply: bytes | None) -> bytes | None:
        container_id = ""
        if status == 201 and reply:
            try:
                container_id = str(json.loads(reply).get("Id", ""))
            except (ValueError, AttributeError):
                container_id = ""
        if not container_id:
            await ctx.run(svc.release_by_daemon, row.id, "create_failed")
            return None
        faults.point("gate_create.answered")
        await ctx.run(
            ctx.deps.containers.owners.record,
            ObjectKind.CONTAINER,
            container_id,
            actor,
            origin="gate",
        )
        faults.point("gate_create.recorded")
        try:
            stored = await outcome.fresh_inspect(ctx, container_id)
            found = await outcome.judge(ctx, stored, ctx.caller, units)
        except BaseException:
            await _undo_create(ctx, container_id, row.id)
            raise
        if found:
            await _undo_create(ctx, container_id, row.id)
            raise outcome.refusal(name or container_id[:12], "creating", found)
        ownership.remember(ctx, stored, actor)
        await ctx.run(
            svc.activate, row.id, container_id=container_id, actor=actor, reason="created"
        )
        return None

    async def abort() -> None:
        await ctx.run(svc.release_by_daemon, row.id, "create_failed")

    return Plan(
        ctx.req.path,
        list(ctx.req.query),
        body=dump(top),
        capture_response=True,
        after=after,
        on_abort=abort,
        notes={"allocation": row.id, "gpus": [u.uuid for u in row.units]},
    )


async def _undo_create(ctx: Ctx, container_id: str, alloc_id: int) -> None:
    """Remove a container the engine made but ds01 refuses to run, and free its allocation."""
    status, _ = await ctx.engine.request("DELETE", f"/containers/{container_id}?force=1&v=1")
    if status not in (204, 404):
        # Left for reconcile: it is stopped by the invariant sweep if it ever runs.
        log.error("gate: could not remove refused container %s (%d)", container_id, status)
    await ctx.run(ctx.deps.allocations.release_by_daemon, alloc_id, "create_refused")
