"""Checks that prove who can compute on the bare host, not only which modes the nodes have.

    devices.driver-rewrites  compute_gate: uvm: the loaded driver does not rewrite device files
                             (/proc/driver/nvidia/params `ModifyDeviceFiles: 0`); with 1 the
                             first CUDA start by any root process reopens /dev/nvidia-uvm*
    compute.cuda-refused     a plain user's cuInit with CUDA_VISIBLE_DEVICES=0 set explicitly
                             fails (compute_gate: uvm; FAIL if it succeeds) — with
                             compute_gate: none it is a WARN, layer 1 being a deterrent only
    compute.cuda-exempt      the same call succeeds for an exempt user
    compute.cuda-granted     the same call succeeds for a user with a live bare-metal grant

The CUDA call is `cuInit(0)` (then `cuDeviceGetCount`) through the driver library libcuda.so.1
with ctypes, in a child process of the system's python3 that runs as the user (setpriv) — no
PyTorch. It never runs as root: with the driver's default `ModifyDeviceFiles: 1` a root cuInit
resets the uvm nodes to the driver's modes, which is the very hole these checks look for.

The plain user is a ds01 user from the config who is neither exempt nor in the host-access file
(their own groups, as a login would give them); without one, the call runs as `nobody` with the
groups a plain ds01 user has (the device group under device_access: group) — an identity, not
an account: the doctor creates no users. The live checks SKIP, saying why, without root, under
--root, without GPU device nodes, or without libcuda. No repairs here: the gate's own repairs are
devices.uvm-gate's.
"""

from __future__ import annotations

import grp
import os
import platform
import pwd
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from ds01.config import Config
from ds01.config.schema import GPU_HOST_GROUP
from ds01.host import hostaccess
from ds01.host.doctor.base import Context, Result, Status, is_root, octal
from ds01.host.doctor.devices import UVM_NODES, nodes
from ds01.host.users import ds01_users, group_id

_SKIP_NO_CONFIG = "config invalid (see config.valid)"
_LIVE_ONLY = "needs the live host (--root is set)"
LIBCUDA = "libcuda.so.1"
# Where NVIDIA's installers and the container toolkit put the driver library, after the dynamic
# linker's cache and root's LD_LIBRARY_PATH. Never CUDA's stubs (a stub always fails).
LIBCUDA_DIRS = (
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
    "/usr/local/nvidia/lib64",
    "/usr/local/nvidia/lib",
)
PYTHONS = ("/usr/bin/python3", "/usr/local/bin/python3")
CALL_TIMEOUT_S = 120.0
CUDA_ERRORS = {
    0: "CUDA_SUCCESS",
    3: "CUDA_ERROR_NOT_INITIALIZED",
    34: "CUDA_ERROR_STUB_LIBRARY",
    35: "CUDA_ERROR_INSUFFICIENT_DRIVER",
    46: "CUDA_ERROR_DEVICE_UNAVAILABLE",
    100: "CUDA_ERROR_NO_DEVICE",
    101: "CUDA_ERROR_INVALID_DEVICE",
    304: "CUDA_ERROR_OPERATING_SYSTEM",
    802: "CUDA_ERROR_SYSTEM_NOT_READY",
    803: "CUDA_ERROR_SYSTEM_DRIVER_MISMATCH",
    999: "CUDA_ERROR_UNKNOWN",
}

# Runs as the user, under `python3 -I -S`: only ctypes, one line of result on stdout.
_CALL = """\
import ctypes, sys
try:
    lib = ctypes.CDLL(sys.argv[1])
except OSError as err:
    print("ds01-cuda load", str(err).replace("\\n", " "))
    sys.exit(0)
rc = lib.cuInit(0)
count = "?"
if rc == 0:
    n = ctypes.c_int(-1)
    try:
        if lib.cuDeviceGetCount(ctypes.byref(n)) == 0:
            count = str(n.value)
    except AttributeError:
        pass
print("ds01-cuda cuInit", rc, count)
"""


# ---- the driver's own rewriting of device files ----------------------------------------------


def driver_params(ctx: Context) -> dict[str, str] | None:
    """/proc/driver/nvidia/params as a dict ("NVreg_" dropped), None when unreadable (under
    --root: a copy put there, if any)."""
    try:
        text = ctx.at("/proc/driver/nvidia/params").read_text()
    except OSError:
        return None
    return {
        k.strip().removeprefix("NVreg_"): v.strip()
        for k, sep, v in (line.partition(":") for line in text.splitlines())
        if sep
    }


