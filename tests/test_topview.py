"""`ds01 top`'s admin sections and its fitting to a short screen, from literal API answers
(cli/topview.py, cli/topscreen.py): what each alert says, the users' rows, and which sections
give way first. The end-to-end checks, with a real ds01d and real users, are in
tests/daemon/test_top.py."""

from __future__ import annotations

import re
from typing import Any

import pytest

from ds01.cli.topscreen import screen
from ds01.cli.topview import alerts, snapshot, users
from ds01.timetext import clock

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def unit(name: str, **kw: Any) -> dict[str, Any]:
    return {
        "uuid": f"GPU-{name}0000000-0000",
        "name": name,
        "model": "NVIDIA H100 80GB HBM3",
        "profile": None,
        "memory_total_mib": 81559,
        "memory_used_mib": 0,
        "utilization_pct": 0.0,
        "gpueq_exact": "1",
        "processes": [],
        **kw,
    }


def status(*units: dict[str, Any]) -> dict[str, Any]:
    return {
        "backend": "sim",
        "sampled_at": "2027-01-15T08:00:00+00:00",
        "units": list(units),
        "free_gpueq": 1.0,
        "total_gpueq": float(len(units)),
        "warnings": [],
    }


def alloc(id_: int, user: str, state: str, gpueq: str = "1", **kw: Any) -> dict[str, Any]:
    return {
        "id": id_,
        "user": user,
        "container": f"c{id_}",
        "state": state,
        "units": [{}] * int(kw.pop("n_units", 1)),
        "gpueq_exact": gpueq,
        **kw,
    }


HEALTHY = {
    "docker": "up",
    "loops": {"sampler": {"last_ok": NOW - 1, "failing": None, "interval_s": 1.0}},
    "invariants": [],
    "restart_needed": [],
}


@pytest.mark.parametrize(
    ("health", "host", "orphans", "st", "allocs", "expected"),
    [
        pytest.param(HEALTHY, [], [], status(unit("0")), [], [], id="a healthy idle server"),
        pytest.param(
            {**HEALTHY, "docker": "down"}, [], [], status(unit("0")), [],
            [("docker", "Docker engine unreachable: containers cannot start or stop")],
            id="Docker unreachable",
        ),
        pytest.param(
            {**HEALTHY, "loops": {"sampler": {"last_ok": NOW - 14, "interval_s": 1.0}}},
            [], [], status(unit("0")), [],
            [("sampler_stale", "GPU sample stale: last good sample 14 s ago")],
            id="a sample older than three intervals and 10 s",
        ),
        pytest.param(
            {**HEALTHY, "loops": {"sampler": {"last_ok": NOW - 12, "interval_s": 1.0}}},
            [], [], status(unit("0")), [], [],
            id="a sample 12 s old with a 1 s interval is not stale yet",
        ),
        pytest.param(
            {**HEALTHY, "loops": {**HEALTHY["loops"], "reconcile": {"failing": "engine: 500"}},
             "invariants": ["I5: allocation 3 is active but released"],
             "restart_needed": ["gate.socket"]},
            [], [], status(unit("0")), [],
            [("loop_failing", "loop reconcile failing: engine: 500"),
             ("invariant", "invariant broken: I5: allocation 3 is active but released"),
             ("restart_needed", "restart ds01d to apply: gate.socket")],
            id="ds01d's own trouble, in that order",
        ),
        pytest.param(
            HEALTHY,
            [{"pid": 4242, "name": "python", "user": "carol", "uid": 1003, "gpu_indices": [2],
              "cause": "no_grant", "action": "sigterm_sent"},
             {"pid": 77, "name": "train", "user": None, "uid": 1009, "gpu_indices": [0, 1],
              "cause": "grant_ended", "action": None},
             {"pid": 5, "name": "ok", "user": "dave", "uid": 1004, "gpu_indices": [3],
              "cause": None, "action": None}],
            [], status(unit("0")), [],
            [("host_process", "GPU 2: pid 4242 python (carol), no grant, sigterm_sent"),
             ("host_process", "GPU 0,1: pid 77 train (uid 1009), grant ended")],
            id="host GPU processes without a grant, not those with one",
        ),
        pytest.param(
            HEALTHY, [],
            [{"docker_name": "exp1", "owner": "bob",
              "problem": "running without a live allocation"}],
            status(unit("0")), [],
            [("orphan", "container exp1 (bob): running without a live allocation")],
            id="a container running without an allocation",
        ),
        pytest.param(
            HEALTHY, [], [],
            status(
                unit("0", state="active", user="alice",
                     processes=[{"foreign": True, "owner": "carol"},
                                {"foreign": False, "owner": "alice"}]),
                unit("1", busy=True, processes=[{"foreign": True, "owner": "erin"}]),
                unit("2", drained=True, drain_reason="fan noise"),
            ),
            [],
            [("outside_process",
              "unit 0 held by alice: 1 process(es) outside ds01 (carol)"),
             ("drained", "unit 2 drained: fan noise")],
            id="outside processes on a held unit (not a free one) and a drained unit",
        ),
        pytest.param(
            HEALTHY, [], [], status(unit("0")),
            [alloc(7, "bob", "active", n_units=2,
                   lifecycle={"idle_since": "2027-01-15T07:15:00+00:00",
                              "stop_at": "2027-01-15T09:15:00+00:00"})],
            [("idle", "alloc 7 bob (c7): 2 unit(s) idle 45 min, stops TIME")],
            id="an idle allocation with its stop",
        ),
    ],
)  # fmt: skip
def test_alerts(
    health: dict[str, Any],
    host: list[dict[str, Any]],
    orphans: list[dict[str, Any]],
    st: dict[str, Any],
    allocs: list[dict[str, Any]],
    expected: list[tuple[str, str]],
) -> None:
    got = alerts(st, allocs, health, host, orphans, NOW)
    stop = clock("2027-01-15T09:15:00+00:00", NOW)  # in the local time zone, as shown
    assert [(a["kind"], a["message"].replace(stop, "TIME")) for a in got] == expected


