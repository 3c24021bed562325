"""Banner notices on the wire: ds01d hands a user's pending notices to their next `ds01`
command in one response header, and the command prints them once, on stderr.

Owns the header's name, its encoding (ASCII JSON: a list of {"ts", "topic", "message"}) and
how the command line words them. Standard library only (json), because the command line's
quick path (cli/quick.py) imports it: it must cost nothing measurable. Must not decide which
notices are pending (services/banners.py) nor print (the callers do).
"""

from __future__ import annotations

import json
import time
from typing import Any

# The command line asks for its notices with this request header ("1"); the answer carries
# them in the same-named header. Other API clients (scripts, tests) never take anyone's
# notices by accident: only a request that asks gets them, and gets them only once.
HEADER = "X-Ds01-Notices"
# Every answer's head must stay well under the HTTP clients' limits (h11: 16 KiB, aiohttp's
# client 8 KiB per field): notices beyond this stay pending for the next command.
MAX_HEADER_BYTES = 6000


def encode(notices: list[dict[str, Any]]) -> str:
    """ASCII JSON on one line (json escapes every control character and non-ASCII letter)."""
    return json.dumps(notices, ensure_ascii=True, separators=(",", ":"))


def decode(value: str | None) -> list[dict[str, Any]]:
    """The notices in a header value; none for an absent or garbled one."""
    if not value:
        return []
    try:
        data = json.loads(value)
    except ValueError:
        return []
    if not isinstance(data, list):
        return []
    return [n for n in data if isinstance(n, dict) and isinstance(n.get("message"), str)]


def render(notices: list[dict[str, Any]]) -> str:
    """What the command prints on stderr: each notice under a line with its time."""
    out: list[str] = []
    for n in notices:
        ts = n.get("ts")
        when = time.strftime("%H:%M", time.localtime(ts)) if isinstance(ts, int | float) else "?"
        text = "".join(c for c in str(n["message"]) if c == "\n" or _printable(c))
        out.append(f"*** ds01 notice ({when}) ***\n{text.strip()}\n")
    return "\n".join(out) + ("\n" if out else "")


def _printable(c: str) -> bool:
    """Not a C0/C1 control or DEL: nothing that can start a terminal escape sequence."""
    return c >= " " and not "\x7f" <= c <= "\x9f"
