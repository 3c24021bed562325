"""Doctor on a SLURM node (issue 19, docs/slurm.md "Doctor on a cluster node").

With `cluster.backend: slurm`, the single-server checks still run (queries open, compute
hidden, device modes) and these check SLURM's own layers on this node:

    slurm.constrain-devices  cgroup.conf beside slurm.conf says ConstrainDevices=yes
    slurm.gres-files         every File= of this node in gres.conf is a device node with the
                             modes ds01's devices policy gives /dev/nvidia* (docs/host-access.md)
    slurm.munge-key          the key of the munged that slurm.conf names is its owner's alone
    slurm.node-gres          the node's GRES in slurmctld equal this node's GPU inventory
    slurm.job-one-gpu        a job asking for 1 GPU can open exactly one of the node's GPUs

Which slurm.conf: $SLURM_CONF, else /etc/slurm/slurm.conf (as SLURM's own tools). Which node:
the cluster.nodes entry named like this host's short name, else the only one. Everything but
the job only reads; the job is a real `srun` on this node (20 s to start, or WARN). Without the
slurm backend every check SKIPs. Only ds01.slurm.tools runs SLURM commands.
"""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path

from ds01.host.doctor.base import Context, Result, Status, octal
from ds01.host.render import device_policy

_SKIP = "cluster.backend is not slurm"


def slurm_conf() -> Path:
    return Path(os.environ.get("SLURM_CONF") or "/etc/slurm/slurm.conf")


def _conf_values(path: Path) -> dict[str, str]:
    """key (lower case) → value of a SLURM key=value file; the last one wins, as in SLURM."""
    out: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        key, eq, value = line.partition("=")
        if eq and " " not in key.strip():
            out[key.strip().lower()] = value.strip()
    return out


def _node(ctx: Context) -> str | None:
    assert ctx.config is not None
    nodes = list(ctx.config.cluster.nodes)
    host = socket.gethostname().split(".")[0]
    if host in nodes:
        return host
    return nodes[0] if len(nodes) == 1 else None


def _not_slurm(ctx: Context, rid: str) -> Result | None:
    if ctx.config is None:
        return Result(rid, Status.SKIP, "no valid config (see config.valid)")
    if ctx.config.cluster.backend != "slurm":
        return Result(rid, Status.SKIP, _SKIP)
    if not ctx.live:
        return Result(rid, Status.SKIP, "asks the live cluster (not with --root)")
    if not slurm_conf().is_file():
        return Result(
            rid,
            Status.FAIL,
            f"no slurm.conf at {slurm_conf()}",
            fix="Install SLURM's config (or set SLURM_CONF), with ds01's part from"
            " 'ds01 slurm export' (docs/slurm.md).",
        )
    return None


def check_constrain_devices(ctx: Context) -> Result:
    rid = "slurm.constrain-devices"
    if (skip := _not_slurm(ctx, rid)) is not None:
        return skip
    path = slurm_conf().parent / "cgroup.conf"
    fix = (
        f"Set ConstrainDevices=yes in {path} (ds01 slurm export writes it), then restart slurmd:"
        " without it every job can open every GPU on the node."
    )
    if not path.is_file():
        return Result(rid, Status.FAIL, f"{path} is missing", fix=fix)
    value = _conf_values(path).get("constraindevices", "no")
    if value.lower() != "yes":
        return Result(rid, Status.FAIL, f"ConstrainDevices={value} in {path}", fix=fix)
    return Result(rid, Status.PASS, f"ConstrainDevices=yes in {path}")


def _gres_files(node: str) -> tuple[list[Path], bool]:
    """This node's File= paths in gres.conf, and whether it uses AutoDetect=nvml."""
    files: list[Path] = []
    autodetect = False
    for raw in (slurm_conf().parent / "gres.conf").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        fields = dict(part.partition("=")[::2] for part in line.split())
        if fields.get("NodeName", node) != node:
            continue
        if fields.get("AutoDetect", "").lower() == "nvml":
            autodetect = True
        for key in ("File", "MultipleFiles"):
            if key in fields:
                files += [Path(p) for p in _expand(fields[key])]
    return files, autodetect


