"""ds01d's /metrics (issue 17, item 1) against a real ds01d on a simulated machine: values come
from the machine file and the allocations made through the API; counters come from the audit
log and survive a restart; the privacy rule and the token; a taken port; non-loopback refused.
The real Prometheus reading these is tests/containers/test_metrics_prometheus.py."""

from __future__ import annotations

import socket
from typing import Any

import pytest
from metrics_support import fetch, scrape

from ds01.api.schemas import AllocateIn
from ds01.config import parse_config_text
from ds01.errors import ConfigError, Refusal
from local_servers import free_port
from support import Daemon, wait_for

pytestmark = pytest.mark.root  # allocations as root through api.sock (SO_PEERCRED)

CONFIG = """\
admin_group: ds01t-admins
gpu:
  sample_interval: 1s
defaults:
  max_gpueq: 2
  max_units_per_container: 2
  max_containers: 3
  allow_full_gpu: true
  gpu_hold_after_stop: 0s
metrics:
  listen: 127.0.0.1:{port}
"""


def _daemon(factory: Any, port: int, extra: str = "") -> Daemon:
    d: Daemon = factory(config=CONFIG.format(port=port) + extra, machine="4xA100-40GB.yaml")
    return d


def test_units_gpus_and_capacity_come_from_the_sample_and_the_allocations(
    daemon_factory: Any,
) -> None:
    port = free_port()
    d = _daemon(daemon_factory, port)
    m = scrape(port)
    # examples/machines/4xA100-40GB.yaml: GPU 1 at 87 %, 58 °C, 312.5 W.
    assert m.get("ds01_gpu_power_watts", gpu="1") == 312.5
    assert m.get("ds01_gpu_temperature_celsius", gpu="1") == 58
    assert m.get("ds01_unit_utilization_ratio", unit="1") == 0.87
    assert m.get("ds01_gpu_memory_total_bytes", gpu="1") == 40960 * 1024 * 1024
    assert m.get("ds01_gpueq_capacity") == 4
    assert m.get("ds01_gpueq_free") == 4
    assert [lv["unit"] for lv, _ in m.all("ds01_unit_info")] == ["0", "1", "2", "3"]
    assert m.get("ds01_unit_state", unit="0", state="free") == 1
    assert m.get("ds01_docker_up") == 0  # the daemon_factory's engine address leads nowhere
    assert m.get("ds01_build_info") == 1

    with d.client() as c:
        a = c.allocate(AllocateIn(gpus=1, container="thesis"))
        with pytest.raises(Refusal) as refused:
            c.allocate(AllocateIn(gpus=2, container="more"))  # 1 + 2 > max_gpueq 2
    assert refused.value.reason.value == "max_gpueq"
    unit = a.units[0].uuid
    m = scrape(port)
    assert m.get("ds01_unit_state", uuid=unit, state="reserved") == 1
    assert m.get("ds01_unit_state", uuid=unit, state="free") == 0
    holder = m.all("ds01_unit_holder_info")
    assert [(lv["uuid"], lv["user"], lv["container"], lv["state"]) for lv, _ in holder] == [
        (unit, "root", "thesis", "reserved")
    ]
    assert m.get("ds01_user_gpueq", user="root") == 1
    assert m.get("ds01_user_containers", user="root") == 1
    assert m.get("ds01_allocations", state="reserved") == 1
    assert m.get("ds01_allocations_gpueq", state="reserved") == 1
    assert m.get("ds01_gpueq_free") == 3
    assert m.get("ds01_allocation_refusals_total", reason="max_gpueq") == 1
    assert m.get("ds01_audit_events_total", kind="alloc") == 2  # reserved, refused
    assert m.families["ds01_user_gpueq_seconds"] == "counter"  # the usage ledger's

    # The counters are the audit log's totals: a restarted ds01d continues from them.
    d.stop()
    d.start()
    m = scrape(port)
    assert m.get("ds01_allocation_refusals_total", reason="max_gpueq") == 1
    assert m.get("ds01_unit_state", uuid=unit, state="reserved") == 1


def test_hide_others_names_no_user_unless_the_scraper_brings_the_token(
    daemon_factory: Any,
) -> None:
    port = free_port()
    d = _daemon(daemon_factory, port, "privacy: hide_others\n")
    with d.client() as c:
        c.allocate(AllocateIn(gpus=1, container="thesis"))
    m = scrape(port)
    assert m.get("ds01_allocations", state="reserved") == 1
    assert "ds01_unit_holder_info" not in m.families
    assert not [n for n in m.families if n.startswith("ds01_user_")]
    values = {v for _, lv, _ in m.samples for v in lv.values()}
    assert "root" not in values and "thesis" not in values

    d.stop()
    token_file = d.base / "metrics.token"
    token_file.write_text("s3cret-token\n")
    d.write_config(CONFIG.format(port=port) + f"  token_file: {token_file}\nprivacy: hide_others\n")
    d.start()
    status, body = fetch(port)
    assert status == 401
    assert "Authorization: Bearer" in body
    assert fetch(port, "wrong")[0] == 401
    m = scrape(port, "s3cret-token")
    assert m.get("ds01_user_gpueq", user="root") == 1


def test_a_taken_port_leaves_the_endpoint_off_and_ds01d_running(daemon_factory: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = _daemon(daemon_factory, port)
        with d.client() as c:
            assert c.allocate(AllocateIn(gpus=1)).state == "reserved"
        wait_for(lambda: "metrics: cannot listen on" in d.log(), "the log line", 10)
    assert f"127.0.0.1:{port}" in d.log()


@pytest.mark.parametrize(
    ("listen", "allowed"),
    [
        ("127.0.0.1:9101", True),
        ("'[::1]:9101'", True),
        ("localhost:9101", True),
        ("0.0.0.0:9101", False),
        ("192.0.2.7:9101", False),
    ],
    ids=["ipv4 loopback", "ipv6 loopback", "localhost", "every address", "a lan address"],
)
def test_only_loopback_listens_without_allow_remote(listen: str, allowed: bool) -> None:
    text = f"metrics:\n  listen: {listen}\n"
    if allowed:
        assert parse_config_text(text, "/etc/ds01/ds01.yaml").metrics.listen is not None
        return
    with pytest.raises(ConfigError) as err:
        parse_config_text(text, "/etc/ds01/ds01.yaml")
    assert "is not a loopback address" in " ".join(err.value.lines())
    ok = parse_config_text(text + "  allow_remote: true\n", "/etc/ds01/ds01.yaml")
    assert ok.metrics.listen is not None


def test_metrics_off_means_no_listener() -> None:
    assert parse_config_text("metrics:\n  listen: off\n", "/x.yaml").metrics.listen is None
