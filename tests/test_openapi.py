"""The shipped API description (docs/openapi.json) matches what the daemon serves."""

from __future__ import annotations

import json
from pathlib import Path

from ds01.api.openapi import openapi_document

ROOT = Path(__file__).resolve().parent.parent


def test_docs_openapi_json_is_current() -> None:
    shipped = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert shipped == json.loads(json.dumps(openapi_document())), (
        "docs/openapi.json is stale: regenerate it with "
        "python -c 'import json; from ds01.api.openapi import openapi_document; "
        "print(json.dumps(openapi_document(), indent=2, sort_keys=True))' > docs/openapi.json"
    )


def test_every_documented_path_has_responses_and_a_summary() -> None:
    doc = openapi_document()
    assert doc["openapi"] == "3.1.0"
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["summary"], f"{method.upper()} {path}"
            assert "200" in op["responses"], f"{method.upper()} {path}"


def test_the_description_lists_exactly_the_endpoints_the_daemon_serves(tmp_path: Path) -> None:
    from ds01.api.openapi import ROUTES
    from ds01.api.server import ApiDeps, build_app
    from ds01.config import parse_config_text
    from ds01.notify import Notifier
    from ds01.runtime.engine import Engine
    from ds01.services.allocation import AllocationService
    from ds01.services.containers import ContainerService
    from ds01.services.grants import GrantService
    from ds01.services.hostproc import HostProcessWatch
    from ds01.store.db import Database

    config = parse_config_text("", "test.yaml")
    db = Database(tmp_path / "ds01.db")
    allocations = AllocationService(db, lambda: config)
    notifier = Notifier(None)
    grants = GrantService(db, allocations, tmp_path, notifier)
    app = build_app(
        ApiDeps(
            allocations=allocations,
            sample=lambda: None,
            backend_name="sim",
            containers=ContainerService(
                allocations, Engine("unix:///nonexistent.sock"), lambda: config
            ),
            grants=grants,
            host_processes=HostProcessWatch(db, allocations, grants, notifier),
        )
    )
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")
    }
    documented = {(r.method, r.path) for r in ROUTES}
    assert served == documented
    db.close()
