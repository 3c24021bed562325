"""The uvm gate holds against the driver (issue 12, item 1), end to end: a real ds01d with
`compute_gate: uvm` keeps a fake device tree (`--host-root`, real character nodes). A test does
what the driver did on the H200 at a root cuInit — /dev/nvidia-uvm back to root:root 0666, same
inode — and sees ds01d put it back and audit it with the root process that holds the node; it
removes a node and sees ds01d make it again from the driver's /proc/devices major."""

from __future__ import annotations

import grp
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from devtree import QUERY, UVM, UVM_MAJOR, DevTree, need_mknod

from ds01.api.schemas import EventOut
from ds01.config.schema import GPU_HOST_GROUP
from support import BASIC_CONFIG, Daemon, short_tmp, wait_for


def host_events(d: Daemon, action: str) -> list[EventOut]:
    with d.client() as c:
        return [e for e in c.events(kind="host") if e.action == action]


@pytest.fixture
def gated(daemon_factory: Any) -> Iterator[tuple[Daemon, DevTree]]:
    """ds01d with compute_gate: uvm on a fake tree whose nodes the 'driver' left root:root 0666.
    ds01d creates ds01-gpu-host itself (its grants keep the members): a machine that already has
    the group is not touched."""
    need_mknod()
    try:
        grp.getgrnam(GPU_HOST_GROUP)
        pytest.skip(f"group {GPU_HOST_GROUP} exists on this machine; not touching it")
    except KeyError:
        pass
    base = short_tmp("ds01-host-")
    tree = DevTree(base / "host")
    tree.driver(gpus=2)
    tree.nodes(QUERY + UVM)
    d: Daemon = daemon_factory(config=BASIC_CONFIG + "host:\n  compute_gate: uvm\n", start=False)
    d.extra_args += ["--host-root", str(tree.root)]
    try:
        d.start()
        yield d, tree
    finally:
        d.stop()
        subprocess.run(["groupdel", GPU_HOST_GROUP], capture_output=True)
        subprocess.run(["rm", "-rf", str(base)], check=False)


def test_ds01d_gates_the_uvm_nodes_and_restores_them_after_a_root_reset(
    gated: tuple[Daemon, DevTree],
) -> None:
    d, tree = gated
    gid = grp.getgrnam(GPU_HOST_GROUP).gr_gid
    for name in UVM:  # done at start, before the API answered
        assert tree.state(name) == (0, gid, 0o660), name
    for name in QUERY:
        assert tree.state(name) == (0, 0, 0o666), name  # nvidia-smi stays open to everyone
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); print('open', flush=True);"
            " time.sleep(300)",
            str(tree.dev / "nvidia-uvm"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        inode = os.lstat(tree.dev / "nvidia-uvm").st_ino
        # What a root cuInit did on the H200 with ModifyDeviceFiles: 1.
        os.chown(tree.dev / "nvidia-uvm", 0, 0)
        os.chmod(tree.dev / "nvidia-uvm", 0o666)
        wait_for(
            lambda: tree.state("nvidia-uvm") == (0, gid, 0o660),
            "ds01d to restore /dev/nvidia-uvm",
            30,
            interval=0.02,
            detail=lambda: d.log()[-3000:],
        )
        assert os.lstat(tree.dev / "nvidia-uvm").st_ino == inode  # restored, not replaced
        event = wait_for(
            lambda: [
                e
                for e in host_events(d, "devices_restored")
                if e.details["nodes"][0]["was"] == "root:root 0666"
            ],
            "the restoration's audit event",
            30,
        )[-1]
        comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
        assert event.actor == "ds01d" and event.reason == "device_drift"
        assert event.details["trigger"] in ("inotify", "poll")
        assert [(n["path"], n["was"], n["now"]) for n in event.details["nodes"]] == [
            ("/dev/nvidia-uvm", "root:root 0666", "root:ds01-gpu-host 0660")
        ]
        assert {"pid": holder.pid, "comm": comm, "node": "/dev/nvidia-uvm"} in event.details[
            "root_processes"
        ]
    finally:
        holder.kill()
        holder.wait()

    # A node removed (a driver reload, a cleanup script) is made again from /proc/devices.
    (tree.dev / "nvidia-uvm-tools").unlink()
    # Made (mknod, root-only), then given its group and mode: wait for the end of both, the
    # file's existence alone is the first step (a busy CI saw it between the two).
    wait_for(
        lambda: (
            (tree.dev / "nvidia-uvm-tools").exists()
            and tree.state("nvidia-uvm-tools") == (0, gid, 0o660)
        ),
        "ds01d to create /dev/nvidia-uvm-tools again, root:ds01-gpu-host 0660",
        30,
        interval=0.02,
        detail=lambda: d.log()[-3000:],
    )
    assert tree.rdev("nvidia-uvm-tools") == (UVM_MAJOR, 1)
    created = wait_for(lambda: host_events(d, "devices_created"), "the creation's audit event", 30)
    assert created[-1].details["nodes"] == [
        {
            "path": "/dev/nvidia-uvm-tools",
            "was": None,
            "now": "root:ds01-gpu-host 0660",
            "ctime": None,
            "device": f"{UVM_MAJOR}:1",
        }
    ]
    with d.client() as c:
        loop = c.health().loops["devices"]
    assert loop.failing is None and loop.interval_s == 0.5
