"""The scheduler stays pure (STYLE 7, BRIEF §3): it imports no store, Docker, NVML or config —
only ds01.model (which holds the gpueq weights and the MIG profile grammar), ds01.errors and
itself, plus the standard library: nothing from ds01.inventory."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import ds01.scheduler

ALLOWED_DS01 = ("ds01.model", "ds01.errors", "ds01.scheduler")
SCHEDULER = Path(ds01.scheduler.__file__).parent


def imports_of(path: Path) -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.append(node.module)
    return out


def test_scheduler_imports_only_model_errors_and_stdlib() -> None:
    bad = [
        f"{path.name}: {name}"
        for path in sorted(SCHEDULER.glob("*.py"))
        for name in imports_of(path)
        if not (
            name == "__future__"
            or name.split(".")[0] in sys.stdlib_module_names
            or name.startswith(ALLOWED_DS01)
            or name == "ds01.timetext"  # clock times in refusal texts; stdlib only
        )
    ]
    assert bad == []
