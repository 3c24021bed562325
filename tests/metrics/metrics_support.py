"""Reading ds01d's /metrics in tests: the text format parsed by prometheus_client's own parser
(the format Prometheus reads), samples looked up by name and labels."""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families


@dataclass(frozen=True)
class Scrape:
    text: str
    families: dict[str, str]  # family name → type (counter families without _total)
    samples: list[tuple[str, dict[str, str], float]]

    def get(self, name: str, **labels: str) -> float | None:
        """The one sample of `name` whose labels include `labels`; None when there is none."""
        found = [v for n, lv, v in self.samples if n == name and labels.items() <= lv.items()]
        assert len(found) <= 1, f"{name} {labels}: {len(found)} samples"
        return found[0] if found else None

    def all(self, name: str) -> list[tuple[dict[str, str], float]]:
        return [(lv, v) for n, lv, v in self.samples if n == name]

    def names(self) -> set[str]:
        """Every series name the endpoint can serve now: counters as NAME_total."""
        return {f"{n}_total" if t == "counter" else n for n, t in self.families.items()}


def fetch(port: int, token: str | None = None) -> tuple[int, str]:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/metrics")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def scrape(port: int, token: str | None = None) -> Scrape:
    status, text = fetch(port, token)
    assert status == 200, f"/metrics answered {status}: {text}"
    families: dict[str, str] = {}
    samples: list[tuple[str, dict[str, str], float]] = []
    for fam in text_string_to_metric_families(text):
        families[fam.name] = fam.type
        samples.extend((s.name, dict(s.labels), s.value) for s in fam.samples)
    return Scrape(text, families, samples)
