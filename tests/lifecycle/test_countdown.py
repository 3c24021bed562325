"""The lifecycle's pure decisions (lifecycle/activity.py, lifecycle/countdown.py): which signal
judges each kind of unit, and when the idle and runtime countdowns warn and stop. Expected
values are literals, never computed with the code under test."""

from __future__ import annotations

import pytest

from ds01.lifecycle.activity import Signal, allocation_activity, unit_activity
from ds01.lifecycle.countdown import Stop, Warn, keepalive_bound, observe, plan, stages
from ds01.model.activity import ActivityRecord, Countdown, WarningRecord
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Gpu, GpuProcess, MachineSample, MigDevice

MIG = "MIG-aaaa"
MIG2 = "MIG-bbbb"


def _mig_machine(
    parent_util: float | None, procs: tuple[GpuProcess, ...] = (), used: int | None = 0
) -> MachineSample:
    migs = (
        MigDevice(MIG, "1g.10gb", 7, 0, 9984, GpuEq.parse("1/7"), memory_used_mib=used),
        MigDevice(MIG2, "1g.10gb", 8, 0, 9984, GpuEq.parse("1/7"), memory_used_mib=0),
    )
    gpu = Gpu(0, "GPU-m", "NVIDIA H100", 81559, True, migs, utilization_pct=parent_util)
    return MachineSample(gpus=(gpu,), processes=procs)


def _whole(util: float | None, procs: tuple[GpuProcess, ...] = ()) -> MachineSample:
    return MachineSample(
        gpus=(Gpu(0, "GPU-w", "NVIDIA A100", 40960, False, utilization_pct=util),),
        processes=procs,
    )


@pytest.mark.parametrize(
    ("sample", "unit", "active", "signal"),
    [
        pytest.param(_mig_machine(100.0), MIG, False, Signal.NONE,
                     id="a MIG device without processes is idle though its GPU reports 100%"),
        pytest.param(_mig_machine(0.0, (GpuProcess(7, "GPU-m", 2048, "python", MIG),), 2048),
                     MIG, True, Signal.PROCESSES,
                     id="a MIG device with a process is active though its GPU reports 0%"),
        pytest.param(_mig_machine(None, (GpuProcess(7, "GPU-m", 2048, "python", MIG2),)),
                     MIG, False, Signal.NONE,
                     id="a process on another MIG device of the same GPU does not count"),
        pytest.param(_mig_machine(None, used=22), MIG, False, Signal.NONE,
                     id="the driver's 22 MiB on an empty MIG device is not use"),
        pytest.param(_mig_machine(None, used=2048), MIG, True, Signal.MEMORY,
                     id="2 GiB in use on a MIG device without a listed process is use"),
        pytest.param(_whole(3.0), "GPU-w", False, Signal.UTILIZATION,
                     id="a whole GPU below the threshold is idle"),
        pytest.param(_whole(5.0), "GPU-w", True, Signal.UTILIZATION,
                     id="a whole GPU at the threshold is active"),
        pytest.param(_whole(0.0, (GpuProcess(7, "GPU-w", 30000, "python", None),)), "GPU-w",
                     False, Signal.UTILIZATION,
                     id="a whole GPU at 0% is idle though a process holds memory on it"),
        pytest.param(_whole(None, (GpuProcess(7, "GPU-w", 300, "python", None),)), "GPU-w",
                     True, Signal.PROCESSES,
                     id="a whole GPU without utilization is judged by its processes"),
    ],
)  # fmt: skip
def test_each_kind_of_unit_is_judged_on_its_own_signal(
    sample: MachineSample, unit: str, active: bool, signal: Signal
) -> None:
    got = unit_activity(sample, 5.0)[unit]
    assert (got.active, got.signal) == (active, signal)


def test_an_allocation_is_idle_only_when_every_unit_is_and_unknown_is_not_idle() -> None:
    by_unit = unit_activity(_mig_machine(None, used=2048), 5.0)
    assert allocation_activity([MIG2], by_unit).active is False
    assert allocation_activity([MIG, MIG2], by_unit).active is True
    assert allocation_activity([MIG2, "MIG-gone"], by_unit).active is None


def test_stages_are_half_eighty_percent_and_warn_before_in_time_order() -> None:
    assert [(s.name, s.at) for s in stages(1000.0, 100, 10)] == [
        ("50%", 1050.0),
        ("80%", 1080.0),
        ("warn_before", 1090.0),
    ]
    # warn_before 20 s of 100 is the 80% moment: one warning.
    assert [(s.name, s.at) for s in stages(1000.0, 100, 20)] == [
        ("50%", 1050.0),
        ("warn_before", 1080.0),
    ]
    assert [s.name for s in stages(1000.0, 100, 0)] == ["50%", "80%"]


def _rec(idle_run: int = 0, idle_since: float | None = None) -> ActivityRecord:
    return ActivityRecord(1, active_since=900.0, runtime_from=900.0, idle_run=idle_run,
                          idle_since=idle_since)  # fmt: skip


