"""The shape of ds01.yaml as pydantic models: every key, its type, its default, its message.

Owns what each key accepts and the built-in values used when no layer sets a limit. Every
value type goes through one small validator here, so messages read "expected a duration like
30m, 4h or 2d, got '4 hours'" rather than pydantic's generic text, and error locations are
exactly the YAML path. Must not read files, resolve layers or check one section against
another (that is `checks`); models are frozen and reject unknown keys.

Limit fields default to None and record whether the file set them (`model_fields_set`): an
explicit `null` means "unlimited", an absent key means "inherit from the layer below".
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainValidator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from ds01.config.listen import ListenAddress, parse_listen
from ds01.engineaddr import EngineAddress
from ds01.model.gpueq import GpuEq
from ds01.units import describe, parse_duration, parse_size


def _fail(message: str) -> PydanticCustomError:
    return PydanticCustomError("ds01", message)


def _nullable(parse: Callable[[object], Any], *, null: str | None) -> Callable[[object], Any]:
    """Wrap a parser: None passes when `null` is None, else fails with the `null` hint."""

    def check(value: object) -> Any:
        if value is None:
            if null is None:
                return None
            raise _fail(f"null is not allowed here; {null}")
        try:
            return parse(value)
        except ValueError as err:
            raise _fail(str(err)) from None

    return check


def _duration(minimum: int, *, null_is_unlimited: bool = False) -> Callable[[object], int]:
    def parse(value: object) -> int:
        seconds = parse_duration(value)
        if seconds < minimum:
            raise ValueError(
                f"must be at least {minimum}s, got {describe(value)}"
                + ("; use null for no limit" if null_is_unlimited else "")
            )
        return seconds

    return parse


def _size(minimum: int, label: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        num = parse_size(value)
        if num < minimum:
            raise ValueError(f"must be at least {label}, got {describe(value)}")
        return num

    return parse


def _int(minimum: int) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected a whole number, got {describe(value)}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return parse


def _number(low: float, high: float | None, *, above: bool = False) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"expected a number, got {describe(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {describe(value)}")
        if number < low or (above and number == low) or (high is not None and number > high):
            bounds = f"more than {low:g}" if above else f"at least {low:g}"
            if high is not None:
                bounds = f"between {low:g} and {high:g}"
            raise ValueError(f"must be {bounds}, got {value}")
        return number

    return parse


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {describe(value)}")
    return value


def _gpueq(value: object) -> GpuEq:
    """1, 0.5, '3/7', '1.5' → exact GpuEq. Decimals stay exact (0.43 = 43/100)."""
    bad = f"expected a GPU-equivalent like 1, 0.5 or '3/7', got {describe(value)}"
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(bad)
    try:
        amount = Fraction(str(value).strip())
    except (ValueError, ZeroDivisionError):
        raise ValueError(bad) from None
    if amount < 0:
        raise ValueError(f"must not be negative, got {describe(value)}")
    return GpuEq(amount)


def _text(value: object) -> str:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, str):
        raise ValueError("must not be empty")
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"expected text, got {value}; quote it: '{value}'")
    raise ValueError(f"expected text, got {describe(value)}")


def _path(value: object) -> Path:
    return Path(_text(value))


def _absolute_path(value: object) -> Path:
    path = _path(value)
    if not path.is_absolute():
        raise ValueError(f"must be an absolute path, got {describe(value)}")
    return path


def _choice(*options: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        if value in options:
            return str(value)
        allowed = ", ".join(options)
        raise ValueError(f"expected one of {allowed}; got {describe(value)}")

    return parse


def _docker_host(value: object) -> str:
    text = _text(value)
    EngineAddress.parse(text)  # ValueError: what is expected
    return text


def _empty_if_null(kind: type) -> BeforeValidator:
    """`users:` with every entry commented out reads as null: treat it as empty."""
    return BeforeValidator(lambda v: kind() if v is None else v)


def _as_tuple(value: object) -> object:
    """YAML lists become tuples (frozen); null (all entries commented out) is empty."""
    if value is None:
        return ()
    return tuple(value) if isinstance(value, list) else value


_LIST = BeforeValidator(_as_tuple)


def _v(
    parse: Callable[[object], Any], null: str | None = "remove the key to inherit it"
) -> PlainValidator:
    return PlainValidator(_nullable(parse, null=null))


# Value types. `Opt*` accept null ("no limit"); the others refuse it with a hint.
GpuEqValue = Annotated[GpuEq | None, _v(_gpueq, "set a number such as 1 or '3/7'")]
OptGpuEq = Annotated[GpuEq | None, _v(_gpueq, None)]
Count = Annotated[int | None, _v(_int(0))]
OptCount1 = Annotated[int | None, _v(_int(1), None)]
Flag = Annotated[bool | None, _v(_bool)]
OptCpus = Annotated[float | None, _v(_number(0, None, above=True), None)]
OptMemory = Annotated[int | None, _v(_size(6 * 1024**2, "6m (Docker's minimum)"), None)]
OptSize = Annotated[int | None, _v(_size(1, "1 byte"), None)]
OptTimeout = Annotated[int | None, _v(_duration(1, null_is_unlimited=True), None)]
Duration0 = Annotated[int | None, _v(_duration(0))]
Duration1 = Annotated[int, _v(_duration(1))]
Percent = Annotated[float | None, _v(_number(0, 100))]
CpuPercent = Annotated[float | None, _v(_number(0, None))]
Count1 = Annotated[int | None, _v(_int(1))]
Factor = Annotated[float | None, _v(_number(0, 1, above=True))]
Text = Annotated[str, _v(_text)]
OptText = Annotated[str | None, _v(_text, None)]


class _Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, arbitrary_types_allowed=True
    )


class PolicyLayer(_Section):
    """Lifecycle thresholds; layered like limits (defaults ← group ← user)."""

    idle_gpu_util_pct: Percent = None
    idle_cpu_pct: CpuPercent = None
    idle_samples: Count1 = None
    warn_before: Duration0 = None
    max_keepalive: Duration0 = None
    max_keepalive_total: Duration0 = None
    demand_idle_factor: Factor = None
    demand_idle_floor: Duration0 = None
    demand_window: Duration0 = None


class LimitsLayer(_Section):
    """One layer of limits: `defaults`, a group, or a user. Unset keys inherit."""

    max_gpueq: GpuEqValue = None
    max_units_per_container: Count = None
    max_containers: Count = None
    allow_full_gpu: Flag = None
    cpus: OptCpus = None
    memory: OptMemory = None
    memory_swap: OptMemory = None
    shm: OptSize = None
    pids: OptCount1 = None
    max_runtime: OptTimeout = None
    idle_timeout: OptTimeout = None
    gpu_hold_after_stop: Duration0 = None
    policy: Annotated[PolicyLayer, _empty_if_null(dict)] = PolicyLayer()


class GroupSpec(LimitsLayer):
    members: Annotated[tuple[Text, ...], _LIST] = ()
    unix_group: OptText = None
    max_gpueq_total: OptGpuEq = None


class UserSpec(LimitsLayer):
    group: OptText = None


class GpuSection(_Section):
    backend: Annotated[Literal["nvml", "sim"], _v(_choice("nvml", "sim"))] = "nvml"
    sim_machine: Annotated[Path | None, _v(_path, None)] = None
    sample_interval: Duration1 = 5  # seconds


class DockerSection(_Section):
    host: Annotated[str, _v(_docker_host)] = "unix:///var/run/docker.sock"
    default_image: OptText = None


# The base image of each framework `ds01 image build --framework` knows (docs/images.md);
# images.frameworks replaces one, or adds a framework, key by key.
BUILTIN_FRAMEWORKS: dict[str, str] = {
    "pytorch": "pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime",
    "tensorflow": "tensorflow/tensorflow:2.18.0-gpu",
    "jax": "nvcr.io/nvidia/jax:24.10-py3",
}
_FRAMEWORK_NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,31}")


def _frameworks(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        raise _fail("expected a mapping of framework name to image, e.g. pytorch: IMAGE")
    out: dict[str, str] = {}
    for name, image in value.items():
        if not isinstance(name, str) or not _FRAMEWORK_NAME.fullmatch(name):
            raise _fail(f"framework name {name!r}: lower-case letters, digits, '-' and '_'")
        text = _text(image)
        if any(c.isspace() for c in text):
            raise _fail(f"{name}: {text!r} is not an image reference (it holds a space)")
        out[name] = text
    return out


class ImagesSection(_Section):
    """`ds01 image build` (docs/images.md): the base image of each framework."""

    frameworks: Annotated[dict[str, str], _empty_if_null(dict), _v(_frameworks)] = Field(
        default_factory=dict
    )

    def framework_bases(self) -> dict[str, str]:
        """Every framework with its base image: the built-in ones, replaced or added to."""
        return {**BUILTIN_FRAMEWORKS, **self.frameworks}


class GateSection(_Section):
    """The Docker gate's policy choices (docs/gate.md)."""

    gpus_all: Annotated[Literal["refuse", "max"], _v(_choice("refuse", "max"))] = "refuse"
    cap_add: Annotated[tuple[Text, ...], _LIST] = ()
    # A GPU create that quota allows but capacity does not: refused, or held open while it
    # waits in ds01's queue (docs/gate.md "Waiting for GPUs").
    queue: Annotated[Literal["refuse", "wait"], _v(_choice("refuse", "wait"))] = "refuse"


