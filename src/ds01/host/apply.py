"""Install a rendering under a root directory: plan, diff, back up, write atomically, fix groups,
and set the device nodes' owner and mode now.

Owns the side effects of `ds01 host apply` (and of `ds01 doctor --fix` when it re-renders).
Rules:
- Idempotent: a file whose content and mode are already right is not touched; a second apply
  changes nothing and says so.
- Only ds01's files, and only ds01's part of shared files (see edits.py); nothing else under
  the root is read for writing, moved or deleted.
- A replaced file is first copied to FILE.ds01-bak.<YYYYmmddTHHMMSS>; new files are written to
  a temporary file in the same directory and renamed into place (never half-written).
- Accounts (groupadd, gpasswd) are changed only when the root is "/" and it is not a dry run;
  otherwise the commands are printed. A symlink is never replaced.
- The `devices` area also applies now what the files only apply at the next module load: the
  /dev/nvidia* nodes under the root get the owner and mode the config asks for, and missing ones
  the loaded driver needs are created (host/devnodes.py, the same rule ds01d keeps). It says
  which part still waits for a module reload or reboot (the module options, compared with the
  loaded driver's /proc/driver/nvidia/params).
Must not restart or reload services or modules: it prints what to run next.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import shutil
import stat
import subprocess
import sysconfig
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ds01.config import Config
from ds01.config.schema import GPU_HOST_GROUP
from ds01.files import write_atomic
from ds01.host import devnodes, hostaccess, profile
from ds01.host.render import (
    AREAS,
    DOCKER_DAEMON_JSON,
    MODPROBE_CONF,
    SYSTEMD_UNIT,
    TMPFILES_CONF,
    UDEV_RULES,
    HostSettings,
    Rendering,
    device_policy,
    render,
)
from ds01.host.users import (
    add_member_command,
    create_group_command,
    ds01_users,
    group_exists,
    group_id,
    missing_from,
    user_exists,
)

BACKUP_INFIX = ".ds01-bak."

# What to run after a file changed, per file (content created or updated; a mode change needs
# nothing). Only the steps for files this run changed are printed, in this order; files without
# an entry take effect by themselves (config.toml: read at each container start; the modprobe
# options: see driver_status).
NEXT_STEPS: dict[str, tuple[str, str]] = {
    profile.SCRIPT_PATH: (
        "profile",
        "new logins pick up the profile; running shells keep their environment",
    ),
    profile.BASHRC_PATH: (
        "profile",
        "new logins pick up the profile; running shells keep their environment",
    ),
    profile.PAM_ENV_PATH: (
        "profile",
        "new logins pick up the profile; running shells keep their environment",
    ),
    UDEV_RULES: (
        "devices",
        "udevadm control --reload-rules (the rule acts when a module loads; the live "
        "nodes were set above, nothing needs triggering)",
    ),
    DOCKER_DAEMON_JSON: (
        "docker",
        "systemctl restart docker (it reads daemon.json only when it starts)",
    ),
    SYSTEMD_UNIT: ("systemd", "systemctl daemon-reload && systemctl enable --now ds01d"),
    TMPFILES_CONF: ("systemd", f"systemd-tmpfiles --create {TMPFILES_CONF}"),
}
# An updated unit (rather than a new one) needs the running daemon restarted to take effect.
UNIT_UPDATED_STEP = "systemctl daemon-reload && systemctl restart ds01d"


def next_steps(changed: dict[str, str]) -> list[str]:
    """The `next` lines for the files changed by this run ({path: create|update|chmod})."""
    steps: list[tuple[str, str]] = []
    for path, (area, usual) in NEXT_STEPS.items():
        action = changed.get(path)
        if action not in ("create", "update"):
            continue
        step = UNIT_UPDATED_STEP if path == SYSTEMD_UNIT and action == "update" else usual
        if (area, step) not in steps:
            steps.append((area, step))
    return [f"next     {area}: {step}" for area, step in steps]


def under(root: Path, live_path: str | Path) -> Path:
    """The file at `live_path` (absolute on the host) inside `root`."""
    return root / str(live_path).lstrip("/")


def is_live(root: Path) -> bool:
    return root.resolve() == Path("/")


@dataclass(frozen=True)
class FileChange:
    path: str  # absolute path on the host being configured
    target: Path  # the same file under the root
    old: str | None
    new: str
    old_mode: int | None
    new_mode: int
    area: str
    purpose: str

    @property
    def action(self) -> str:
        if self.old is None:
            return "create"
        if self.old != self.new:
            return "update"
        if self.old_mode != self.new_mode:
            return "chmod"
        return "current"

    def diff(self) -> list[str]:
        old = [] if self.old is None else self.old.splitlines()
        fromfile = "/dev/null" if self.old is None else self.path
        new = self.new.splitlines()
        return list(difflib.unified_diff(old, new, fromfile, self.path, lineterm=""))


@dataclass(frozen=True)
class Command:
    argv: tuple[str, ...]
    why: str

    def text(self) -> str:
        return " ".join(self.argv)


@dataclass
class Plan:
    root: Path
    files: list[FileChange]
    commands: list[Command]
    problems: list[str]
    notes: list[str] = field(default_factory=list)
    nodes: devnodes.NodePlan | None = None  # the devices area: live /dev/nvidia* changes

    @property
    def live(self) -> bool:
        return is_live(self.root)

    @property
    def pending(self) -> list[FileChange]:
        return [f for f in self.files if f.action != "current"]


class RootReader:
    """render()'s reader: the text of a host path under the root, or None when absent. Records
    the paths it must leave alone: symlinks (apply never replaces a link) and unreadable ones."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.links: dict[str, str] = {}

    def __call__(self, path: str) -> str | None:
        target = under(self.root, path)
        if target.is_symlink():
            self.links[path] = f"{path} left unchanged: it is a symlink (ds01 never replaces one)"
        try:
            return target.read_text(encoding="utf-8", errors="surrogateescape")
        except FileNotFoundError:
            return None
        except OSError as err:
            self.links[path] = f"{path} left unchanged: cannot read it ({err.strerror or err})"
            return None


