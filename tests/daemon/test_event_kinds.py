"""Event kinds are a closed set (model/events.EventKind): `ds01 events --kind` and the API refuse
an unknown one with the list of valid kinds, instead of answering "No events."."""

from __future__ import annotations

from typing import Any

import httpx

from support import Daemon


def test_an_unknown_kind_is_refused_with_the_valid_ones(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    r = d.cli("events", "--kind", "bogus")
    assert r.returncode == 2, r.stdout + r.stderr
    assert "'bogus' is not one of 'alloc', 'unit', 'admin', 'container'" in r.stderr
    assert "Traceback" not in r.stderr
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://ds01"
    ) as http:
        answer = http.get("/v1/events", params={"kind": "bogus"})
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["what"] == "kind: 'bogus' is not an event kind"
    assert error["fix"] == (
        "Use one of: alloc, unit, admin, container, gate, grant, host, daemon, notify, queue."
    )


def test_a_known_kind_filters(daemon_factory: Any) -> None:
    d: Daemon = daemon_factory()
    r = d.cli("events", "--kind", "unit", "--json")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("[")
    assert '"kind": "unit"' in r.stdout  # the simulated machine's units were added at start
    assert '"kind": "alloc"' not in r.stdout
