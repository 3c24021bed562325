"""The usage ledger (services/usage.py, store/usage.py) against a scenario computed by hand:
known allocation and release times, simulated power and energy counters, a MIG GPU, an
energy counter that restarts, and ds01d down for a while. Every expected figure is written out
below from the scenario in usage_world.py, not computed by the code under test."""

from __future__ import annotations

import sqlite3
from dataclasses import astuple
from pathlib import Path

import pytest

from ds01.inventory.sim import SimBackend
from ds01.model.inventory import Gpu
from ds01.services.usage import Reading, attribute, gpu_energy_j
from ds01.store import usage as store

from .usage_world import T0, UsageWorld, machine_yaml

H0, H1, H2 = int(T0), int(T0) + 3600, int(T0) + 7200


@pytest.fixture
def world(tmp_path: Path) -> UsageWorld:
    w = UsageWorld(tmp_path)
    w.scenario()
    return w


def rows(conn: sqlite3.Connection) -> dict[tuple[str, int], tuple[float, ...]]:
    return {
        (r[0], int(r[1])): tuple(float(x) for x in r[2:])
        for r in conn.execute(
            "SELECT user, bucket, gpueq_seconds, active_gpueq_seconds, idle_gpueq_seconds,"
            " energy_j, unmetered_gpueq_seconds FROM usage"
        )
    }


def test_each_allocation_gets_its_held_time_activity_and_energy_per_hour(
    world: UsageWorld,
) -> None:
    with world.db.transaction(immediate=False) as conn:
        got = rows(conn)
    want = {
        # alice, whole A100 from T0+3300: 300 s to S1 (active at 90 %), half of the counter's
        # 120 kJ; then 400 s until her release at T0+4000, judged by S1 (her last sample),
        # 2/3 of the power-estimated (250+350)/2 W × 600 s = 180 kJ (the counter restarted).
        ("alice", H0): (300, 300, 0, 60_000, 0),
        ("alice", H1): (400, 400, 0, 120_000, 0),
        # bob, 3g.40gb (3/7) from T0+3000: active at S1 (a process), idle at S2 and after;
        # 3/7 of the H100's 250 W × 600 s, then of 300 W × 600 s.
        ("bob", H0): (1800 / 7, 1800 / 7, 0, 450_000 / 7, 0),
        ("bob", H1): (1800 / 7, 0, 1800 / 7, 540_000 / 7, 0),
        # after the restart: only S3 → S4 (T0+7200 to T0+7800) counts.
        ("bob", H2): (1800 / 7, 0, 1800 / 7, 540_000 / 7, 0),
        # carol, 2g.20gb (2/7) from T0+3700 to T0+3900, between two samples: judged by S1.
        ("carol", H1): (400 / 7, 0, 400 / 7, 120_000 / 7, 0),
    }
    assert got.keys() == want.keys()
    for key, values in want.items():
        assert got[key] == pytest.approx(values), key


def test_the_machine_hours_show_the_gap_and_the_unallocated_energy(world: UsageWorld) -> None:
    with world.db.transaction(immediate=False) as conn:
        got = {
            int(r[0]): tuple(float(x) for x in r[1:])
            for r in conn.execute(
                "SELECT bucket, sampled_seconds, capacity_gpueq_seconds, energy_j,"
                " unallocated_energy_j FROM usage_machine"
            )
        }
    # capacity: 1 + 3/7 + 2/7 = 12/7 gpueq over 600 s; ds01d was down T0+4200 to T0+7200,
    # so no hour has more than the 600 s its samples covered.
    assert got == {
        H0: pytest.approx((600, 7200 / 7, 270_000, 1_020_000 / 7)),
        H1: pytest.approx((600, 7200 / 7, 360_000, 1_020_000 / 7)),
        H2: pytest.approx((600, 7200 / 7, 240_000, 1_140_000 / 7)),
    }


def test_totals_by_user_are_the_sums_since_the_ledger_began(world: UsageWorld) -> None:
    with world.db.transaction(immediate=False) as conn:
        totals = store.totals_by_user(conn)
    assert {user: astuple(t) for user, t in totals.items()} == {
        "alice": pytest.approx((700, 700, 180_000)),
        "bob": pytest.approx((5400 / 7, 1800 / 7, 1_530_000 / 7)),
        "carol": pytest.approx((400 / 7, 0, 120_000 / 7)),
    }
    assert world.ledger.totals_by_user().keys() == {"alice", "bob", "carol"}


def test_sums_by_group_and_over_a_range(world: UsageWorld) -> None:
    with world.db.transaction(immediate=False) as conn:
        by_group = store.summed(conn, T0, T0 + 86400, by="group")
        first_hour = store.summed(conn, T0 + 1, T0 + 3600)  # start rounds down to its hour
        bob_only = store.summed(conn, T0, T0 + 86400, user="bob")
    assert [(r.key, r.allocations, r.containers) for r in by_group] == [
        ("vision", 2, 2),
        ("nlp", 1, 1),
    ]
    vision = by_group[0]
    assert (vision.gpueq_seconds, vision.energy_joules) == pytest.approx((5800 / 7, 1_650_000 / 7))
    assert [(r.key, r.gpueq_seconds) for r in first_hour] == [
        ("alice", 300),
        ("bob", pytest.approx(1800 / 7)),
    ]
    assert [r.key for r in bob_only] == ["bob"]


