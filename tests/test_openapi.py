"""The shipped API description (docs/openapi.json) matches what the daemon serves."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

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


def _full_app(tmp_path: Path) -> Any:
    """build_app with every part ds01d has (containers, grants, lifecycle), over a fresh
    database."""
    from ds01.api.server import ApiDeps, build_app
    from ds01.config import parse_config_text
    from ds01.lifecycle.exemptions import Exemptions
    from ds01.notify import Notifier
    from ds01.runtime.engine import Engine
    from ds01.services.allocation import AllocationService
    from ds01.services.containers import ContainerService
    from ds01.services.grants import GrantService
    from ds01.services.hostproc import HostProcessWatch
    from ds01.services.queue import QueueService
    from ds01.store.db import Database

    config = parse_config_text("", "test.yaml")
    db = Database(tmp_path / "ds01.db")
    allocations = AllocationService(db, lambda: config)
    notifier = Notifier(None)
    grants = GrantService(db, allocations, tmp_path, notifier)
    containers = ContainerService(allocations, Engine("unix:///nonexistent.sock"), lambda: config)
    app = build_app(
        ApiDeps(
            allocations=allocations,
            sample=lambda: None,
            backend_name="sim",
            containers=containers,
            queue=QueueService(containers, notifier),
            grants=grants,
            exemptions=Exemptions(allocations),
            host_processes=HostProcessWatch(db, allocations, grants, notifier),
        )
    )
    db.close()
    return app


def test_the_description_lists_exactly_the_endpoints_the_daemon_serves(tmp_path: Path) -> None:
    app = _full_app(tmp_path)
    served = {
        (r.method.lower(), r.resource.canonical)
        for r in app.router.routes()
        if r.resource is not None and r.method not in ("HEAD", "*")
    }
    documented = {
        (method, path) for path, ops in openapi_document()["paths"].items() for method in ops
    }
    assert served == documented


def _pattern(path: str) -> re.Pattern[str]:
    """A route table path as a regex: `{op:drain|undrain}` → its alternatives, `{id}` → one
    segment."""
    parts = re.split(r"(\{\w+(?::[^}]*)?\})", path)
    out = ""
    for part in parts:
        m = re.fullmatch(r"\{\w+(?::([^}]*))?\}", part)
        out += (f"(?:{m.group(1)})" if m.group(1) else "[^/]+") if m else re.escape(part)
    return re.compile(out)


def test_every_endpoint_the_docs_name_is_in_the_route_table() -> None:
    from ds01.api.routes import ROUTES

    mentions = [
        (doc.name, method, path)
        for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
        for method, path in re.findall(
            r"(?:\b(GET|POST|PUT|PATCH|DELETE) )?(/v1/[\w./{}-]*\w)", doc.read_text()
        )
    ]
    assert len(mentions) > 20  # the docs do name endpoints; the pattern finds them
    unknown = [
        f"{doc}: {method} {path}".replace(":  ", ": ")
        for doc, method, path in mentions
        if not any(
            _pattern(r.path).fullmatch(path) and method.lower() in ("", r.method) for r in ROUTES
        )
    ]
    assert unknown == []