def check_driver_rewrites(ctx: Context) -> Result:
    rid = "devices.driver-rewrites"
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    if ctx.config.host.compute_gate != "uvm":
        return Result(rid, Status.SKIP, "compute_gate: none (no uvm gate for the driver to undo)")
    params = driver_params(ctx)
    if params is None:
        why = "the nvidia driver is not loaded" if ctx.live else _LIVE_ONLY
        return Result(rid, Status.SKIP, why)
    value = params.get("ModifyDeviceFiles")
    evidence = [f"/proc/driver/nvidia/params: ModifyDeviceFiles: {value}"]
    evidence.append(
        "DeviceFileUID: {} DeviceFileGID: {} DeviceFileMode: {}".format(
            *(params.get(k) for k in ("DeviceFileUID", "DeviceFileGID", "DeviceFileMode"))
        )
    )
    if value == "0":
        return Result(
            rid,
            Status.PASS,
            "the driver does not rewrite /dev/nvidia* (ModifyDeviceFiles: 0; nvidia-modprobe "
            "still makes the uvm nodes 0666 when it creates them: ds01d restores those)",
            evidence,
        )
    fix = (
        "Load the driver with `options nvidia NVreg_ModifyDeviceFiles=0` (`ds01 host apply --only "
        "devices` writes the modprobe options), run `update-initramfs -u` if the initramfs loads "
        "nvidia, then reload the nvidia modules while no GPU process runs (or reboot) and check "
        "that /proc/driver/nvidia/params says ModifyDeviceFiles: 0."
    )
    if value is None:
        return Result(
            rid,
            Status.WARN,
            "the driver does not say whether it rewrites device files (no ModifyDeviceFiles)",
            evidence,
            fix,
        )
    return Result(
        rid,
        Status.FAIL,
        "the driver rewrites /dev/nvidia* (ModifyDeviceFiles: 1): the first CUDA start by any "
        "root process (a GPU container's start, DCGM, a root job) reopens the uvm gate",
        evidence,
        fix + " Until then only ds01d's re-assertion of the node modes closes the gate again.",
    )


# ---- the CUDA call as another user --------------------------------------------------------------


@dataclass(frozen=True)
class Who:
    """The identity the CUDA call runs as."""

    label: str  # "plain ds01 user alice", for messages
    name: str
    uid: int
    gid: int
    groups: tuple[int, ...] | None  # None: the account's own groups (--init-groups)
    home: str


@dataclass(frozen=True)
class Call:
    """What one CUDA call returned: `rc` None when it could not run (`why` says)."""

    rc: int | None
    devices: str
    why: str
    line: str  # one line of evidence

    @property
    def ok(self) -> bool:
        return self.rc == 0


def cuda_error(rc: int) -> str:
    return CUDA_ERRORS.get(rc, "CUDA error")


