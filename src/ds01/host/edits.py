"""Pure edits of files ds01 shares with the system or with other packages.

ds01 owns only part of these files, so each edit changes exactly that part and keeps every other
byte: a managed block between BEGIN/END marker lines (/etc/bash.bashrc, pam_env.conf), top-level
keys of a TOML file (the NVIDIA container runtime's config.toml), one key of a JSON object
(Docker's daemon.json). An edit of text that is already right returns it unchanged, which is what
makes `ds01 host apply` idempotent. A file that cannot be edited safely (unbalanced markers,
invalid TOML or JSON) raises EditError; the caller leaves it alone and says why. Must not read or
write files.
"""

from __future__ import annotations

import json
import re
import tomllib
from typing import Literal

from ds01.host.profile import BLOCK_BEGIN, BLOCK_END


class EditError(ValueError):
    """The existing file cannot be edited without guessing; it is left as it is."""


# ---- managed blocks --------------------------------------------------------------------------


def with_block(existing: str | None, block: list[str], where: Literal["top", "bottom"]) -> str:
    """`existing` with ds01's block (BEGIN…END lines) in place, at the top or the bottom."""
    rest = _without_block(existing or "")
    text = "\n".join(block) + "\n"
    if where == "top":
        return text + rest
    if rest and not rest.endswith("\n"):
        rest += "\n"
    return rest + text


def block_of(existing: str) -> list[str] | None:
    """The lines of ds01's block in `existing` (markers included), or None."""
    lines = existing.splitlines()
    if BLOCK_BEGIN not in lines:
        return None
    start = lines.index(BLOCK_BEGIN)
    try:
        end = lines.index(BLOCK_END, start)
    except ValueError:
        return None
    return lines[start : end + 1]


def _without_block(text: str) -> str:
    lines = text.splitlines(keepends=True)
    stripped = [line.rstrip("\r\n") for line in lines]
    starts = [i for i, line in enumerate(stripped) if line == BLOCK_BEGIN]
    if not starts:
        return text
    if len(starts) > 1:
        raise EditError("it holds more than one ds01 block; keep one and run apply again")
    start = starts[0]
    try:
        end = stripped.index(BLOCK_END, start)
    except ValueError:
        raise EditError(
            f"its ds01 block starts at line {start + 1} but has no '{BLOCK_END}' line"
        ) from None
    return "".join(lines[:start] + lines[end + 1 :])


# ---- TOML: top-level keys of the NVIDIA container runtime config ----------------------------

_TABLE = re.compile(r"^\s*\[")


def with_toml_keys(existing: str | None, keys: dict[str, bool], header: list[str]) -> str:
    """`existing` TOML with each top-level key of `keys` set, and nothing else changed.

    A key already set is rewritten in place; one present only as a comment (how the toolkit ships
    its defaults, e.g. `#accept-nvidia-visible-devices-envvar-when-unprivileged = true`) is
    replaced by the setting; a missing one goes at the end of the top-level section, before the
    first [table]. Without a file, the result is `header` plus the keys.
    """
    if existing is None:
        lines = [*header, *(f"{k} = {_toml_bool(v)}" for k, v in keys.items())]
        return "\n".join(lines) + "\n"
    try:
        tomllib.loads(existing)
    except tomllib.TOMLDecodeError as err:
        raise EditError(f"it is not valid TOML ({err})") from None
    lines = existing.splitlines()
    top_end = next((i for i, line in enumerate(lines) if _TABLE.match(line)), len(lines))
    for key, value in keys.items():
        setting = f"{key} = {_toml_bool(value)}"
        active = re.compile(rf"^\s*{re.escape(key)}\s*=")
        commented = re.compile(rf"^\s*#\s*{re.escape(key)}\s*=")
        hits = [i for i in range(top_end) if active.match(lines[i])]
        if not hits:
            hits = [i for i in range(top_end) if commented.match(lines[i])][:1]
        if hits:
            lines[hits[0]] = setting
            for i in reversed(hits[1:]):
                del lines[i]
                top_end -= 1
            continue
        at = top_end
        while at > 0 and not lines[at - 1].strip():
            at -= 1
        lines.insert(at, setting)
        top_end += 1
    text = "\n".join(lines) + "\n"
    parsed = tomllib.loads(text)
    if any(parsed.get(k) is not v for k, v in keys.items()):  # pragma: no cover - defensive
        raise EditError("the edited file does not hold the intended values")
    return text


def _toml_bool(value: bool) -> str:
    return "true" if value else "false"


# ---- JSON: Docker's daemon.json --------------------------------------------------------------


def without_nvidia_default_runtime(existing: str) -> str:
    """`existing` daemon.json without `"default-runtime": "nvidia"`; every other key is kept.

    Text that has no nvidia default runtime comes back byte for byte. Otherwise the key is
    removed (Docker then uses runc) and the object is written with 2-space indentation, keys
    in their original order.
    """
    try:
        data = json.loads(existing) if existing.strip() else {}
    except json.JSONDecodeError as err:
        raise EditError(f"it is not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise EditError("it is not a JSON object")
    if data.get("default-runtime") != "nvidia":
        return existing
    del data["default-runtime"]
    return json.dumps(data, indent=2) + "\n"
