"""Broken configs and the exact lines `ds01 config check` prints for them.

Each fixture under fixtures/ is a realistic mistake; the expected lines are written out by hand
(file:line:col: key.path: message), with line and column as an editor shows them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.config import parse_config_text
from ds01.errors import ConfigError

FIXTURES = Path(__file__).parent / "fixtures"


def problems_of(text: str, source: str) -> list[str]:
    with pytest.raises(ConfigError) as err:
        parse_config_text(text, source)
    return [str(p) for p in err.value.problems]


CASES = [
    pytest.param(
        "unknown-keys.yaml",
        [
            "unknown-keys.yaml:3:3: defaults.max_gpus: unknown key 'max_gpus'; "
            "did you mean 'max_gpueq'?",
            "unknown-keys.yaml:4:3: defaults.shm_size: unknown key 'shm_size'; did you mean 'shm'?",
            "unknown-keys.yaml:5:3: defaults.colour: unknown key 'colour'; expected one of: "
            "max_gpueq, max_units_per_container, max_containers, allow_full_gpu, cpus, memory, "
            "memory_swap, shm, pids, max_runtime, idle_timeout, gpu_hold_after_stop, policy",
            "unknown-keys.yaml:6:1: grups: unknown key 'grups'; did you mean 'groups'?",
            'unknown-keys.yaml:10:5: users."h.baker@hertie-school.lan".memroy: '
            "unknown key 'memroy'; did you mean 'memory'?",
        ],
        id="unknown keys get a did-you-mean, including DS01's old key names",
    ),
    pytest.param(
        "wrong-types.yaml",
        [
            "wrong-types.yaml:2:19: defaults.max_containers: expected a whole number, got 'three'",
            "wrong-types.yaml:3:19: defaults.allow_full_gpu: expected true or false, got 'true'",
            "wrong-types.yaml:4:9: defaults.cpus: expected a number, got 'many'",
            "wrong-types.yaml:5:14: defaults.max_gpueq: expected a GPU-equivalent like 1, 0.5 or "
            "'3/7', got '1/0'",
            "wrong-types.yaml:8:14: groups.student.members: expected a list, got 'alice'",
            "wrong-types.yaml:9:17: groups.student.unix_group: expected text, got 1234; "
            "quote it: '1234'",
            "wrong-types.yaml:10:10: groups.staff: expected a mapping (key: value), got a list",
            "wrong-types.yaml:12:12: gpu.backend: expected one of nvml, sim; got 'cuda'",
            "wrong-types.yaml:13:10: privacy: expected one of show_all, hide_others; "
            "got 'everyone'",
            "wrong-types.yaml:16:7: storage.shared_paths[0]: missing required key 'path'",
            "wrong-types.yaml:17:13: storage.shared_paths[1].path: must be an absolute path, "
            "got 'data/sets'",
        ],
        id="wrong types are all reported, each at its value",
    ),
    pytest.param(
        "duplicate-keys.yaml",
        [
            "duplicate-keys.yaml:4:3: defaults.cpus: duplicate key 'cpus' "
            "(first defined at line 2)",
            "duplicate-keys.yaml:8:3: groups.student: duplicate key 'student' "
            "(first defined at line 6)",
        ],
        id="duplicate keys that PyYAML would silently overwrite are errors",
    ),
    pytest.param(
        "syntax-error.yaml",
        [
            "syntax-error.yaml:4:2: invalid YAML: expected <block end>, but found "
            "'<block mapping start>' (check the indentation and the ':' on this line)",
        ],
        id="a YAML syntax error is one problem at the YAML mark",
    ),
    pytest.param(
        "bad-values.yaml",
        [
            "bad-values.yaml:2:17: defaults.idle_timeout: expected a duration like 30m, 4h or 2d, "
            "got '4 hours'",
            "bad-values.yaml:3:16: defaults.max_runtime: must be at least 1s, got 0; "
            "use null for no limit",
            "bad-values.yaml:4:11: defaults.memory: expected a size like 512m, 32g or 1.5t, "
            "got '32 gigs'",
            "bad-values.yaml:5:8: defaults.shm: a size cannot be negative, got -1",
            "bad-values.yaml:6:24: defaults.gpu_hold_after_stop: null is not allowed here; "
            "remove the key to inherit it",
            "bad-values.yaml:7:14: defaults.max_gpueq: must not be negative, got -1",
            "bad-values.yaml:9:24: defaults.policy.idle_gpu_util_pct: must be between 0 and 100, "
            "got 150",
            "bad-values.yaml:10:18: defaults.policy.warn_before: expected a duration like 30m, 4h "
            "or 2d, got 'soon'",
            "bad-values.yaml:12:24: allocation.reservation_timeout: expected a duration like 30m, "
            "4h or 2d, got 1.5",
        ],
        id="bad durations, sizes and ranges say what was expected",
    ),
    pytest.param(
        "cross-checks.yaml",
        [
            "cross-checks.yaml:3:27: groups.student.members[2]: 'alice' is already a member of "
            "this group (line 3)",
            "cross-checks.yaml:6:9: groups.researcher.members[0]: 'bob' is already a member of "
            "group 'student' (line 3); a user belongs to one group",
            "cross-checks.yaml:9:12: users.carol.group: unknown group 'studnet'; "
            "did you mean 'student'?",
            "cross-checks.yaml:10:30: exempt_users[2]: 'root' is listed twice (first at line 10)",
            "cross-checks.yaml:12:12: gpu.backend: backend 'sim' needs gpu.sim_machine: the "
            "simulated machine file to read",
            "cross-checks.yaml:16:13: storage.shared_paths[1].path: '/data' is listed twice "
            "(first at line 15)",
        ],
        id="rules across sections: unknown group, two groups, duplicates, sim without machine",
    ),
    pytest.param(
        "swap-below-memory.yaml",
        [
            "swap-below-memory.yaml:3:16: defaults.memory_swap: memory_swap (16g) is below memory "
            "(64g, from group:big) for group 'big'; memory_swap counts memory plus swap, so set "
            "it to at least memory",
            "swap-below-memory.yaml:10:18: users.erin.memory_swap: memory_swap (8g) is below "
            "memory (16g, from defaults) for user 'erin'; memory_swap counts memory plus swap, "
            "so set it to at least memory",
        ],
        id="memory_swap below memory after layering is reported where swap was set",
    ),
]


@pytest.mark.parametrize(("fixture", "expected"), CASES)
def test_broken_configs_report_every_problem_exactly(fixture: str, expected: list[str]) -> None:
    text = (FIXTURES / fixture).read_text()
    assert problems_of(text, fixture) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "- defaults\n- groups\n",
            [
                "x.yaml:1:1: the file must be a mapping of sections (defaults:, groups:, users:, "
                "...), got a list"
            ],
            id="a list at the top level",
        ),
        pytest.param(
            "defaults:\n  cpus: !!int eight\n",
            [
                "x.yaml:2:9: defaults.cpus: cannot read this value: invalid literal for int() "
                "with base 10: 'eight'"
            ],
            id="an explicit tag that does not fit the value",
        ),
        pytest.param(
            "defaults: !custom {cpus: 4}\n",
            ["x.yaml:1:11: defaults: unsupported YAML tag '!custom'"],
            id="an unknown YAML tag",
        ),
        pytest.param(
            "defaults:\n  max_containers: 2\n---\ngroups: {}\n",
            [
                "x.yaml:3:1: invalid YAML: expected a single document in the stream, "
                "but found another document"
            ],
            id="two YAML documents in one file",
        ),
        pytest.param(
            "defaults:\n\tcpus: 4\n",
            ["x.yaml:2:1: invalid YAML: found character '\\t' that cannot start any token"],
            id="a tab used for indentation",
        ),
        pytest.param(
            "users:\n  no:\n    cpus: 2\n  1234:\n    group: missing\n",
            ["x.yaml:5:12: users.1234.group: unknown group 'missing' (groups: none are defined)"],
            id="keys are always text, even no and 1234",
        ),
        pytest.param(
            "defaults:\n  cpus: .inf\n  pids: 1e3\n",
            [
                "x.yaml:2:9: defaults.cpus: expected a finite number, got inf",
                "x.yaml:3:9: defaults.pids: expected a whole number, got '1e3'",
            ],
            id="infinite cpus and a number YAML reads as text",
        ),
        pytest.param(
            "gpu:\n  sim_machine: lab.yaml\n",
            [
                "x.yaml:2:3: gpu.sim_machine: sim_machine is only used with 'backend: sim'; "
                "remove it or set backend: sim"
            ],
            id="a sim machine without the sim backend",
        ),
        pytest.param(
            "defaults:\n  max_gpueq: null\n  allow_full_gpu: null\n",
            [
                "x.yaml:2:14: defaults.max_gpueq: null is not allowed here; set a number such as "
                "1 or '3/7'",
                "x.yaml:3:19: defaults.allow_full_gpu: null is not allowed here; remove the key "
                "to inherit it",
            ],
            id="null where no limit makes no sense",
        ),
    ],
)
def test_inline_mistakes_are_located_exactly(text: str, expected: list[str]) -> None:
    assert problems_of(text, "x.yaml") == expected


def test_config_error_lines_end_with_what_to_do() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config_text("defaults:\n  cpus: many\n", "x.yaml")
    assert err.value.lines() == [
        "x.yaml:2:9: defaults.cpus: expected a number, got 'many'",
        "Fix the lines above, then run 'ds01 config check'.",
    ]
