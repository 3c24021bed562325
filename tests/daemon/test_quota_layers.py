"""Quota arithmetic with MIG weights, and layered limits, observed through a real ds01d.

MIG weights (BRIEF §4): a MIG device weighs its compute slices over the GPU's total — 7 on
A100, H100 and H200, 4 on A30. Each machine below is filled to a max_gpueq of 1 exactly, and
the next slice is refused for max_gpueq. A100-80GB and A30 layouts are written here (the shipped
machines have neither); H100 and H200 are the shipped ones. Every expected amount is a literal.

Layered limits (defaults ← group ← user, key by key) are read back with `ds01 quota --json` run
as three real users — one with a user entry inside a group, one in the group only, one in
neither — and seen deciding real requests.
"""

from __future__ import annotations

import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from ds01.errors import Refusal
from support import MACHINES, Daemon, Users, as_user, need

LOADGEN = Path(__file__).with_name("loadgen.py")

A100_80GB = """\
machine: test-4xA100-80GB
description: A100-SXM4-80GB; three MIG layouts and one whole GPU
gpus:
  - name: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
    mig_enabled: true
    mig_devices:
      - {profile: 3g.40gb, gpu_instance_id: 2}
      - {profile: 2g.20gb, gpu_instance_id: 3}
      - {profile: 1g.10gb, gpu_instance_id: 9}
      - {profile: 1g.10gb, gpu_instance_id: 10}
  - name: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
    mig_enabled: true
    mig_devices:
      - {profile: 4g.40gb, gpu_instance_id: 1}
      - {profile: 1c.3g.40gb, gpu_instance_id: 2, compute_instance_id: 0}
      - {profile: 2c.3g.40gb, gpu_instance_id: 2, compute_instance_id: 1}
  - name: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
    mig_enabled: true
    mig_devices:
      - {profile: 7g.80gb, gpu_instance_id: 0}
  - name: NVIDIA A100-SXM4-80GB
    memory_mib: 81920
"""

A30 = """\
machine: test-4xA30
description: A30 24GB (4 compute slices); three MIG layouts and one whole GPU
gpus:
  - name: NVIDIA A30
    memory_mib: 24576
    mig_enabled: true
    mig_devices:
      - {profile: 2g.12gb, gpu_instance_id: 1}
      - {profile: 1g.6gb, gpu_instance_id: 5}
      - {profile: 1g.6gb, gpu_instance_id: 6}
  - name: NVIDIA A30
    memory_mib: 24576
    mig_enabled: true
    mig_devices:
      - {profile: 1c.2g.12gb, gpu_instance_id: 1, compute_instance_id: 0}
      - {profile: 1c.2g.12gb, gpu_instance_id: 1, compute_instance_id: 1}
      - {profile: 2g.12gb, gpu_instance_id: 2}
  - name: NVIDIA A30
    memory_mib: 24576
    mig_enabled: true
    mig_devices:
      - {profile: 4g.24gb, gpu_instance_id: 0}
  - name: NVIDIA A30
    memory_mib: 24576
"""

MACHINE_TEXTS = {"A100-80GB": A100_80GB, "A30": A30}
SHIPPED = {"H100": "8xH100-mig-mixed.yaml", "H200": "2xH200-mig.yaml"}

