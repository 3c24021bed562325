"""Allocation semantics through a real ds01d, over its socket, with the typed client (as root):
what each request kind gets on the simulated 8×H100 (GPUs 0-3 whole; 4: 7×1g.10gb;
5: 3g.40gb+2g.20gb+1g.10gb×2; 6: 4g.40gb+3g.40gb; 7: 3g.40gb×2), the quota rules in order with
their refusal reasons, the states and their events, and reservation expiry.

Expected units are literal (GPU index, profile) pairs worked out from the issue's placement
rules by hand, never by calling the scheduler.
"""

from __future__ import annotations

import shutil
import signal
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn, AllocationOut
from ds01.client import Client
from ds01.errors import DaemonUnavailable, NotFound, Refusal
from support import MACHINES, Daemon, short_tmp, wait_for


def config(
    *,
    max_gpueq: str = "8",
    max_units: int = 7,
    max_containers: int = 10,
    allow_full_gpu: bool = True,
    extra: str = "",
    reservation_timeout: str | None = None,
) -> str:
    text = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: {max_gpueq}
  max_units_per_container: {max_units}
  max_containers: {max_containers}
  allow_full_gpu: {str(allow_full_gpu).lower()}
docker:
  host: {NOWHERE}
"""
    if reservation_timeout:
        text += f"allocation:\n  reservation_timeout: {reservation_timeout}\n"
    return text + extra


@pytest.fixture(scope="module")
def shared() -> Iterator[Daemon]:
    """One daemon for cases that only need a config of their own (see reconfigure())."""
    d = Daemon(short_tmp(), config(), MACHINES / "8xH100-mig-mixed.yaml", None)
    d.start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


def reconfigure(d: Daemon, cfg: str) -> int:
    """Release every allocation, load `cfg` with SIGHUP (the daemon's reload), and return the
    id of the newest event so far."""
    with d.client() as c:
        for a in c.allocations(all_users=True):
            c.release(a.id, reason="next case")
        mark = max((e.id for e in c.events(limit=1)), default=0)
    before = d.log().count("config reloaded from")
    d.write_config(cfg)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(
        lambda: d.log().count("config reloaded from") > before,
        "the config reload",
        20,
        detail=lambda: d.log()[-2000:],
    )
    return mark


def placed(a: AllocationOut) -> list[tuple[int, str | None]]:
    return [(u.gpu_index, u.profile) for u in a.units]


REQUESTS = [
    (AllocateIn(gpus=1), [(0, None)], "1"),
    # GPU 1 is busy outside ds01 (the machine file's python process, 94 %): chosen last.
    (AllocateIn(gpus=2), [(0, None), (2, None)], "2"),
    (AllocateIn(gpus=4), [(0, None), (1, None), (2, None), (3, None)], "4"),
    (AllocateIn(mig=["3g.40gb"]), [(7, "3g.40gb")], "3/7"),
    (AllocateIn(mig=["4g.40gb"]), [(6, "4g.40gb")], "4/7"),
    (AllocateIn(mig=["2g.20gb"]), [(5, "2g.20gb")], "2/7"),
    (AllocateIn(mig=["1g.10gb", "1g.10gb"]), [(4, "1g.10gb"), (4, "1g.10gb")], "2/7"),
    (AllocateIn(mig=["MIG 3g.40gb", "2g.20gb"]), [(5, "2g.20gb"), (7, "3g.40gb")], "5/7"),
    (AllocateIn(gpueq="1/7"), [(4, "1g.10gb")], "1/7"),
    (AllocateIn(gpueq="2/7"), [(5, "2g.20gb")], "2/7"),
    (AllocateIn(gpueq="0.5"), [(6, "4g.40gb")], "4/7"),
    (AllocateIn(gpueq="1"), [(0, None)], "1"),
]


@pytest.mark.parametrize(
    ("request_in", "units", "gpueq"),
    REQUESTS,
    ids=[
        "gpus=1 takes the first whole GPU, never one in MIG mode",
        "gpus=2 takes two whole GPUs",
        "gpus=4 takes every whole GPU there is",
        "a 3g slice goes to the GPU it fits best (GPU 7 has the least left)",
        "the only 4g slice is on GPU 6",
        "the only 2g slice is on GPU 5",
        "two 1g slices pack onto one GPU",
        "a request may mix profiles, with or without the MIG prefix (listed in GPU order)",
        "gpueq=1/7 takes the smallest slice worth it",
        "gpueq=2/7 takes one 2g slice rather than two 1g slices",
        "gpueq=0.5 takes the smallest single unit worth at least half a GPU",
        "gpueq=1 takes a whole GPU when whole GPUs are allowed",
    ],
)
def test_each_request_kind_gets_the_units_the_placement_rules_say(
    daemon_factory: Any, request_in: AllocateIn, units: list[tuple[int, str | None]], gpueq: str
) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        a = c.allocate(request_in)
    assert (placed(a), a.gpueq_exact, a.state, a.user) == (units, gpueq, "reserved", "root")


def test_whole_gpus_go_least_recently_used_first(daemon_factory: Any) -> None:
    """Never used beats released; among released GPUs, the one released longest ago. GPU 1
    is busy outside ds01 (scheduler/busy.py) and is passed over while a quiet GPU is free."""
    d: Daemon = daemon_factory(config=config())
    order = []
    with d.client() as c:
        for i in range(6):
            a = c.allocate(AllocateIn(gpus=1, container=f"lru-{i}"))
            order.append(a.units[0].gpu_index)
            c.release(a.id)
    assert order == [0, 2, 3, 0, 2, 3]


def test_mig_slices_pack_onto_a_gpu_already_in_use(daemon_factory: Any) -> None:
    """GPU 7 (two 3g, one slice unused) fits a 3g best; the second 3g packs onto it too, keeping
    GPUs 5 and 6 untouched for other profiles; then GPU 6, whose free slices tie with GPU 5's
    (7/7 each): GPU 5's 3g.40gb slice runs processes outside ds01 (the machine file's), so it
    comes last (scheduler/busy.py)."""
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        got = [placed(c.allocate(AllocateIn(mig=["3g.40gb"]))) for _ in range(4)]
    assert got == [[(7, "3g.40gb")], [(7, "3g.40gb")], [(6, "3g.40gb")], [(5, "3g.40gb")]]


GROUP = """\
groups:
  everyone:
    unix_group: root
    max_gpueq_total: 1
