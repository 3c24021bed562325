"""The files `ds01 slurm export` writes, from a ClusterPolicy (docs/slurm.md).

    slurm-ds01.conf  Include it from slurm.conf: ClusterName, GRES, SelectType, cgroup plugins,
                     accounting enforcement and TRES, multifactor priority, nodes, partition
    gres.conf        per node: AutoDetect=nvml, or one File= line per whole GPU
    cgroup.conf      ConstrainDevices=yes (a job opens only the GPUs it was given)
    sacctmgr.sh      idempotent: QOS, accounts, users; run it again after every export

Pure text; the same policy always renders the same bytes. Must not run anything.
"""

from __future__ import annotations

import shlex

from ds01.slurm.policy import Account, ClusterPolicy, Qos

FILES = ("slurm-ds01.conf", "gres.conf", "cgroup.conf", "sacctmgr.sh")


def _header(policy: ClusterPolicy, comment: str = "#") -> str:
    return (
        f"{comment} Rendered by `ds01 slurm export` from {policy.source}.\n"
        f"{comment} Do not edit: change ds01.yaml and export again (docs/slurm.md).\n"
    )


def render_all(policy: ClusterPolicy) -> dict[str, str]:
    return {
        "slurm-ds01.conf": slurm_conf(policy),
        "gres.conf": gres_conf(policy),
        "cgroup.conf": cgroup_conf(policy),
        "sacctmgr.sh": sacctmgr_script(policy),
    }


def tres_text(tres: dict[str, int]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(tres.items()))


def wall_text(minutes: int | None) -> str:
    """MaxWall as sacctmgr prints it: [D-]HH:MM:SS, '' for no limit."""
    if minutes is None:
        return ""
    days, rest = divmod(minutes, 1440)
    text = f"{rest // 60:02d}:{rest % 60:02d}:00"
    return f"{days}-{text}" if days else text


def _gres_list(counts: dict[str, int]) -> str:
    return ",".join(f"gpu:{kind}:{n}" for kind, n in sorted(counts.items()))


def slurm_conf(policy: ClusterPolicy) -> str:
    types = sorted(policy.weights)
    lines = [
        _header(policy).rstrip("\n"),
        f"ClusterName={policy.cluster}",
        "GresTypes=gpu",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "# ConstrainDevices (cgroup.conf) needs the cgroup plugins.",
        "ProctrackType=proctrack/cgroup",
        "TaskPlugin=task/cgroup",
        "AccountingStorageTRES=" + ",".join(["gres/gpu", *(f"gres/gpu:{t}" for t in types)]),
        "AccountingStorageEnforce=associations,limits,qos,safe",
        "PriorityType=priority/multifactor",
        f"PriorityDecayHalfLife={wall_text(policy.half_life_min)}",
        f"PriorityMaxAge={wall_text(policy.age_max_min)}",
        *(f"PriorityWeight{k}={v}" for k, v in policy.queue_weights.items()),
    ]
    for node in policy.nodes:
        parts = [f"NodeName={node.name}"]
        if node.address:
            parts.append(f"NodeAddr={node.address}")
        if node.port:
            parts.append(f"Port={node.port}")
        if node.cpus:
            parts.append(f"CPUs={node.cpus}")
        if node.counts:
            parts.append(f"Gres={_gres_list(node.counts)}")
        parts.append("State=UNKNOWN")
        lines.append(" ".join(parts))
    nodes = ",".join(n.name for n in policy.nodes)
    lines.append(
        f"# Billing: a whole GPU is {policy.scale}; each GRES type bills its gpueq times that."
    )
    lines.append(
        "# A typed request counts gres/gpu and gres/gpu:TYPE; an untyped one only gres/gpu,"
    )
    lines.append("# which bills the smallest type (docs/slurm.md).")
    weights = billing_weights(policy)
    lines.append(
        f"PartitionName={policy.partition} Nodes={nodes} Default=YES MaxTime=INFINITE State=UP"
        + (f' TRESBillingWeights="{weights}"' if weights else "")
    )
    return "\n".join(lines) + "\n"


def billing_weights(policy: ClusterPolicy) -> str:
    """TRESBillingWeights: gres/gpu bills the smallest type's weight, and each type what it
    bills beyond that, so a typed request (which SLURM counts as both) bills exactly its
    gpueq, and an untyped one at least the smallest unit (exactly, where all are whole)."""
    if not policy.weights:
        return ""
    base = min(policy.weights.values())
    parts = [f"GRES/gpu={base}"]
    parts += [f"GRES/gpu:{t}={w - base}" for t, w in sorted(policy.weights.items()) if w > base]
    return ",".join(parts)


def gres_conf(policy: ClusterPolicy) -> str:
    lines = [_header(policy).rstrip("\n")]
    for node in policy.nodes:
        if node.autodetect:
            lines.append(f"NodeName={node.name} AutoDetect=nvml")
            continue
        for kind, path in node.files:
            lines.append(f"NodeName={node.name} Name=gpu Type={kind} File={path}")
    return "\n".join(lines) + "\n"