# machine → sequences; each sequence is its own case on an empty machine: the requests in order
# with (the allocation's gpueq, what `ds01 quota` says is used after it), then the request that
# must be refused for max_gpueq (the cap is 1).
FILLS: dict[str, dict[str, tuple[list[tuple[list[str], str, str]], list[str]]]] = {
    "H100": {
        "3g + 4g": ([(["3g.40gb"], "3/7", "3/7"), (["4g.40gb"], "4/7", "1")], ["1g.10gb"]),
        "seven 1g in one container": ([(["1g.10gb"] * 7, "1", "1")], ["1g.10gb"]),
        "2g + 1g + 4g": (
            [(["2g.20gb"], "2/7", "2/7"), (["1g.10gb"], "1/7", "3/7"), (["4g.40gb"], "4/7", "1")],
            ["1g.10gb"],
        ),
    },
    "H200": {
        "compute instances count their own slices": (
            [
                (["1c.3g.71gb"], "1/7", "1/7"),
                (["2c.3g.71gb"], "2/7", "3/7"),
                (["2g.35gb"], "2/7", "5/7"),
                (["1g.18gb"], "1/7", "6/7"),
                (["1g.18gb"], "1/7", "1"),
            ],
            ["3g.71gb"],
        ),
        "4g + 3g": ([(["4g.71gb"], "4/7", "4/7"), (["3g.71gb"], "3/7", "1")], ["1g.18gb"]),
    },
    "A100-80GB": {
        "2g + a 1c compute instance + 4g": (
            [
                (["2g.20gb"], "2/7", "2/7"),
                (["1c.3g.40gb"], "1/7", "3/7"),
                (["4g.40gb"], "4/7", "1"),
            ],
            ["1g.10gb"],
        ),
        "a 7g MIG device is a whole GPU's worth": ([(["7g.80gb"], "1", "1")], ["1g.10gb"]),
        "3g + 2c + 2g in one container": (
            [(["3g.40gb", "2c.3g.40gb", "2g.20gb"], "1", "1")],
            ["1c.3g.40gb"],
        ),
    },
    "A30": {
        "2g + 1g + a 1c compute instance": (
            [
                (["2g.12gb"], "1/2", "1/2"),
                (["1g.6gb"], "1/4", "3/4"),
                (["1c.2g.12gb"], "1/4", "1"),
            ],
            ["1g.6gb"],
        ),
        "a 4g MIG device is a whole A30": ([(["4g.24gb"], "1", "1")], ["1c.2g.12gb"]),
        "two 2g are a whole A30": (
            [(["2g.12gb"], "1/2", "1/2"), (["2g.12gb"], "1/2", "1")],
            ["1g.6gb"],
        ),
    },
}

FILL_CONFIG = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 1
  max_units_per_container: 7
  max_containers: 10
  allow_full_gpu: true
docker:
  host: {NOWHERE}
