"""Every host file ds01 manages, rendered from the config: {live path: (content, mode)}.

Pure: the config, the settings and a `read(path) -> text | None` callback (the current text of a
file ds01 shares, so an edit can keep the rest of it) go in; a Rendering comes out. No file is
written, no command run, no NSS lookup made here (the caller resolves the device group's gid).
Areas, each of which `ds01 host apply --only AREA` installs on its own:

    profile  Layer 1: profile script, /etc/bash.bashrc block, pam_env.conf block (host/profile.py)
    devices  Layer 3: udev rule and modprobe options for /dev/nvidia* (+ the uvm compute gate)
    docker   Layer 2: NVIDIA runtime refuses env-var device selection; no nvidia default runtime
    systemd  the ds01d unit and the tmpfiles.d entry for the socket directory
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from ds01.config import Config
from ds01.config.schema import GPU_HOST_GROUP
from ds01.host import profile
from ds01.host.edits import (
    EditError,
    with_block,
    with_toml_keys,
    without_nvidia_default_runtime,
)
from ds01.host.hostaccess import FILE_NAME as HOST_ACCESS_NAME

AREAS = ("profile", "devices", "docker", "systemd")

UDEV_RULES = "/etc/udev/rules.d/70-ds01-nvidia.rules"
MODPROBE_CONF = "/etc/modprobe.d/ds01-nvidia.conf"
NVIDIA_RUNTIME_TOML = "/etc/nvidia-container-runtime/config.toml"
DOCKER_DAEMON_JSON = "/etc/docker/daemon.json"
SYSTEMD_UNIT = "/etc/systemd/system/ds01d.service"
TMPFILES_CONF = "/etc/tmpfiles.d/ds01.conf"

# The NVIDIA Container Toolkit's top-level keys ds01 sets (NVIDIA's config.toml ships them
# commented out with the permissive defaults true / false). With the first one false, an
# unprivileged container's NVIDIA_VISIBLE_DEVICES (from an image ENV, `-e`, or Docker's own
# --gpus) selects nothing; with the second one true the hook takes the device list from mounts
# under /var/run/nvidia-container-devices, which only ds01 creates (runtime.spec) and the gate
# refuses from users. So a container sees exactly its allocation and nothing else.
NVIDIA_RUNTIME_KEYS = {
    "accept-nvidia-visible-devices-envvar-when-unprivileged": False,
    "accept-nvidia-visible-devices-as-volume-mounts": True,
}

# Where packaging/systemd/ds01d.service expects ds01d; `ds01 host apply` names the real one.
PACKAGED_DAEMON = Path("/opt/ds01/.venv/bin/ds01d")

MANAGED = "# Managed by `ds01 host apply` from the ds01 config; local edits are overwritten."


class FileSpec(NamedTuple):
    content: str
    mode: int | None  # None: keep the existing file's mode (0644 for a new file)
    area: str
    purpose: str


@dataclass(frozen=True)
class HostSettings:
    """What the rendering needs besides the config: where ds01d's files live, and the numeric
    gid of host.device_group (modprobe options take numbers; None when the group is unknown)."""

    config_path: Path
    state_dir: Path
    run_dir: Path
    device_gid: int | None = None
    daemon: Path = PACKAGED_DAEMON  # the ds01d executable the unit runs (apply: this install's)

    @property
    def host_access(self) -> Path:
        return self.run_dir / HOST_ACCESS_NAME

    @property
    def gate_socket(self) -> Path:
        return self.run_dir / "docker.sock"


@dataclass(frozen=True)
class DevicePolicy:
    """Owner group and mode every /dev/nvidia* node should have (uvm nodes may differ)."""

    group: str  # "root" for device_access: open
    mode: int
    uvm_group: str
    uvm_mode: int


def device_policy(config: Config) -> DevicePolicy:
    host = config.host
    group, mode = ("root", 0o666) if host.device_access == "open" else (host.device_group, 0o660)
    if host.compute_gate == "uvm":
        return DevicePolicy(group, mode, GPU_HOST_GROUP, 0o660)
    return DevicePolicy(group, mode, group, mode)


@dataclass(frozen=True)
class Rendering:
    files: dict[str, FileSpec]
    problems: dict[str, str] = field(default_factory=dict)  # path → why it is left alone


Reader = Callable[[str], str | None]


def render(
    config: Config, settings: HostSettings, read: Reader, only: Iterable[str] | None = None
) -> Rendering:
    areas = set(AREAS if only is None else only)
    files: dict[str, FileSpec] = {}
    problems: dict[str, str] = {}

    def edit(path: str, area: str, purpose: str, make: Callable[[], str | None]) -> None:
        try:
            content = make()
        except EditError as err:
            problems[path] = f"{path} left unchanged: {err}"
            return
        if content is not None:
            files[path] = FileSpec(content, None, area, purpose)

    if "profile" in areas:
        files[profile.SCRIPT_PATH] = FileSpec(
            profile.profile_script(
                settings.host_access, settings.gate_socket, config.host.gate_group
            ),
            0o644,
            "profile",
            "decides CUDA_VISIBLE_DEVICES and DOCKER_HOST in every shell",
        )
        edit(
            profile.BASHRC_PATH,
            "profile",
            "sources the profile script in interactive shells and `ssh host cmd`",
            lambda: with_block(read(profile.BASHRC_PATH), profile.bashrc_block(), "top"),
        )
        edit(
            profile.PAM_ENV_PATH,
            "profile",
            "hides host CUDA in every PAM session (fail closed); sets BASH_ENV",
            lambda: with_block(read(profile.PAM_ENV_PATH), profile.pam_env_block(), "bottom"),
        )
    if "devices" in areas:
        policy = device_policy(config)
        files[UDEV_RULES] = FileSpec(
            udev_rules(config, policy), 0o644, "devices", "/dev/nvidia* owner and mode"
        )
        modprobe = modprobe_conf(config, policy, settings.device_gid)
        if modprobe is None:
            problems[MODPROBE_CONF] = (
                f"{MODPROBE_CONF} not written: group '{config.host.device_group}' does not "
                "exist, and the driver's options need its number; create it (apply on / does) "
                "and run apply again"
            )
        else:
            files[MODPROBE_CONF] = FileSpec(
                modprobe, 0o644, "devices", "modes the NVIDIA driver gives the nodes it creates"
            )
    if "docker" in areas:
        edit(
            NVIDIA_RUNTIME_TOML,
            "docker",
            "unprivileged containers cannot pick GPUs through NVIDIA_VISIBLE_DEVICES",
            lambda: with_toml_keys(
                read(NVIDIA_RUNTIME_TOML),
                NVIDIA_RUNTIME_KEYS,
                [
                    "# NVIDIA Container Toolkit settings, written by `ds01 host apply` because no",
                    "# file existed. The toolkit's defaults apply to every key not set here.",
                ],
            ),
        )
        existing_json = read(DOCKER_DAEMON_JSON)
        if existing_json is not None:  # no file: Docker's default runtime is runc already
            edit(
                DOCKER_DAEMON_JSON,
                "docker",
                "nvidia is not Docker's default runtime",
                lambda: without_nvidia_default_runtime(existing_json),
            )
    if "systemd" in areas:
        files[SYSTEMD_UNIT] = FileSpec(systemd_unit(settings), 0o644, "systemd", "runs ds01d")
        files[TMPFILES_CONF] = FileSpec(
            tmpfiles_conf(settings), 0o644, "systemd", "creates the socket directory at boot"
        )
    return Rendering(files, problems)


# ---- Layer 3: device permissions --------------------------------------------------------------


def _perm_rule(module: str, nodes: str, group: str, mode: int, first: str = "") -> str:
    # udev: '$$' is a literal '$'; RUN arguments are split on spaces except inside '…'.
    body = (
        f"{first}for f in {nodes}; do [ -c $$f ] && chown root:{group} $$f "
        f"&& chmod {mode:04o} $$f; done; true"
    )
    return f'ACTION=="add", SUBSYSTEM=="module", KERNEL=="{module}", RUN+="/bin/sh -c \'{body}\'"'


def _mknod_query_nodes(mode: int) -> str:
    """Shell (udev-escaped) creating /dev/nvidiactl and one /dev/nvidiaN per GPU the driver
    lists ("Device Minor: N" in /proc/driver/nvidia/gpus/*/information), when missing: with
    NVreg_ModifyDeviceFiles=0 neither the driver nor nvidia-modprobe creates them."""
    return (
        f"[ -e /dev/nvidiactl ] || mknod -m {mode:04o} /dev/nvidiactl c 195 255; "
        "for i in /proc/driver/nvidia/gpus/*/information; do [ -r $$i ] || continue; "
        "while IFS=: read -r k v; do case $$k in *Minor) n=$$(echo $$v); "
        f"[ -e /dev/nvidia$$n ] || mknod -m {mode:04o} /dev/nvidia$$n c 195 $$n;; esac; "
        "done < $$i; done; "
    )


