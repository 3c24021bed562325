"""`ds01 gpu …` run as a real subprocess: exit codes, JSON fields, tables and error lines."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ds01.inventory.sim import SimBackend

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "machines"
DS01 = Path(sys.executable).with_name("ds01")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """The host's DS01_* settings removed; the config points at a file that does not exist,
    so nothing reads /etc/ds01; a wide terminal so table cells are not wrapped."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DS01_")}
    clean["DS01_CONFIG"] = str(tmp_path / "no-such-config.yaml")
    clean["DS01_RUN_DIR"] = str(tmp_path / "run")  # no daemon listens there
    clean["COLUMNS"] = "200"
    return clean


def ds01(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(DS01), *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def ds01_json(env: dict[str, str], *args: str) -> Any:
    result = ds01(env, *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _has_libnvidia_ml() -> bool:
    import ctypes

    try:
        ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return False
    return True


# ---------------------------------------------------------------------------------------------
# inventory --json: the documented shape.

GPU_FIELDS = {
    "index",
    "uuid",
    "name",
    "unit_name",  # '3'; null when MIG is on (its MIG devices are the units)
    "memory_total_mib",
    "mig_enabled",
    "mig_devices",
    "memory_used_mib",
    "utilization_pct",
    "temperature_c",
    "power_w",
    "energy_mj",
    "numa_node",
    "nvlink_group",
    "pci_bus_id",
}
MIG_FIELDS = {
    "uuid",
    "unit_name",  # '5/2.0', as every view names the unit
    "profile",
    "gpu_instance_id",
    "compute_instance_id",
    "memory_total_mib",
    "gpueq",
    "gpueq_exact",
    "index",
    "memory_used_mib",
}
PROCESS_FIELDS = {"pid", "gpu_uuid", "used_memory_mib", "name", "unit_uuid", "unit_name"}


def test_inventory_json_of_the_mixed_h100_machine(env: dict[str, str]) -> None:
    data = ds01_json(env, "gpu", "inventory", "--sim", "8xH100-mig-mixed", "--json")
    assert set(data) == {"gpus", "processes", "source", "taken_at", "driver_version", "warnings"}
    gpus = data["gpus"]
    assert [g["index"] for g in gpus] == [0, 1, 2, 3, 4, 5, 6, 7]
    assert all(set(g) == GPU_FIELDS for g in gpus)
    assert [g["mig_enabled"] for g in gpus] == [False] * 4 + [True] * 4
    gpu5 = gpus[5]
    assert all(set(m) == MIG_FIELDS for m in gpu5["mig_devices"])
    assert [
        (m["profile"], m["gpu_instance_id"], m["gpueq"], m["gpueq_exact"], m["memory_total_mib"])
        for m in gpu5["mig_devices"]
    ] == [
        ("3g.40gb", 2, 0.4286, "3/7", 40448),
        ("2g.20gb", 3, 0.2857, "2/7", 20096),
        ("1g.10gb", 9, 0.1429, "1/7", 9984),
        ("1g.10gb", 10, 0.1429, "1/7", 9984),
    ]
    assert gpu5["utilization_pct"] is None  # MIG on: unknown is null, not 0
    assert gpus[1]["utilization_pct"] == 94
    assert all(set(p) == PROCESS_FIELDS for p in data["processes"])
    assert [(p["pid"], p["used_memory_mib"], p["name"]) for p in data["processes"]] == [
        (70211, 71680, "python"),
        (70544, 11091, "python"),
        (70545, 2296, "python"),
    ]
    assert data["processes"][1]["unit_uuid"] == gpu5["mig_devices"][0]["uuid"]
    assert data["processes"][1]["gpu_uuid"] == gpu5["uuid"]


def test_inventory_table_lists_gpus_and_mig_devices(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "inventory", "--sim", "2xH200-mig")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:1] == ["0/2.1"] and "2c.3g.71gb" in line for line in lines)
    assert any(line.split()[:1] == ["91002"] and "52224 MiB" in line for line in lines)


def test_inventory_from_a_real_capture(env: dict[str, str]) -> None:
    capture = REPO / "tests" / "fixtures" / "nvidia-smi" / "L-1xH100-80GB-HBM3-mig-7x1g.10gb.txt"
    data = ds01_json(env, "gpu", "inventory", "--from", str(capture), "--json")
    assert [(g["name"], g["mig_enabled"]) for g in data["gpus"]] == [
        ("NVIDIA H100 80GB HBM3", True)
    ]
    migs = data["gpus"][0]["mig_devices"]
    assert [(m["profile"], m["gpueq_exact"]) for m in migs] == [("1g.10gb", "1/7")] * 7
    assert migs[0]["uuid"] == "MIG-3f6f389f-b0cc-5e5c-8e32-eaa8fd067902"
    assert migs[0]["memory_total_mib"] is None  # `nvidia-smi -L` does not say: null, not 0


