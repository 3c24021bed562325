"""GrantService on a real database with a driven clock: expiry, warnings once each (across
restarts too), the host-access file's exact text, and the group kept in step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ds01.config import Config, parse_config_text
from ds01.errors import NotFound, PermissionDenied, UsageError
from ds01.identity import Caller
from ds01.notify import Notifier
from ds01.services.allocation import AllocationService
from ds01.services.grants import HOST_ACCESS_HEADER, GrantService, GroupCommandFailed
from ds01.store import events
from ds01.store.db import Database
from ds01.store.grants import GrantRow

ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())
BOB = Caller(uid=1001, gid=1001, pid=2, name="bob", groups=frozenset())
KNOWN = {"alice", "bob", "carol"}


class Clock:
    def __init__(self, t: float) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class FakeGroup:
    """Stands in for the Unix group: records membership, can be told to fail."""

    name = "ds01-gpu-host"

    def __init__(self, members: set[str] | None = None) -> None:
        self.m = members
        self.calls: list[tuple[str, str]] = []
        self.fail_add: set[str] = set()

    def members(self) -> set[str] | None:
        return None if self.m is None else set(self.m)

    def create(self) -> None:
        self.calls.append(("create", ""))
        self.m = set()

    def add(self, user: str) -> None:
        self.calls.append(("add", user))
        if user in self.fail_add:
            raise GroupCommandFailed(f"gpasswd: user '{user}' does not exist")
        assert self.m is not None
        self.m.add(user)

    def remove(self, user: str) -> None:
        self.calls.append(("remove", user))
        assert self.m is not None
        self.m.discard(user)


class World:
    def __init__(self, tmp: Path, config_text: str, t0: float = 1000.0) -> None:
        self.tmp = tmp
        self.clock = Clock(t0)
        self.config: Config = parse_config_text(config_text, "test.yaml")
        self.db = Database(tmp / "ds01.db")
        self.allocs = AllocationService(self.db, lambda: self.config, clock=self.clock)
        self.log = tmp / "notifications.log"
        (tmp / "pts").mkdir(exist_ok=True)
        self.group = FakeGroup()
        self.ended: list[tuple[str, str]] = []
        self.svc = self.service()

    def service(self) -> GrantService:
        """A fresh service on the same database: what a daemon restart gives."""
        notifier = Notifier(
            self.log, utmp=self.tmp / "no-utmp", pts_dir=self.tmp / "pts", clock=self.clock
        )
        svc = GrantService(
            self.db,
            self.allocs,
            self.tmp / "run",
            notifier,
            clock=self.clock,
            group=self.group,  # type: ignore[arg-type]
            manage_group=True,
            exists=lambda u: u in KNOWN,
        )
        svc.on_ended.append(lambda row, why: self.ended.append((row.user, why)))
        return svc

    def file(self) -> str:
        return (self.tmp / "run" / "host-access").read_text()

    def notes(self, topic: str | None = None) -> list[dict[str, object]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        items = [json.loads(x) for x in lines]
        return [i for i in items if topic is None or i["topic"] == topic]

    def events(self, kind: str = "grant") -> list[events.Event]:
        with self.db.transaction(immediate=False) as conn:
            return events.query(conn, kind=kind)


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path, "exempt_users: [alice]\nhost:\n  grant_warnings: [1h, 10m]\n")


def test_a_grant_is_in_the_host_access_file_until_it_expires(world: World) -> None:
    world.svc.tick(force_sync=True)
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\n"
    g = world.svc.grant(ROOT, "bob", duration="1h", permanent=False, reason="profiling")
    assert (g.user, g.until, g.granted_by) == ("bob", 4600.0, "root")
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\nbob grant 4600\n"
    assert (world.tmp / "run" / "host-access").stat().st_mode & 0o777 == 0o644
    world.clock.t = 4599.9
    assert world.svc.tick() == []
    world.clock.t = 4600.0
    ended = world.svc.tick()
    assert [(r.user, r.end_reason, r.ended_by) for r in ended] == [("bob", "expired", "ds01d")]
    assert world.ended == [("bob", "expired")]
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\n"
    assert [e.action for e in world.events()] == ["granted", "warned", "expired"]
    bob = [n["topic"] for n in world.notes() if n["user"] == "bob"]
    assert bob == ["grant", "grant_warning", "grant_ended"]


def test_a_permanent_grant_is_written_with_until_0(world: World) -> None:
    world.svc.grant(ROOT, "carol", duration=None, permanent=True, reason="maintainer")
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\ncarol grant 0\n"
    world.clock.t += 10 * 365 * 86400
    assert world.svc.tick() == []


def test_warnings_are_sent_once_each_at_their_time(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="2h", permanent=False, reason="r")  # until 8200
    for t in (1001, 4599, 4600, 4601, 5000, 7599, 7600, 7601, 8000):
        world.clock.t = t
        world.svc.tick()
    warned = [e for e in world.events() if e.action == "warned"]
    assert [(e.ts, e.details["before_s"]) for e in warned] == [(4600, 3600), (7600, 600)]
    texts = [n["message"] for n in world.notes("grant_warning")]
    assert len(texts) == 2
    assert "(in 1 h)" in str(texts[0]) and "(in 10 min)" in str(texts[1])


def test_a_restart_neither_repeats_nor_drops_a_warning(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="2h", permanent=False, reason="r")  # until 8200
    world.clock.t = 4600
    world.svc.tick()
    restarted = world.service()
    world.clock.t = 4700
    restarted.tick()
    world.clock.t = 7650  # the 10-minute mark passed while "down"
    restarted = world.service()
    restarted.tick()
    restarted.tick()
    warned = [e for e in world.events() if e.action == "warned"]
    assert [(e.ts, e.details["before_s"]) for e in warned] == [(4600, 3600), (7650, 600)]


def test_warnings_due_together_send_one_message_with_the_real_time_left(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="2h", permanent=False, reason="r")  # until 8200
    world.clock.t = 7700  # both the 1 h and the 10 min marks have passed
    world.svc.tick()
    warned = [e for e in world.events() if e.action == "warned"]
    assert [(e.details["before_s"], e.details["superseded"]) for e in warned] == [(600, [3600])]
    assert len(world.notes("grant_warning")) == 1
    assert "(in 8 min)" in str(world.notes("grant_warning")[0]["message"])


def test_a_grant_shorter_than_a_warning_gets_only_the_later_warnings(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="30m", permanent=False, reason="r")  # until 2800
    for t in range(1000, 2801, 100):
        world.clock.t = t
        world.svc.tick()
    warned = [e for e in world.events() if e.action == "warned"]
    assert [e.details["before_s"] for e in warned] == [600]


def test_a_new_grant_replaces_the_live_one(world: World) -> None:
    first = world.svc.grant(ROOT, "bob", duration="1h", permanent=False, reason="a")
    second = world.svc.grant(ROOT, "bob", duration="4h", permanent=False, reason="b")
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\nbob grant 15400\n"
    granted = [e for e in world.events() if e.action == "granted"]
    assert granted[1].details["replaces"] == first.id
    assert [e.user for e in world.svc.list_access(ROOT)] == ["alice", "bob"]
    assert world.svc.live_grant("bob") == second


def test_revoke_ends_the_grant_and_tells_the_process_watch(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="1h", permanent=False, reason="a")
    row = world.svc.revoke(ROOT, "bob", "done early")
    assert (row.end_reason, row.ended_by) == ("revoked", "root")
    assert world.ended == [("bob", "revoked")]
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\n"
    with pytest.raises(NotFound, match="bob has no live bare-metal grant"):
        world.svc.revoke(ROOT, "bob", "again")


@pytest.mark.parametrize(
    ("caller", "user", "duration", "permanent", "reason", "error", "text"),
    [
        (ROOT, "mallory", "1h", False, "r", UsageError, "no user 'mallory' on this machine"),
        (ROOT, "bob", None, False, "r", UsageError, "exactly one of --for"),
        (ROOT, "bob", "1h", True, "r", UsageError, "exactly one of --for"),
        (ROOT, "bob", "an hour", False, "r", UsageError, "--for: expected a duration"),
        (ROOT, "bob", "0s", False, "r", UsageError, "at least 1s"),
        (ROOT, "bob", "1h", False, "  ", UsageError, "--reason must be"),
        (ROOT, "bob joe", "1h", False, "r", UsageError, "no user 'bob joe'"),
        (BOB, "bob", "1h", False, "r", PermissionDenied, "is for admins"),
    ],
    ids=[
        "a user NSS does not know is refused",
        "neither --for nor --permanent is refused",
        "both --for and --permanent is refused",
        "a duration in words is refused",
        "a zero duration is refused",
        "a blank reason is refused",
        "a name with a space is refused",
        "a non-admin cannot grant, not even to themselves",
    ],
)
def test_bad_grants_are_refused_and_change_nothing(
    world: World,
    caller: Caller,
    user: str,
    duration: str | None,
    permanent: bool,
    reason: str,
    error: type[Exception],
    text: str,
) -> None:
    with pytest.raises(error, match=text.replace("(", r"\(")):
        world.svc.grant(caller, user, duration=duration, permanent=permanent, reason=reason)
    assert world.events() == []


def test_an_exemption_added_by_a_config_reload_reaches_the_file(world: World) -> None:
    world.svc.tick(force_sync=True)
    world.config = parse_config_text("exempt_users: [alice, carol]\n", "test.yaml")
    world.svc.tick()
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\ncarol exempt 0\n"
    assert world.svc.access_of("carol").state == "exempt"


def test_an_exempt_user_with_a_grant_is_listed_once_as_exempt(world: World) -> None:
    world.svc.grant(ROOT, "alice", duration="1h", permanent=False, reason="r")
    assert world.file() == HOST_ACCESS_HEADER + "alice exempt 0\n"


def test_access_of_says_state_until_reason_and_how(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="1h", permanent=False, reason="profiling")
    bob = world.svc.access_of("bob")
    carol = world.svc.access_of("carol")
    assert (bob.state, bob.until, bob.reason) == ("granted", 4600.0, "profiling")
    assert (carol.state, carol.until, carol.reason) == ("containers_only", None, None)
    assert "ds01 container deploy" in carol.how


def test_uvm_gate_keeps_the_group_equal_to_exempt_plus_granted(tmp_path: Path) -> None:
    w = World(tmp_path, "exempt_users: [alice]\nhost:\n  compute_gate: uvm\n")
    w.group.m = None  # the group does not exist yet
    w.svc.tick(force_sync=True)
    assert (w.group.m, w.group.calls[:2]) == ({"alice"}, [("create", ""), ("add", "alice")])
    w.svc.grant(ROOT, "bob", duration="10s", permanent=False, reason="r")
    assert w.group.m == {"alice", "bob"}
    w.clock.t += 10
    w.svc.tick()
    assert w.group.m == {"alice"}
    updates = w.events("host")
    assert [(e.details["added"], e.details["removed"]) for e in updates] == [
        (["alice"], []),
        (["bob"], []),
        ([], ["bob"]),
    ]


def test_a_stray_group_member_is_removed(tmp_path: Path) -> None:
    w = World(tmp_path, "host:\n  compute_gate: uvm\n")
    w.group.m = {"mallory"}
    w.svc.tick(force_sync=True)
    assert w.group.m == set()


def test_a_failing_gpasswd_is_one_event_not_one_per_tick(tmp_path: Path) -> None:
    w = World(tmp_path, "exempt_users: [ghost]\nhost:\n  compute_gate: uvm\n")
    w.group.m = set()
    w.group.fail_add = {"ghost"}
    for _ in range(5):
        w.svc.tick()
        w.clock.t += 1
    failed = [e for e in w.events("host") if e.action == "group_sync_failed"]
    assert [(e.user, e.details["op"]) for e in failed] == [("ghost", "add")]
    assert "does not exist" in failed[0].message


def test_without_the_uvm_gate_the_group_is_not_touched(world: World) -> None:
    world.svc.grant(ROOT, "bob", duration="1h", permanent=False, reason="r")
    world.svc.tick(force_sync=True)
    assert world.group.calls == []


def test_grant_rows_round_trip(world: World) -> None:
    g = world.svc.grant(ROOT, "bob", duration="90s", permanent=False, reason="r")
    assert isinstance(g, GrantRow) and g.live and g.until == 1090.0
