"""A GPU host for the doctor's live checks, on a machine without a GPU: stand-ins for NVIDIA's
libcuda.so.1 and nvidia-smi built from fixtures/standin/*.c with the C compiler, and a private
mount namespace whose /dev holds NVIDIA device nodes the test describes.

The nodes are real character devices with /dev/null's numbers (1:3), so opening one is the
kernel's own check of owner, group and mode — the check that decides whether CUDA works. The
namespace is private (`unshare --mount`): the host's /dev and /etc are never touched; bind mounts
asked for (a temp profile.d over /etc/profile.d, say) live only inside it.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from support import need

STANDIN = Path(__file__).parent / "fixtures" / "standin"
CUDA_ERROR_UNKNOWN = 999


@dataclass(frozen=True)
class Standins:
    dir: Path  # readable by every user
    libdir: Path  # holds libcuda.so.1
    smi: Path  # an ELF nvidia-smi
    call_log: Path  # "euid rc" per cuInit, writable by every user

    def callers(self) -> list[int]:
        text = self.call_log.read_text() if self.call_log.exists() else ""
        return [int(line.split()[0]) for line in text.splitlines() if line.strip()]


def public_dir(prefix: str) -> Path:
    d = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    d.chmod(0o755)
    return d


def build_standins(dest: Path, params_file: Path | None = None) -> Standins:
    """Compile the stand-ins into `dest` (which every user can traverse)."""
    cc = shutil.which("cc") or shutil.which("gcc")
    need(cc is not None, "no C compiler (cc/gcc) to build the stand-in libcuda")
    assert cc is not None
    libdir = dest / "lib"
    libdir.mkdir(mode=0o755)
    libdir.chmod(0o755)
    call_log = dest / "cuinit.log"
    call_log.touch()
    call_log.chmod(0o666)
    defines = [f'-DCALL_LOG="{call_log}"']
    if params_file is not None:
        defines.append(f'-DPARAMS_FILE="{params_file}"')
    lib = libdir / "libcuda.so.1"
    smi = dest / "nvidia-smi"
    for argv in (
        [cc, "-shared", "-fPIC", "-O1", *defines, "-o", str(lib), str(STANDIN / "libcuda.c")],
        [cc, "-O1", "-o", str(smi), str(STANDIN / "nvidia-smi.c")],
    ):
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
    lib.chmod(0o755)
    smi.chmod(0o755)
    return Standins(dest, libdir, smi, call_log)


@dataclass(frozen=True)
class Node:
    name: str  # under /dev
    uid: int = 0
    gid: int = 0
    mode: int = 0o666


GPU_NODES = (Node("nvidiactl"), Node("nvidia0"), Node("nvidia-modeset"))


@dataclass
class Namespace:
    """Runs commands in a private mount namespace with a fresh /dev holding `nodes`."""

    nodes: list[Node]
    binds: dict[Path, Path] = field(default_factory=dict)  # source → target

    def script(self) -> str:
        lines = [
            "set -e",
            "mount -t tmpfs -o mode=0755,size=1m ds01-test-dev /dev",
            "mknod -m 0666 /dev/null c 1 3",
            "mknod -m 0666 /dev/zero c 1 5",
            "mknod -m 0666 /dev/full c 1 7",
            "mknod -m 0666 /dev/random c 1 8",
            "mknod -m 0666 /dev/urandom c 1 9",
            "ln -s /proc/self/fd /dev/fd",
            "mkdir -m 1777 /dev/shm",
        ]
        for node in self.nodes:
            lines.append(f"mknod -m {node.mode:04o} /dev/{node.name} c 1 3")
            lines.append(f"chown {node.uid}:{node.gid} /dev/{node.name}")
        for source, target in self.binds.items():
            lines.append(f"mount --bind '{source}' '{target}'")
        lines.append('exec "$@"')
        return "\n".join(lines)

    def run(
        self, argv: list[str], env: dict[str, str], timeout: float = 180.0
    ) -> subprocess.CompletedProcess[str]:
        need(namespaces_work(), "no private mount namespaces here (unshare --mount needs root)")
        wrapped = ["unshare", "--mount", "--propagation", "private"]
        wrapped += ["sh", "-c", self.script(), "ds01-test-ns", *argv]
        return subprocess.run(
            wrapped, capture_output=True, text=True, env=env, timeout=timeout, check=False
        )


_WORKS: list[bool] = []


def namespaces_work() -> bool:
    if not _WORKS:
        probe = "mount -t tmpfs -o size=1m ds01-probe /mnt && mknod /mnt/n c 1 3"
        try:
            done = subprocess.run(
                ["unshare", "--mount", "--propagation", "private", "sh", "-c", probe],
                capture_output=True,
                timeout=30,
                check=False,
            )
            _WORKS.append(done.returncode == 0)
        except (OSError, subprocess.TimeoutExpired):
            _WORKS.append(False)
    return _WORKS[0]


def real_libcuda() -> bool:
    """Whether this machine's dynamic linker knows a real libcuda.so.1 (then the doctor would
    find that one before a stand-in)."""
    try:
        listed = subprocess.run(
            ["ldconfig", "-p"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except OSError:
        return False
    return any(line.strip().startswith("libcuda.so.1 ") for line in listed.splitlines())