def make_plan(
    config: Config, settings: HostSettings, root: Path, only: Iterable[str] | None = None
) -> Plan:
    areas = list(AREAS if only is None else only)
    read = RootReader(root)
    rendering: Rendering = render(config, settings, read, areas)
    files: list[FileChange] = []
    for path, spec in rendering.files.items():
        if path in read.links:
            continue
        target = under(root, path)
        old = read(path)
        old_mode = stat.S_IMODE(target.stat().st_mode) if old is not None else None
        mode = spec.mode if spec.mode is not None else (old_mode or 0o644)
        files.append(
            FileChange(path, target, old, spec.content, old_mode, mode, spec.area, spec.purpose)
        )
    if "profile" in areas:
        seed = _seed(config, settings, root)
        if seed is not None:
            files.append(seed)
    problems = {**rendering.problems, **read.links}
    commands, notes = _group_commands(config, areas)
    nodes = devnodes.plan(config, root) if "devices" in areas else None
    return Plan(root, files, commands, list(problems.values()), notes, nodes)


def _seed(config: Config, settings: HostSettings, root: Path) -> FileChange | None:
    """The host-access file, written only when none exists (ds01d owns it afterwards)."""
    target = under(root, settings.host_access)
    if target.exists() or target.is_symlink():
        return None
    return FileChange(
        str(settings.host_access),
        target,
        None,
        hostaccess.seed_text(config.exempt_users),
        None,
        hostaccess.MODE,
        "profile",
        "seed of the host-access file (exempt users), until ds01d writes it",
    )


def _group_commands(config: Config, areas: list[str]) -> tuple[list[Command], list[str]]:
    commands: list[Command] = []
    people = ds01_users(config)
    looked: list[str] = []  # the groups whose members were compared

    def members(
        group: str, why: str, who: tuple[str, ...] = people.present, create_why: str = ""
    ) -> None:
        looked.append(group)
        if not group_exists(group):
            commands.append(Command(tuple(create_group_command(group)), create_why or why))
            todo = list(who)
        else:
            todo = missing_from(group, who)
        commands.extend(Command(tuple(add_member_command(user, group)), why) for user in todo)

    host = config.host
    if "devices" in areas:
        if host.device_access == "group":
            members(host.device_group, "device_access: group: ds01 users may query the GPUs")
        if host.compute_gate == "uvm":
            # ds01d keeps the members (exempt users and live grants); the exempt users are
            # added now so they can compute before it runs.
            members(
                GPU_HOST_GROUP,
                "compute_gate: uvm: exempt users may compute on the host",
                tuple(u for u in config.exempt_users if user_exists(u) and u != "root"),
                "compute_gate: uvm: owner of /dev/nvidia-uvm*; ds01d manages its members",
            )
    if "docker" in areas:
        members(host.gate_group, "ds01 users reach Docker through the gate socket (group-owned)")
    notes = [
        f"user '{name}' is named in the config but unknown to NSS; skipped"
        for name in (people.unknown if looked else ())
    ]
    return commands, notes


