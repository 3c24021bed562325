"""Properties of place() over random machines, holdings, limits and requests (hypothesis).

Whatever the input, a successful placement never includes an allocated or drained unit, never
lists a unit twice, never breaks max_units_per_container, allow_full_gpu, max_gpueq or the
group cap, and gives what was asked; a refusal always carries a reason and three lines.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from fractions import Fraction
from typing import TypeVar

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ds01.errors import Refusal, RefusalReason
from ds01.model.allocation import AllocState
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.model.limits import Limits
from ds01.scheduler.facts import profile_of
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import Holding, Placement, Request, RequestKind, Snapshot

from .builders import A30, A100_40, A100_80, H100, H200, at, limits, machine

# Media-extension variants are in the mix so that exact matching is exercised: a request for
# 1g.10gb must never get a 1g.10gb+me unit, nor the other way round.
PROFILES = {
    A100_40: ("1g.5gb", "1g.5gb+me", "2g.10gb", "3g.20gb", "4g.20gb", "7g.40gb"),
    A100_80: ("1g.10gb", "1g.10gb+me", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    H100: ("1g.10gb", "1g.10gb+me", "1g.20gb", "2g.20gb", "3g.40gb", "4g.40gb", "7g.80gb"),
    H200: ("1g.18gb", "1g.18gb+me", "1c.3g.71gb", "2g.35gb", "3g.71gb", "7g.141gb"),
    A30: ("1g.6gb", "1g.6gb+me", "2g.12gb", "2g.12gb+me", "1c.2g.12gb", "4g.24gb"),
}
ALL_PROFILES = sorted({p for ps in PROFILES.values() for p in ps} | {"5g.50gb"})
USERS = ("alice", "bob", "carol")
LIVE = (AllocState.RESERVED, AllocState.ACTIVE, AllocState.HELD)
T = TypeVar("T")


# Strategies built once: building them inside a draw costs more than the draws themselves.
MODELS = st.sampled_from(sorted(PROFILES))
LAYOUTS = {m: st.lists(st.sampled_from(ps), min_size=1, max_size=4) for m, ps in PROFILES.items()}
NVLINKS = st.sampled_from([None, "nv-a", "nv-b"])
NUMAS = st.sampled_from([None, 0, 1])
FATES = st.sampled_from(["free", "free", "free", "drained", "held", "held"])
HOLDERS = st.tuples(
    st.sampled_from(USERS),
    st.sampled_from([None, "c1", "c2", "c3"]),
    st.sampled_from(LIVE),
    st.sampled_from([None, "phd"]),
    st.sampled_from([None, at("13:00"), at("15:30")]),
)
RELEASED = st.none() | st.integers(0, 11).map(lambda h: at(f"{h:02d}:00"))


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    m = machine()
    for _ in range(draw(st.integers(1, 6))):
        model = draw(MODELS)
        m.gpu(model, nvlink=draw(NVLINKS), numa=draw(NUMAS))
        if draw(st.booleans()):
            m.mig(*draw(LAYOUTS[model]))
    units = m.build()
    b = m.snapshot()
    for u in units:
        fate = draw(FATES)
        if fate == "drained":
            b.drain(u.uuid)
        elif fate == "held":
            user, container, state, group, until = draw(HOLDERS)
            b.hold(user, container, u.uuid, state=state, group=group, until=until)
        if (when := draw(RELEASED)) is not None:
            b.released(u.uuid, when)
    return b.build()


def fractions(max_num: int, min_num: int = 0) -> st.SearchStrategy[Fraction]:
    return st.builds(Fraction, st.integers(min_num, max_num), st.sampled_from([1, 2, 4, 7]))


def mostly(likely: st.SearchStrategy[T], rare: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """Draw from likely three times in four: generous inputs reach placement, odd ones still
    come up."""
    return st.one_of(likely, likely, likely, rare)


LIMITS = st.builds(
    limits,
    mostly(fractions(28, 4), fractions(4)),
    units=mostly(st.integers(2, 4), st.integers(0, 2)),
    containers=mostly(st.integers(3, 5), st.integers(0, 2)),
    full=mostly(st.just(True), st.just(False)),
    group=st.sampled_from([None, "phd"]),
    group_cap=st.none() | fractions(40),
)
KINDS = st.sampled_from(list(RequestKind))
COUNTS = mostly(st.integers(1, 3), st.integers(-1, 4))
ANY_PROFILES = st.lists(st.sampled_from(ALL_PROFILES), max_size=3)
AMOUNTS = mostly(fractions(12, 1), fractions(20)).map(GpuEq)
CONTAINERS = st.sampled_from([None, "c1", "new"])
EXISTING = mostly(st.just(True), st.just(False))


@st.composite
def requests(draw: st.DrawFn, uuids: list[str], profiles: list[str]) -> Request:
    kind = draw(KINDS)
    mig_profiles: tuple[str, ...] = ()
    if kind is RequestKind.MIG:
        # Mostly profiles this machine has (so placement runs), sometimes any name at all.
        names = ANY_PROFILES
        if profiles:
            names = mostly(st.lists(st.sampled_from(profiles), min_size=1, max_size=2), names)
        mig_profiles = tuple(draw(names))
    return Request(
        user=draw(st.sampled_from(USERS)),
        kind=kind,
        count=draw(COUNTS) if kind is RequestKind.GPUS else 0,
        profiles=mig_profiles,
        gpueq=draw(AMOUNTS) if kind is RequestKind.GPUEQ else None,
        container=draw(CONTAINERS),
        preferred_units=tuple(draw(st.lists(st.sampled_from(uuids), max_size=3))),
        existing_container=draw(EXISTING),
    )


def profile_name(unit: Unit) -> str | None:
    """The unit's canonical MIG profile name, as a request names it."""
    p = profile_of(unit)
    return p.name if p is not None else None


