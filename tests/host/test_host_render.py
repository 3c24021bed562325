"""Rendering of host files and the edits of shared files: pure functions, literal expectations."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest

from ds01.config import Config, parse_config_text
from ds01.host import hostaccess
from ds01.host.edits import (
    EditError,
    with_block,
    with_toml_keys,
    without_nvidia_default_runtime,
)
from ds01.host.render import (
    MODPROBE_CONF,
    NVIDIA_RUNTIME_TOML,
    SYSTEMD_UNIT,
    TMPFILES_CONF,
    UDEV_RULES,
    HostSettings,
    render,
)

REPO = Path(__file__).resolve().parents[2]
FIXTURES = Path(__file__).parent / "fixtures"
DEFAULTS = HostSettings(Path("/etc/ds01/ds01.yaml"), Path("/var/lib/ds01"), Path("/run/ds01"))
BEGIN = "# BEGIN ds01 (managed by `ds01 host apply`; do not edit inside this block)"
END = "# END ds01"
KEYS = {
    "accept-nvidia-visible-devices-envvar-when-unprivileged": False,
    "accept-nvidia-visible-devices-as-volume-mounts": True,
}


def nothing(path: str) -> str | None:
    return None


def config(text: str = "") -> Config:
    return parse_config_text(text, "test.yaml")


# ---- managed blocks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("existing", "where", "expected"),
    [
        pytest.param(None, "top", f"{BEGIN}\nx\n{END}\n", id="a missing file gets just the block"),
        pytest.param("a\nb\n", "top", f"{BEGIN}\nx\n{END}\na\nb\n", id="top: the block goes first"),
        pytest.param(
            "a\nb", "bottom", f"a\nb\n{BEGIN}\nx\n{END}\n", id="bottom: after the last line"
        ),
        pytest.param(
            f"a\n{BEGIN}\nold\n{END}\nb\n",
            "bottom",
            f"a\nb\n{BEGIN}\nx\n{END}\n",
            id="an old block is replaced, the rest kept",
        ),
    ],
)
def test_managed_block(existing: str | None, where: str, expected: str) -> None:
    result = with_block(existing, [BEGIN, "x", END], where)  # type: ignore[arg-type]
    assert result == expected
    assert with_block(result, [BEGIN, "x", END], where) == result  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "existing",
    [
        pytest.param(f"a\n{BEGIN}\nb\n", id="a block without its END line"),
        pytest.param(f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n", id="two blocks"),
    ],
)
def test_a_block_that_cannot_be_edited_safely_is_refused(existing: str) -> None:
    with pytest.raises(EditError):
        with_block(existing, [BEGIN, END], "top")


# ---- NVIDIA runtime config.toml -----------------------------------------------------------------


def test_toml_keys_replace_the_shipped_comments_and_keep_every_other_line() -> None:
    shipped = (FIXTURES / "nvidia-container-runtime-config.toml").read_text()
    result = with_toml_keys(shipped, KEYS, [])
    old, new = shipped.splitlines(), result.splitlines()
    assert new[:2] == [
        "accept-nvidia-visible-devices-as-volume-mounts = true",
        "accept-nvidia-visible-devices-envvar-when-unprivileged = false",
    ]
    assert new[2:] == old[2:]
    parsed = tomllib.loads(result)
    assert parsed["nvidia-container-cli"]["ldconfig"] == "@/sbin/ldconfig.real"
    assert with_toml_keys(result, KEYS, []) == result


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        pytest.param(
            "accept-nvidia-visible-devices-envvar-when-unprivileged = true\nx = 1\n[t]\ny = 2\n",
            "accept-nvidia-visible-devices-envvar-when-unprivileged = false\nx = 1\n"
            "accept-nvidia-visible-devices-as-volume-mounts = true\n[t]\ny = 2\n",
            id="an active true is rewritten in place; a missing key goes before the first table",
        ),
        pytest.param(
            "[t]\naccept-nvidia-visible-devices-envvar-when-unprivileged = true\n",
            "accept-nvidia-visible-devices-envvar-when-unprivileged = false\n"
            "accept-nvidia-visible-devices-as-volume-mounts = true\n"
            "[t]\naccept-nvidia-visible-devices-envvar-when-unprivileged = true\n",
            id="a key of the same name inside a table is not the top-level key",
        ),
    ],
)
def test_toml_keys(existing: str, expected: str) -> None:
    assert with_toml_keys(existing, KEYS, []) == expected


def test_invalid_toml_is_left_alone() -> None:
    with pytest.raises(EditError, match="not valid TOML"):
        with_toml_keys("this is = = not toml\n", KEYS, [])


# ---- Docker daemon.json ------------------------------------------------------------------------


def test_daemon_json_loses_only_the_nvidia_default_runtime() -> None:
    existing = json.dumps(
        {
            "log-driver": "journald",
            "default-runtime": "nvidia",
            "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
            "data-root": "/srv/docker",
        }
    )
    assert json.loads(without_nvidia_default_runtime(existing)) == {
        "log-driver": "journald",
        "runtimes": {"nvidia": {"path": "nvidia-container-runtime", "args": []}},
        "data-root": "/srv/docker",
    }


@pytest.mark.parametrize(
    "existing",
    [
        pytest.param('{"default-runtime":"runc",  "debug":true}', id="another default runtime"),
        pytest.param('{ "log-level": "warn" }\n', id="no default runtime"),
        pytest.param("", id="an empty file"),
    ],
)
def test_daemon_json_without_nvidia_default_is_kept_byte_for_byte(existing: str) -> None:
    assert without_nvidia_default_runtime(existing) == existing


@pytest.mark.parametrize("existing", ["{not json", "[1, 2]"])
def test_daemon_json_that_is_not_an_object_is_left_alone(existing: str) -> None:
    with pytest.raises(EditError):
        without_nvidia_default_runtime(existing)


# ---- whole-file renderings ---------------------------------------------------------------------


def test_the_unit_is_the_packaged_one_for_the_default_paths() -> None:
    files = render(config(), DEFAULTS, nothing, ["systemd"]).files
    packaged = (REPO / "packaging" / "systemd" / "ds01d.service").read_text()
    assert files[SYSTEMD_UNIT].content == packaged
    assert files[TMPFILES_CONF].content.splitlines()[-1] == "d /run/ds01 0755 root root -"


@pytest.mark.parametrize(
    ("host", "gid", "options", "chown"),
    [
        pytest.param(
            "",
            None,
            "options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=0 NVreg_DeviceFileMode=0666",
            ["root:root $$f && chmod 0666 $$f", "root:root $$f && chmod 0666 $$f"],
            id="open: every node 0666 root:root",
        ),
        pytest.param(
            "host:\n  device_access: group\n  device_group: gpu\n",
            1234,
            "options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=1234 "
            "NVreg_DeviceFileMode=0660",
            ["root:gpu $$f && chmod 0660 $$f", "root:gpu $$f && chmod 0660 $$f"],
            id="group: every node 0660 root:GROUP, the driver told the gid",
        ),
        pytest.param(
            "host:\n  compute_gate: uvm\n",
            None,
            "options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=0 NVreg_DeviceFileMode=0666"
            " NVreg_ModifyDeviceFiles=0",
            ["root:root $$f && chmod 0666 $$f", "root:ds01-gpu-host $$f && chmod 0660 $$f"],
            id="uvm gate: query nodes open, CUDA nodes only for ds01-gpu-host, driver hands off",
        ),
        pytest.param(
            "host:\n  device_access: group\n  device_group: gpu\n  compute_gate: uvm\n",
            1234,
            "options nvidia NVreg_DeviceFileUID=0 NVreg_DeviceFileGID=1234 "
            "NVreg_DeviceFileMode=0660 NVreg_ModifyDeviceFiles=0",
            ["root:gpu $$f && chmod 0660 $$f", "root:ds01-gpu-host $$f && chmod 0660 $$f"],
            id="group and uvm gate: query nodes for the group, CUDA nodes for ds01-gpu-host",
        ),
    ],
)
def test_device_files(host: str, gid: int | None, options: str, chown: list[str]) -> None:
    settings = HostSettings(DEFAULTS.config_path, DEFAULTS.state_dir, DEFAULTS.run_dir, gid)
    files = render(config(host), settings, nothing, ["devices"]).files
    assert files[MODPROBE_CONF].content.splitlines()[-1] == options
    rules = [line for line in files[UDEV_RULES].content.splitlines() if line.startswith("ACTION")]
    assert [r.split("chown ", 1)[1].split("; done", 1)[0] for r in rules] == chown
    assert 'KERNEL=="nvidia"' in rules[0] and 'KERNEL=="nvidia_uvm"' in rules[1]


@pytest.mark.parametrize(
    "host",
    [
        "",
        "host:\n  device_access: group\n  device_group: gpu\n",
    ],
)
def test_without_the_gate_the_driver_keeps_managing_its_device_files(host: str) -> None:
    """NVreg_ModifyDeviceFiles=0 only with compute_gate: uvm; then the udev rule creates the
    nodes itself (nothing else does), otherwise it leaves creation to the driver."""
    settings = HostSettings(DEFAULTS.config_path, DEFAULTS.state_dir, DEFAULTS.run_dir, 1234)
    files = render(config(host), settings, nothing, ["devices"]).files
    assert "ModifyDeviceFiles" not in files[MODPROBE_CONF].content
    assert "mknod" not in files[UDEV_RULES].content
    gated = render(
        config(host + "  compute_gate: uvm\n" if host else "host:\n  compute_gate: uvm\n"),
        settings,
        nothing,
        ["devices"],
    ).files
    rules = gated[UDEV_RULES].content
    assert "mknod -m" in rules and "/proc/driver/nvidia/gpus/*/information" in rules
    assert "while read -r a b; do [ x$$b = xnvidia-uvm ]" in rules


def test_group_mode_without_the_group_leaves_modprobe_unwritten_and_says_why() -> None:
    rendering = render(
        config("host:\n  device_access: group\n  device_group: gpu\n"),
        DEFAULTS,
        nothing,
        ["devices"],
    )
    assert MODPROBE_CONF not in rendering.files
    assert "group 'gpu' does not exist" in rendering.problems[MODPROBE_CONF]


def test_a_missing_daemon_json_is_not_created_but_the_runtime_config_is() -> None:
    files = render(config(), DEFAULTS, nothing, ["docker"]).files
    assert list(files) == [NVIDIA_RUNTIME_TOML]
    assert tomllib.loads(files[NVIDIA_RUNTIME_TOML].content) == KEYS


def test_the_profile_script_names_the_run_dir_gate_group_and_socket() -> None:
    settings = HostSettings(Path("/c.yaml"), Path("/s"), Path("/tmp/my run"))
    text = (
        render(
            config("host:\n  gate_group: lab-docker\n"),
            settings,
            nothing,
            ["profile"],
        )
        .files["/etc/profile.d/ds01-host.sh"]
        .content
    )
    assert "done < '/tmp/my run/host-access'" in text
    assert "*\" lab-docker \"*) DOCKER_HOST='unix:///tmp/my run/docker.sock'" in text
    assert "nvidia-smi" not in text.replace("(nvidia-smi, NVML)", "")


# ---- host-access format ------------------------------------------------------------------------


def test_host_access_parse_matches_the_contract() -> None:
    parsed = hostaccess.parse(
        "# comment\nalice exempt 0\nbob grant 2000\ncarol grant 1000\n"
        "dave  grant 5\neve grant soon\nh.baker@lab.lan grant 0\n"
    )
    assert parsed.bad_lines == ((5, "dave  grant 5"), (6, "eve grant soon"))
    allowed = hostaccess.allowed_users(parsed, now=1500)
    assert sorted(allowed) == ["alice", "bob", "h.baker@lab.lan"]
    assert hostaccess.seed_text(["alice", "bad name"]).splitlines()[-1] == "alice exempt 0"


def test_the_unit_runs_the_given_ds01d_and_quotes_paths_with_spaces() -> None:
    settings = HostSettings(
        Path("/etc/ds01/my ds01.yaml"),
        Path("/var/lib/ds01"),
        Path("/run/ds01"),
        daemon=Path("/srv/lab tools/ds01/.venv/bin/ds01d"),
    )
    unit = render(config(), settings, nothing, ["systemd"]).files[SYSTEMD_UNIT].content
    execs = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    assert execs == [
        'ExecStart="/srv/lab tools/ds01/.venv/bin/ds01d" --config "/etc/ds01/my ds01.yaml" '
        "--state-dir /var/lib/ds01 --run-dir /run/ds01"
    ]
