"""A loaded Config and its questions: which group is a user in, are they admin or exempt, and
what are their limits, layered key by key: built-in ← defaults ← group ← user (BRIEF §4).

Owns the resolution rules. A user override of one key never hides the group's other keys
(DS01 replaced the whole group block; ds01 does not). Pure: no files, no NSS, no clock. Must not
validate (a Config reaching here is already valid) and must not mutate anything.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from ds01.config.schema import (
    BUILTIN_LIMITS,
    BUILTIN_POLICY,
    LIMIT_KINDS,
    POLICY_KINDS,
    AllocationSection,
    ClusterSection,
    DockerSection,
    GateSection,
    GpuSection,
    GroupSpec,
    HostSection,
    ImagesSection,
    LimitsLayer,
    MetricsSection,
    NotifySection,
    Privacy,
    QueueSection,
    ReportSection,
    ReservationsSection,
    StateSection,
    StorageSection,
    UserSpec,
    WebSection,
)
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits


@dataclass(frozen=True)
class Policy:
    """Resolved lifecycle thresholds for one user (the lifecycle issue acts on them)."""

    idle_gpu_util_pct: float  # a unit below this utilization counts as idle
    idle_cpu_pct: float  # a container below this CPU use (% of one core) counts as idle
    idle_samples: int  # consecutive idle samples needed before idle time starts counting
    warn_before_s: int  # warn this long before an idle or runtime stop
    max_keepalive_s: int  # the longest `ds01 container keep-alive` a user may ask for (0: none)
    # Keep-alives, renewed or not, hold off at most this much idleness in a row (0: none).
    max_keepalive_total_s: int
    # While GPU requests were refused for lack of capacity in the last demand_window_s, the
    # idle timeout is demand_idle_factor of itself, never below demand_idle_floor_s.
    demand_idle_factor: float = 1.0
    demand_idle_floor_s: int = 0
    demand_window_s: int = 0


@dataclass(frozen=True)
class ResolvedLimits:
    """One user's effective limits and where each value came from.

    `sources` maps each limit key (and `policy.<key>`, and `max_gpueq_total` when the group
    sets one) to "defaults", "group:<name>" or "user:<name>". `values` holds the same keys
    with the config-level value (GpuEq, bytes, seconds, None = unlimited). `group_via` says
    how the group was chosen: "users", "members" or "unix_group", None without a group.
    """

    user: str
    group: str | None
    group_via: str | None
    limits: Limits
    policy: Policy
    sources: dict[str, str]
    values: dict[str, object]


@dataclass(frozen=True, eq=False)
class Config:
    """A validated ds01.yaml. Build it with load_config / parse_config_text, never by hand.

    Compared and hashed by identity: a reload yields a new object even if nothing changed.
    """

    source: str
    defaults: LimitsLayer
    groups: Mapping[str, GroupSpec]  # file order matters: the first match wins
    users: Mapping[str, UserSpec]
    exempt_users: tuple[str, ...]
    admin_group: str
    gpu: GpuSection  # sim_machine is absolute (relative paths resolved against the file)
    docker: DockerSection
    privacy: Privacy
    allocation: AllocationSection
    storage: StorageSection
    host: HostSection
    gate: GateSection
    state: StateSection
    notify: NotifySection
    queue: QueueSection
    reservations: ReservationsSection
    report: ReportSection
    web: WebSection
    metrics: MetricsSection
    # ds01 image build's framework bases; a default so Configs made elsewhere need not name it.
    images: ImagesSection = field(default_factory=ImagesSection)
    # SLURM scale-out (docs/slurm.md); a default for the same reason.
    cluster: ClusterSection = field(default_factory=ClusterSection)

    @property
    def sim_machine(self) -> Path | None:
        return self.gpu.sim_machine

    def named_users(self) -> list[str]:
        """Every user the file names under `users` or in a group's `members`, once each."""
        seen = dict.fromkeys(self.users)
        for spec in self.groups.values():
            seen.update(dict.fromkeys(spec.members))
        return list(seen)

    def group_of(self, user: str, unix_groups: Iterable[str] = ()) -> str | None:
        return self._group_and_via(user, unix_groups)[0]

    def _group_and_via(
        self, user: str, unix_groups: Iterable[str]
    ) -> tuple[str | None, str | None]:
        """users.<name>.group, else the first group listing the user in `members`, else the
        first group whose `unix_group` the user is in (file order), else no group."""
        spec = self.users.get(user)
        if spec is not None and spec.group is not None:
            return spec.group, "users"
        for name, group in self.groups.items():
            if user in group.members:
                return name, "members"
        mine = set(unix_groups)
        for name, group in self.groups.items():
            if group.unix_group is not None and group.unix_group in mine:
                return name, "unix_group"
        return None, None

    def is_exempt(self, user: str) -> bool:
        """Exempt users keep bare-metal GPU access on the host (no CUDA_VISIBLE_DEVICES="")."""
        return user in self.exempt_users

    def is_admin(self, user: str, unix_groups: Iterable[str] = ()) -> bool:
        """In the Unix group `admin_group`, or placed by this file in a config group that *is*
        the admin group (named like it, or with `unix_group: <admin_group>`). Root is the
        caller's business (identity), not the config's."""
        groups = set(unix_groups)
        if self.admin_group in groups:
            return True
        name = self.group_of(user, groups)
        if name is None:
            return False
        return name == self.admin_group or self.groups[name].unix_group == self.admin_group

    def resolve(self, user: str, unix_groups: Iterable[str] = ()) -> ResolvedLimits:
        group, via = self._group_and_via(user, unix_groups)
        layers: list[tuple[str, LimitsLayer]] = [("defaults", self.defaults)]
        if group is not None:
            layers.append((f"group:{group}", self.groups[group]))
        if user in self.users:
            layers.append((f"user:{user}", self.users[user]))
        return resolve_layers(user, group, via, layers)


