"""scripts/gpu-host-check.sh, the real-GPU-host check (issue 12 item 6), in its --self-test mode:
stand-in NVIDIA nodes in a private /dev, stand-ins for libcuda.so.1 and nvidia-smi, ds01d on a
simulated machine. Proves the script's structure — its own mount namespace and /etc copy, the
two throw-away users, ds01 host apply, ds01d, grant, revoke, the doctor, PASS/FAIL per line,
the exit status — and that it leaves nothing behind on this machine. It proves nothing about
a real driver: that needs a GPU host (docs/host-access.md says whether it has run on one).
"""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from standin_support import namespaces_work, public_dir

from support import need

pytestmark = [pytest.mark.root]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu-host-check.sh"
VENV_BIN = Path(sys.executable).parent
CLAIMS = [
    "gate closed",
    "queries open (nvidia-smi -L)",
    "queries open (nvidia-smi --query-gpu)",
    "layer 1 hides CUDA (su-login)",
    "layer 1 hides CUDA (su-command)",
    "layer 1 shows GPUs to the exempt user (su-login)",
    "layer 1 hides CUDA (ssh host cmd)",
    "layer 1 shows GPUs to the exempt user (ssh host cmd)",
    "uvm gate refuses the plain user",
    "uvm gate lets the exempt user compute",
    "gate holds after a root cuInit",
    "gate holds after 20 root cuInits",
    "a granted user computes",
    "layer 1 shows GPUs to the granted user (su-login)",
    "revoke ends the user's host GPU process",
    "after the revoke the gate refuses the user again",
    "doctor agrees (compute.cuda-refused passes)",
    "doctor agrees (compute.cuda-exempt passes)",
    "doctor agrees (nvidia-smi.not-shadowed is no FAIL)",
]


def run_script(*args: str, timeout: float = 400) -> subprocess.CompletedProcess[str]:
    need(namespaces_work(), "no private mount namespaces here (the script runs in one)")
    need(shutil.which("cc") is not None or shutil.which("gcc") is not None, "no C compiler")
    need(Path("/usr/bin/python3").exists(), "no system python3 for the throw-away users")
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
        check=False,
    )


def claims(stdout: str) -> dict[str, str]:
    """Claim → PASS/FAIL/SKIP from the script's lines ("PASS  claim: detail")."""
    out: dict[str, str] = {}
    for line in stdout.splitlines():
        m = re.match(r"^(PASS|FAIL|SKIP)  (.+?): ", line)
        if m:
            out[m.group(2)] = m.group(1)
    return out


def nvidia_nodes() -> list[str]:
    return sorted(str(p) for p in Path("/dev").glob("nvidia*"))


def test_self_test_proves_every_claim_and_leaves_nothing_behind() -> None:
    nodes_before = {p: Path(p).stat() for p in nvidia_nodes()}
    result = run_script("--self-test", "--ds01-bin", str(VENV_BIN))
    out = result.stdout
    seen = claims(out)
    ssh = shutil.which("sshd") or Path("/usr/sbin/sshd").exists()
    expected = {c: "PASS" for c in CLAIMS}
    if not ssh:
        for c in [c for c in CLAIMS if "(ssh host cmd)" in c]:
            del expected[c]
        expected["layer 1 (ssh host cmd)"] = "SKIP"
    assert seen == expected, out + result.stderr
    assert result.returncode == 0
    passes = sum(1 for v in expected.values() if v == "PASS")
    skips = len(expected) - passes
    assert out.splitlines()[-1] == f"gpu-host-check: {passes} pass, 0 fail, {skips} skip"
    # Every line is a verdict or INFO; the gate's story is told.
    assert all(re.match(r"^(PASS|FAIL|SKIP|INFO)  ", line) for line in out.splitlines()[:-1])
    assert "INFO  self-test: the stand-in driver rewrites /dev/nvidia-uvm*" in out
    assert re.search(r"^INFO  root cuInit → 0; right after: /dev/nvidia-uvm ", out, re.M)
    # Cleanup: the users and the temp dir are gone; this machine's /etc and /dev untouched.
    tmp = re.search(r"^INFO  cleanup: removed (/tmp/ds01-gpu-check\.\S+)$", out, re.M)
    assert tmp is not None and not Path(tmp.group(1)).exists()
    users = re.search(r"^INFO  users: (ds01p\w+) \(plain.*\), (ds01e\w+) \(exempt\)", out, re.M)
    assert users is not None
    for name in users.groups():
        assert f"INFO  cleanup: removed user {name}" in out
        # never on this machine at all: the users lived in the namespace's copy of /etc
        assert f"\n{name}:" not in "\n" + Path("/etc/passwd").read_text()
    after = {p: Path(p).stat() for p in nvidia_nodes()}
    assert {p: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) for p, s in after.items()} == {
        p: (s.st_uid, s.st_gid, stat.S_IMODE(s.st_mode)) for p, s in nodes_before.items()
    }


def test_a_failed_setup_is_a_fail_line_exit_1_and_still_cleans_up() -> None:
    """A ds01d that exits at once: FAIL, exit status 1, and the users and temp dir removed."""
    fake = public_dir("ds01-fakebin-")
    try:
        (fake / "ds01").symlink_to(VENV_BIN / "ds01")
        broken = fake / "ds01d"
        broken.write_text("#!/bin/sh\necho 'ds01d: cannot start (test)' >&2\nexit 3\n")
        broken.chmod(0o755)
        result = run_script("--self-test", "--ds01-bin", str(fake), timeout=200)
    finally:
        shutil.rmtree(fake, ignore_errors=True)
    out = result.stdout
    assert result.returncode == 1, out + result.stderr
    assert re.search(r"^FAIL  setup: ds01d exited: ds01d: cannot start \(test\)", out, re.M), out
    users = re.search(r"^INFO  users: (ds01p\w+) .*, (ds01e\w+) \(exempt\)", out, re.M)
    assert users is not None
    assert all(f"INFO  cleanup: removed user {u}" in out for u in users.groups())
    tmp = re.search(r"^INFO  cleanup: removed (/tmp/ds01-gpu-check\.\S+)$", out, re.M)
    assert tmp is not None and not Path(tmp.group(1)).exists()
    assert out.splitlines()[-1].startswith("gpu-host-check: ") and ", 1 fail," in out


def test_usage_and_bad_arguments() -> None:
    result = subprocess.run(
        ["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0
    assert "--self-test" in result.stdout and "gate survives" in result.stdout
    bad = subprocess.run(
        ["bash", str(SCRIPT), "--frobnicate"], capture_output=True, text=True, check=False
    )
    assert (bad.returncode, bad.stderr) == (
        2,
        "gpu-host-check: unknown argument --frobnicate (see --help)\n",
    )
