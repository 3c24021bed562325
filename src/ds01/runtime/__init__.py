"""ds01.runtime: the Docker engine — container specs, create/start/stop, labels, events.

The only ds01 package that imports the Docker SDK (STYLE 1; ruff's banned-api rule enforces it).
"""

from ds01.runtime.engine import (
    ContainerInfo,
    Engine,
    EngineError,
    EventStream,
    ShellSession,
    container_info,
)
from ds01.runtime.spec import (
    LABEL_ALLOCATION,
    LABEL_CREATED,
    LABEL_MANAGED,
    LABEL_NAME,
    LABEL_OWNER,
    ContainerSpec,
    WorkspaceMount,
    cgroup_parent,
)
from ds01.runtime.stamp import Stamp, create_body

__all__ = [
    "LABEL_ALLOCATION",
    "LABEL_CREATED",
    "LABEL_MANAGED",
    "LABEL_NAME",
    "LABEL_OWNER",
    "ContainerInfo",
    "ContainerSpec",
    "Engine",
    "EngineError",
    "EventStream",
    "ShellSession",
    "Stamp",
    "WorkspaceMount",
    "cgroup_parent",
    "container_info",
    "create_body",
]