class AllocationSection(_Section):
    reservation_timeout: Duration1 = 120  # seconds
    # A request only units busy outside ds01 can meet (scheduler/busy.py): warn, or refuse.
    busy_units: Annotated[Literal["warn", "refuse"], _v(_choice("warn", "refuse"))] = "warn"


class StateSection(_Section):
    """Automatic online backups of the state database (store/backup.py, docs/allocation.md)."""

    # seconds between backups; null: no automatic backups
    backup_interval: Annotated[int | None, _v(_duration(1), None)] = 3600
    backup_keep: Annotated[int, _v(_int(1))] = 24  # newest backups kept, older ones deleted
    backup_dir: Annotated[Path | None, _v(_absolute_path, None)] = None  # None: <state-dir>/backups


class SharedPath(_Section):
    path: Annotated[Path, _v(_absolute_path)]
    read_only: Annotated[bool, _v(_bool)] = True


class StorageSection(_Section):
    shared_paths: Annotated[tuple[SharedPath, ...], _LIST] = ()


# Owner group of /dev/nvidia-uvm* with compute_gate: uvm: exempt users and live grants.
# `ds01 host apply` creates it; ds01d keeps its membership.
GPU_HOST_GROUP = "ds01-gpu-host"


class HostSection(_Section):
    device_access: Annotated[Literal["open", "group"], _v(_choice("open", "group"))] = "open"
    device_group: Text = "video"
    compute_gate: Annotated[Literal["none", "uvm"], _v(_choice("none", "uvm"))] = "none"
    grant_expiry: Annotated[Literal["warn", "terminate"], _v(_choice("warn", "terminate"))] = "warn"
    gate_group: Text = "ds01-users"
    # Bare-metal grants and the host GPU process watch (services/grants.py, services/hostproc.py).
    grant_warnings: Annotated[tuple[Duration1, ...], _LIST] = (3600, 600)  # seconds before the end
    grant_kill_grace: Duration1 = 30  # seconds between SIGTERM and SIGKILL
    host_process_policy: Annotated[
        Literal["report", "terminate"], _v(_choice("report", "terminate"))
    ] = "report"


