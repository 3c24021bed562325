"""Whether ds01's rendered host files are what `ds01 host apply` would write now.

One helper used by the `*.current` checks of each area (profile, devices, docker, systemd):
it renders the area against the root being checked (host/apply.make_plan, the same code path as
apply) and reports files that are missing, drifted or wrongly moded. The repair re-renders
exactly those files (with backups), never the accounts and never the host-access seed.
"""

from __future__ import annotations

from ds01.config import Config
from ds01.host.apply import FileChange, Plan, Report, apply_files, make_plan, settings_for
from ds01.host.doctor.base import Context, Result, Status


def plan_for(ctx: Context, config: Config, area: str) -> Plan:
    settings = settings_for(config, ctx.paths.config, ctx.paths.state_dir, ctx.paths.run_dir)
    return make_plan(config, settings, ctx.root, [area])


def drifted(ctx: Context, plan: Plan) -> list[FileChange]:
    seed = str(ctx.paths.run_dir / "host-access")
    return [f for f in plan.pending if f.path != seed]


def files_current(ctx: Context, rid: str, area: str, what: str) -> Result:
    config = ctx.config
    if config is None:
        return Result(rid, Status.SKIP, "config invalid (see config.valid)")
    plan = plan_for(ctx, config, area)
    stale = drifted(ctx, plan)
    current = [f for f in plan.files if f.action == "current"]
    evidence = [f"current: {f.path}" for f in current]
    evidence += [_why(f) for f in stale]
    evidence += plan.problems
    if not stale and not plan.problems:
        return Result(rid, Status.PASS, f"{what} match the config", evidence)

    def repair() -> list[str]:
        report = Report()
        apply_files(stale, report)
        return [line.strip() for line in report.lines]

    names = ", ".join(f.path for f in stale) or "files ds01 cannot edit"
    return Result(
        rid,
        Status.FAIL,
        f"{what} differ from what `ds01 host apply` writes: {names}",
        evidence,
        f"Run `ds01 host apply --only {area} --dry-run` to see the difference, then without "
        "--dry-run (`ds01 doctor --fix` re-renders these files; backups are kept).",
        repair if stale else None,
    )


def _why(change: FileChange) -> str:
    if change.action == "create":
        return f"missing: {change.path}"
    if change.action == "chmod":
        return f"mode {change.old_mode:04o}, expected {change.new_mode:04o}: {change.path}"
    return f"content differs: {change.path}"