def cgroup_conf(policy: ClusterPolicy) -> str:
    return (
        _header(policy)
        + "# A job opens only the GPU device files of the GRES it was given.\n"
        + "ConstrainDevices=yes\n"
    )


def _q(value: str) -> str:
    return shlex.quote(value)


def sacctmgr_script(policy: ClusterPolicy) -> str:
    """One sacctmgr call per QOS and account, and per (account, QOS) for users: each call
    costs a round trip to slurmdbd, so what exists is read once at the start."""
    c = _q(policy.cluster)
    out = [
        "#!/bin/sh",
        _header(policy).rstrip("\n"),
        "# Idempotent: adds what is missing, sets every limit, and removes users from ds01's",
        "# accounts that ds01.yaml no longer places there. Run as a SLURM admin (root).",
        "set -eu",
        "qos_have=$(sacctmgr -n -P show qos format=name)",
        "accounts_have=$(sacctmgr -n -P show account format=account)",
        f"assocs_have=$(sacctmgr -n -P show assoc where cluster={c} format=account,user)",
        'has() { printf \'%s\\n\' "$1" | grep -qxF -- "$2"; }',
        "",
        "# QOS: per-user limits (docs/slurm.md)",
    ]
    for q in policy.qos:
        out += _qos_lines(q)
    out += ["", "# Accounts: one per ds01 group"]
    for a in policy.accounts:
        out += _account_lines(a, policy)
    out += ["", "# Users in their accounts"]
    for a in policy.accounts:
        out += _member_lines(a, policy)
    return "\n".join(out) + "\n"


def _qos_lines(q: Qos) -> list[str]:
    n = _q(q.name)
    sets = [
        f"Priority={q.priority}",
        f"MaxTRESPerUser={tres_text(q.max_tres_per_user) or -1}",
        f"MaxTRES={tres_text(q.max_tres_per_job) or -1}",
        f"MaxJobsPerUser={q.max_jobs_per_user if q.max_jobs_per_user is not None else -1}",
        f"MaxWall={q.max_wall_min if q.max_wall_min is not None else -1}",
    ]
    return [
        f'has "$qos_have" {n} || sacctmgr -i add qos {n}',
        f"sacctmgr -i modify qos where name={n} set {' '.join(sets)}",
    ]


def account_qos(account: Account, policy: ClusterPolicy) -> list[str]:
    """Every QOS the account's users use, its own first. The account gets no DefaultQOS: each
    user has their own, and sacctmgr refuses an account's DefaultQOS whenever one of its users
    has another default — saying so, yet exiting 0."""
    names = [account.qos, *(m.qos for m in policy.members if m.account == account.name)]
    return list(dict.fromkeys(names))


def _account_lines(a: Account, policy: ClusterPolicy) -> list[str]:
    n, c = _q(a.name), _q(policy.cluster)
    return [
        f'has "$accounts_have" {n} || sacctmgr -i add account {n}'
        f" cluster={c} Description={_q(a.description)} Organization=ds01",
        f"sacctmgr -i modify account where name={n} cluster={c} set Fairshare={a.fairshare}"
        f" GrpTRES=billing={a.grp_tres.get('billing', -1)}"
        f" QOS={_q(','.join(account_qos(a, policy)))}",
    ]


def _sed(name: str) -> str:
    return name.replace(".", "\\.")


def _member_lines(a: Account, policy: ClusterPolicy) -> list[str]:
    n, c = _q(a.name), _q(policy.cluster)
    members = [m for m in policy.members if m.account == a.name]
    out: list[str] = []
    if members:
        users = ",".join(m.user for m in members)
        out.append(f"add=''; for u in {' '.join(_q(m.user) for m in members)}; do")
        out.append(f'    has "$assocs_have" "{a.name}|$u" || add="$add${{add:+,}}$u"')
        out.append("done")
        out.append(f'[ -z "$add" ] || sacctmgr -i add user "$add" account={n} cluster={c}')
        out.append(
            f"sacctmgr -i modify user where name={_q(users)} cluster={c} set DefaultAccount={n}"
        )
        by_qos: dict[str, list[str]] = {}
        for m in members:
            by_qos.setdefault(m.qos, []).append(m.user)
        for qos, names in by_qos.items():
            out.append(
                f"sacctmgr -i modify user where name={_q(','.join(names))} cluster={c}"
                f" account={n} set QOS={_q(qos)} DefaultQOS={_q(qos)}"
            )
    keep = " ".join(_q(m.user) for m in members)
    out += [
        f'for u in $(printf \'%s\\n\' "$assocs_have" | sed -n "s/^{_sed(a.name)}|//p"); do',
        f'    case " {keep} " in *" $u "*) ;; *)'
        f' sacctmgr -i delete user where name="$u" cluster={c} account={n} ;; esac',
        "done",
    ]
    return out