# Where notifications go (notify/, docs/config.md "notify"). The terminal channel and the
# notifications log exist in every config; the others are chosen in notify.channels.
Channel = Literal["terminal", "banner", "workspace", "webhook", "email"]
CHANNELS: tuple[str, ...] = get_args(Channel)


def _http_url(value: object) -> str:
    """An http(s) URL with a host; parsed with the standard library (the schema must stay
    cheap to import: no HTTP client here)."""
    from urllib.parse import urlsplit

    text = _text(value).strip()
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http:// or https:// URL, got {describe(value)}")
    if any(c.isspace() or ord(c) < 32 for c in text):
        raise ValueError("a URL must not contain spaces or control characters")
    return text


def _file_name(value: object) -> str:
    """A plain file name (no directory part): the workspace file is made in the top of the
    workspace, never below or above it."""
    text = _text(value)
    if "/" in text or "\0" in text or text in (".", "..") or any(ord(c) < 32 for c in text):
        raise ValueError(f"expected a plain file name like ds01-notices.txt, got {describe(value)}")
    return text


def _mailbox(value: object) -> str:
    """An e-mail address, or a template with {user}: one '@', no spaces, no control
    characters (a CR or LF would let a name write mail headers)."""
    text = _text(value).strip()
    rest = text.replace("{user}", "user")
    if "{" in rest or "}" in rest:
        raise ValueError(f"the only placeholder is {{user}}; got {describe(value)}")
    local, at, domain = rest.rpartition("@")
    if not at or not local or not domain or any(c.isspace() or ord(c) < 32 for c in rest):
        raise ValueError(f"expected an address like someone@lab.example, got {describe(value)}")
    return text