def test_a_second_pass_on_the_same_sample_adds_nothing(world: UsageWorld) -> None:
    sample = world.backend.sample()
    world.ledger.observe(sample, T0 + 8400)
    assert world.ledger.observe(sample, T0 + 8500) == 0
    with world.db.transaction(immediate=False) as conn:
        assert store.totals_by_user(conn)["bob"].gpueq_seconds == pytest.approx(
            5400 / 7 + 600 * 3 / 7
        )


def test_an_interval_longer_than_max_gap_is_not_counted(tmp_path: Path) -> None:
    w = UsageWorld(tmp_path)
    w.mig(w.bob, T0, "sweep", "3g.40gb")
    w.sample(T0, util0=0, power0=100, energy0_mj=0, power1=200)
    assert w.sample(T0 + 1500, util0=0, power0=100, energy0_mj=0, power1=200) == 0  # > 1000 s
    assert w.sample(T0 + 1600, util0=0, power0=100, energy0_mj=0, power1=200) == 1
    with w.db.transaction(immediate=False) as conn:
        assert store.totals_by_user(conn)["bob"].gpueq_seconds == pytest.approx(100 * 3 / 7)


def test_a_clock_step_moves_the_baseline_with_it(tmp_path: Path) -> None:
    w = UsageWorld(tmp_path)
    w.whole_gpu(w.alice, T0, "train")
    w.sample(T0 + 100, util0=50, power0=100, energy0_mj=0, power1=200)
    w.ledger.clock_stepped(3000.0)  # the clock watch moved every stored time by +3000 s
    w.sample(T0 + 3160, util0=50, power0=100, energy0_mj=6_000_000, power1=200)
    with w.db.transaction(immediate=False) as conn:
        alice = store.totals_by_user(conn)["alice"]
    assert (alice.gpueq_seconds, alice.energy_joules) == pytest.approx((60, 6000))


def test_a_gpu_without_energy_or_power_is_unmetered(tmp_path: Path) -> None:
    w = UsageWorld(tmp_path)
    w.whole_gpu(w.alice, T0, "train")
    w.sample(T0 + 100, util0=50, power0=None, energy0_mj=None, power1=None)
    w.sample(T0 + 200, util0=50, power0=None, energy0_mj=None, power1=None)
    with w.db.transaction(immediate=False) as conn:
        assert rows(conn) == {("alice", H0): (100, 100, 0, 0, 100)}


def test_an_interval_across_an_hour_is_split_by_time(tmp_path: Path) -> None:
    path = tmp_path / "m.yaml"
    path.write_text(machine_yaml(util0=0, power0=None, energy0_mj=0, power1=None))
    before = SimBackend(path).sample()
    path.write_text(machine_yaml(util0=0, power0=None, energy0_mj=200_000, power1=None))
    after = SimBackend(path).sample()
    _, machine = attribute(Reading(T0 - 50, before), Reading(T0 + 150, after), [])
    assert [(m.bucket, m.sampled_seconds, m.energy_joules) for m in machine] == [
        (H0 - 3600, 50, pytest.approx(50.0)),
        (H0, 150, pytest.approx(150.0)),
    ]


@pytest.mark.parametrize(
    ("before", "after", "want"),
    [
        pytest.param((100, 5_000), (300, 65_000), 60.0, id="the counter's delta wins over power"),
        pytest.param((100, 65_000), (300, 5_000), 200.0 * 10, id="a counter reset uses power"),
        pytest.param((None, None), (300, None), 300.0 * 10, id="one power reading alone"),
        pytest.param((None, None), (None, None), None, id="nothing reported: unknown"),
    ],
)
def test_gpu_energy(
    before: tuple[float | None, int | None],
    after: tuple[float | None, int | None],
    want: float | None,
) -> None:
    def gpu(power: float | None, energy: int | None) -> Gpu:
        return Gpu(0, "GPU-x", "A100", 40960, False, power_w=power, energy_mj=energy)

    assert gpu_energy_j(gpu(*before), gpu(*after), 10.0) == want


def test_a_release_stamped_after_the_passs_clock_reading_is_counted_to_its_end(
    tmp_path: Path,
) -> None:
    """A release can commit between the pass reading the clock and reading the database: its
    time after the reading belongs to the next interval, not to nobody."""
    w = UsageWorld(tmp_path)
    alloc = w.whole_gpu(w.alice, T0, "train")
    w.sample(T0 + 100, util0=50, power0=100, energy0_mj=None, power1=None)
    w.release(w.alice, alloc, T0 + 250)
    w.sample(T0 + 200, util0=50, power0=100, energy0_mj=None, power1=None)
    w.sample(T0 + 300, util0=50, power0=100, energy0_mj=None, power1=None)
    with w.db.transaction(immediate=False) as conn:
        assert store.totals_by_user(conn)["alice"].gpueq_seconds == pytest.approx(150)


def test_a_unit_missing_from_the_sample_is_neither_active_nor_idle(tmp_path: Path) -> None:
    w = UsageWorld(tmp_path)
    w.mig(w.carol, T0, "probe", "2g.20gb")
    w.sample(T0 + 100, util0=0, power0=None, energy0_mj=None, power1=350)
    # The 2g.20gb instance is gone from the next sample (MIG reconfigured under it).
    w.sample(T0 + 200, util0=0, power0=None, energy0_mj=None, power1=350, with_2g=False)
    with w.db.transaction(immediate=False) as conn:
        # 100 s × 2/7 held, activity unknown; 2/7 of the H100's 350 W × 100 s.
        assert rows(conn) == {("carol", H0): pytest.approx((200 / 7, 0, 0, 10_000, 0))}
