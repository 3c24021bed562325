"""The one place ds01 runs SLURM's commands and reads their parsable output.

`sacctmgr -n -P`, `scontrol -o`, `sinfo -h -o`, `sbatch --parsable`: each call has a timeout,
and every failure — the command missing, slurmctld or slurmdbd not answering, a non-zero exit —
becomes SlurmUnavailable with SLURM's own last line and what to do. SLURM_CONF in the
environment (or /etc/slurm/slurm.conf) says which cluster is meant, as for SLURM's own tools.
Must not decide policy.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass

from ds01.errors import Ds01Error

TIMEOUT_S = 30


class SlurmUnavailable(Ds01Error):
    """A SLURM command could not be run, or failed."""


def run(args: list[str], timeout: float = TIMEOUT_S, stdin: str | None = None) -> str:
    exe = args[0]
    if shutil.which(exe) is None:
        raise SlurmUnavailable(
            f"{exe} is not installed here",
            "ds01 talks to SLURM through its own commands.",
            "Install SLURM's client commands (Debian: slurm-client) on this machine.",
        )
    try:
        done = subprocess.run(
            args,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SlurmUnavailable(
            f"{' '.join(args[:3])} did not answer within {timeout:g}s",
            "slurmctld or slurmdbd is down or unreachable.",
            "Check them with 'scontrol ping' and 'sacctmgr show cluster'.",
        ) from None
    if done.returncode != 0:
        said = (done.stderr or done.stdout).strip().splitlines()
        raise SlurmUnavailable(
            f"{' '.join(args[:5])} failed (exit {done.returncode})",
            said[-1] if said else "it printed nothing",
            "Check that slurmctld and slurmdbd run and SLURM_CONF names this cluster's slurm.conf.",
        )
    return done.stdout


def parsable(args: list[str]) -> list[dict[str, str]]:
    """`sacctmgr -n -P show ... format=a,b` → rows keyed by the format's field names."""
    fields = next(a for a in args if a.startswith("format=")).removeprefix("format=").split(",")
    rows = []
    for line in run(["sacctmgr", "-n", "-P", *args]).splitlines():
        if not line.strip():
            continue
        values = line.split("|")
        rows.append(dict(zip(fields, values + [""] * (len(fields) - len(values)), strict=True)))
    return rows


def parse_tres(text: str) -> dict[str, int]:
    """'billing=7,gres/gpu:h100=0' → {'billing': 7, 'gres/gpu:h100': 0}."""
    out: dict[str, int] = {}
    for part in text.split(","):
        if "=" in part:
            key, _, value = part.partition("=")
            out[key.strip()] = int(value)
    return out


@dataclass(frozen=True)
class NodeInfo:
    name: str
    state: str
    gres: str  # as slurm.conf and `scontrol show node` write it: 'gpu:a100:4,gpu:3g.40gb:2'
    reason: str


def show_node(name: str) -> NodeInfo:
    """`scontrol -o show node NAME`: one line of Key=Value pairs."""
    line = run(["scontrol", "-o", "show", "node", name]).strip()
    fields: dict[str, str] = {}
    for token in line.split(" "):
        key, eq, value = token.partition("=")
        if eq and key not in fields:
            fields[key] = value
    reason_at = line.find(" Reason=")
    reason = line[reason_at + 8 :].strip() if reason_at >= 0 else ""
    return NodeInfo(name, fields.get("State", ""), fields.get("Gres", ""), reason)


def gres_counts(gres: str) -> dict[str, int]:
    """'gpu:a100:4(S:0),gpu:3g.40gb:2' → {'a100': 4, '3g.40gb': 2} (untyped: '')."""
    out: dict[str, int] = {}
    for raw in gres.split(","):
        item = raw.split("(", 1)[0].strip()
        if not item or item == "(null)":
            continue
        parts = item.split(":")
        if parts[0] != "gpu":
            continue
        kind = parts[1] if len(parts) == 3 else ""
        out[kind] = out.get(kind, 0) + int(parts[-1])
    return out
