"""The queue's use cases on a real state database (services/queue.py, store/queue.py), with a
clock the test moves: what is queued and what is refused, one entry per name, the per-user
bound, cancel and explain only for the owner or an admin, what privacy shows of others'
entries, and expiry after queue.max_wait with a notice. Docker is never reached: these paths
stop before a deploy (the end-to-end tests in tests/containers/test_queue_e2e.py deploy)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ds01.config import Config, parse_config_text
from ds01.errors import NotFound, Refusal, RefusalReason
from ds01.identity import Caller
from ds01.runtime.engine import Engine
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.containers import ContainerService, DeployRequest
from ds01.services.queue import QueueService
from ds01.store.db import Database

ANN = Caller(uid=5001, gid=5001, pid=1, name="ann", groups=frozenset())
BOB = Caller(uid=5002, gid=5002, pid=1, name="bob", groups=frozenset())
ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())
FULL = Refusal(RefusalReason.NO_CAPACITY, "no free GPU")

T0 = 1_000_000.0


@dataclass
class Told:
    """The notifier's one method, recording what it was asked to say."""

    said: list[tuple[str, str, str]] = field(default_factory=list)

    def notify(
        self,
        user: str,
        topic: str,
        message: str,
        *,
        allocation_id: int | None = None,
        container_id: str | None = None,
    ) -> object:
        self.said.append((user, topic, message))
        return None


@dataclass
class World:
    queue: QueueService
    told: Told
    now: list[float]
    db: Database
    config: list[Config]

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with self.db.transaction(immediate=False) as conn:
            return [tuple(r) for r in conn.execute(sql)]


def _config(privacy: str = "show_all") -> Config:
    return parse_config_text(
        f"privacy: {privacy}\ndefaults:\n  allow_full_gpu: true\n  max_gpueq: 4\n"
        "queue:\n  max_wait: 1h\n  max_per_user: 2\n",
        "test.yaml",
    )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    config = [_config()]
    now = [T0]
    db = Database(tmp_path / "ds01.db")
    allocations = AllocationService(db, lambda: config[0], clock=lambda: now[0])
    containers = ContainerService(
        allocations, Engine("unix:///nonexistent.sock"), lambda: config[0]
    )
    told = Told()
    yield World(QueueService(containers, told, clock=lambda: now[0]), told, now, db, config)
    db.close()


def _req(name: str, gpus: int = 1) -> DeployRequest:
    return DeployRequest(
        name=name, image="img", allocation=AllocationRequest.from_options(gpus=gpus)
    )


@pytest.mark.parametrize(
    "reason",
    [RefusalReason.MAX_GPUEQ, RefusalReason.MAX_CONTAINERS, RefusalReason.POLICY],
    ids=["over max_gpueq", "over max_containers", "a policy refusal"],
)
def test_only_a_capacity_refusal_is_queued(world: World, reason: RefusalReason) -> None:
    with pytest.raises(Refusal) as got:
        world.queue.enqueue(ANN, _req("a"), Refusal(reason, "no"))
    assert got.value.reason is reason
    assert world.rows("SELECT id FROM queue") == []


def test_a_queued_request_gets_an_id_a_position_and_an_event(world: World) -> None:
    placed = world.queue.enqueue(ANN, _req("a", gpus=2), FULL)
    assert (placed.position, placed.entry.state.value, placed.entry.size) == (1, "queued", 2.0)
    assert world.rows("SELECT user, action, reason FROM events WHERE kind = 'queue'") == [
        ("ann", "queued", "no_capacity")
    ]


def test_one_waiting_entry_per_container_name_and_at_most_max_per_user(world: World) -> None:
    world.queue.enqueue(ANN, _req("a"), FULL)
    with pytest.raises(Refusal) as twice:
        world.queue.enqueue(ANN, _req("a"), FULL)
    assert twice.value.reason is RefusalReason.NAME_IN_USE
    world.queue.enqueue(BOB, _req("a"), FULL)  # another user's 'a' is theirs
    world.queue.enqueue(ANN, _req("b"), FULL)
    with pytest.raises(Refusal) as third:
        world.queue.enqueue(ANN, _req("c"), FULL)
    assert "at most 2" in third.value.what
    assert world.rows("SELECT user, name FROM queue ORDER BY id") == [
        ("ann", "a"),
        ("bob", "a"),
        ("ann", "b"),
    ]


