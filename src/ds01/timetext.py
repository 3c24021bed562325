"""Times and lengths of time written for people: the one place ds01 turns them into text.

Owns these forms, used by CLI tables, notices, audit messages, refusal texts and the doctor:

    clock(t, now)   '14:05' on the same local day as now, '28 Nov 14:05' on another day
    span(seconds)   '45 s', '10 min', '1 h 5 min', '2 d 3 h'
    since(t, now)   the span from t to now (an age, an uptime)
    ago(seconds)    '45 s ago', '12 min ago'

and reads the moments people write (parse_moment): 'now', '18:00' (today), '2026-12-20',
'2026-12-20 18:00', ISO 8601 with an offset.

A time is a unix timestamp, a datetime (naive: local time) or ISO 8601 text as the API sends it,
and is shown in the local time zone of the process; a missing time (None) is shown as '–'.

Pure functions of the standard library; imports nothing from ds01, so every layer (the scheduler
included) may use it. Parsing durations is `units.py`'s, not this module's.
"""

from __future__ import annotations

import time
from datetime import datetime
from datetime import time as daytime

Moment = float | datetime | str
NONE = "–"


def _local(t: Moment) -> datetime:
    if isinstance(t, str):
        t = datetime.fromisoformat(t)
    if isinstance(t, datetime):
        return t.astimezone()
    return datetime.fromtimestamp(t).astimezone()


def clock(t: Moment | None, now: Moment | None = None) -> str:
    """'14:05' when t falls on the same local day as now (default: the current time),
    '28 Nov 14:05' otherwise; '–' for None."""
    if t is None or t == "":
        return NONE
    when = _local(t)
    today = _local(time.time() if now is None else now).date()
    return when.strftime("%H:%M" if when.date() == today else "%d %b %H:%M")


def since(t: Moment | None, now: Moment | None = None) -> str:
    """The span from t to now (default: the current time); '–' for None."""
    if t is None or t == "":
        return NONE
    end = _local(time.time() if now is None else now)
    return span((end - _local(t)).total_seconds())


def span(seconds: float) -> str:
    """A length of time, rounded to what matters: '45 s', '10 min', '1 h 5 min', '2 d 3 h'.
    Negative lengths are shown as '0 s'."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s} s"
    m = round(s / 60)
    if m < 60:
        return f"{m} min"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h} h {m} min" if m else f"{h} h"
    d, h = divmod(h, 24)
    return f"{d} d {h} h" if h else f"{d} d"


def ago(seconds: float) -> str:
    """How long ago something happened: '45 s ago', '12 min ago', '3 h 5 min ago'."""
    return f"{span(seconds)} ago"


def parse_moment(text: str, now: float) -> float:
    """A moment written by a person, as a unix timestamp: 'now'; 'HH:MM' (today, local time);
    an ISO date ('2026-12-20': its midnight) or date and time ('2026-12-20 18:00',
    '2026-12-20T18:00+01:00'); local time unless it names an offset. ValueError otherwise.
    Lengths of time ('2h') are units.parse_duration's."""
    t = text.strip()
    if t.lower() == "now":
        return now
    if len(t) <= 5 and ":" in t:
        try:
            hh, mm = (int(x) for x in t.split(":"))
            at = daytime(hh, mm)
        except ValueError:
            raise ValueError(f"{text!r} is not a time of day (HH:MM)") from None
        return datetime.combine(_local(now).date(), at).timestamp()
    try:
        return datetime.fromisoformat(t).timestamp()
    except ValueError:
        raise ValueError(f"{text!r} is not a date or time") from None
