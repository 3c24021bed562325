"""MIG profile variants through a real ds01d, over its socket (as root), on the test machine
tests/fixtures/machines/mig-variants.yaml: GPU 0 an A100-80GB as 3g.40gb + 2g.20gb + 1g.10gb +
1g.10gb+me; GPU 1 an RTX PRO 6000 Blackwell as 1g.24gb+me.all + 1g.24gb-me + 2g.48gb+gfx; GPU 2
a whole H100.

Each variant can be asked for by its name and gets exactly that unit; a plain name never gets a
variant; and a name that is not a profile is the one usage error of model/profile.py, the same
lines the grammar gives, as HTTP 400 — not a refusal, and not logged as one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from ds01.errors import MigProfileError, Refusal, UsageError
from ds01.model.profile import parse_profile
from support import Daemon, short_tmp

MACHINE = Path(__file__).resolve().parents[1] / "fixtures" / "machines" / "mig-variants.yaml"
CONFIG = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 8
  max_units_per_container: 7
  max_containers: 10
  allow_full_gpu: true
docker:
  host: {NOWHERE}
"""


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    d = Daemon(short_tmp(), CONFIG, MACHINE, None)
    d.start()
    yield d
    d.stop()
    shutil.rmtree(d.base, ignore_errors=True)


@pytest.fixture
def d(daemon: Daemon) -> Iterator[Daemon]:
    """The module's daemon, with every allocation released after each test."""
    yield daemon
    with daemon.client() as c:
        for a in c.allocations(all_users=True):
            c.release(a.id, reason="next case")


@pytest.mark.parametrize(
    ("asked", "got"),
    [
        pytest.param(["1g.10gb+me"], [(0, "1g.10gb+me")], id="+me gets the +me slice"),
        pytest.param(["MIG 1G.10GB+ME"], [(0, "1g.10gb+me")], id="written as nvidia-smi does"),
        pytest.param(["1g.10gb"], [(0, "1g.10gb")], id="plain gets the plain slice"),
        pytest.param(
            ["1g.10gb", "1g.10gb+me"],
            [(0, "1g.10gb"), (0, "1g.10gb+me")],
            id="one of each in one request",
        ),
        pytest.param(["1g.24gb+me.all"], [(1, "1g.24gb+me.all")], id="+me.all"),
        pytest.param(["1g.24gb-me"], [(1, "1g.24gb-me")], id="-me"),
        pytest.param(["2g.48gb+gfx"], [(1, "2g.48gb+gfx")], id="+gfx"),
    ],
)
def test_each_variant_is_asked_for_by_its_name(
    d: Daemon, asked: list[str], got: list[tuple[int, str]]
) -> None:
    with d.client() as c:
        a = c.allocate(AllocateIn(mig=asked))
    assert [(u.gpu_index, u.profile) for u in a.units] == got


def test_a_plain_request_waits_rather_than_take_the_me_slice(d: Daemon) -> None:
    with d.client() as c:
        c.allocate(AllocateIn(mig=["1g.10gb"]))
        with pytest.raises(Refusal) as err:
            c.allocate(AllocateIn(mig=["1g.10gb"]))
        assert err.value.reason.value == "no_capacity"
        # ... while the +me slice stays there for whoever asks for it.
        me = c.allocate(AllocateIn(mig=["1g.10gb+me"]))
    assert [u.profile for u in me.units] == ["1g.10gb+me"]


def test_a_size_that_exists_only_as_variants_names_them(d: Daemon) -> None:
    with d.client() as c, pytest.raises(Refusal) as err:
        c.allocate(AllocateIn(mig=["1g.24gb"]))
    assert (err.value.reason.value, err.value.lines()) == (
        "unknown_profile",
        [
            "request: this machine has no 1g.24gb MIG slice.",
            "Its MIG profiles are 1g.10gb, 1g.10gb+me, 1g.24gb+me.all, 1g.24gb-me, 2g.20gb,"
            " 2g.48gb+gfx, 3g.40gb.",
            "Of that size it has 1g.24gb+me.all: ask for it by that name"
            " (--mig 1g.24gb+me.all) if it will do.",
        ],
    )


BAD = ["1g.10gb+mee", "1g.10gb.me", "4c.3g.40gb", "big", "", "9g.90gb"]


def grammar_error(text: str) -> list[str]:
    with pytest.raises(MigProfileError) as err:
        parse_profile(text)
    return err.value.lines()


@pytest.mark.parametrize("text", BAD)
def test_a_bad_name_is_the_grammars_usage_error_over_the_api(d: Daemon, text: str) -> None:
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://ds01d"
    ) as h:
        r = h.post("/v1/allocations", json={"mig": ["1g.10gb", text]})
    error = r.json()["error"]
    assert (r.status_code, error["kind"]) == (400, "usage")
    assert [error["what"], error["why"], error["fix"]] == grammar_error(text)
    # The typed client turns it into a UsageError (exit 2 in the CLI), with the same lines.
    with d.client() as c, pytest.raises(UsageError) as err:
        c.allocate(AllocateIn(mig=[text]))
    assert not isinstance(err.value, Refusal)
    assert err.value.lines() == grammar_error(text)


def test_a_bad_name_decides_nothing_and_logs_no_refusal(d: Daemon) -> None:
    with d.client() as c:
        before = [e.id for e in c.events(kind="alloc")]
        with pytest.raises(UsageError):
            c.allocate(AllocateIn(mig=["1g.10gb+mee"]))
        assert [e.id for e in c.events(kind="alloc")] == before
        assert c.allocations(all_users=True) == []


def test_gpu_status_shows_each_variant_as_a_unit(d: Daemon) -> None:
    with d.client() as c:
        status = c.gpu_status()
    profiles = sorted(u.profile for u in status.units if u.profile)
    assert profiles == [
        "1g.10gb",
        "1g.10gb+me",
        "1g.24gb+me.all",
        "1g.24gb-me",
        "2g.20gb",
        "2g.48gb+gfx",
        "3g.40gb",
    ]