"""

# (config, requests that succeed first, the request refused, its reason, the first words).
REFUSALS = [
    (config(allow_full_gpu=False), [], AllocateIn(gpus=1), "full_gpu_not_allowed", "quota:"),
    (config(max_units=1), [], AllocateIn(gpus=2), "max_units_per_container", "quota:"),
    (
        config(max_units=1),
        [],
        AllocateIn(mig=["1g.10gb", "1g.10gb"]),
        "max_units_per_container",
        "quota:",
    ),
    (
        config(max_containers=1),
        [AllocateIn(gpus=1)],
        AllocateIn(gpus=1),
        "max_containers",
        "quota:",
    ),
    (
        config(max_gpueq="1"),
        [AllocateIn(gpus=1)],
        AllocateIn(mig=["1g.10gb"]),
        "max_gpueq",
        "quota:",
    ),
    (
        config(max_gpueq="1"),
        [AllocateIn(mig=["3g.40gb"]), AllocateIn(mig=["4g.40gb"])],
        AllocateIn(mig=["1g.10gb"]),
        "max_gpueq",
        "quota:",
    ),
    (
        config(extra=GROUP),
        [AllocateIn(gpus=1)],
        AllocateIn(mig=["1g.10gb"]),
        "group_max_gpueq",
        "quota:",
    ),
    (config(), [AllocateIn(gpus=4)], AllocateIn(gpus=1), "no_capacity", "capacity:"),
    (
        config(),
        [AllocateIn(mig=["4g.40gb"])],
        AllocateIn(mig=["4g.40gb"]),
        "no_capacity",
        "capacity:",
    ),
    (config(), [], AllocateIn(mig=["7g.80gb"]), "unknown_profile", "request:"),
    (
        config(allow_full_gpu=False, max_units=1),
        [],
        AllocateIn(gpus=2),
        "full_gpu_not_allowed",
        "quota:",
    ),
    (
        config(max_units=1, max_containers=1),
        [AllocateIn(mig=["1g.10gb"])],
        AllocateIn(gpus=2),
        "max_units_per_container",
        "quota:",
    ),
    (
        config(max_containers=1, max_gpueq="1"),
        [AllocateIn(gpus=1)],
        AllocateIn(gpus=1),
        "max_containers",
        "quota:",
    ),
    (
        config(max_gpueq="1", extra=GROUP),
        [AllocateIn(mig=["3g.40gb"])],
        AllocateIn(mig=["4g.40gb", "1g.10gb"]),
        "max_gpueq",
        "quota:",
    ),
]


@pytest.mark.parametrize(
    ("cfg", "before", "request_in", "reason", "prefix"),
    REFUSALS,
    ids=[
        "a whole GPU for someone whose limits forbid it",
        "two GPUs in one container when one unit is the limit",
        "two slices in one container when one unit is the limit",
        "one container more than max_containers",
        "a slice on top of a whole GPU at max_gpueq 1",
        "a 1g slice after 3/7 + 4/7 has filled max_gpueq 1 exactly",
        "a slice that would take the group over its aggregate cap",
        "a fifth whole GPU on a machine with four",
        "the only 4g slice when it is taken",
        "a profile this machine does not have",
        "allow_full_gpu is checked before max_units_per_container",
        "max_units_per_container is checked before max_containers",
        "max_containers is checked before max_gpueq",
        "max_gpueq is checked before the group cap",
    ],
)
def test_a_refusal_names_its_rule_explains_itself_and_is_logged(
    shared: Daemon,
    cfg: str,
    before: list[AllocateIn],
    request_in: AllocateIn,
    reason: str,
    prefix: str,
) -> None:
    mark = reconfigure(shared, cfg)
    with shared.client() as c:
        for i, req in enumerate(before):
            c.allocate(req.model_copy(update={"container": f"first-{i}"}))
        with pytest.raises(Refusal) as caught:
            c.allocate(request_in.model_copy(update={"container": "refused"}))
        refused = [e for e in c.events(kind="alloc") if e.id > mark and e.action == "refused"]
        live = len(c.allocations())
    err = caught.value
    assert err.reason.value == reason
    assert err.what.startswith(prefix), err.what
    assert err.why and err.fix, err.lines()
    assert [(e.reason, e.user, e.actor, e.message) for e in refused] == [
        (reason, "root", "root", err.what)
    ]
    assert live == len(before)


# Bodies refused before any decision, by the schema or the one request mapping
# (AllocationRequest.from_options): (HTTP status, error.kind, error.what).
MALFORMED: dict[str, tuple[dict[str, Any], tuple[int, str, str]]] = {
    "gpus=0 asks for nothing": (
        {"gpus": 0},
        (400, "usage", "bad request: gpus: Input should be greater than or equal to 1"),
    ),
    "two kinds in one request": (
        {"gpus": 1, "mig": ["1g.10gb"]},
        (400, "usage", "give one of gpus, mig, gpueq or cpu_only, not gpus and mig"),
    ),
    "a gpueq that is not a number": (
        {"gpueq": "half"},
        (400, "usage", "gpueq: expected a number like 0.5 or 3/7, got 'half'"),
    ),
    "a gpueq with an exponent (Fraction would build 10**30000000)": (
        {"gpueq": "1e30000000"},
        (400, "usage", "gpueq: expected a number like 0.5 or 3/7, got '1e30000000'"),
    ),
    "a container name with a terminal escape": (
        {"gpus": 1, "container": "job\x1b[2J"},
        (400, "usage", "invalid container name 'job\\x1b[2J'"),
    ),
    "a container name with a newline (a forged table row)": (
        {"gpus": 1, "container": "a\nb  GPU-0  root"},
        (400, "usage", "invalid container name 'a\\nb  GPU-0  root'"),
    ),
    "a path as a container name": (
        {"gpus": 1, "container": "../../etc/passwd"},
        (400, "usage", "invalid container name '../../etc/passwd'"),
    ),
    "an unknown field": (
        {"gpus": 1, "priority": "high"},
        (400, "usage", "bad request: priority: Extra inputs are not permitted"),
    ),
}  # fmt: skip


def test_a_malformed_request_is_a_usage_error_not_a_refusal(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    got = {}
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://ds01d"
    ) as h:
        for case, (body, _) in MALFORMED.items():
            r = h.post("/v1/allocations", json=body)
            err = r.json()["error"]
            got[case] = (body, (r.status_code, err["kind"], err["what"]))
        bad_ids = {i: h.get(f"/v1/allocations/{i}") for i in ("x", "9" * 30, "1" * 5000, "-1", "١")}
    assert got == MALFORMED
    assert {i: (r.status_code, r.json()["error"]["what"]) for i, r in bad_ids.items()} == {
        "x": (400, "allocation id must be a number, got 'x'"),
        "9" * 30: (400, f"allocation id must be a number, got {'9' * 30!r}"),
        "1" * 5000: (400, f"allocation id must be a number, got {'1' * 40!r}"),
        "-1": (400, "allocation id must be a number, got '-1'"),
        "١": (400, "allocation id must be a number, got '١'"),
    }
    with d.client() as c:
        assert c.events(kind="alloc") == []  # nothing was decided, so nothing was logged


def test_reserve_then_release_is_two_events_with_reasons(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        a = c.allocate(AllocateIn(mig=["2g.20gb"], container="job"))
        released = c.release(a.id, reason="done with it")
        again = c.release(a.id, reason="twice")
        evs = [(e.action, e.reason, e.actor, e.user) for e in c.events(kind="alloc")]
        status = {u.uuid: (u.user, u.state) for u in c.gpu_status().units}
    assert (released.state, released.release_reason) == ("released", "done with it")
    assert (again.state, again.release_reason) == ("released", "done with it")
    assert evs == [
        ("reserved", "request", "root", "root"),
        ("released", "done with it", "root", "root"),
    ]
    assert status[a.units[0].uuid] == (None, None)


def test_a_container_name_is_held_once_until_released(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1, container="same"))
        with pytest.raises(Refusal) as caught:
            c.allocate(AllocateIn(mig=["1g.10gb"], container="same"))
        c.release(a.id)
        b = c.allocate(AllocateIn(mig=["1g.10gb"], container="same"))
    assert caught.value.reason.value == "name_in_use"
    assert caught.value.what == (
        f"you already have an allocation for container 'same' (allocation {a.id}, reserved)"
    )
    assert (b.container, b.state) == ("same", "reserved")


def test_an_unknown_allocation_is_not_found(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        with pytest.raises(NotFound, match="allocation 4242 not found"):
            c.release(4242)
        with pytest.raises(NotFound, match="allocation 4242 not found"):
            c.allocation(4242)


def test_a_reservation_never_bound_expires_and_frees_its_units(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config(reservation_timeout="1s"))
    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1, container="never-bound"))
        done = wait_for(
            lambda: (r := c.allocation(a.id)).state == "released" and r,
            "the reservation to expire",
        )
        evs = [(e.action, e.reason, e.actor) for e in c.events() if e.allocation_id == a.id]
        again = c.allocate(AllocateIn(gpus=1, container="next"))
    assert (done.state, done.release_reason) == ("released", "reservation_expired")
    assert evs == [("reserved", "request", "root"), ("released", "reservation_expired", "ds01d")]
    # GPU 0 is free again, but GPU 2 was never used (GPU 1 is busy outside ds01)
    assert placed(again) == [(2, None)]


def test_reservations_expire_after_two_minutes_by_default(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1))
    assert a.expires_at is not None
    lifetime = datetime.fromisoformat(a.expires_at) - datetime.fromisoformat(a.created_at)
    assert lifetime.total_seconds() == 120


def test_the_client_says_when_the_daemon_is_not_there(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=config())
    d.stop()
    with Client(d.socket) as c, pytest.raises(DaemonUnavailable) as caught:
        c.allocate(AllocateIn(gpus=1))
    assert caught.value.lines() == [
        f"cannot reach ds01d at {d.socket}",
        "The daemon is not running, or DS01_RUN_DIR points elsewhere.",
        "Ask an admin to start it (systemctl start ds01d), or check --run-dir.",
    ]


def test_a_workspace_with_a_nul_byte_is_a_usage_error_not_a_500(daemon_factory: Any) -> None:
    import httpx

    d: Daemon = daemon_factory(config=config())
    # Raw JSON: ds01's own client refuses the NUL before sending; another client would not.
    body = {"name": "job", "image": "img", "workspace": "/tmp/a\x00b", "cpu_only": True}
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://ds01"
    ) as http:
        r = http.post("/v1/containers", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["kind"] == "usage"
    assert "workspace" in error["what"]
    assert "Traceback" not in d.log()


SLURM_NODE = """\
defaults: {max_gpueq: 4, max_units_per_container: 2, max_containers: 4, allow_full_gpu: true}
cluster:
  backend: slurm
  nodes:
    n1: {machine: 8xH100-mig-mixed}
"""


def test_a_node_whose_gpus_are_slurms_hands_none_out(daemon_factory: Any) -> None:
    """With cluster.backend: slurm, SLURM alone gives out the node's GPUs: a ds01d there (for
    the access layers, the gate's CPU containers) refuses every GPU request, whole, MIG or by
    gpueq, and says where to go; a container without a GPU is still allocated."""
    d: Daemon = daemon_factory(config=SLURM_NODE)
    with d.client() as c:
        for req in (AllocateIn(gpus=1), AllocateIn(mig=["1g.10gb"]), AllocateIn(gpueq="0.5")):
            with pytest.raises(Refusal) as caught:
                c.allocate(req)
            assert caught.value.reason.value == "slurm_backend"
            assert caught.value.what.startswith("this server's GPUs are SLURM's")
            assert "ds01 container deploy" in (caught.value.fix or "")
        cpu = c.allocate(AllocateIn(cpu_only=True, container="notes"))
        assert cpu.units == []
        assert c.allocations(all_users=True, gpus=True) == []
        refused = [e for e in c.events(kind="alloc") if e.action == "refused"]
        assert [e.reason for e in refused] == ["slurm_backend"] * 3