def _port(value: object) -> int:
    port = _int(1)(value)
    if port > 65535:
        raise ValueError(f"must be a port number (1-65535), got {port}")
    return port


class BannerSettings(_Section):
    """Notices shown once by the user's next `ds01` command (on stderr)."""

    max_age: Duration1 = 86400  # seconds; older notices are dropped unseen


class WorkspaceFileSettings(_Section):
    """Notices appended to a file at the top of the container's mounted workspace."""

    file: Annotated[str, _v(_file_name)] = "ds01-notices.txt"
    max_size: Annotated[int, _v(_size(1024, "1k"))] = 256 * 1024  # then started afresh


class WebhookSettings(_Section):
    """A Slack/Mattermost/Teams-style incoming webhook: POST {"text": "..."}."""

    url: Annotated[str | None, _v(_http_url, None)] = None
    # A root-only file holding the URL: ds01.yaml is readable by every user.
    url_file: Annotated[Path | None, _v(_absolute_path, None)] = None
    timeout: Duration1 = 10  # seconds, for the whole request


class EmailSettings(_Section):
    """E-mail over SMTP; each user's address from `addresses`, else from `address`."""

    smtp_host: Text = "localhost"
    smtp_port: Annotated[int, _v(_port)] = 25
    security: Annotated[
        Literal["none", "starttls", "tls"], _v(_choice("none", "starttls", "tls"))
    ] = "none"
    username: OptText = None
    password_file: Annotated[Path | None, _v(_absolute_path, None)] = None
    sender: Annotated[str, _v(_mailbox)] = "ds01@localhost"
    address: Annotated[str | None, _v(_mailbox, None)] = None  # template, e.g. {user}@lab.example
    addresses: Annotated[dict[str, Annotated[str, _v(_mailbox)]], _empty_if_null(dict)] = Field(
        default_factory=dict
    )
    timeout: Duration1 = 10  # seconds, per SMTP operation


class NotifySection(_Section):
    """Which channels reach users, and each one's settings (notify/)."""

    channels: Annotated[tuple[Annotated[Channel, _v(_choice(*CHANNELS))], ...], _LIST] = (
        "terminal",
        "banner",
        "workspace",
    )
    queue_size: Annotated[int, _v(_int(1))] = 256  # per slow channel; beyond it, dropped (audited)
    banner: Annotated[BannerSettings, _empty_if_null(dict)] = BannerSettings()
    workspace: Annotated[WorkspaceFileSettings, _empty_if_null(dict)] = WorkspaceFileSettings()
    webhook: Annotated[WebhookSettings, _empty_if_null(dict)] = WebhookSettings()
    email: Annotated[EmailSettings, _empty_if_null(dict)] = EmailSettings()