def test_another_user_can_neither_cancel_nor_explain_an_entry(world: World) -> None:
    a = world.queue.enqueue(ANN, _req("a"), FULL).entry
    for act in (world.queue.cancel, world.queue.explain):
        with pytest.raises(NotFound):
            act(BOB, a.id)
    with pytest.raises(NotFound):
        world.queue.cancel(BOB, 999)  # unknown and not-yours read the same
    assert world.rows("SELECT state FROM queue") == [("queued",)]
    assert world.queue.cancel(ROOT, a.id).state.value == "cancelled"  # an admin may
    assert world.rows("SELECT actor, user, reason FROM events WHERE action = 'cancelled'") == [
        ("root", "ann", "admin_cancel")
    ]


@pytest.mark.parametrize(
    ("privacy", "bob_sees_ann"),
    [("show_all", True), ("hide_others", False)],
    ids=["show_all: names are shown", "hide_others: names are hidden"],
)
def test_what_others_see_of_an_entry(world: World, privacy: str, bob_sees_ann: bool) -> None:
    world.config[0] = _config(privacy)
    world.queue.enqueue(ANN, _req("a"), FULL)
    world.queue.enqueue(BOB, _req("b"), FULL)
    mine = world.queue.entries(BOB, all_users=False)
    assert [(p.entry.user, p.position) for p in mine] == [("bob", 2)]
    everyone = world.queue.entries(BOB, all_users=True)
    ann = everyone[0].entry
    assert ann.user == "ann"
    assert world.queue.may_see(BOB, ann) is False  # her container name, image, note: hers
    assert world.queue.shows_user(BOB, ann) is bob_sees_ann
    assert world.queue.may_see(ROOT, ann) is True


def test_an_entry_older_than_max_wait_expires_and_its_user_is_told(world: World) -> None:
    a = world.queue.enqueue(ANN, _req("a"), FULL).entry
    world.now[0] = T0 + 3599
    world.queue._expire()
    assert world.rows("SELECT state FROM queue") == [("queued",)]
    world.now[0] = T0 + 3600
    assert world.queue.dispatch() == []
    assert world.rows("SELECT state FROM queue") == [("expired",)]
    assert [(u, t) for u, t, _ in world.told.said] == [("ann", "queue")]
    assert f"queue entry {a.id}" in world.told.said[0][2]
    assert world.queue.entries(ANN, all_users=False) == []
    with pytest.raises(Refusal):  # an ended entry cannot be cancelled
        world.queue.cancel(ANN, a.id)


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("queue:\n  max_wait: 0s\n", "queue.max_wait"),
        ("queue:\n  weights: {age: -1}\n", "queue.weights.age"),
        ("queue:\n  group_priority: {lab: 2}\n", "queue.group_priority.lab"),
        ("queue:\n  max_wiat: 1h\n", "queue"),
    ],
    ids=["a zero max_wait", "a negative weight", "a group priority over 1", "a misspelt key"],
)
def test_a_bad_queue_section_is_a_config_error_naming_the_key(text: str, where: str) -> None:
    from ds01.errors import ConfigError

    with pytest.raises(ConfigError) as got:
        parse_config_text(text, "test.yaml")
    assert where in str(got.value) and "test.yaml:" in str(got.value)


