"""The gate's own knobs: size and time limits of the HTTP front end, and the two policy choices
the issue leaves to the admin (`--gpus all`, added capabilities).

Owns the defaults; the two policy choices come from the config's `gate:` section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ds01.config import Config
from ds01.listener import ConnectionLimits

KiB = 1024
MiB = 1024 * KiB

# Docker clients keep connections open longer and open more of them than the ds01 CLI does
# (compose, VS Code, `docker logs -f` in several terminals).
GATE_LIMITS = ConnectionLimits(
    idle_timeout_s=300.0,
    head_timeout_s=15.0,
    body_timeout_s=60.0,
    max_connections=2048,
    max_connections_per_uid=256,
)


@dataclass(frozen=True)
class GateSettings:
    """gpus_all: "refuse" (default) answers `--gpus all` with a hint to ask for a number;
    "max" maps it to the most whole GPUs the caller may still take.
    cap_add: capabilities `--cap-add` may name (upper case, without CAP_); empty by default."""

    gpus_all: Literal["refuse", "max"] = "refuse"
    cap_add: frozenset[str] = field(default_factory=frozenset)
    max_head_bytes: int = 64 * KiB  # request line + headers; beyond → 431
    max_checked_body_bytes: int = 1 * MiB  # bodies the gate reads and checks; beyond → 413
    max_engine_reply_bytes: int = 64 * MiB  # what the gate reads from the engine for itself
    engine_timeout_s: float = 60.0  # one engine query made by the gate itself
    # Idle/head/body timeouts and connections per uid, as api.sock has them (ds01.listener).
    limits: ConnectionLimits = GATE_LIMITS

    @classmethod
    def from_config(cls, config: Config) -> GateSettings:
        section = config.gate
        return cls(
            gpus_all=section.gpus_all,
            cap_add=frozenset(normalize_cap(c) for c in section.cap_add),
        )


def normalize_cap(name: str) -> str:
    """'cap_sys_admin', 'SYS_ADMIN', 'CAP_SYS_ADMIN' → 'SYS_ADMIN' (Docker accepts all three)."""
    upper = name.strip().upper()
    return upper.removeprefix("CAP_")
