"""The cgroup memory readers of `ds01 container stats` (lifecycle/containerstats.py) on the file
formats the kernel writes, for the cgroup version a host's engine does not use here: this
machine's private engine runs containers under cgroup v1 (tests/containers/
test_container_stats_e2e.py reads those for real), so the v2 files are laid out as the kernel
writes them (Documentation/admin-guide/cgroup-v2.rst: memory.current, memory.max, memory.stat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.lifecycle.containerstats import memory_dirs, read_memory
from ds01.lifecycle.cpu import parse_mountinfo

CID = "c691a5174af21cf32bf060bb003068c5454edc0cb4068c9c35a52d9ff8da70c9"
HYBRID = """\
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
"""
V2_ONLY = "29 23 0:26 / /sys/fs/cgroup rw,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_memory_dirs_prefer_the_unified_tree_then_the_v1_memory_hierarchy() -> None:
    cgroup = f"4:memory:/ds01/alice/{CID}\n2:cpuacct:/ds01/alice/{CID}\n0::/ds01/alice/{CID}\n"
    assert memory_dirs(cgroup, parse_mountinfo(HYBRID)) == [
        (Path(f"/sys/fs/cgroup/unified/ds01/alice/{CID}"), 2),
        (Path(f"/sys/fs/cgroup/memory/ds01/alice/{CID}"), 1),
    ]
    assert memory_dirs(f"0::/system.slice/docker-{CID}.scope\n", parse_mountinfo(V2_ONLY)) == [
        (Path(f"/sys/fs/cgroup/system.slice/docker-{CID}.scope"), 2)
    ]


def _write(d: Path, files: dict[str, str]) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)
    return d


@pytest.mark.parametrize(
    ("version", "files", "want"),
    [
        pytest.param(
            2,
            {
                "memory.current": "73400320\n",
                "memory.max": "268435456\n",
                "memory.stat": "anon 1200128\nfile 72089600\ninactive_file 2097152\nshmem 70e6\n",
            },
            (73400320 - 2097152, 268435456),
            id="v2: current minus inactive_file, of memory.max",
        ),
        pytest.param(
            2,
            {"memory.current": "4096\n", "memory.max": "max\n", "memory.stat": "anon 4096\n"},
            (4096, None),
            id="v2: max is no limit",
        ),
        pytest.param(
            1,
            {
                "memory.usage_in_bytes": "22048768\n",
                "memory.limit_in_bytes": "67108864\n",
                "memory.stat": "cache 21499904\ninactive_file 1\ntotal_inactive_file 147456\n",
            },
            (22048768 - 147456, 67108864),
            id="v1: usage minus total_inactive_file (docker stats: 20.89MiB / 64MiB)",
        ),
        pytest.param(
            1,
            {
                "memory.usage_in_bytes": "8192\n",
                "memory.limit_in_bytes": "9223372036854771712\n",
                "memory.stat": "total_inactive_file 0\n",
            },
            (8192, None),
            id="v1: the page-rounded 2^63 is no limit",
        ),
    ],
)
def test_read_memory_uses_dockers_formula(
    tmp_path: Path, version: int, files: dict[str, str], want: tuple[int, int | None]
) -> None:
    assert read_memory(_write(tmp_path / "cg", files), version) == want


def test_a_v2_tree_without_the_memory_controller_has_no_reading(tmp_path: Path) -> None:
    """A hybrid host's unified tree: cpu.stat but no memory files (the v1 hierarchy has them)."""
    assert read_memory(_write(tmp_path / "cg", {"cpu.stat": "usage_usec 5\n"}), 2) is None
