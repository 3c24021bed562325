"""The simulated backend: shipped machines, deterministic UUIDs, driving it through its file,
and the errors an invalid machine file gives."""

from __future__ import annotations

import filecmp
import os
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import pytest

from ds01.errors import MachineFileError
from ds01.inventory.backend import InventoryBackend
from ds01.inventory.sim import (
    SimBackend,
    add_process,
    clear_processes,
    load_machine,
    resolve_machine,
    set_utilization,
    shipped_machines,
)
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import UnitKind

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples" / "machines"


def copy_of(name: str, tmp_path: Path) -> Path:
    dest = tmp_path / f"{name}.yaml"
    shutil.copyfile(EXAMPLES / f"{name}.yaml", dest)
    return dest


def write(tmp_path: Path, text: str, name: str = "machine.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Shipped machines: counted by hand from the layouts in the files.


@pytest.mark.parametrize(
    ("name", "gpus", "units", "mig_units", "total_gpueq"),
    [
        pytest.param("4xA100-40GB", 4, 4, 0, Fraction(4), id="four whole A100s are 4 gpueq"),
        pytest.param(
            "8xH100-mig-mixed",
            8,
            19,  # 4 whole + 7 + 4 + 2 + 2
            15,
            Fraction(55, 7),  # 4 + 7/7 + 7/7 + 7/7 + 6/7
            id="8 H100s with four MIG layouts are 19 units and 55/7 gpueq",
        ),
        pytest.param(
            "2xH200-mig",
            2,
            7,
            7,
            Fraction(2),
            id="two fully partitioned H200s are 7 units and exactly 2 gpueq",
        ),
    ],
)
def test_shipped_machine_has_units_and_gpueq(
    name: str, gpus: int, units: int, mig_units: int, total_gpueq: Fraction
) -> None:
    sample = SimBackend(EXAMPLES / f"{name}.yaml").sample()
    got = sample.units()
    assert len(sample.gpus) == gpus
    assert len(got) == units
    assert sum(1 for u in got if u.kind is UnitKind.MIG) == mig_units
    assert GpuEq.total(u.gpueq for u in got) == GpuEq(total_gpueq)


def test_h200_compute_instances_weigh_their_compute_slices() -> None:
    units = load_machine(EXAMPLES / "2xH200-mig.yaml").units()
    assert [(u.gpu_index, u.profile, u.gpueq.fraction, u.memory_total_mib) for u in units] == [
        (0, "1c.3g.71gb", Fraction(1, 7), 71424),
        (0, "2c.3g.71gb", Fraction(2, 7), 71424),
        (0, "2g.35gb", Fraction(2, 7), 33280),
        (0, "1g.18gb", Fraction(1, 7), 16384),
        (0, "1g.18gb", Fraction(1, 7), 16384),
        (1, "4g.71gb", Fraction(4, 7), 71424),
        (1, "3g.71gb", Fraction(3, 7), 71424),
    ]
    assert [(u.gpu_instance_id, u.compute_instance_id) for u in units[:2]] == [(2, 0), (2, 1)]


def test_a100_machine_keeps_topology_and_metrics() -> None:
    sample = load_machine(EXAMPLES / "4xA100-40GB.yaml")
    assert [(g.numa_node, g.nvlink_group) for g in sample.gpus] == [
        (0, "nvl-0-1"),
        (0, "nvl-0-1"),
        (1, "nvl-2-3"),
        (1, "nvl-2-3"),
    ]
    gpu1 = sample.gpus[1]
    assert (gpu1.utilization_pct, gpu1.temperature_c, gpu1.power_w) == (87, 58, 312.5)
    assert gpu1.memory_used_mib == 30720  # from its one process: the file gives no override
    assert gpu1.mig_enabled is False
    assert sample.driver_version == "550.127.08"


def test_mig_gpus_report_no_utilization() -> None:
    sample = load_machine(EXAMPLES / "8xH100-mig-mixed.yaml")
    assert [g.utilization_pct for g in sample.gpus[4:]] == [None, None, None, None]


def test_shipped_package_copies_match_the_examples() -> None:
    shipped = shipped_machines()
    assert sorted(shipped) == ["2xH200-mig", "4xA100-40GB", "8xH100-mig-mixed"]
    for name, path in shipped.items():
        assert filecmp.cmp(path, EXAMPLES / f"{name}.yaml", shallow=False), name


def test_sim_backend_is_an_inventory_backend() -> None:
    backend = SimBackend(EXAMPLES / "4xA100-40GB.yaml")
    assert isinstance(backend, InventoryBackend)
    assert backend.name == "sim"
    sample = backend.sample()
    assert sample.taken_at is not None
    assert sample.source == f"sim:{EXAMPLES / '4xA100-40GB.yaml'}"


# ---------------------------------------------------------------------------------------------
# UUIDs.


def test_generated_uuids_are_the_same_on_every_load() -> None:
    path = EXAMPLES / "8xH100-mig-mixed.yaml"
    first = [u.uuid for u in SimBackend(path).sample().units()]
    second = [u.uuid for u in SimBackend(path).sample().units()]
    assert first == second
    assert len(set(first)) == 19


def test_generated_uuids_are_pinned() -> None:
    # Pinned: a change to the derivation would give every simulated unit a new UUID and
    # orphan allocations made against it.
    a100 = load_machine(EXAMPLES / "4xA100-40GB.yaml")
    assert a100.gpus[0].uuid == "GPU-812eb0f5-109b-58d5-9497-28231dc90498"
    h100 = load_machine(EXAMPLES / "8xH100-mig-mixed.yaml")
    assert h100.gpus[5].mig_devices[0].uuid == "MIG-d1272780-da7d-5f65-93d3-63a101f36a8b"


def test_mig_uuid_survives_removing_another_mig_device(tmp_path: Path) -> None:
    text = """\
machine: lab
gpus:
  - name: NVIDIA H100 80GB HBM3
    memory_mib: 81559
    mig_enabled: true
    mig_devices:
      - {profile: 3g.40gb, gpu_instance_id: 2}
      - {profile: 2g.20gb, gpu_instance_id: 3}
"""
    path = write(tmp_path, text)
    before = {m.profile: m.uuid for m in load_machine(path).gpus[0].mig_devices}
    path.write_text(text.replace("      - {profile: 3g.40gb, gpu_instance_id: 2}\n", ""))
    after = {m.profile: m.uuid for m in load_machine(path).gpus[0].mig_devices}
    assert after == {"2g.20gb": before["2g.20gb"]}


def test_explicit_uuids_are_used_as_given(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
machine: lab
gpus:
  - name: NVIDIA A30
    memory_mib: 24576
    uuid: GPU-05aa99be-b706-0dc1-ab62-dd12f2227b7d
    mig_enabled: true
    mig_devices:
      - profile: 1c.2g.12gb
        gpu_instance_id: 1
        uuid: MIG-54cc2421-6f2d-59e9-b074-20707aadd71e
""",
    )
    gpu = load_machine(path).gpus[0]
    assert gpu.uuid == "GPU-05aa99be-b706-0dc1-ab62-dd12f2227b7d"
    assert gpu.mig_devices[0].uuid == "MIG-54cc2421-6f2d-59e9-b074-20707aadd71e"
    assert gpu.mig_devices[0].gpueq == GpuEq.of(1, 4)  # 1 compute slice of an A30's 4


def test_mig_memory_defaults_to_the_profile_label(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
machine: lab
gpus:
  - {name: NVIDIA H100 80GB HBM3, memory_mib: 81559, mig_enabled: true,
     mig_devices: [{profile: 3g.40gb}, {profile: 1g.10gb, memory_mib: 9984}]}
""",
    )
    migs = load_machine(path).gpus[0].mig_devices
    assert [(m.memory_total_mib, m.gpu_instance_id) for m in migs] == [(40960, 1), (9984, 2)]


def test_a_process_may_name_its_gpu_by_an_unquoted_index(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "machine: lab\ngpus:\n  - {name: NVIDIA A30, memory_mib: 24576}\n"
        "processes:\n  - {pid: 7, unit: 0}\n",
    )
    sample = load_machine(path)
    assert [(p.pid, p.unit_uuid) for p in sample.processes] == [(7, sample.gpus[0].uuid)]
    assert sample.processes[0].used_memory_mib is None  # not given: unknown, not 0
    assert sample.gpus[0].memory_used_mib is None  # a sum with an unknown part is unknown


# ---------------------------------------------------------------------------------------------
# Driving a running simulation through its file.


def test_utilization_set_through_the_file_is_seen_by_the_next_sample(tmp_path: Path) -> None:
    path = copy_of("4xA100-40GB", tmp_path)
    backend = SimBackend(path)
    assert backend.sample().gpus[0].utilization_pct == 0
    set_utilization(path, "0", 80)
    assert backend.sample().gpus[0].utilization_pct == 80
    set_utilization(path, backend.sample().gpus[2].uuid, 12.5)
    assert backend.sample().gpus[2].utilization_pct == 12.5
    set_utilization(path, "0", None)
    assert backend.sample().gpus[0].utilization_pct is None


def test_processes_added_and_cleared_are_seen_by_the_next_sample(tmp_path: Path) -> None:
    path = copy_of("8xH100-mig-mixed", tmp_path)
    backend = SimBackend(path)
    before = backend.sample()
    mig = before.gpus[6].mig_devices[1]  # the 3g.40gb next to the 4g.40gb
    add_process(path, 4242, mig.uuid, 2048, "train.py")
    after = backend.sample()
    added = [p for p in after.processes if p.pid == 4242]
    assert [(p.gpu_uuid, p.unit_uuid, p.used_memory_mib, p.name) for p in added] == [
        (before.gpus[6].uuid, mig.uuid, 2048, "train.py")
    ]
    assert after.gpus[6].mig_devices[1].memory_used_mib == 2048

    clear_processes(path, "5")  # GPU 5 and its MIG devices: the two on 5/0
    assert sorted(p.pid for p in backend.sample().processes) == [4242, 70211]
    clear_processes(path)
    assert backend.sample().processes == ()


def test_a_plain_rewrite_by_another_writer_is_seen(tmp_path: Path) -> None:
    path = copy_of("4xA100-40GB", tmp_path)
    backend = SimBackend(path)
    assert backend.sample().gpus[3].utilization_pct == 3
    # Not atomic, same inode: the size change is what gives it away.
    path.write_text(path.read_text().replace("utilization_pct: 3\n", "utilization_pct: 99.5\n"))
    assert backend.sample().gpus[3].utilization_pct == 99.5


def test_a_file_that_turns_invalid_refuses_the_sample_until_fixed(tmp_path: Path) -> None:
    path = copy_of("4xA100-40GB", tmp_path)
    backend = SimBackend(path)
    good = path.read_text()
    path.write_text(good + "colour: blue\n")
    with pytest.raises(MachineFileError, match="unknown key 'colour'"):
        backend.sample()
    path.write_text(good)
    assert len(backend.sample().gpus) == 4


def test_edits_keep_the_file_mode_and_leave_no_temp_files(tmp_path: Path) -> None:
    path = copy_of("4xA100-40GB", tmp_path)
    os.chmod(path, 0o640)
    set_utilization(path, "1", 5)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".4xA100-40GB.yaml.lock",
        "4xA100-40GB.yaml",
    ]


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        pytest.param(
            lambda p: set_utilization(p, "4/0", 50),
            "NVML reports no utilization there",
            id="utilization cannot be set on a MIG device",
        ),
        pytest.param(
            lambda p: set_utilization(p, "9", 50),
            "no GPU or MIG device '9'",
            id="an unknown unit is named in the error",
        ),
        pytest.param(
            lambda p: set_utilization(p, "0", 150),
            "utilization 150 is not between 0 and 100",
            id="utilization above 100 is refused",
        ),
        pytest.param(
            lambda p: add_process(p, 1, "5", 10, "x"),
            "GPU 5 has MIG enabled",
            id="a process cannot run on the parent of MIG devices",
        ),
    ],
)
def test_invalid_edits_are_refused_and_leave_the_file_alone(
    tmp_path: Path, edit: Callable[[Path], object], message: str
) -> None:
    path = copy_of("8xH100-mig-mixed", tmp_path)
    before = path.read_bytes()
    with pytest.raises(MachineFileError, match=message):
        edit(path)
    assert path.read_bytes() == before


