"""One GPU request, one mapping (issue 11 item 2): the allocate and deploy endpoints turn the
same malformed GPU options into the same usage error (HTTP 400, kind usage, the same words),
through AllocationRequest.from_options; nothing is allocated or audited for them."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from support import Daemon

CASES = [
    pytest.param({"gpueq": "0"}, "gpueq: must be greater than 0", id="gpueq zero"),
    pytest.param({"gpueq": "1e30000000"}, "gpueq: expected a number like 0.5", id="gpueq exponent"),
    pytest.param({"gpueq": "x"}, "gpueq: expected a number like 0.5", id="gpueq text"),
    pytest.param(
        {"gpus": 1, "gpueq": "0.5"}, "give one of gpus, mig, gpueq or cpu_only, not gpus and gpueq",
        id="two kinds",
    ),
    pytest.param({"mig": ["4g.banana"]}, "4g.banana", id="bad MIG profile"),
    pytest.param({"mig": []}, "mig: List should have at least 1 item", id="no MIG profile"),
]  # fmt: skip


@pytest.mark.parametrize(("options", "said"), CASES)
def test_allocate_and_deploy_refuse_the_same_options_the_same_way(
    daemon_factory: Any, options: dict[str, Any], said: str
) -> None:
    d: Daemon = daemon_factory()
    with httpx.Client(
        transport=httpx.HTTPTransport(uds=str(d.socket)), base_url="http://ds01"
    ) as http:
        alloc = http.post("/v1/allocations", json={"container": "job", **options})
        deploy = http.post("/v1/containers", json={"name": "job", "image": "img", **options})
        events = http.get("/v1/events").json()
    errors = []
    for r in (alloc, deploy):
        assert r.status_code == 400, r.text
        errors.append(r.json()["error"])
    assert errors[0] == errors[1]
    assert errors[0]["kind"] == "usage"
    assert said in errors[0]["what"]
    assert [e for e in events if e["kind"] == "alloc"] == []
