"""`ds01 doctor`'s compute checks (compute.cuda-*) and devices.driver-rewrites, on a machine
without a GPU.

The real `ds01 doctor` runs as root in a private mount namespace whose /dev holds NVIDIA device
nodes the test makes (character devices with /dev/null's numbers, so opening one is the kernel's
real permission check), and finds a stand-in libcuda.so.1 through root's LD_LIBRARY_PATH. The
stand-in's cuInit succeeds only when the caller can open /dev/nvidiactl, /dev/nvidia0 and
/dev/nvidia-uvm (999 otherwise, as measured on an H200): the uvm node's owner, group and mode
decide, as on a real host. Users are real (NSS). The uvm node's group is a throw-away group of
the test standing in for ds01-gpu-host (the kernel knows only the gid).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from host_support import DS01, ds01
from standin_support import (
    GPU_NODES,
    Namespace,
    Node,
    Standins,
    build_standins,
    public_dir,
    real_libcuda,
)

from support import Users, need

pytestmark = [pytest.mark.root]

COMPUTE = ("compute.cuda-refused", "compute.cuda-exempt", "compute.cuda-granted")


@dataclass
class Host:
    base: Path
    standins: Standins
    plain: str
    exempt: str
    granted: str
    gpu_group: str  # owns /dev/nvidia-uvm when gated; exempt and granted are members

    def config(self, gate: str = "uvm", members: tuple[str, ...] | None = None) -> Path:
        people = members if members is not None else (self.plain, self.exempt, self.granted)
        path = self.base / f"ds01-{gate}-{len(people)}.yaml"
        path.write_text(
            f"groups:\n  lab:\n    members: [{', '.join(people)}]\n"
            f"exempt_users: [{self.exempt}]\n"
            f"host:\n  compute_gate: {gate}\n"
        )
        return path

    def doctor(
        self,
        nodes: list[Node],
        config: Path,
        libcuda: bool = True,
        only: tuple[str, ...] = ("compute",),
    ) -> dict[str, dict[str, Any]]:
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "COLUMNS": "200",
        }
        if libcuda:
            env["LD_LIBRARY_PATH"] = str(self.standins.libdir)
        argv = [DS01, "--config", str(config), "--run-dir", str(self.base / "run")]
        argv += ["doctor", "--json", *[a for o in only for a in ("--only", o)]]
        done = Namespace(nodes).run(argv, env)
        assert done.stdout, done.stderr
        return {str(c["id"]): c for c in json.loads(done.stdout)["checks"]}

    def gated(self) -> list[Node]:
        gid = grp.getgrnam(self.gpu_group).gr_gid
        return [
            *GPU_NODES,
            Node("nvidia-uvm", 0, gid, 0o660),
            Node("nvidia-uvm-tools", 0, gid, 0o660),
        ]

    def open_uvm(self) -> list[Node]:
        return [*GPU_NODES, Node("nvidia-uvm"), Node("nvidia-uvm-tools")]


@pytest.fixture
def host(users: Users) -> Iterator[Host]:
    need(not real_libcuda(), "this machine has a real libcuda.so.1; the stand-in would lose")
    base = public_dir("ds01-compute-")
    try:
        standins = build_standins(base)
        tag = os.urandom(3).hex()
        gpu_group = users.group(f"ds01tc{tag}")
        plain = users.add()
        exempt = users.add(groups=(gpu_group,))
        granted = users.add(groups=(gpu_group,))
        run = base / "run"
        run.mkdir()
        (run / "host-access").write_text(
            f"# test\n{exempt} exempt 0\n{granted} grant {int(time.time()) + 3600}\n"
        )
        yield Host(base, standins, plain, exempt, granted, gpu_group)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_a_closed_gate_refuses_the_plain_user_and_lets_exempt_and_granted_compute(
    host: Host,
) -> None:
    checks = host.doctor(host.gated(), host.config("uvm"))
    refused = checks["compute.cuda-refused"]
    assert refused["status"] == "pass", refused
    assert refused["summary"] == (
        f"the uvm gate holds: {host.plain}'s cuInit with CUDA_VISIBLE_DEVICES=0 fails "
        "(999 CUDA_ERROR_UNKNOWN)"
    )
    evidence = refused["evidence"]
    assert evidence[0] == f"user: plain ds01 user {host.plain}"
    assert evidence[1] == (
        f"as {host.plain}: CUDA_VISIBLE_DEVICES=0 cuInit(0) via "
        f"{host.standins.libdir}/libcuda.so.1 → 999 (CUDA_ERROR_UNKNOWN)"
    )
    assert f"/dev/nvidia-uvm: uid 0, group {host.gpu_group}, 0660: may not open it" in evidence
    for rid, who in (
        ("compute.cuda-exempt", f"exempt user {host.exempt}"),
        ("compute.cuda-granted", f"granted user {host.granted}"),
    ):
        assert (checks[rid]["status"], checks[rid]["summary"]) == (
            "pass",
            f"{who} computes on the host GPUs",
        ), checks[rid]
        assert any("→ 0 (CUDA_SUCCESS), 1 device(s)" in str(e) for e in checks[rid]["evidence"])
    # The call ran as each user and never as root (a root cuInit is what reopens the gate).
    uids = {pwd.getpwnam(u).pw_uid for u in (host.plain, host.exempt, host.granted)}
    assert sorted(host.standins.callers()) == sorted(uids)


def test_an_open_gate_fails_and_says_how_to_close_it(host: Host) -> None:
    checks = host.doctor(host.open_uvm(), host.config("uvm"))
    refused = checks["compute.cuda-refused"]
    assert refused["status"] == "fail"
    assert refused["summary"] == (
        f"the uvm gate is open: {host.plain}, neither exempt nor granted, computes on the host "
        "GPUs (cuInit → 0 with CUDA_VISIBLE_DEVICES=0)"
    )
    assert "ds01 doctor --fix --only devices.uvm-gate" in str(refused["fix"])
    assert "devices.driver-rewrites" in str(refused["fix"])


def test_without_the_gate_the_plain_user_computing_is_a_deterrent_only_warning(
    host: Host,
) -> None:
    checks = host.doctor(host.open_uvm(), host.config("none"))
    refused = checks["compute.cuda-refused"]
    assert refused["status"] == "warn"
    assert refused["summary"] == (
        f"deterrent only (compute_gate: none): {host.plain} computes on the host GPUs by setting "
        "CUDA_VISIBLE_DEVICES=0"
    )
    assert "host.compute_gate: uvm" in str(refused["fix"])
    assert checks["compute.cuda-exempt"]["status"] == "pass"


def test_an_exempt_user_outside_the_gpu_group_fails(host: Host, users: Users) -> None:
    """The node's group stands in for ds01-gpu-host: an exempt user ds01d did not add to it
    cannot compute through a closed gate."""
    outsider = users.add()
    config = host.base / "outsider.yaml"
    config.write_text(
        f"groups:\n  lab:\n    members: [{host.plain}]\nexempt_users: [{outsider}]\n"
        "host:\n  compute_gate: uvm\n"
    )
    checks = host.doctor(host.gated(), config, only=("compute.cuda-exempt",))
    exempt = checks["compute.cuda-exempt"]
    assert exempt["status"] == "fail"
    assert exempt["summary"] == (
        f"exempt user {outsider} cannot compute on the host GPUs (cuInit → 999 CUDA_ERROR_UNKNOWN)"
    )
    assert f"{outsider} is not in ds01-gpu-host" in exempt["evidence"]
    assert f"gpasswd --add {outsider} ds01-gpu-host" in str(exempt["fix"])


def test_without_a_plain_ds01_user_the_call_runs_as_nobody(host: Host) -> None:
    checks = host.doctor(host.gated(), host.config("uvm", members=(host.exempt,)))
    refused = checks["compute.cuda-refused"]
    assert refused["status"] == "pass", refused
    assert str(refused["evidence"][0]).startswith("user: nobody (no plain ds01 user exists")
    assert pwd.getpwnam("nobody").pw_uid in host.standins.callers()


def test_no_gpu_or_no_libcuda_skips_with_the_reason(host: Host) -> None:
    config = host.config("uvm")
    no_gpu = host.doctor([Node("nvidia-uvm")], config)
    assert {rid: no_gpu[rid]["summary"] for rid in COMPUTE} == dict.fromkeys(
        COMPUTE, "no GPU: no /dev/nvidiactl and /dev/nvidiaN"
    )
    no_lib = host.doctor(host.gated(), config, libcuda=False)
    assert {no_lib[rid]["status"] for rid in COMPUTE} == {"skip"}
    assert no_lib["compute.cuda-refused"]["summary"] == (
        "no libcuda.so.1 (the NVIDIA driver's CUDA library) on this host"
    )
    assert host.standins.callers() == []


def test_live_compute_checks_skip_under_another_root(tmp_path: Path) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_text("host:\n  compute_gate: uvm\n")
    result = ds01("--config", str(config), "doctor", "--root", str(tmp_path), "--json")
    checks = {c["id"]: c for c in json.loads(result.stdout)["checks"]}
    assert {checks[rid]["summary"] for rid in COMPUTE} == {"needs the live host (--root is set)"}


# ---- devices.driver-rewrites ---------------------------------------------------------------------

H200_PARAMS = (  # the lines that matter, as /proc/driver/nvidia/params printed them on the H200
    "ResmanDebugLevel: 4294967295\nModifyDeviceFiles: 1\nDeviceFileUID: 0\nDeviceFileGID: 0\n"
    "DeviceFileMode: 438\n"
)


def _rewrites(tmp_path: Path, gate: str, params: str | None) -> dict[str, object]:
    config = tmp_path / "ds01.yaml"
    config.write_text(f"host:\n  compute_gate: {gate}\n")
    if params is not None:
        path = tmp_path / "proc/driver/nvidia/params"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(params)
    result = ds01(
        "--config",
        str(config),
        "doctor",
        "--root",
        str(tmp_path),
        "--json",
        "--only",
        "devices.driver-rewrites",
    )
    checks = json.loads(result.stdout)["checks"]
    assert len(checks) == 1
    return dict(checks[0])


def test_a_driver_that_rewrites_device_files_fails_under_the_uvm_gate(tmp_path: Path) -> None:
    check = _rewrites(tmp_path, "uvm", H200_PARAMS)
    assert check["status"] == "fail"
    assert str(check["summary"]).startswith(
        "the driver rewrites /dev/nvidia* (ModifyDeviceFiles: 1): the first CUDA start by any "
        "root process"
    )
    assert check["evidence"] == [
        "/proc/driver/nvidia/params: ModifyDeviceFiles: 1",
        "DeviceFileUID: 0 DeviceFileGID: 0 DeviceFileMode: 438",
    ]
    assert "NVreg_ModifyDeviceFiles=0" in str(check["fix"])


def test_a_driver_that_leaves_device_files_alone_passes(tmp_path: Path) -> None:
    params = H200_PARAMS.replace("ModifyDeviceFiles: 1", "NVreg_ModifyDeviceFiles: 0")
    check = _rewrites(tmp_path, "uvm", params)
    assert (check["status"], check["summary"]) == (
        "pass",
        "the driver does not rewrite /dev/nvidia* (ModifyDeviceFiles: 0; nvidia-modprobe still "
        "makes the uvm nodes 0666 when it creates them: ds01d restores those)",
    )


def test_driver_rewrites_skips_without_the_gate_or_the_params(tmp_path: Path) -> None:
    assert _rewrites(tmp_path, "none", H200_PARAMS)["status"] == "skip"
    (tmp_path / "proc/driver/nvidia/params").unlink()
    skipped = _rewrites(tmp_path, "uvm", None)
    assert (skipped["status"], skipped["summary"]) == (
        "skip",
        "needs the live host (--root is set)",
    )


def test_the_stand_in_models_the_driver_rewriting_the_uvm_node_for_root(host: Host) -> None:
    """The stand-in's own fidelity (the script's self-test relies on it): a root cuInit with
    ModifyDeviceFiles: 1 resets the gated node to root:root 0666, as on the H200; a user's does
    not."""
    python = shutil.which("python3", path="/usr/bin:/bin")
    need(python is not None, "no system python3 for the users to run")
    params = host.base / "params"
    params.write_text(H200_PARAMS)
    params.chmod(0o644)
    lib = build_standins(public_dir("ds01-standin-"), params_file=params)
    try:
        call = (
            "import ctypes, os, stat, sys; lib = ctypes.CDLL(sys.argv[1]); rc = lib.cuInit(0); "
            "st = os.stat('/dev/nvidia-uvm'); "
            "print(rc, st.st_uid, st.st_gid, oct(stat.S_IMODE(st.st_mode)))"
        )
        gid = grp.getgrnam(host.gpu_group).gr_gid
        uid = pwd.getpwnam(host.exempt).pw_uid
        as_member = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--init-groups"]
        script = f'{" ".join(as_member)} {python} -I -S -c "$1" "$2"; {python} -I -S -c "$1" "$2"'
        done = Namespace(host.gated()).run(
            ["sh", "-c", script, "sh", call, str(lib.libdir / "libcuda.so.1")],
            {"PATH": "/usr/bin:/bin"},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.splitlines() == [f"0 0 {gid} 0o660", "0 0 0 0o666"]
    finally:
        shutil.rmtree(lib.dir, ignore_errors=True)