def test_users_sum_exact_gpueq_and_count_states_and_queue() -> None:
    allocs = [
        alloc(1, "alice", "active", "3/7", lifecycle={"idle_since": "2027-01-15T07:00:00Z"}),
        alloc(2, "alice", "held", "4/7"),
        alloc(3, "bob", "reserved", "1/7"),
    ]
    queue = {
        "entries": [
            {"user": "carol", "position": 1},
            {"user": None, "position": 2},  # hidden: not counted to anyone
            {"user": "bob", "position": None},  # ended: not waiting
        ]
    }
    assert users(status(), allocs, queue) == [
        {"user": "alice", "gpueq": 1.0, "gpueq_exact": "1", "units": 2, "active": 1,
         "held": 1, "reserved": 0, "idle": 1, "queued": 0},
        {"user": "bob", "gpueq": 0.1429, "gpueq_exact": "1/7", "units": 1, "active": 0,
         "held": 0, "reserved": 1, "idle": 0, "queued": 0},
        {"user": "carol", "gpueq": 0.0, "gpueq_exact": "0", "units": 0, "active": 0,
         "held": 0, "reserved": 0, "idle": 0, "queued": 1},
    ]  # fmt: skip


def test_a_user_gets_no_admin_sections_even_with_health_given() -> None:
    top = snapshot({"user": "bob", "admin": False}, status(unit("0")), [], None, [], HEALTHY)
    assert (top["health"], top["users"], top["alerts"]) == (None, None, None)


def admin_top(n_units: int, n_events: int) -> dict[str, Any]:
    events = [
        {"ts": "2027-01-15T08:00:00+00:00", "kind": "alloc", "action": "reserved",
         "user": "alice", "message": f"event {i}"}
        for i in range(n_events)
    ]  # fmt: skip
    return snapshot(
        {"user": "root", "admin": True},
        status(*(unit(str(i)) for i in range(n_units))),
        [alloc(1, "alice", "active")],
        {"entries": [], "waiting": 0},
        events,
        {**HEALTHY, "docker": "down"},
        [],
        [],
        NOW,
    )


@pytest.mark.parametrize(
    ("n_units", "height", "sections", "more"),
    [
        pytest.param(4, 40, ["Alerts (1)", "Users", "Recent events"], [],
                     id="everything fits a tall screen"),
        pytest.param(4, 24, ["Alerts (1)", "Users", "Recent events"], ["… 5 more events"],
                     id="events give way first"),
        pytest.param(4, 14, ["Alerts (1)"], [],
                     id="then users and events go whole"),
        pytest.param(19, 24, [], [],
                     id="19 units fill 80x24: every other section goes"),
        pytest.param(30, 24, [], ["… 12 more units (j or ↓: more)"],
                     id="units go last, saying how many"),
    ],
)  # fmt: skip
def test_the_live_screen_fits_its_height(
    n_units: int, height: int, sections: list[str], more: list[str]
) -> None:
    text = screen(admin_top(n_units, 10), 80, height, now=NOW)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= height
    assert max(len(line) for line in lines) <= 80
    titles = [line for line in lines if line in ("Alerts (1)", "Users", "Recent events")]
    assert titles == sections
    assert [line for line in lines if line.startswith("… ")] == more


def test_once_shows_every_unit_whatever_the_height() -> None:
    text = screen(admin_top(56, 10), 80, None, now=NOW)
    names = [m.group(1) for line in text.splitlines() if (m := re.match(r"(\d+) +H100 ", line))]
    assert names == [str(i) for i in range(56)]
    assert "more units" not in text


def test_the_live_screen_scrolls_the_units() -> None:
    text = screen(admin_top(30, 10), 80, 24, now=NOW, skip=5)
    lines = text.rstrip("\n").split("\n")
    assert lines[2] == "GPU units (sim) from unit 5 (k or ↑: back)"
    names = [m.group(1) for line in lines if (m := re.match(r"(\d+) +H100 ", line))]
    assert names == [str(i) for i in range(5, 23)]
    assert lines[-1] == "… 7 more units (j or ↓: more)"
    # Past the end: the last unit is the first shown.
    end = screen(admin_top(30, 10), 80, 24, now=NOW, skip=99)
    assert "from unit 29 " in end and "more units" not in end
