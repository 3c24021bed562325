"""Times and lengths of time as ds01 writes them for people (ds01/timetext.py): the one format
every CLI table, notice, audit message, refusal and doctor line uses."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from ds01.timetext import ago, clock, parse_moment, since, span

NOW = datetime(2026, 11, 28, 15, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def berlin() -> Iterator[None]:
    """The local zone is Berlin (UTC+1 in November), so 'local' is not the same as UTC."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Berlin"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


@pytest.mark.parametrize(
    ("when", "text"),
    [
        pytest.param(NOW + timedelta(hours=1), "17:00", id="later the same day, in local time"),
        pytest.param(NOW.timestamp() + 3600, "17:00", id="a unix timestamp"),
        pytest.param("2026-11-28T16:00:00+00:00", "17:00", id="ISO text as the API sends it"),
        pytest.param(datetime(2026, 11, 28, 17, 0), "17:00", id="a naive datetime is local"),
        pytest.param(
            datetime(2026, 11, 28, 22, 30, tzinfo=timezone(-timedelta(hours=5))),
            "29 Nov 04:30",
            id="past local midnight it is another day",
        ),
        pytest.param(NOW - timedelta(days=3), "25 Nov 16:00", id="three days ago"),
        pytest.param(None, "–", id="no time"),
    ],
)
def test_clock_times(when: float | datetime | str | None, text: str) -> None:
    assert clock(when, NOW) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0 s", id="nothing"),
        pytest.param(-5, "0 s", id="a negative length"),
        pytest.param(45, "45 s", id="seconds"),
        pytest.param(59.6, "1 min", id="rounds up to a minute"),
        pytest.param(600, "10 min", id="minutes"),
        pytest.param(3599, "1 h", id="just under an hour"),
        pytest.param(3900, "1 h 5 min", id="hours and minutes"),
        pytest.param(7200, "2 h", id="whole hours"),
        pytest.param(47 * 3600, "47 h", id="under two days stays in hours"),
        pytest.param(2 * 86400 + 3 * 3600, "2 d 3 h", id="days and hours"),
        pytest.param(14 * 86400, "14 d", id="whole days"),
    ],
)
def test_spans(seconds: float, text: str) -> None:
    assert span(seconds) == text


def test_ago_and_since_are_spans() -> None:
    assert ago(720) == "12 min ago"
    assert since(NOW - timedelta(minutes=65), NOW) == "1 h 5 min"
    assert since("2026-11-28T14:59:15+00:00", NOW) == "45 s"
    assert since(None, NOW) == "–"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("now", "2026-11-28T15:00:00+00:00", id="now"),
        pytest.param("18:30", "2026-11-28T17:30:00+00:00", id="a time of day: today, local"),
        pytest.param("2026-12-20", "2026-12-19T23:00:00+00:00", id="a date: its local midnight"),
        pytest.param("2026-12-20 09:00", "2026-12-20T08:00:00+00:00", id="a local date and time"),
        pytest.param("2026-12-20T09:00+00:00", "2026-12-20T09:00:00+00:00", id="with an offset"),
    ],
)
def test_moments_people_write(text: str, expected: str) -> None:
    got = parse_moment(text, NOW.timestamp())
    assert datetime.fromtimestamp(got, UTC).isoformat() == expected


@pytest.mark.parametrize("text", ["25:00", "soon", "2h", "12-20"])
def test_what_is_no_moment_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError):
        parse_moment(text, NOW.timestamp())
