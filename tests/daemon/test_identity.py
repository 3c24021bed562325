"""Identity through ds01d: real Unix users (useradd), acting through setpriv, are told apart by the
kernel (SO_PEERCRED), never by what a request says; one user cannot release or read another's
allocation (it is reported as missing), while root and the admin group can; `gpu status` shows
holders unless the config says `privacy: hide_others`; events are private to their user.

Allocations are made with the typed client run as the user (tests/daemon/loadgen.py `call`):
no `ds01` command allocates by itself yet (container deploy does, with Docker).
"""

from __future__ import annotations

import json
import pwd
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE, connect_ro

from support import Daemon, Users, as_user, need

pytestmark = pytest.mark.root

LOADGEN = Path(__file__).with_name("loadgen.py")


def config(admin_group: str, privacy: str = "show_all") -> str:
    return f"""\
admin_group: {admin_group}
privacy: {privacy}
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
docker:
  host: {NOWHERE}
"""


@dataclass(frozen=True)
class People:
    a: str
    b: str
    admin: str
    admins: str  # the admin Unix group

    def name(self, role: str) -> str:
        return {"a": self.a, "b": self.b, "admin": self.admin, "root": "root"}[role]


@pytest.fixture
def people(users: Users) -> Iterator[People]:
    admins = users.group(f"ds01t-adm{uuid.uuid4().hex[:6]}")
    p = People(a=users.add(), b=users.add(), admin=users.add(groups=(admins,)), admins=admins)
    r = as_user(p.a, [sys.executable, "-c", "import ds01.client"])
    need(r.returncode == 0, f"test users cannot run {sys.executable}: {r.stderr[-300:]}")
    yield p


def api(d: Daemon, user: str, op: str, headers: tuple[str, ...] = (), **args: Any) -> Any:
    """One typed-client call as `user`: {"ok": data} or {"error": {type, what, reason}}."""
    argv = [sys.executable, str(LOADGEN), "call", "--socket", str(d.socket)]
    for h in headers:
        argv += ["--header", h]
    r = as_user(user, [*argv, op, json.dumps(args)])
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def a_holds_a_slice(d: Daemon, p: People) -> dict[str, Any]:
    out = api(d, p.a, "allocate", mig=["3g.40gb"], container="a-job")
    assert "ok" in out, out
    alloc: dict[str, Any] = out["ok"]
    return alloc


def state_as_root(d: Daemon, alloc_id: int) -> str:
    with d.client() as c:
        return c.allocation(alloc_id).state


# Who the daemon says each caller is, whatever headers the caller sends: role → admin?
WHOAMI = {"a": False, "b": False, "admin": True}


def test_the_kernel_names_the_caller_whatever_the_request_claims(
    daemon_factory: Any, people: People
) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    got = {}
    for role in WHOAMI:
        user = people.name(role)
        out = api(
            d, user, "raw", headers=("X-Ds01-User:root", "X-Remote-User:root"),
            method="GET", path="/v1/whoami",
        )  # fmt: skip
        body = out["ok"]["body"]
        assert (out["ok"]["status"], body["user"], body["uid"]) == (
            200,
            user,
            pwd.getpwnam(user).pw_uid,
        )
        got[role] = body["admin"]
    assert got == WHOAMI


def test_a_request_body_cannot_name_another_user(daemon_factory: Any, people: People) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    out = api(
        d, people.a, "raw", method="POST", path="/v1/allocations",
        json={"gpus": 1, "user": people.b},
    )  # fmt: skip
    assert out["ok"]["status"] == 400
    assert out["ok"]["body"]["error"] == {
        "kind": "usage",
        "what": "bad request: user: Extra inputs are not permitted",
        "why": None,
        "fix": "See 'ds01 --help' or the API description at /v1/openapi.json.",
        "reason": None,
    }
    with d.client() as c:
        assert c.allocations(all_users=True) == []


def test_an_allocation_belongs_to_the_user_who_asked(daemon_factory: Any, people: People) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    alloc = a_holds_a_slice(d, people)
    assert (alloc["user"], alloc["container"], alloc["state"], alloc["gpueq_exact"]) == (
        people.a,
        "a-job",
        "reserved",
        "3/7",
    )
    with d.client() as c:
        listed = [(x.id, x.user) for x in c.allocations(all_users=True)]
        events = [(e.action, e.actor, e.user) for e in c.events() if e.allocation_id == alloc["id"]]
    assert listed == [(alloc["id"], people.a)]
    assert events == [("reserved", people.a, people.a)]
    conn = connect_ro(d.state_dir / "ds01.db")
    row = conn.execute("SELECT user, uid FROM allocations WHERE id = ?", (alloc["id"],)).fetchone()
    conn.close()
    assert row == (people.a, pwd.getpwnam(people.a).pw_uid)


# What B meets, trying each way at A's allocation ({id}: its id).
WAYS_IN = {
    "B releases it through the API": ("NotFound", "allocation {id} not found"),
    "B reads it through the API": ("NotFound", "allocation {id} not found"),
    "B runs 'ds01 admin alloc release'": ("exit 1", "error: allocation {id} not found"),
    "B runs 'ds01 admin alloc list'": (
        "exit 1",
        "error: listing everyone's allocations is for admins",
    ),
    "B lists his own allocations": ("ok", "[]"),
}