@st.composite
def cases(draw: st.DrawFn) -> tuple[Snapshot, Request, Limits]:
    snap = draw(snapshots())
    profiles = sorted({p for us in snap.units if (p := profile_name(us.unit)) is not None})
    request = draw(requests([us.unit.uuid for us in snap.units], profiles))
    return snap, request, draw(LIMITS)


def held_by(snap: Snapshot, keep: Callable[[Holding], bool]) -> GpuEq:
    return GpuEq.total(h.gpueq for h in snap.holdings if h.state in LIVE and keep(h))


def assert_valid(snap: Snapshot, request: Request, lim: Limits, placed: Placement) -> None:
    chosen = [u.uuid for u in placed.units]
    state = {us.unit.uuid: us for us in snap.units}
    taken = {u.uuid for h in snap.holdings if h.state in LIVE for u in h.units}
    assert len(chosen) == len(set(chosen)), "a unit twice"
    for uuid in chosen:
        assert uuid in state, "a unit the machine does not have"
        assert state[uuid].alloc_id is None and uuid not in taken, "an allocated unit"
        assert not state[uuid].drained, "a drained unit"

    if request.kind is RequestKind.CPU:
        assert placed.units == ()
        return
    assert len(placed.units) <= lim.max_units_per_container
    if not lim.allow_full_gpu:
        assert all(u.kind is UnitKind.MIG for u in placed.units)
    mine = held_by(snap, lambda h: h.user == request.user)
    assert mine + placed.gpueq <= lim.max_gpueq
    if lim.group is not None and lim.group_max_gpueq is not None:
        group = held_by(snap, lambda h: h.group == lim.group)
        assert group + placed.gpueq <= lim.group_max_gpueq

    if request.kind is RequestKind.GPUS:
        assert len(placed.units) == request.count
        assert all(u.kind is UnitKind.GPU for u in placed.units)
    elif request.kind is RequestKind.MIG:
        assert Counter(profile_name(u) for u in placed.units) == Counter(request.profiles)
    else:
        assert request.gpueq is not None
        assert placed.gpueq >= request.gpueq


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_placement_invariants(case: tuple[Snapshot, Request, Limits]) -> None:
    snap, request, lim = case
    try:
        placed = place(snap, request, lim)
    except Refusal as refusal:
        event(f"refused: {request.kind} {refusal.reason}")
        assert refusal.what and refusal.why and refusal.fix
        assert "{" not in " ".join(refusal.lines())  # every template field was filled
        return

    event(f"placed: {request.kind}")
    assert_valid(snap, request, lim, placed)


