"""The ds01 error tree, refusal reasons and exit codes.

Owns every exception the project raises on purpose. Imports nothing from ds01.

    Ds01Error                      exit 1 unless a subclass says otherwise
    ├── UsageError                 exit 2: the caller's input is wrong
    │   ├── InputError             a file or capture cannot be read (names the file)
    │   │   ├── CaptureError       an nvidia-smi capture is truncated, garbled or unknown
    │   │   └── MachineFileError   a simulated machine description is invalid
    │   ├── MigProfileError        a MIG profile name does not parse (model/profile.py)
    │   └── ConfigError            the YAML config is invalid (carries every problem)
    ├── Refusal                    a policy said no; carries a RefusalReason
    ├── NotFound                   the thing asked for does not exist (for this caller)
    ├── PermissionDenied           the caller may not do this
    ├── InventoryError             a GPU backend failed (NVML missing, driver gone)
    ├── StateError                 the state database is unusable or out of step
    │   ├── StateDiskFull          a write failed: the state disk has no space left
    │   ├── UnitAlreadyAllocated   the database constraint caught a double allocation
    │   └── InvalidTransition      an allocation state change the table does not allow
    ├── DaemonUnavailable          the CLI cannot reach ds01d
    └── RuntimeUnavailable         the Docker engine cannot be reached
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_USAGE = 2


class Ds01Error(Exception):
    """Base of every deliberate ds01 error: what failed, why, and what to do."""

    exit_code: int = EXIT_REFUSED
    kind: str = "error"

    def __init__(self, what: str, why: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.why = why
        self.fix = fix

    def lines(self) -> list[str]:
        """The message as the CLI prints it: what, why, what to do."""
        out = [self.what]
        if self.why:
            out.append(self.why)
        if self.fix:
            out.append(self.fix)
        return out

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "what": self.what, "why": self.why, "fix": self.fix}


class UsageError(Ds01Error):
    exit_code = EXIT_USAGE
    kind = "usage"


class InputError(UsageError):
    kind = "input"


class CaptureError(InputError):
    kind = "capture"


class MachineFileError(InputError):
    kind = "machine-file"


class MigProfileError(UsageError):
    """A MIG profile name that is not one (ds01.model.profile.parse_profile). The same error,
    word for word, whichever way the name came in: --mig, the API, a machine file."""


class ConfigProblem:
    """One problem in a config file, located as precisely as the YAML allows."""

    __slots__ = ("col", "file", "key_path", "line", "message")

    def __init__(
        self, file: str, line: int | None, col: int | None, key_path: str, message: str
    ) -> None:
        self.file = file
        self.line = line
        self.col = col
        self.key_path = key_path
        self.message = message

    def __str__(self) -> str:
        loc = self.file
        if self.line is not None:
            loc += f":{self.line}"
            if self.col is not None:
                loc += f":{self.col}"
        key = f" {self.key_path}:" if self.key_path else ""
        return f"{loc}:{key} {self.message}"


class ConfigError(UsageError):
    kind = "config"

    def __init__(self, problems: list[ConfigProblem], fix: str | None = None) -> None:
        first = str(problems[0]) if problems else "invalid configuration"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(
            f"config: {first}{more}",
            fix=fix or "Fix the lines above, then run 'ds01 config check'.",
        )
        self.problems = problems

    def lines(self) -> list[str]:
        return [str(p) for p in self.problems] + ([self.fix] if self.fix else [])


class RefusalReason(StrEnum):
    """Why a request was refused. Metrics count by it; tests assert it."""

    FULL_GPU_NOT_ALLOWED = "full_gpu_not_allowed"
    MAX_UNITS_PER_CONTAINER = "max_units_per_container"
    MAX_CONTAINERS = "max_containers"
    MAX_GPUEQ = "max_gpueq"
    GROUP_MAX_GPUEQ = "group_max_gpueq"
    NO_CAPACITY = "no_capacity"
    UNIT_BUSY = "unit_busy"  # only units busy outside ds01 fit, and config says refuse
    UNKNOWN_PROFILE = "unknown_profile"
    BAD_REQUEST = "bad_request"
    NAME_IN_USE = "name_in_use"
    NOT_OWNER = "not_owner"
    ADMIN_ONLY = "admin_only"
    DOCKER_UNAVAILABLE = "docker_unavailable"
    PATH_NOT_ALLOWED = "path_not_allowed"
    IMAGE_NOT_FOUND = "image_not_found"
    POLICY = "policy"
    SLURM_BACKEND = "slurm_backend"  # cluster.backend: slurm: SLURM alone hands out the GPUs
    # The Docker gate (gate/refusal.py maps each of its rules to one of these).
    ENDPOINT_NOT_ALLOWED = "endpoint_not_allowed"
    HOST_PRIVILEGE = "host_privilege"
    RESERVED_SETTING = "reserved_setting"


class Refusal(Ds01Error):
    kind = "refusal"

    def __init__(
        self, reason: RefusalReason, what: str, why: str | None = None, fix: str | None = None
    ) -> None:
        super().__init__(what, why, fix)
        self.reason = reason

    def to_dict(self) -> dict[str, object]:
        d = super().to_dict()
        d["reason"] = self.reason.value
        return d


class NotFound(Ds01Error):
    kind = "not_found"


class PermissionDenied(Ds01Error):
    kind = "permission"


class InventoryError(Ds01Error):
    kind = "inventory"


class StateError(Ds01Error):
    kind = "state"


class StateDiskFull(StateError):
    """A change could not be saved because the state disk is full; nothing of it was kept."""

    kind = "state_disk_full"


class UnitAlreadyAllocated(StateError):
    kind = "unit_already_allocated"


class InvalidTransition(StateError):
    kind = "invalid_transition"


class DaemonUnavailable(Ds01Error):
    kind = "daemon_unavailable"


class RuntimeUnavailable(Ds01Error):
    kind = "runtime_unavailable"


# The error kinds ds01d's answers name (api/http.py), as the exceptions the CLI renders.
_KINDS: dict[str, type[Ds01Error]] = {
    "usage": UsageError,
    "input": InputError,
    "config": UsageError,
    "not_found": NotFound,
    "permission": PermissionDenied,
    "state": StateError,
    "runtime_unavailable": RuntimeUnavailable,
}


def error_from_body(body: dict[str, Any]) -> Ds01Error:
    """The error an answer of ds01d carries ({"error": {kind, what, why, fix, reason}}), as the
    exception ds01d raised, so that the CLI renders it through its one error path."""
    e = body.get("error") or {}
    what = str(e.get("what") or "the daemon refused the request")
    why, fix = e.get("why"), e.get("fix")
    if e.get("kind") == "refusal":
        try:
            reason = RefusalReason(str(e.get("reason")))
        except ValueError:
            reason = RefusalReason.POLICY
        return Refusal(reason, what, why, fix)
    return _KINDS.get(str(e.get("kind")), Ds01Error)(what, why, fix)


_DEPLOY_AFTER = "See 'ds01 container list' and 'ds01 events' for what happened."


def deploy_cut_short() -> DaemonUnavailable:
    return DaemonUnavailable(
        "ds01d ended the deploy before it said how it went",
        why="The connection was cut (ds01d restarting?).",
        fix=_DEPLOY_AFTER,
    )


def deploy_without_result() -> DaemonUnavailable:
    return DaemonUnavailable("ds01d ended the deploy without a result", fix=_DEPLOY_AFTER)
