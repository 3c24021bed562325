"""The plain `nvidia-smi` table: wide (535, 590) and old 79-column (450) layouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    SmiMigDevice,
    SmiProcess,
    parse_capture,
    parse_table,
    read_capture_text,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
VARIANTS = FIXTURES / "variants"
H100_590 = FIXTURES / "table-1xH100-80GB-HBM3-mig-4devices-3processes-driver590.txt"
H200_590 = FIXTURES / "table-1xH200-mig-5devices-idle-driver590.txt"
H100X8_535 = FIXTURES / "table-8xH100-80GB-HBM3-all-mig-32devices-driver535.txt"
A100_450 = FIXTURES / "table-1xA100-SXM4-40GB-mig-enabled-no-devices-driver450.txt"
A100_450_WITH_DEVICES = VARIANTS / "table-1xA100-SXM4-40GB-driver450-2x3g-devices-1process.txt"


def mig(dev: int, gi: int, ci: int, used: int, total: int, sms: int) -> SmiMigDevice:
    return SmiMigDevice(
        index=dev,
        gpu_instance_id=gi,
        compute_instance_id=ci,
        memory_used_mib=used,
        memory_total_mib=total,
        sm_count=sms,
    )


def test_wide_table_under_load_reads_gpu_mig_devices_and_processes() -> None:
    capture = parse_table(read_capture_text(H100_590), "t.txt")

    assert capture.driver_version == "590.48.01"
    assert capture.timestamp == "Tue Jul 14 09:00:43 2026"
    gpu = capture.gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name, gpu.pci_bus_id) == (
        0,
        None,
        "NVIDIA H100 80GB HBM3",
        "00000000:00:09.0",
    )
    assert (gpu.memory_used_mib, gpu.memory_total_mib, gpu.mig_enabled) == (11125, 81559, True)
    assert (gpu.temperature_c, gpu.power_w, gpu.utilization_pct) == (52.0, 432.0, None)
    assert gpu.mig_devices == (
        mig(0, 2, 0, 11091, 40448, 60),
        mig(1, 3, 0, 17, 20096, 32),
        mig(2, 9, 0, 9, 9984, 16),
        mig(3, 10, 0, 9, 9984, 16),
    )
    assert capture.processes == (
        SmiProcess(21180, None, 0, None, 2, 0, 2296, "/root/tools/memhog", "C"),
        SmiProcess(21181, None, 0, None, 2, 0, 1272, "/root/tools/memhog", "C"),
        SmiProcess(21198, None, 0, None, 2, 0, 7484, "./gpu_burn", "C"),
    )


def test_wide_table_with_two_compute_instances_in_one_gpu_instance() -> None:
    capture = parse_table(read_capture_text(H200_590), "t.txt")

    gpu = capture.gpus[0]
    assert (gpu.name, gpu.memory_total_mib, gpu.pci_bus_id) == (
        "NVIDIA H200",
        143771,
        "00000000:83:00.0",
    )
    assert gpu.mig_devices == (
        mig(0, 2, 0, 22, 71424, 16),
        mig(1, 2, 1, 22, 71424, 32),
        mig(2, 3, 0, 17, 33280, 32),
        mig(3, 9, 0, 9, 16384, 16),
        mig(4, 10, 0, 9, 16384, 16),
    )
    assert capture.processes == ()


def test_eight_gpu_table_without_memory_totals_assigns_32_mig_devices_to_their_gpus() -> None:
    capture = parse_table(read_capture_text(H100X8_535), "t.txt")

    assert capture.driver_version == "535.104.12"
    assert capture.timestamp is None
    assert [g.pci_bus_id for g in capture.gpus] == [
        "00000000:1B:00.0",
        "00000000:43:00.0",
        "00000000:52:00.0",
        "00000000:61:00.0",
        "00000000:9D:00.0",
        "00000000:C3:00.0",
        "00000000:D1:00.0",
        "00000000:DF:00.0",
    ]
    assert {(g.memory_total_mib, g.memory_used_mib, g.mig_enabled) for g in capture.gpus} == {
        (None, None, True)
    }
    assert [[m.gpu_instance_id for m in g.mig_devices] for g in capture.gpus] == [
        [2, 3, 9, 10],
        [2, 3, 9, 10],
        [2, 3, 9, 10],
        [2, 3, 9, 10],
        [1, 5, 13, 14],
        [1, 5, 13, 14],
        [2, 3, 9, 10],
        [2, 3, 9, 10],
    ]
    assert [g.temperature_c for g in capture.gpus] == [25, 26, 31, 29, 26, 25, 29, 31]


def test_old_layout_with_mig_enabled_and_no_devices() -> None:
    capture = parse_table(read_capture_text(A100_450), "t.txt")

    gpu = capture.gpus[0]
    assert (gpu.index, gpu.name, gpu.pci_bus_id, gpu.mig_enabled) == (
        0,
        "A100-SXM4-40GB",
        "00000000:00:04.0",
        True,
    )
    assert (gpu.memory_used_mib, gpu.memory_total_mib) == (0, 40537)
    assert (gpu.temperature_c, gpu.power_w) == (32.0, 43.0)
    assert gpu.mig_devices == ()
    assert capture.driver_version == "450.80.02"
    assert capture.processes == ()


def test_old_layout_with_mig_devices_and_a_process() -> None:
    capture = parse_table(read_capture_text(A100_450_WITH_DEVICES), "t.txt")

    assert capture.gpus[0].mig_devices == (
        mig(0, 1, 0, 4313, 20096, 42),
        mig(1, 2, 0, 3, 20096, 42),
    )
    assert capture.processes == (SmiProcess(23417, None, 0, None, 1, 0, 4301, "python", "C"),)


def test_crlf_table_parses_like_the_original() -> None:
    crlf = parse_table(
        read_capture_text(VARIANTS / "table-1xH100-80GB-HBM3-mig-4devices-3processes-crlf.txt"),
        "t.txt",
    )

    assert crlf == parse_table(read_capture_text(H100_590), "t.txt")


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(H100_590, id="the wide table of one H100"),
        pytest.param(H100X8_535, id="the wide table of eight H100s"),
        pytest.param(A100_450, id="the old 79-column table"),
    ],
)
def test_a_table_alone_is_refused_as_an_inventory_in_one_line(path: Path) -> None:
    with pytest.raises(CaptureError) as err:
        parse_capture(read_capture_text(path), "table.txt").to_sample()

    assert str(err.value) == (
        "table.txt: GPU 0 cannot be keyed: plain nvidia-smi tables carry no GPU UUIDs"
    )
    assert err.value.fix is not None and "nvidia-smi -L" in err.value.fix


def test_old_layout_process_without_gi_ci_columns() -> None:
    text = read_capture_text(A100_450_WITH_DEVICES)
    text = text.replace(
        "|  GPU   GI   CI        PID   Type   Process name                  GPU Memory |\n"
        "|        ID   ID                                                   Usage      |",
        "|  GPU       PID   Type   Process name                             Usage      |",
    ).replace(
        "|    0    1    0      23417      C   python                           4301MiB |",
        "|    0      23417      C   python                                     4301MiB |",
    )

    assert parse_table(text, "t.txt").processes == (
        SmiProcess(23417, None, 0, None, None, None, 4301, "python", "C"),
    )


@pytest.mark.parametrize(
    ("cut", "message"),
    [
        pytest.param(
            "|  0    3   0   1  |              17MiB / 200",
            "t.txt: line 24: not a table row: '|  0    3   0   1  |              17MiB / 200'",
            id="a table cut mid-row names the line",
        ),
        pytest.param(
            "21181      C   /root/tools/memhog                     1272MiB |\n",
            "t.txt: truncated table: section 'Processes:' does not end with a '+---+' rule",
            id="a table cut at a line end is still seen as cut",
        ),
    ],
)
def test_truncated_tables_are_refused(cut: str, message: str) -> None:
    text = read_capture_text(H100_590)
    text = text[: text.index(cut) + len(cut)]

    with pytest.raises(CaptureError) as err:
        parse_table(text, "t.txt")

    assert str(err.value) == message


def test_process_row_with_unknown_type_is_refused() -> None:
    text = read_capture_text(H100_590).replace("21180      C ", "21180      X ")

    with pytest.raises(CaptureError, match=r"^t\.txt: line 39: cannot read the process row"):
        parse_table(text, "t.txt")
