"""Limits layered key by key (built-in ← defaults ← group ← user), group choice, admin, exempt."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import pytest

from ds01.config import Config, Policy, parse_config_text, reload_config
from ds01.config.loader import load_config
from ds01.errors import ConfigError
from ds01.model.gpueq import GpuEq
from ds01.model.limits import Limits

# Each layer sets different keys, so every source below is visible.
LAYERED = """
defaults:
  max_gpueq: "1/7"
  cpus: 4
  memory: 16g
  idle_timeout: 1h
  policy:
    idle_samples: 2
groups:
  student:
    unix_group: students
    members: [alice, dave]
    cpus: 8
    max_runtime: 2d
    max_gpueq_total: "12/7"
    policy:
      warn_before: 10m
  researcher:
    unix_group: researchers
    max_gpueq: 1
    memory_swap: 64g
  lab-admins:
    members: [zed]
  ops:
    unix_group: lab-admins
    members: [olga]
users:
  alice:
    memory: 48g
    policy:
      idle_gpu_util_pct: 10
  dave:
    group: researcher
  "h.baker@hertie-school.lan":
    group: researcher
    memory: 32g
  zed:
    group: student
admin_group: lab-admins
exempt_users: [datasciencelab]
"""


@pytest.fixture(scope="module")
def config() -> Config:
    return parse_config_text(LAYERED, "layered.yaml")


def test_a_user_override_changes_one_key_and_keeps_the_groups_other_keys(config: Config) -> None:
    resolved = config.resolve("alice")
    assert resolved.group == "student"
    assert resolved.limits == Limits(
        max_gpueq=GpuEq(Fraction(1, 7)),
        max_units_per_container=1,
        max_containers=2,
        allow_full_gpu=False,
        cpus=8.0,
        memory_bytes=51539607552,
        memory_swap_bytes=51539607552,
        shm_bytes=8589934592,
        pids=4096,
        max_runtime_s=172800,
        idle_timeout_s=3600,
        gpu_hold_after_stop_s=900,
        group="student",
        group_max_gpueq=GpuEq(Fraction(12, 7)),
    )
    assert resolved.policy == Policy(
        idle_gpu_util_pct=10.0,
        idle_cpu_pct=5.0,
        idle_samples=2,
        warn_before_s=600,
        max_keepalive_s=8 * 3600,
        max_keepalive_total_s=24 * 3600,
        demand_idle_factor=0.5,
        demand_idle_floor_s=900,
        demand_window_s=600,
    )
    assert resolved.sources == {
        "max_gpueq": "defaults",
        "max_units_per_container": "defaults",
        "max_containers": "defaults",
        "allow_full_gpu": "defaults",
        "cpus": "group:student",
        "memory": "user:alice",
        "memory_swap": "user:alice",
        "shm": "defaults",
        "pids": "defaults",
        "max_runtime": "group:student",
        "idle_timeout": "defaults",
        "gpu_hold_after_stop": "defaults",
        "max_gpueq_total": "group:student",
        "policy.idle_gpu_util_pct": "user:alice",
        "policy.idle_cpu_pct": "defaults",
        "policy.idle_samples": "defaults",
        "policy.warn_before": "group:student",
        "policy.max_keepalive": "defaults",
        "policy.max_keepalive_total": "defaults",
        "policy.demand_idle_factor": "defaults",
        "policy.demand_idle_floor": "defaults",
        "policy.demand_window": "defaults",
    }


def test_a_dotted_ldap_user_name_resolves_and_a_group_swap_stays_above_user_memory(
    config: Config,
) -> None:
    resolved = config.resolve("h.baker@hertie-school.lan")
    assert (resolved.group, resolved.group_via) == ("researcher", "users")
    assert resolved.limits.max_gpueq == GpuEq(1)
    assert resolved.limits.memory_bytes == 34359738368
    assert resolved.limits.memory_swap_bytes == 68719476736
    assert resolved.sources["memory"] == "user:h.baker@hertie-school.lan"
    assert resolved.sources["memory_swap"] == "group:researcher"
    assert resolved.limits.group_max_gpueq is None
    assert "max_gpueq_total" not in resolved.sources


def test_a_user_in_no_group_gets_defaults_and_built_in_values(config: Config) -> None:
    resolved = config.resolve("nobody")
    assert (resolved.group, resolved.group_via) == (None, None)
    assert resolved.limits == Limits(
        max_gpueq=GpuEq(Fraction(1, 7)),
        max_units_per_container=1,
        max_containers=2,
        allow_full_gpu=False,
        cpus=4.0,
        memory_bytes=17179869184,
        memory_swap_bytes=17179869184,
        shm_bytes=8589934592,
        pids=4096,
        max_runtime_s=None,
        idle_timeout_s=3600,
        gpu_hold_after_stop_s=900,
    )
    assert set(resolved.sources.values()) == {"defaults"}


@pytest.mark.parametrize(
    ("user", "unix_groups", "group", "via"),
    [
        pytest.param("dave", (), "researcher", "users", id="users.<name>.group beats members"),
        pytest.param("alice", (), "student", "members", id="members places a user"),
        pytest.param(
            "alice", ("researchers",), "student", "members", id="members beat unix groups"
        ),
        pytest.param("erin", ("researchers",), "researcher", "unix_group", id="unix group"),
        pytest.param(
            "erin",
            ("researchers", "students"),
            "student",
            "unix_group",
            id="of two matching unix groups the first in the file wins",
        ),
        pytest.param("erin", ("staff",), None, None, id="no match means no group"),
    ],
)
def test_group_membership_follows_the_documented_order(
    config: Config, user: str, unix_groups: tuple[str, ...], group: str | None, via: str | None
) -> None:
    assert config.group_of(user, unix_groups) == group
    resolved = config.resolve(user, unix_groups)
    assert (resolved.group, resolved.group_via) == (group, via)


@pytest.mark.parametrize(
    ("user", "unix_groups", "admin"),
    [
        pytest.param("erin", ("lab-admins",), True, id="in the unix admin group"),
        pytest.param("olga", (), True, id="member of a group whose unix_group is admin_group"),
        pytest.param("zed", (), False, id="listed in the admin group but moved by users.group"),
        pytest.param("alice", ("students",), False, id="an ordinary student"),
        pytest.param("nobody", (), False, id="unknown to the config"),
    ],
)
def test_admins_come_from_the_unix_group_or_the_config_group_that_is_it(
    config: Config, user: str, unix_groups: tuple[str, ...], admin: bool
) -> None:
    assert config.is_admin(user, unix_groups) is admin


def test_a_config_group_named_like_admin_group_makes_its_members_admins() -> None:
    config = parse_config_text("groups:\n  ds01-admin:\n    members: [root2]\n", "x.yaml")
    assert config.is_admin("root2") is True
    assert config.is_admin("root3") is False


def test_exempt_users_are_exactly_those_listed(config: Config) -> None:
    assert config.is_exempt("datasciencelab") is True
    assert config.is_exempt("alice") is False


def test_an_empty_file_is_a_valid_config_with_built_in_values() -> None:
    config = parse_config_text("", "empty.yaml")
    assert config.groups == {}
    assert config.admin_group == "ds01-admin"
    assert config.gpu.backend == "nvml"
    assert config.gpu.sample_interval == 5
    assert config.allocation.reservation_timeout == 120
    assert config.docker.host == "unix:///var/run/docker.sock"
    assert config.privacy == "show_all"
    assert config.host.device_access == "open"
    assert config.host.gate_group == "ds01-users"
    assert config.resolve("anyone").limits.max_gpueq == GpuEq(1)


def test_sections_with_every_entry_commented_out_are_empty() -> None:
    config = parse_config_text("groups:\nusers:\nexempt_users:\ngpu:\n", "commented.yaml")
    assert (dict(config.groups), dict(config.users), config.exempt_users) == ({}, {}, ())


def test_a_group_or_user_with_every_key_commented_out_only_places_users() -> None:
    text = "groups:\n  student:\n  staff:\n    members: [bob]\nusers:\n  bob:\n"
    resolved = parse_config_text(text, "commented.yaml").resolve("bob")
    assert (resolved.group, set(resolved.sources.values())) == ("staff", {"defaults"})


def test_null_means_unlimited_where_it_makes_sense() -> None:
    text = "defaults:\n  cpus: null\n  memory: null\n  pids: null\n  max_runtime: null\n"
    limits = parse_config_text(text, "x.yaml").resolve("u").limits
    assert (limits.cpus, limits.memory_bytes, limits.memory_swap_bytes) == (None, None, None)
    assert (limits.pids, limits.max_runtime_s) == (None, None)


def test_sim_machine_paths_resolve_against_the_config_directory() -> None:
    text = "gpu:\n  backend: sim\n  sim_machine: machines/lab.yaml\n"
    config = parse_config_text(text, "/etc/ds01/ds01.yaml")
    assert config.gpu.sim_machine == Path("/etc/ds01/machines/lab.yaml")


def test_load_config_refuses_a_sim_machine_file_that_does_not_exist(tmp_path: Path) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text("gpu:\n  backend: sim\n  sim_machine: lab.yaml\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [
        f"{path}:3:16: gpu.sim_machine: file not found: {tmp_path}/lab.yaml"
    ]
    (tmp_path / "lab.yaml").write_text("gpus: []\n")
    assert load_config(path).gpu.sim_machine == tmp_path / "lab.yaml"


def test_a_missing_config_file_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert err.value.lines() == [
        f"{tmp_path}/nope.yaml: file not found",
        "Create it (examples/ds01.yaml is a starting point), or point --config or DS01_CONFIG "
        "at the right file.",
    ]
    assert err.value.exit_code == 2


def test_a_file_that_is_not_utf8_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes(b"defaults:\n  cpus: 4\n# caf\xe9\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert [str(p) for p in err.value.problems] == [f"{path}:3: not UTF-8 text (byte 25)"]


def test_a_bad_reload_keeps_the_config_that_is_running(tmp_path: Path) -> None:
    path = tmp_path / "ds01.yaml"
    path.write_text("defaults:\n  cpus: 4\n")
    running = load_config(path)
    path.write_text("defaults:\n  cpus: four\n")
    kept, error = reload_config(path, running)
    assert kept is running
    assert error is not None
    assert [str(p) for p in error.problems] == [
        f"{path}:2:9: defaults.cpus: expected a number, got 'four'"
    ]
    path.write_text("defaults:\n  cpus: 6\n")
    fresh, error = reload_config(path, running)
    assert (fresh.resolve("u").limits.cpus, error) == (6.0, None)
    assert running.resolve("u").limits.cpus == 4.0


def test_yaml_merge_keys_share_settings_between_groups() -> None:
    text = (
        "groups:\n  base: &big {cpus: 32, memory: 128g}\n  faculty:\n    <<: *big\n    cpus: 48\n"
    )
    limits = parse_config_text(text, "x.yaml").resolve("u", ()).limits
    assert limits.cpus == 8.0  # u is in no group
    config = parse_config_text(text.replace("  faculty:\n", "  faculty:\n    members: [u]\n"), "x")
    limits = config.resolve("u").limits
    assert (limits.cpus, limits.memory_bytes) == (48.0, 137438953472)