def _mknod_uvm_nodes(mode: int) -> str:
    """Shell (udev-escaped) creating /dev/nvidia-uvm (minor 0) and -uvm-tools (minor 1) with the
    major /proc/devices names "nvidia-uvm", when missing (nvidia-modprobe may be absent)."""
    return (
        "m=none; while read -r a b; do [ x$$b = xnvidia-uvm ] && m=$$a; done < /proc/devices; "
        "[ $$m = none ] || { "
        f"[ -e /dev/nvidia-uvm ] || mknod -m {mode:04o} /dev/nvidia-uvm c $$m 0; "
        f"[ -e /dev/nvidia-uvm-tools ] || mknod -m {mode:04o} /dev/nvidia-uvm-tools c $$m 1; "
        "}; "
    )


def udev_rules(config: Config, policy: DevicePolicy) -> str:
    host = config.host
    gated = host.compute_gate == "uvm"
    access = (
        "open: every user may open the nodes (mode 0666)"
        if host.device_access == "open"
        else f"group: members of '{host.device_group}' may open the nodes (mode 0660)"
    )
    lines = [
        "# ds01: permissions of the NVIDIA device nodes (BRIEF §2, layer 3).",
        MANAGED,
        f"# host.device_access: {access}.",
        "# Querying (nvidia-smi, NVML) needs /dev/nvidiactl and /dev/nvidiaN; CUDA also needs",
    ]
    if gated:
        lines += [
            "# /dev/nvidia-uvm. With host.compute_gate: uvm the driver is told not to create or",
            f"# change device files (NVreg_ModifyDeviceFiles=0 in {MODPROBE_CONF}), so these",
            "# rules create the nodes when a module loads and set their owner and mode; ds01d",
            "# keeps them so afterwards (it restores any change within a second).",
        ]
    else:
        lines += [
            "# /dev/nvidia-uvm. The driver creates its nodes itself with the modes in",
            f"# {MODPROBE_CONF}; these rules apply the same modes again whenever a module loads.",
        ]
    lines.append(
        _perm_rule(
            "nvidia",
            "/dev/nvidiactl /dev/nvidia-modeset /dev/nvidia[0-9]*",
            policy.group,
            policy.mode,
            _mknod_query_nodes(policy.mode) if gated else "",
        )
    )
    uvm_nodes = "/dev/nvidia-uvm /dev/nvidia-uvm-tools"
    create_uvm = "/usr/bin/nvidia-modprobe -u -c0 2>/dev/null; "
    if gated:
        create_uvm += _mknod_uvm_nodes(0o600)
        lines += [
            "# host.compute_gate: uvm: only members of "
            f"'{policy.uvm_group}' (exempt users and live grants,",
            "# kept by ds01d) may open the CUDA nodes; nvidia-smi keeps working for everyone.",
        ]
    lines.append(_perm_rule("nvidia_uvm", uvm_nodes, policy.uvm_group, policy.uvm_mode, create_uvm))
    return "\n".join(lines) + "\n"