def settings_for(
    config: Config,
    config_path: Path,
    state_dir: Path,
    run_dir: Path,
    daemon: Path | None = None,
) -> HostSettings:
    """HostSettings (absolute paths) with the device group's gid looked up in NSS, and the
    ds01d of this install (installed_daemon()) unless `daemon` names another."""
    gid = group_id(config.host.device_group) if config.host.device_access == "group" else None
    return HostSettings(
        config_path.absolute(),
        state_dir.absolute(),
        run_dir.absolute(),
        gid,
        (daemon or installed_daemon()).absolute(),
    )


def installed_daemon() -> Path:
    """The ds01d installed beside the running ds01: the scripts directory of this interpreter's
    install scheme (a checkout's .venv/bin), where pip put both commands. Not resolved through
    symlinks: a venv's bin/ds01d is the path that keeps working after an upgrade."""
    here = Path(sysconfig.get_path("scripts")) / "ds01d"
    if here.exists():
        return here
    found = shutil.which("ds01d")
    return Path(found) if found else here


# ---- execution --------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)
    changed_areas: set[str] = field(default_factory=set)
    changed: dict[str, str] = field(default_factory=dict)  # host path → create|update|chmod
    failed: bool = False


def backup_path(target: Path, now: float | None = None) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(now))
    candidate = target.with_name(f"{target.name}{BACKUP_INFIX}{stamp}")
    n = 1
    while candidate.exists():
        candidate = target.with_name(f"{target.name}{BACKUP_INFIX}{stamp}-{n}")
        n += 1
    return candidate


