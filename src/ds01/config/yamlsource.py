"""YAML text → plain Python data plus the line and column of every key and value.

Owns reading YAML with PyYAML's SafeLoader node tree (compose, not load), so that each value
keeps its position; it also finds what PyYAML would silently accept: duplicate keys (PyYAML
keeps the last), keys that are not text, unsupported tags and recursive aliases. Mapping keys
are always the key's source text, so a user named `no` or `1234` stays a string.

Must not know the config schema: it returns data, positions and problems; `loader` decides.
Positions are 1-based (line, column) as editors show them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

Path = tuple[str | int, ...]

_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_MAX_NODES = 200_000  # aliases can expand exponentially ("billion laughs"); stop well before
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


@dataclass(frozen=True)
class Pos:
    line: int
    col: int


@dataclass(frozen=True)
class Located:
    """Where one entry sits: its key (None for list items and the root) and its value."""

    key: Pos | None
    value: Pos


@dataclass(frozen=True)
class SourceProblem:
    path: Path
    pos: Pos | None
    message: str


@dataclass
class YamlDocument:
    """Parsed data, where each path sits, and what the reader itself found wrong."""

    data: object
    positions: dict[Path, Located] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)

    def pos_of(self, path: Path, *, key: bool = False) -> tuple[Path, Pos | None]:
        """The position of `path`, or of its nearest located parent. `key` prefers the key.

        Returns the path actually located (a prefix of `path`) and its position.
        """
        for cut in range(len(path), -1, -1):
            located = self.positions.get(path[:cut])
            if located is None:
                continue
            exact = cut == len(path)
            # A missing key is reported at its parent's key ("groups.student: missing 'x'").
            if (key or not exact) and located.key is not None:
                return path[:cut], located.key
            return path[:cut], located.value
        return (), None


def format_path(path: Path) -> str:
    """`users."h.baker@hertie-school.lan".max_gpueq`, `storage.shared_paths[0].path`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = part if _PLAIN_KEY.fullmatch(part) else '"' + part.replace('"', '\\"') + '"'
        out += f".{text}" if out else text
    return out


def _pos(mark: yaml.Mark | None) -> Pos | None:
    if mark is None:
        return None
    return Pos(mark.line + 1, mark.column + 1)


def _node_pos(node: Node) -> Pos:
    return Pos(node.start_mark.line + 1, node.start_mark.column + 1)


class _Reader:
    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.active: set[int] = set()
        self.count = 0

    def problem(self, path: Path, pos: Pos | None, message: str) -> None:
        self.doc.problems.append(SourceProblem(path, pos, message))

    def read(self, node: Node, path: Path, key: Pos | None) -> object:
        self.doc.positions.setdefault(path, Located(key, _node_pos(node)))
        self.count += 1
        if self.count > _MAX_NODES:
            raise _TooBig
        if id(node) in self.active:
            self.problem(path, _node_pos(node), "an alias refers to itself (recursive alias)")
            return None
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        self.active.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return self.sequence(node, path)
            if isinstance(node, MappingNode):
                return self.mapping(node, path)
        finally:
            self.active.discard(id(node))
        raise AssertionError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def scalar(self, node: ScalarNode, path: Path) -> object:
        try:
            return self.loader.construct_object(node, deep=True)
        except (yaml.YAMLError, ValueError, TypeError, OverflowError) as err:
            problem = getattr(err, "problem", None) or str(err) or type(err).__name__
            self.problem(path, _node_pos(node), f"cannot read this value: {problem}")
            return None

    def sequence(self, node: SequenceNode, path: Path) -> object:
        if node.tag != _SEQ_TAG:
            self.problem(path, _node_pos(node), f"unsupported YAML tag {node.tag!r}")
            return None
        return [self.read(item, (*path, i), None) for i, item in enumerate(node.value)]

    def mapping(self, node: MappingNode, path: Path) -> object:
        if node.tag != _MAP_TAG:
            self.problem(path, _node_pos(node), f"unsupported YAML tag {node.tag!r}")
            return None
        # Duplicates among the keys written here; keys merged in with `<<` may be overridden.
        first_seen: dict[str, Pos] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, ScalarNode) or key_node.tag == _MERGE_TAG:
                continue
            here = _node_pos(key_node)
            if key_node.value in first_seen:
                first = first_seen[key_node.value]
                self.problem(
                    (*path, key_node.value),
                    here,
                    f"duplicate key '{key_node.value}' (first defined at line {first.line})",
                )
            else:
                first_seen[key_node.value] = here
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as err:
            problem = getattr(err, "problem", None) or str(err)
            mark = getattr(err, "problem_mark", None)
            self.problem(path, _pos(mark) or _node_pos(node), f"bad merge key (<<): {problem}")
            return None
        out: dict[str, object] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.problem(
                    path, _node_pos(key_node), "a key must be plain text, not a list or mapping"
                )
                continue
            key = str(key_node.value)
            key_pos = _node_pos(key_node)
            child = (*path, key)
            if key in out:  # later entries override earlier (merged) ones, as YAML says
                self.doc.positions.pop(child, None)
                for stale in [p for p in self.doc.positions if p[: len(child)] == child]:
                    del self.doc.positions[stale]
            out[key] = self.read(value_node, child, key_pos)
        return out


class _TooBig(Exception):
    pass


def read_yaml(text: str) -> YamlDocument:
    """Parse one YAML document. Syntax errors come back as a single problem, never raised."""
    doc = YamlDocument(data=None)
    loader = yaml.SafeLoader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            message = err.problem or err.context or "unreadable"
            if err.context and err.problem and _useful(err.context):
                message = f"{err.context}, {err.problem}"
            if "<block end>" in message or "mapping values are not allowed" in message:
                message += " (check the indentation and the ':' on this line)"
            doc.problems.append(SourceProblem((), _pos(mark), f"invalid YAML: {message}"))
            return doc
        except yaml.YAMLError as err:
            doc.problems.append(SourceProblem((), None, f"invalid YAML: {err}"))
            return doc
        except RecursionError:
            doc.problems.append(SourceProblem((), None, "invalid YAML: nested too deeply"))
            return doc
        if node is None:
            return doc
        try:
            doc.data = _Reader(loader, doc).read(node, (), None)
        except (_TooBig, RecursionError):
            doc.data = None
            doc.problems.append(
                SourceProblem((), _node_pos(node), "the document is too large or nested too deeply")
            )
    finally:
        loader.dispose()
    return doc


def _useful(context: str) -> bool:
    # PyYAML's contexts such as "while scanning a simple key" add little; others help.
    return not context.startswith("while ")
