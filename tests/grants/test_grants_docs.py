"""docs/grants.md stays honest: every --json field of the grant commands and every event the
grant and host-process services record is documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from ds01.api.schemas import AccessEntryOut, AccessOut, GrantOut, HostProcessOut

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "grants.md").read_text()
MODELS: list[type[BaseModel]] = [AccessOut, AccessEntryOut, GrantOut, HostProcessOut]
FIELDS = sorted({(m.__name__, f) for m in MODELS for f in m.model_fields})
SOURCES = [ROOT / "src/ds01/services/grants.py", ROOT / "src/ds01/services/hostproc.py"]


def _recorded_actions() -> list[str]:
    """(kind, action) pairs the services pass to events.record / _event / _failure_event."""
    found: set[str] = set()
    for path in SOURCES:
        text = path.read_text()
        for kind, action in re.findall(r'kind="(\w+)",\s*action="(\w+)"', text):
            found.add(f"{kind}/{action}")
        for action in re.findall(r'self\._event\(\s*t,\s*"(\w+)"', text):
            found.add(f"host/{action}")
        for action in re.findall(r'self\._failure_event\(\s*"(\w+)"', text):
            found.add(f"host/{action}")
    return sorted(found)


@pytest.mark.parametrize(("model", "field"), FIELDS, ids=[f"{m}.{f}" for m, f in FIELDS])
def test_every_json_field_is_documented(model: str, field: str) -> None:
    assert f"`{field}`" in DOC, f"docs/grants.md does not mention {model}.{field}"


ACTIONS = _recorded_actions()


def test_the_event_scan_finds_the_events() -> None:
    assert {"grant/granted", "grant/expired", "host/process_sigterm"} <= set(ACTIONS)


@pytest.mark.parametrize("action", ACTIONS)
def test_every_event_is_documented(action: str) -> None:
    assert f"`{action}`" in DOC, f"docs/grants.md does not list the event {action}"
