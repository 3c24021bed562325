"""Messages reach a user's real terminals (ptys the test opens and hands to a real user) and
the notifications log; never someone else's terminal, never an escape sequence, never a wait."""

from __future__ import annotations

import json
import os
import pwd
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ds01.notify import Notifier
from ds01.notify.logfile import read as read_log
from ds01.notify.tty import (
    USER_PROCESS,
    TtyResult,
    UtmpEntry,
    banner,
    pack_utmp,
    read_utmp,
    terminals_of,
    write_to_user,
)
from support import wait_for

DEAD_PROCESS = 8


class Pty:
    """A real pseudo-terminal: the test reads what was written to its terminal side."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        self.path = Path(os.ttyname(self.slave))
        os.set_blocking(self.master, False)
        self.seen = b""

    def give_to(self, user: str) -> None:
        pw = pwd.getpwnam(user)
        os.chown(self.path, pw.pw_uid, pw.pw_gid)

    def text(self) -> str:
        """Everything the terminal has shown so far (what has arrived is read, nothing waited)."""
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except BlockingIOError:
                break
            self.seen += chunk
        return self.seen.decode(errors="replace")

    def close(self) -> None:
        os.close(self.master)
        os.close(self.slave)


@pytest.fixture
def pty() -> Iterator[Pty]:
    p = Pty()
    yield p
    p.close()


def test_utmp_records_round_trip() -> None:
    entries = [
        UtmpEntry(USER_PROCESS, 4242, "pts/3", "h.baker@hertie-school.lan", "10.0.0.7", 1764000000),
        UtmpEntry(DEAD_PROCESS, 4243, "pts/4", "", "", 0),
    ]
    path = Path("/tmp") / f"ds01-utmp-{os.getpid()}"
    try:
        path.write_bytes(b"".join(pack_utmp(e) for e in entries))
        assert path.stat().st_size == 2 * 384
        assert read_utmp(path) == entries
    finally:
        path.unlink()


def test_a_missing_utmp_has_no_sessions(tmp_path: Path) -> None:
    assert read_utmp(tmp_path / "nope") == []


def test_the_banner_strips_escape_sequences_and_uses_crlf() -> None:
    data = banner("grant ends\x1b[2J soon\nline two\x07", None)
    assert b"\x1b" not in data and b"\x07" not in data
    assert b"grant ends[2J soon\r\nline two\r\n" in data
    assert data.startswith(b"\r\n\r\n*** ds01: message from ds01d at ")


def test_a_message_reaches_every_terminal_of_the_user_and_the_log(
    users: object, tmp_path: Path
) -> None:
    user = users.add()  # type: ignore[attr-defined]
    first, second, foreign = Pty(), Pty(), Pty()
    try:
        first.give_to(user)
        second.give_to(user)  # `foreign` stays root's
        log = tmp_path / "notifications.log"
        d = Notifier(log, utmp=tmp_path / "no-utmp").notify(
            user, "grant_warning", "Your bare-metal GPU access ends at 16:00 (in 10 min)."
        )
        assert sorted(d.terminals) == sorted([str(first.path), str(second.path)])
        for p in (first, second):
            wait_for(
                lambda p=p: "Your bare-metal GPU access ends at 16:00 (in 10 min)." in p.text(),
                f"the message on {p.path}",
                5,
            )
        time.sleep(0.3)  # deliberately: time for a wrong write to arrive, then none must have
        assert foreign.text() == ""
        [line] = read_log(log)
        assert (line["user"], line["topic"], sorted(line["terminals"])) == (
            user,
            "grant_warning",
            sorted([str(first.path), str(second.path)]),
        )
        assert log.stat().st_mode & 0o777 == 0o640
    finally:
        for p in (first, second, foreign):
            p.close()


def test_login_terminals_are_found_through_utmp(users: object, pty: Pty, tmp_path: Path) -> None:
    user = users.add()  # type: ignore[attr-defined]
    pty.give_to(user)
    utmp = tmp_path / "utmp"
    line = str(pty.path.relative_to("/dev"))
    utmp.write_bytes(
        pack_utmp(UtmpEntry(USER_PROCESS, os.getpid(), line, user, "", 0))
        + pack_utmp(UtmpEntry(USER_PROCESS, os.getpid(), "../etc/passwd", user, "", 0))
        + pack_utmp(UtmpEntry(USER_PROCESS, os.getpid(), ":0", user, "", 0))
    )
    empty = tmp_path / "pts"
    empty.mkdir()
    uid = pwd.getpwnam(user).pw_uid
    assert terminals_of(uid, utmp=utmp, pts_dir=empty) == [pty.path]


def test_a_terminal_that_stopped_reading_is_skipped_not_waited_for(
    users: object, pty: Pty, tmp_path: Path
) -> None:
    user = users.add()  # type: ignore[attr-defined]
    pty.give_to(user)
    fd = os.open(pty.path, os.O_WRONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        while True:  # fill the terminal's buffer: nobody reads the other side
            os.write(fd, b"x" * 4096)
    except BlockingIOError:
        pass
    finally:
        os.close(fd)
    results: list[TtyResult] = []
    t = threading.Thread(
        target=lambda: results.append(write_to_user(user, "hello", utmp=tmp_path / "none"))
    )
    t.start()
    t.join(timeout=30)
    assert not t.is_alive(), "writing to a full terminal blocked"
    [result] = results
    # Whether the kernel found room for a few bytes depends on the pty's buffer accounting;
    # what matters is that the write returned at once and the terminal is accounted for.
    outcomes = [*result.written, *(f.split(":")[0] for f in result.failed)]
    assert outcomes == [str(pty.path)]


def test_an_unknown_user_gets_only_the_log_line(tmp_path: Path) -> None:
    log = tmp_path / "n.log"
    d = Notifier(log).notify("no-such-user-ds01", "host_process", "hi")
    assert (d.terminals, d.logged) == ((), True)
    assert json.loads(log.read_text())["user"] == "no-such-user-ds01"