def _expand(text: str) -> list[str]:
    """'/dev/nvidia[0-3],/dev/x' → each path (SLURM's one-range bracket form)."""
    out: list[str] = []
    for part in text.split(","):
        if "[" in part and part.endswith("]"):
            head, _, rng = part[:-1].partition("[")
            low, _, high = rng.partition("-")
            out += [f"{head}{i}" for i in range(int(low), int(high or low) + 1)]
        else:
            out.append(part)
    return out


def check_gres_files(ctx: Context) -> Result:
    rid = "slurm.gres-files"
    if (skip := _not_slurm(ctx, rid)) is not None:
        return skip
    assert ctx.config is not None
    node = _node(ctx)
    if node is None:
        return Result(rid, Status.SKIP, "this host is none of cluster.nodes")
    gres = slurm_conf().parent / "gres.conf"
    if not gres.is_file():
        return Result(
            rid, Status.FAIL, f"{gres} is missing", fix="Copy gres.conf from 'ds01 slurm export'."
        )
    files, autodetect = _gres_files(node)
    if not files:
        if autodetect:
            return Result(rid, Status.PASS, "AutoDetect=nvml: slurmd finds the GPUs' files")
        return Result(
            rid,
            Status.FAIL,
            f"gres.conf names no GPU file for node {node}",
            fix="Export again ('ds01 slurm export') and copy gres.conf to every node.",
        )
    policy = device_policy(ctx.config)
    bad: list[str] = []
    for path in files:
        try:
            st = path.stat()
        except OSError as err:
            bad.append(f"{path}: {err.strerror}")
            continue
        mode = stat.S_IMODE(st.st_mode)
        if not stat.S_ISCHR(st.st_mode):
            bad.append(f"{path}: not a character device")
        elif mode != policy.mode:
            bad.append(f"{path}: mode {octal(mode)}, expected {octal(policy.mode)}")
    if bad:
        return Result(
            rid,
            Status.FAIL,
            f"{len(bad)} of {len(files)} GRES files of node {node} are wrong",
            bad,
            "Load the driver so the files exist, set their modes as 'ds01 host apply' does"
            f" ({octal(policy.mode)}), or fix device_files in cluster.nodes.{node} and export"
            " again.",
        )
    return Result(
        rid,
        Status.PASS,
        f"{len(files)} GRES files of node {node} present, mode {octal(policy.mode)}",
        [str(p) for p in files],
    )