def test_an_idle_run_starts_at_its_first_sample_and_activity_ends_it() -> None:
    r = observe(_rec(), False, "x", sample_at=1.0, now=1000.0)
    r = observe(r, False, "x", sample_at=2.0, now=1001.0)
    assert (r.idle_run, r.idle_since) == (2, 1000.0)
    assert observe(r, False, "x", sample_at=2.0, now=1002.0) == r  # the same sample again
    r = observe(r, None, "x", sample_at=3.0, now=1002.0)
    assert (r.idle_run, r.idle_since) == (0, None)  # unknown is not idle


def _plan(rec: ActivityRecord, done: list[WarningRecord], now: float, **kw: int | None) -> list:
    args: dict = {"idle_timeout_s": 100, "max_runtime_s": None, "idle_samples": 3,
                  "warn_before_s": 10} | kw  # fmt: skip
    return plan(rec, done=done, now=now, **args)


def test_no_countdown_before_idle_samples_idle_samples() -> None:
    assert _plan(_rec(idle_run=2, idle_since=1000.0), [], now=1099.0) == []


def test_a_due_stage_is_warned_once_and_stages_due_together_collapse_to_the_latest() -> None:
    rec = _rec(idle_run=3, idle_since=1000.0)
    (w,) = _plan(rec, [], now=1051.0)
    assert isinstance(w, Warn)
    assert (w.countdown, w.stage.name, w.deadline, w.skipped, w.last) == (
        Countdown.IDLE, "50%", 1100.0, (), False,
    )  # fmt: skip
    done = [WarningRecord(1, Countdown.IDLE, "50%", 1100.0, 1051.0, True)]
    assert _plan(rec, done, now=1060.0) == []
    (w,) = _plan(rec, done, now=1095.0)
    assert (w.stage.name, w.skipped, w.last, w.deadline) == ("warn_before", ("80%",), True, 1100.0)


def test_the_stop_waits_for_the_last_warning_and_comes_at_its_deadline() -> None:
    rec = _rec(idle_run=3, idle_since=1000.0)
    done = [
        WarningRecord(1, Countdown.IDLE, "50%", 1100.0, 1051.0, True),
        WarningRecord(1, Countdown.IDLE, "80%", 1100.0, 1081.0, True),
    ]
    (w,) = _plan(rec, done, now=1101.0)  # past the deadline, last warning not yet sent
    assert isinstance(w, Warn) and w.last and w.deadline == 1100.0  # sent in time (< LATE_S)
    done.append(WarningRecord(1, Countdown.IDLE, "warn_before", 1100.0, 1101.0, True))
    assert _plan(rec, done, now=1099.0) == []
    assert _plan(rec, done, now=1102.0) == [Stop(Countdown.IDLE, 1100.0, 1000.0, 100)]


def test_a_last_warning_sent_late_keeps_the_notice_it_promises() -> None:
    rec = _rec(idle_run=3, idle_since=1000.0)
    (w,) = _plan(rec, [], now=1500.0)  # ds01d was down through the whole countdown
    assert (w.stage.name, w.skipped, w.deadline) == ("warn_before", ("50%", "80%"), 1510.0)


def test_max_runtime_counts_from_the_allocation_start_whatever_the_activity() -> None:
    rec = _rec()  # active: no idle run
    (w,) = _plan(rec, [], now=960.0, idle_timeout_s=None, max_runtime_s=100)
    assert (w.countdown, w.stage.name, w.deadline) == (Countdown.RUNTIME, "50%", 1000.0)


def test_when_both_countdowns_are_due_the_earlier_stop_wins() -> None:
    rec = _rec(idle_run=3, idle_since=950.0)
    done = [
        WarningRecord(1, Countdown.IDLE, "warn_before", 1050.0, 1040.0, True),
        WarningRecord(1, Countdown.RUNTIME, "warn_before", 1000.0, 990.0, True),
        WarningRecord(1, Countdown.IDLE, "50%", 1050.0, 1000.0, True),
        WarningRecord(1, Countdown.IDLE, "80%", 1050.0, 1030.0, True),
        WarningRecord(1, Countdown.RUNTIME, "50%", 1000.0, 950.0, True),
        WarningRecord(1, Countdown.RUNTIME, "80%", 1000.0, 980.0, True),
    ]
    assert _plan(rec, done, now=1060.0, max_runtime_s=100) == [
        Stop(Countdown.RUNTIME, 1000.0, 900.0, 100)
    ]


# ---- keep-alive (issue 15 item 4) -----------------------------------------------------------

IDLE_SINCE_1000 = ActivityRecord(1, active_since=0.0, runtime_from=0.0, idle_run=3,
                                 idle_since=1000.0)  # fmt: skip


def _idle_plan(now: float, keep_until: float | None) -> list[Warn | Stop]:
    return plan(
        IDLE_SINCE_1000,
        idle_timeout_s=100,
        max_runtime_s=None,
        idle_samples=3,
        warn_before_s=10,
        done=[],
        now=now,
        keep_until=keep_until,
    )


