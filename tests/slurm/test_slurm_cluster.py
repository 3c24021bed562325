"""`ds01 slurm export` and the doctor's slurm checks against a real one-host SLURM cluster.

One cluster for the module (scripts/test-slurm.sh: munged, a private mariadbd, slurmdbd,
slurmctld, one slurmd), started from what the export renders. Its four "GPUs" are stand-in
device nodes /dev/ds01test-nvidia0..3 made with mknod as the mem driver's zero, full, random
and urandom (distinct char devices anyone can open, so the cgroup devices controller can tell
them apart). Real Unix users submit real jobs; nothing from SLURM is mocked.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from slurm_support import (
    DS01,
    MACHINE,
    STANDINS,
    cluster_env,
    need_root_and,
    standins,
    start_cluster,
    stop_cluster,
)

from support import ROOT, Users, as_user, short_tmp, wait_for

CONFIG = f"""
defaults: {{allow_full_gpu: true, max_gpueq: 1, max_units_per_container: 2, max_runtime: 4h}}
groups:
  student: {{members: [STUDENT, LDAP], max_gpueq_total: 3}}
  phd: {{members: [PHD], max_gpueq: 2}}
  guest: {{members: [GUEST], allow_full_gpu: false}}
users:
  LDAP: {{max_runtime: 1d}}
queue: {{group_priority: {{phd: 0.5}}}}
gpu: {{backend: sim, sim_machine: {MACHINE}}}
cluster:
  backend: slurm
  name: ds01test
  nodes:
    ds01n1:
      machine: 4xA100-40GB
      device_files: "/dev/ds01test-nvidia{{index}}"
      address: 127.0.0.1
      cpus: 2
  fairshare: {{phd: 2}}
