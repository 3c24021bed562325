"""Loading ds01.yaml: text → validated Config, or ConfigError listing every problem.

Owns the pipeline (read the file, YAML with positions, schema, cross-checks, build) and the
translation of each pydantic error into `file:line:col: key.path: message`. Loading is a pure
function of the file's text (plus, for load_config, whether gpu.sim_machine exists): it returns
a new Config or raises ConfigError and changes nothing, so a daemon whose reload fails keeps the
Config it already has (see reload_config). Must not print, log or exit.
"""

from __future__ import annotations

from pathlib import Path
from types import MappingProxyType
from typing import Any

from pydantic import ValidationError

from ds01.config.checks import Finding, did_you_mean, raw_checks, swap_checks
from ds01.config.resolve import Config
from ds01.config.schema import ConfigFile, keys_at
from ds01.config.yamlsource import Path as KeyPath
from ds01.config.yamlsource import Pos, YamlDocument, format_path, read_yaml
from ds01.errors import ConfigError, ConfigProblem
from ds01.units import describe

# DS01's names for keys that ds01 renamed, so a migrated file gets a useful hint.
_RENAMED = {
    "max_mig_instances": "max_gpueq",
    "max_mig_per_container": "max_units_per_container",
    "max_containers_per_user": "max_containers",
    "max_cpus": "cpus",
    "shm_size": "shm",
    "pids_limit": "pids",
}

MISSING_FIX = (
    "Create it (examples/ds01.yaml is a starting point), or point --config or DS01_CONFIG "
    "at the right file."
)


def load_config(path: Path) -> Config:
    """Read and validate the config file at `path`. Raises ConfigError (never OSError)."""
    source = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            [ConfigProblem(source, None, None, "", "file not found")], MISSING_FIX
        ) from None
    except IsADirectoryError:
        raise ConfigError(
            [ConfigProblem(source, None, None, "", "is a directory, not a file")], MISSING_FIX
        ) from None
    except PermissionError:
        raise ConfigError(
            [ConfigProblem(source, None, None, "", "permission denied")],
            "Run this as a user who may read the file (ds01d reads it as root).",
        ) from None
    except OSError as err:
        raise ConfigError(
            [ConfigProblem(source, None, None, "", f"cannot read: {err.strerror or err}")]
        ) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[: err.start].count(b"\n") + 1
        raise ConfigError(
            [ConfigProblem(source, line, None, "", f"not UTF-8 text (byte {err.start})")],
            "Save the file as UTF-8.",
        ) from None
    return _parse(text, source, path.absolute().parent, check_files=True)


def parse_config_text(text: str, source: str, base_dir: Path | None = None) -> Config:
    """Validate config text. `source` names it in messages; relative paths in it (such as
    gpu.sim_machine) resolve against `base_dir`, by default the directory of `source`."""
    return _parse(text, source, base_dir if base_dir is not None else Path(source).parent)


# Keys read once, when ds01d starts; a reload that changes one keeps the old value running until
# a restart (docs/config.md says which keys these are). Every other key takes effect on reload.
RESTART_ONLY = (
    "gpu.backend",
    "gpu.sim_machine",
    "host.gate_group",
    "notify.queue_size",
    "web.listen",
    "metrics.listen",
)


def restart_only_changes(current: Config, new: Config) -> list[str]:
    """The restart-only keys whose value differs between two configs."""
    out = []
    for key in RESTART_ONLY:
        section, name = key.split(".")
        if getattr(getattr(current, section), name) != getattr(getattr(new, section), name):
            out.append(key)
    return out


def reload_config(path: Path, current: Config) -> tuple[Config, ConfigError | None]:
    """For a running daemon: the new Config, or the current one and the reason it was kept."""
    try:
        return load_config(path), None
    except ConfigError as err:
        return current, err


