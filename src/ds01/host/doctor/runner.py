"""Runs every doctor check in a fixed order, applies safe repairs under --fix, sets the exit code.

A check that raises is reported as FAIL with the exception (a doctor must not crash on the host
it examines). Under --fix, each WARN/FAIL result that carries a repair is repaired and the
check runs again; the report lists what was fixed and what is left to the admin. Exit code:
0 all pass (or skip), 1 warnings, 2 failures.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ds01.host.doctor import compute, daemon, devices, docker, nvidia_smi, profile, slurm, state
from ds01.host.doctor.base import Context, Result, Status

Check = Callable[[Context], Result]

CHECKS: tuple[tuple[str, Check], ...] = (
    ("config.valid", state.check_config_valid),
    ("nvidia-smi.not-shadowed", nvidia_smi.check_not_shadowed),
    ("nvidia-smi.runs-for-user", nvidia_smi.check_runs_for_user),
    ("devices.present", devices.check_present),
    ("devices.mode", devices.check_mode),
    ("devices.driver-params", devices.check_driver_params),
    ("devices.driver-rewrites", compute.check_driver_rewrites),
    ("devices.group-members", devices.check_group_members),
    ("devices.uvm-gate", devices.check_uvm_gate),
    ("devices.rules-current", devices.check_rules_current),
    ("compute.cuda-refused", compute.check_cuda_refused),
    ("compute.cuda-exempt", compute.check_cuda_exempt),
    ("compute.cuda-granted", compute.check_cuda_granted),
    ("profile.current", profile.check_current),
    ("profile.pam-env", profile.check_pam_env),
    ("profile.cuda-hidden", profile.check_cuda_hidden),
    ("profile.cuda-exempt", profile.check_cuda_exempt),
    ("profile.cuda-granted", profile.check_cuda_granted),
    ("profile.docker-host", profile.check_docker_host),
    ("docker.users-not-in-docker-group", docker.check_users_not_in_docker_group),
    ("docker.gate-group", docker.check_gate_group),
    ("docker.no-nvidia-default", docker.check_no_nvidia_default),
    ("docker.nvidia-envvar-refused", docker.check_nvidia_envvar_refused),
    ("docker.files-current", docker.check_files_current),
    ("daemon.running", daemon.check_running),
    ("daemon.loops", daemon.check_loops),
    ("daemon.invariants", daemon.check_invariants),
    ("daemon.config-current", daemon.check_config_current),
    ("daemon.sockets", daemon.check_sockets),
    ("daemon.host-access", daemon.check_host_access),
    ("systemd.current", daemon.check_systemd_current),
    ("state.integrity", state.check_state_integrity),
    ("slurm.constrain-devices", slurm.check_constrain_devices),
    ("slurm.gres-files", slurm.check_gres_files),
    ("slurm.munge-key", slurm.check_munge_key),
    ("slurm.node-gres", slurm.check_node_gres),
    ("slurm.job-one-gpu", slurm.check_job_one_gpu),
)

CHECK_IDS = tuple(rid for rid, _ in CHECKS)


@dataclass
class DoctorReport:
    results: list[Result]
    fixed: list[str] = field(default_factory=list)  # "id: action"
    left: list[str] = field(default_factory=list)  # "id: what the admin must do"

    @property
    def exit_code(self) -> int:
        statuses = {r.status for r in self.results}
        if Status.FAIL in statuses:
            return 2
        if Status.WARN in statuses:
            return 1
        return 0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"checks": [r.to_json() for r in self.results]}
        out["fixed"] = self.fixed
        out["left_to_admin"] = self.left
        return out


def _run_one(rid: str, check: Check, ctx: Context) -> Result:
    try:
        result = check(ctx)
    except Exception as err:  # a doctor reports, it does not crash
        return Result(rid, Status.FAIL, f"the check itself failed: {type(err).__name__}: {err}")
    result.id = rid
    return result


def run_doctor(ctx: Context, fix: bool = False, only: tuple[str, ...] = ()) -> DoctorReport:
    selected = [
        (rid, c) for rid, c in CHECKS if not only or rid in only or rid.split(".")[0] in only
    ]
    report = DoctorReport([])
    for rid, check in selected:
        result = _run_one(rid, check, ctx)
        if fix and result.status in (Status.WARN, Status.FAIL) and result.repair is not None:
            try:
                actions = result.repair()
            except Exception as err:
                actions = []
                report.left.append(f"{rid}: the repair failed ({type(err).__name__}: {err})")
            report.fixed += [f"{rid}: {a}" for a in actions]
            ctx.forget_shells()
            result = _run_one(rid, check, ctx)
        if fix and result.status in (Status.WARN, Status.FAIL):
            report.left.append(f"{rid}: {result.fix or result.summary}")
        report.results.append(result)
    return report
