"""The Docker gate: <run-dir>/docker.sock, a Docker Engine API endpoint for users.

Users set DOCKER_HOST=unix:///run/ds01/docker.sock and use the docker CLI, compose, the SDKs or
VS Code as usual; the gate knows who they are from the kernel (SO_PEERCRED), checks every request
against ds01's policy (policy/), allocates GPUs for containers that ask for them, stamps owner
labels, cgroup parent and limits, and streams everything else to the real engine on root's
socket (server.py). Refusals are HTTP 403 with a message saying what and why and what to do
instead (refusal.py), and are audit events of kind "gate". docs/gate.md lists every rule.

May import services, runtime, identity, model, config, store (events); nothing imports it but
the daemon.
"""

from ds01.gate.engine import EngineClient
from ds01.gate.policy.context import GateDeps
from ds01.gate.server import GateServer
from ds01.gate.settings import GateSettings

__all__ = ["EngineClient", "GateDeps", "GateServer", "GateSettings"]
