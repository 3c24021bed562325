"""Banner notices kept by ds01d (services/banners.py, store/banners.py) and their wire form
(notices.py): each is handed out once, oldest first, as many as fit in one header; a user with
none costs no database read; old ones are dropped unseen; what a terminal prints holds no
escape sequence."""

from __future__ import annotations

from pathlib import Path

from ds01.notices import decode, encode, render
from ds01.services.banners import BannerBox
from ds01.store import banners as store
from ds01.store.db import Database


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _box(tmp_path: Path, clock: Clock, max_age: int = 3600) -> tuple[BannerBox, Database]:
    db = Database(tmp_path / "state.db")
    return BannerBox(db, lambda: max_age, clock=clock), db


def test_a_notice_is_handed_out_once_and_only_to_its_user(tmp_path: Path) -> None:
    box, _ = _box(tmp_path, Clock(1000.0))
    box.post("alice", "idle_warning", "stops at 15:05", 990.0)
    assert (box.waiting("alice"), box.waiting("bob")) == (True, False)
    assert box.take("bob") == []
    assert box.take("alice") == [
        {"ts": 990.0, "topic": "idle_warning", "message": "stops at 15:05"}
    ]
    assert box.take("alice") == []
    assert box.waiting("alice") is False


def test_what_does_not_fit_in_the_header_waits_for_the_next_command(tmp_path: Path) -> None:
    box, _ = _box(tmp_path, Clock(1000.0))
    for i in range(3):
        box.post("alice", "idle_warning", f"notice {i} " + "x" * 900, 900.0 + i)
    first = box.take("alice", budget=2000)
    assert [n["message"][:8] for n in first] == ["notice 0", "notice 1"]
    assert box.waiting("alice")
    assert [n["message"][:8] for n in box.take("alice", budget=2000)] == ["notice 2"]
    assert not box.waiting("alice")


def test_old_notices_are_dropped_unseen_and_a_user_keeps_the_newest_twenty(
    tmp_path: Path,
) -> None:
    clock = Clock(10_000.0)
    box, db = _box(tmp_path, clock, max_age=100)
    box.post("alice", "grant", "too old", 9_800.0)
    for i in range(25):
        box.post("bob", "grant", f"n{i}", 9_950.0 + i)
    assert box.take("alice") == []
    got = box.take("bob", budget=100_000)
    assert [n["message"] for n in got] == [f"n{i}" for i in range(5, 25)]
    with db.transaction() as conn:
        assert store.pending_users(conn) == set()


def test_a_restarted_ds01d_knows_who_has_notices_waiting(tmp_path: Path) -> None:
    box, db = _box(tmp_path, Clock(1000.0))
    box.post("alice", "grant", "granted", 999.0)
    db.close()
    again, _ = _box(tmp_path, Clock(1001.0))
    assert again.waiting("alice") and not again.waiting("bob")
    assert [n["message"] for n in again.take("alice")] == ["granted"]


def test_the_wire_form_is_one_ascii_line_and_garbage_is_no_notice() -> None:
    value = encode([{"ts": 1.0, "topic": "t", "message": "zwei\nZeilen, ü\r\x1b[2J"}])
    assert value.isascii() and "\n" not in value and "\r" not in value
    assert decode(value)[0]["message"] == "zwei\nZeilen, ü\r\x1b[2J"
    assert decode("not json") == decode('{"a": 1}') == decode(None) == []
    assert decode('[{"message": 3}, {"message": "ok"}]') == [{"message": "ok"}]


def test_what_the_command_prints_holds_no_escape_sequence() -> None:
    text = render([{"ts": None, "topic": "t", "message": "a\x1b[2Jb\x9b31mc\x07\nnext"}])
    assert text == "*** ds01 notice (?) ***\na[2Jb31mc\nnext\n\n"


def test_the_quick_paths_reader_names_the_same_header() -> None:
    from ds01 import notices, unixhttp

    assert unixhttp.HEADER == notices.HEADER
    assert notices.HEADER.lower().encode("ascii") == unixhttp._NOTICES
