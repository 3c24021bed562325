"""The host-access file: who may compute on the bare host, one line per user and reason.

Contract with ds01d (which keeps the file current; `ds01 host apply` only seeds it when absent):
`<run-dir>/host-access`, mode 0644, written atomically. Lines starting with '#' are comments;
every other line is `USER KIND UNTIL`, separated by single spaces, where KIND is `exempt` or
`grant` and UNTIL is a Unix timestamp (integer) or `0` for no expiry. User names never contain
spaces. The profile script (host/profile.py) reads this file in shell; this module is the Python
reader and writer of the same format. A missing or unreadable file means "nobody is allowed"
(fail closed). Pure: no file access here; must not decide anything but what the file says.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

FILE_NAME = "host-access"
KINDS = ("exempt", "grant")
MODE = 0o644


@dataclass(frozen=True)
class Entry:
    user: str
    kind: str  # "exempt" | "grant"
    until: int  # Unix time; 0 = no expiry

    def live(self, now: float) -> bool:
        """Whether this entry allows compute at `now` (an expired grant does not)."""
        return self.until == 0 or self.until > now

    def line(self) -> str:
        return f"{self.user} {self.kind} {self.until}"


@dataclass(frozen=True)
class Parsed:
    entries: tuple[Entry, ...]
    bad_lines: tuple[tuple[int, str], ...]  # (line number, text) the shell reader would skip


def parse(text: str) -> Parsed:
    """Read the file the way the profile script does: malformed lines are skipped, not fatal."""
    entries: list[Entry] = []
    bad: list[tuple[int, str]] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw or raw.startswith("#"):
            continue
        parts = raw.split(" ")
        if len(parts) != 3 or parts[1] not in KINDS or not parts[2].isdigit() or not parts[0]:
            bad.append((number, raw))
            continue
        entries.append(Entry(parts[0], parts[1], int(parts[2])))
    return Parsed(tuple(entries), tuple(bad))


def allowed_users(parsed: Parsed, now: float) -> dict[str, Entry]:
    """User → the first live entry that lets them compute (what the shell reader finds first)."""
    found: dict[str, Entry] = {}
    for entry in parsed.entries:
        if entry.live(now) and entry.user not in found:
            found[entry.user] = entry
    return found


HEADER = (
    "# ds01 host access: who may compute on GPUs on the bare host. Written by ds01d; do not edit.\n"
    "# One line per user: USER KIND UNTIL. KIND: exempt (config exempt_users) or grant\n"
    "# (ds01 admin grant). UNTIL: unix time the access ends, 0 = no expiry.\n"
)


def valid_user(user: str) -> bool:
    """A name the line format can carry (no whitespace, not a comment)."""
    return bool(user) and not user.startswith("#") and not any(c.isspace() for c in user)


def render(entries: Iterable[Entry]) -> str:
    """The whole file: the header, then one line per entry (names it cannot carry left out)."""
    return HEADER + "".join(e.line() + "\n" for e in entries if valid_user(e.user))


def seed_text(exempt_users: Iterable[str]) -> str:
    """The file `ds01 host apply` writes when none exists, so exempt users can compute before
    ds01d first runs. ds01d replaces it with the full list (exempt users and live grants)."""
    return render(Entry(user, "exempt", 0) for user in exempt_users)