def _parse(text: str, source: str, base_dir: Path, *, check_files: bool = False) -> Config:
    if text.startswith("\ufeff"):
        text = text[1:]
    doc = read_yaml(text)
    problems = [
        ConfigProblem(source, *_line_col(p.pos), format_path(p.path), p.message)
        for p in doc.problems
    ]
    if doc.data is None and problems and not doc.positions:
        raise ConfigError(problems)  # a YAML syntax error: nothing below it means anything
    data: object = {} if doc.data is None else doc.data
    schema: ConfigFile | None = None
    try:
        schema = ConfigFile.model_validate(data)
    except ValidationError as err:
        problems += [_from_pydantic(e, doc, source) for e in err.errors()]
    problems += [_from_finding(f, doc, source) for f in raw_checks(data, doc)]
    if schema is not None and not problems:
        config = _build(schema, source, base_dir)
        problems += [_from_finding(f, doc, source) for f in swap_checks(config)]
        machine = config.gpu.sim_machine
        if check_files and config.gpu.backend == "sim" and machine and not machine.is_file():
            finding = Finding(("gpu", "sim_machine"), f"file not found: {machine}")
            problems.append(_from_finding(finding, doc, source))
        if not problems:
            return config
    raise ConfigError(_ordered(problems))


def _build(schema: ConfigFile, source: str, base_dir: Path) -> Config:
    gpu = schema.gpu
    if gpu.sim_machine is not None and not gpu.sim_machine.is_absolute():
        gpu = gpu.model_copy(update={"sim_machine": base_dir / gpu.sim_machine})
    return Config(
        source=source,
        defaults=schema.defaults,
        groups=MappingProxyType(dict(schema.groups)),
        users=MappingProxyType(dict(schema.users)),
        exempt_users=schema.exempt_users,
        admin_group=schema.admin_group,
        gpu=gpu,
        docker=schema.docker,
        privacy=schema.privacy,
        allocation=schema.allocation,
        storage=schema.storage,
        host=schema.host,
        gate=schema.gate,
        state=schema.state,
        notify=schema.notify,
        queue=schema.queue,
        reservations=schema.reservations,
        report=schema.report,
        web=schema.web,
        metrics=schema.metrics,
        cluster=schema.cluster,
        images=schema.images,
    )


def _line_col(pos: Pos | None) -> tuple[int | None, int | None]:
    return (pos.line, pos.col) if pos is not None else (None, None)


def _from_finding(finding: Finding, doc: YamlDocument, source: str) -> ConfigProblem:
    _, pos = doc.pos_of(finding.path, key=finding.at_key)
    return ConfigProblem(source, *_line_col(pos), format_path(finding.path), finding.message)


def _from_pydantic(error: Any, doc: YamlDocument, source: str) -> ConfigProblem:
    loc: KeyPath = tuple(error["loc"])
    kind = error["type"]
    value = error.get("input")
    at_key = False
    shown = loc
    if kind == "ds01":
        message = str(error["msg"])
    elif kind == "extra_forbidden":
        at_key = True
        message = _unknown_key(loc)
    elif kind == "missing":
        shown = loc[:-1]
        message = f"missing required key '{loc[-1]}'"
    elif kind in ("model_type", "model_attributes_type", "dict_type"):
        if not loc:
            message = (
                "the file must be a mapping of sections (defaults:, groups:, users:, ...), "
                f"got {describe(value)}"
            )
        else:
            message = f"expected a mapping (key: value), got {describe(value)}"
    elif kind in ("tuple_type", "list_type"):
        message = f"expected a list, got {describe(value)}"
    else:  # pragma: no cover - every value type has its own validator in schema
        message = str(error["msg"])
    _, pos = doc.pos_of(loc, key=at_key)
    return ConfigProblem(source, *_line_col(pos), format_path(shown), message)


def _unknown_key(loc: KeyPath) -> str:
    key = str(loc[-1])
    allowed = keys_at(loc[:-1]) or []
    renamed = _RENAMED.get(key)
    if renamed in allowed:
        return f"unknown key '{key}'; did you mean '{renamed}'?"
    hint = did_you_mean(key, allowed)
    if not hint and allowed:
        hint = "; expected one of: " + ", ".join(allowed)
    return f"unknown key '{key}'{hint}"


def _ordered(problems: list[ConfigProblem]) -> list[ConfigProblem]:
    """File order (problems without a line first), each distinct line once."""
    seen: set[str] = set()
    unique = []
    for problem in problems:
        if str(problem) not in seen:
            seen.add(str(problem))
            unique.append(problem)
    return sorted(unique, key=lambda p: (p.line or 0, p.col or 0))
