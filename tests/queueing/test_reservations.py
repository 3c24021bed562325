"""Admins' reservations on a real state database, the simulated 4 × A100 and real Unix users, with
a clock the test moves (services/reservations.py, AllocationService): bad input changes nothing;
in the window others are refused with a message naming the reservation and what to do, while its
user gets the reserved GPUs; before it only a request that must end by its start borrows them;
unused units return after the grace period; a reservation for a group serves its members; a
cancel returns the units; the queue's estimates count reservations; a reopened database keeps
them. Docker is never reached (tests/containers/test_reservations_e2e.py deploys)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest

from ds01.config import Config, parse_config_text
from ds01.errors import Ds01Error, PermissionDenied, Refusal, RefusalReason, UsageError
from ds01.identity import Caller, caller_of_name
from ds01.inventory.select import open_backend, resolve_sim
from ds01.services.allocation import AllocationRequest, AllocationService
from ds01.services.reservations import Created
from ds01.store.db import Database
from support import Users, need

pytestmark = pytest.mark.root

H = 3600.0
T0 = 1_800_000_000.0  # 2027-01-15, a Friday
ROOT = Caller(uid=0, gid=0, pid=1, name="root", groups=frozenset())


def at(t: float) -> str:
    """A time as an admin types it: '2027-01-15 10:00' in local time."""
    return datetime.fromtimestamp(t).strftime("%Y-%m-%d %H:%M")


@pytest.fixture(scope="module")
def people() -> Iterator[dict[str, str]]:
    import os

    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    lab = users.group("ds01tlab")
    names = {
        "ann": users.add(),
        "bob": users.add(),
        "cem": users.add(groups=(lab,)),
        "lab": lab,
    }
    try:
        yield names
    finally:
        users.cleanup()


def _config(bob: str, extra: str = "") -> Config:
    return parse_config_text(
        "defaults:\n  max_gpueq: 4\n  max_units_per_container: 4\n  max_containers: 8\n"
        "  allow_full_gpu: true\n  gpu_hold_after_stop: 10m\n"
        f"users:\n  {bob}:\n    max_runtime: 30m\n"
        "reservations:\n  grace: 30m\n" + extra,
        "test.yaml",
    )


@dataclass
class World:
    svc: AllocationService
    db: Database
    now: list[float]
    config: list[Config]
    p: dict[str, str]
    tmp: Path

    def caller(self, key: str) -> Caller:
        return caller_of_name(self.p[key])

    def gpus(
        self, key: str, n: int = 1, on_warning: Callable[[str], None] | None = None
    ) -> list[str]:
        row = self.svc.allocate(
            self.caller(key), AllocationRequest.from_options(gpus=n), on_warning=on_warning
        )
        return [u.name for u in row.units]

    def reserve(
        self, units: str, start: float, end: float, who: str, grace: str | None = None
    ) -> Created:
        return self.svc.reservations.create(
            ROOT, [units], at(start), at(end), who, "thesis deadline", grace
        )

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        with self.db.transaction(immediate=False) as conn:
            return [tuple(r) for r in conn.execute(sql)]


def _service(db: Database, config: list[Config], now: list[float]) -> AllocationService:
    svc = AllocationService(db, lambda: config[0], clock=lambda: now[0])
    backend = open_backend("sim", resolve_sim("4xA100-40GB"))
    svc.sync_units(backend.sample())
    backend.close()
    return svc


@pytest.fixture
def world(tmp_path: Path, people: dict[str, str]) -> Iterator[World]:
    config = [_config(people["bob"])]
    now = [T0]
    db = Database(tmp_path / "ds01.db")
    yield World(_service(db, config, now), db, now, config, people, tmp_path)
    db.close()


BAD = [
    pytest.param(
        dict(units="9"), UsageError, "no unit or GPU here is called '9'", id="an unknown unit"
    ),
    pytest.param(
        dict(start=T0 + 3 * H, end=T0 + 2 * H),
        UsageError,
        "is not after --from",
        id="--to before --from",
    ),
    pytest.param(
        dict(start=T0 - 3 * H, end=T0 - H),
        UsageError,
        "which has passed",
        id="a window in the past",
    ),
    pytest.param(
        dict(units="1", start=T0 + 2 * H, end=T0 + 5 * H),
        Refusal,
        "GPU 1 is already reserved for",
        id="a unit reserved already over an overlapping window",
    ),
    pytest.param(
        dict(who="nosuchuser"), UsageError, "no user or group of that name", id="an unknown user"
    ),
    pytest.param(
        dict(who="group:nosuchgroup"), UsageError, "no group of that name", id="an unknown group"
    ),
    pytest.param(dict(reason="  "), UsageError, "--reason must be", id="no reason"),
    pytest.param(
        dict(end_text="whenever"),
        UsageError,
        "--to 'whenever' is neither a time nor a length of time",
        id="a time nobody can read",
    ),
    pytest.param(
        dict(caller="bob"), PermissionDenied, "is for admins", id="a user who is no admin"
    ),
]


@pytest.mark.parametrize(("change", "error", "text"), BAD)
def test_bad_input_gets_a_precise_error_and_changes_nothing(
    world: World, change: dict[str, object], error: type[Ds01Error], text: str
) -> None:
    world.reserve("1", T0 + H, T0 + 3 * H, world.p["ann"])
    before = world.rows("SELECT * FROM reservations"), world.rows("SELECT * FROM events")
    args = {
        "units": "0,1",
        "start": T0 + H,
        "end": T0 + 2 * H,
        "who": world.p["ann"],
        "reason": "thesis deadline",
    } | change
    caller = world.caller(str(args["caller"])) if "caller" in args else ROOT
    with pytest.raises(error) as got:
        world.svc.reservations.create(
            caller,
            [str(args["units"])],
            at(float(args["start"])),  # type: ignore[arg-type]
            str(args.get("end_text") or at(float(args["end"]))),  # type: ignore[arg-type]
            str(args["who"]),
            str(args["reason"]),
        )
    assert text in " ".join(got.value.lines())
    assert got.value.fix  # every refusal says what to do
    assert (world.rows("SELECT * FROM reservations"), world.rows("SELECT * FROM events")) == before


def test_units_are_named_as_gpu_status_names_them(world: World) -> None:
    uuid = world.svc.status()[3].unit.unit.uuid
    made = world.svc.reservations.create(
        ROOT, ["0,1", uuid], "now", "2h", world.p["ann"], "course"
    ).reservation
    names = {v.unit.unit.uuid: v.unit.unit.name for v in world.svc.status()}
    assert [names[u] for u in made.units] == ["0", "1", "3"]
    assert (made.start, made.end) == (T0, T0 + 2 * H)  # --to as a length counts from --from


def test_in_the_window_others_are_refused_and_its_user_gets_the_reserved_gpus(
    world: World,
) -> None:
    made = world.reserve("2,3", T0 + H, T0 + 3 * H, world.p["ann"]).reservation
    world.now[0] = T0 + H
    assert world.gpus("cem", 2) == ["0", "1"]  # the unreserved GPUs go as usual
    with pytest.raises(Refusal) as got:
        world.gpus("bob")  # bob's max_runtime does not help once the window is open
    r = got.value
    assert r.reason is RefusalReason.NO_CAPACITY  # a queued deploy waits for it
    assert f"reserved for {world.p['ann']}" in r.why and f"reservation {made.id}" in r.why
    assert "GPU 2 and GPU 3 are reserved" in (r.why or "")
    assert "--queue" in (r.fix or "")
    assert "2 reserved for others" in r.what
    # ann gets the reserved GPUs, and the reservation is recorded as used
    assert world.gpus("ann", 2) == ["2", "3"]
    assert world.rows("SELECT used_at FROM reservations") == [(T0 + H,)]
    assert world.rows("SELECT action FROM events WHERE kind = 'admin' ORDER BY id") == [
        ("reserve",),
        ("reservation_used",),
    ]


def test_its_user_gets_the_reserved_gpus_first_in_the_window(world: World) -> None:
    world.reserve("3", T0, T0 + 3 * H, world.p["ann"])
    assert world.gpus("ann") == ["3"]  # not GPU 0, which least-recently-used would pick


def test_before_the_window_only_a_request_that_must_end_by_its_start_borrows_the_gpus(
    world: World,
) -> None:
    world.reserve("2,3", T0 + H, T0 + 3 * H, world.p["ann"])
    assert world.gpus("cem", 2) == ["0", "1"]
    with pytest.raises(Refusal) as got:
        world.gpus("cem")  # no max_runtime: it could run into the window
    assert "until it starts only a container that must end before then" in (got.value.why or "")
    # bob's max_runtime (30 min) + GPU hold (10 min) end before the window: he may borrow one
    said: list[str] = []
    assert world.gpus("bob", on_warning=said.append) == ["2"]
    assert len(said) == 1 and "You get it because your container must end before then" in said[0]
    world.now[0] = T0 + 25 * 60  # now 30 + 10 min from here would end after the window opens
    with pytest.raises(Refusal):
        world.gpus("bob")


def test_a_runtime_exemption_keeps_a_user_from_borrowing_reserved_gpus(world: World) -> None:
    from ds01.lifecycle.exemptions import Exemptions
    from ds01.model.activity import Countdown

    world.reserve("0,1,2,3", T0 + H, T0 + 3 * H, world.p["ann"])
    Exemptions(world.svc, lambda: world.now[0]).exempt(
        ROOT, world.p["bob"], Countdown.RUNTIME, None, "1d", "long run"
    )
    with pytest.raises(Refusal):
        world.gpus("bob")


def test_unused_units_return_to_the_pool_after_the_grace_period(world: World) -> None:
    world.reserve("0,1,2,3", T0 + H, T0 + 3 * H, world.p["ann"])
    world.now[0] = T0 + H + 29 * 60
    assert world.svc.expire_due() == []
    with pytest.raises(Refusal):
        world.gpus("cem")
    world.now[0] = T0 + H + 30 * 60  # 30 min (reservations.grace) after its start, unused
    assert world.gpus("cem") == ["0"]  # back in the pool, whether or not tick() has run yet
    world.svc.expire_due()
    assert world.rows("SELECT state FROM reservations") == [("expired",)]
    assert world.rows("SELECT action FROM events WHERE kind = 'admin' ORDER BY id")[-1] == (
        "reservation_expired",
    )


def test_a_used_reservation_holds_until_its_end(world: World) -> None:
    world.reserve("2,3", T0 + H, T0 + 3 * H, world.p["ann"], grace="10m")
    world.now[0] = T0 + H + 5 * 60
    assert world.gpus("ann") == ["2"]
    world.now[0] = T0 + 2 * H  # long past the grace period: used, so GPU 3 stays reserved
    world.svc.expire_due()
    assert world.gpus("cem", 2) == ["0", "1"]
    with pytest.raises(Refusal):
        world.gpus("cem")
    world.now[0] = T0 + 3 * H
    world.svc.expire_due()
    assert world.rows("SELECT state FROM reservations") == [("ended",)]
    assert world.gpus("cem") == ["3"]


def test_a_reservation_for_a_group_serves_its_members(world: World) -> None:
    world.reserve("3", T0, T0 + 3 * H, f"group:{world.p['lab']}")
    assert world.gpus("ann", 3) == ["0", "1", "2"]
    with pytest.raises(Refusal):
        world.gpus("bob")
    assert world.gpus("cem") == ["3"]  # cem is in the Unix group


def test_a_cancelled_reservation_returns_its_units_and_is_audited(world: World) -> None:
    made = world.reserve("0,1,2,3", T0, T0 + 3 * H, world.p["ann"]).reservation
    with pytest.raises(Refusal):
        world.gpus("bob")
    with pytest.raises(PermissionDenied):
        world.svc.reservations.cancel(world.caller("bob"), made.id, "mine now")
    world.svc.reservations.cancel(ROOT, made.id, "course moved")
    assert world.gpus("bob") == ["0"]
    assert world.rows("SELECT actor, action FROM events WHERE kind = 'admin' ORDER BY id") == [
        ("root", "reserve"),
        ("root", "unreserve"),
    ]
    with pytest.raises(Refusal):  # cancelled once
        world.svc.reservations.cancel(ROOT, made.id, "again")


def test_an_admin_is_told_about_units_in_use_that_the_reservation_does_not_take(
    world: World,
) -> None:
    world.gpus("bob")
    made = world.reserve("0,1", T0 + H, T0 + 2 * H, world.p["ann"])
    assert len(made.warnings) == 1
    assert f"GPU 0 is in use by {world.p['bob']}" in made.warnings[0]
    assert "ds01 admin alloc release" in made.warnings[0]


def test_a_reservation_survives_a_restart(world: World) -> None:
    world.reserve("0,1,2,3", T0, T0 + 3 * H, world.p["ann"])
    world.db.close()
    db = Database(world.tmp / "ds01.db")
    try:
        svc = _service(db, world.config, world.now)
        with pytest.raises(Refusal):
            svc.allocate(world.caller("bob"), AllocationRequest.from_options(gpus=1))
        row = svc.allocate(world.caller("ann"), AllocationRequest.from_options(gpus=1))
        assert [u.name for u in row.units] == ["0"]
    finally:
        db.close()
    world.db = Database(world.tmp / "ds01.db")


def test_the_queues_estimates_count_reservations(world: World) -> None:
    """GPUs 0-1 are held (no known end); 2-3 are reserved for ann from +1 h, unused with a
    30 min grace: cem's entry can start when they return (+1.5 h); ann's now, on her own
    reserved GPUs; once bob borrows them both, ann's by her window's start."""
    from ds01.runtime.engine import Engine
    from ds01.services.containers import ContainerService, DeployRequest
    from ds01.services.queue import QueueService

    world.reserve("2,3", T0 + H, T0 + 3 * H, world.p["ann"])
    world.gpus("cem", 2)
    containers = ContainerService(
        world.svc, Engine("unix:///nonexistent.sock"), lambda: world.config[0]
    )
    queue = QueueService(containers, None, clock=lambda: world.now[0])
    full = Refusal(RefusalReason.NO_CAPACITY, "no free GPU")

    def req(name: str) -> DeployRequest:
        return DeployRequest(
            name=name, image="img", allocation=AllocationRequest.from_options(gpus=1)
        )

    def etas() -> dict[str, float | None]:
        return {p.entry.user: p.estimated_start for p in queue.entries(ROOT, all_users=True)}

    cem = queue.enqueue(world.caller("cem"), req("c"), full)
    ann = queue.enqueue(world.caller("ann"), req("a"), full)
    assert (cem.position, ann.position) == (1, 2)
    assert etas() == {world.p["cem"]: T0 + 1.5 * H, world.p["ann"]: T0}
    assert world.gpus("bob", 2) == ["2", "3"]  # bob's 40 min end before the window
    assert etas()[world.p["ann"]] == T0 + H