def find_libcuda(ctx: Context) -> Path | None:
    """The driver library the dynamic linker would load for root: its cache first, then root's
    LD_LIBRARY_PATH, then the usual driver directories."""
    arch = {"x86_64": "x86-64", "aarch64": "AArch64"}.get(platform.machine(), "")
    ldconfig = shutil.which("ldconfig") or "/sbin/ldconfig"
    try:
        listed = subprocess.run(
            [ldconfig, "-p"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        listed = ""
    for line in listed.splitlines():
        name, _, rest = line.strip().partition(" ")
        if name == LIBCUDA and "=>" in rest and (not arch or arch in rest):
            path = Path(rest.split("=>", 1)[1].strip())
            if path.exists() and "stubs" not in path.parts:
                return path
    dirs = [d for d in os.environ.get("LD_LIBRARY_PATH", "").split(":") if d]
    for directory in [*dirs, *LIBCUDA_DIRS]:
        path = Path(directory) / LIBCUDA
        if path.exists() and "stubs" not in path.parts:
            return path
    return None


def _python() -> str:
    for candidate in PYTHONS:
        if os.access(candidate, os.X_OK):
            return candidate
    return sys.executable


def cuda_call(who: Who, libcuda: Path) -> Call:
    """cuInit(0) as `who`, with CUDA_VISIBLE_DEVICES=0 set explicitly (as a user who overrides
    layer 1 would)."""
    ids = [f"--reuid={who.uid}", f"--regid={who.gid}"]
    if who.groups is None:
        ids.append("--init-groups")
    elif who.groups:
        ids.append("--groups=" + ",".join(str(g) for g in who.groups))
    else:
        ids.append("--clear-groups")
    python = _python()
    argv = [shutil.which("setpriv") or "/usr/bin/setpriv", *ids]
    argv += [python, "-I", "-S", "-c", _CALL, str(libcuda)]
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": who.home,
        "LANG": "C.UTF-8",
        "CUDA_VISIBLE_DEVICES": "0",
    }
    head = f"as {who.name}: CUDA_VISIBLE_DEVICES=0 cuInit(0) via {libcuda}"
    try:
        done = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=CALL_TIMEOUT_S,
            env=env,
            cwd="/",
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        return Call(None, "?", f"could not run the call: {err}", f"{head} → {err}")
    for line in reversed(done.stdout.splitlines()):
        words = line.split()
        if words[:2] == ["ds01-cuda", "cuInit"] and len(words) == 4:
            try:
                rc = int(words[2])
            except ValueError:
                break
            shown = f"{rc} ({cuda_error(rc)})"
            if rc == 0 and words[3] != "?":
                shown += f", {words[3]} device(s)"
            return Call(rc, words[3], "", f"{head} → {shown}")
        if words[:2] == ["ds01-cuda", "load"]:
            why = f"{libcuda} did not load for {who.name}: {line.split(' ', 2)[2]}"
            return Call(None, "?", why, f"{head} → {why}")
    tail = (done.stderr or done.stdout).strip().splitlines()
    why = f"{python} exited {done.returncode}: {tail[-1] if tail else 'no output'}"
    return Call(None, "?", why, f"{head} → {why}")


def _access(ctx: Context) -> dict[str, hostaccess.Entry]:
    try:
        text = ctx.at(ctx.paths.run_dir / hostaccess.FILE_NAME).read_text()
    except OSError:
        return {}
    return hostaccess.allowed_users(hostaccess.parse(text), ctx.now)


def _account(user: str, label: str) -> Who | None:
    try:
        pw = pwd.getpwnam(user)
    except KeyError:
        return None
    if pw.pw_uid == 0:
        return None  # never root: a root cuInit is what reopens the gate
    return Who(f"{label} {user}", user, pw.pw_uid, pw.pw_gid, None, pw.pw_dir or "/")


def plain_user(ctx: Context, config: Config) -> Who | None:
    """A ds01 user without exemption or grant; else `nobody` with a plain ds01 user's groups."""
    allowed = _access(ctx)
    for user in ds01_users(config).present:
        if config.is_exempt(user) or user in allowed:
            continue
        who = _account(user, "plain ds01 user")
        if who is not None:
            return who
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    groups: tuple[int, ...] = ()
    label = "nobody (no plain ds01 user exists; the doctor creates no account)"
    if config.host.device_access == "group":
        gid = group_id(config.host.device_group)
        groups = (gid,) if gid is not None else ()
        label = (
            f"nobody in '{config.host.device_group}', as a plain ds01 user (no plain ds01 user "
            "exists; the doctor creates no account)"
        )
    return Who(label, "nobody", pw.pw_uid, pw.pw_gid, groups, "/")


def _group_ids(who: Who) -> set[int]:
    if who.groups is not None:
        return {who.gid, *who.groups}
    try:
        return set(os.getgrouplist(who.name, who.gid))
    except OSError:
        return {who.gid}


def _node_access(ctx: Context, who: Who) -> list[str]:
    """Whether `who` may open each uvm node as the modes stand (evidence, not the verdict)."""
    lines: list[str] = []
    gids = _group_ids(who)
    for path in [p for p in nodes(ctx) if p.name in UVM_NODES]:
        try:
            st = path.stat()
        except OSError as err:
            lines.append(f"{ctx.shown(path)}: {err}")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if st.st_uid == who.uid:
            bits = mode >> 6
        elif st.st_gid in gids:
            bits = mode >> 3
        else:
            bits = mode
        try:
            group = grp.getgrgid(st.st_gid).gr_name
        except KeyError:
            group = str(st.st_gid)
        can = "may open it" if bits & 0o6 == 0o6 else "may not open it"
        lines.append(f"{ctx.shown(path)}: uid {st.st_uid}, group {group}, {octal(mode)}: {can}")
    return lines


def _gpu_nodes(ctx: Context) -> bool:
    names = {p.name for p in nodes(ctx)}
    return "nvidiactl" in names and any(n[6:].isdigit() for n in names)


def _prereq(ctx: Context, rid: str) -> Result | Path:
    """The libcuda to call, or the SKIP saying why the call cannot be made here."""
    if not ctx.live:
        return Result(rid, Status.SKIP, _LIVE_ONLY)
    if ctx.config is None:
        return Result(rid, Status.SKIP, _SKIP_NO_CONFIG)
    if not is_root():
        return Result(rid, Status.SKIP, "running the CUDA call as another user needs root")
    if not _gpu_nodes(ctx):
        return Result(rid, Status.SKIP, "no GPU: no /dev/nvidiactl and /dev/nvidiaN")
    libcuda = find_libcuda(ctx)
    if libcuda is None:
        searched = ", ".join(LIBCUDA_DIRS)
        return Result(
            rid,
            Status.SKIP,
            f"no {LIBCUDA} (the NVIDIA driver's CUDA library) on this host",
            [f"searched the dynamic linker's cache, LD_LIBRARY_PATH and {searched}"],
        )
    return libcuda


def check_cuda_refused(ctx: Context) -> Result:
    rid = "compute.cuda-refused"
    found = _prereq(ctx, rid)
    if isinstance(found, Result):
        return found
    config = ctx.config
    assert config is not None  # _prereq
    who = plain_user(ctx, config)
    if who is None:
        return Result(rid, Status.SKIP, "no plain ds01 user and no 'nobody' account to run as")
    call = cuda_call(who, found)
    evidence = [f"user: {who.label}", call.line, *_node_access(ctx, who)]
    gate = config.host.compute_gate
    if gate == "none":
        if call.ok:
            summary = (
                f"deterrent only (compute_gate: none): {who.name} computes on the host GPUs "
                "by setting CUDA_VISIBLE_DEVICES=0"
            )
        else:
            summary = (
                f"deterrent only (compute_gate: none); the CUDA call failed for {who.name} "
                f"anyway ({call.why or cuda_error(call.rc or 0)}), not because of ds01"
            )
        return Result(
            rid,
            Status.WARN,
            summary,
            evidence,
            "For a wall the kernel enforces set `host.compute_gate: uvm` and run `ds01 host "
            'apply` (docs/host-access.md); layer 1 (CUDA_VISIBLE_DEVICES="") only deters.',
        )
    if call.rc is None:
        return Result(
            rid,
            Status.WARN,
            f"the CUDA call could not be made as {who.name}: the gate is not proven",
            evidence,
            f"Check that {_python()} runs and {found} loads for ordinary users.",
        )
    if not call.ok:
        return Result(
            rid,
            Status.PASS,
            f"the uvm gate holds: {who.name}'s cuInit with CUDA_VISIBLE_DEVICES=0 fails "
            f"({call.rc} {cuda_error(call.rc)})",
            evidence,
        )
    member = group_id(GPU_HOST_GROUP) in _group_ids(who)
    if member:
        evidence.append(
            f"{who.name} is in {GPU_HOST_GROUP} although neither exempt nor granted (ds01d "
            "removes such members; is it running?)"
        )
    return Result(
        rid,
        Status.FAIL,
        f"the uvm gate is open: {who.name}, neither exempt nor granted, computes on the host "
        "GPUs (cuInit → 0 with CUDA_VISIBLE_DEVICES=0)",
        evidence,
        f"Close it now with `ds01 doctor --fix --only devices.uvm-gate`; keep it closed: see "
        f"devices.driver-rewrites, and keep ds01d running (it restores the nodes and the "
        f"{GPU_HOST_GROUP} members).",
    )


def _allowed_call(ctx: Context, rid: str, who: Who, libcuda: Path, why_allowed: str) -> Result:
    call = cuda_call(who, libcuda)
    evidence = [f"user: {who.label}", call.line, *_node_access(ctx, who)]
    if call.ok:
        return Result(rid, Status.PASS, f"{who.label} computes on the host GPUs", evidence)
    config = ctx.config
    assert config is not None
    fix = f"Check that {who.name} can open /dev/nvidia* (devices.mode) and that CUDA works here."
    if config.host.compute_gate == "uvm":
        member = group_id(GPU_HOST_GROUP) in _group_ids(who)
        evidence.append(f"{who.name} {'is' if member else 'is not'} in {GPU_HOST_GROUP}")
        if not member:
            fix = (
                f"ds01d puts {why_allowed} users into {GPU_HOST_GROUP}: check daemon.running and "
                f"daemon.host-access (by hand: gpasswd --add {who.name} {GPU_HOST_GROUP})."
            )
    what = call.why or f"cuInit → {call.rc} {cuda_error(call.rc or 0)}"
    return Result(
        rid, Status.FAIL, f"{who.label} cannot compute on the host GPUs ({what})", evidence, fix
    )


def check_cuda_exempt(ctx: Context) -> Result:
    rid = "compute.cuda-exempt"
    found = _prereq(ctx, rid)
    if isinstance(found, Result):
        return found
    assert ctx.config is not None
    for user in ctx.config.exempt_users:
        who = _account(user, "exempt user")
        if who is not None:
            return _allowed_call(ctx, rid, who, found, "exempt")
    return Result(rid, Status.SKIP, "no exempt user (other than root) exists on this host")


def check_cuda_granted(ctx: Context) -> Result:
    rid = "compute.cuda-granted"
    found = _prereq(ctx, rid)
    if isinstance(found, Result):
        return found
    for user, entry in _access(ctx).items():
        if entry.kind != "grant":
            continue
        who = _account(user, "granted user")
        if who is not None:
            return _allowed_call(ctx, rid, who, found, "granted")
    return Result(rid, Status.SKIP, "no live bare-metal grant in the host-access file")
