"""Containers as SLURM batch jobs (`cluster.backend: slurm`): rootless podman inside the job.

The CLI calls this as the user themself, so `sbatch` is submitted by them (munge says who) and
the job, its container and its accounting are theirs; ds01d takes no part. A job is named
`ds01:NAME`; its output goes to ~/.ds01/jobs/NAME-JOBID.log, which `logs` reads after the job
has left the queue. The job script runs `podman run --rm` with exactly the GPU device files of
the job's GRES (SLURM_JOB_GPUS through the node's `device_files`), in the job's own cgroup, so
SLURM's device constraint, accounting and `scancel` hold for the container. docs/slurm.md.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from ds01.config import Config
from ds01.errors import Ds01Error
from ds01.slurm import tools
from ds01.slurm.policy import gres_type_of_model, gres_type_of_profile

JOB_PREFIX = "ds01:"
# Files a GPU container needs beside its GPUs, where the node has them (a real driver).
NVIDIA_CONTROL = ("/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools")
_SQUEUE_FIELDS = ("id", "name", "state", "reason", "gres", "nodes", "submitted", "started", "time")
_SQUEUE_FORMAT = "%i|%j|%T|%r|%b|%N|%V|%S|%M"


@dataclass(frozen=True)
class Job:
    id: str
    name: str  # the container's name (the job's without JOB_PREFIX)
    state: str  # PENDING, RUNNING, COMPLETING, …
    reason: str  # why it pends (SLURM's words: Resources, Priority, QOSMaxBillingPerUser)
    gres: str
    nodes: str
    submitted: str
    started: str
    time: str


def log_dir(home: str | None = None) -> Path:
    return Path(home or os.path.expanduser("~")) / ".ds01" / "jobs"


def gres_request(config: Config, gpus: int | None, mig: list[str] | None) -> str | None:
    """`--gres` for the request: by type where the cluster's whole GPUs are of one type (so a
    whole GPU bills a whole GPU on a cluster that also has MIG devices), else untyped."""
    if mig:
        kinds = [gres_type_of_profile(p, config.cluster.gres_types) for p in mig]
        counts: dict[str, int] = {}
        for kind in kinds:
            counts[kind] = counts.get(kind, 0) + 1
        return ",".join(f"gpu:{k}:{n}" for k, n in counts.items())
    if gpus is None:
        return None
    from ds01.model.inventory import UnitKind
    from ds01.slurm.inputs import node_machines

    whole = {
        gres_type_of_model(unit.model, config.cluster.gres_types)
        for sample in node_machines(config).values()
        for unit in sample.units()
        if unit.kind is not UnitKind.MIG
    }
    return f"gpu:{whole.pop()}:{gpus}" if len(whole) == 1 else f"gpu:{gpus}"


def job_script(
    config: Config,
    user: str,
    name: str,
    image: str,
    command: list[str],
    workspace: str | None,
    data: list[str],
    env: dict[str, str],
) -> str:
    """The batch script: find the job's GPU files, then `exec podman run --rm`."""
    q = shlex.quote
    cases = "\n".join(
        f"    {q(node)}) pattern={q(spec.device_files)} ;;"
        for node, spec in config.cluster.nodes.items()
    )
    args = [
        "--rm",
        f"--name={q(container_name(user, name))}",
        # The node's network, as for any SLURM job (no slirp4netns, no port mapping).
        "--network=host",
    ]
    for key, value in sorted(env.items()):
        args.append(f"--env={q(f'{key}={value}')}")
    if workspace:
        args += [f"--volume={q(workspace + ':/workspace')}", "--workdir=/workspace"]
    for path in data:
        args.append(f"--volume={q(f'{path}:/data/{Path(path).name}:ro')}")
    run = " ".join(["podman", "run", *args, '$devices --env=NVIDIA_VISIBLE_DEVICES="$visible"'])
    run += " " + " ".join(q(a) for a in [image, *command])
    return f"""#!/bin/sh
# ds01 container {name} (docs/slurm.md): the job's GPUs into a rootless podman container.
set -eu
case "${{SLURMD_NODENAME:-}}" in
{cases}
    *) pattern=/dev/nvidia{{index}} ;;
esac
devices=""
visible=""
for index in $(echo "${{SLURM_JOB_GPUS:-}}" | tr , ' '); do
    file=$(echo "$pattern" | sed "s/{{index}}/$index/")
    devices="$devices --device=$file"
    visible="${{visible:+$visible,}}$index"
done
if [ -n "$devices" ]; then
    for file in {" ".join(NVIDIA_CONTROL)}; do
        [ -e "$file" ] && devices="$devices --device=$file"
    done
fi
exec {run}
"""


