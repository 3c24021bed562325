"""The one parser of the engine's address (config docker.host), used by the config check, the
runtime, the gate and the doctor."""

from __future__ import annotations

import pytest

from ds01.config import parse_config_text
from ds01.engineaddr import EngineAddress
from ds01.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "parsed", "shown"),
    [
        ("unix:///run/d.sock", EngineAddress("unix", path="/run/d.sock"), "/run/d.sock"),
        ("tcp://10.0.0.5:2376", EngineAddress("tcp", host="10.0.0.5", port=2376), "10.0.0.5:2376"),
        ("tcp://docker01", EngineAddress("tcp", host="docker01", port=2375), "docker01:2375"),
        ("tcp://[::1]:2375/", EngineAddress("tcp", host="::1", port=2375), "::1:2375"),
        ("ssh://admin@gpu01", EngineAddress("ssh", host="gpu01"), "gpu01"),
    ],
)  # fmt: skip
def test_addresses_parse(text: str, parsed: EngineAddress, shown: str) -> None:
    assert EngineAddress.parse(text) == parsed
    assert str(parsed) == shown


@pytest.mark.parametrize(
    "text",
    [
        "/var/run/docker.sock",  # a path is not an address
        "unix://run/docker.sock",  # relative
        "http://localhost:2375",
        "tcp://host:notaport",
        "tcp://host:2375/some/path",
        "ssh://",
        "",
    ],
)
def test_anything_else_is_refused_with_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected unix://PATH, tcp://HOST:PORT or ssh://HOST"):
        EngineAddress.parse(text)


def test_the_config_refuses_what_the_parser_refuses() -> None:
    with pytest.raises(ConfigError, match=r"docker\.host"):
        parse_config_text("docker:\n  host: unix://run/docker.sock\n", "ds01.yaml")
