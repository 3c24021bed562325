"""Durations and sizes as written in ds01.yaml: accepted forms, exact results, exact refusals."""

from __future__ import annotations

import pytest

from ds01.units import format_duration, format_size, parse_duration, parse_size


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        pytest.param("30s", 30, id="seconds with an s"),
        pytest.param("30m", 1800, id="thirty minutes"),
        pytest.param("4h", 14400, id="four hours"),
        pytest.param("2d", 172800, id="two days"),
        pytest.param("1w", 604800, id="one week"),
        pytest.param("1h30m", 5400, id="hours and minutes combined"),
        pytest.param("1d2h3m4s", 93784, id="every unit combined"),
        pytest.param("0.5h", 1800, id="a fraction of an hour as DS01 wrote it"),
        pytest.param("4H", 14400, id="upper-case unit"),
        pytest.param(" 15m ", 900, id="surrounding spaces are ignored"),
        pytest.param("90", 90, id="digits in text are seconds"),
        pytest.param(90, 90, id="a plain int is seconds"),
        pytest.param(0, 0, id="zero"),
        pytest.param("5214w", 3153427200, id="just under 100 years"),
        pytest.param(3153600000, 3153600000, id="exactly 100 years"),
    ],
)
def test_durations_people_write_become_whole_seconds(text: object, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "4 hours", "expected a duration like 30m, 4h or 2d, got '4 hours'", id="words"
        ),
        pytest.param("4hr", "expected a duration like 30m, 4h or 2d, got '4hr'", id="unknown unit"),
        pytest.param(
            "h", "expected a duration like 30m, 4h or 2d, got 'h'", id="unit without number"
        ),
        pytest.param("", "expected a duration like 30m, 4h or 2d, got ''", id="empty text"),
        pytest.param(1.5, "expected a duration like 30m, 4h or 2d, got 1.5", id="a bare float"),
        pytest.param(True, "expected a duration like 30m, 4h or 2d, got true", id="a boolean"),
        pytest.param([1], "expected a duration like 30m, 4h or 2d, got a list", id="a list"),
        pytest.param(-5, "a duration cannot be negative, got -5", id="negative seconds"),
        pytest.param(
            "1.5s", "a duration must be a whole number of seconds, got '1.5s'", id="half a second"
        ),
        pytest.param(
            "²", "expected a duration like 30m, 4h or 2d, got '²'", id="a digit that is not 0-9"
        ),
        pytest.param(
            "١h", "expected a duration like 30m, 4h or 2d, got '١h'", id="an Arabic-Indic digit"
        ),
        pytest.param(
            "5218w", "a duration must be at most 100 years, got '5218w'", id="over 100 years"
        ),
        pytest.param(
            3153600001, "a duration must be at most 100 years, got 3153600001", id="int over 100y"
        ),
    ],
)
def test_bad_durations_say_what_was_expected(value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_duration(value)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("text", "num_bytes"),
    [
        pytest.param("32g", 34359738368, id="gigabytes, short form"),
        pytest.param("512m", 536870912, id="megabytes"),
        pytest.param("1.5g", 1610612736, id="fractional gigabytes"),
        pytest.param("32GiB", 34359738368, id="GiB is binary"),
        pytest.param("32gb", 34359738368, id="gb is binary too, as Docker means it"),
        pytest.param("32G", 34359738368, id="upper-case unit"),
        pytest.param("64k", 65536, id="kilobytes"),
        pytest.param("2t", 2199023255552, id="terabytes"),
        pytest.param("100b", 100, id="explicit bytes"),
        pytest.param("4096", 4096, id="digits in text are bytes"),
        pytest.param(4096, 4096, id="a plain int is bytes"),
        pytest.param("1.1k", 1126, id="fractions of a byte round down"),
    ],
)
def test_sizes_people_write_become_bytes(text: object, num_bytes: int) -> None:
    assert parse_size(text) == num_bytes


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param(
            "32 gigs", "expected a size like 512m, 32g or 1.5t, got '32 gigs'", id="words"
        ),
        pytest.param("32x", "expected a size like 512m, 32g or 1.5t, got '32x'", id="unknown unit"),
        pytest.param(
            "g", "expected a size like 512m, 32g or 1.5t, got 'g'", id="unit without number"
        ),
        pytest.param(2.5, "expected a size like 512m, 32g or 1.5t, got 2.5", id="a bare float"),
        pytest.param(None, "expected a size like 512m, 32g or 1.5t, got null", id="null"),
        pytest.param(-1, "a size cannot be negative, got -1", id="negative bytes"),
    ],
)
def test_bad_sizes_say_what_was_expected(value: object, message: str) -> None:
    with pytest.raises(ValueError) as err:
        parse_size(value)
    assert str(err.value) == message


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        pytest.param(0, "0s", id="zero"),
        pytest.param(45, "45s", id="seconds only"),
        pytest.param(5400, "1h30m", id="hours and minutes"),
        pytest.param(14400, "4h", id="whole hours"),
        pytest.param(604800, "7d", id="a week shows as days"),
        pytest.param(93784, "1d2h3m4s", id="every unit"),
    ],
)
def test_durations_print_in_the_shortest_exact_form(seconds: int, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    ("num_bytes", "text"),
    [
        pytest.param(34359738368, "32g", id="whole gigabytes"),
        pytest.param(1610612736, "1536m", id="one and a half gigabytes as megabytes"),
        pytest.param(2199023255552, "2t", id="terabytes"),
        pytest.param(1000, "1000", id="not a multiple of 1k stays bytes"),
        pytest.param(0, "0", id="zero"),
    ],
)
def test_sizes_print_in_the_largest_exact_unit(num_bytes: int, text: str) -> None:
    assert format_size(num_bytes) == text
