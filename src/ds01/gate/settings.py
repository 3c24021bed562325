"""The gate's own knobs: size and time limits of the HTTP front end, and the two policy choices
the issue leaves to the admin (`--gpus all`, added capabilities), which are read from the
config's `gate:` section as it is now (a reload changes them).
"""

from __future__ import annotations

from dataclasses import dataclass

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
    """The gate's HTTP front end: sizes and times. Its two policy choices (`--gpus all`, added
    capabilities) are read from the live config's `gate:` section at each request, so a
    reload changes them."""

    max_head_bytes: int = 64 * KiB  # request line + headers; beyond → 431
    max_checked_body_bytes: int = 1 * MiB  # bodies the gate reads and checks; beyond → 413
    max_engine_reply_bytes: int = 64 * MiB  # what the gate reads from the engine for itself
    engine_timeout_s: float = 60.0  # one engine query made by the gate itself
    # Idle/head/body timeouts and connections per uid, as api.sock has them (ds01.listener).
    limits: ConnectionLimits = GATE_LIMITS
