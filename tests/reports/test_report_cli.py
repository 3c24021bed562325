"""`ds01 report usage` end to end: a real ds01d over a state database whose usage ledger holds
the hand-computed scenario (usage_world.py; its figures are written out in
test_usage_ledger.py), asked by the real CLI as root (an admin) and as real Unix users."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from ds01.cli.report_cmd import parse_when
from support import Daemon, Users, as_user, short_tmp

from .usage_world import CONFIG, UsageWorld

# The scenario runs from T0 = 2027-01-15 08:00 UTC; ranges are given with their offset.
RANGE = ["--from", "2027-01-15T08:00+00:00", "--to", "2027-01-15T11:00+00:00"]
GRID = "report:\n  grid_intensity_g_per_kwh: 250\n"


class World:
    def __init__(self, d: Daemon, alice: str, bob: str, carol: str) -> None:
        self.d, self.alice, self.bob, self.carol = d, alice, bob, carol

    def report(self, *args: str, user: str | None = None) -> dict[str, object]:
        r = self.d.cli("report", "usage", *RANGE, "--format", "json", *args, user=user)
        assert r.returncode == 0, r.stderr
        out: dict[str, object] = json.loads(r.stdout)
        return out


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    users = Users()
    base = short_tmp()
    try:
        alice, bob, carol = (users.add() for _ in range(3))
        (base / "state").mkdir()
        ledger = UsageWorld(base / "state", (alice, bob, carol))
        ledger.scenario()
        ledger.db.close()
        config = CONFIG.format(alice=alice, bob=bob, carol=carol) + GRID
        d = Daemon(base, config, ledger.machine, None)
        d.start()
        try:
            yield World(d, alice, bob, carol)
        finally:
            d.stop()
    finally:
        users.cleanup()
        shutil.rmtree(base, ignore_errors=True)


def rows(report: dict[str, object]) -> dict[str, dict[str, float]]:
    return {r["key"]: r for r in report["rows"]}  # type: ignore[index, union-attr]


def test_an_admin_sees_every_user_with_the_hand_computed_figures(world: World) -> None:
    r = world.report()
    got = rows(r)
    assert list(got) == [world.bob, world.alice, world.carol]  # most GPU hours first
    # alice: 700 gpueq·s, all active; 180 kJ. bob: 5400/7 s, 1800/7 active, 3600/7 idle;
    # 1,530,000/7 J. carol: 400/7 s, idle; 120,000/7 J. CO₂ at 250 g/kWh.
    want = {
        world.alice: (700 / 3600, 700 / 3600, 0.0, 0.05, 0.0125, 1),
        world.bob: (
            5400 / 7 / 3600,
            1800 / 7 / 3600,
            2 / 3,
            1_530_000 / 7 / 3_600_000,
            1_530_000 / 7 / 3_600_000 * 0.25,
            1,
        ),
        world.carol: (400 / 7 / 3600, 0.0, 1.0, 120_000 / 7 / 3_600_000, 0.0047619 * 0.25, 1),
    }
    for user, (hours, active, idle_share, kwh, co2, containers) in want.items():
        f = got[user]
        assert (f["gpu_hours"], f["active_gpu_hours"], f["idle_share"]) == pytest.approx(
            (hours, active, idle_share)
        ), user
        assert (f["energy_kwh"], f["co2_kg"]) == pytest.approx((kwh, co2), rel=1e-4), user
        assert f["containers"] == containers
    assert r["scope"] == "all" and r["grid_intensity_g_per_kwh"] == 250
    # The machine: 3 × 600 s sampled (ds01d was "down" for 50 minutes), capacity 12/7 gpueq,
    # 870 kJ in all, of which 3,180,000/7 J charged to nobody.
    m = r["machine"]
    assert isinstance(m, dict)
    assert (m["sampled_hours"], m["capacity_gpu_hours"]) == pytest.approx((0.5, 3 * 1200 / 7 / 600))
    assert (m["energy_kwh"], m["unallocated_energy_kwh"]) == pytest.approx(
        (870_000 / 3_600_000, 3_180_000 / 7 / 3_600_000)
    )


def test_by_group(world: World) -> None:
    got = rows(world.report("--by", "group"))
    assert list(got) == ["vision", "nlp"]
    assert (got["vision"]["gpu_hours"], got["vision"]["energy_kwh"]) == pytest.approx(
        (5800 / 7 / 3600, 1_650_000 / 7 / 3_600_000)
    )


def test_a_user_sees_only_their_own_usage(world: World) -> None:
    r = world.report(user=world.bob)
    assert r["scope"] == "own" and r["machine"] is None
    assert list(rows(r)) == [world.bob]
    r = world.d.cli("report", "usage", *RANGE, "--user", world.alice, user=world.bob)
    assert r.returncode == 1
    assert "you can only see your own usage" in r.stderr


def test_table_markdown_and_csv(world: World) -> None:
    t = world.d.cli("report", "usage", *RANGE)
    assert t.returncode == 0, t.stderr
    alice_line = next(line for line in t.stdout.splitlines() if world.alice in line)
    # 0.19 GPU h, 0.19 active, 0 % idle, 0.05 kWh, 0.01 kg CO₂ (0.0125), 1 container.
    cells = [c.strip() for c in alice_line.split("│")[2:8]]
    assert cells == ["0.19", "0.19", "0%", "0.05", "0.01", "1"]
    assert "CO₂ at 250 g/kWh" in t.stdout and "0.5 h sampled" in t.stdout
    md = world.d.cli("report", "usage", *RANGE, "--format", "md", user=world.carol)
    assert md.returncode == 0, md.stderr
    assert f"| {world.carol} | 0.02 | 0.00 | 100% | 0.00 | 0.00 | 1 |" in md.stdout
    assert world.alice not in md.stdout
    csv = world.d.cli("report", "usage", *RANGE, "--format", "csv")
    lines = csv.stdout.splitlines()
    assert lines[0] == (
        "user,gpu_hours,active_gpu_hours,idle_gpu_hours,unknown_gpu_hours,idle_share,"
        "energy_kwh,co2_kg,unmetered_gpu_hours,allocations,containers"
    )
    assert f"{world.alice},0.194444,0.194444,0,0,0,0.05,0.0125,0,1,1" in lines


def test_the_chart_names_every_user(world: World) -> None:
    out = short_tmp()
    try:
        r = world.d.cli("report", "usage", *RANGE, "--chart", str(out / "usage.svg"))
        assert r.returncode == 0, r.stderr
        svg = (out / "usage.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        for name in (world.alice, world.bob, world.carol):
            assert name in svg
        r = world.d.cli("report", "usage", *RANGE, "--chart", str(out / "usage.png"))
        assert r.returncode == 0, r.stderr
        assert (out / "usage.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        pytest.param(
            ["--from", "2027-01-16", "--to", "2027-01-15"],
            2,
            "--from is not before --to",
            id="from after to",
        ),
        pytest.param(["--from", "last tuesday"], 2, "neither a date nor an age", id="bad date"),
        pytest.param(["--format", "xml"], 2, "xml", id="unknown format"),
        pytest.param(["--by", "lab"], 2, "lab", id="unknown grouping"),
        pytest.param([*RANGE, "--chart", "usage.pdf"], 2, "must end in .png or .svg", id="pdf"),
        pytest.param(
            [*RANGE, "--chart", "/nonexistent/usage.png"], 2, "does not exist", id="no such dir"
        ),
        pytest.param([*RANGE, "--chart", "/root/usage.png"], 2, "cannot write", id="unwritable"),
    ],
)
def test_bad_input_is_refused_clearly(world: World, args: list[str], code: int, said: str) -> None:
    r = as_user(world.bob, ["ds01", "report", "usage", *args], env=world.d.env)
    assert r.returncode == code, r.stdout + r.stderr
    assert said in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize(
    ("text", "option", "want"),
    [
        pytest.param("2027-01-15", "--from", datetime(2027, 1, 15), id="a date starts at midnight"),
        pytest.param("2027-01-15", "--to", datetime(2027, 1, 16), id="--to a date: the whole day"),
        pytest.param("2027-01-15 14:30", "--to", datetime(2027, 1, 15, 14, 30), id="date and time"),
        pytest.param(
            "2027-01-15T08:00+00:00",
            "--from",
            datetime(2027, 1, 15, 8, tzinfo=UTC),
            id="an offset is honoured",
        ),
    ],
)
def test_report_bounds(text: str, option: str, want: datetime) -> None:
    now = 1_800_000_000.0
    assert parse_when(text, option, now, end_of_day=option == "--to") == want.timestamp()


def test_report_bounds_as_ages_and_now() -> None:
    now = 1_800_000_000.0
    assert parse_when("30d", "--from", now) == now - 30 * 86400
    assert parse_when("now", "--to", now, end_of_day=True) == now
