"""The NVIDIA device nodes ds01 keeps: which must exist, and with which owner, group and mode.

Used by `ds01 host apply` (the live apply) and by ds01d's device watch (services/devicewatch.py),
so both judge and repair the nodes by one rule. Everything is read under a root directory (the
host is `/`; tests use a fake tree), host paths such as `/dev/nvidia-uvm` name the nodes.

What must exist, from the loaded driver's own entries (what nvidia-modprobe reads too):

    /dev/nvidiactl         c 195:255   when /proc/devices has char major 195 (nvidia)
    /dev/nvidiaN           c 195:N     one per /proc/driver/nvidia/gpus/*/information
                                       ("Device Minor: N")
    /dev/nvidia-modeset    c 195:254   when /sys/module/nvidia_modeset exists
    /dev/nvidia-uvm        c U:0       U = the char major /proc/devices names "nvidia-uvm"
    /dev/nvidia-uvm-tools  c U:1
    /dev/nvidia-caps/nvidia-capN  c C:N  C = major "nvidia-caps"; one per file under
                                       /proc/driver/nvidia/capabilities with "DeviceFileMinor: N"
                                       (MIG), mode from its "DeviceFileMode" (decimal), root:root

Owner and mode, from the config (render.device_policy): query nodes (nvidiactl, nvidiaN,
nvidia-modeset) root:<group> <mode>; uvm nodes root:<uvm group> <uvm mode>. When a group does
not exist yet, a query node falls back to root:root 0666 (querying is never blocked: BRIEF §2)
and a gated uvm node to root:root 0660 (compute closed to all but root until ds01d creates
ds01-gpu-host); both are said in the plan's notes.

Only character devices are changed: anything else with such a name is reported and left alone,
a node is never deleted, and a node whose device number differs from the driver's is left as it
is (its owner and mode are still kept). Must not import cli, daemon, services or store.
"""

from __future__ import annotations

import contextlib
import grp
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ds01.config import Config
from ds01.host.render import DevicePolicy, device_policy

NV_MAJOR = 195
CTL_MINOR = 255
MODESET_MINOR = 254
UVM_NAME = "nvidia-uvm"
CAPS_NAME = "nvidia-caps"
CAPS_DIR = "/dev/nvidia-caps"

NODE_NAME = re.compile(r"^nvidia(ctl|-modeset|-uvm|-uvm-tools|[0-9]+)$")
CAP_NAME = re.compile(r"^nvidia-cap[0-9]+$")
UVM_PATHS = ("/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")


def at(root: Path, host_path: str) -> Path:
    """The host path inside the root."""
    return root / host_path.lstrip("/")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


# ---- what the loaded driver has -----------------------------------------------------------


def char_majors(proc_devices: str) -> dict[str, int]:
    """Name → major of the "Character devices:" section of /proc/devices."""
    majors: dict[str, int] = {}
    in_chars = False
    for line in proc_devices.splitlines():
        if line.strip() == "Character devices:":
            in_chars = True
            continue
        if not line.strip():
            if in_chars:
                break
            continue
        if not in_chars:
            continue
        number, _, name = line.strip().partition(" ")
        if number.isdigit() and name.strip():
            majors.setdefault(name.strip(), int(number))
    return majors


def _fields(text: str) -> dict[str, str]:
    return {
        k.strip(): v.strip()
        for k, sep, v in (line.partition(":") for line in text.splitlines())
        if sep
    }


@dataclass(frozen=True)
class DriverNode:
    path: str  # host path
    major: int
    minor: int
    mode: int | None = None  # only nvidia-caps nodes carry their own mode


def gpu_minors(root: Path) -> list[int]:
    minors: set[int] = set()
    gpus = at(root, "/proc/driver/nvidia/gpus")
    try:
        entries = sorted(os.listdir(gpus))
    except OSError:
        return []
    for entry in entries:
        text = _read(gpus / entry / "information")
        value = _fields(text).get("Device Minor", "") if text else ""
        if value.isdigit():
            minors.add(int(value))
    return sorted(minors)


def _caps(root: Path, major: int) -> list[DriverNode]:
    base = at(root, "/proc/driver/nvidia/capabilities")
    found: dict[int, DriverNode] = {}
    for dirpath, _dirs, files in sorted(os.walk(base)):
        for name in sorted(files):
            text = _read(Path(dirpath) / name)
            values = _fields(text) if text else {}
            minor, mode = values.get("DeviceFileMinor", ""), values.get("DeviceFileMode", "")
            if minor.isdigit() and mode.isdigit():
                n = int(minor)
                found.setdefault(
                    n, DriverNode(f"{CAPS_DIR}/nvidia-cap{n}", major, n, int(mode) & 0o777)
                )
    return [found[n] for n in sorted(found)]


