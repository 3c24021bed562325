"""The shipped example validates and means what its comments say; damaged versions of it either
load or fail with ConfigError — never any other exception."""

from __future__ import annotations

import copy
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds01.config import Config, load_config, parse_config_text
from ds01.errors import ConfigError
from ds01.model.gpueq import GpuEq

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "ds01.yaml"
EXAMPLE_TEXT = EXAMPLE.read_text()
EXAMPLE_LINES = EXAMPLE_TEXT.splitlines(keepends=True)
EXAMPLE_TREE = yaml.safe_load(EXAMPLE_TEXT)


def test_the_example_config_validates() -> None:
    config = load_config(EXAMPLE)
    assert list(config.groups) == ["student", "researcher", "faculty", "admin"]
    assert sorted(config.users) == ["a.student", "h.baker@hertie-school.lan", "l.nguyen"]


def test_the_example_means_what_its_comments_say() -> None:
    config = load_config(EXAMPLE)
    # "keeps faculty's cpus, shm, ..."
    baker = config.resolve("h.baker@hertie-school.lan")
    assert (baker.group, baker.limits.memory_bytes, baker.limits.cpus) == (
        "faculty",
        206158430208,
        32.0,
    )
    # "a master's student on a research project ... but with the student runtime"
    student = config.resolve("a.student", ["students"])
    assert (student.group, student.limits.max_gpueq, student.limits.max_runtime_s) == (
        "researcher",
        GpuEq(1),
        172800,
    )
    # "still a student otherwise"
    nguyen = config.resolve("l.nguyen", ["students"])
    assert (nguyen.group, nguyen.limits.idle_timeout_s, nguyen.limits.max_gpueq) == (
        "student",
        10800,
        GpuEq.parse("3/7"),
    )
    assert nguyen.limits.group_max_gpueq == GpuEq(2)
    assert config.is_admin("datasciencelab") and config.is_exempt("datasciencelab")
    assert not config.is_admin("m.rossi", ["researchers"])


def _outcome(text: str) -> Config | ConfigError:
    try:
        return parse_config_text(text, "mutant.yaml")
    except ConfigError as err:
        assert err.problems
        assert all(str(p).startswith("mutant.yaml") for p in err.problems)
        return err


_NOISE = st.text(
    alphabet=st.sampled_from(list("abcdefgmhs0123456789:-_ .,/\t\n{}[]&*!|>'\"#@%?<=")),
    min_size=1,
    max_size=12,
)


@st.composite
def mutated_example(draw: st.DrawFn) -> str:
    lines = list(EXAMPLE_LINES)
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(lines) - 1))
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "replace", "indent"]))
        if op == "delete":
            del lines[i]
        elif op == "duplicate":
            lines.insert(i, lines[i])
        elif op == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            at = draw(st.integers(0, len(lines[i])))
            lines[i] = lines[i][:at] + draw(_NOISE) + lines[i][at:]
        elif op == "replace" and ":" in lines[i]:
            key, _, _ = lines[i].partition(":")
            lines[i] = f"{key}: {draw(_NOISE)}\n"
        else:
            lines[i] = " " * draw(st.integers(0, 6)) + lines[i].lstrip(" ")
        if not lines:
            lines = ["\n"]
    return "".join(lines)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_example())
def test_damaged_text_of_the_example_loads_or_raises_config_error(text: str) -> None:
    _outcome(text)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([10**400, -(10**400), 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=10),
    st.sampled_from(["3/7", "1/0", "4h", "32g", "1.5g", "-1", "nvml", "sim", "", "null"]),
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def _paths(node: object, prefix: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_value_anywhere_in_the_example_loads_or_raises_config_error(
    data: st.DataObject,
) -> None:
    tree = copy.deepcopy(EXAMPLE_TREE)
    for _ in range(data.draw(st.integers(1, 3))):
        path = data.draw(st.sampled_from(_paths(tree)[1:]))
        parent: object = tree
        for part in path[:-1]:
            parent = parent[part]  # type: ignore[index]
        parent[path[-1]] = data.draw(_VALUES)  # type: ignore[index]
    _outcome(yaml.safe_dump(tree, allow_unicode=True))
