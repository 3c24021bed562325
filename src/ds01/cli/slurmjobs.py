"""`ds01 container deploy/list/stop/logs/inspect` with `cluster.backend: slurm`.

Runs in the CLI as the calling user: their own `sbatch`, `squeue`, `scancel` (ds01.slurm.jobs),
no ds01d. Each command here answers in the local backend's words where it can; docs/slurm.md.
"""

from __future__ import annotations

import os
import pwd
import sys
import time
from typing import TYPE_CHECKING, Any

import typer

from ds01.cli.context import globals_of
from ds01.cli.output import console, new_table, print_json
from ds01.errors import UsageError

if TYPE_CHECKING:
    from ds01.api.schemas import DeployIn
    from ds01.config import Config


def slurm_config(ctx: typer.Context) -> Config | None:
    """The config when it says `cluster.backend: slurm`, else None (the local backend). A file
    that never names slurm is not parsed: list/stop/logs stay as quick as they were."""
    from ds01.slurm.backend import may_name_slurm_backend

    path = globals_of(ctx).paths().config
    if not may_name_slurm_backend(path):
        return None
    from ds01.config import load_config

    config = load_config(path)
    return config if config.cluster.backend == "slurm" else None


# The single-server commands that have no SLURM form: why, and what to type instead. JOB and
# CONTAINER are filled in when the container's job is in the queue (docs/slurm.md).
_ENDED = "with SLURM a container is a batch job: once it ends it is gone (its output stays)"
_SINGLE_SERVER: dict[str, tuple[str, str]] = {
    "start": (
        _ENDED,
        "Deploy it again: ds01 container deploy {name} --image IMG -- CMD"
        " (its earlier output: ds01 container logs {name}).",
    ),
    "restart": (
        _ENDED,
        "Stop it (ds01 container stop {name}), then deploy it again with ds01 container deploy.",
    ),
    "keep-alive": (
        "SLURM never stops a job for idleness, so there is nothing to keep alive; it ends the"
        " job at its time limit (your max_runtime)",
        "See the limit as TimeLimit in: ds01 container inspect {name}",
    ),
    "exec": (
        "ds01 does not reach into a job's container; SLURM runs a command in a running job",
        "Run it as a step of the job: srun --jobid {job} --overlap podman exec {container} CMD",
    ),
    "shell": (
        "ds01 does not reach into a job's container; SLURM runs a shell in a running job",
        "Open one as a step of the job: srun --jobid {job} --overlap --pty podman exec -it"
        " {container} sh",
    ),
    "stats": (
        "ds01d samples only its own server's containers, not SLURM jobs",
        "Where the cluster gathers job accounting: sstat --jobs {job}.batch; the job itself:"
        " ds01 container inspect {name}",
    ),
}


def refuse_single_server(ctx: typer.Context, command: str, name: str | None) -> None:
    """Refuse a single-server container command when the config runs containers through SLURM,
    saying what to type instead; return when the local backend is in use."""
    if slurm_config(ctx) is None:
        return
    from ds01.slurm import jobs

    why, fix = _SINGLE_SERVER[command]
    job = jobs.find(_user(), name) if name else None
    filled = fix.format(
        name=name or "NAME",
        job=job.id if job else "JOBID",
        container=jobs.container_name(_user(), name) if name else "CONTAINER",
    )
    if name and job is None and "{job}" in fix:
        filled += f" (JOBID: ds01 container list; no running job is named '{name}' now)"
    raise UsageError(
        f"ds01 container {command} is a single-server command, and this config runs containers"
        " through SLURM (cluster.backend: slurm)",
        why=why[0].upper() + why[1:] + ".",
        fix=filled,
    )


def _user() -> str:
    return pwd.getpwuid(os.getuid()).pw_name


def deploy(config: Config, body: DeployIn, as_json: bool) -> None:
    from ds01.slurm import jobs

    if not body.command:
        raise UsageError(
            "with the SLURM backend a container runs a command as a batch job; none was given",
            fix="Give it after --, e.g. ds01 container deploy NAME --image IMG -- python train.py"
            " (for a shell on a GPU node: srun --gres=gpu:1 --pty bash).",
        )
    if body.gpueq is not None:
        raise UsageError(
            "--gpueq is not available with the SLURM backend: SLURM asks for GPUs by type",
            fix="Ask for --gpus N or --mig PROFILE.",
        )
    gpus = None if body.cpu_only or body.mig else (body.gpus or 1)
    user = _user()
    gres = jobs.gres_request(config, gpus, body.mig)
    script = jobs.job_script(
        config,
        user,
        body.name,
        body.image,
        list(body.command),
        body.workspace,
        list(body.data),
        dict(body.env),
    )
    job_id = jobs.submit(config, user, body.name, script, gres)
    job = jobs.find(user, body.name)
    out = {
        "name": body.name,
        "job_id": job_id,
        "state": job.state if job else "ENDED",
        "reason": job.reason if job else "",
        "gres": gres or "",
        "log": str(jobs.log_dir() / f"{body.name}-{job_id}.log"),
    }
    if as_json:
        print_json(out)
        return
    waiting = f" (waiting: {out['reason']})" if out["reason"] not in ("", "None") else ""
    sys.stdout.write(
        f"{body.name}: SLURM job {job_id}, {out['state'].lower()}{waiting}"
        f"{', GPUs ' + gres if gres else ''}\n"
        f"Output: ds01 container logs {body.name}   Stop: ds01 container stop {body.name}\n"
    )


