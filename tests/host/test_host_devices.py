"""The device nodes under the uvm gate (issue 12, item 1) on a fake /dev tree with real character
nodes: the udev rule's shell creates and gates the nodes, host/devnodes plans and makes the
changes, the kernel's own permission check shows who can open what in every combination of
device_access and compute_gate, and ds01d's device watch (in process, on a real database)
restores drift, records it with the root process holding the node, and wakes on inotify."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from devtree import QUERY, UVM, UVM_MAJOR, DevTree, gpu_host_group, need_mknod

from ds01.config import Config, parse_config_text
from ds01.config.schema import GPU_HOST_GROUP
from ds01.host import devnodes
from ds01.host.render import device_policy, udev_rules
from ds01.services.devicewatch import DeviceWatch
from ds01.store import events
from ds01.store.db import Database
from support import Users, as_user, short_tmp

SYSTEM_PYTHON = "/usr/bin/python3"


def config(text: str) -> Config:
    return parse_config_text(text, "test.yaml")


@pytest.fixture
def tree() -> Iterator[DevTree]:
    need_mknod()
    base = short_tmp("ds01-dev-")  # 0755: the test users can reach the nodes
    yield DevTree(base / "host")
    subprocess.run(["rm", "-rf", str(base)], check=False)


@pytest.fixture
def gpu_host() -> Iterator[int]:
    need_mknod()
    with gpu_host_group() as gid:
        yield gid


# ---- the udev rule ----------------------------------------------------------------------------


def run_rule_bodies(rules: str, root: Path) -> None:
    """Run each RUN+= shell of the rendered rules the way udev would (`$$` is `$`), with
    /dev/nvidia* and /proc/ moved under the fake root."""
    bodies = re.findall(r"RUN\+=\"/bin/sh -c '(.*)'\"$", rules, re.MULTILINE)
    assert len(bodies) == 2
    for body in bodies:
        script = (
            body.replace("$$", "$")
            .replace("/dev/nvidia", f"{root}/dev/nvidia")
            .replace("/proc/", f"{root}/proc/")
        )
        done = subprocess.run(["/bin/sh", "-c", script], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_the_udev_rule_creates_the_nodes_the_driver_no_longer_creates(
    tree: DevTree, gpu_host: int, users: Users
) -> None:
    """With NVreg_ModifyDeviceFiles=0 nothing else makes /dev/nvidiactl, /dev/nvidiaN (from the
    GPUs' "Device Minor") and /dev/nvidia-uvm* (major from /proc/devices); the rule does, with
    the gate's owner and mode."""
    group = users.group(f"ds01t{os.urandom(4).hex()}")
    gid = devnodes.group_gid(group)
    cfg = config(f"host:\n  device_access: group\n  device_group: {group}\n  compute_gate: uvm\n")
    tree.driver(gpus=2)
    run_rule_bodies(udev_rules(cfg, device_policy(cfg)), tree.root)
    assert sorted(os.listdir(tree.dev)) == sorted(QUERY + UVM)
    assert {n: tree.rdev(n) for n in sorted(os.listdir(tree.dev))} == {
        "nvidia-uvm": (UVM_MAJOR, 0),
        "nvidia-uvm-tools": (UVM_MAJOR, 1),
        "nvidia0": (195, 0),
        "nvidia1": (195, 1),
        "nvidiactl": (195, 255),
    }
    for name in QUERY:
        assert tree.state(name) == (0, gid, 0o660), name
    for name in UVM:
        assert tree.state(name) == (0, gpu_host, 0o660), name


# ---- planning and making the changes ----------------------------------------------------------


def test_drift_and_missing_nodes_are_planned_made_and_then_left_alone(
    tree: DevTree, gpu_host: int
) -> None:
    cfg = config("host:\n  compute_gate: uvm\n")
    tree.driver(gpus=2)
    tree.nodes(("nvidiactl", "nvidia0", "nvidia-uvm"))  # the driver's default: root:root 0666
    plan = devnodes.plan(cfg, tree.root)
    assert [a for c in plan.changes for a in c.actions()] == [
        "chmod /dev/nvidia-uvm 0666 -> 0660",
        "chown root:ds01-gpu-host /dev/nvidia-uvm (was root:root)",
        "mknod /dev/nvidia-uvm-tools c 509:1 root:ds01-gpu-host 0660",
        "mknod /dev/nvidia1 c 195:1 root:root 0666",
    ]
    outcome = devnodes.execute(plan.changes, tree.root)
    assert outcome.failed == []
    assert tree.state("nvidia-uvm") == tree.state("nvidia-uvm-tools") == (0, gpu_host, 0o660)
    assert tree.state("nvidia1") == tree.state("nvidiactl") == (0, 0, 0o666)
    assert tree.rdev("nvidia-uvm-tools") == (UVM_MAJOR, 1)
    assert tree.rdev("nvidia1") == (195, 1)
    again = devnodes.plan(cfg, tree.root)
    assert (again.changes, again.problems, again.checked) == ((), (), 5)


def test_something_else_with_a_node_name_is_left_alone(tree: DevTree) -> None:
    cfg = config("host:\n  device_access: group\n  device_group: root\n")
    (tree.dev / "nvidia-uvm").write_text("not a device\n")
    (tree.dev / "nvidia-uvm").chmod(0o666)
    tree.node("nvidiactl", 0o666)
    plan = devnodes.plan(cfg, tree.root)
    assert plan.problems == ("/dev/nvidia-uvm left alone: not a character device",)
    assert [c.path for c in plan.changes] == ["/dev/nvidiactl"]
    devnodes.execute(plan.changes, tree.root)
    assert (tree.dev / "nvidia-uvm").stat().st_mode & 0o777 == 0o666
    assert tree.state("nvidiactl") == (0, 0, 0o660)


def test_mig_capability_nodes_are_created_with_the_drivers_mode(tree: DevTree) -> None:
    """nvidia-caps nodes (MIG) follow /proc/driver/nvidia/capabilities: minor and mode (decimal)
    per file, root:root, as nvidia-modprobe would make them."""
    tree.driver(gpus=0)
    caps = tree.root / "proc/driver/nvidia/capabilities"
    (caps / "gpu0/mig/gi1/ci0").mkdir(parents=True)
    (caps / "mig").mkdir()
    (caps / "mig/config").write_text(
        "DeviceFileMinor: 1\nDeviceFileMode: 256\nDeviceFileModify: 0\n"
    )
    (caps / "gpu0/mig/gi1/access").write_text("DeviceFileMinor: 12\nDeviceFileMode: 292\n")
    (caps / "gpu0/mig/gi1/ci0/access").write_text("DeviceFileMinor: 13\nDeviceFileMode: 292\n")
    cfg = config("host:\n  device_access: group\n  device_group: root\n")
    devnodes.execute(devnodes.plan(cfg, tree.root).changes, tree.root)
    caps_dev = tree.dev / "nvidia-caps"
    assert sorted(os.listdir(caps_dev)) == ["nvidia-cap1", "nvidia-cap12", "nvidia-cap13"]
    assert os.stat(caps_dev / "nvidia-cap1").st_mode & 0o777 == 0o400
    assert os.stat(caps_dev / "nvidia-cap12").st_mode & 0o777 == 0o444
    assert os.major(os.stat(caps_dev / "nvidia-cap13").st_rdev) == 510


def test_a_missing_device_group_never_blocks_queries(tree: DevTree) -> None:
    cfg = config("host:\n  device_access: group\n  device_group: ds01t-no-such-group\n")
    tree.nodes(("nvidiactl", "nvidia0"), mode=0o600)
    plan = devnodes.plan(cfg, tree.root)
    assert plan.notes == (
        "group 'ds01t-no-such-group' does not exist: /dev/nvidiactl and /dev/nvidiaN are kept "
        "root:root 0666 so everyone can still query; create it (`ds01 host apply`)",
    )
    devnodes.execute(plan.changes, tree.root)
    assert tree.state("nvidiactl") == tree.state("nvidia0") == (0, 0, 0o666)


# ---- who can open what: every combination ------------------------------------------------------

OPEN_ALL = """
import json, os, sys
out = {}
for path in sys.argv[1:]:
    try:
        os.close(os.open(path, os.O_RDWR))
        out[os.path.basename(path)] = True
    except PermissionError:
        out[os.path.basename(path)] = False
print(json.dumps(out))
"""


def opens(user: str, tree: DevTree) -> dict[str, bool]:
    """Which nodes `user` can open read-write: the kernel's own check, as that user."""
    paths = [str(tree.dev / n) for n in QUERY + UVM]
    done = as_user(user, [SYSTEM_PYTHON, "-c", OPEN_ALL, *paths])
    assert done.returncode == 0, done.stderr
    result: dict[str, bool] = json.loads(done.stdout)
    return result


@pytest.mark.parametrize("access", ["open", "group"])
@pytest.mark.parametrize("gate", ["none", "uvm"])
def test_queries_stay_open_to_every_ds01_user_in_every_combination(
    access: str, gate: str, tree: DevTree, gpu_host: int, users: Users
) -> None:
    """A plain ds01 user (in the device group, as `host apply` makes every ds01 user) can always
    open /dev/nvidiactl and /dev/nvidiaN (nvidia-smi, NVML); /dev/nvidia-uvm* only without the
    gate. An exempt user (also in ds01-gpu-host, as ds01d makes them) opens everything."""
    devgroup = users.group(f"ds01t{os.urandom(4).hex()}")
    plain = users.add(groups=(devgroup,))
    exempt = users.add(groups=(devgroup, GPU_HOST_GROUP))
    outsider = users.add()  # no ds01 user: named nowhere, in no ds01 group
    cfg = config(
        f"host:\n  device_access: {access}\n  device_group: {devgroup}\n  compute_gate: {gate}\n"
    )
    tree.nodes(mode=0o666)  # as the driver leaves them
    outcome = devnodes.execute(devnodes.plan(cfg, tree.root).changes, tree.root)
    assert outcome.failed == []
    query = dict.fromkeys(QUERY, True)
    assert opens(plain, tree) == {**query, **dict.fromkeys(UVM, gate == "none")}
    assert opens(exempt, tree) == {**query, **dict.fromkeys(UVM, True)}
    assert opens(outsider, tree) == {
        **dict.fromkeys(QUERY, access == "open"),
        **dict.fromkeys(UVM, access == "open" and gate == "none"),
    }


# ---- the device watch, in process -------------------------------------------------------------


def host_events(db: Database, action: str) -> list[events.Event]:
    with db.transaction() as conn:
        return [e for e in events.query(conn, kind="host") if e.action == action]


@pytest.fixture
def holder(tree: DevTree) -> Iterator[subprocess.Popen[str]]:
    """A root process that holds /dev/nvidia-uvm open, like a running CUDA program."""
    tree.node("nvidia-uvm", 0o660)
    proc = subprocess.Popen(
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
    assert proc.stdout is not None and proc.stdout.readline().strip() == "open"
    yield proc
    proc.kill()
    proc.wait()


def test_the_watch_restores_drift_and_records_who_held_the_node(
    tree: DevTree, gpu_host: int, holder: subprocess.Popen[str], tmp_path: Path
) -> None:
    cfg = config("host:\n  compute_gate: uvm\n")
    tree.nodes(("nvidiactl", "nvidia0", "nvidia-uvm-tools"))
    db = Database(tmp_path / "ds01.db")
    watch = DeviceWatch(db, lambda: cfg, tree.root, clock=lambda: 1000.0)
    first = watch.enforce("start")
    assert sorted(c.path for c in first) == ["/dev/nvidia-uvm", "/dev/nvidia-uvm-tools"]
    assert tree.state("nvidia-uvm") == (0, gpu_host, 0o660)
    # What the driver did on the H200 at a root cuInit: root:root 0666, same inode.
    os.chown(tree.dev / "nvidia-uvm", 0, 0)
    os.chmod(tree.dev / "nvidia-uvm", 0o666)
    restored = watch.enforce("poll")
    assert [c.actions() for c in restored] == [
        [
            "chmod /dev/nvidia-uvm 0666 -> 0660",
            "chown root:ds01-gpu-host /dev/nvidia-uvm (was root:root)",
        ]
    ]
    assert tree.state("nvidia-uvm") == (0, gpu_host, 0o660)
    assert tree.state("nvidiactl") == (0, 0, 0o666)  # queries stay open
    recorded = host_events(db, "devices_restored")
    assert len(recorded) == 2
    last = recorded[-1]
    assert last.actor == "ds01d" and last.reason == "device_drift" and last.ts == 1000.0
    assert last.details["trigger"] == "poll"
    assert [(n["path"], n["was"], n["now"]) for n in last.details["nodes"]] == [
        ("/dev/nvidia-uvm", "root:root 0666", "root:ds01-gpu-host 0660")
    ]
    comm = Path(f"/proc/{holder.pid}/comm").read_text().strip()
    assert {"pid": holder.pid, "comm": comm, "node": "/dev/nvidia-uvm"} in last.details[
        "root_processes"
    ]
    assert f"{holder.pid} ({comm})" in last.message
    assert watch.enforce("poll") == []  # nothing drifted: no change, no event
    assert len(host_events(db, "devices_restored")) == 2


def test_configs_at_the_drivers_defaults_leave_dev_alone(tree: DevTree, tmp_path: Path) -> None:
    """device_access open and compute_gate none is what the driver does itself: ds01d never
    touches /dev then (test daemons on a real GPU host included)."""
    tree.nodes(("nvidiactl", "nvidia-uvm"), mode=0o600)
    tree.driver(gpus=1)
    db = Database(tmp_path / "ds01.db")
    watch = DeviceWatch(db, lambda: config(""), tree.root)
    assert watch.enforce() == []
    assert sorted(os.listdir(tree.dev)) == ["nvidia-uvm", "nvidiactl"]
    assert tree.state("nvidiactl") == (0, 0, 0o600)
    assert host_events(db, "devices_restored") == host_events(db, "devices_created") == []


def test_inotify_wakes_the_watch_when_a_node_changes(
    tree: DevTree, gpu_host: int, tmp_path: Path
) -> None:
    cfg = config("host:\n  compute_gate: uvm\n")
    tree.nodes(("nvidiactl", "nvidia-uvm"))
    db = Database(tmp_path / "ds01.db")
    watch = DeviceWatch(db, lambda: cfg, tree.root)
    watch.enforce("start")

    async def scenario() -> list[devnodes.NodeChange]:
        wake = watch.watch(asyncio.get_running_loop())
        try:
            os.chmod(tree.dev / "nvidia-uvm", 0o666)
            await asyncio.wait_for(wake.wait(), 30)
            return await asyncio.to_thread(watch.enforce)
        finally:
            watch.close()

    changes = asyncio.run(scenario())
    assert [c.path for c in changes] == ["/dev/nvidia-uvm"]
    assert host_events(db, "devices_restored")[-1].details["trigger"] == "inotify"
    assert tree.state("nvidia-uvm") == (0, gpu_host, 0o660)