# Captures ds01 reads with a warning instead of refusing (docs/inventory.md, "Captures").
FIXTURES = REPO / "tests" / "fixtures"
A100_MIG_XML = (
    FIXTURES / "nvidia-smi" / "xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml"
)
H200_Q = FIXTURES / "h200" / "h200-driver580-q.txt"
H200_CSV = FIXTURES / "h200" / "h200-driver580-query-gpu.csv"
ROW_ORDER = (
    "this --query-gpu capture has no index column: GPU indices are assumed from row order "
    "(nvidia-smi prints GPUs in index order); add 'index' to --query-gpu to be sure"
)
# Mimics the `nvidia-smi -q` of a MIG H200 on driver 610 (test_smi_querytext.py has the full
# variant and its source): one 'MIG Device' block, no MIG UUID. Cut to what ds01 reads.
MIG_Q = """
==============NVSMI LOG==============

Attached GPUs                                          : 1
GPU 00000000:83:00.0
    Product Name                                       : NVIDIA H200
    MIG Mode
        Current                                        : Enabled
    MIG Device
        Index                                          : 0
        GPU Instance ID                                : 2
        Compute Instance ID                            : 0
        Shared FB Memory Usage
            Total                                      : 71424 MiB
            Used                                       : 44 MiB
    GPU UUID                                           : GPU-00000000-0000-0000-0000-000000000000
    FB Memory Usage
        Total                                          : 143771 MiB
        Used                                           : 44 MiB
    Processes                                          : None
"""


def _warnings(stderr: str) -> list[str]:
    lines = stderr.splitlines()
    assert all(line.startswith("warning: ") for line in lines), stderr
    return [line.removeprefix("warning: ") for line in lines]


def test_inventory_from_an_xml_of_unnamed_mig_devices_lists_them_with_null_uuids(
    env: dict[str, str],
) -> None:
    result = ds01(env, "gpu", "inventory", "--from", str(A100_MIG_XML), "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    migs = data["gpus"][0]["mig_devices"]
    assert all(set(m) == MIG_FIELDS for m in migs)
    assert [(m["uuid"], m["gpu_instance_id"], m["compute_instance_id"]) for m in migs] == [
        (None, 3, 0),
        (None, 4, 0),
        (None, 5, 0),
        (None, 6, 0),
    ]
    assert {(m["gpueq"], m["gpueq_exact"], m["memory_total_mib"]) for m in migs} == {
        (None, None, 19968)
    }
    assert _warnings(result.stderr) == data["warnings"]
    assert data["warnings"][-1] == (
        "GPU 0: 4 MIG device(s) without a UUID in this capture (GI/CI 3/0, 4/0, 5/0, 6/0): "
        "listed with uuid null and not allocatable; 'nvidia-smi -L' names them: capture it at "
        "the same moment and pass it with another --from"
    )


def test_inventory_table_shows_unnamed_mig_devices_without_gpueq(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "inventory", "--from", str(A100_MIG_XML))

    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines() if line.split()[:1] == ["0/5.0"]]
    assert rows == [["0/5.0", "no", "UUID", "?", "2", "0.0", "/", "19.5", "–", "–"]]


def test_inventory_from_a_csv_without_index_warns_about_row_order(
    env: dict[str, str], tmp_path: Path
) -> None:
    lines = H200_CSV.read_text().splitlines()
    csv = tmp_path / "no-index.csv"
    csv.write_text("\n".join(line.split(", ", 1)[1] for line in lines) + "\n")

    result = ds01(env, "gpu", "inventory", "--from", str(csv), "--json")

    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert [(g["index"], g["uuid"]) for g in data["gpus"]] == [
        (0, "GPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830")
    ]
    assert _warnings(result.stderr) == data["warnings"] == [ROW_ORDER]


