"""A fake host tree for the device-node tests: real character nodes (mknod, as root) under
DIR/dev, and the driver's /proc entries ds01 reads (DIR/proc/devices,
DIR/proc/driver/nvidia/gpus/*/information, …params) written as the driver prints them.

The nodes the tests open are made with /dev/null's device number (1:3), so a real process can
hold one open and the kernel's permission check on open() is the real one; nodes ds01 creates
get the numbers the fake /proc names (they are never opened)."""

from __future__ import annotations

import grp
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ds01.config.schema import GPU_HOST_GROUP
from support import need

NULL = os.makedev(1, 3)
UVM_MAJOR = 509  # what the fake /proc/devices says nvidia-uvm got
QUERY = ("nvidiactl", "nvidia0", "nvidia1")
UVM = ("nvidia-uvm", "nvidia-uvm-tools")

PROC_DEVICES = f"""Character devices:
  1 mem
  4 tty
195 nvidia-frontend
{UVM_MAJOR} nvidia-uvm
510 nvidia-caps

Block devices:
  8 sd
"""

# As driver 580 prints it (the H200 host: ModifyDeviceFiles 1, DeviceFileMode 438 = 0666).
PARAMS_DEFAULT = """ResmanDebugLevel: 4294967295
RmLogonRC: 1
ModifyDeviceFiles: 1
DeviceFileUID: 0
DeviceFileGID: 0
DeviceFileMode: 438
InitializeSystemMemoryAllocations: 1
"""


def need_mknod() -> None:
    need(os.geteuid() == 0, "creating device nodes needs root")


class DevTree:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.dev = root / "dev"
        self.dev.mkdir(parents=True, exist_ok=True)
        self.dev.chmod(0o755)

    def node(self, name: str, mode: int = 0o666, gid: int = 0) -> Path:
        path = self.dev / name
        os.mknod(path, stat.S_IFCHR | 0o600, NULL)
        os.chown(path, 0, gid)
        os.chmod(path, mode)
        return path

    def nodes(self, names: tuple[str, ...] = QUERY + UVM, mode: int = 0o666) -> None:
        for name in names:
            self.node(name, mode)

    def driver(self, gpus: int = 2, params: str = PARAMS_DEFAULT) -> None:
        """The loaded driver's /proc entries: majors, one information file per GPU, params."""
        proc = self.root / "proc"
        (proc / "driver/nvidia/gpus").mkdir(parents=True, exist_ok=True)
        (proc / "devices").write_text(PROC_DEVICES)
        (proc / "driver/nvidia/params").write_text(params)
        for n in range(gpus):
            d = proc / f"driver/nvidia/gpus/0000:{n + 1:02x}:00.0"
            d.mkdir(parents=True, exist_ok=True)
            (d / "information").write_text(
                "Model: \t\t NVIDIA H200\nIRQ:   \t\t 186\n"
                f"GPU UUID: \t GPU-00000000-0000-0000-0000-00000000000{n}\n"
                f"Video BIOS: \t 96.00.af.00.01\nBus Type: \t PCIe\nDMA Size: \t 52 bits\n"
                f"Device Minor: \t {n}\nBus Location: \t 0000:{n + 1:02x}:00.0\n"
            )

    def state(self, name: str) -> tuple[int, int, int]:
        """(uid, gid, mode) of a node."""
        st = os.lstat(self.dev / name)
        assert stat.S_ISCHR(st.st_mode), name
        return st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)

    def rdev(self, name: str) -> tuple[int, int]:
        st = os.lstat(self.dev / name)
        return os.major(st.st_rdev), os.minor(st.st_rdev)


@contextmanager
def gpu_host_group() -> Iterator[int]:
    """The group ds01-gpu-host's gid, created for the test when missing (and deleted after).
    Used only as the owner of nodes in a fake tree: its membership is never changed."""
    try:
        gid = grp.getgrnam(GPU_HOST_GROUP).gr_gid
    except KeyError:
        gid = None
    if gid is not None:
        yield gid
        return
    subprocess.run(["groupadd", "--system", GPU_HOST_GROUP], check=True, capture_output=True)
    try:
        yield grp.getgrnam(GPU_HOST_GROUP).gr_gid
    finally:
        subprocess.run(["groupdel", GPU_HOST_GROUP], capture_output=True)