def container_name(user: str, name: str) -> str:
    from ds01.identity import docker_container_name

    return docker_container_name(user, name)


def submit(
    config: Config,
    user: str,
    name: str,
    script: str,
    gres: str | None,
) -> str:
    """sbatch the script as the calling user; the job id. A name already queued or running is
    refused (as a local container's name is)."""
    if find(user, name) is not None:
        raise Ds01Error(
            f"you already have a container named '{name}' in SLURM's queue",
            "Names pick one container for list, logs and stop.",
            f"Stop it first (ds01 container stop {name}) or pick another name.",
        )
    logs = log_dir()
    logs.mkdir(parents=True, exist_ok=True)
    args = [
        "sbatch",
        "--parsable",
        f"--job-name={JOB_PREFIX}{name}",
        f"--partition={config.cluster.partition}",
        f"--output={logs}/{name}-%j.log",
        "--chdir=/tmp",
    ]
    if gres:
        args.append(f"--gres={gres}")
    try:
        out = tools.run(args, stdin=script).strip()
    except tools.SlurmUnavailable as err:
        if _NO_NODE not in (err.why or ""):
            raise
        raise Ds01Error(
            f"SLURM refused the job: no node has {gres or 'what it asks for'}",
            f"sbatch: {(err.why or '').removeprefix('sbatch: error: ')}. A job's GPUs are all on"
            f" one node, never split across nodes; the nodes have: {_node_gres()}.",
            "Ask for at most what one node has, or split the work into smaller containers.",
        ) from None
    return out.split(";", 1)[0]


# sbatch's words when no node of the partition could ever hold the job.
_NO_NODE = "Requested node configuration is not available"


def _node_gres() -> str:
    """Each node's GRES, as slurmctld has them: 'ds01p1 gpu:a100:2, ds01p2 gpu:a100:2'."""
    try:
        rows = tools.run(["sinfo", "-h", "-N", "-o", "%N %G"]).splitlines()
    except tools.SlurmUnavailable:
        return "(sinfo did not answer)"
    return ", ".join(dict.fromkeys(r.strip() for r in rows if r.strip()))


def jobs(user: str) -> list[Job]:
    """The user's ds01 containers in SLURM's queue (pending, running, completing)."""
    out = tools.run(["squeue", "-h", "-u", user, "-o", _SQUEUE_FORMAT])
    found = []
    for line in out.splitlines():
        values = line.split("|")
        if len(values) != len(_SQUEUE_FIELDS):
            continue
        row = dict(zip(_SQUEUE_FIELDS, values, strict=True))
        if not row["name"].startswith(JOB_PREFIX):
            continue
        row["name"] = row["name"].removeprefix(JOB_PREFIX)
        row["gres"] = row["gres"].removeprefix("gres:").replace(",gres:", ",")
        found.append(Job(**row))
    return found


def find(user: str, name: str) -> Job | None:
    return next((j for j in jobs(user) if j.name == name), None)


def need(user: str, name: str) -> Job:
    job = find(user, name)
    if job is None:
        raise Ds01Error(
            f"no container named '{name}' in SLURM's queue",
            "It has ended, or was never deployed (ended ones keep their output: ds01 container"
            f" logs {name}).",
            "See your containers with 'ds01 container list'.",
        )
    return job


def cancel(user: str, name: str) -> Job:
    job = need(user, name)
    tools.run(["scancel", job.id])
    return job


def show(job_id: str) -> dict[str, str]:
    """`scontrol -o show job ID` as its Key=Value fields (values without spaces)."""
    line = tools.run(["scontrol", "-o", "show", "job", job_id]).strip()
    fields: dict[str, str] = {}
    for token in line.split(" "):
        key, eq, value = token.partition("=")
        if eq and key not in fields:
            fields[key] = value
    return fields


def latest_log(name: str) -> Path:
    """The newest output file of a container named `name` (running or ended)."""
    logs = sorted(
        log_dir().glob(f"{name}-*.log"),
        key=lambda p: int(p.stem.rsplit("-", 1)[1]) if p.stem.rsplit("-", 1)[1].isdigit() else 0,
    )
    if not logs:
        raise Ds01Error(
            f"no output of a container named '{name}'",
            f"Its job writes to {log_dir()}/{name}-JOBID.log once it starts.",
            "See your containers with 'ds01 container list'; a pending one has no output yet.",
        )
    return logs[-1]