"""

# A directory user's name as LDAP gives it; accounting needs no Unix account for it.
LDAP_USER = "h.baker@hertie-school.lan"
LDAP_QOS = "ds01-student-h_baker_hertie_school_lan_f9aae0b9"

# Opens each file given; prints how many it could open (exactly the doctor's probe).
PROBE = 'n=0; for f in "$@"; do (: <"$f") 2>/dev/null && n=$((n+1)); done; echo "opened=$n"'


@dataclass
class Cluster:
    dir: Path
    config: Path
    env: dict[str, str]
    student: str
    phd: str
    guest: str

    @property
    def etc(self) -> Path:
        return self.dir / "etc"

    def ds01(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [DS01, "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            list(args), capture_output=True, text=True, env=self.env, timeout=120, check=check
        )

    def write_config(self, text: str = CONFIG) -> None:
        names = {
            "STUDENT": self.student,
            "PHD": self.phd,
            "GUEST": self.guest,
            "LDAP": LDAP_USER,
        }
        for key, name in names.items():
            text = text.replace(key, name)
        self.config.write_text(text)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    need_root_and("srun")
    users = Users()
    base = short_tmp("ds01-slurm-")
    env = cluster_env(base)
    c = Cluster(base, base / "ds01.yaml", env, users.add(), users.add(), users.add())
    try:
        with standins(STANDINS):
            c.write_config()
            start_cluster(base, c.config, env)
            try:
                yield c
            finally:
                stop_cluster(base, env)
    finally:
        users.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def test_slurmd_runs_with_the_exported_gres(cluster: Cluster) -> None:
    node = cluster.run("scontrol", "-o", "show", "node", "ds01n1").stdout
    assert " Gres=gpu:a100:4 " in node
    assert "gres/gpu=4,gres/gpu:a100=4" in node
    gres = (cluster.etc / "gres.conf").read_text().splitlines()
    assert gres[2:] == [
        "NodeName=ds01n1 Name=gpu Type=a100 File=/dev/ds01test-nvidia0",
        "NodeName=ds01n1 Name=gpu Type=a100 File=/dev/ds01test-nvidia1",
        "NodeName=ds01n1 Name=gpu Type=a100 File=/dev/ds01test-nvidia2",
        "NodeName=ds01n1 Name=gpu Type=a100 File=/dev/ds01test-nvidia3",
    ]
    partition = cluster.run("scontrol", "-o", "show", "partition", "gpu").stdout
    assert "TRESBillingWeights=GRES/gpu=1" in partition


@pytest.mark.parametrize(
    ("who", "gpus", "opened"),
    [
        pytest.param("student", 1, "opened=1", id="a job given 1 GPU opens exactly one"),
        pytest.param("phd", 2, "opened=2", id="a job given 2 GPUs opens exactly two"),
    ],
)
def test_a_job_sees_exactly_its_gres_devices(
    cluster: Cluster, who: str, gpus: int, opened: str
) -> None:
    user = cluster.student if who == "student" else cluster.phd
    files = [p for p, _ in STANDINS]
    done = as_user(
        user,
        ["srun", f"--gres=gpu:{gpus}", "--time=1", "sh", "-c", PROBE, "probe", *files],
        env={"SLURM_CONF": cluster.env["SLURM_CONF"]},
        cwd="/tmp",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == opened


def test_the_diff_is_empty_after_apply_and_apply_is_idempotent(cluster: Cluster) -> None:
    first = cluster.ds01("slurm", "export", "--out", str(cluster.etc), "--diff")
    assert first.returncode == 0, first.stderr
    assert first.stdout == ""
    again = cluster.run("sh", str(cluster.etc / "sacctmgr.sh"), check=False)
    assert again.returncode == 0, again.stderr
    assert cluster.ds01("slurm", "export", "--out", str(cluster.etc), "--diff").stdout == ""
    assoc = cluster.run(
        "sacctmgr", "-n", "-P", "show", "assoc", "where", f"user={LDAP_USER}", "format=account,qos"
    )
    assert assoc.stdout.splitlines() == [f"student|{LDAP_QOS}"]


def test_a_config_change_shows_as_exactly_that_change(cluster: Cluster) -> None:
    changed = CONFIG.replace("max_gpueq_total: 3", "max_gpueq_total: 2").replace(
        "fairshare: {{phd: 2}}".replace("{{", "{").replace("}}", "}"), "fairshare: {phd: 3}"
    )
    assert changed.count("max_gpueq_total: 2") == 1 and "fairshare: {phd: 3}" in changed
    cluster.write_config(changed)
    try:
        diff = cluster.ds01("slurm", "export", "--out", str(cluster.etc), "--diff")
        assert diff.returncode == 0, diff.stderr
        lines = diff.stdout.splitlines()
        script = cluster.etc / "sacctmgr.sh"
        # The script in --out would change (a unified diff of the file), then the live cluster.
        assert lines[:2] == [f"--- {script}", f"+++ {script} (export)"]
        changed_lines = [ln for ln in lines[2:] if ln[:1] in "+-"]
        assert changed_lines == [
            "-sacctmgr -i modify account where name=student cluster=ds01test set Fairshare=1"
            f" GrpTRES=billing=3 QOS=ds01-student,{LDAP_QOS}",
            "+sacctmgr -i modify account where name=student cluster=ds01test set Fairshare=1"
            f" GrpTRES=billing=2 QOS=ds01-student,{LDAP_QOS}",
            "-sacctmgr -i modify account where name=phd cluster=ds01test set Fairshare=2"
            " GrpTRES=billing=-1 QOS=ds01-phd",
            "+sacctmgr -i modify account where name=phd cluster=ds01test set Fairshare=3"
            " GrpTRES=billing=-1 QOS=ds01-phd",
        ]
        assert [ln for ln in lines if ln.startswith(("account ", "qos ", "user "))] == [
            "account student: GrpTRES billing=3 → billing=2",
            "account phd: Fairshare 2 → 3",
        ]
        as_json = cluster.ds01("slurm", "export", "--out", str(cluster.etc), "--diff", "--json")
        report = json.loads(as_json.stdout)
        assert sorted(report) == ["changes", "files"]
        assert list(report["files"]) == ["sacctmgr.sh"]
        assert report["changes"] == [
            "account student: GrpTRES billing=3 → billing=2",
            "account phd: Fairshare 2 → 3",
        ]
        cluster.ds01("slurm", "export", "--out", str(cluster.etc))
        applied = cluster.run("sh", str(cluster.etc / "sacctmgr.sh"), check=False)
        assert applied.returncode == 0, applied.stderr
        assert cluster.ds01("slurm", "export", "--out", str(cluster.etc), "--diff").stdout == ""
    finally:
        # The files back as they were; the accounts keep the change, which no later test
        # depends on (a student's one running job fits a total of 2 as well as 3).
        cluster.write_config()
        cluster.ds01("slurm", "export", "--out", str(cluster.etc))


def _sbatch(cluster: Cluster, user: str, gres: str) -> str:
    """A 60 s batch job of `user` asking for `gres`; its id. Output to /dev/null: job ids
    restart at 1 with every test cluster, and slurm-1.out of an earlier run's user (deleted
    since) would be in the way."""
    args = ["sbatch", "--parsable", "--output=/dev/null", f"--gres={gres}", "--time=2"]
    done = as_user(
        user,
        [*args, "--wrap", "sleep 60"],
        env={"SLURM_CONF": cluster.env["SLURM_CONF"]},
        cwd="/tmp",
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().split(";")[0]


def test_a_user_over_the_qos_limit_waits_with_the_qos_reason(cluster: Cluster) -> None:
    """max_gpueq 1 → MaxTRESPerUser=billing=1: the second 1-GPU job pends, it does not run."""
    jobs: list[str] = []
    try:
        # The first asks by type, the second without: both bill one whole GPU.
        for gres in ("gpu:a100:1", "gpu:1"):
            jobs.append(_sbatch(cluster, cluster.student, gres))

        def states() -> list[str] | None:
            out = cluster.run("squeue", "-h", "-j", ",".join(jobs), "-o", "%i %T %r").stdout
            rows = sorted(out.splitlines())
            running = f"{jobs[0]} RUNNING None" in rows
            return (
                rows
                if running and any(r.startswith(f"{jobs[1]} PENDING QOS") for r in rows)
                else None
            )

        rows = wait_for(
            states,
            "the first job running and the second pending on its QOS",
            detail=lambda: cluster.run("squeue", "-o", "%i %u %a %q %T %r %b").stdout,
        )
        assert rows == [f"{jobs[0]} RUNNING None", f"{jobs[1]} PENDING QOSMaxBillingPerUser"]
    finally:
        if jobs:
            cluster.run("scancel", *jobs, check=False)


def test_a_user_without_allow_full_gpu_waits_for_a_whole_gpu(cluster: Cluster) -> None:
    """allow_full_gpu: false → MaxTRESPerUser gres/gpu:a100=0 in the guest's QOS."""
    job = _sbatch(cluster, cluster.guest, "gpu:a100:1")
    try:

        def pending_reason() -> str | None:
            out = cluster.run("squeue", "-h", "-j", job, "-o", "%T %r").stdout.strip()
            return out if out.startswith("PENDING QOS") else None

        reason = wait_for(pending_reason, "the guest's job pending on its QOS")
        assert reason == "PENDING QOSMaxGRESPerUser"
    finally:
        cluster.run("scancel", job, check=False)


