"""The allocation commands of the real `ds01` CLI against a real ds01d: `ds01 quota [--json]`,
`ds01 events [--user U] [--since …] [--kind …] [--json]`, `ds01 admin alloc list [--json]`,
`ds01 admin alloc release ID --reason TEXT`, `ds01 admin drain|undrain UNIT|GPU --reason`.
Exact output and exit codes: 0 done, 1 refused, 2 usage error; errors say what, why, what to do.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn, AllocationOut
from support import Daemon, Users

CONFIG = f"""\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
docker:
  host: {NOWHERE}
"""


def holds_a_slice(d: Daemon) -> AllocationOut:
    with d.client() as c:
        return c.allocate(AllocateIn(mig=["3g.40gb"], container="thesis"))


def test_quota_shows_what_i_hold_and_what_is_left(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    r = d.cli("quota")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:4] == [
        "root",
        "GPU quota: using 0.43 of 2 gpueq, 1.57 left; containers 1 of 3",
        "You can still get: 1 × whole GPU or 2 × 1g.10gb or 1 × 2g.20gb or 2 × 3g.40gb"
        " or 1 × 4g.40gb now.",
        "To deploy one: ds01 container deploy NAME --image IMAGE --gpus 1",
    ]
    holding = next(line for line in lines if "thesis" in line)
    assert [cell.strip() for cell in holding.split("│")[1:6]] == [
        str(a.id),
        "thesis",
        "reserved",
        "H100 80GB HBM3 3g.40gb",
        "0.43",
    ]
    limit = next(line for line in lines if "max_gpueq " in line)
    assert [cell.strip() for cell in limit.split("│")[1:4]] == ["max_gpueq", "2", "defaults"]


def test_quota_speaks_config_show_units_and_says_what_still_fits(
    daemon_factory: Any, users: Users
) -> None:
    """Limits read as `ds01 config show` prints them (1g, no, 1h), and a MIG-only user is told
    what the scheduler would grant them now and the one request to make — a slice, never
    `--gpus 1` — in `ds01 quota` and `ds01 access` alike."""
    d: Daemon = daemon_factory(
        config=CONFIG.replace(
            "allow_full_gpu: true", "allow_full_gpu: false\n  memory: 1g\n  idle_timeout: 1h"
        )
    )
    student = users.add()
    r = d.cli("quota", user=student)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[1:4] == [
        "GPU quota: using 0 of 2 gpueq, 2 left; containers 0 of 3",
        "You can still get: 2 × 1g.10gb or 1 × 2g.20gb or 2 × 3g.40gb or 1 × 4g.40gb now.",
        "To deploy one: ds01 container deploy NAME --image IMAGE --mig 1g.10gb",
    ]
    cells = {
        row.split("│")[1].strip(): row.split("│")[2].strip() for row in lines if row.count("│") == 4
    }
    assert (cells["memory"], cells["allow_full_gpu"], cells["idle_timeout"]) == ("1g", "no", "1h")
    q = json.loads(d.cli("quota", "--json", user=student).stdout)
    assert q["limits"]["memory_bytes"] == {"value": 1024**3, "source": "defaults", "kind": "size"}
    assert q["can_get"][0] == {"profile": "1g.10gb", "count": 2}
    assert q["suggested"] == "--mig 1g.10gb"
    a = d.cli("access", user=student)
    assert a.returncode == 0, a.stderr
    assert "--mig 1g.10gb" in a.stdout and "--gpus 1" not in a.stdout


def test_quota_json_has_the_numbers_exactly(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    r = d.cli("quota", "--json")
    assert r.returncode == 0, r.stderr
    q = json.loads(r.stdout)
    assert {k: q[k] for k in q if k not in ("limits", "allocations", "can_get", "suggested")} == {
        "user": "root",
        "group": None,
        "used_gpueq": 0.4286,
        "used_gpueq_exact": "3/7",
        "max_gpueq": 2.0,
        "remaining_gpueq": 1.5714,
        "containers": 1,
        "max_containers": 3,
        "exempt": False,
    }
    assert [(x["id"], x["container"], x["gpueq_exact"]) for x in q["allocations"]] == [
        (a.id, "thesis", "3/7")
    ]
    assert list(q["limits"]) == [
        "max_gpueq",
        "max_units_per_container",
        "max_containers",
        "allow_full_gpu",
        "cpus",
        "memory_bytes",
        "memory_swap_bytes",
        "shm_bytes",
        "pids",
        "max_runtime_s",
        "idle_timeout_s",
        "gpu_hold_after_stop_s",
        "group_max_gpueq",
    ]
    assert q["limits"]["max_gpueq"] == {"value": "2", "source": "defaults", "kind": "gpueq"}


def test_admin_alloc_list_shows_every_live_allocation(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    r = d.cli("admin", "alloc", "list", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert [(x["id"], x["user"], x["container"], x["state"], x["gpueq_exact"]) for x in rows] == [
        (a.id, "root", "thesis", "reserved", "3/7")
    ]
    assert [u["uuid"] for u in rows[0]["units"]] == [a.units[0].uuid]
    table = d.cli("admin", "alloc", "list")
    row = next(line for line in table.stdout.splitlines() if "thesis" in line)
    assert [cell.strip() for cell in row.split("│")[1:6]] == [
        str(a.id),
        "root",
        "–",
        "thesis",
        "reserved",
    ]


def test_admin_alloc_release_frees_it_and_logs_the_reason(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    r = d.cli("admin", "alloc", "release", str(a.id), "--reason", "maintenance")
    assert (r.returncode, r.stdout, r.stderr) == (0, f"allocation {a.id} of root: released\n", "")
    assert d.cli("admin", "alloc", "list").stdout == "No live allocations.\n"
    r = d.cli("events", "--kind", "alloc", "--json")
    assert [(e["action"], e["reason"], e["actor"]) for e in json.loads(r.stdout)] == [
        ("reserved", "request", "root"),
        ("released", "maintenance", "root"),
    ]


# What each mistake answers: (exit code, stderr). {id} in argv is a live allocation's id.
MISTAKES: dict[str, tuple[list[str], int, str]] = {
    "releasing an allocation that does not exist is refused": (
        ["admin", "alloc", "release", "999", "--reason", "x"],
        1,
        "error: allocation 999 not found\n"
        "  See your allocations with 'ds01 quota' or 'ds01 container list'.\n",
    ),
    "releasing without a reason is a usage error": (
        ["admin", "alloc", "release", "{id}"],
        2,
        "Usage: ds01 admin alloc release [OPTIONS] ALLOC_ID\n"
        "Try 'ds01 admin alloc release --help' for help.\n\n"
        "Error: Missing option '--reason'.\n",
    ),
    "draining something that is not a unit or GPU is a usage error": (
        ["admin", "drain", "nonsuch", "--reason", "x"],
        2,
        "error: no unit or GPU matches 'nonsuch'\n"
        "  Use a UUID or GPU index from 'ds01 gpu status'.\n",
    ),
    "an unreadable --since is a usage error": (
        ["events", "--since", "1x"],
        2,
        "error: --since '1x' is neither an age nor a date\n"
        "  Give an age like 90s, 30m, 1h30m, 2d or 1w, or a date like 2026-11-28T14:00.\n",
    ),
    "an empty --since is a usage error, not 'since ever'": (
        ["events", "--since", ""],
        2,
        "error: --since '' is neither an age nor a date\n"
        "  Give an age like 90s, 30m, 1h30m, 2d or 1w, or a date like 2026-11-28T14:00.\n",
    ),
    "markup and emoji codes in a message are printed as typed": (
        ["container", "inspect", "[data] :thumbs_up: [/]"],
        2,
        "error: invalid container name '[data] :thumbs_up: [/]'\n"
        "  Names are 1–63 characters: letters, digits, '_', '.', '-', starting with a letter or"
        " digit.\n"
        "  Pick a name such as 'thesis' or 'exp-2'.\n",
    ),
}


def test_mistakes_say_what_why_and_what_to_do(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    got = {}
    for case, (argv, _, _) in MISTAKES.items():
        r = d.cli(*[arg.replace("{id}", str(a.id)) for arg in argv])
        assert r.stdout == "", case
        got[case] = (argv, r.returncode, r.stderr.lstrip("\n"))
    assert got == MISTAKES
    with d.client() as c:
        assert c.allocation(a.id).state == "reserved"  # no mistake touched it


def test_drain_stops_handing_out_a_gpu_without_touching_who_holds_it(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG.replace("max_gpueq: 2", "max_gpueq: 8"))
    with d.client() as c:
        on_gpu0 = c.allocate(AllocateIn(gpus=1, container="on-gpu0"))
        gpu0 = on_gpu0.units[0].uuid
        c.release(on_gpu0.id)  # GPU 0 is free again, and drained below
        kept = c.allocate(AllocateIn(gpus=1, container="kept"))  # GPU 2: GPU 1 is busy
    r = d.cli("admin", "drain", "0", "--reason", "fan failure")
    assert (r.returncode, r.stdout) == (0, f"drained 1 unit(s): {gpu0}\n")
    with d.client() as c:
        status = {u.gpu_index: (u.drained, u.drain_reason) for u in c.gpu_status().units}
        got = [c.allocate(AllocateIn(gpus=1, container=f"n{i}")).units[0].gpu_index for i in (1, 2)]
        assert c.allocation(kept.id).state == "reserved"
    assert (status[0], status[1]) == ((True, "fan failure"), (False, None))
    # Never GPU 0 while drained: GPU 3, then GPU 1, last because a process outside ds01 runs
    # on it in this machine file (docs/allocation.md, "Which units").
    assert got == [3, 1]

    r = d.cli("admin", "undrain", "0")
    assert (r.returncode, r.stdout) == (0, f"undrained 1 unit(s): {gpu0}\n")
    with d.client() as c:
        for a in c.allocations():
            if a.container in ("n1", "n2"):
                c.release(a.id)
        again = c.allocate(AllocateIn(gpus=1, container="after-undrain"))
    assert again.units[0].gpu_index == 0

    r = d.cli("events", "--kind", "admin", "--json")
    assert [
        (e["action"], e["reason"], e["actor"], e["details"]["units"]) for e in json.loads(r.stdout)
    ] == [
        ("drained", "fan failure", "root", [gpu0]),
        ("undrained", "undrain", "root", [gpu0]),
    ]


def test_draining_a_mig_gpu_drains_each_of_its_slices(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    with d.client() as c:
        slices = sorted(u.uuid for u in c.gpu_status().units if u.gpu_index == 4)
    r = d.cli("admin", "drain", "4", "--reason", "ecc errors")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("drained 7 unit(s): ")
    with d.client() as c:
        drained = sorted(u.uuid for u in c.gpu_status().units if u.drained)
        one = c.allocate(AllocateIn(mig=["1g.10gb"]))
    assert drained == slices
    assert one.units[0].gpu_index == 5  # GPU 4's seven 1g slices are out; GPU 5 has two


def test_events_since_and_json(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    recent = json.loads(d.cli("events", "--since", "1h", "--kind", "alloc", "--json").stdout)
    future = json.loads(d.cli("events", "--since", "2099-01-01T00:00", "--json").stdout)
    assert [(e["action"], e["allocation_id"], e["user"]) for e in recent] == [
        ("reserved", a.id, "root")
    ]
    assert set(recent[0]) == {
        "id",
        "ts",
        "kind",
        "action",
        "actor",
        "user",
        "allocation_id",
        "reason",
        "message",
        "details",
    }
    assert recent[0]["message"] == f"MIG {a.units[0].name} (H100 80GB HBM3 3g.40gb) for thesis"
    assert future == []
    table = d.cli("events", "--kind", "alloc")
    header = table.stdout.splitlines()[1]
    assert [cell.strip() for cell in header.split("┃")[1:-1]] == [
        "Time",
        "Kind",
        "Action",
        "User",
        "Alloc",
        "Reason",
        "Message",
    ]


@pytest.mark.root
def test_admin_commands_are_refused_to_a_plain_user(daemon_factory: Any, users: Users) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    plain = users.add()
    r = d.cli("admin", "drain", "0", "--reason", "mine", user=plain)
    assert (r.returncode, r.stdout) == (1, "")
    assert r.stderr.splitlines() == [
        "error: draining GPUs is for admins",
        f"  You ({plain}) are not root or in the 'ds01t-admins' group.",
        "  Ask a lab admin.",
    ]
    with d.client() as c:
        assert {u.drained for u in c.gpu_status().units} == {False}


def test_commands_say_when_the_daemon_is_not_running(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory(config=CONFIG)
    d.stop()
    for argv in (["quota"], ["container", "deploy", "x", "--image", "img", "--detach"]):
        r = d.cli(*argv)
        assert (r.returncode, r.stdout) == (1, ""), argv
        assert r.stderr.splitlines() == [
            f"error: cannot reach ds01d at {d.socket}",
            "  The daemon is not running, or DS01_RUN_DIR points elsewhere.",
            "  Ask an admin to start it (systemctl start ds01d), or check --run-dir.",
        ], argv


def test_text_from_users_cannot_drive_another_users_terminal(daemon_factory: Any) -> None:
    """A release reason is free text and lands in the audit log every admin reads: escape
    sequences, C1 controls, newlines and Rich markup are shown, not obeyed (issue 10, D10)."""
    d = daemon_factory(config=CONFIG)
    a = holds_a_slice(d)
    reason = "done\x1b[2J\x1b]0;pwned\x07\x9b31m[bold red]x[/]\nforged row"
    with d.client() as c:
        c.release(a.id, reason=reason)
    out = d.cli("events", "--kind", "alloc").stdout
    for raw in ("\x1b", "\x07", "\x9b", "\nforged row"):
        assert raw not in out, repr(out)
    flat = "".join(out.split())  # the table folds (and may shorten) a long cell
    assert "done\\x1b[2J\\x1b" in flat and "[/]\\x0afor" in flat, out
    # The record itself keeps the text as given: --json is for machines.
    events = json.loads(d.cli("events", "--kind", "alloc", "--json").stdout)
    assert [e["reason"] for e in events if e["action"] == "released"] == [reason]