def test_a_keep_alive_holds_the_idle_countdown_off_until_it_ends() -> None:
    # Without it, at 1060 the 50% warning (due at 1050) is sent for a stop at 1100.
    (warn,) = _idle_plan(1060.0, None)
    assert isinstance(warn, Warn) and (warn.stage.name, warn.deadline) == ("50%", 1100.0)
    # Kept alive until 1500: nothing at 1060, nor at 1540; the countdown starts at 1500.
    assert _idle_plan(1060.0, 1500.0) == []
    assert _idle_plan(1540.0, 1500.0) == []
    (warn,) = _idle_plan(1550.0, 1500.0)
    assert isinstance(warn, Warn) and (warn.stage.name, warn.start, warn.deadline) == (
        "50%",
        1500.0,
        1600.0,
    )
    # A keep-alive that ended before the idle run began changes nothing.
    (warn,) = _idle_plan(1060.0, 900.0)
    assert isinstance(warn, Warn) and warn.deadline == 1100.0


def test_the_outlook_shows_the_keep_alive_and_the_stop_after_it() -> None:
    from ds01.lifecycle.countdown import outlook

    def at(now: float, keep: float | None) -> tuple[object, ...]:
        o = outlook(
            IDLE_SINCE_1000,
            idle_timeout_s=100,
            max_runtime_s=5000,
            idle_samples=3,
            warn_before_s=10,
            done=[],
            now=now,
            keep_until=keep,
        )
        return (o.idle_since, o.next_stop, o.stop_at, o.kept_until)

    assert at(1060.0, None) == (1000.0, Countdown.IDLE, 1100.0, None)
    assert at(1060.0, 1500.0) == (1000.0, Countdown.IDLE, 1600.0, 1500.0)
    assert at(1060.0, 6000.0) == (1000.0, Countdown.RUNTIME, 5000.0, 6000.0)  # runtime first
    assert at(1600.0, 1500.0)[3] is None  # over: no longer shown as kept


def test_a_runtime_exemption_suspends_the_runtime_countdown_and_its_end_gives_notice() -> None:
    """max_runtime 100 s from 0; exempt until 500. Nothing while exempt; at 510, past every
    stage, one last warning (warn_before, 10 s) announcing a stop at 520 — never a stop
    without notice."""
    rec = ActivityRecord(1, active_since=0.0, runtime_from=0.0)

    def at(now: float, exempt: float | None) -> list[Warn | Stop]:
        return plan(
            rec,
            idle_timeout_s=None,
            max_runtime_s=100,
            idle_samples=3,
            warn_before_s=10,
            done=[],
            now=now,
            runtime_exempt_until=exempt,
        )

    (warn,) = at(60.0, None)
    assert isinstance(warn, Warn) and warn.stage.name == "50%"
    assert at(60.0, 500.0) == []
    assert at(499.0, 500.0) == []
    (warn,) = at(510.0, 500.0)
    assert isinstance(warn, Warn)
    assert (warn.countdown, warn.stage.name, warn.skipped, warn.last, warn.deadline) == (
        Countdown.RUNTIME,
        "warn_before",
        ("50%", "80%"),
        True,
        520.0,
    )


@pytest.mark.parametrize(
    ("timeout", "refused_at", "expected"),
    [
        (3600, None, 3600),  # nobody refused: as configured
        (3600, 1000.0, 1800),  # refused 100 s ago, within the 600 s window: half
        (3600, 300.0, 3600),  # refused 800 s ago: the window is over
        (1200, 1000.0, 900),  # half would be 600 s: never below the 900 s floor
        (600, 1000.0, 600),  # shorter than the floor already: never longer than configured
        (None, 1000.0, None),  # no idle timeout: none
    ],
)
def test_the_idle_timeout_shrinks_while_requests_are_refused_for_lack_of_capacity(
    timeout: int | None, refused_at: float | None, expected: int | None
) -> None:
    from ds01.lifecycle.countdown import demand_idle_timeout

    assert demand_idle_timeout(timeout, 0.5, 900, 600, refused_at, 1100.0) == expected


@pytest.mark.parametrize(
    ("now", "idle_since", "total", "latest"),
    [
        pytest.param(1000.0, None, 3600, 1600.0, id="in use: max_keepalive from now"),
        pytest.param(1000.0, 400.0, 3600, 1600.0, id="idle 10 min of 1 h: max_keepalive binds"),
        pytest.param(4000.0, 700.0, 3600, 4300.0, id="idle 55 min of 1 h: 5 min are left"),
        pytest.param(4200.0, 700.0, 3600, 4300.0, id="renewing later does not move the end"),
        pytest.param(5000.0, 700.0, 3600, 4300.0, id="past the total: nothing is left"),
        pytest.param(1000.0, None, 0, 1000.0, id="a total of 0 allows no keep-alive"),
    ],
)
def test_keep_alives_hold_off_at_most_max_keepalive_total_of_idleness_in_a_row(
    now: float, idle_since: float | None, total: int, latest: float
) -> None:
    assert keepalive_bound(now, idle_since, 600, total) == latest