def resolve_layers(
    user: str, group: str | None, via: str | None, layers: list[tuple[str, LimitsLayer]]
) -> ResolvedLimits:
    """Layer key by key: each key takes the value of the last layer that sets it."""
    values: dict[str, object] = {}
    sources: dict[str, str] = {}
    for key in LIMIT_KINDS:
        values[key] = BUILTIN_LIMITS.get(key)
        sources[key] = "defaults"
        for label, layer in layers:
            if key in layer.model_fields_set:
                values[key], sources[key] = getattr(layer, key), label
    if not any("memory_swap" in layer.model_fields_set for _, layer in layers):
        values["memory_swap"], sources["memory_swap"] = values["memory"], sources["memory"]
    for key in POLICY_KINDS:
        values[f"policy.{key}"], sources[f"policy.{key}"] = BUILTIN_POLICY[key], "defaults"
        for label, layer in layers:
            if key in layer.policy.model_fields_set:
                values[f"policy.{key}"] = getattr(layer.policy, key)
                sources[f"policy.{key}"] = label
    group_total: GpuEq | None = None
    for label, layer in layers:
        if isinstance(layer, GroupSpec) and layer.max_gpueq_total is not None:
            group_total = layer.max_gpueq_total
            values["max_gpueq_total"], sources["max_gpueq_total"] = group_total, label

    def opt_int(key: str) -> int | None:
        return cast("int | None", values[key])

    limits = Limits(
        max_gpueq=cast(GpuEq, values["max_gpueq"]),
        max_units_per_container=cast(int, values["max_units_per_container"]),
        max_containers=cast(int, values["max_containers"]),
        allow_full_gpu=cast(bool, values["allow_full_gpu"]),
        cpus=cast("float | None", values["cpus"]),
        memory_bytes=opt_int("memory"),
        memory_swap_bytes=opt_int("memory_swap"),
        shm_bytes=opt_int("shm"),
        pids=opt_int("pids"),
        max_runtime_s=opt_int("max_runtime"),
        idle_timeout_s=opt_int("idle_timeout"),
        gpu_hold_after_stop_s=cast(int, values["gpu_hold_after_stop"]),
        group=group,
        group_max_gpueq=group_total,
    )
    policy = Policy(
        idle_gpu_util_pct=cast(float, values["policy.idle_gpu_util_pct"]),
        idle_cpu_pct=cast(float, values["policy.idle_cpu_pct"]),
        idle_samples=cast(int, values["policy.idle_samples"]),
        warn_before_s=cast(int, values["policy.warn_before"]),
        max_keepalive_s=cast(int, values["policy.max_keepalive"]),
        max_keepalive_total_s=cast(int, values["policy.max_keepalive_total"]),
        demand_idle_factor=cast(float, values["policy.demand_idle_factor"]),
        demand_idle_floor_s=cast(int, values["policy.demand_idle_floor"]),
        demand_window_s=cast(int, values["policy.demand_window"]),
    )
    return ResolvedLimits(
        user=user,
        group=group,
        group_via=via,
        limits=limits,
        policy=policy,
        sources=sources,
        values=values,
    )
