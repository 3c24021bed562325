"""ds01's configuration: one YAML file, validated on load, limits layered key by key.

Public API (other packages import only these names):

    load_config(path) -> Config              read + validate; raises ConfigError
    parse_config_text(text, source) -> Config
    reload_config(path, current) -> (Config, ConfigError | None)
    Config.resolve(user, unix_groups) -> ResolvedLimits
    Config.group_of / is_admin / is_exempt

Modules: `units` (durations, sizes), `yamlsource` (YAML with line:col), `schema` (pydantic
models), `checks` (cross-section rules), `resolve` (Config and layering), `loader` (pipeline and
error messages). Imports model and errors only; must not import cli, daemon or services.
"""

from ds01.config.loader import (
    RESTART_ONLY,
    load_config,
    parse_config_text,
    reload_config,
    restart_only_changes,
)
from ds01.config.resolve import Config, Policy, ResolvedLimits

__all__ = [
    "RESTART_ONLY",
    "Config",
    "Policy",
    "ResolvedLimits",
    "load_config",
    "parse_config_text",
    "reload_config",
    "restart_only_changes",
]