def test_an_admitted_entry_charges_its_penalty_and_its_use_counts(world: World) -> None:
    """ann's allocation that the queue admitted counts as 1 GPU × entry_penalty (1 h) at once,
    and its hour of use an hour later; bob, who used nothing, has no usage."""
    from ds01.inventory import select
    from ds01.store import queue as store
    from ds01.store.queue import EntryState
    from support import MACHINES

    allocations = world.queue.allocations
    allocations.sync_units(select.open_backend("sim", MACHINES / "4xA100-40GB.yaml").sample())
    row = allocations.allocate(ANN, AllocationRequest.from_options(gpus=1))
    first = world.queue.enqueue(ANN, _req("a"), FULL).entry
    with world.db.transaction() as conn:  # as the dispatcher records an admission
        assert store.take(conn, first.id, T0)
        assert store.set_state(
            conn,
            first.id,
            EntryState.ADMITTED,
            T0,
            from_states=(EntryState.ADMITTING,),
            allocation_id=row.id,
        )
    mine = world.queue.enqueue(ANN, _req("b"), FULL).entry
    theirs = world.queue.enqueue(BOB, _req("c"), FULL).entry
    pr = world.queue.explain(ANN, mine.id).priority
    assert pr is not None and pr.usage == pytest.approx(3600.0)
    other = world.queue.explain(BOB, theirs.id).priority
    assert other is not None and other.usage == 0.0
    world.now[0] = T0 + 3600
    later = world.queue.explain(ANN, mine.id).priority
    # the penalty decayed by one hour of a week's half-life (3600 · 2^(-1/168) = 3585.2) plus
    # an hour of use (3592.6, tests/queueing/test_priority.py): 7177.8
    assert later is not None and later.usage == pytest.approx(7177.8, rel=1e-4)
    # bob, with no use, now ranks ahead of ann's later entry although he queued after her
    assert [p.entry.id for p in world.queue.entries(ROOT, all_users=True)] == [theirs.id, mine.id]


@pytest.mark.parametrize(
    ("made", "expected"),
    [
        pytest.param(
            "nothing", "queued", id="no allocation: its deploy never began, it waits again"
        ),
        pytest.param("reserved", "admitting", id="still reserved: recovery waits for Docker"),
        pytest.param("undone", "queued", id="released unbound: recovery undid it, it waits again"),
        pytest.param("active", "admitted", id="bound to its container: admitted"),
        pytest.param("ran", "admitted", id="bound, then released: admitted, never started twice"),
    ],
)
def test_an_entry_a_crash_left_admitting_is_settled_from_its_allocation(
    world: World, made: str, expected: str
) -> None:
    from ds01.inventory import select
    from ds01.store import queue as store
    from support import MACHINES

    allocations = world.queue.allocations
    allocations.sync_units(select.open_backend("sim", MACHINES / "4xA100-40GB.yaml").sample())
    entry = world.queue.enqueue(ANN, _req("a"), FULL).entry
    with world.db.transaction() as conn:  # the dispatcher's take, then a kill -9
        assert store.take(conn, entry.id, T0)
    if made != "nothing":
        row = allocations.allocate(ANN, AllocationRequest.from_options(gpus=1, container="a"))
        if made in ("active", "ran"):
            allocations.activate(row.id, container_id="c0ffee", actor="ann", reason="deployed")
        if made in ("undone", "ran"):
            allocations.release_by_daemon(row.id, "test")
    world.queue._settle()
    assert world.rows("SELECT state FROM queue") == [(expected,)]
    if expected == "admitted":
        assert world.rows("SELECT container_id FROM queue") == [("c0ffee",)]
        assert [u for u, _, _ in world.told.said] == ["ann"]


def test_line_empty_is_true_only_after_a_pass_saw_no_entry_and_none_came_since(
    world: World,
) -> None:
    """ds01d skips the dispatcher's wake-up on a release while the line is empty; an entry
    added after a pass began must end that."""
    assert not world.queue.line_empty()  # a new daemon does not know: the first pass tells
    assert world.queue.dispatch() == []
    assert world.queue.line_empty()
    a = world.queue.enqueue(ANN, _req("a"), FULL).entry
    assert not world.queue.line_empty()
    world.queue.cancel(ANN, a.id)
    assert not world.queue.line_empty()  # until a pass has looked
    assert world.queue.dispatch() == []
    assert world.queue.line_empty()
