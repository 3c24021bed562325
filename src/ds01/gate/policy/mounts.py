"""Binds and mounts in a container create: which host paths and volumes a container may use.

Host paths go through the same rule as `ds01 container deploy` (services.hostpaths.
allowed_host_path): resolved path; never /, /etc, /proc, /sys, /dev, /run (the Docker and ds01
sockets), Docker's state; a shared path from the config (read-only if the share is) or a path the
caller owns — so other users' homes and a symlink the user made to /etc are refused. The
forwarded request names the resolved path. Named volumes must be the caller's; missing ones are
created with the caller as owner. Propagation that would leak mounts back to the host, SELinux
relabelling, and volume driver options (the local driver can bind any host path) are refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ds01.errors import Refusal, UsageError
from ds01.gate.policy import volumes_networks as vn
from ds01.gate.policy.context import Ctx
from ds01.gate.policy.jsonbody import as_bool, as_list, as_str, as_str_map, canonical, short
from ds01.gate.refusal import GateRefusal
from ds01.runtime.spec import is_device_list_path
from ds01.services.hostpaths import allowed_host_path

MOUNT_FIELDS = (
    "Type",
    "Source",
    "Target",
    "ReadOnly",
    "Consistency",
    "BindOptions",
    "VolumeOptions",
    "TmpfsOptions",
    "ClusterOptions",
)
BIND_OPTION_FIELDS = (
    "Propagation",
    "NonRecursive",
    "CreateMountpoint",
    "ReadOnlyNonRecursive",
    "ReadOnlyForceRecursive",
)
VOLUME_OPTION_FIELDS = ("NoCopy", "Labels", "DriverConfig", "Subpath")
TMPFS_OPTION_FIELDS = ("SizeBytes", "Mode", "Options")
SAFE_PROPAGATION = ("", "private", "rprivate", "slave", "rslave")
BIND_MODES = frozenset({"ro", "rw", "nocopy", "private", "rprivate", "slave", "rslave"})


@dataclass
class MountsResult:
    host_paths: list[str] = field(default_factory=list)  # resolved host paths bind-mounted
    volumes_to_create: list[str] = field(default_factory=list)


def _host_path(ctx: Ctx, path: str, where: str) -> tuple[str, bool]:
    try:
        grant = allowed_host_path(ctx.caller, path, ctx.config, directories_only=False)
    except Refusal as err:
        raise GateRefusal(
            "create.mount_path", err.what, why=err.why, fix=err.fix, summary=f"{where} {path}"
        ) from None
    except UsageError as err:
        raise GateRefusal(
            "create.mount_missing", f"mounting {err.what}", fix=err.fix, summary=f"{where} {path}"
        ) from None
    return grant.real, grant.read_only


async def _volume(ctx: Ctx, name: str, result: MountsResult) -> None:
    exists = await vn.require_volume(ctx, name, "create.volume_owner", "mount")
    if not exists and name not in result.volumes_to_create:
        result.volumes_to_create.append(name)


def check_target(target: str, where: str) -> None:
    """No mount of any kind may land where NVIDIA's hook reads its device list: only ds01
    puts the allocated GPUs there (runtime.spec.device_list_mounts)."""
    if is_device_list_path(target):
        raise GateRefusal(
            "create.device_list_mount", f"{where} {target}", summary=f"{where} {target}"
        )


def check_body_volumes(body: dict[str, Any]) -> None:
    """Anonymous volumes (`-v /path`, Config.Volumes) count as mounts to the hook too."""
    volumes = body.get("Volumes")
    if isinstance(volumes, dict):
        for target in volumes:
            check_target(str(target), "a volume at")


async def check(ctx: Ctx, hc: dict[str, Any]) -> MountsResult:
    """Check (and rewrite in place) HostConfig.Binds and HostConfig.Mounts."""
    result = MountsResult()
    tmpfs = hc.get("Tmpfs")
    if isinstance(tmpfs, dict):
        for target in tmpfs:
            check_target(str(target), "a tmpfs at")
    binds = []
    for i, raw in enumerate(as_list(hc.get("Binds"), "HostConfig.Binds")):
        spec = as_str(raw, f"HostConfig.Binds[{i}]")
        binds.append(await _bind(ctx, spec, result))
    if "Binds" in hc:
        hc["Binds"] = binds or None
    mounts = []
    for i, raw in enumerate(as_list(hc.get("Mounts"), "HostConfig.Mounts")):
        mounts.append(await _mount(ctx, raw, f"HostConfig.Mounts[{i}].", result))
    if "Mounts" in hc:
        hc["Mounts"] = mounts or None
    return result


async def _bind(ctx: Ctx, spec: str, result: MountsResult) -> str:
    """'SRC:DST[:MODE,…]' (Linux form: SRC holds no ':')."""
    parts = spec.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        raise GateRefusal("create.mount_option", f"-v {spec!r} is not SRC:DST[:OPTIONS]")
    src, dst = parts[0], parts[1]
    check_target(dst, "a mount at")
    modes = [m for m in (parts[2].split(",") if len(parts) == 3 else []) if m]
    bad = [m for m in modes if m not in BIND_MODES]
    if bad:
        raise GateRefusal(
            "create.mount_option",
            f"-v {spec}: the option {bad[0]!r} was refused",
            summary=f"bind {short(spec)}",
        )
    if not src.startswith("/"):
        await _volume(ctx, src, result)
        return spec
    real, read_only = await ctx.run(_host_path, ctx, src, "-v")
    result.host_paths.append(real)
    if read_only:
        modes = [m for m in modes if m != "rw"]
        if "ro" not in modes:
            modes.append("ro")
    return f"{real}:{dst}" + (f":{','.join(modes)}" if modes else "")


async def _mount(ctx: Ctx, raw: Any, where: str, result: MountsResult) -> dict[str, Any]:
    m = canonical(raw, MOUNT_FIELDS, where, rule="create.mount_option")
    kind = as_str(m.get("Type"), where + "Type")
    source = as_str(m.get("Source"), where + "Source")
    check_target(as_str(m.get("Target"), where + "Target"), "a mount at")
    if kind == "bind":
        opts = canonical(
            m.get("BindOptions"),
            BIND_OPTION_FIELDS,
            where + "BindOptions.",
            rule="create.mount_option",
        )
        propagation = as_str(opts.get("Propagation"), where + "BindOptions.Propagation")
        if propagation not in SAFE_PROPAGATION:
            raise GateRefusal(
                "create.mount_option",
                f"--mount bind-propagation={propagation} was refused",
                summary=f"mount {source}",
            )
        if m.get("VolumeOptions") or m.get("TmpfsOptions"):
            raise GateRefusal("create.mount_option", "a bind mount with volume or tmpfs options")
        real, read_only = await ctx.run(_host_path, ctx, source, "--mount")
        result.host_paths.append(real)
        m["Source"] = real
        if read_only:
            m["ReadOnly"] = True
        if opts:
            m["BindOptions"] = opts
        return m
    if kind == "volume":
        opts = canonical(
            m.get("VolumeOptions"),
            VOLUME_OPTION_FIELDS,
            where + "VolumeOptions.",
            rule="create.mount_option",
        )
        driver = opts.get("DriverConfig")
        if driver:
            raise GateRefusal(
                "create.mount_option",
                f"--mount with volume driver options {short(driver)} was refused",
                summary=f"mount volume {source}",
            )
        labels = as_str_map(opts.get("Labels"), where + "VolumeOptions.Labels")
        vn.check_labels(labels, "a volume mount")
        if source:
            await _volume(ctx, source, result)
        if opts:
            m["VolumeOptions"] = opts
        as_bool(m.get("ReadOnly"), where + "ReadOnly")
        return m
    if kind == "tmpfs":
        if source:
            raise GateRefusal("create.mount_option", "a tmpfs mount with a source was refused")
        m["TmpfsOptions"] = canonical(
            m.get("TmpfsOptions"),
            TMPFS_OPTION_FIELDS,
            where + "TmpfsOptions.",
            rule="create.mount_option",
        )
        return m
    raise GateRefusal(
        "create.mount_option",
        f"--mount type={kind or '(none)'} was refused",
        summary=f"mount {short(raw)}",
    )


async def create_volumes(ctx: Ctx, result: MountsResult) -> None:
    for name in result.volumes_to_create:
        await vn.create_volume(ctx, name)
