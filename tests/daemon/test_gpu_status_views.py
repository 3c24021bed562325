"""`ds01 gpu status` and `gpu inventory` as a newcomer reads them (issue 13, items 2 and 3),
through the real CLI against a real ds01d on a simulated machine:

- one name per unit (`7/1.0`: GPU index / GPU-instance . compute-instance id) in the daemon's
  and the fallback `gpu status`, `gpu inventory`, the JSON and the audit events;
- off a terminal (`COLUMNS` unset) every line fits 80 columns; `--wide` shows whole UUIDs;
- the Procs column marks processes outside ds01 with their owner, hidden from other users
  under `privacy: hide_others`.
"""

from __future__ import annotations

import json
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from loadgen import NOWHERE

from ds01.api.schemas import AllocateIn
from ds01.inventory.sim import add_process, clear_processes
from support import MACHINES, Daemon, Users, short_tmp, wait_for

CONFIG = f"""\
admin_group: ds01t-admins
privacy: {{privacy}}
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
gpu:
  sample_interval: 1s
docker:
  host: {NOWHERE}
"""


@pytest.fixture
def machine() -> Iterator[Path]:
    d = short_tmp()
    path = d / "machine.yaml"
    shutil.copy(MACHINES / "8xH100-mig-mixed.yaml", path)
    clear_processes(path)  # its example pids may be live processes on this host
    yield path
    shutil.rmtree(d, ignore_errors=True)


def rows(out: str) -> dict[str, list[str]]:
    """Table rows by their first cell (the unit's name)."""
    return {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}


def test_one_name_per_unit_in_every_view_and_80_columns(
    daemon_factory: Any, machine: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # not a terminal, no width given: 80
    d: Daemon = daemon_factory(config=CONFIG.format(privacy="show_all"), machine=machine)
    with d.client() as c:
        got = c.allocate(AllocateIn(mig=["3g.40gb"], container="thesis")).units[0]
    name, uuid = got.name, got.uuid
    assert re.fullmatch(r"\d/\d+\.\d+", name), name
    assert name == f"{got.gpu_index}/{got.gpu_instance_id}.{got.compute_instance_id}"

    status = json.loads(d.cli("gpu", "status", "--json").stdout)
    names = {u["uuid"]: u["name"] for u in status["units"]}
    assert names[uuid] == name and len(set(names.values())) == len(names) == 19
    local = json.loads(d.cli("gpu", "status", "--sim", str(machine), "--json").stdout)
    assert {u["uuid"]: u["name"] for u in local["units"]} == names
    inventory = json.loads(d.cli("gpu", "inventory", "--sim", str(machine), "--json").stdout)
    mig = {m["uuid"]: m["unit_name"] for g in inventory["gpus"] for m in g["mig_devices"]}
    assert mig[uuid] == name

    daemon = d.cli("gpu", "status")
    fallback = d.cli("gpu", "status", "--sim", str(machine))
    table = d.cli("gpu", "inventory", "--sim", str(machine))
    for r in (daemon, fallback, table):
        assert r.returncode == 0, r.stderr
        too_wide = [line for line in r.stdout.splitlines() if len(line) > 80]
        assert too_wide == [], r.stdout
        row = rows(r.stdout)[name]
        assert row[1] == uuid.removeprefix("MIG-")[:8]  # the short UUID
        assert uuid not in r.stdout
    assert rows(daemon.stdout)[name][2:4] == ["H100", "3g.40gb"], daemon.stdout  # one line
    assert rows(daemon.stdout)[name][-3:] == ["root", "(thesis)", "reserved"]
    assert rows(daemon.stdout)["0"][2] == "H100"

    wide = d.cli("gpu", "status", "--wide")
    assert rows(wide.stdout)[name][1:6] == [uuid, "H100", "80GB", "HBM3", "3g.40gb"]
    assert uuid in d.cli("gpu", "inventory", "--sim", str(machine), "--wide").stdout

    events = json.loads(d.cli("events", "--kind", "alloc", "--json").stdout)
    assert events[0]["message"] == f"MIG {name} (H100 80GB HBM3 3g.40gb) for thesis"


def test_procs_column_marks_use_outside_ds01_and_hides_other_owners(
    daemon_factory: Any, machine: Path, users: Users
) -> None:
    """A real process of user A on free GPU 2: root (an admin) and A see it is A's; B, under
    privacy: hide_others, sees only that a process outside ds01 runs there."""
    a, b = users.add(), users.add()
    pw = pwd.getpwnam(a)
    job = subprocess.Popen(
        ["setpriv", f"--reuid={pw.pw_uid}", f"--regid={pw.pw_gid}", "--init-groups", "sleep", "300"]
    )
    try:
        add_process(machine, job.pid, "2", 2048, "python")
        d: Daemon = daemon_factory(config=CONFIG.format(privacy="hide_others"), machine=machine)

        def unit2(user: str | None = None) -> dict[str, Any] | None:
            r = d.cli("gpu", "status", "--json", user=user)
            u = next(u for u in json.loads(r.stdout)["units"] if u["name"] == "2")
            return u if u["processes"] and u["processes"][0]["owner"] else None

        seen = wait_for(unit2, "the process watch to find the owner", 20)
        assert seen["busy"] is True
        assert seen["processes"] == [
            {"pid": job.pid, "name": "python", "owner": a, "used_memory_mib": 2048, "foreign": True}
        ]
        assert rows(d.cli("gpu", "status").stdout)["2"][-4:] == ["1!", a, "–", "busy"]
        mine = unit2(a)
        assert mine is not None and mine["processes"][0]["owner"] == a
        theirs = json.loads(d.cli("gpu", "status", "--json", user=b).stdout)
        hidden = next(u for u in theirs["units"] if u["name"] == "2")
        assert hidden["processes"] == [
            {
                "pid": None,
                "name": None,
                "owner": "(hidden)",
                "used_memory_mib": None,
                "foreign": True,
            }
        ]
        table = d.cli("gpu", "status", user=b).stdout
        assert a not in table and rows(table)["2"][-4:] == ["1!", "(hidden)", "–", "busy"]
        assert "!: processes outside ds01" in table
    finally:
        job.kill()
        job.wait()
