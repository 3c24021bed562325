"""Fluent builders for scheduler tests (STYLE 15): machines, holdings, limits and requests.

    units = machine().gpu(H100).mig("3g.40gb", "2g.20gb").gpu(A100_40).build()
    snap = (
        machine().gpu(A100_40).gpu(A100_40).snapshot()
        .hold("alice", "thesis", "GPU-0")
        .held("bob", "scratch", "GPU-1", until=at("14:05"))
        .build()
    )

UUIDs are deterministic and short so that expected values can be written as literals:
whole GPU i is "GPU-i"; MIG device j (in the order given to .mig()) on GPU i is "MIG-i-j".
MIG weights come from ds01.model.profile; test_builders.py pins them to literal fractions.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from fractions import Fraction

from ds01.errors import Refusal, RefusalReason
from ds01.model.allocation import LIVE_STATES, AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.model.limits import Limits
from ds01.model.profile import mig_gpueq
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import (
    ForeignProcess,
    Holding,
    Request,
    RequestKind,
    Snapshot,
    UnitState,
    UnitUse,
)

A100_40 = "NVIDIA A100-SXM4-40GB"
A100_80 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
H200 = "NVIDIA H200"
A30 = "NVIDIA A30"

DAY = datetime(2025, 3, 3, tzinfo=UTC)
NOW = datetime(2025, 3, 3, 12, 0, tzinfo=UTC)
TOMORROW = DAY + timedelta(days=1)


def at(hhmm: str, day: datetime = DAY) -> datetime:
    """'14:05' on the test day (UTC)."""
    h, m = hhmm.split(":")
    return day.replace(hour=int(h), minute=int(m))


@dataclass
class _Gpu:
    name: str
    nvlink: str | None
    numa: int | None
    profiles: tuple[str, ...] | None = None  # None = MIG off


@dataclass
class MachineBuilder:
    _gpus: list[_Gpu] = field(default_factory=list)

    def gpu(
        self, name: str, *, nvlink: str | None = None, numa: int | None = None
    ) -> MachineBuilder:
        """Add one GPU with MIG off (a whole-GPU unit)."""
        self._gpus.append(_Gpu(name, nvlink, numa))
        return self

    def gpus(
        self, n: int, name: str, *, nvlink: str | None = None, numa: int | None = None
    ) -> MachineBuilder:
        for _ in range(n):
            self.gpu(name, nvlink=nvlink, numa=numa)
        return self

    def mig(self, *profiles: str) -> MachineBuilder:
        """Put the last GPU into MIG mode with these devices (MIG-i-0, MIG-i-1, …)."""
        self._gpus[-1].profiles = profiles
        return self

    def build(self) -> tuple[Unit, ...]:
        out: list[Unit] = []
        for i, g in enumerate(self._gpus):
            gpu_uuid = f"GPU-{i}"
            if g.profiles is None:
                out.append(
                    Unit(
                        uuid=gpu_uuid,
                        kind=UnitKind.GPU,
                        gpu_uuid=gpu_uuid,
                        gpu_index=i,
                        model=g.name,
                        memory_total_mib=None,
                        gpueq=GpuEq(1),
                        numa_node=g.numa,
                        nvlink_group=g.nvlink,
                    )
                )
                continue
            for j, profile in enumerate(g.profiles):
                weight = mig_gpueq(profile.removeprefix("MIG "), g.name)
                assert weight is not None, f"no weight for {profile} on {g.name}"
                out.append(
                    Unit(
                        uuid=f"MIG-{i}-{j}",
                        kind=UnitKind.MIG,
                        gpu_uuid=gpu_uuid,
                        gpu_index=i,
                        model=g.name,
                        memory_total_mib=None,
                        gpueq=weight,
                        profile=profile,
                        gpu_instance_id=j,
                        compute_instance_id=0,
                        numa_node=g.numa,
                        nvlink_group=g.nvlink,
                    )
                )
        return tuple(out)

    def snapshot(self) -> SnapshotBuilder:
        return SnapshotBuilder(self.build())


def machine() -> MachineBuilder:
    return MachineBuilder()


class SnapshotBuilder:
    """Who holds what on a built machine. alloc_ids count up from 1 in call order."""

    def __init__(self, units: tuple[Unit, ...]) -> None:
        self._units = {u.uuid: u for u in units}
        self._order = [u.uuid for u in units]
        self._holdings: list[Holding] = []
        self._drained: set[str] = set()
        self._released: dict[str, datetime] = {}
        self._use: dict[str, UnitUse] = {}
        self._now: datetime | None = NOW

    def hold(
        self,
        user: str,
        container: str | None,
        *uuids: str,
        state: AllocState = AllocState.ACTIVE,
        group: str | None = None,
        until: datetime | None = None,
    ) -> SnapshotBuilder:
        """A live allocation of these units (active unless state says otherwise)."""
        units = tuple(self._units[u] for u in uuids)
        self._holdings.append(
            Holding(
                alloc_id=len(self._holdings) + 1,
                user=user,
                state=state,
                units=units,
                container=container,
                group=group,
                hold_until=until,
            )
        )
        return self

    def held(
        self,
        user: str,
        container: str | None,
        *uuids: str,
        until: datetime | None = None,
        group: str | None = None,
    ) -> SnapshotBuilder:
        """A stopped container's allocation, kept until `until`."""
        return self.hold(user, container, *uuids, state=AllocState.HELD, group=group, until=until)

    def reserved(
        self, user: str, container: str | None, *uuids: str, group: str | None = None
    ) -> SnapshotBuilder:
        return self.hold(user, container, *uuids, state=AllocState.RESERVED, group=group)

    def drain(self, *uuids: str) -> SnapshotBuilder:
        self._drained.update(uuids)
        return self

    def released(self, uuid: str, when: datetime) -> SnapshotBuilder:
        """The unit was last given back at `when` (for least-recently-used placement)."""
        self._released[uuid] = when
        return self

    def foreign(
        self, uuid: str, owner: str | None, *, pid: int = 4242, name: str = "python"
    ) -> SnapshotBuilder:
        """A compute process outside ds01 on the unit (owner None: unknown)."""
        use = self._use.get(uuid, UnitUse())
        proc = ForeignProcess(pid=pid, name=name, owner=owner, used_memory_mib=None)
        self._use[uuid] = replace(use, processes=(*use.processes, proc))
        return self

    def use(
        self,
        uuid: str,
        *,
        memory_mib: tuple[int, int] | None = None,
        utilization_pct: float | None = None,
    ) -> SnapshotBuilder:
        """What the sample says about a unit: memory (used, total) in MiB, utilization."""
        use = self._use.get(uuid, UnitUse())
        if memory_mib is not None:
            used, total = memory_mib
            self._units[uuid] = replace(self._units[uuid], memory_total_mib=total)
            use = replace(use, memory_used_mib=used)
        self._use[uuid] = replace(use, utilization_pct=utilization_pct)
        return self

    def now(self, when: datetime | None) -> SnapshotBuilder:
        self._now = when
        return self

    def build(self) -> Snapshot:
        # Released holdings stay in the list (the scheduler must ignore them) but own nothing.
        owner = {u.uuid: h for h in self._holdings if h.state in LIVE_STATES for u in h.units}
        states = tuple(
            UnitState(
                unit=self._units[uuid],
                alloc_id=owner[uuid].alloc_id if uuid in owner else None,
                holder=owner[uuid].user if uuid in owner else None,
                drained=uuid in self._drained,
                last_released_at=self._released.get(uuid),
                use=self._use.get(uuid),
            )
            for uuid in self._order
        )
        return Snapshot(units=states, holdings=tuple(self._holdings), now=self._now)


