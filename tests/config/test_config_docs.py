"""docs/config.md stays honest: every config key and every `config show --json` field is in it."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel

from ds01.cli.config_cmd import _as_json
from ds01.config import parse_config_text
from ds01.config.schema import (
    AllocationSection,
    BannerSettings,
    ClusterNode,
    ClusterSection,
    ConfigFile,
    DockerSection,
    EmailSettings,
    GpuSection,
    GroupSpec,
    HostSection,
    ImagesSection,
    NotifySection,
    PolicyLayer,
    ReservationsSection,
    SharedPath,
    StateSection,
    StorageSection,
    UserSpec,
    WebhookSettings,
    WebSection,
    WorkspaceFileSettings,
)

DOC = (Path(__file__).resolve().parents[2] / "docs" / "config.md").read_text()
MODELS: list[type[BaseModel]] = [
    ConfigFile,
    GroupSpec,
    UserSpec,
    PolicyLayer,
    GpuSection,
    DockerSection,
    AllocationSection,
    StorageSection,
    SharedPath,
    HostSection,
    ImagesSection,
    StateSection,
    NotifySection,
    BannerSettings,
    WorkspaceFileSettings,
    WebhookSettings,
    EmailSettings,
    WebSection,
    ReservationsSection,
    ClusterSection,
    ClusterNode,
]
KEYS = sorted({(f.alias or name) for model in MODELS for name, f in model.model_fields.items()})


@pytest.mark.parametrize("key", KEYS)
def test_every_config_key_is_documented(key: str) -> None:
    assert f"{key}`" in DOC, f"docs/config.md does not mention `{key}`"


def test_every_json_field_of_config_show_is_documented() -> None:
    config = parse_config_text("groups:\n  g:\n    members: [u]\n", "x.yaml")
    shown = _as_json(config, config.resolve("u"), None)
    fields = set(shown) | {"value", "float", "source"}
    missing = sorted(f for f in fields if f"| `{f}` |" not in DOC)
    assert missing == []