def modprobe_conf(config: Config, policy: DevicePolicy, device_gid: int | None) -> str | None:
    if config.host.device_access == "open":
        gid = 0
    elif device_gid is None:
        return None
    else:
        gid = device_gid
    group = "root" if config.host.device_access == "open" else config.host.device_group
    gated = config.host.compute_gate == "uvm"
    lines = [
        "# ds01: modes the NVIDIA driver gives the device nodes it creates (BRIEF §2, layer 3).",
        MANAGED,
        f"# GID {gid} is group '{group}'. Takes effect when the nvidia module is next loaded",
        "# (reboot, or unload and load it again); `ds01 host apply` says whether it is.",
    ]
    options = (
        f"options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID={gid} "
        f"NVreg_DeviceFileMode={policy.mode:04o}"
    )
    if gated:
        lines += [
            "# host.compute_gate: uvm: NVreg_ModifyDeviceFiles=0 stops the driver and its helpers",
            "# from creating or rewriting /dev/nvidia* (NVIDIA's nv-reg.h: 'dynamic device file",
            "# management'); otherwise the first CUDA start by any root process (e.g. the NVIDIA",
            "# container CLI) resets the nodes to the modes above and opens the uvm gate. The",
            "# udev rule and ds01d create the nodes instead and keep their owner and mode (the",
            "# uvm nodes need ds01d either way: the option is not honored for them).",
        ]
        options += " NVreg_ModifyDeviceFiles=0"
    lines.append(options)
    return "\n".join(lines) + "\n"