def list_(as_json: bool) -> None:
    from ds01.slurm import jobs

    rows = [vars(j) for j in jobs.jobs(_user())]
    if as_json:
        print_json(rows)
        return
    if not rows:
        sys.stdout.write("No containers in SLURM's queue (ds01 container deploy starts one).\n")
        return
    t = new_table()
    for column in ("Name", "Job", "State", "GPUs", "Node / waiting for", "Time"):
        t.add_column(column)
    for r in rows:
        where = r["nodes"] if r["state"] != "PENDING" else r["reason"]
        t.add_row(r["name"], r["id"], r["state"].lower(), r["gres"], where, r["time"])
    console().print(t)


def stop(name: str) -> None:
    from ds01.slurm import jobs

    job = jobs.cancel(_user(), name)
    sys.stdout.write(f"{name}: SLURM job {job.id} cancelled; its GPUs are free.\n")


def logs(name: str, follow: bool, tail: int | None) -> None:
    from ds01.slurm import jobs

    path = jobs.latest_log(name)
    data = path.read_bytes()
    if tail is not None:
        data = b"".join(data.splitlines(keepends=True)[-tail:] if tail else [])
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    if not follow:
        return
    offset = path.stat().st_size
    user = _user()
    while True:
        running = jobs.find(user, name) is not None
        with path.open("rb") as f:
            f.seek(offset)
            chunk = f.read()
        offset += len(chunk)
        sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        if not running:
            return
        time.sleep(0.5)


_INSPECT = (
    "JobId",
    "JobName",
    "UserId",
    "Account",
    "QOS",
    "JobState",
    "Reason",
    "SubmitTime",
    "StartTime",
    "TimeLimit",
    "NodeList",
    "TresPerNode",
    "StdOut",
)


def inspect(name: str, as_json: bool) -> None:
    from ds01.slurm import jobs

    job = jobs.need(_user(), name)
    fields: dict[str, Any] = jobs.show(job.id)
    if as_json:
        print_json({"name": name, "job": fields})
        return
    t = new_table(show_header=False)
    t.add_column("Field")
    t.add_column("Value")
    t.add_row("Name", name)
    for key in _INSPECT:
        if key in fields:
            t.add_row(key, fields[key])
    console().print(t)


def quota(config: Config, as_json: bool) -> None:
    from ds01.slurm import usage

    q = usage.quota(config, _user())
    if as_json:
        print_json(q)
        return

    def of(used: str | None, limit: str | int | None) -> str:
        return f"{used} of {limit if limit is not None else 'no limit'}"

    wall = q["max_runtime_min"]
    t = new_table(show_header=False)
    t.add_column("What")
    t.add_column("Value")
    t.add_row("SLURM account / QOS", f"{q['account']} / {q['qos']}")
    t.add_row("GPU-equivalents (yours)", of(q["gpueq_used"], q["gpueq_limit"]))
    t.add_row("GPU-equivalents (group)", of(q["group_gpueq_used"], q["group_gpueq_limit"]))
    t.add_row("Running containers", of(str(q["containers_running"]), q["containers_limit"]))
    t.add_row("Max runtime", "no limit" if wall is None else f"{wall // 60}h{wall % 60:02d}m")
    console().print(t)
    sys.stdout.write(
        "Over these, a deploy waits in SLURM's queue until your own jobs end (ds01 queue).\n"
    )


def queue(all_users: bool, as_json: bool) -> None:
    from ds01.slurm import usage

    rows = [{"position": i + 1, **r} for i, r in enumerate(usage.pending())]
    if not all_users:
        me = _user()
        rows = [r for r in rows if r["user"] == me]
    if as_json:
        print_json(rows)
        return
    if not rows:
        sys.stdout.write(
            "Nothing of yours waits in SLURM's queue.\n"
            if not all_users
            else "Nothing waits in SLURM's queue.\n"
        )
        return
    t = new_table()
    columns = (
        "#",
        "Job",
        "User",
        "Name",
        "GPUs",
        "Waiting for",
        "Priority",
        "Age",
        "Fair share",
        "Size",
        "QOS",
    )
    for column in columns:
        t.add_column(column)
    for r in rows:
        t.add_row(
            str(r["position"]),
            r["id"],
            r["user"],
            r["name"],
            r["gres"],
            r["reason"],
            *(
                str(r[k]) if r[k] is not None else "–"
                for k in ("priority", "age", "fairshare", "jobsize", "qos")
            ),
        )
    console().print(t)