def driver_nodes(root: Path) -> list[DriverNode]:
    """The nodes the loaded driver needs (empty when no NVIDIA driver is loaded)."""
    text = _read(at(root, "/proc/devices"))
    majors = char_majors(text) if text is not None else {}
    nodes: list[DriverNode] = []
    if any(m == NV_MAJOR and name.startswith("nvidia") for name, m in majors.items()):
        nodes.append(DriverNode("/dev/nvidiactl", NV_MAJOR, CTL_MINOR))
        nodes += [DriverNode(f"/dev/nvidia{n}", NV_MAJOR, n) for n in gpu_minors(root)]
        if at(root, "/sys/module/nvidia_modeset").is_dir():
            nodes.append(DriverNode("/dev/nvidia-modeset", NV_MAJOR, MODESET_MINOR))
    uvm = majors.get(UVM_NAME)
    if uvm is not None:
        nodes += [DriverNode(UVM_PATHS[0], uvm, 0), DriverNode(UVM_PATHS[1], uvm, 1)]
    caps = majors.get(CAPS_NAME)
    if caps is not None:
        nodes += _caps(root, caps)
    return nodes


def present_nodes(root: Path) -> list[str]:
    """Host paths of every /dev/nvidia* node name ds01 knows (and /dev/nvidia-caps/*)."""
    found: list[str] = []
    with contextlib.suppress(OSError):
        found += [f"/dev/{n}" for n in sorted(os.listdir(at(root, "/dev"))) if NODE_NAME.match(n)]
    with contextlib.suppress(OSError):
        found += [
            f"{CAPS_DIR}/{n}" for n in sorted(os.listdir(at(root, CAPS_DIR))) if CAP_NAME.match(n)
        ]
    return found


# ---- what the config wants ------------------------------------------------------------------


def group_gid(name: str) -> int | None:
    if name == "root":
        return 0
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class Want:
    group: str
    gid: int
    mode: int


@dataclass(frozen=True)
class Wants:
    """Owner and mode per kind of node, with the groups resolved (fallbacks applied, and said
    in `notes`)."""

    query: Want
    uvm: Want
    notes: tuple[str, ...] = ()

    def for_path(self, path: str, driver: DriverNode | None) -> Want | None:
        if path.startswith(CAPS_DIR + "/"):
            return None if driver is None or driver.mode is None else Want("root", 0, driver.mode)
        return self.uvm if path in UVM_PATHS else self.query


def wants(config: Config) -> Wants:
    policy: DevicePolicy = device_policy(config)
    notes: list[str] = []
    gid = group_gid(policy.group)
    if gid is None:
        query = Want("root", 0, 0o666)
        notes.append(
            f"group '{policy.group}' does not exist: /dev/nvidiactl and /dev/nvidiaN are kept "
            "root:root 0666 so everyone can still query; create it (`ds01 host apply`)"
        )
    else:
        query = Want(policy.group, gid, policy.mode)
    gated = config.host.compute_gate == "uvm"
    if not gated:
        uvm = query
    else:
        uvm_gid = group_gid(policy.uvm_group)
        if uvm_gid is None:
            uvm = Want("root", 0, policy.uvm_mode)
            notes.append(
                f"group '{policy.uvm_group}' does not exist: /dev/nvidia-uvm* are kept root:root "
                f"{policy.uvm_mode:04o} (only root computes) until it does"
            )
        else:
            uvm = Want(policy.uvm_group, uvm_gid, policy.uvm_mode)
    return Wants(query, uvm, tuple(notes))


def managed(config: Config) -> bool:
    """Whether ds01d keeps the nodes: whenever the config departs from the driver's defaults
    (root:root 0666 on every node), i.e. device_access: group or compute_gate: uvm."""
    return config.host.device_access == "group" or config.host.compute_gate == "uvm"


# ---- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeState:
    uid: int
    gid: int
    mode: int
    ctime: float = 0.0

    def text(self) -> str:
        owner = "root" if self.uid == 0 else str(self.uid)
        return f"{owner}:{group_name(self.gid)} {self.mode:04o}"


