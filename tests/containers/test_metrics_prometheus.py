"""A real Prometheus scrapes a real ds01d during a scripted scenario (issue 17, item 1): a
user's container holds a whole GPU of the simulated machine and does nothing; the shipped rules
(packaging/prometheus/ds01-rules.yml, with the idle alert's 5400 s lowered to 4 s, the one
change) record the capacity and the idle GPU, and DS01AllocatedGPUIdle fires at the first rule
evaluation whose data shows the GPU idle past the threshold: within one rule interval, with no
pending stage. The GPU gets busy again, and the idle figure and the alert go away.

1 s scrape and evaluation intervals keep the whole scenario to seconds. Nothing asserts how
long a step took: the alert's timing is checked on Prometheus' own timestamps.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from containers_support import (
    MACHINES,
    Users,
    add_user,
    deploy,
    remove_owned,
    running_daemon,
    short_tmp,
    unique_user,
)

from ds01.inventory import sim
from local_servers import free_port
from prometheus_support import DASHBOARD, RULES, Prometheus
from support import need, wait_for

pytestmark = [pytest.mark.docker, pytest.mark.root]

THRESHOLD_S = 4
CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 2
  max_units_per_container: 1
  max_containers: 2
  allow_full_gpu: true
  cpus: 1
  memory: 128m
  gpu_hold_after_stop: 0s
  idle_timeout: 1h
  policy:
    idle_gpu_util_pct: 5
    idle_samples: 2
metrics:
  listen: 127.0.0.1:{port}
"""


@pytest.fixture
def machine() -> Iterator[Path]:
    """4xA100-40GB, every GPU at 0 % and no process: the test drives the rest."""
    base = short_tmp()
    path = base / "4xA100.yaml"
    shutil.copy(MACHINES / "4xA100-40GB.yaml", path)
    sim.clear_processes(path)
    for gpu in ("0", "1", "2", "3"):
        sim.set_utilization(path, gpu, 0)
    yield path
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def alice(docker_client: docker.DockerClient) -> Iterator[str]:
    need(os.geteuid() == 0, "creating Unix users needs root")
    users = Users()
    name = unique_user("alice")
    add_user(users, name)
    try:
        yield name
    finally:
        remove_owned(docker_client, [name])
        users.cleanup()


def _rules_with_threshold(base: Path) -> Path:
    text = RULES.read_text()
    line = "expr: ds01:unit_idle_seconds:holder > 5400"
    assert text.count(line) == 1
    out = base / "ds01-rules.yml"
    out.write_text(text.replace(line, f"expr: ds01:unit_idle_seconds:holder > {THRESHOLD_S}"))
    return out


def test_prometheus_alerts_on_an_idle_allocated_gpu_within_one_rule_interval(
    docker_host: str, machine: Path, alice: str
) -> None:
    port = free_port()
    base = short_tmp()
    prom = Prometheus(base, f"127.0.0.1:{port}", _rules_with_threshold(base))
    try:
        with running_daemon(CONFIG.format(port=port), docker_host, machine) as d:
            # The first scrape, and a rule evaluation after it.
            wait_for(
                lambda: prom.value("ds01:gpueq_free:ratio") is not None,
                "the first recorded capacity",
                30,
                detail=prom.log,
            )
            assert prom.value('up{job="ds01"}') == 1
            assert prom.value("ds01:gpueq_free:ratio") == 1
            assert prom.value("ds01:gpueq_idle_allocated:sum") == 0

            mine = deploy(d, alice, "idle", "--gpus", "1")
            unit = mine["gpus"][0]["uuid"]

            def firing() -> list[dict[str, object]]:
                return [
                    a
                    for a in prom.alerts()
                    if a["labels"]["alertname"] == "DS01AllocatedGPUIdle" and a["state"] == "firing"
                ]

            wait_for(firing, "DS01AllocatedGPUIdle", 60, detail=prom.log)
            labels = firing()[0]["labels"]
            assert (labels["uuid"], labels["user"], labels["container"], labels["severity"]) == (
                unit,
                alice,
                "idle",  # the container's name in ds01 (Docker's is <user>.idle)
                "warning",
            )
            assert labels["unit"] == mine["gpus"][0]["name"]

            # Within one rule interval: the alert's first firing sample is the evaluation at
            # which the recorded idle time first exceeded the threshold, and it never pended.
            idle = prom.raw(f'ds01:unit_idle_seconds:holder{{uuid="{unit}"}}[5m]')
            first_over = min(t for t, v in idle if v > THRESHOLD_S)
            fired = prom.raw('ALERTS{alertname="DS01AllocatedGPUIdle",alertstate="firing"}[5m]')
            assert fired[0][0] == first_over
            assert prom.query('ALERTS{alertname="DS01AllocatedGPUIdle",alertstate="pending"}') == []

            # The recording rules over this scenario: 1 of 4 whole GPUs held, and idle.
            assert prom.value("ds01:gpueq_allocated:sum") == 1
            assert prom.value("ds01:gpueq_free:ratio") == 0.75
            assert prom.value("ds01:gpueq_idle_allocated:sum") == 1
            assert prom.value(f'ds01_user_gpueq{{user="{alice}"}}') == 1
            assert prom.value('ds01_unit_state{state="active",uuid="' + unit + '"}') == 1

            # The usage ledger's counters: held time and energy grow, none of it active.
            held = f'ds01_user_gpueq_seconds_total{{user="{alice}"}}'
            active = f'ds01_user_active_gpueq_seconds_total{{user="{alice}"}}'
            wait_for(lambda: (prom.value(held) or 0) > 0, "held GPU-seconds", 30)
            assert prom.value(active) == 0
            assert (prom.value(f'ds01_user_energy_joules_total{{user="{alice}"}}') or 0) > 0

            # Every dashboard query is valid PromQL over this Prometheus.
            for panel in json.loads(DASHBOARD.read_text())["panels"]:
                for target in panel["targets"]:
                    prom.query(target["expr"])  # status success, or api() fails

            # The GPU gets work: the lifecycle judges it in use, the idle figure and the alert go.
            sim.set_utilization(machine, unit, 80)
            wait_for(
                lambda: prom.value("ds01:gpueq_idle_allocated:sum") == 0,
                "the idle figure to drop",
                60,
            )
            wait_for(lambda: not firing(), "the alert to resolve", 60)
            wait_for(lambda: (prom.value(active) or 0) > 0, "active GPU-seconds", 30)
    finally:
        prom.stop()
        shutil.rmtree(base, ignore_errors=True)