class QueueWeights(_Section):
    """The weight of each priority factor (queue/priority.py; each factor is 0..1)."""

    fairshare: Annotated[float, _v(_number(0, None))] = 1000
    age: Annotated[float, _v(_number(0, None))] = 100
    group: Annotated[float, _v(_number(0, None))] = 100
    size: Annotated[float, _v(_number(0, None))] = 10


class QueueSection(_Section):
    """Deploy requests waiting for capacity, and their fair-share priority (docs/queue.md)."""

    max_wait: Duration1 = 86400  # seconds; an older entry expires, its user is told
    max_per_user: Annotated[int, _v(_int(1))] = 10  # waiting entries per user
    usage_half_life: Duration1 = 7 * 86400  # seconds; past GPU use counts half after this
    # Decayed usage (gpueq·seconds) at which the fair-share factor is 1/2: one GPU-day.
    usage_scale: Duration1 = 86400
    age_max: Duration1 = 86400  # seconds in the queue at which the age factor reaches 1
    # Charged as usage (gpueq × this many seconds) the moment an entry is admitted.
    entry_penalty: Annotated[int, _v(_duration(0))] = 3600
    weights: Annotated[QueueWeights, _empty_if_null(dict)] = QueueWeights()
    # Group name → its priority factor, 0..1 (groups not named: 0).
    group_priority: Annotated[
        dict[str, Annotated[float, _v(_number(0, 1))]], _empty_if_null(dict)
    ] = Field(default_factory=dict)


class ReportSection(_Section):
    """Usage reports (`ds01 report usage`, docs/reports.md)."""

    # Grams of CO2 per kWh of the electricity the GPUs draw: a report's CO2 is its energy
    # times this. 400 is a round figure between the EU and world averages: set your grid's.
    grid_intensity_g_per_kwh: Annotated[float, _v(_number(0, 5000))] = 400.0


class ReservationsSection(_Section):
    """Admins' reservations of units (`ds01 admin reserve`, docs/queue.md)."""

    # A reservation its party has not used this long after its start returns its units to
    # the pool (`ds01 admin reserve --grace` sets it per reservation).
    grace: Annotated[int, _v(_duration(0))] = 1800


Privacy = Literal["show_all", "hide_others"]


class WebSection(_Section):
    """The web status page (docs/web.md): ds01d's own HTTP listener, read-only."""

    listen: Annotated[ListenAddress | None, _v(parse_listen, None)] = ListenAddress(
        "127.0.0.1", 9102
    )
    allow_remote: Annotated[bool, _v(_bool)] = False  # a listen address off loopback
    hosts: Annotated[tuple[Text, ...], _LIST] = ()  # Host names accepted besides localhost
    max_clients: Annotated[int, _v(_int(1))] = 20  # live views (SSE streams) open at once

    @model_validator(mode="after")
    def _web_remote(self) -> WebSection:
        if self.listen is not None and not self.listen.loopback and not self.allow_remote:
            raise _fail(
                f"listen: {self.listen} is not a loopback address, and the page shows who holds"
                " which GPU; use 127.0.0.1:PORT and open it through an SSH tunnel (docs/web.md),"
                " or set allow_remote: true if every host on that network may see it"
            )
        return self


class MetricsSection(_Section):
    """ds01d's Prometheus endpoint (docs/metrics.md): its own TCP listener, not api.sock."""

    listen: Annotated[ListenAddress | None, _v(parse_listen, None)] = ListenAddress(
        "127.0.0.1", 9101
    )
    # Any other address serves user names to the network: only when asked for in so many words.
    allow_remote: Annotated[bool, _v(_bool)] = False
    # A bearer token the scraper must send (Prometheus: authorization.credentials_file).
    token_file: Annotated[Path | None, _v(_absolute_path, None)] = None

    @model_validator(mode="after")
    def _remote(self) -> MetricsSection:
        if self.listen is not None and not self.allow_remote and not self.listen.loopback:
            raise _fail(
                f"listen: {self.listen} is not a loopback address, and the metrics name users;"
                " use 127.0.0.1:PORT and scrape through an SSH tunnel or a local Prometheus,"
                " or set allow_remote: true (with token_file) if the network is trusted"
            )
        return self