@dataclass(frozen=True)
class NodeChange:
    path: str  # host path
    want: Want
    old: NodeState | None  # None: the node is missing and is created
    major: int | None = None
    minor: int | None = None

    @property
    def created(self) -> bool:
        return self.old is None

    @property
    def wrong_owner(self) -> bool:
        return self.old is not None and (self.old.uid != 0 or self.old.gid != self.want.gid)

    @property
    def wrong_mode(self) -> bool:
        return self.old is not None and self.old.mode != self.want.mode

    def new_text(self) -> str:
        return f"root:{self.want.group} {self.want.mode:04o}"

    def actions(self) -> list[str]:
        """What is (or would be) done, one line each: `chmod PATH OLD -> NEW`,
        `chown root:GROUP PATH (was OWNER:GROUP)`, `mknod PATH c MAJ:MIN MODE root:GROUP`."""
        if self.old is None:
            return [f"mknod {self.path} c {self.major}:{self.minor} {self.new_text()}"]
        lines = []
        if self.wrong_mode:
            lines.append(f"chmod {self.path} {self.old.mode:04o} -> {self.want.mode:04o}")
        if self.wrong_owner:
            owner = "root" if self.old.uid == 0 else str(self.old.uid)
            lines.append(
                f"chown root:{self.want.group} {self.path} (was {owner}:{group_name(self.old.gid)})"
            )
        return lines

    def details(self) -> dict[str, object]:
        return {
            "path": self.path,
            "was": None if self.old is None else self.old.text(),
            "now": self.new_text(),
            "ctime": None if self.old is None else self.old.ctime,
            "device": None if self.old is not None else f"{self.major}:{self.minor}",
        }


@dataclass(frozen=True)
class NodePlan:
    changes: tuple[NodeChange, ...]
    problems: tuple[str, ...]  # nodes left alone, and why
    notes: tuple[str, ...]  # group fallbacks (Wants.notes)
    checked: int  # nodes looked at (present or expected)


def state_of(path: Path) -> NodeState | None:
    """(uid, gid, mode, ctime) of a character device; None when missing; raises ValueError for
    something else at that path."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISCHR(st.st_mode):
        raise ValueError("not a character device")
    return NodeState(st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode), st.st_ctime)


def plan(config: Config, root: Path, *, create: bool = True) -> NodePlan:
    """Every node that is missing (when `create`) or has another owner or mode than the config
    asks for. Reads only."""
    w = wants(config)
    expected = {n.path: n for n in driver_nodes(root)}
    paths = sorted({*present_nodes(root), *expected})
    changes: list[NodeChange] = []
    problems: list[str] = []
    for path in paths:
        driver = expected.get(path)
        want = w.for_path(path, driver)
        if want is None:
            continue
        try:
            old = state_of(at(root, path))
        except ValueError as err:
            problems.append(f"{path} left alone: {err}")
            continue
        except OSError as err:
            problems.append(f"{path}: cannot read it ({err.strerror or err})")
            continue
        if old is None:
            if create and driver is not None:
                changes.append(NodeChange(path, want, None, driver.major, driver.minor))
            continue
        if old.uid != 0 or old.gid != want.gid or old.mode != want.mode:
            changes.append(NodeChange(path, want, old))
    return NodePlan(tuple(changes), tuple(problems), w.notes, len(paths))


# ---- making the changes ----------------------------------------------------------------------


@dataclass
class Outcome:
    done: list[NodeChange] = field(default_factory=list)
    failed: list[tuple[NodeChange, str]] = field(default_factory=list)


def _char_link(root: Path, node: Path, major: int, minor: int) -> None:
    """/dev/char/MAJ:MIN → ../<node>, as nvidia-modprobe makes it (systemd's device cgroup rules
    and the NVIDIA container toolkit look nodes up there); only when /dev/char exists."""
    chars = at(root, "/dev/char")
    link = chars / f"{major}:{minor}"
    if not chars.is_dir() or link.exists() or link.is_symlink():
        return
    os.symlink(os.path.relpath(node, chars), link)


def execute(changes: Iterable[NodeChange], root: Path) -> Outcome:
    """Make the changes. Tighter first: the mode is set before the group, so a node never is
    more open on the way than before or after. A failure is reported per node."""
    out = Outcome()
    for change in changes:
        target = at(root, change.path)
        try:
            if change.old is None:
                assert change.major is not None and change.minor is not None
                target.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
                os.mknod(target, stat.S_IFCHR | 0o600, os.makedev(change.major, change.minor))
                os.chown(target, 0, change.want.gid, follow_symlinks=False)
                os.chmod(target, change.want.mode)
                _char_link(root, target, change.major, change.minor)
            else:
                now = state_of(target)
                if now is None:
                    raise FileNotFoundError(f"{change.path} is gone")
                if now.mode != change.want.mode:
                    os.chmod(target, change.want.mode)
                if now.uid != 0 or now.gid != change.want.gid:
                    os.chown(target, 0, change.want.gid, follow_symlinks=False)
        except (OSError, ValueError) as err:
            why = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
            out.failed.append((change, why))
            continue
        out.done.append(change)
    return out


# ---- the loaded driver's module parameters ---------------------------------------------------


def driver_params(root: Path) -> dict[str, str] | None:
    """/proc/driver/nvidia/params as {name: value} (names without the NVreg_ prefix some
    drivers print), or None when no driver is loaded (or no copy is under the root)."""
    text = _read(at(root, "/proc/driver/nvidia/params"))
    if text is None:
        return None
    return {k.removeprefix("NVreg_"): v for k, v in _fields(text).items()}
