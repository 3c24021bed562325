"""The web status page's pure parts, as tables of named cases with literal expected values:
`web.listen` addresses and the loopback rule, the Host header check, and the activity trend
ds01d keeps per unit (services/unithistory.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ds01.config import parse_config_text
from ds01.config.listen import ListenAddress, parse_listen
from ds01.errors import ConfigError
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Gpu, MachineSample, MigDevice
from ds01.services.unithistory import Measure, UnitHistory
from ds01.web.server import host_name


@pytest.mark.parametrize(
    ("text", "want"),
    [
        pytest.param("127.0.0.1:9102", ListenAddress("127.0.0.1", 9102), id="IPv4 loopback"),
        pytest.param("localhost:80", ListenAddress("localhost", 80), id="localhost by name"),
        pytest.param("[::1]:9102", ListenAddress("::1", 9102), id="IPv6 in brackets"),
        pytest.param("0.0.0.0:9102", ListenAddress("0.0.0.0", 9102), id="every interface"),
        pytest.param(False, None, id="a bare off (YAML reads it as false) is off"),
        pytest.param("off", None, id="a quoted off is off"),
        pytest.param(None, None, id="null is off"),
    ],
)
def test_listen_addresses_that_parse(text: object, want: ListenAddress | None) -> None:
    assert parse_listen(text) == want


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("9102", "expected HOST:PORT", id="a port alone"),
        pytest.param("127.0.0.1", "expected HOST:PORT", id="no port"),
        pytest.param("ds01.lab:9102", "does not resolve names", id="a name other than localhost"),
        pytest.param("::1:9102", "in brackets", id="IPv6 without brackets"),
        pytest.param("127.0.0.1:0", "1-65535", id="port 0"),
        pytest.param("127.0.0.1:70000", "1-65535", id="port too high"),
        pytest.param(9102, "expected HOST:PORT", id="a number"),
        pytest.param(True, "expected HOST:PORT", id="on is not an address"),
    ],
)
def test_listen_addresses_refused(text: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_listen(text)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:1", True),
        ("127.8.9.10:1", True),
        ("[::1]:1", True),
        ("localhost:1", True),
        ("0.0.0.0:1", False),
        ("10.1.2.3:1", False),
        ("[::]:1", False),
    ],
)
def test_which_addresses_are_loopback(address: str, loopback: bool) -> None:
    parsed = parse_listen(address)
    assert parsed is not None and parsed.loopback is loopback


def test_the_config_refuses_a_listen_address_off_loopback_unless_allowed() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("web:\n  listen: 0.0.0.0:9102\n", "ds01.yaml")
    text = "\n".join(err.value.lines())
    assert "ds01.yaml:2:3: web: listen: 0.0.0.0:9102 is not a loopback address" in text
    assert "allow_remote: true" in text and "SSH tunnel" in text
    config = parse_config_text("web:\n  listen: 0.0.0.0:9102\n  allow_remote: true\n", "x")
    assert config.web.listen == ListenAddress("0.0.0.0", 9102)


def test_the_page_is_on_by_default_and_off_by_one_word() -> None:
    assert parse_config_text("", "x").web.listen == ListenAddress("127.0.0.1", 9102)
    assert parse_config_text("web:\n  listen: off\n", "x").web.listen is None


@pytest.mark.parametrize(
    ("header", "name"),
    [
        pytest.param("localhost:9102", "localhost", id="name and port"),
        pytest.param("LOCALHOST", "localhost", id="case does not matter"),
        pytest.param("127.0.0.1", "127.0.0.1", id="no port"),
        pytest.param("[::1]:8080", "::1", id="IPv6 with a tunnel's port"),
        pytest.param("[::1]", "::1", id="IPv6 without a port"),
        pytest.param("", None, id="empty"),
        pytest.param("localhost:http", None, id="a port that is no number"),
        pytest.param("[::1]x", None, id="junk after the brackets"),
        pytest.param(
            "evil.example:9102", "evil.example", id="another name (refused by the caller)"
        ),
    ],
)
def test_host_header_names(header: str, name: str | None) -> None:
    assert host_name(header) == name


GPU = "GPU-00000000-0000-0000-0000-000000000001"
MIGGPU = "GPU-00000000-0000-0000-0000-000000000002"
MIG = "MIG-00000000-0000-0000-0000-000000000003"


def sample(at: float, util: float | None, mig_used: int | None) -> MachineSample:
    return MachineSample(
        gpus=(
            Gpu(0, GPU, "NVIDIA H100", 81920, False, utilization_pct=util, memory_used_mib=0),
            Gpu(
                1,
                MIGGPU,
                "NVIDIA H100",
                81920,
                True,
                mig_devices=(MigDevice(MIG, "3g.40gb", 2, 0, 40000, GpuEq.of(3, 7), 0, mig_used),),
            ),
        ),
        taken_at=datetime.fromtimestamp(at, UTC),
    )


def test_a_gpu_trends_its_utilization_and_a_mig_device_its_memory_in_buckets() -> None:
    h = UnitHistory(window_s=600, buckets=60)  # 10 s buckets
    h.record(sample(1000.0, 20.0, 10000))
    h.record(sample(1005.0, 40.0, 30000))  # same bucket: averaged
    h.record(sample(1012.0, 90.0, None))  # next bucket; the MIG device reports no memory
    got = h.trends(1015.0)
    assert got[GPU].measure is Measure.UTILIZATION
    assert got[GPU].points == ((1000.0, 30.0), (1010.0, 90.0))
    assert got[MIG].measure is Measure.MEMORY
    assert got[MIG].points == ((1000.0, 50.0),)  # (25 % + 75 %) / 2; no reading is no point
    assert MIGGPU not in got  # a GPU with MIG on is not a unit


def test_old_points_leave_the_window_and_gone_units_leave_the_history() -> None:
    h = UnitHistory(window_s=600, buckets=60)
    h.record(sample(1000.0, 10.0, 0))
    h.record(sample(1700.0, 50.0, 0))
    assert h.trends(1700.0)[GPU].points == ((1700.0, 50.0),)
    h.record(
        MachineSample(
            gpus=(Gpu(0, GPU, "NVIDIA H100", 81920, False, utilization_pct=5.0),),
            taken_at=datetime.fromtimestamp(1710.0, UTC),
        )
    )
    assert set(h.trends(1710.0)) == {GPU}


def test_a_clock_stepped_back_never_reorders_the_points() -> None:
    h = UnitHistory(window_s=600, buckets=60)
    h.record(sample(1100.0, 10.0, 0))
    h.record(sample(1050.0, 80.0, 0))  # an older bucket: dropped
    assert h.trends(1100.0)[GPU].points == ((1100.0, 10.0),)
