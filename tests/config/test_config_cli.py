"""`ds01 config check` and `ds01 config show`, run as real processes of the installed `ds01`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

DS01 = str(Path(sys.executable).parent / "ds01")
REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "ds01.yaml"
FIXTURES = Path(__file__).parent / "fixtures"
FIX_LINE = "Fix the lines above, then run 'ds01 config check'."


def run(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith("DS01_") and k != "DOCKER_HOST"
    }
    clean["COLUMNS"] = "120"
    clean.update(env or {})
    return subprocess.run(
        [DS01, *args], capture_output=True, text=True, env=clean, cwd=cwd, timeout=60, check=False
    )


def test_check_accepts_the_example_config() -> None:
    result = run("config", "check", str(EXAMPLE))
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"ok: {EXAMPLE} is valid (4 groups, 6 users)\n"


def test_check_lists_every_problem_on_stderr_and_exits_2() -> None:
    result = run("config", "check", "fixtures/cross-checks.yaml", cwd=FIXTURES.parent)
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "fixtures/cross-checks.yaml:3:27: groups.student.members[2]: 'alice' is already a member "
        "of this group (line 3)",
        "fixtures/cross-checks.yaml:6:9: groups.researcher.members[0]: 'bob' is already a member "
        "of group 'student' (line 3); a user belongs to one group",
        "fixtures/cross-checks.yaml:9:12: users.carol.group: unknown group 'studnet'; "
        "did you mean 'student'?",
        "fixtures/cross-checks.yaml:10:30: exempt_users[2]: 'root' is listed twice "
        "(first at line 10)",
        "fixtures/cross-checks.yaml:12:12: gpu.backend: backend 'sim' needs gpu.sim_machine: the "
        "simulated machine file to read",
        "fixtures/cross-checks.yaml:16:13: storage.shared_paths[1].path: '/data' is listed twice "
        "(first at line 15)",
        FIX_LINE,
    ]


@pytest.mark.parametrize(
    ("args", "env"),
    [
        pytest.param(("--config", "{path}", "config", "check"), {}, id="the --config flag"),
        pytest.param(("config", "check"), {"DS01_CONFIG": "{path}"}, id="the DS01_CONFIG variable"),
    ],
)
def test_check_without_a_path_checks_the_configured_file(
    tmp_path: Path, args: tuple[str, ...], env: dict[str, str]
) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text("groups:\n  student:\n    members: [a, b]\n    cpus: 4\n")
    result = run(
        *(a.format(path=path) for a in args), env={k: v.format(path=path) for k, v in env.items()}
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"ok: {path} is valid (1 group, 2 users)\n"


def test_check_of_a_missing_file_says_how_to_fix_it(tmp_path: Path) -> None:
    result = run("config", "check", str(tmp_path / "none.yaml"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"{tmp_path}/none.yaml: file not found",
        "Create it (examples/ds01.yaml is a starting point), or point --config or DS01_CONFIG "
        "at the right file.",
    ]


def rows(stdout: str) -> list[list[str]]:
    return [re.split(r"\s{2,}", line.strip()) for line in stdout.splitlines()]


def test_show_explains_each_limit_and_the_layer_it_came_from() -> None:
    result = run("--config", str(EXAMPLE), "config", "show", "--user", "h.baker@hertie-school.lan")
    assert result.returncode == 0
    assert result.stderr == (
        "note: 'h.baker@hertie-school.lan' is unknown to NSS (getent passwd); "
        "resolved without Unix groups\n"
    )
    assert rows(result.stdout) == [
        ["user:", "h.baker@hertie-school.lan"],
        ["group:", "faculty (via members)"],
        ["config: " + str(EXAMPLE)],
        ["key", "value", "source"],
        ["max_gpueq", "2", "group:faculty"],
        ["max_units_per_container", "2", "group:faculty"],
        ["max_containers", "5", "group:faculty"],
        ["allow_full_gpu", "yes", "group:faculty"],
        ["cpus", "32", "group:faculty"],
        ["memory", "192g", "user:h.baker@hertie-school.lan"],
        ["memory_swap", "192g", "user:h.baker@hertie-school.lan"],
        ["shm", "64g", "group:faculty"],
        ["pids", "4096", "defaults"],
        ["max_runtime", "7d", "group:faculty"],
        ["idle_timeout", "4h", "group:faculty"],
        ["gpu_hold_after_stop", "15m", "defaults"],
        ["policy.idle_gpu_util_pct", "5", "defaults"],
        ["policy.idle_cpu_pct", "5", "defaults"],
        ["policy.idle_samples", "3", "defaults"],
        ["policy.warn_before", "15m", "defaults"],
        ["policy.max_keepalive", "8h", "defaults"],
        ["policy.max_keepalive_total", "1d", "defaults"],
        ["policy.demand_idle_factor", "0.5", "defaults"],
        ["policy.demand_idle_floor", "15m", "defaults"],
        ["policy.demand_window", "10m", "defaults"],
    ]


def test_show_json_has_machine_values_and_sources(tmp_path: Path) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text(
        "defaults:\n  max_gpueq: '3/7'\n  memory: 16g\n  max_runtime: null\n"
        "groups:\n  student:\n    members: [alice]\n    max_gpueq_total: 2\n    shm: 1g\n"
        "users:\n  alice:\n    idle_timeout: 30m\n    policy: {idle_samples: 4}\n"
    )
    result = run("--config", str(path), "config", "show", "--user", "alice", "--json")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {
        "user": "alice",
        "group": "student",
        "group_via": "members",
        "unix_groups": None,
        "admin": False,
        "exempt": False,
        "config": str(path),
        "limits": {
            "max_gpueq": {"value": "3/7", "float": 0.42857142857142855, "source": "defaults"},
            "max_units_per_container": {"value": 1, "source": "defaults"},
            "max_containers": {"value": 2, "source": "defaults"},
            "allow_full_gpu": {"value": False, "source": "defaults"},
            "cpus": {"value": 8.0, "source": "defaults"},
            "memory": {"value": 17179869184, "source": "defaults"},
            "memory_swap": {"value": 17179869184, "source": "defaults"},
            "shm": {"value": 1073741824, "source": "group:student"},
            "pids": {"value": 4096, "source": "defaults"},
            "max_runtime": {"value": None, "source": "defaults"},
            "idle_timeout": {"value": 1800, "source": "user:alice"},
            "gpu_hold_after_stop": {"value": 900, "source": "defaults"},
            "max_gpueq_total": {"value": "2", "float": 2.0, "source": "group:student"},
        },
        "policy": {
            "idle_gpu_util_pct": {"value": 5.0, "source": "defaults"},
            "idle_cpu_pct": {"value": 5.0, "source": "defaults"},
            "idle_samples": {"value": 4, "source": "user:alice"},
            "warn_before": {"value": 900, "source": "defaults"},
            "max_keepalive": {"value": 28800, "source": "defaults"},
            "max_keepalive_total": {"value": 86400, "source": "defaults"},
            "demand_idle_factor": {"value": 0.5, "source": "defaults"},
            "demand_idle_floor": {"value": 900, "source": "defaults"},
            "demand_window": {"value": 600, "source": "defaults"},
        },
    }


def test_show_takes_unix_groups_from_nss(tmp_path: Path) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text("groups:\n  operators:\n    unix_group: root\n    cpus: 2\nadmin_group: root\n")
    result = run("--config", str(path), "config", "show", "--user", "root", "--json")
    assert (result.returncode, result.stderr) == (0, "")
    shown = json.loads(result.stdout)
    assert (shown["group"], shown["group_via"], shown["admin"]) == ("operators", "unix_group", True)
    assert "root" in shown["unix_groups"]
    assert shown["limits"]["cpus"] == {"value": 2.0, "source": "group:operators"}


def test_show_with_an_invalid_config_prints_the_problems_and_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text("defaults:\n  idle_timeout: 4 hours\n")
    result = run("--config", str(path), "config", "show", "--user", "alice")
    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        f"error: {path}:2:17: defaults.idle_timeout: expected a duration like 30m, 4h or 2d, "
        "got '4 hours'",
        f"  {FIX_LINE}",
    ]
