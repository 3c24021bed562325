"""`--query-gpu` and `--query-compute-apps` CSV captures: header names, units, unknown markers."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    SmiGpu,
    SmiProcess,
    merge_captures,
    parse_capture,
    parse_compute_apps,
    parse_query_gpu,
    read_capture_text,
)
from ds01.model.inventory import GpuProcess

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
VARIANTS = FIXTURES / "variants"
QUERY_GPU = FIXTURES / "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-driver590.csv"
COMPUTE_APPS = FIXTURES / "csv-query-compute-apps-1xH100-80GB-HBM3-mig-3procs-driver590.csv"
MASKED = "GPU-00000000-0000-0000-0000-000000000000"

H100_ROW = SmiGpu(
    index=0,
    uuid=MASKED,
    name="NVIDIA H100 80GB HBM3",
    pci_bus_id="00000000:00:09.0",
    memory_total_mib=81559,
    memory_used_mib=11125,
    mig_enabled=True,
    mig_devices=(),
    lists_mig_devices=False,
    utilization_pct=None,  # '[N/A]': MIG GPUs report no utilization
    temperature_c=53.0,
    power_w=433.78,  # power.draw, not power.draw.instant (447.35)
)


@pytest.mark.parametrize(
    "path",
    [
        pytest.param(QUERY_GPU, id="the real all-fields capture with units"),
        pytest.param(
            VARIANTS / "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-nounits.csv",
            id="the same capture taken with nounits",
        ),
        pytest.param(
            VARIANTS / "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-crlf.csv",
            id="the same capture with CRLF line ends",
        ),
    ],
)
def test_query_gpu_capture_finds_columns_by_header_name(path: Path) -> None:
    capture = parse_query_gpu(read_capture_text(path), path.name)

    assert capture.gpus == (H100_ROW,)
    assert capture.driver_version == "590.48.01"
    assert capture.timestamp == "2026/07/14 09:00:44.579"


def test_query_gpu_sample_of_a_mig_gpu_warns_that_its_units_are_not_listed() -> None:
    sample = parse_query_gpu(read_capture_text(QUERY_GPU), "q.csv").to_sample()

    assert [(g.uuid, g.mig_enabled) for g in sample.gpus] == [(MASKED, True)]
    assert sample.units() == []
    assert sample.warnings == (
        "GPU 0: MIG is enabled but this capture cannot list MIG devices; "
        "add an 'nvidia-smi -L' capture",
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(
            "index, uuid, name, memory.total [MiB], power.draw.instant [W]\n"
            f"3, {MASKED}, NVIDIA A100-SXM4-80GB, 81920 MiB, 61.50 W\n",
            SmiGpu(
                index=3,
                uuid=MASKED,
                name="NVIDIA A100-SXM4-80GB",
                memory_total_mib=81920,
                lists_mig_devices=False,
                power_w=61.5,
            ),
            id="instant power is used when it is the only power column",
        ),
        pytest.param(
            "name, gpu_uuid, index, gpu_bus_id, mig.mode.current\n"
            f"Tesla T4, {MASKED}, 1, 00000000:3B:00.0, [N/A]\n",
            SmiGpu(
                index=1,
                uuid=MASKED,
                name="Tesla T4",
                pci_bus_id="00000000:3B:00.0",
                lists_mig_devices=False,
            ),
            id="alias names and any column order work",
        ),
        pytest.param(
            "index, uuid, name, memory.used, utilization.gpu, temperature.gpu, power.draw\n"
            f"0, {MASKED}, X, [Not Supported], , [Unknown Error], [Insufficient Permissions]\n",
            SmiGpu(index=0, uuid=MASKED, name="X", lists_mig_devices=False),
            id="bracketed markers and empty cells are unknown",
        ),
        pytest.param(
            f"index, uuid, name, mig.mode.current\n0, {MASKED}, X, Disabled\n",
            SmiGpu(index=0, uuid=MASKED, name="X", mig_enabled=False, lists_mig_devices=False),
            id="MIG disabled is false, not unknown",
        ),
    ],
)
def test_query_gpu_rows(text: str, expected: SmiGpu) -> None:
    assert parse_query_gpu(text, "q.csv").gpus == (expected,)


def test_compute_apps_capture_lists_processes_on_the_parent_gpu() -> None:
    capture = parse_compute_apps(read_capture_text(COMPUTE_APPS), "apps.csv")

    assert capture.gpus == ()
    assert capture.timestamp == "2026/07/14 09:00:44.742"
    assert capture.processes == (
        SmiProcess(
            21180, MASKED, None, "00000000:00:09.0", None, None, 2296, "/root/tools/memhog", "C"
        ),
        SmiProcess(
            21181, MASKED, None, "00000000:00:09.0", None, None, 1272, "/root/tools/memhog", "C"
        ),
        SmiProcess(21198, MASKED, None, "00000000:00:09.0", None, None, 7484, "./gpu_burn", "C"),
    )


def test_compute_apps_sample_has_no_gpus_and_unknown_units() -> None:
    sample = parse_compute_apps(read_capture_text(COMPUTE_APPS), "apps.csv").to_sample()

    assert sample.gpus == ()
    assert sample.processes[2] == GpuProcess(
        pid=21198, gpu_uuid=MASKED, used_memory_mib=7484, name="./gpu_burn", unit_uuid=None
    )


def test_compute_apps_with_only_a_header_means_no_processes() -> None:
    capture = parse_compute_apps("pid, process_name, gpu_uuid, used_memory [MiB]\n", "apps.csv")

    assert capture.processes == ()


def test_noheader_capture_is_refused_with_a_hint() -> None:
    path = VARIANTS / "csv-query-compute-apps-1xH100-noheader.csv"

    with pytest.raises(CaptureError) as err:
        parse_capture(read_capture_text(path), "apps.csv")

    assert str(err.value) == (
        "apps.csv: CSV without a recognised header line (--format=csv,noheader?): "
        "columns cannot be identified"
    )
    assert err.value.fix == "Capture again with --format=csv (the header names each column)."


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            f"index, uuid, name\n0, {MASKED}\n",
            "q.csv: line 2: 2 cells, the header has 3",
            id="a short row is refused",
        ),
        pytest.param(
            f"index, uuid, memory.total [MiB]\n0, {MASKED}, 80 GiB\n",
            "q.csv: row 2 memory: expected MiB, got '80 GiB'",
            id="a value in another unit is refused",
        ),
        pytest.param(
            "index, uuid\n0, GPU-xyz\n",
            "q.csv: row 2: not a GPU UUID: 'GPU-xyz'",
            id="a garbled UUID is refused",
        ),
        pytest.param(
            "index, uuid, name\n",
            "q.csv: the --query-gpu capture lists no GPUs (header only)",
            id="a header without rows is refused",
        ),
        pytest.param(
            f"index, uuid, mig.mode.current\n0, {MASKED}, Maybe\n",
            "q.csv: row 2 mig.mode: expected Enabled or Disabled, got 'Maybe'",
            id="an unknown MIG mode word is refused",
        ),
        pytest.param(
            f"index, uuid\n0, {MASKED}\n0, {MASKED}\n",
            "q.csv: a GPU index appears twice",
            id="a GPU index listed twice is refused",
        ),
    ],
)
def test_bad_query_gpu_captures_are_refused(text: str, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_query_gpu(text, "q.csv")

    assert str(err.value) == message


def test_query_gpu_without_a_uuid_column_cannot_become_a_sample() -> None:
    capture = parse_query_gpu("index, name\n0, Tesla T4\n", "q.csv")

    with pytest.raises(CaptureError) as err:
        capture.to_sample()

    assert str(err.value) == (
        "q.csv: GPU 0 cannot be keyed: this --query-gpu capture has no uuid column"
    )


# ---- --query-gpu without an index column: row order ------------------------------------------

H200_CSV = FIXTURES.parent / "h200" / "h200-driver580-query-gpu.csv"
PAIRS_WITH_XML_L = VARIANTS / "L-2xA100-SXM4-80GB-mig-on-gpu0-only-pairs-with-xml.txt"
ROW_ORDER_WARNING = (
    "this --query-gpu capture has no index column: GPU indices are assumed from row order "
    "(nvidia-smi prints GPUs in index order); add 'index' to --query-gpu to be sure"
)

# Mimics `nvidia-smi --query-gpu=uuid,name,memory.total,mig.mode.current,pci.bus_id --format=csv`
# on the 2x A100-80GB box of the variants (`-L` ...-pairs-with-xml.txt: same UUIDs, same order);
# the field list is that of the real H200 capture without `index`, the values are made up.
NO_INDEX_2X_A100 = (
    "uuid, name, memory.total [MiB], mig.mode.current, pci.bus_id\n"
    "GPU-513536b6-7d19-9063-b049-1e69664bb298, NVIDIA A100-SXM4-80GB, 81920 MiB, Enabled, "
    "00000000:10:00.0\n"
    "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90, NVIDIA A100-SXM4-80GB, 81920 MiB, Disabled, "
    "00000000:41:00.0\n"
)


def _without_index_column(text: str) -> str:
    """The real H200 capture as if taken without `index` in --query-gpu."""
    lines = text.splitlines()
    assert lines[0].startswith("index, ") and lines[1].startswith("0, ")
    return "\n".join(line.split(", ", 1)[1] for line in lines) + "\n"


def test_a_capture_without_index_is_read_in_row_order_with_a_warning() -> None:
    capture = parse_query_gpu(NO_INDEX_2X_A100, "q.csv")

    assert [(g.index, g.index_from_position, g.uuid[:12]) for g in capture.gpus] == [
        (0, True, "GPU-513536b6"),
        (1, True, "GPU-7d1c2e4a"),
    ]
    assert capture.warnings == (ROW_ORDER_WARNING,)
    sample = capture.to_sample()
    assert [u.uuid for u in sample.units()] == ["GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90"]
    assert sample.warnings == (
        ROW_ORDER_WARNING,
        "GPU 0: MIG is enabled but this capture cannot list MIG devices; "
        "add an 'nvidia-smi -L' capture",
    )


def test_the_real_h200_capture_without_its_index_column_reads_as_with_it() -> None:
    text = read_capture_text(H200_CSV)

    with_index = parse_query_gpu(text, "q.csv").to_sample()
    without = parse_query_gpu(_without_index_column(text), "q.csv").to_sample()

    assert without.gpus == with_index.gpus
    assert (with_index.warnings, without.warnings) == ((), (ROW_ORDER_WARNING,))


def test_merged_with_l_the_index_comes_from_the_listing() -> None:
    # Rows in the opposite order of the -L listing: -L knows the indices, rows only guess them.
    lines = NO_INDEX_2X_A100.splitlines()
    swapped = parse_query_gpu("\n".join([lines[0], lines[2], lines[1]]) + "\n", "q.csv")
    listing = parse_capture(read_capture_text(PAIRS_WITH_XML_L), "L.txt")

    merged = merge_captures([swapped, listing]).to_sample()

    assert [(g.index, g.uuid[:12], g.pci_bus_id) for g in merged.gpus] == [
        (0, "GPU-513536b6", "00000000:10:00.0"),
        (1, "GPU-7d1c2e4a", "00000000:41:00.0"),
    ]


def test_an_index_column_with_an_unknown_cell_is_still_refused() -> None:
    # The row-order fallback is for a missing column, not for a cell nvidia-smi could not fill.
    capture = parse_query_gpu(f"index, uuid, name\n[N/A], {MASKED}, X\n", "q.csv")

    with pytest.raises(CaptureError) as err:
        capture.to_sample()

    assert str(err.value) == f"q.csv: GPU {MASKED} has no index in this capture"
