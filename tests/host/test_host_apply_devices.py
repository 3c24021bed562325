"""`ds01 host apply` applies the devices area now (issue 12, item 2), run as the real `ds01`
command on a fake /dev tree (--root) with real character nodes: `--dry-run` prints
`would chmod/chown/mknod` and changes nothing; apply sets the owner and mode the config asks for
and creates the nodes the driver lists; a second run changes nothing; it says whether the loaded
driver already runs with the module options or needs a module reload or reboot. On the live
root it also puts the exempt users into ds01-gpu-host (ds01d keeps that group afterwards)."""

from __future__ import annotations

import grp
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from devtree import PARAMS_DEFAULT, UVM_MAJOR, DevTree, gpu_host_group, need_mknod
from host_support import HostFiles, ds01

from ds01.config.schema import GPU_HOST_GROUP
from support import Users, need

MODPROBE = "/etc/modprobe.d/ds01-nvidia.conf"


@pytest.fixture
def tree(tmp_path: Path) -> DevTree:
    need_mknod()
    return DevTree(tmp_path / "root")


@pytest.fixture
def gpu_host() -> Iterator[int]:
    need_mknod()
    with gpu_host_group() as gid:
        yield gid


def apply(cfg: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return ds01(
        "--config", str(cfg), "host", "apply", "--root", str(root), "--only", "devices", *extra
    )


def test_apply_sets_the_nodes_now_and_says_what_waits_for_a_reload(
    tmp_path: Path, tree: DevTree, gpu_host: int
) -> None:
    cfg = tmp_path / "uvm.yaml"
    cfg.write_text("host:\n  compute_gate: uvm\n")
    tree.driver(gpus=2)  # the loaded driver: two GPUs, ModifyDeviceFiles 1, DeviceFileMode 438
    tree.nodes(("nvidiactl", "nvidia0", "nvidia-uvm", "nvidia-uvm-tools"))  # root:root 0666
    reload_line = (
        "reload   the loaded nvidia driver runs with ModifyDeviceFiles=1: the options in "
        f"{MODPROBE} take effect only after a module reload or a reboot (stop every GPU user, "
        "then `modprobe -r nvidia_uvm nvidia_drm nvidia_modeset nvidia && modprobe nvidia "
        "nvidia_uvm`); until then the driver may reset /dev/nvidia* when a root process starts "
        "CUDA (e.g. a GPU container start); ds01d puts them back within a second and records it"
    )

    dry = apply(cfg, tree.root, "--dry-run")
    assert dry.returncode == 0, dry.stdout + dry.stderr
    lines = dry.stdout.splitlines()
    would = [line for line in lines if line.startswith("would ") and "/dev/" in line]
    assert would == [
        "would chmod /dev/nvidia-uvm 0666 -> 0660",
        "would chown root:ds01-gpu-host /dev/nvidia-uvm (was root:root)",
        "would chmod /dev/nvidia-uvm-tools 0666 -> 0660",
        "would chown root:ds01-gpu-host /dev/nvidia-uvm-tools (was root:root)",
        "would mknod /dev/nvidia1 c 195:1 root:root 0666",
    ]
    assert lines[-2:] == [reload_line, "dry run: nothing was changed"]
    assert tree.state("nvidia-uvm") == (0, 0, 0o666)
    assert not (tree.dev / "nvidia1").exists()

    done = apply(cfg, tree.root)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert [line for line in lines if line.split(" ", 1)[0] in ("chmod", "chown", "mknod")] == [
        "chmod    /dev/nvidia-uvm 0666 -> 0660",
        "chown    root:ds01-gpu-host /dev/nvidia-uvm (was root:root)",
        "chmod    /dev/nvidia-uvm-tools 0666 -> 0660",
        "chown    root:ds01-gpu-host /dev/nvidia-uvm-tools (was root:root)",
        "mknod    /dev/nvidia1 c 195:1 root:root 0666",
    ]
    assert lines[-1] == reload_line
    for name in ("nvidia-uvm", "nvidia-uvm-tools"):
        assert tree.state(name) == (0, gpu_host, 0o660)
    for name in ("nvidiactl", "nvidia0", "nvidia1"):
        assert tree.state(name) == (0, 0, 0o666)  # nvidia-smi stays open to everyone

    again = apply(cfg, tree.root)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-2:] == [
        reload_line,
        "nothing to change: 2 files already current, 5 device nodes right",
    ]

    # After the reboot: the driver runs with ds01's options.
    loaded = PARAMS_DEFAULT.replace("ModifyDeviceFiles: 1", "ModifyDeviceFiles: 0")
    (tree.root / "proc/driver/nvidia/params").write_text(loaded)
    assert apply(cfg, tree.root).stdout.splitlines()[-2] == (
        f"driver   the loaded nvidia driver already runs with the options in {MODPROBE}"
    )