"""


def machine_path(name: str, tmp: Path) -> Path:
    if name in SHIPPED:
        return MACHINES / SHIPPED[name]
    path = tmp / f"{name}.yaml"
    path.write_text(MACHINE_TEXTS[name])
    return path


def quota_json(d: Daemon, user: str | None = None) -> dict[str, Any]:
    r = d.cli("quota", "--json", user=user)
    assert r.returncode == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


@pytest.mark.parametrize(
    "machine",
    list(FILLS),
    ids=[
        "H100: 7 compute slices per GPU",
        "H200: 7 slices, compute instances inside a GPU instance",
        "A100-80GB: 7 slices, 7g is one whole GPU",
        "A30: 4 compute slices per GPU",
    ],
)
def test_mig_slices_weigh_their_share_of_the_gpu_and_fill_max_gpueq_exactly(
    daemon_factory: Any, tmp_path: Path, machine: str
) -> None:
    d: Daemon = daemon_factory(config=FILL_CONFIG, machine=machine_path(machine, tmp_path))
    got: dict[str, tuple[list[tuple[list[str], str, str]], list[str]]] = {}
    for case, (steps, last) in FILLS[machine].items():
        seen: list[tuple[list[str], str, str]] = []
        with d.client() as c:
            for i, (profiles, _, _) in enumerate(steps):
                a = c.allocate(AllocateIn(mig=profiles, container=f"{i}"))
                seen.append((profiles, a.gpueq_exact, c.quota().used_gpueq_exact))
            with pytest.raises(Refusal) as caught:
                c.allocate(AllocateIn(mig=last, container="one-more"))
            assert caught.value.reason.value == "max_gpueq", caught.value.lines()
            for a in c.allocations():
                c.release(a.id)
        got[case] = (seen, last)
    assert got == FILLS[machine]


@pytest.mark.parametrize(
    ("machine", "request_in", "units", "gpueq"),
    [
        ("A30", AllocateIn(gpueq="1/4"), [(0, "1g.6gb")], "1/4"),
        ("A30", AllocateIn(gpueq="0.5"), [(0, "2g.12gb")], "1/2"),
        ("A30", AllocateIn(gpueq="0.6"), [(2, "4g.24gb")], "1"),
        ("A100-80GB", AllocateIn(gpueq="3/7"), [(0, "3g.40gb")], "3/7"),
        ("A100-80GB", AllocateIn(gpueq="0.5"), [(1, "4g.40gb")], "4/7"),
        ("H200", AllocateIn(gpueq="3/7"), [(1, "3g.71gb")], "3/7"),
    ],
    ids=[
        "A30 gpueq=1/4 takes a 1g slice (a quarter of the GPU)",
        "A30 gpueq=0.5 takes a 2g slice, worth exactly half",
        "A30 gpueq=0.6 takes the 4g device, the smallest single unit worth that much",
        "A100 gpueq=3/7 takes a 3g slice",
        "A100 gpueq=0.5 takes the 4g slice, since 3/7 is less than half",
        "H200 gpueq=3/7 takes the 3g instance, not the 1c and 2c compute instances together",
    ],
)
def test_gpueq_requests_are_weighed_by_the_gpus_slice_count(
    daemon_factory: Any,
    tmp_path: Path,
    machine: str,
    request_in: AllocateIn,
    units: list[tuple[int, str]],
    gpueq: str,
) -> None:
    d: Daemon = daemon_factory(config=FILL_CONFIG, machine=machine_path(machine, tmp_path))
    with d.client() as c:
        a = c.allocate(request_in)
    assert ([(u.gpu_index, u.profile) for u in a.units], a.gpueq_exact) == (units, gpueq)


# ---- layered limits ------------------------------------------------------------------------


def layered_config(lab_unix_group: str, carol: str) -> str:
    return f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 1
  max_units_per_container: 1
  max_containers: 2
  allow_full_gpu: false
  cpus: 4
  memory: 16g
  idle_timeout: 1h
  gpu_hold_after_stop: 10m
groups:
  lab:
    unix_group: {lab_unix_group}
    max_gpueq: 2
    max_units_per_container: 2
    cpus: 8
    memory: 32g
    max_gpueq_total: 3
users:
  {carol}:
    max_gpueq: 3
    allow_full_gpu: true
    cpus: 16
    gpu_hold_after_stop: 0s
docker:
  host: {NOWHERE}
"""


# role → limit → (value, source) as `ds01 quota --json` reports it. "user:carol" stands for
# "user:<carol's generated name>". carol: in the lab group, with a user entry; dave: in the lab
# group only; erin: in no group.
LAYERED: dict[str, dict[str, tuple[object, str]]] = {
    "carol": {
        "max_gpueq": ("3", "user:carol"),
        "max_units_per_container": (2, "group:lab"),
        "max_containers": (2, "defaults"),
        "allow_full_gpu": (True, "user:carol"),
        "cpus": (16.0, "user:carol"),
        "memory_bytes": (34359738368, "group:lab"),
        "memory_swap_bytes": (34359738368, "group:lab"),
        "idle_timeout_s": (3600, "defaults"),
        "gpu_hold_after_stop_s": (0, "user:carol"),
        "group_max_gpueq": ("3", "group:lab"),
    },
    "dave": {
        "max_gpueq": ("2", "group:lab"),
        "max_units_per_container": (2, "group:lab"),
        "max_containers": (2, "defaults"),
        "allow_full_gpu": (False, "defaults"),
        "cpus": (8.0, "group:lab"),
        "memory_bytes": (34359738368, "group:lab"),
        "memory_swap_bytes": (34359738368, "group:lab"),
        "idle_timeout_s": (3600, "defaults"),
        "gpu_hold_after_stop_s": (600, "defaults"),
        "group_max_gpueq": ("3", "group:lab"),
    },
    "erin": {
        "max_gpueq": ("1", "defaults"),
        "max_units_per_container": (1, "defaults"),
        "max_containers": (2, "defaults"),
        "allow_full_gpu": (False, "defaults"),
        "cpus": (4.0, "defaults"),
        "memory_bytes": (17179869184, "defaults"),
        "memory_swap_bytes": (17179869184, "defaults"),
        "idle_timeout_s": (3600, "defaults"),
        "gpu_hold_after_stop_s": (600, "defaults"),
        "group_max_gpueq": (None, "defaults"),
    },
}
GROUP_OF = {"carol": "lab", "dave": "lab", "erin": None}