def limits(
    max_gpueq: GpuEq | Fraction | int | str = 8,
    *,
    units: int = 8,
    containers: int = 8,
    full: bool = True,
    group: str | None = None,
    group_cap: GpuEq | Fraction | int | str | None = None,
) -> Limits:
    """Generous by default, so each test names only the limit it is about."""
    return Limits(
        max_gpueq=max_gpueq if isinstance(max_gpueq, GpuEq) else GpuEq(max_gpueq),
        max_units_per_container=units,
        max_containers=containers,
        allow_full_gpu=full,
        group=group,
        group_max_gpueq=(
            None
            if group_cap is None
            else group_cap
            if isinstance(group_cap, GpuEq)
            else GpuEq(group_cap)
        ),
    )


def gpus(n: int, user: str = "alice", **kw: object) -> Request:
    return Request(user=user, kind=RequestKind.GPUS, count=n, **kw)  # type: ignore[arg-type]


def mig(*profiles: str, user: str = "alice", **kw: object) -> Request:
    return Request(user=user, kind=RequestKind.MIG, profiles=profiles, **kw)  # type: ignore[arg-type]


def gpueq(x: GpuEq | Fraction | int | str, user: str = "alice", **kw: object) -> Request:
    amount = x if isinstance(x, GpuEq) else GpuEq(x)
    return Request(user=user, kind=RequestKind.GPUEQ, gpueq=amount, **kw)  # type: ignore[arg-type]


def cpu(user: str = "alice", **kw: object) -> Request:
    return Request(user=user, kind=RequestKind.CPU, **kw)  # type: ignore[arg-type]


def uuids(units: tuple[Unit, ...]) -> tuple[str, ...]:
    return tuple(u.uuid for u in units)


def with_preferred(request: Request, *preferred: str) -> Request:
    return replace(request, preferred_units=preferred)


def outcome(snapshot: Snapshot, request: Request, lim: Limits) -> tuple[str, ...] | RefusalReason:
    """The chosen UUIDs, or the refusal's reason: what table tests compare with literals."""
    try:
        return uuids(place(snapshot, request, lim).units)
    except Refusal as refusal:
        return refusal.reason


def refusal_of(snapshot: Snapshot, request: Request, lim: Limits) -> Refusal:
    try:
        placed = place(snapshot, request, lim)
    except Refusal as refusal:
        return refusal
    raise AssertionError(f"expected a refusal, got {uuids(placed.units)}")