def test_another_user_cannot_release_or_read_my_allocation(
    daemon_factory: Any, people: People
) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    alloc = a_holds_a_slice(d, people)
    aid = alloc["id"]
    got: dict[str, tuple[str, str]] = {}
    err = api(d, people.b, "release", alloc_id=aid)["error"]
    got["B releases it through the API"] = (err["type"], err["what"])
    err = api(d, people.b, "allocation", alloc_id=aid)["error"]
    got["B reads it through the API"] = (err["type"], err["what"])
    r = d.cli("admin", "alloc", "release", str(aid), "--reason", "mine", user=people.b)
    got["B runs 'ds01 admin alloc release'"] = (f"exit {r.returncode}", r.stderr.splitlines()[0])
    r = d.cli("admin", "alloc", "list", "--json", user=people.b)
    got["B runs 'ds01 admin alloc list'"] = (f"exit {r.returncode}", r.stderr.splitlines()[0])
    got["B lists his own allocations"] = ("ok", json.dumps(api(d, people.b, "allocations")["ok"]))
    assert got == {way: (kind, text.format(id=aid)) for way, (kind, text) in WAYS_IN.items()}
    assert state_as_root(d, aid) == "reserved"


@pytest.mark.parametrize(
    "role",
    ["admin", "root"],
    ids=["a member of the admin group releases it", "root releases it"],
)
def test_admins_release_another_users_allocation_and_the_log_names_both(
    daemon_factory: Any, people: People, role: str
) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    alloc = a_holds_a_slice(d, people)
    releaser = people.name(role)
    r = d.cli(
        "admin", "alloc", "release", str(alloc["id"]), "--reason", "node maintenance",
        user=None if role == "root" else releaser,
    )  # fmt: skip
    said = f"allocation {alloc['id']} of {people.a}: released"
    assert (r.returncode, r.stdout.strip()) == (0, said)
    seen_by_a = api(d, people.a, "allocation", alloc_id=alloc["id"])["ok"]
    assert (seen_by_a["state"], seen_by_a["release_reason"]) == ("released", "node maintenance")
    with d.client() as c:
        events = [
            (e.action, e.actor, e.user, e.reason)
            for e in c.events()
            if e.allocation_id == alloc["id"]
        ]
    assert events == [
        ("reserved", people.a, people.a, "request"),
        ("released", releaser, people.a, "node maintenance"),
    ]


# privacy → viewer → what the viewer sees of A's unit: (holder, allocation id shown?, container).
# Roles stand for the generated user names; "(hidden)" is literal.
HOLDER_VIEWS: dict[str, dict[str, tuple[str, bool, str | None]]] = {
    "show_all": {
        "a": ("a", True, "a-job"),
        "b": ("a", True, "a-job"),
        "admin": ("a", True, "a-job"),
    },
    "hide_others": {
        "a": ("a", True, "a-job"),
        "b": ("(hidden)", False, None),
        "admin": ("a", True, "a-job"),
    },
}


@pytest.mark.parametrize(
    "privacy",
    list(HOLDER_VIEWS),
    ids=[
        "by default everyone sees who holds a unit",
        "with hide_others only the holder and admins see who holds it",
    ],
)
def test_gpu_status_shows_holders_unless_privacy_hides_others(
    daemon_factory: Any, people: People, privacy: str
) -> None:
    """Through GET /v1/gpu/status: `ds01 gpu status` reads the local inventory and does not
    show holders yet."""
    d: Daemon = daemon_factory(config=config(people.admins, privacy))
    alloc = a_holds_a_slice(d, people)
    (unit,) = alloc["units"]
    got: dict[str, tuple[str, bool, str | None]] = {}
    for viewer in HOLDER_VIEWS[privacy]:
        status = api(d, people.name(viewer), "gpu_status")["ok"]
        row = next(u for u in status["units"] if u["uuid"] == unit["uuid"])
        assert row["state"] == "reserved"
        holder = "a" if row["user"] == people.a else row["user"]
        got[viewer] = (holder, row["allocation_id"] == alloc["id"], row["container"])
        others = {(u["user"], u["state"]) for u in status["units"] if u["uuid"] != unit["uuid"]}
        assert others == {(None, None)}
    assert got == HOLDER_VIEWS[privacy]


def test_events_are_private_to_their_user(daemon_factory: Any, people: People) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    alloc = a_holds_a_slice(d, people)
    refused = api(d, people.b, "allocate", gpus=3, container="too-big")["error"]
    assert refused["reason"] == "max_units_per_container"

    r = d.cli("events", "--json", user=people.b)
    assert r.returncode == 0, r.stderr
    assert [(e["action"], e["user"], e["reason"]) for e in json.loads(r.stdout)] == [
        ("refused", people.b, "max_units_per_container")
    ]

    r = d.cli("events", "--user", people.a, "--json", user=people.b)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == [
        "error: you can only read your own events",
        "  Drop --user, or ask an admin.",
    ]

    for reader in (people.a, people.admin):
        r = d.cli("events", "--user", people.a, "--json", user=reader)
        assert r.returncode == 0, r.stderr
        assert [(e["action"], e["actor"], e["allocation_id"]) for e in json.loads(r.stdout)] == [
            ("reserved", people.a, alloc["id"])
        ]


def test_my_quota_counts_only_my_allocations(daemon_factory: Any, people: People) -> None:
    d: Daemon = daemon_factory(config=config(people.admins))
    a_holds_a_slice(d, people)
    mine = api(d, people.a, "quota")["ok"]
    theirs = api(d, people.b, "quota")["ok"]
    assert (mine["user"], mine["used_gpueq_exact"], len(mine["allocations"])) == (
        people.a,
        "3/7",
        1,
    )
    assert (theirs["user"], theirs["used_gpueq_exact"], theirs["allocations"]) == (
        people.b,
        "0",
        [],
    )
