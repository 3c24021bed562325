"""ds01.yaml as SLURM policy: GRES types, billing weights, accounts, QOS and associations.

Owns the mapping (docs/slurm.md "What export renders"):

* every unit of every node becomes a GRES of type: the GPU model's family ('h100') for a whole
  GPU, the MIG profile's canonical name ('3g.40gb') for a MIG device, or what
  `cluster.gres_types` names for the model or profile;
* a GRES type bills its gpueq times `scale` (render.billing_weights turns that into
  `TRESBillingWeights`), where the scale is the smallest whole number that makes every
  weight and every gpueq limit whole (7 for H100 slices: 3g.40gb bills 3 of a whole GPU's 7),
  because SLURM compares billing as integers;
* a ds01 group is an account (fair-share shares from `cluster.fairshare`, its
  `max_gpueq_total` as the account's GrpTRES=billing), and the users it places are associated
  with it; users in no group go to `cluster.default_account`;
* a user's per-user limits are a QOS: MaxTRESPerUser=billing from max_gpueq, MaxTRES (per job)
  gres/gpu from max_units_per_container, gres/gpu:<whole-GPU type>=0 per user when
  allow_full_gpu is false, MaxJobsPerUser from max_containers, MaxWall from max_runtime,
  Priority from queue.group_priority. Users whose limits equal their group's share the group's
  QOS `ds01-<group>`; a user with overrides gets `ds01-<group>-<user>`.

Pure: no files, no NSS, no subprocess (the caller passes each node's MachineSample and the
group members NSS knows). Bad input raises SlurmPolicyError (exit 2) naming the key to fix.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from fractions import Fraction

from ds01.config import Config
from ds01.errors import UsageError
from ds01.identity import sanitize_username
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import MachineSample, UnitKind

# SLURM's GRES type names: the characters its lists do not use as separators.
_TYPE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The family in a GPU model's name: 'NVIDIA H100 80GB HBM3' → 'h100', 'A100-SXM4-40GB' → 'a100'.
_FAMILY = re.compile(r"\b((?:GH|GB)?[A-Z]{1,2}[0-9]{1,4}[A-Z]?)\b")


class SlurmPolicyError(UsageError):
    """ds01.yaml (or a node's machine file) cannot be expressed as SLURM policy."""


@dataclass(frozen=True)
class NodeGres:
    """One node's GPUs as SLURM sees them."""

    name: str
    address: str | None
    port: int | None  # Port= (several slurmd on one host)
    cpus: int | None
    autodetect: bool  # AutoDetect=nvml, else one File= line per whole GPU
    counts: dict[str, int]  # GRES type → count on this node
    files: tuple[tuple[str, str], ...]  # (type, device file) per whole GPU, files mode only


@dataclass(frozen=True)
class Qos:
    name: str
    priority: int
    max_tres_per_user: dict[str, int]
    max_tres_per_job: dict[str, int]
    max_jobs_per_user: int | None
    max_wall_min: int | None


@dataclass(frozen=True)
class Account:
    name: str
    description: str
    fairshare: int
    grp_tres: dict[str, int]
    qos: str  # the QOS of members without overrides


@dataclass(frozen=True)
class Member:
    user: str
    account: str
    qos: str


@dataclass(frozen=True)
class ClusterPolicy:
    cluster: str
    partition: str
    source: str
    nodes: tuple[NodeGres, ...]
    weights: dict[str, int]  # GRES type → what one unit of it bills (`scale` per whole GPU)
    scale: int  # billing units of one whole GPU
    whole_types: frozenset[str]
    qos: tuple[Qos, ...]
    accounts: tuple[Account, ...]
    members: tuple[Member, ...]
    queue_weights: dict[str, int] = field(default_factory=dict)
    half_life_min: int = 0
    age_max_min: int = 0


def gres_type_of_model(model: str, overrides: Mapping[str, str]) -> str:
    if model in overrides:
        return overrides[model]
    short = model.removeprefix("NVIDIA ").strip()
    found = _FAMILY.search(short.upper())
    if found is not None:
        return found.group(1).lower()
    raise SlurmPolicyError(
        f"GPU model '{model}' has no SLURM GRES type name",
        "ds01 names a whole GPU's type after its family (H100 → h100) and finds none in this name.",
        f"Name one in cluster.gres_types, e.g. gres_types: {{'{model}': t4}}.",
    )


def gres_type_of_profile(profile: str, overrides: Mapping[str, str]) -> str:
    if profile in overrides:
        return overrides[profile]
    if _TYPE_NAME.fullmatch(profile):
        return profile
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", profile)
    raise SlurmPolicyError(
        f"MIG profile '{profile}' has no SLURM GRES type name",
        "SLURM GRES types take letters, digits, '.', '_' and '-' only.",
        f"Name one in cluster.gres_types, e.g. gres_types: {{'{profile}': {safe}}}.",
    )


def build_policy(
    config: Config, machines: Mapping[str, MachineSample], nss_members: Mapping[str, list[str]]
) -> ClusterPolicy:
    """The cluster's policy. `machines`: node name → its inventory; `nss_members`: group →
    users NSS places in its unix_group (added after the users the file names)."""
    cluster = config.cluster
    if not cluster.nodes:
        raise SlurmPolicyError(
            "no SLURM nodes in the config",
            "ds01 slurm export renders GRES and partitions from cluster.nodes.",
            "Add cluster.nodes: {NODE: {machine: FILE}} (docs/slurm.md).",
        )
    types: dict[str, GpuEq] = {}
    where: dict[str, str] = {}
    whole: set[str] = set()
    nodes: list[NodeGres] = []
    for node_name, spec in cluster.nodes.items():
        sample = machines[node_name]
        counts: dict[str, int] = {}
        files: list[tuple[str, str]] = []
        has_mig = False
        for unit in sample.units():
            if unit.kind is UnitKind.MIG:
                has_mig = True
                kind = gres_type_of_profile(unit.profile or "", cluster.gres_types)
            else:
                kind = gres_type_of_model(unit.model, cluster.gres_types)
                whole.add(kind)
                files.append((kind, spec.device_files.replace("{index}", str(unit.gpu_index))))
            seen = types.setdefault(kind, unit.gpueq)
            if seen != unit.gpueq:
                raise SlurmPolicyError(
                    f"GRES type '{kind}' would stand for {seen.as_text()} and for "
                    f"{unit.gpueq.as_text()} GPU-equivalents",
                    f"{where[kind]} and {unit.label} on node {node_name} get the same type name,"
                    " and one type has one billing weight.",
                    "Name them apart in cluster.gres_types (model or profile → type).",
                )
            where.setdefault(kind, f"{unit.label} on node {node_name}")
            counts[kind] = counts.get(kind, 0) + 1
        if has_mig and spec.gres == "files":
            raise SlurmPolicyError(
                f"node {node_name} has MIG devices, and gres is 'files'",
                "A MIG device's files are its GPU's and two /dev/nvidia-caps nodes that only the"
                " driver knows; SLURM reads them through NVML.",
                f"Set cluster.nodes.{node_name}.gres: nvml (AutoDetect=nvml; it needs a SLURM"
                " built with NVML, which Debian 12's packages are not).",
            )
        nodes.append(
            NodeGres(
                node_name,
                spec.address,
                spec.port,
                spec.cpus,
                spec.gres == "nvml",
                counts,
                tuple(files) if spec.gres == "files" else (),
            )
        )
    limits = _profiles(config, nss_members)
    scale = _scale(types.values(), limits)
    weights = {k: _whole(v.fraction * scale, f"GRES type {k}") for k, v in sorted(types.items())}
    qos_list, accounts, members = _accounts(config, limits, scale, frozenset(whole))
    q = config.queue
    return ClusterPolicy(
        cluster=cluster.name,
        partition=cluster.partition,
        source=config.source,
        nodes=tuple(nodes),
        weights=weights,
        scale=scale,
        whole_types=frozenset(whole),
        qos=qos_list,
        accounts=accounts,
        members=members,
        queue_weights={
            "Fairshare": round(q.weights.fairshare),
            "Age": round(q.weights.age),
            "QOS": round(q.weights.group),
            "JobSize": round(q.weights.size),
        },
        half_life_min=max(1, math.ceil(q.usage_half_life / 60)),
        age_max_min=max(1, math.ceil(q.age_max / 60)),
    )


@dataclass(frozen=True)
class _Limits:
    """The QOS-relevant part of one resolved user (or group) limit set."""

    max_gpueq: GpuEq
    max_units: int
    allow_full_gpu: bool
    max_containers: int
    max_runtime_s: int | None
    group_total: GpuEq | None


def _profiles(
    config: Config, nss_members: Mapping[str, list[str]]
) -> dict[str | None, tuple[_Limits, dict[str, _Limits]]]:
    """Per group (None: no group): the group's own limits and each member's."""
    out: dict[str | None, tuple[_Limits, dict[str, _Limits]]] = {}
    for group in [None, *config.groups]:
        out[group] = (_of(config, "", group), {})
    by_nss = {user: group for group, users in nss_members.items() for user in users}
    for user in dict.fromkeys([*config.named_users(), *by_nss]):
        # The file's own placement first (users.<n>.group, members), then the unix_group.
        group = config.group_of(user) or by_nss.get(user)
        out[group][1][user] = _of(config, user, group)
    return out


def _of(config: Config, user: str, group: str | None) -> _Limits:
    from ds01.config.resolve import resolve_layers

    layers = [("defaults", config.defaults)]
    if group is not None:
        layers.append((f"group:{group}", config.groups[group]))
    if user in config.users:
        layers.append((f"user:{user}", config.users[user]))
    limits = resolve_layers(user, group, None, layers).limits
    return _Limits(
        limits.max_gpueq,
        limits.max_units_per_container,
        limits.allow_full_gpu,
        limits.max_containers,
        limits.max_runtime_s,
        limits.group_max_gpueq,
    )


def _scale(
    unit_eqs: object, limits: Mapping[str | None, tuple[_Limits, dict[str, _Limits]]]
) -> int:
    denominators = {e.fraction.denominator for e in unit_eqs}  # type: ignore[attr-defined]
    for own, users in limits.values():
        for lim in (own, *users.values()):
            denominators.add(lim.max_gpueq.fraction.denominator)
            if lim.group_total is not None:
                denominators.add(lim.group_total.fraction.denominator)
    return math.lcm(*denominators) if denominators else 1


def _whole(value: Fraction, what: str) -> int:
    if value.denominator != 1:  # pragma: no cover - _scale makes every value whole
        raise AssertionError(f"{what}: {value} is not whole")
    return value.numerator


def qos_name(group: str | None, default_account: str, user: str | None = None) -> str:
    base = f"ds01-{group}" if group is not None else default_account
    return base if user is None else f"{base}-{sanitize_username(user)}"


def _accounts(
    config: Config,
    limits: Mapping[str | None, tuple[_Limits, dict[str, _Limits]]],
    scale: int,
    whole: frozenset[str],
) -> tuple[tuple[Qos, ...], tuple[Account, ...], tuple[Member, ...]]:
    cluster = config.cluster
    qos_list: list[Qos] = []
    accounts: list[Account] = []
    members: list[Member] = []
    for group, (own, users) in limits.items():
        if group is None and not users:
            continue
        account = group if group is not None else cluster.default_account
        prio = config.queue.group_priority.get(group, 0.0) if group is not None else 0.0
        priority = round(prio * 1000)
        base = qos_name(group, cluster.default_account)
        qos_list.append(_qos(base, own, priority, scale, whole))
        total = own.group_total
        accounts.append(
            Account(
                account,
                f"ds01 group {group}" if group is not None else "ds01 users in no group",
                cluster.fairshare.get(group, 1) if group is not None else 1,
                {"billing": _whole(total.fraction * scale, "max_gpueq_total")} if total else {},
                base,
            )
        )
        for user, lim in sorted(users.items()):
            name = base
            if lim != own:
                name = qos_name(group, cluster.default_account, user)
                qos_list.append(_qos(name, lim, priority, scale, whole))
            members.append(Member(user, account, name))
    return tuple(qos_list), tuple(accounts), tuple(members)


def _qos(name: str, lim: _Limits, priority: int, scale: int, whole: frozenset[str]) -> Qos:
    per_user = {"billing": _whole(lim.max_gpueq.fraction * scale, "max_gpueq")}
    if not lim.allow_full_gpu:
        per_user.update({f"gres/gpu:{kind}": 0 for kind in sorted(whole)})
    runtime = lim.max_runtime_s
    return Qos(
        name=name,
        priority=priority,
        max_tres_per_user=per_user,
        max_tres_per_job={"gres/gpu": lim.max_units},
        max_jobs_per_user=lim.max_containers,
        max_wall_min=None if runtime is None else max(1, math.ceil(runtime / 60)),
    )
