"""What `ds01 quota` and `ds01 queue` show with `cluster.backend: slurm`, read from SLURM.

Quota: the user's association (account, QOS) from sacctmgr, and the live limits with their use
from slurmctld's association manager (`scontrol -o show assoc_mgr`, where each limit reads
`LIMIT(USED)`, `N` for none). Billing is SLURM's integer; one whole GPU bills `scale` (the
export's), so GPU-equivalents are billing / scale. Queue: pending jobs (squeue) with their
priority factors (sprio). docs/slurm.md.
"""

from __future__ import annotations

import pwd
import re
from fractions import Fraction
from typing import Any

from ds01.config import Config
from ds01.errors import Ds01Error
from ds01.slurm import tools

# 'billing=7(3)', 'MaxJobsPU=2(0)', 'gres/gpu:a100=N(1)': a limit (N: none) and its use.
_LIMIT = re.compile(r"([A-Za-z][\w/:.-]*)=(N|\d+)\((\d+(?:\.\d+)?)\)")


def _limits(text: str) -> dict[str, tuple[int | None, float]]:
    return {
        key: (None if limit == "N" else int(limit), float(used))
        for key, limit, used in _LIMIT.findall(text)
    }


def _gpueq(billing: float | int | None, scale: int) -> str | None:
    if billing is None:
        return None
    value = Fraction(int(billing), scale)
    return str(value.numerator) if value.denominator == 1 else f"{float(value):.2f}"


def scale_of(config: Config) -> int:
    from ds01.slurm.inputs import node_machines, nss_members
    from ds01.slurm.policy import build_policy

    return build_policy(config, node_machines(config), nss_members(config)).scale


def quota(config: Config, user: str) -> dict[str, Any]:
    rows = tools.parsable(["show", "assoc", "where", f"user={user}", "format=account,qos"])
    if not rows:
        raise Ds01Error(
            f"SLURM has no account for {user}",
            "Users get their account when the admin applies ds01's policy (sacctmgr.sh).",
            "Ask your admin to run ds01 slurm export and sacctmgr.sh (docs/slurm.md).",
        )
    account, qos = rows[0]["account"], rows[0]["qos"].split(",")[0]
    scale = scale_of(config)
    qos_text = tools.run(
        ["scontrol", "-o", "show", "assoc_mgr", f"users={user}", f"qos={qos}", "flags=qos"]
    )
    uid = pwd.getpwnam(user).pw_uid
    mine = re.search(rf"\b{uid}=\{{([^}}]*)\}}", qos_text)
    per_user = _limits(mine.group(1)) if mine else {}
    wall = re.search(r"MaxWallPJ=(\d+)", qos_text)
    assoc_text = tools.run(
        ["scontrol", "-o", "show", "assoc_mgr", f"accounts={account}", "flags=assoc"]
    )
    group_line = next(
        (ln for ln in assoc_text.splitlines() if f"Account={account} UserName= " in ln), ""
    )
    group = _limits(group_line.split(" GrpTRES=", 1)[1].split(" ", 1)[0]) if group_line else {}
    billing = per_user.get("billing", (None, 0.0))
    jobs = per_user.get("MaxJobsPU", (None, 0.0))
    group_billing = group.get("billing", (None, 0.0))
    return {
        "user": user,
        "account": account,
        "qos": qos,
        "gpueq_limit": _gpueq(billing[0], scale),
        "gpueq_used": _gpueq(billing[1], scale),
        "group_gpueq_limit": _gpueq(group_billing[0], scale),
        "group_gpueq_used": _gpueq(group_billing[1], scale),
        "containers_limit": jobs[0],
        "containers_running": int(jobs[1]),
        "max_runtime_min": int(wall.group(1)) if wall else None,
        "billing_per_gpu": scale,
    }


_SQUEUE = ("id", "user", "name", "reason", "gres", "submitted")
_SPRIO = ("id", "priority", "age", "fairshare", "jobsize", "qos")


def pending() -> list[dict[str, Any]]:
    """Every pending job, highest priority first, with sprio's weighted factors."""
    jobs = []
    out = tools.run(["squeue", "-h", "-t", "PENDING", "-o", "%i|%u|%j|%r|%b|%V"])
    for line in out.splitlines():
        values = line.split("|")
        if len(values) == len(_SQUEUE):
            jobs.append(dict(zip(_SQUEUE, values, strict=True)))
    factors: dict[str, dict[str, str]] = {}
    if jobs:
        for line in tools.run(["sprio", "-h", "-o", "%i|%Y|%A|%F|%J|%Q"]).splitlines():
            values = [v.strip() for v in line.split("|")]
            if len(values) == len(_SPRIO):
                factors[values[0]] = dict(zip(_SPRIO, values, strict=True))
    rows: list[dict[str, Any]] = []
    for job in jobs:
        f = factors.get(job["id"], {})
        rows.append(
            {
                **job,
                "gres": job["gres"].removeprefix("gres:").replace(",gres:", ","),
                "name": job["name"].removeprefix("ds01:"),
                **{k: int(f[k]) if f.get(k, "").isdigit() else None for k in _SPRIO[1:]},
            }
        )
    rows.sort(key=lambda r: (-(r["priority"] or 0), int(r["id"]) if r["id"].isdigit() else 0))
    return rows
