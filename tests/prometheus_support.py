"""A real Prometheus (Debian's `prometheus` package) for tests: its own config, rules, storage
and port under a temporary directory, short intervals, stopped by pid."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from local_servers import free_port
from support import need, wait_for

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "packaging" / "prometheus" / "ds01-rules.yml"
DASHBOARD = ROOT / "packaging" / "grafana" / "ds01-dashboard.json"


def promtool() -> str:
    path = shutil.which("promtool")
    need(path is not None, "promtool is not installed: bash .ci/setup-system.sh")
    assert path is not None
    return path


class Prometheus:
    def __init__(self, base: Path, target: str, rules: Path, interval: str = "1s") -> None:
        binary = shutil.which("prometheus")
        need(binary is not None, "prometheus is not installed: bash .ci/setup-system.sh")
        assert binary is not None
        self.base = base
        self.port = free_port()
        config = base / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {interval}\n"
            f"  evaluation_interval: {interval}\n"
            f"rule_files: [{rules}]\n"
            "scrape_configs:\n"
            "  - job_name: ds01\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )
        self.log_path = base / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={base / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=log,
                stderr=log,
            )
        wait_for(self._ready, "Prometheus to be ready", 60, detail=self.log)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def api(self, path: str, **params: str) -> Any:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=10) as r:
            body = json.loads(r.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query's vector: [{metric: {...}, value: [ts, "v"]}, ...]."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        result: list[dict[str, Any]] = data["result"]
        return result

    def value(self, expr: str) -> float | None:
        """The one value of an instant query; None when it returns nothing."""
        found = self.query(expr)
        assert len(found) <= 1, found
        return float(found[0]["value"][1]) if found else None

    def raw(self, expr: str) -> list[tuple[float, float]]:
        """The stored samples of a range selector (one series), oldest first."""
        data = self.api("query", query=expr)
        assert data["resultType"] == "matrix", data
        assert len(data["result"]) <= 1, data["result"]
        if not data["result"]:
            return []
        return [(float(t), float(v)) for t, v in data["result"][0]["values"]]

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.api("alerts")["alerts"]
        return alerts

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
