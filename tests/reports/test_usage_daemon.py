"""The usage ledger as ds01d keeps it: a real ds01d samples a simulated machine with constant
power, an allocation is made and released through the API, and the report must account for
exactly the time between the two, at the machine's power — relations that hold whatever the
timing of the samples (nothing here asserts how long anything took)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from ds01.api.schemas import AllocateIn
from support import BASIC_CONFIG, Daemon, loop_passes

from .usage_world import machine_yaml

CONFIG = BASIC_CONFIG + "gpu:\n  sample_interval: 1\n"


def test_ds01d_charges_an_allocation_its_held_time_at_its_gpus_power(
    daemon_factory: Any, tmp_path: Path
) -> None:
    machine = tmp_path / "machine.yaml"
    # GPU 0 (whole A100) at 250 W and 90 % busy, no energy counter; the H100 (MIG) at 300 W.
    machine.write_text(machine_yaml(util0=90, power0=250, energy0_mj=None, power1=300))
    d: Daemon = daemon_factory(config=CONFIG, machine=machine)
    loop_passes(d, "usage", 2)  # the baseline is set
    with d.client() as c:
        made = c.allocate(AllocateIn(gpus=1, container="train"))
        loop_passes(d, "usage", 2)
        gone = c.release(made.id)
    loop_passes(d, "usage", 2)  # the interval with the release is accounted
    r = d.cli("report", "usage", "--from", "1d", "--to", "now", "--json")
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    (root,) = report["rows"]
    assert root["key"] == "root"
    assert gone.released_at is not None
    held_s = (
        datetime.fromisoformat(gone.released_at) - datetime.fromisoformat(made.created_at)
    ).total_seconds()
    # The ledger's own times have sub-second precision, the API's are whole seconds.
    assert root["gpu_hours"] * 3600 == pytest.approx(held_s, abs=1.0)
    assert root["active_gpu_hours"] == pytest.approx(root["gpu_hours"])  # 90 % ≥ 5 %
    assert root["energy_kwh"] * 3_600_000 == pytest.approx(root["gpu_hours"] * 3600 * 250)
    assert root["unmetered_gpu_hours"] == 0 and root["containers"] == 1
    m = report["machine"]
    # Every sampled second: both GPUs' 550 W, and 1 + 3/7 + 2/7 gpueq of capacity.
    assert m["energy_kwh"] * 3_600_000 == pytest.approx(m["sampled_hours"] * 3600 * 550)
    assert m["capacity_gpu_hours"] == pytest.approx(m["sampled_hours"] * 12 / 7)
    assert m["energy_kwh"] - m["unallocated_energy_kwh"] == pytest.approx(root["energy_kwh"])
