"""Read a JSON request body exactly as strictly as the engine could read it, and put its known
fields under their canonical names.

Go's encoding/json (the engine) matches object keys to struct fields case-insensitively, with
Unicode simple folding ('ſ' is 's', 'K' (Kelvin) is 'k'), lets the last of two equal keys win,
and silently drops keys it does not know. A checker that looked up "Privileged" literally would
miss {"privileged": true} or {"Privileged": false, "PRIVILEGED": true}. So: keys that fold to the
same text are refused; known fields are renamed to their canonical names (str.casefold covers
Go's folding for the ASCII field names); unknown fields are refused unless empty; and the body
forwarded is re-serialised from the canonical form, so the engine reads what was checked.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

from ds01.gate.refusal import GateRefusal


class _Duplicate(ValueError):
    pass


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: set[str] = set()
    for k, _ in pairs:
        f = k.casefold()
        if f in seen:
            raise _Duplicate(k)
        seen.add(f)
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"number {text} is out of range")
    return value


def parse_object(body: bytes, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The body as a JSON object; GateRefusal body.empty / body.unparsable otherwise."""
    if not body.strip():
        if empty_ok:
            return {}
        raise GateRefusal("body.empty", f"{what} with an empty body was refused")
    try:
        text = body.decode("utf-8")
        data = json.loads(
            text, object_pairs_hook=_pairs, parse_constant=_no_constant, parse_float=_float
        )
    except _Duplicate as dup:
        raise GateRefusal(
            "body.unparsable", f"{what}: the key {dup.args[0]!r} appears twice (in any case)"
        ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        raise GateRefusal(
            "body.unparsable", f"{what}: the body is not valid JSON ({exc})"
        ) from None
    if not isinstance(data, dict):
        raise GateRefusal("body.unparsable", f"{what}: the body must be a JSON object")
    return data


def is_zero(value: Any) -> bool:
    """Go's zero value as JSON shows it: null, false, 0, "", [], {}."""
    if isinstance(value, bool):
        return not value
    return value is None or value in (0, "", [], {})


def canonical(
    obj: Any, fields: Iterable[str], where: str, *, rule: str = "create.unknown_field"
) -> dict[str, Any]:
    """obj (a JSON object or null) with each known key renamed to its canonical spelling.
    Unknown keys with a non-empty value are refused under `rule`; empty ones are dropped."""
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise GateRefusal("body.unparsable", f"{where or 'the body'} must be a JSON object")
    by_fold = {f.casefold(): f for f in fields}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        name = by_fold.get(key.casefold())
        if name is None:
            if is_zero(value):
                continue
            raise GateRefusal(
                rule,
                f"the field {where}{key} is not one the gate knows",
                summary=f"{where}{key}={_short(value)}",
            )
        out[name] = value
    return out


def as_list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise GateRefusal("body.unparsable", f"{where} must be a list")
    return value


def as_str(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise GateRefusal("body.unparsable", f"{where} must be a string")
    return value


def as_int(value: Any, where: str) -> int:
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, int):
        raise GateRefusal("body.unparsable", f"{where} must be a whole number")
    return value


def as_bool(value: Any, where: str) -> bool:
    if value is None:
        return False
    if not isinstance(value, bool):
        raise GateRefusal("body.unparsable", f"{where} must be true or false")
    return value


def as_str_map(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise GateRefusal("body.unparsable", f"{where} must map names to strings")
    return dict(value)


def dump(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=True).encode()


def _short(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


short = _short