def test_inventory_from_q_text(env: dict[str, str], tmp_path: Path) -> None:
    real = ds01(env, "gpu", "inventory", "--from", str(H200_Q), "--json")
    mig = tmp_path / "mig-q.txt"
    mig.write_text(MIG_Q)
    with_mig = ds01(env, "gpu", "inventory", "--from", str(mig), "--json")

    assert (real.returncode, real.stderr) == (0, "")
    (gpu,) = json.loads(real.stdout)["gpus"]
    assert (gpu["uuid"], gpu["name"], gpu["memory_total_mib"], gpu["mig_enabled"]) == (
        "GPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830",
        "NVIDIA H200",
        143771,
        False,
    )
    assert with_mig.returncode == 0, with_mig.stderr
    (gpu,) = json.loads(with_mig.stdout)["gpus"]
    assert [
        (m["uuid"], m["gpu_instance_id"], m["memory_total_mib"]) for m in gpu["mig_devices"]
    ] == [(None, 2, 71424)]
    assert _warnings(with_mig.stderr) == [
        "GPU 0: 1 MIG device(s) without a UUID in this capture (GI/CI 2/0): listed with uuid "
        "null and not allocatable; 'nvidia-smi -L' names them: capture it at the same moment "
        "and pass it with another --from"
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            H200_Q.read_text().replace("GPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830", "GPU-a8c6ca6e"),
            "GPU 00000000:00:06.0 GPU UUID: not a GPU UUID: 'GPU-a8c6ca6e'",
            id="-q text with a cut UUID",
        ),
        pytest.param(
            "uuid, name\nGPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830, NVIDIA H200, 143771 MiB\n",
            "line 2: 3 cells, the header has 2",
            id="a CSV row longer than its header",
        ),
        pytest.param(
            A100_MIG_XML.read_text()[:5000],
            "truncated XML (no closing </nvidia_smi_log>) at line 117",
            id="a -q -x log cut short",
        ),
    ],
)
def test_inventory_from_a_malformed_capture_exits_2_naming_the_fault(
    env: dict[str, str], tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "capture"
    path.write_text(text)

    result = ds01(env, "gpu", "inventory", "--from", str(path), "--json")

    assert (result.returncode, result.stdout) == (2, "")
    assert result.stderr.splitlines()[0] == f"error: {path}: {message}"
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------------------------------------
# status.


def test_status_table_shows_units_and_unknown_utilization(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "status", "--sim", "8xH100-mig-mixed")
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines() if line.strip()}
    assert rows["1"][-3:] == ["94%", "1", "1"]  # util, gpueq, processes
    assert rows["5/2.0"][-3:] == ["–", "0.43", "2"]  # MIG: utilization unknown
    assert "19 units, 7.86 gpueq (55/7)" in result.stdout


def test_status_json_counts_units_and_exact_gpueq(env: dict[str, str]) -> None:
    data = ds01_json(env, "gpu", "status", "--sim", "2xH200-mig", "--json")
    assert data["total_gpueq"] == "2"
    assert [(u["label"], u["gpueq_exact"], u["process_count"]) for u in data["units"]] == [
        ("H200 1c.3g.71gb", "1/7", 0),
        ("H200 2c.3g.71gb", "2/7", 0),
        ("H200 2g.35gb", "2/7", 0),
        ("H200 1g.18gb", "1/7", 0),
        ("H200 1g.18gb", "1/7", 0),
        ("H200 4g.71gb", "4/7", 1),
        ("H200 3g.71gb", "3/7", 0),
    ]
    assert "holder" not in data["units"][0]  # the local view does not know allocations


def test_status_uses_the_config_when_no_sim_is_given(env: dict[str, str], tmp_path: Path) -> None:
    shutil.copyfile(EXAMPLES / "4xA100-40GB.yaml", tmp_path / "lab.yaml")
    config = tmp_path / "ds01.yaml"
    config.write_text("gpu:\n  backend: sim\n  sim_machine: lab.yaml\n")
    data = ds01_json(env, "--config", str(config), "gpu", "status", "--json")
    assert data["source"] == f"sim:{tmp_path / 'lab.yaml'}"
    assert len(data["units"]) == 4


# ---------------------------------------------------------------------------------------------
# Errors: one path, the right exit code, never a traceback.


def test_inventory_from_a_missing_capture_is_a_one_line_usage_error(
    env: dict[str, str], tmp_path: Path
) -> None:
    missing = tmp_path / "capture.txt"
    result = ds01(env, "gpu", "inventory", "--from", str(missing))
    assert result.returncode == 2
    assert result.stderr == f"error: --from {missing}: no such file\n"
    assert result.stdout == ""


