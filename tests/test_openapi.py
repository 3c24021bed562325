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
