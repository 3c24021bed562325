"""Checks of layer 3 (device permissions) and of the optional uvm compute gate.

    devices.present         /dev/nvidiactl and at least one /dev/nvidiaN exist
    devices.mode            every /dev/nvidia* node has the owner, group and mode of device_access
    devices.driver-params   the loaded driver creates nodes with those modes (live, or a copy of
                            /proc/driver/nvidia/params under --root)
    devices.group-members   device_access: group: every ds01 user is in the device group
    devices.uvm-gate        compute_gate: uvm: /dev/nvidia-uvm* 0660 root:ds01-gpu-host
    devices.rules-current   the udev rule and modprobe options are what apply writes

Repairs: chown/chmod of the nodes (under the root being checked), gpasswd for missing members
(live root only), re-rendering the rule files. Accounts are looked up in NSS even with --root.
"""

from __future__ import annotations

import grp
import os
import re
import stat
import subprocess
from pathlib import Path

from ds01.config.schema import GPU_HOST_GROUP
from ds01.host.doctor.base import Context, Result, Status, octal
from ds01.host.doctor.files import files_current
from ds01.host.render import DevicePolicy, device_policy
from ds01.host.users import (
    add_member_command,
    ds01_users,
    group_id,
    missing_from,
)

_NODE = re.compile(r"^nvidia(ctl|-modeset|-uvm|-uvm-tools|[0-9]+)$")
UVM_NODES = ("nvidia-uvm", "nvidia-uvm-tools")
_SKIP_NO_CONFIG = "config invalid (see config.valid)"


def nodes(ctx: Context) -> list[Path]:
    dev = ctx.at("/dev")
    try:
        names = sorted(n for n in os.listdir(dev) if _NODE.match(n))
    except OSError:
        return []
    return [dev / n for n in names]


def _group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _state(path: Path) -> tuple[int, str, int]:
    st = path.stat()
    return st.st_uid, _group_name(st.st_gid), stat.S_IMODE(st.st_mode)


def _repair_nodes(ctx: Context, paths: list[Path], group: str, mode: int) -> list[str]:
    gid = group_id(group)
    done: list[str] = []
    for path in paths:
        if gid is not None:
            os.chown(path, 0, gid)
        os.chmod(path, mode)
        done.append(f"{ctx.shown(path)} → root:{group} {octal(mode)}")
    return done


def check_present(ctx: Context) -> Result:
    rid = "devices.present"
    found = [p.name for p in nodes(ctx)]
    if "nvidiactl" in found and any(n[6:].isdigit() for n in found):
        return Result(rid, Status.PASS, f"{len(found)} NVIDIA device nodes", found)
    return Result(
        rid,
        Status.WARN,
        "no NVIDIA device nodes (/dev/nvidiactl and /dev/nvidiaN)",
        found or [f"nothing matching nvidia* in {ctx.shown(ctx.at('/dev'))}"],
        "Load the driver (nvidia-smi creates the nodes) or check that this host has GPUs.",
    )


def _wrong(ctx: Context, paths: list[Path], group: str, mode: int) -> list[tuple[Path, str]]:
    bad: list[tuple[Path, str]] = []
    for path in paths:
        try:
            uid, gname, have = _state(path)
        except OSError as err:
            bad.append((path, f"{ctx.shown(path)}: {err}"))
            continue
        if uid != 0 or gname != group or have != mode:
            bad.append(
                (
                    path,
                    f"{ctx.shown(path)}: uid {uid}, group {gname}, mode {octal(have)}; "
                    f"expected root:{group} {octal(mode)}",
                )
            )
    return bad


def check_mode(ctx: Context) -> Result:
    rid = "devices.mode"
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    policy = device_policy(ctx.config)
    found = [p for p in nodes(ctx) if p.name not in UVM_NODES or policy.uvm_group == policy.group]
    if not found:
        return Result(rid, Status.SKIP, "no NVIDIA device nodes (see devices.present)")
    bad = _wrong(ctx, found, policy.group, policy.mode)
    access = ctx.config.host.device_access
    if not bad:
        return Result(
            rid,
            Status.PASS,
            f"{len(found)} nodes are root:{policy.group} {octal(policy.mode)} "
            f"(device_access: {access})",
        )
    paths = [p for p, _ in bad]
    blocking = [p for p in paths if not _queries_work(p, policy)]
    return Result(
        rid,
        Status.FAIL if blocking else Status.WARN,
        f"{len(bad)} NVIDIA device nodes do not match device_access: {access}"
        + (" (some users cannot query the GPUs)" if blocking else ""),
        [why for _, why in bad],
        f"chown root:{policy.group} and chmod {octal(policy.mode)} them (`ds01 doctor --fix` "
        "does), then check devices.driver-params so the driver keeps these modes.",
        lambda: _repair_nodes(ctx, paths, policy.group, policy.mode),
    )


def _queries_work(path: Path, policy: DevicePolicy) -> bool:
    """Whether the intended users can still open the node (read+write) as it is now."""
    try:
        st = path.stat()
    except OSError:
        return False
    mode = stat.S_IMODE(st.st_mode)
    if policy.mode == 0o666:
        return mode & 0o006 == 0o006
    return mode & 0o060 == 0o060 and _group_name(st.st_gid) == policy.group