def test_shipped_machines_are_not_edited_in_place() -> None:
    with pytest.raises(MachineFileError, match="is a machine shipped with ds01") as err:
        set_utilization(resolve_machine("4xA100-40GB"), "0", 1)
    assert err.value.fix == "Copy it first: ds01 gpu sim copy 4xA100-40GB ./4xA100-40GB.yaml"


# ---------------------------------------------------------------------------------------------
# Resolving --sim arguments.


def test_a_bare_name_resolves_to_a_shipped_machine() -> None:
    assert resolve_machine("2xH200-mig") == shipped_machines()["2xH200-mig"]


def test_a_path_resolves_to_itself(tmp_path: Path) -> None:
    path = copy_of("2xH200-mig", tmp_path)
    assert resolve_machine(str(path)) == path


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        pytest.param("8xB200", "no machine file or shipped machine named '8xB200'", id="bad name"),
        pytest.param("missing.yaml", "does not exist", id="missing file"),
    ],
)
def test_unknown_machines_are_refused(ref: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(MachineFileError, match=message):
        resolve_machine(ref, tmp_path)


# ---------------------------------------------------------------------------------------------
# Invalid machine files: each names the file, the line and the key.

H100 = "  - name: NVIDIA H100 80GB HBM3\n    memory_mib: 81559\n"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    colour: green\n",
            ":5: gpus[0].colour: unknown key 'colour'",
            id="an unknown key is refused with its line",
        ),
        pytest.param(
            "machine: m\ngpus:\n  - memory_mib: 1\n",
            ":3: gpus[0].name: missing key 'name'",
            id="a missing key is named",
        ),
        pytest.param(
            "gpus:\n" + H100,
            ":1: machine: missing key 'machine'",
            id="the machine name that seeds UUIDs is required",
        ),
        pytest.param(
            "machine: m\ngpus:\n  - name: X\n    memory_mib: lots\n",
            ":4: gpus[0].memory_mib: Input should be a valid integer",
            id="a number given as words is refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    utilization_pct: 120\n",
            ":5: gpus[0].utilization_pct: Input should be less than or equal to 100",
            id="utilization above 100 is refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_enabled: true\n"
            "    mig_devices:\n      - profile: 3g.banana\n",
            ":7: gpus[0].mig_devices[0].profile: '3g.banana' is not a MIG profile name: "
            "MIG profiles are written [Nc.]Ng.NNgb with an optional +me, +me.all, +gfx or -me,"
            " such as 3g.40gb, 1c.3g.71gb or 1g.10gb+me.",
            id="a garbled profile is refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_devices:\n      - profile: 3g.40gb\n",
            ":5: gpus[0].mig_devices: MIG devices listed but mig_enabled is not true",
            id="MIG devices on a GPU with MIG off are refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_enabled: true\n    mig_devices:\n"
            "      - {profile: 4g.40gb}\n      - {profile: 4g.40gb}\n",
            ":8: gpus[0].mig_devices[1]: the MIG devices use 8 slices; "
            "a 'NVIDIA H100 80GB HBM3' has 7",
            id="more MIG slices than the GPU has are refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_enabled: true\n    mig_devices:\n"
            "      - {profile: 1c.3g.40gb}\n",
            ":7: gpus[0].mig_devices[0]: '1c.3g.40gb' is a compute instance: give gpu_instance_id",
            id="a compute instance must name its GPU instance",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_enabled: true\n    mig_devices:\n"
            "      - {profile: 3g.40gb, gpu_instance_id: 2}\n"
            "      - {profile: 1c.3g.40gb, gpu_instance_id: 2, compute_instance_id: 1}\n",
            ":8: gpus[0].mig_devices[1]: GPU instance 2 (3g.40gb) has only 3 compute slices",
            id="compute instances cannot exceed their GPU instance",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "    mig_enabled: true\n    utilization_pct: 5\n",
            ":6: gpus[0].utilization_pct: NVML reports no utilization for a GPU with MIG",
            id="utilization on a MIG GPU is refused, as NVML gives none",
        ),
        pytest.param(
            "machine: m\ngpus:\n  - {name: NVIDIA L40S, memory_mib: 46068, mig_enabled: true,"
            " mig_devices: [{profile: 1g.10gb}]}\n",
            ":3: gpus[0].name: ds01 does not know how many MIG slices a 'NVIDIA L40S' has",
            id="MIG on an unknown model needs mig_slices",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "  - {name: X, memory_mib: 1, index: 0}\n",
            ":5: gpus[1].index: GPU index 0 is used twice",
            id="GPU indices are unique",
        ),
        pytest.param(
            "machine: m\ngpus:\n" + H100 + "processes:\n  - {pid: 1, unit: GPU-nope}\n",
            ":6: processes[0].unit: no GPU or MIG device 'GPU-nope' on machine 'm'",
            id="a process on an unknown unit is refused",
        ),
        pytest.param(
            "machine: m\ngpus:\n  - name: [unclosed\n",
            ":4: expected ',' or ']', but got '<stream end>' "
            "(while parsing a flow sequence that starts on line 3)",
            id="YAML syntax errors give a line",
        ),
        pytest.param(
            "- just\n- a list\n",
            ": a machine file is a mapping with 'machine' and 'gpus'",
            id="a file that is not a mapping is refused",
        ),
    ],
)
def test_invalid_machine_file_names_file_line_and_key(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(MachineFileError) as err:
        SimBackend(path)
    assert err.value.what.startswith(f"{path}{expected}"), err.value.what
    assert err.value.exit_code == 2