_SLURM_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def _slurm_name(value: object) -> str:
    """A name SLURM takes as a node, partition, account or GRES type: letters, digits, '.',
    '_' and '-' (no ',', ':', '=' or spaces, which separate its lists)."""
    text = _text(value)
    if not _SLURM_NAME.fullmatch(text):
        raise ValueError(
            f"SLURM names take letters, digits, '.', '_' and '-' only; got {describe(value)}"
        )
    return text


SlurmName = Annotated[str, _v(_slurm_name)]


class ClusterNode(_Section):
    """One SLURM compute node (docs/slurm.md): its GPUs and how slurmd finds their files."""

    machine: Text  # the node's GPUs: a machine file (docs/inventory.md) or a shipped name
    gres: Annotated[Literal["files", "nvml"], _v(_choice("files", "nvml"))] = "files"
    device_files: Text = "/dev/nvidia{index}"  # File= of GPU {index} with gres: files
    address: OptText = None  # NodeAddr (default: the node's name)
    # Port= of this node's slurmd (default: slurm.conf's SlurmdPort); only where several slurmd
    # share one host, as in the test cluster (docs/slurm.md "Two nodes").
    port: Annotated[int | None, _v(_port, None)] = None
    cpus: OptCount1 = None  # CPUs= (default: what slurmd finds)


class ClusterSection(_Section):
    """Scale-out through SLURM (docs/slurm.md): what `ds01 slurm export` renders from."""

    backend: Annotated[Literal["local", "slurm"], _v(_choice("local", "slurm"))] = "local"
    name: Annotated[str, _v(_slurm_name)] = "ds01"
    partition: Annotated[str, _v(_slurm_name)] = "gpu"
    nodes: Annotated[
        dict[SlurmName, Annotated[ClusterNode, _empty_if_null(dict)]], _empty_if_null(dict)
    ] = Field(default_factory=dict)
    # GPU model name or MIG profile → its SLURM GRES type (when the default does not fit).
    gres_types: Annotated[dict[str, SlurmName], _empty_if_null(dict)] = Field(default_factory=dict)
    # Group → its fair-share shares in SLURM (groups not named: 1).
    fairshare: Annotated[dict[str, Annotated[int, _v(_int(1))]], _empty_if_null(dict)] = Field(
        default_factory=dict
    )
    default_account: Annotated[str, _v(_slurm_name)] = "ds01-default"  # users in no group


class ConfigFile(_Section):
    """The whole file. Every section is optional, so an empty file is a valid config."""

    defaults: Annotated[LimitsLayer, _empty_if_null(dict)] = LimitsLayer()
    groups: Annotated[
        dict[str, Annotated[GroupSpec, _empty_if_null(dict)]], _empty_if_null(dict)
    ] = Field(default_factory=dict)
    users: Annotated[dict[str, Annotated[UserSpec, _empty_if_null(dict)]], _empty_if_null(dict)] = (
        Field(default_factory=dict)
    )
    exempt_users: Annotated[tuple[Text, ...], _LIST] = ()
    admin_group: Text = "ds01-admin"
    gpu: Annotated[GpuSection, _empty_if_null(dict)] = GpuSection()
    docker: Annotated[DockerSection, _empty_if_null(dict)] = DockerSection()
    privacy: Annotated[Privacy, _v(_choice(*get_args(Privacy)))] = "show_all"
    allocation: Annotated[AllocationSection, _empty_if_null(dict)] = AllocationSection()
    storage: Annotated[StorageSection, _empty_if_null(dict)] = StorageSection()
    host: Annotated[HostSection, _empty_if_null(dict)] = HostSection()
    gate: Annotated[GateSection, _empty_if_null(dict)] = GateSection()
    images: Annotated[ImagesSection, _empty_if_null(dict)] = ImagesSection()
    state: Annotated[StateSection, _empty_if_null(dict)] = StateSection()
    notify: Annotated[NotifySection, _empty_if_null(dict)] = NotifySection()
    queue: Annotated[QueueSection, _empty_if_null(dict)] = QueueSection()
    reservations: Annotated[ReservationsSection, _empty_if_null(dict)] = ReservationsSection()
    report: Annotated[ReportSection, _empty_if_null(dict)] = ReportSection()
    web: Annotated[WebSection, _empty_if_null(dict)] = WebSection()
    metrics: Annotated[MetricsSection, _empty_if_null(dict)] = MetricsSection()
    cluster: Annotated[ClusterSection, _empty_if_null(dict)] = ClusterSection()