@settings(max_examples=50, deadline=None)
@given(cases())
def test_place_is_deterministic(case: tuple[Snapshot, Request, Limits]) -> None:
    snap, request, lim = case

    def run() -> object:
        try:
            return place(snap, request, lim).units
        except Refusal as refusal:
            return refusal.reason, refusal.lines()

    assert run() == run()


@st.composite
def generous_cases(draw: st.DrawFn) -> tuple[Snapshot, Request, Limits]:
    """Limits no request here can break, and well-formed requests for profiles the machine has:
    the only refusal left is capacity, so placement itself gets exercised."""
    snap = draw(snapshots())
    profiles = sorted({p for us in snap.units if (p := profile_name(us.unit)) is not None})
    kinds = [RequestKind.GPUS, RequestKind.GPUEQ] + ([RequestKind.MIG] * 2 if profiles else [])
    kind = draw(st.sampled_from(kinds))
    request = Request(
        user=draw(st.sampled_from(USERS)),
        kind=kind,
        count=draw(st.integers(1, 3)) if kind is RequestKind.GPUS else 0,
        profiles=(
            tuple(draw(st.lists(st.sampled_from(profiles), min_size=1, max_size=3)))
            if kind is RequestKind.MIG
            else ()
        ),
        gpueq=GpuEq(draw(fractions(12, 1))) if kind is RequestKind.GPUEQ else None,
        preferred_units=tuple(
            draw(st.lists(st.sampled_from([us.unit.uuid for us in snap.units]), max_size=3))
        ),
    )
    full = kind is RequestKind.GPUS or draw(st.booleans())
    lim = limits(1000, units=draw(st.integers(3, 8)), containers=1000, full=full)
    return snap, request, lim


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(generous_cases())
def test_generous_limits_refuse_only_when_free_units_cannot_serve(
    case: tuple[Snapshot, Request, Limits],
) -> None:
    snap, request, lim = case
    taken = {u.uuid for h in snap.holdings if h.state in LIVE for u in h.units}
    free = [us.unit for us in snap.units if us.unit.uuid not in taken and not us.drained]
    try:
        placed = place(snap, request, lim)
    except Refusal as refusal:
        event(f"refused: {request.kind} {refusal.reason}")
        # Generous limits leave capacity, and the per-container unit limit (which even an
        # empty machine may need more units than), and whole GPUs for gpueq without them.
        allowed = {RefusalReason.NO_CAPACITY, RefusalReason.MAX_UNITS_PER_CONTAINER}
        if not lim.allow_full_gpu:
            allowed.add(RefusalReason.FULL_GPU_NOT_ALLOWED)
            free = [u for u in free if u.kind is UnitKind.MIG]
        assert refusal.reason in allowed
        if refusal.reason is not RefusalReason.NO_CAPACITY:
            return
        # A capacity refusal must be true: the free units really cannot serve the request.
        if request.kind is RequestKind.GPUS:
            assert sum(u.kind is UnitKind.GPU for u in free) < request.count
        elif request.kind is RequestKind.MIG:
            have = Counter(profile_name(u) for u in free)
            assert any(have[p] < n for p, n in Counter(request.profiles).items())
        else:
            assert request.gpueq is not None
            best = sorted((u.gpueq for u in free), reverse=True)[: lim.max_units_per_container]
            assert GpuEq.total(best) < request.gpueq
        return
    event(f"placed: {request.kind}")
    assert_valid(snap, request, lim, placed)
