"""What applying sacctmgr.sh would change on the live cluster (`ds01 slurm export --diff`).

Reads the live QOS, accounts, associations and users through `sacctmgr -n -P show`, compares
them field by field with the policy and returns one line per change, in the script's order
(QOS, accounts, users). Nothing when the cluster already matches: the lines are the proof that
an apply is needed, so equal values must compare equal whatever spelling SLURM prints them in
(TRES as maps, MaxWall as [D-]HH:MM:SS, unlimited as empty). Must not change anything.
"""

from __future__ import annotations

from ds01.slurm.policy import ClusterPolicy
from ds01.slurm.render import account_qos, tres_text, wall_text
from ds01.slurm.tools import parsable, parse_tres


def _shown(value: str) -> str:
    return value if value not in ("", "-1") else "unlimited"


def live_diff(policy: ClusterPolicy) -> list[str]:
    c = policy.cluster
    qos_rows = parsable(["show", "qos", "format=name,priority,maxtrespu,maxtres,maxjobspu,maxwall"])
    live_qos = {r["name"]: r for r in qos_rows}
    assoc_rows = parsable(
        [
            "show",
            "assoc",
            "where",
            f"cluster={c}",
            "format=account,user,fairshare,grptres,qos,defaultqos",
        ]
    )
    live_accounts = {r["account"]: r for r in assoc_rows if not r["user"]}
    live_members = {(r["account"], r["user"]): r for r in assoc_rows if r["user"]}
    default_account = {
        r["user"]: r["defaultaccount"]
        for r in parsable(["show", "user", "format=user,defaultaccount"])
    }
    out: list[str] = []
    for q in policy.qos:
        want = {
            "Priority": str(q.priority),
            "MaxTRESPerUser": tres_text(q.max_tres_per_user),
            "MaxTRES": tres_text(q.max_tres_per_job),
            "MaxJobsPerUser": "" if q.max_jobs_per_user is None else str(q.max_jobs_per_user),
            "MaxWall": wall_text(q.max_wall_min),
        }
        row = live_qos.get(q.name)
        if row is None:
            settings = " ".join(f"{k}={_shown(v)}" for k, v in want.items())
            out.append(f"qos {q.name}: add ({settings})")
            continue
        have = {
            "Priority": row["priority"] or "0",
            "MaxTRESPerUser": tres_text(parse_tres(row["maxtrespu"])),
            "MaxTRES": tres_text(parse_tres(row["maxtres"])),
            "MaxJobsPerUser": row["maxjobspu"],
            "MaxWall": row["maxwall"],
        }
        out += _changes(f"qos {q.name}", have, want)
    for a in policy.accounts:
        want = {
            "Fairshare": str(a.fairshare),
            "GrpTRES": tres_text(a.grp_tres),
            "QOS": ",".join(sorted(account_qos(a, policy))),
        }
        row = live_accounts.get(a.name)
        if row is None:
            settings = " ".join(f"{k}={_shown(v)}" for k, v in want.items())
            out.append(f"account {a.name}: add ({settings})")
            continue
        have = {
            "Fairshare": row["fairshare"],
            "GrpTRES": tres_text(parse_tres(row["grptres"])),
            "QOS": ",".join(sorted(row["qos"].split(","))),
        }
        out += _changes(f"account {a.name}", have, want)
    wanted_pairs = set()
    for m in policy.members:
        wanted_pairs.add((m.account, m.user))
        want = {"QOS": m.qos, "DefaultQOS": m.qos}
        row = live_members.get((m.account, m.user))
        if row is None:
            out.append(f"user {m.user}: add to account {m.account} (QOS={m.qos})")
        else:
            have = {"QOS": row["qos"], "DefaultQOS": row["defaultqos"]}
            out += _changes(f"user {m.user} in account {m.account}", have, want)
        have_default = default_account.get(m.user)
        if have_default is not None and have_default != m.account:
            out.append(f"user {m.user}: DefaultAccount {have_default} → {m.account}")
    ours = {a.name for a in policy.accounts}
    for account, user in sorted(live_members):
        if account in ours and (account, user) not in wanted_pairs:
            out.append(f"user {user}: remove from account {account}")
    return out


def _changes(what: str, have: dict[str, str], want: dict[str, str]) -> list[str]:
    return [
        f"{what}: {key} {_shown(have[key])} → {_shown(value)}"
        for key, value in want.items()
        if have[key] != value
    ]