def make_backup(target: Path, now: float | None = None) -> Path:
    """Copy `target` to FILE.ds01-bak.<time>, created with the original's mode (never wider)."""
    backup = backup_path(target, now)
    mode = stat.S_IMODE(target.stat().st_mode)
    fd = os.open(backup, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as out:
        out.write(target.read_bytes())
    os.chmod(backup, mode)
    return backup


def apply_files(changes: Iterable[FileChange], report: Report, now: float | None = None) -> None:
    for change in changes:
        action = change.action
        if action == "current":
            continue
        if action == "chmod":
            change.target.chmod(change.new_mode)
            report.lines.append(
                f"chmod    {change.path} {change.old_mode:04o} -> {change.new_mode:04o}"
            )
        else:
            note = ""
            if action == "update":
                backup = make_backup(change.target, now)
                note = f" (backup {backup.name})"
            write_atomic(change.target, change.new, change.new_mode, keep_owner=True)
            verb = "created " if action == "create" else "updated "
            report.lines.append(f"{verb} {change.path}{note}")
        report.changed_areas.add(change.area)
        report.changed[change.path] = action


def run_commands(commands: Iterable[Command], report: Report) -> None:
    for command in commands:
        try:
            done = subprocess.run(
                list(command.argv), capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as err:
            report.lines.append(f"FAILED   {command.text()}: {err}")
            report.failed = True
            continue
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            report.lines.append(
                f"FAILED   {command.text()}: {why[-1] if why else f'exit {done.returncode}'}"
            )
            report.failed = True
        else:
            report.lines.append(f"ran      {command.text()}")


def _not_run(command: Command) -> str:
    return f"not run  {command.text()}  (root is not /: the live system's accounts are left alone)"


def apply(
    config: Config,
    settings: HostSettings,
    root: Path,
    *,
    only: Iterable[str] | None = None,
    dry_run: bool = False,
    now: float | None = None,
) -> Report:
    """Plan and (unless dry_run) install. On the live root, missing groups are created first so
    the modprobe options can name the device group's gid."""
    areas = list(AREAS if only is None else only)
    plan = make_plan(config, settings, root, areas)
    report = Report()
    report.lines.append(f"ds01 host apply: root {root}, areas {', '.join(areas)}")
    if not dry_run and plan.live:
        creations = [c for c in plan.commands if c.argv[0] == "groupadd"]
        if creations:
            run_commands(creations, report)
            settings = dataclasses.replace(settings, device_gid=group_id(config.host.device_group))
            plan = make_plan(config, settings, root, areas)
    for note in plan.notes:
        report.lines.append(f"note     {note}")
    nodes = plan.nodes
    node_changes = list(nodes.changes) if nodes is not None else []
    if nodes is not None and nodes.checked:
        report.lines += [f"note     device nodes: {n}" for n in nodes.notes]
    problems = plan.problems + (list(nodes.problems) if nodes is not None else [])
    driver = driver_status(config, root) if nodes is not None else []
    if not plan.pending and not node_changes and not (plan.live and plan.commands):
        report.lines += [f"left     {p}" for p in problems]
        report.lines += [_not_run(c) for c in plan.commands]
        report.lines += driver
        checked = (
            f", {nodes.checked} device nodes right" if nodes is not None and nodes.checked else ""
        )
        report.lines.append(f"nothing to change: {len(plan.files)} files already current{checked}")
        return report
    if dry_run:
        for change in plan.pending:
            if change.action == "chmod":
                report.lines.append(
                    f"would chmod {change.path} {change.old_mode:04o} -> {change.new_mode:04o}"
                )
            else:
                report.lines += change.diff()
                report.lines.append(f"would {change.action} {change.path}")
        report.lines += [f"would {a}" for c in node_changes for a in c.actions()]
        report.lines += [f"would run {c.text()}  # {c.why}" for c in plan.commands]
        report.lines += [f"left     {p}" for p in problems]
        report.lines += driver
        report.lines.append("dry run: nothing was changed")
        return report
    apply_files(plan.pending, report, now)
    apply_nodes(node_changes, root, report)
    if plan.live:
        run_commands(plan.commands, report)
    else:
        report.lines += [_not_run(c) for c in plan.commands]
    report.lines += [f"left     {p}" for p in problems]
    report.lines += next_steps(report.changed)
    if plan.live and any(c.argv[0] == "gpasswd" for c in plan.commands):
        report.lines.append(
            "next     groups: a user gets a new group in new login sessions; running shells and "
            "processes keep the groups they started with"
        )
    report.lines += driver
    return report


def apply_nodes(changes: list[devnodes.NodeChange], root: Path, report: Report) -> None:
    """Set the device nodes' owner and mode (and create missing ones) now, under the root."""
    outcome = devnodes.execute(changes, root)
    for change in outcome.done:
        report.lines += [f"{a.split(' ', 1)[0]:<8} {a.split(' ', 1)[1]}" for a in change.actions()]
    for change, why in outcome.failed:
        report.lines += [f"FAILED   {a}: {why}" for a in change.actions()]
        report.failed = True


def driver_status(config: Config, root: Path) -> list[str]:
    """Whether the loaded driver already runs with the module options ds01 writes, said plainly:
    the one part of the devices area that waits for a module reload or a reboot."""
    policy = device_policy(config)
    gated = config.host.compute_gate == "uvm"
    gid = 0 if policy.group == "root" else group_id(policy.group)
    want = {
        "DeviceFileUID": "0",
        "DeviceFileGID": None if gid is None else str(gid),
        "DeviceFileMode": str(policy.mode),
    }
    if gated:
        want["ModifyDeviceFiles"] = "0"
    params = devnodes.driver_params(root)
    if params is None:
        where = "here" if is_live(root) else "under the root (no /proc/driver/nvidia/params)"
        return [
            f"driver   no NVIDIA driver is loaded {where}: the options in {MODPROBE_CONF} "
            "apply when it loads"
        ]
    differ = [
        f"{k}={params.get(k, '?')}" for k, v in want.items() if v is not None and params.get(k) != v
    ]
    if not differ:
        return [
            f"driver   the loaded nvidia driver already runs with the options in {MODPROBE_CONF}"
        ]
    after = (
        "until then the driver may reset /dev/nvidia* when a root process starts CUDA (e.g. a "
        "GPU container start); ds01d puts them back within a second and records it"
        if gated
        else "nodes it creates meanwhile get its current modes; the udev rule and ds01 fix them"
    )
    return [
        f"reload   the loaded nvidia driver runs with {' '.join(differ)}: the options in "
        f"{MODPROBE_CONF} take effect only after a module reload or a reboot (stop every GPU "
        "user, then `modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia "
        f"nvidia_uvm`); {after}"
    ]