# ---- systemd ------------------------------------------------------------------------------------

# packaging/systemd/ds01d.service, byte for byte (a test keeps the two equal); the ExecStart
# paths are replaced by the configured ones and the ds01d of this install.
_UNIT = """\
# ds01d: the ds01 daemon. Install: cp packaging/systemd/ds01d.service /etc/systemd/system/ &&
# systemctl daemon-reload && systemctl enable --now ds01d
[Unit]
Description=ds01 GPU allocation daemon
Documentation=file:///usr/share/doc/ds01/README.md
After=network.target docker.service nvidia-persistenced.service
Wants=docker.service

[Service]
Type=simple
ExecStart=@DS01D@ --config @CONFIG@ --state-dir @STATE@ --run-dir @RUN@
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=2
# /run/ds01 (sockets) and /var/lib/ds01 (state) are created with root ownership; the API socket
# inside is made mode 0666 by ds01d itself (identity comes from SO_PEERCRED, not file modes).
RuntimeDirectory=ds01
RuntimeDirectoryMode=0755
StateDirectory=ds01
StateDirectoryMode=0700
KillSignal=SIGTERM
TimeoutStopSec=30

[Install]
WantedBy=multi-user.target
"""


def systemd_unit(settings: HostSettings) -> str:
    return (
        _UNIT.replace("@DS01D@", _unit_word(settings.daemon))
        .replace("@CONFIG@", _unit_word(settings.config_path))
        .replace("@STATE@", _unit_word(settings.state_dir))
        .replace("@RUN@", _unit_word(settings.run_dir))
    )


def _unit_word(path: Path) -> str:
    """A path as one word of a systemd command line (double-quoted when it needs to be)."""
    text = str(path)
    if text and not any(c.isspace() or c in "\"'$%;\\" for c in text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def tmpfiles_conf(settings: HostSettings) -> str:
    return (
        "# ds01: the socket directory (api.sock, docker.sock, host-access), created at boot.\n"
        f"{MANAGED}\n"
        f"d {settings.run_dir} 0755 root root -\n"
    )
