"""A config reload (SIGHUP) through the loader's reload (issue 11 item 4): live keys take effect
at once — the gate's policy, the engine's address — and a key ds01d reads only at start is
logged, listed in /v1/health (restart_needed) and shown by `ds01 doctor`, not silently ignored.
"""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path
from typing import Any

import docker
import pytest

from support import BIN, TEST_IMAGE, Daemon, wait_for

CONFIG = """\
admin_group: ds01t-admins
defaults:
  max_gpueq: 2
  allow_full_gpu: true
host:
  gate_group: {group}
gate:
  cap_add: [{caps}]
docker:
  host: {docker}
"""


def _reload(d: Daemon, text: str) -> None:
    before = d.log().count("config reloaded from")
    d.write_config(text)
    assert d.proc is not None
    d.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: d.log().count("config reloaded from") > before, "the reload")


def _health(d: Daemon) -> Any:
    with d.client() as c:
        return c.health()


def test_the_gates_policy_and_the_engine_address_are_live_and_restart_only_keys_are_said(
    daemon_factory: Any, docker_host: str, docker_client: docker.DockerClient, tmp_path: Path
) -> None:
    nowhere = f"unix://{tmp_path}/no-docker.sock"
    d: Daemon = daemon_factory(
        config=CONFIG.format(group="ds01t-gate", caps="", docker=nowhere), start=True
    )
    assert _health(d).docker == "down"

    # The engine's address: Docker comes up for ds01d without a restart.
    _reload(d, CONFIG.format(group="ds01t-gate", caps="", docker=docker_host))
    wait_for(lambda: _health(d).docker == "up", "ds01d to reach the engine at its new address")

    gate = docker.DockerClient(base_url=f"unix://{d.run_dir / 'docker.sock'}")
    made: list[Any] = []
    try:
        with pytest.raises(docker.errors.APIError, match="cap-add NET_ADMIN was refused"):
            gate.containers.create(TEST_IMAGE, "true", cap_add=["NET_ADMIN"], device_requests=[])
        # The gate's policy: a capability the admin allows now is allowed from the next request.
        _reload(d, CONFIG.format(group="ds01t-gate", caps="NET_ADMIN", docker=docker_host))
        made.append(gate.containers.create(TEST_IMAGE, "true", cap_add=["NET_ADMIN"]))
        assert _health(d).restart_needed == []

        # A key read only at start: kept, and said so.
        _reload(d, CONFIG.format(group="ds01t-other", caps="NET_ADMIN", docker=docker_host))
        assert _health(d).restart_needed == ["host.gate_group"]
        assert "host.gate_group changed and take effect only when ds01d restarts" in d.log()
        r = subprocess.run(
            [
                str(BIN / "ds01"),
                "--run-dir",
                str(d.run_dir),
                "--config",
                str(d.config_path),
                "doctor",
                "--json",
                "--only",
                "daemon.config-current",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        (check,) = json.loads(r.stdout)["checks"]
        assert check["status"] == "warn", check
        assert "host.gate_group" in check["summary"]
        assert "systemctl restart ds01d" in check["fix"]
    finally:
        for c in made:
            c.remove(force=True)
        gate.close()
