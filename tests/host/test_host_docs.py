"""docs/host-access.md stays honest: every doctor check id, every apply area, every managed file
and every `doctor --json` field is documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.config import parse_config_text
from ds01.host.doctor import CHECK_IDS
from ds01.host.doctor.base import Result, Status
from ds01.host.doctor.runner import DoctorReport
from ds01.host.render import AREAS, HostSettings, render

DOC = (Path(__file__).resolve().parents[2] / "docs" / "host-access.md").read_text()


@pytest.mark.parametrize("check_id", CHECK_IDS)
def test_every_check_id_is_documented(check_id: str) -> None:
    assert f"| `{check_id}` |" in DOC


@pytest.mark.parametrize("area", AREAS)
def test_every_area_is_documented(area: str) -> None:
    assert f"`{area}`" in DOC


def test_every_managed_file_is_documented() -> None:
    config = parse_config_text("host:\n  compute_gate: uvm\n", "t.yaml")
    settings = HostSettings(Path("/etc/ds01/ds01.yaml"), Path("/var/lib/ds01"), Path("/run/ds01"))
    files = render(config, settings, lambda path: "{}" if path.endswith(".json") else None).files
    missing = [path for path in files if f"| `{path}`" not in DOC]
    assert missing == []


def test_every_json_field_is_documented() -> None:
    report = DoctorReport([Result("x.y", Status.PASS, "s")])
    fields = set(report.to_json()) | set(report.results[0].to_json())
    assert sorted(f for f in fields if f"| `{f}` |" not in DOC) == []