def check_driver_params(ctx: Context) -> Result:
    rid = "devices.driver-params"
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    params = ctx.at("/proc/driver/nvidia/params")  # under --root: a copy, if one was put there
    try:
        text = params.read_text()
    except OSError:
        if not ctx.live:
            return Result(rid, Status.SKIP, "needs the live host (--root is set)")
        return Result(rid, Status.SKIP, "the nvidia driver is not loaded")
    # "DeviceFileMode: 438" (decimal, = 0666); some drivers print the NVreg_ prefix.
    values = {
        k.strip().removeprefix("NVreg_"): v.strip()
        for k, _, v in (line.partition(":") for line in text.splitlines())
    }
    policy = device_policy(ctx.config)
    want_gid = 0 if policy.group == "root" else group_id(policy.group)
    have = (values.get("DeviceFileUID"), values.get("DeviceFileGID"), values.get("DeviceFileMode"))
    evidence = [f"DeviceFileUID={have[0]} DeviceFileGID={have[1]} DeviceFileMode={have[2]}"]
    try:
        ok = (
            int(have[0] or -1) == 0
            and int(have[1] or -1) == want_gid
            and (int(have[2] or -1) == policy.mode)
        )
    except ValueError:
        ok = False
    if ok:
        summary = "the driver creates nodes with the intended modes"
        return Result(rid, Status.PASS, summary, evidence)
    return Result(
        rid,
        Status.WARN,
        "the loaded driver creates device nodes with other modes than device_access wants",
        evidence,
        "Run `ds01 host apply --only devices`, check no other /etc/modprobe.d file sets "
        "NVreg_DeviceFile*, then reload the nvidia module (or reboot).",
    )


def check_group_members(ctx: Context) -> Result:
    rid = "devices.group-members"
    config = ctx.config
    if config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    if config.host.device_access != "group":
        return Result(rid, Status.SKIP, "device_access: open (no group needed to query)")
    group = config.host.device_group
    people = ds01_users(config).present
    if group_id(group) is None:
        return Result(
            rid,
            Status.FAIL,
            f"the device group '{group}' does not exist",
            fix="Run `ds01 host apply --only devices` on the host (it creates the group).",
        )
    missing = missing_from(group, people)
    if not missing:
        return Result(
            rid, Status.PASS, f"all {len(people)} ds01 users are in '{group}'", list(people)
        )

    def repair() -> list[str]:
        if not ctx.live:
            return []
        done = []
        for user in missing:
            argv = add_member_command(user, group)
            subprocess.run(argv, capture_output=True, check=True, timeout=60)
            done.append(" ".join(argv))
        return done

    return Result(
        rid,
        Status.FAIL,
        f"{len(missing)} ds01 users are not in the device group '{group}' and cannot query "
        f"the GPUs: {', '.join(missing)}",
        [f"not in {group}: {u}" for u in missing],
        f"gpasswd --add USER {group} for each (`ds01 doctor --fix` does, on the live host); "
        "they must log in again.",
        repair if ctx.live else None,
    )


def check_uvm_gate(ctx: Context) -> Result:
    rid = "devices.uvm-gate"
    config = ctx.config
    if config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    if config.host.compute_gate != "uvm":
        return Result(rid, Status.SKIP, "compute_gate: none (host CUDA is gated by layer 1 only)")
    evidence: list[str] = []
    if group_id(GPU_HOST_GROUP) is None:
        return Result(
            rid,
            Status.FAIL,
            f"group '{GPU_HOST_GROUP}' does not exist: the uvm gate cannot work",
            fix="Run `ds01 host apply --only devices` on the host.",
        )
    uvm = [p for p in nodes(ctx) if p.name in UVM_NODES]
    modprobe = ctx.at("/usr/bin/nvidia-modprobe")
    setuid = modprobe.exists() and bool(modprobe.stat().st_mode & stat.S_ISUID)
    if setuid:
        evidence.append(
            "/usr/bin/nvidia-modprobe is setuid root: it resets node modes to the driver's "
            "options when a CUDA program calls it; re-check after CUDA use"
        )
    if not uvm:
        return Result(
            rid, Status.SKIP, "no /dev/nvidia-uvm nodes yet (nvidia_uvm not loaded)", evidence
        )
    bad = _wrong(ctx, uvm, GPU_HOST_GROUP, 0o660)
    if not bad:
        return Result(
            rid,
            Status.WARN if setuid else Status.PASS,
            f"/dev/nvidia-uvm* are root:{GPU_HOST_GROUP} 0660",
            evidence,
            "Consider `chmod u-s /usr/bin/nvidia-modprobe` (nodes are then created only by root "
            "and the udev rule)."
            if setuid
            else None,
        )
    paths = [p for p, _ in bad]
    return Result(
        rid,
        Status.FAIL,
        "the uvm nodes are not gated: every user can run CUDA on the host",
        [why for _, why in bad] + evidence,
        f"chown root:{GPU_HOST_GROUP} and chmod 0660 them (`ds01 doctor --fix` does).",
        lambda: _repair_nodes(ctx, paths, GPU_HOST_GROUP, 0o660),
    )


def check_rules_current(ctx: Context) -> Result:
    what = "the udev rule and modprobe options"
    return files_current(ctx, "devices.rules-current", "devices", what)