def test_without_config_or_sim_ds01_refuses_to_guess(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "inventory")
    assert result.returncode == 2
    first = result.stderr.splitlines()[0]
    assert first == f"error: no GPU backend chosen: config file {env['DS01_CONFIG']} does not exist"
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        pytest.param(
            ("gpu", "status", "--sim", "8xB200"),
            "error: no machine file or shipped machine named '8xB200'",
            id="an unknown machine name",
        ),
        pytest.param(
            ("gpu", "inventory", "--sim", "4xA100-40GB", "--from", "x.txt"),
            "error: --from and --sim cannot be used together",
            id="two sources at once",
        ),
    ],
)
def test_bad_input_exits_2_with_one_error(
    env: dict[str, str], args: tuple[str, ...], first_line: str
) -> None:
    result = ds01(env, *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == first_line
    assert "Traceback" not in result.stderr


def test_status_without_a_daemon_says_so_before_reading_the_gpus(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "status")
    text = " ".join(result.stderr.split())  # Rich wraps long lines
    assert text.startswith(
        f"note: cannot reach ds01d at {env['DS01_RUN_DIR']}/api.sock; showing the GPUs without "
        "who holds them. error: no GPU backend chosen: config file "
        f"{env['DS01_CONFIG']} does not exist"
    )
    assert result.returncode == 2


def test_an_invalid_machine_file_names_its_line(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("machine: m\ngpus:\n  - name: X\n    memory_mib: 1\n    fans: 3\n")
    result = ds01(env, "gpu", "inventory", "--sim", str(bad))
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == f"error: {bad}:5: gpus[0].fans: unknown key 'fans'"


@pytest.mark.skipif(_has_libnvidia_ml(), reason="this machine has NVIDIA's library")
def test_nvml_backend_without_a_driver_says_so(env: dict[str, str], tmp_path: Path) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_text("gpu:\n  backend: nvml\n")
    result = ds01(env, "--config", str(config), "gpu", "inventory")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "error: NVML is not available: libnvidia-ml.so.1 not found",
        "  The NVIDIA driver is not installed on this machine "
        "(or its library is not on the loader path).",
        "  Install the NVIDIA driver (nvidia-smi should then work), "
        "or use --sim FILE for a simulated machine (e.g. --sim 4xA100-40GB).",
    ]


# ---------------------------------------------------------------------------------------------
# Driving a simulation from another process.


def test_sim_set_from_another_process_reaches_a_running_backend(
    env: dict[str, str], tmp_path: Path
) -> None:
    machine = tmp_path / "lab.yaml"
    copied = ds01(env, "gpu", "sim", "copy", "8xH100-mig-mixed", str(machine))
    assert copied.returncode == 0, copied.stderr
    backend = SimBackend(machine)  # as a daemon would hold it
    assert backend.sample().gpus[0].utilization_pct == 0

    result = ds01(
        env,
        "gpu",
        "sim",
        "set",
        str(machine),
        "--clear-processes",
        "--unit",
        "0",
        "--util",
        "80",
        "--add-process",
        "4242:6/1:2048:train.py",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "0 process(es) removed from 0",
        "process 4242 added on 6/1",
        f"GPU 0 ({backend.sample().gpus[0].uuid}): utilization 80.0",
    ]
    sample = backend.sample()
    assert sample.gpus[0].utilization_pct == 80
    mig = sample.gpus[6].mig_devices[1]
    assert [(p.pid, p.unit_uuid, p.used_memory_mib) for p in sample.processes if p.pid == 4242] == [
        (4242, mig.uuid, 2048)
    ]

    status = ds01_json(env, "gpu", "status", "--sim", str(machine), "--json")
    by_uuid = {u["uuid"]: u for u in status["units"]}
    assert by_uuid[mig.uuid]["process_count"] == 1
    assert by_uuid[sample.gpus[0].uuid]["utilization_pct"] == 80


@pytest.mark.parametrize(
    ("args", "first_line"),
    [
        pytest.param(
            ("--unit", "4/0", "--util", "50"),
            "error: 4/0 is a MIG device or on a MIG GPU: NVML reports no utilization there",
            id="utilization of a MIG device cannot be set",
        ),
        pytest.param(
            ("--util", "50"), "error: --util needs --unit", id="util without a unit is refused"
        ),
        pytest.param(
            ("--add-process", "abc:0"),
            "error: --add-process 'abc:0' is not PID:UNIT[:MiB[:name]]",
            id="a garbled process is refused",
        ),
        pytest.param((), "error: nothing to change", id="no change is refused"),
    ],
)
def test_sim_set_refuses_bad_changes(
    env: dict[str, str], tmp_path: Path, args: tuple[str, ...], first_line: str
) -> None:
    machine = tmp_path / "lab.yaml"
    shutil.copyfile(EXAMPLES / "8xH100-mig-mixed.yaml", machine)
    before = machine.read_bytes()
    result = ds01(env, "gpu", "sim", "set", str(machine), *args)
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == first_line
    assert machine.read_bytes() == before


def test_sim_list_names_the_shipped_machines(env: dict[str, str]) -> None:
    result = ds01(env, "gpu", "sim", "list")
    assert result.returncode == 0
    assert [line.split("\t")[:2] for line in result.stdout.splitlines()] == [
        ["2xH200-mig", "2 GPUs, 7 units"],
        ["4xA100-40GB", "4 GPUs, 4 units"],
        ["8xH100-mig-mixed", "8 GPUs, 19 units"],
    ]