def test_without_a_driver_it_says_the_options_apply_when_one_loads(
    tmp_path: Path, tree: DevTree
) -> None:
    cfg = tmp_path / "group.yaml"
    cfg.write_text("host:\n  device_access: group\n  device_group: root\n")
    tree.nodes(("nvidiactl", "nvidia0"))
    done = apply(cfg, tree.root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "chmod    /dev/nvidiactl 0666 -> 0660" in done.stdout.splitlines()
    assert tree.state("nvidiactl") == tree.state("nvidia0") == (0, 0, 0o660)
    assert done.stdout.splitlines()[-1] == (
        "driver   no NVIDIA driver is loaded under the root (no /proc/driver/nvidia/params): the "
        f"options in {MODPROBE} apply when it loads"
    )


def test_nodes_the_driver_needs_are_created_from_proc_devices(
    tmp_path: Path, tree: DevTree, gpu_host: int
) -> None:
    """With ModifyDeviceFiles=0 nothing else creates the nodes: apply makes them from the
    majors in /proc/devices and the GPUs' minors, as after a reboot before ds01d runs."""
    cfg = tmp_path / "uvm.yaml"
    cfg.write_text("host:\n  compute_gate: uvm\n")
    tree.driver(gpus=1)
    assert apply(cfg, tree.root).returncode == 0
    assert {n: tree.rdev(n) for n in sorted(os.listdir(tree.dev))} == {
        "nvidia-uvm": (UVM_MAJOR, 0),
        "nvidia-uvm-tools": (UVM_MAJOR, 1),
        "nvidia0": (195, 0),
        "nvidiactl": (195, 255),
    }
    assert tree.state("nvidia-uvm") == (0, gpu_host, 0o660)
    assert tree.state("nvidiactl") == (0, 0, 0o666)


def test_on_the_live_root_exempt_users_join_the_gpu_host_group(
    users: Users, tmp_path: Path
) -> None:
    """The real / (devices area only): ds01-gpu-host is created and the exempt users added, so
    they compute before ds01d first runs; the files are restored and the group deleted after."""
    need(os.geteuid() == 0, "applying to / needs root")
    need(
        not any(Path("/dev").glob("nvidia*")),
        "this machine has NVIDIA device nodes: the live apply would change them",
    )
    try:
        grp.getgrnam(GPU_HOST_GROUP)
        pytest.skip(f"group {GPU_HOST_GROUP} exists on this machine; not touching it")
    except KeyError:
        pass
    prof = users.add()
    cfg = tmp_path / "live.yaml"
    cfg.write_text(f"exempt_users: [{prof}]\nhost:\n  compute_gate: uvm\n")
    files = [Path("/etc/udev/rules.d/70-ds01-nvidia.rules"), Path(MODPROBE)]
    try:
        with HostFiles(files):
            result = apply(cfg, Path("/"))
            assert result.returncode == 0, result.stdout + result.stderr
            lines = result.stdout.splitlines()
            assert f"ran      groupadd --system {GPU_HOST_GROUP}" in lines
            assert f"ran      gpasswd --add {prof} {GPU_HOST_GROUP}" in lines
            assert grp.getgrnam(GPU_HOST_GROUP).gr_mem == [prof]
            assert (
                "next     groups: a user gets a new group in new login sessions; running shells "
                "and processes keep the groups they started with" in lines
            )
            again = apply(cfg, Path("/"))
            assert again.stdout.splitlines()[-1] == "nothing to change: 2 files already current"
    finally:
        subprocess.run(["groupdel", GPU_HOST_GROUP], capture_output=True)


def test_the_group_name_is_never_guessed_for_a_node(tmp_path: Path, tree: DevTree) -> None:
    """Under another root, a device group that does not exist is not created (accounts are the
    live system's); the query nodes stay open (0666) and apply says why."""
    group = f"ds01t{uuid.uuid4().hex[:8]}"
    cfg = tmp_path / "group.yaml"
    cfg.write_text(f"host:\n  device_access: group\n  device_group: {group}\n")
    tree.nodes(("nvidiactl",), mode=0o600)
    done = apply(cfg, tree.root)
    lines = done.stdout.splitlines()
    assert (
        f"note     device nodes: group '{group}' does not exist: /dev/nvidiactl and /dev/nvidiaN "
        "are kept root:root 0666 so everyone can still query; create it (`ds01 host apply`)"
    ) in lines
    assert tree.state("nvidiactl") == (0, 0, 0o666)