def _doctor(cluster: Cluster) -> dict[str, dict[str, object]]:
    done = cluster.ds01("doctor", "--only", "slurm", "--json")
    report = json.loads(done.stdout)
    return {c["id"]: c for c in report["checks"]}


def test_doctor_passes_on_the_good_cluster(cluster: Cluster) -> None:
    checks = _doctor(cluster)
    assert {k: v["status"] for k, v in checks.items()} == {
        "slurm.constrain-devices": "pass",
        "slurm.gres-files": "pass",
        "slurm.munge-key": "pass",
        "slurm.node-gres": "pass",
        "slurm.job-one-gpu": "pass",
    }
    assert checks["slurm.job-one-gpu"]["summary"] == "a job given 1 GPU opened exactly 1 of 4 files"


def test_doctor_names_the_fix_for_a_readable_munge_key(cluster: Cluster) -> None:
    key = cluster.dir / "munge" / "munge.key"
    key.chmod(0o644)
    try:
        check = _doctor(cluster)["slurm.munge-key"]
    finally:
        key.chmod(0o400)
    assert check["status"] == "fail"
    assert check["summary"] == f"{key} is mode 0644, owner uid 0; munged runs as uid 0"
    assert str(check["fix"]).startswith(f"chown 0 {key} && chmod 0400 {key}")


def test_doctor_names_the_fix_for_constrain_devices_off(cluster: Cluster) -> None:
    conf = cluster.etc / "cgroup.conf"
    good = conf.read_text()
    conf.write_text(good.replace("ConstrainDevices=yes", "ConstrainDevices=no"))
    try:
        check = _doctor(cluster)["slurm.constrain-devices"]
    finally:
        conf.write_text(good)
    assert check["status"] == "fail"
    assert check["summary"] == f"ConstrainDevices=no in {conf}"
    assert str(check["fix"]).startswith(f"Set ConstrainDevices=yes in {conf}")


def test_doctor_names_a_missing_gres_file(cluster: Cluster) -> None:
    path, minor = STANDINS[3]
    os.unlink(path)
    try:
        check = _doctor(cluster)["slurm.gres-files"]
    finally:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(path, 0o666)
    assert check["status"] == "fail"
    assert check["summary"] == "1 of 4 GRES files of node ds01n1 are wrong"
    assert check["evidence"] == [f"{path}: No such file or directory"]


def test_doctor_names_gres_that_do_not_match_the_inventory(cluster: Cluster) -> None:
    """The host's inventory (gpu.backend) says 8 H100s with MIG; SLURM was told 4 A100s."""
    other = ROOT / "src" / "ds01" / "machines" / "8xH100-mig-mixed.yaml"
    cluster.write_config(CONFIG.replace(str(MACHINE), str(other)))
    try:
        check = _doctor(cluster)["slurm.node-gres"]
    finally:
        cluster.write_config()
    assert check["status"] == "fail"
    assert check["summary"] == (
        "node ds01n1 has Gres=gpu:a100:4 in SLURM, the GPUs here are "
        "gpu:1g.10gb:9,gpu:2g.20gb:1,gpu:3g.40gb:4,gpu:4g.40gb:1,gpu:h100:4"
    )
    assert str(check["fix"]).startswith("Export again ('ds01 slurm export')")
