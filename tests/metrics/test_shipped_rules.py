"""What ships with the metrics (packaging/prometheus, packaging/grafana, docs/metrics.md) stays
true to what ds01d serves: promtool accepts the rules, every query of the rules and of the
Grafana dashboard names a metric the endpoint serves (or a recording rule of the file), and
the docs name every metric."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml
from metrics_support import Scrape, scrape

from local_servers import free_port
from prometheus_support import DASHBOARD, ROOT, RULES, promtool
from support import Daemon

NAME = re.compile(r"\bds01[_:][A-Za-z0-9_:]*")
DOCS = ROOT / "docs" / "metrics.md"


@pytest.fixture(scope="module")
def served() -> Scrape:
    """Every family a ds01d on the simulated 8×H100 serves (one scrape; the families are there
    even while empty)."""
    from support import BASIC_CONFIG, MACHINES, short_tmp

    port = free_port()
    config = BASIC_CONFIG + f"metrics:\n  listen: 127.0.0.1:{port}\n"
    d = Daemon(short_tmp(), config, MACHINES / "8xH100-mig-mixed.yaml", None)
    d.start()
    try:
        return scrape(port)
    finally:
        d.stop()
        shutil.rmtree(d.base, ignore_errors=True)


def _rules() -> list[dict[str, Any]]:
    doc = yaml.safe_load(RULES.read_text())
    return [r for g in doc["groups"] for r in g["rules"]]


def _dashboard_queries() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in doc["panels"] for t in p["targets"]]


def test_promtool_accepts_the_shipped_rules() -> None:
    r = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in r.stdout


def test_every_rule_names_only_metrics_ds01d_serves(served: Scrape) -> None:
    known = served.names() | {r["record"] for r in _rules() if "record" in r}
    for rule in _rules():
        names = set(NAME.findall(rule["expr"]))
        assert names or rule.get("alert") == "DS01Down", rule  # DS01Down reads up{job="ds01"}
        assert names <= known, (rule.get("record") or rule.get("alert"), names - known)


def test_every_dashboard_query_names_a_metric_ds01d_serves(served: Scrape) -> None:
    known = served.names() | {r["record"] for r in _rules() if "record" in r}
    queries = _dashboard_queries()
    assert len(queries) >= 20
    for expr in queries:
        names = set(NAME.findall(expr))
        assert names, expr
        assert names <= known, (expr, names - known)


def test_the_docs_name_every_metric_ds01d_serves(served: Scrape) -> None:
    docs = DOCS.read_text()
    ours = sorted(n for n in served.names() if n.startswith("ds01_"))
    assert len(ours) >= 40
    missing = [n for n in ours if f"`{n}`" not in docs]
    assert missing == []
    for rule in _rules():
        name = rule.get("record") or rule["alert"]
        assert f"`{name}`" in docs, name
