"""Wall-clock steps (issue 10 §8): a real ds01d under libfaketime (`apt-get install faketime`),
whose wall clock the test moves at run time by rewriting the offset file, while its steady clock
stays real (FAKETIME_DONT_FAKE_MONOTONIC). A reservation made before a step keeps the time it had
left — a forward step does not end it early, a backward one does not keep it longer — and the
step is in the audit log as `daemon/clock_step`. Every wait is bounded; none is a benchmark."""

from __future__ import annotations

import glob
import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn, AllocationOut, EventOut
from ds01.client import Client
from support import Daemon, Users, need, wait_for

TIMEOUT_S = 15  # the reservation timeout: long enough to step the clock inside it on a busy CI
LONG_TIMEOUT_S = 600  # for a test that only reads deadlines: no expiry can race its steps
STEP_S = 2 * 3600

CONFIG_TEMPLATE = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 7
  max_containers: 10
  allow_full_gpu: true
docker:
  host: {nowhere}
allocation:
  reservation_timeout: {timeout}s
"""


def libfaketime() -> str | None:
    found = sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))
    return found[0] if found else None


def set_clock(offset: Path, value: str) -> None:
    """Step the daemon's wall clock: the offset file is replaced whole (write, then rename), so
    no clock read in ds01d ever sees it truncated or half written (libfaketime reads it at
    every call) and takes a step that was never made."""
    part = offset.with_name(offset.name + ".new")
    part.write_text(f"{value}\n")
    os.replace(part, offset)


def start_stepped(daemon_factory: Any, timeout_s: int) -> tuple[Daemon, Path]:
    """A ds01d whose wall clock follows an offset file (starting at +0); returns both."""
    lib = libfaketime()
    need(lib is not None, "libfaketime is not installed (apt-get install faketime)")
    assert lib is not None
    config = CONFIG_TEMPLATE.format(nowhere=NOWHERE, timeout=timeout_s)
    d: Daemon = daemon_factory(config=config, start=False)
    offset = d.base / "faketime"
    set_clock(offset, "+0")
    d.extra_env = {
        "LD_PRELOAD": lib,
        "FAKETIME_TIMESTAMP_FILE": str(offset),
        "FAKETIME_NO_CACHE": "1",  # read the file at every clock read: steps take at once
        "FAKETIME_DONT_FAKE_MONOTONIC": "1",  # the steady clock stays real
    }
    d.start()
    return d, offset


@pytest.fixture
def stepped(daemon_factory: Any) -> tuple[Daemon, Path]:
    return start_stepped(daemon_factory, TIMEOUT_S)


@pytest.fixture
def stepped_long(daemon_factory: Any) -> tuple[Daemon, Path]:
    return start_stepped(daemon_factory, LONG_TIMEOUT_S)


def clock_steps(c: Client) -> list[EventOut]:
    return [e for e in c.events(kind="daemon") if e.action == "clock_step"]


def lifetime(a: AllocationOut) -> float:
    assert a.expires_at is not None
    return (
        datetime.fromisoformat(a.expires_at) - datetime.fromisoformat(a.created_at)
    ).total_seconds()


def reserve_step_and_wait(d: Daemon, offset: Path, to: str) -> tuple[float, EventOut]:
    """Reserve, step the clock to `to`, wait for the release. Returns the seconds from the
    request to the release seen, and the step's event; checks the reservation outlived the
    step with its deadline moved by the step."""
    with d.client() as c:
        started = time.monotonic()
        a = c.allocate(AllocateIn(gpus=1, container="clock-step"))
        set_clock(offset, to)
        (step,) = wait_for(lambda: clock_steps(c), "the clock_step event", 20)
        after = c.allocation(a.id)
        assert after.state == "reserved", (after, d.log()[-3000:])
        moved = step.details["step_s"]
        # The deadline moved with the clock; the creation time (a record) did not.
        assert abs(lifetime(after) - lifetime(a) - moved) < 1.0

        def released() -> AllocationOut | None:
            r = c.allocation(a.id)
            return r if r.state == "released" else None

        done = wait_for(released, "the reservation to expire", TIMEOUT_S + 30)
        took = time.monotonic() - started
        assert done.release_reason == "reservation_expired"
    return took, step


def test_a_forward_clock_step_does_not_end_a_reservation_early(
    stepped: tuple[Daemon, Path],
) -> None:
    d, offset = stepped
    took, step = reserve_step_and_wait(d, offset, "+2h")
    assert took >= TIMEOUT_S - 1.0  # its full timeout, not ended by the jump
    assert abs(step.details["step_s"] - STEP_S) < 2.0
    assert step.details["allocations"] == 1
    assert (step.kind, step.reason, step.actor) == ("daemon", "clock_step", "ds01d")
    assert step.message.startswith("the wall clock jumped forward by 2h 0m 0s;")
    warnings = [line for line in d.log().splitlines() if "clock step:" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0], d.log()[-3000:]
    assert "Traceback" not in d.log()


def test_a_backward_clock_step_does_not_keep_a_reservation_longer(
    stepped: tuple[Daemon, Path],
) -> None:
    d, offset = stepped
    # Unhandled, the reservation would now live two more hours: the wait above would fail.
    took, step = reserve_step_and_wait(d, offset, "-2h")
    assert took >= TIMEOUT_S - 1.0
    assert abs(step.details["step_s"] + STEP_S) < 2.0
    assert step.message.startswith("the wall clock jumped backward by 2h 0m 0s;")


def test_deadlines_keep_their_frame_across_two_steps_and_a_new_request(
    stepped_long: tuple[Daemon, Path],
) -> None:
    """A reservation made after a step is in the new frame and is not moved again."""
    d, offset = stepped_long
    with d.client() as c:
        set_clock(offset, "+2h")
        wait_for(lambda: clock_steps(c), "the first clock_step event", 20)
        a = c.allocate(AllocateIn(gpus=1, container="after-the-step"))
        assert abs(lifetime(a) - LONG_TIMEOUT_S) < 1.0
        set_clock(offset, "+0")
        wait_for(lambda: len(clock_steps(c)) == 2, "the second clock_step event", 20)
        assert abs(lifetime(c.allocation(a.id)) - LONG_TIMEOUT_S + STEP_S) < 1.0
        steps = sorted(round(e.details["step_s"]) for e in clock_steps(c))
    assert steps == [-STEP_S, STEP_S]


def test_a_grant_keeps_its_remaining_time_and_its_warnings_over_a_forward_step(
    stepped: tuple[Daemon, Path], users: Users
) -> None:
    d, offset = stepped
    user = users.add()
    with d.client() as c:
        started = time.monotonic()
        g = c.grant(user, "clock step test", duration=f"{TIMEOUT_S}s")
        assert g.until is not None
        set_clock(offset, "+2h")
        (step,) = wait_for(lambda: clock_steps(c), "the clock_step event", 20)
        assert step.details["grants"] == 1
        (entry,) = [e for e in c.grants() if e.user == user]
        assert entry.until is not None and entry.granted_at is not None
        moved = datetime.fromisoformat(entry.until) - datetime.fromisoformat(g.until)
        # Both ends are whole seconds (truncated) and step_s is measured apart from the move:
        # up to a second off each way.
        assert abs(moved.total_seconds() - step.details["step_s"]) < 2.0
        # The start moved too: the grant keeps its length, so the 1 h and 10 min warnings
        # (longer than the grant) still do not apply.
        length = datetime.fromisoformat(entry.until) - datetime.fromisoformat(entry.granted_at)
        assert length.total_seconds() < TIMEOUT_S + 2
        wait_for(
            lambda: not any(e.user == user for e in c.grants()),
            "the grant to end",
            TIMEOUT_S + 30,
        )
        took = time.monotonic() - started
        actions = [e.action for e in c.events(kind="grant") if e.user == user]
    assert took >= TIMEOUT_S - 1.0  # its full duration, not ended by the jump
    assert actions == ["granted", "expired"]