# In this order, on the 8×H100: (who, request) → outcome: ("ok", gpueq) or ("refused", reason).
DECISIONS: list[tuple[str, str, dict[str, Any], tuple[str, str]]] = [
    ("erin asks for two slices: the defaults allow one unit", "erin",
     {"mig": ["1g.10gb", "1g.10gb"]}, ("refused", "max_units_per_container")),
    ("dave asks for two slices: his group allows two units", "dave",
     {"mig": ["1g.10gb", "1g.10gb"]}, ("ok", "2/7")),
    ("erin asks for a whole GPU: the defaults forbid it", "erin",
     {"gpus": 1}, ("refused", "full_gpu_not_allowed")),
    ("dave asks for a whole GPU: his group leaves the default", "dave",
     {"gpus": 1}, ("refused", "full_gpu_not_allowed")),
    ("carol asks for a whole GPU: her user entry allows it", "carol",
     {"gpus": 1}, ("ok", "1")),
    ("carol asks for two more: her cap of 3 allows it, the group's 3 in all does not", "carol",
     {"gpus": 2}, ("refused", "group_max_gpueq")),
    ("erin asks for a 4g slice: 4/7 is within her default cap of 1", "erin",
     {"mig": ["4g.40gb"]}, ("ok", "4/7")),
    ("erin asks for a 3g slice: 4/7 + 3/7 fills her cap of 1 exactly", "erin",
     {"mig": ["3g.40gb"]}, ("ok", "3/7")),
    ("erin asks for a third container: max_containers (2) is checked before max_gpueq", "erin",
     {"mig": ["1g.10gb"]}, ("refused", "max_containers")),
]  # fmt: skip


@pytest.fixture
def layered(users: Users) -> Iterator[dict[str, str]]:
    lab = users.group(f"ds01t-lab{uuid.uuid4().hex[:6]}")
    names = {
        "carol": users.add(groups=(lab,)),
        "dave": users.add(groups=(lab,)),
        "erin": users.add(),
    }
    r = as_user(names["carol"], [sys.executable, "-c", "import ds01.client"])
    need(r.returncode == 0, f"test users cannot run {sys.executable}: {r.stderr[-300:]}")
    yield {**names, "lab_unix_group": lab}


@pytest.mark.root
def test_limits_layer_key_by_key_and_say_where_each_came_from(
    daemon_factory: Any, layered: dict[str, str]
) -> None:
    d: Daemon = daemon_factory(config=layered_config(layered["lab_unix_group"], layered["carol"]))
    got: dict[str, dict[str, tuple[object, str]]] = {}
    groups: dict[str, str | None] = {}
    for role, want in LAYERED.items():
        q = quota_json(d, user=layered[role])
        assert q["user"] == layered[role]
        groups[role] = q["group"]
        limits = q["limits"]
        got[role] = {
            key: (limits[key]["value"], limits[key]["source"].replace(layered["carol"], "carol"))
            for key in want
        }
    assert groups == GROUP_OF
    assert got == LAYERED


@pytest.mark.root
def test_the_layered_limits_decide_real_requests(
    daemon_factory: Any, layered: dict[str, str]
) -> None:
    d: Daemon = daemon_factory(config=layered_config(layered["lab_unix_group"], layered["carol"]))
    got = []
    for i, (_, role, body, _) in enumerate(DECISIONS):
        argv = [sys.executable, str(LOADGEN), "call", "--socket", str(d.socket), "allocate"]
        r = as_user(layered[role], [*argv, json.dumps({**body, "container": f"c{i}"})])
        out = json.loads(r.stdout)
        if "ok" in out:
            got.append(("ok", out["ok"]["gpueq_exact"]))
        else:
            got.append(("refused", out["error"]["reason"]))
    assert dict(zip([s for s, *_ in DECISIONS], got, strict=True)) == {
        s: want for s, _, _, want in DECISIONS
    }