# Limit keys in display order, each with its kind (drives formatting and JSON values).
LIMIT_KINDS: dict[str, str] = {
    "max_gpueq": "gpueq",
    "max_units_per_container": "int",
    "max_containers": "int",
    "allow_full_gpu": "bool",
    "cpus": "float",
    "memory": "size",
    "memory_swap": "size",
    "shm": "size",
    "pids": "int",
    "max_runtime": "duration",
    "idle_timeout": "duration",
    "gpu_hold_after_stop": "duration",
}
POLICY_KINDS: dict[str, str] = {
    "idle_gpu_util_pct": "float",
    "idle_cpu_pct": "float",
    "idle_samples": "int",
    "warn_before": "duration",
    "max_keepalive": "duration",
    "max_keepalive_total": "duration",
    "demand_idle_factor": "float",
    "demand_idle_floor": "duration",
    "demand_window": "duration",
}

# What a key is when no layer sets it (the `defaults` layer's own defaults). memory_swap is
# absent on purpose: unset, it equals the resolved memory (no swap).
BUILTIN_LIMITS: dict[str, object] = {
    "max_gpueq": GpuEq(1),
    "max_units_per_container": 1,
    "max_containers": 2,
    "allow_full_gpu": False,
    "cpus": 8.0,
    "memory": 32 * 1024**3,
    "shm": 8 * 1024**3,
    "pids": 4096,
    "max_runtime": None,
    "idle_timeout": 3600,
    "gpu_hold_after_stop": 900,
}
BUILTIN_POLICY: dict[str, object] = {
    "idle_gpu_util_pct": 5.0,
    "idle_cpu_pct": 5.0,
    "idle_samples": 3,
    "warn_before": 900,
    "max_keepalive": 8 * 3600,
    "max_keepalive_total": 24 * 3600,
    "demand_idle_factor": 0.5,
    "demand_idle_floor": 900,
    "demand_window": 600,
}


def _unwrap(annotation: Any) -> Any:
    """Annotated[X, ...] → X; X | None → X; tuple[X, ...] / dict[str, X] stay."""
    while True:
        args = get_args(annotation)
        if getattr(annotation, "__metadata__", None) is not None:
            annotation = args[0]
            continue
        if args and type(None) in args and len(args) == 2:
            annotation = next(a for a in args if a is not type(None))
            continue
        return annotation


def keys_at(path: tuple[str | int, ...]) -> list[str] | None:
    """The keys allowed in the mapping at `path` (for 'did you mean'), or None if unknown."""
    current: Any = ConfigFile
    for part in path:
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            by_key = {(f.alias or name): f for name, f in current.model_fields.items()}
            if not isinstance(part, str) or part not in by_key:
                return None
            current = by_key[part].annotation
            continue
        args = get_args(current)
        origin = getattr(current, "__origin__", None)
        if origin is dict and isinstance(part, str):
            current = args[1]
        elif origin is tuple and isinstance(part, int):
            current = args[0]
        else:
            return None
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [(f.alias or name) for name, f in current.model_fields.items()]
    return None