def _munged_key(socket_path: str) -> tuple[Path, int] | None:
    """(key file, uid) of the munged serving socket_path, from its command line."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if (proc / "comm").read_text().strip() != "munged":
                continue
            args = (proc / "cmdline").read_bytes().split(b"\0")
            uid = (proc / "status").stat().st_uid
        except OSError:
            continue
        text = [a.decode(errors="replace") for a in args]
        sock = _arg(text, "--socket", "-S") or "/run/munge/munge.socket.2"
        if sock == socket_path:
            return Path(_arg(text, "--key-file", None) or "/etc/munge/munge.key"), uid
    return None


def _arg(args: list[str], long: str, short: str | None) -> str | None:
    for i, a in enumerate(args):
        if a.startswith(long + "="):
            return a.split("=", 1)[1]
        if a in (long, short) and i + 1 < len(args):
            return args[i + 1]
    return None


def check_munge_key(ctx: Context) -> Result:
    rid = "slurm.munge-key"
    if (skip := _not_slurm(ctx, rid)) is not None:
        return skip
    info = _conf_values(slurm_conf()).get("authinfo", "")
    sock = "/run/munge/munge.socket.2"
    for part in info.split(","):
        if part.startswith("socket="):
            sock = part.removeprefix("socket=")
    found = _munged_key(sock)
    if found is None:
        return Result(
            rid,
            Status.FAIL,
            f"no munged serves {sock}",
            fix="Start munge (systemctl start munge): SLURM authenticates every message with it.",
        )
    key, uid = found
    try:
        st = key.stat()
    except OSError as err:
        return Result(rid, Status.FAIL, f"{key}: {err.strerror}", fix="Restore the munge key.")
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077 or st.st_uid != uid:
        return Result(
            rid,
            Status.FAIL,
            f"{key} is mode {octal(mode)}, owner uid {st.st_uid}; munged runs as uid {uid}",
            fix=f"chown {uid} {key} && chmod 0400 {key}: anyone who reads it can forge any"
            " user's SLURM jobs.",
        )
    return Result(rid, Status.PASS, f"{key} mode {octal(mode)}, owned by munged's uid {uid}")


def check_node_gres(ctx: Context) -> Result:
    rid = "slurm.node-gres"
    if (skip := _not_slurm(ctx, rid)) is not None:
        return skip
    assert ctx.config is not None
    node = _node(ctx)
    if node is None:
        return Result(rid, Status.SKIP, "this host is none of cluster.nodes")
    from ds01.inventory.select import open_backend
    from ds01.slurm.policy import gres_type_of_model, gres_type_of_profile
    from ds01.slurm.tools import SlurmUnavailable, gres_counts, show_node

    config = ctx.config
    base = Path(config.source).parent if config.source else None
    backend = open_backend(config.gpu.backend, config.gpu.sim_machine, base)
    try:
        sample = backend.sample()
    finally:
        backend.close()
    want: dict[str, int] = {}
    for unit in sample.units():
        overrides = config.cluster.gres_types
        if unit.profile is not None and unit.kind.value == "mig":
            kind = gres_type_of_profile(unit.profile, overrides)
        else:
            kind = gres_type_of_model(unit.model, overrides)
        want[kind] = want.get(kind, 0) + 1
    try:
        info = show_node(node)
    except SlurmUnavailable as err:
        return Result(rid, Status.FAIL, err.what, [err.why or ""], err.fix)
    have = gres_counts(info.gres)
    if have != want:
        shown = ",".join(f"gpu:{k}:{n}" for k, n in sorted(want.items()))
        return Result(
            rid,
            Status.FAIL,
            f"node {node} has Gres={info.gres or 'none'} in SLURM, the GPUs here are {shown}",
            [f"state {info.state}" + (f", reason: {info.reason}" if info.reason else "")],
            "Export again ('ds01 slurm export'), install slurm-ds01.conf and gres.conf, and"
            " run 'scontrol reconfigure' (or fix the node's machine in cluster.nodes).",
        )
    return Result(rid, Status.PASS, f"node {node}: Gres={info.gres} matches this host's GPUs")


_PROBE = 'n=0; for f in "$@"; do (: <"$f") 2>/dev/null && n=$((n+1)); done; echo "ds01:$n"'


def check_job_one_gpu(ctx: Context) -> Result:
    rid = "slurm.job-one-gpu"
    if (skip := _not_slurm(ctx, rid)) is not None:
        return skip
    assert ctx.config is not None
    node = _node(ctx)
    if node is None:
        return Result(rid, Status.SKIP, "this host is none of cluster.nodes")
    from ds01.slurm.tools import SlurmUnavailable, run

    files, autodetect = _gres_files(node)
    if autodetect:
        files = sorted(p for p in Path("/dev").glob("nvidia*") if p.name[6:].isdigit())
    if len(files) < 1:
        return Result(rid, Status.SKIP, f"node {node} has no GPU files to probe")
    args = [
        "srun",
        f"--partition={ctx.config.cluster.partition}",
        f"--nodelist={node}",
        "--gres=gpu:1",
        "--ntasks=1",
        "--time=1",
        "--immediate=20",
        "--job-name=ds01-doctor",
        "sh",
        "-c",
        _PROBE,
        "probe",
        *map(str, files),
    ]
    try:
        out = run(args, timeout=60)
    except SlurmUnavailable as err:
        return Result(
            rid,
            Status.WARN,
            "a 1-GPU job did not run: " + err.what,
            [err.why or ""],
            "Run the doctor again when a GPU on this node is free; 'squeue -w NODE' shows"
            " what holds them.",
        )
    seen = next((ln[5:] for ln in out.splitlines() if ln.startswith("ds01:")), "?")
    if seen != "1":
        return Result(
            rid,
            Status.FAIL,
            f"a job given 1 GPU could open {seen} of the node's {len(files)} GPU files",
            [str(p) for p in files],
            "Set ConstrainDevices=yes in cgroup.conf with TaskPlugin=task/cgroup, and check"
            " gres.conf's File= lines; then restart slurmd.",
        )
    return Result(rid, Status.PASS, f"a job given 1 GPU opened exactly 1 of {len(files)} files")
