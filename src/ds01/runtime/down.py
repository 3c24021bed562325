"""The one message for "the Docker engine does not answer", in a user's words (issue 10, D11).

Every engine call that fails at the connection (engine stopped, restarting, frozen, socket
missing) becomes RuntimeUnavailable through engine_unreachable(): what could not be done, why
in plain words (never the SDK's exception text), and what to do. The exception itself stays
attached as the cause (``from``) for the daemon's log.
"""

from __future__ import annotations

import re
import socket

import requests
import urllib3.exceptions

from ds01.engineaddr import EngineAddress
from ds01.errors import RuntimeUnavailable

FIX = (
    "Try again in a minute; if it persists, tell an admin (systemctl status docker). "
    "GPU status and quotas keep working."
)

_LONG_ID = re.compile(r"\b([0-9a-f]{12})[0-9a-f]{52}\b")


def engine_unreachable(action: str, host: str, exc: BaseException) -> RuntimeUnavailable:
    """RuntimeUnavailable for `action` ("stop container …") failing because `host` does not
    answer; the caller raises it ``from exc``."""
    action = _LONG_ID.sub(r"\1", action)  # a container's ID, as `docker ps` shows it
    return RuntimeUnavailable(
        f"cannot {action}: the Docker engine is not reachable",
        why=cause_in_words(exc, host),
        fix=FIX,
    )


def cause_in_words(exc: BaseException, host: str) -> str:
    """Why the engine did not answer, from the exception chain, in plain words."""
    chain = _chain(exc)
    host = _shown(host)
    if any(isinstance(e, FileNotFoundError) for e in chain):
        return f"Docker is not running: its socket {host} does not exist."
    if any(isinstance(e, ConnectionRefusedError) for e in chain):
        return f"Docker is not running or is restarting: {host} refuses connections."
    if any(isinstance(e, PermissionError) for e in chain):
        return f"ds01d may not open the Docker engine's socket {host}."
    if any(
        isinstance(
            e, requests.exceptions.Timeout | urllib3.exceptions.TimeoutError | socket.timeout
        )
        for e in chain
    ):
        return "Docker did not answer in time: it is overloaded or stuck."
    return f"The connection to Docker ({host}) failed or was cut: Docker stopped or restarted."


def _chain(exc: BaseException) -> list[BaseException]:
    """exc, its causes and contexts, and exceptions among their args (requests and urllib3
    wrap the socket error there), breadth first, bounded."""
    seen: list[BaseException] = []
    todo: list[object] = [exc]
    while todo and len(seen) < 32:
        e = todo.pop(0)
        if not isinstance(e, BaseException) or any(e is s for s in seen):
            continue
        seen.append(e)
        todo += [e.__cause__, e.__context__, *e.args]
        reason = getattr(e, "reason", None)  # urllib3 MaxRetryError keeps it here
        if isinstance(reason, BaseException):
            todo.append(reason)
    return seen


def _shown(host: str) -> str:
    """The socket path or host:port of an engine address, for a message."""
    try:
        return str(EngineAddress.parse(host))
    except ValueError:
        return host
