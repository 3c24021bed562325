"""Joining captures of one machine: a table or XML log completed by the `-L` listing."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import load_captures, merge_captures, parse_capture, read_capture_text
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import GpuProcess, MigDevice

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
VARIANTS = FIXTURES / "variants"
MASKED = "GPU-00000000-0000-0000-0000-000000000000"

# Four real captures of one MIG H100 (nvidia_gpu_exporter, 2026-07-14, driver 590.48.01).
H100_TABLE = FIXTURES / "table-1xH100-80GB-HBM3-mig-4devices-3processes-driver590.txt"
H100_LIST = FIXTURES / "L-1xH100-80GB-HBM3-mig-3g-2g-1g-1g-driver590-masked.txt"
H100_QUERY = FIXTURES / "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-driver590.csv"
H100_APPS = FIXTURES / "csv-query-compute-apps-1xH100-80GB-HBM3-mig-3procs-driver590.csv"
# Two real captures of one MIG H200 (same exporter, 2026-07-03).
H200_TABLE = FIXTURES / "table-1xH200-mig-5devices-idle-driver590.txt"
H200_LIST = FIXTURES / "L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt"
# A hand-made XML/-L pair of a box with MIG on GPU 0 only.
MIXED_XML = VARIANTS / "xml-2xA100-SXM4-80GB-mig-on-gpu0-only-v12.xml"
MIXED_LIST = VARIANTS / "L-2xA100-SXM4-80GB-mig-on-gpu0-only-pairs-with-xml.txt"


def mig_uuid(n: int) -> str:
    return f"MIG-0000000{n}-0000-0000-0000-00000000000{n}"


def test_table_listing_and_csvs_of_one_h100_make_a_complete_sample() -> None:
    sample = load_captures([H100_TABLE, H100_LIST, H100_QUERY, H100_APPS])

    gpu = sample.gpus[0]
    assert (gpu.uuid, gpu.pci_bus_id, gpu.memory_total_mib, gpu.mig_enabled) == (
        MASKED,
        "00000000:00:09.0",
        81559,
        True,
    )
    assert gpu.mig_devices == (
        MigDevice(mig_uuid(0), "3g.40gb", 2, 0, 40448, GpuEq.of(3, 7), 0, 11091),
        MigDevice(mig_uuid(1), "2g.20gb", 3, 0, 20096, GpuEq.of(2, 7), 1, 17),
        MigDevice(mig_uuid(2), "1g.10gb", 9, 0, 9984, GpuEq.of(1, 7), 2, 9),
        MigDevice(mig_uuid(3), "1g.10gb", 10, 0, 9984, GpuEq.of(1, 7), 3, 9),
    )
    # The table puts all three processes in GI 2 / CI 0: the 3g.40gb device.
    assert sample.processes == (
        GpuProcess(21180, MASKED, 2296, "/root/tools/memhog", mig_uuid(0)),
        GpuProcess(21181, MASKED, 1272, "/root/tools/memhog", mig_uuid(0)),
        GpuProcess(21198, MASKED, 7484, "./gpu_burn", mig_uuid(0)),
    )
    assert sample.driver_version == "590.48.01"
    assert sample.warnings == ()


def test_the_order_of_the_captures_does_not_change_units_or_processes() -> None:
    forward = load_captures([H100_TABLE, H100_LIST, H100_QUERY, H100_APPS])
    backward = load_captures([H100_APPS, H100_QUERY, H100_LIST, H100_TABLE])

    assert backward.units() == forward.units()
    assert backward.processes == forward.processes


def test_h200_table_and_listing_give_compute_instance_units_with_gi_and_ci() -> None:
    sample = load_captures([H200_TABLE, H200_LIST])

    assert [
        (u.uuid, u.profile, u.gpueq, u.gpu_instance_id, u.compute_instance_id, u.memory_total_mib)
        for u in sample.units()
    ] == [
        (mig_uuid(0), "1c.3g.71gb", GpuEq.of(1, 7), 2, 0, 71424),
        (mig_uuid(1), "2c.3g.71gb", GpuEq.of(2, 7), 2, 1, 71424),
        (mig_uuid(2), "2g.35gb", GpuEq.of(2, 7), 3, 0, 33280),
        (mig_uuid(3), "1g.18gb", GpuEq.of(1, 7), 9, 0, 16384),
        (mig_uuid(4), "1g.18gb", GpuEq.of(1, 7), 10, 0, 16384),
    ]


def test_xml_and_listing_of_a_mixed_box_put_each_process_on_its_unit() -> None:
    sample = load_captures([MIXED_XML, MIXED_LIST])

    assert [(u.uuid, u.gpueq) for u in sample.units()] == [
        ("MIG-1f3a9c27-5e4b-5d08-9a61-3c7e2b8d4f15", GpuEq.of(1, 7)),
        ("MIG-2b7e4d91-6c3a-5f12-8e45-7a9c1d3b6e28", GpuEq.of(1, 7)),
        ("MIG-3c8f5ea2-7d4b-5023-9f56-8bad2e4c7f39", GpuEq.of(1, 7)),
        ("MIG-4d906fb3-8e5c-5134-a067-9cbe3f5d804a", GpuEq.of(1, 7)),
        ("GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90", GpuEq(1)),
    ]
    assert [(p.pid, p.unit_uuid) for p in sample.processes] == [
        (41123, "MIG-1f3a9c27-5e4b-5d08-9a61-3c7e2b8d4f15"),
        (52210, "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90"),
    ]
    assert sample.gpus[0].mig_devices[0].memory_used_mib == 4364
    assert sample.warnings == ()


def test_a_cut_table_name_agrees_with_the_full_listing_name() -> None:
    table = parse_capture(
        read_capture_text(H200_TABLE).replace("NVIDIA H200        ", "NVIDIA H...         "),
        "t.txt",
    )
    listing = parse_capture(read_capture_text(H200_LIST), "L.txt")

    merged = merge_captures([table, listing])

    assert merged.gpus[0].name == "NVIDIA H200"
    assert merged.source == "t.txt + L.txt"


@pytest.mark.parametrize(
    ("first", "second", "message"),
    [
        pytest.param(
            H100_TABLE,
            H200_LIST,
            "the captures disagree on GPU 0's name ('NVIDIA H100 80GB HBM3' vs 'NVIDIA H200')",
            id="captures of two different machines are refused",
        ),
        pytest.param(
            H100_LIST,
            FIXTURES / "L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt",
            "the captures disagree on which GPU is GPU 0 "
            f"({MASKED} vs GPU-b4895dbf-9350-2524-a89b-98161ddd9fe4)",
            id="two listings with different GPU UUIDs at one index are refused",
        ),
        pytest.param(
            H200_TABLE,
            FIXTURES / "table-1xH100-80GB-HBM3-mig-4devices-3processes-driver590.txt",
            "the captures disagree on which GPU is GPU 0 (00000000:83:00.0 vs 00000000:00:09.0)",
            id="two tables of GPUs on different buses are refused",
        ),
    ],
)
def test_captures_that_disagree_are_refused(first: Path, second: Path, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        load_captures([first, second])

    assert message in str(err.value)
    assert str(err.value).startswith(f"{first} + {second}: ")
    assert "\n" not in str(err.value)


def test_a_listing_that_disagrees_on_a_profile_is_refused() -> None:
    table = parse_capture(read_capture_text(H100_TABLE), "t.txt")
    # Same GPU, but device 0 claims another GI: not the moment the table was taken.
    legacy = parse_capture(
        f"GPU 0: NVIDIA H100 80GB HBM3 (UUID: {MASKED})\n"
        f"  MIG 3g.40gb Device 0: (UUID: MIG-{MASKED}/5/0)\n",
        "L.txt",
    )

    with pytest.raises(CaptureError) as err:
        merge_captures([table, legacy])

    assert str(err.value) == (
        "t.txt + L.txt: the captures disagree on GPU 0 MIG device 0's GI (2 vs 5); "
        "they must come from one machine at one moment"
    )


def test_merging_nothing_is_an_error() -> None:
    with pytest.raises(CaptureError):
        merge_captures([])


def test_a_one_gpu_log_takes_its_real_index_from_the_listing() -> None:
    # The A100 log holds 1 of 4 GPUs, so its index 0 is only a position; in this listing (made
    # up for the test, MIG UUIDs invented) that GPU is GPU 2.
    a100 = "GPU-513536b6-7d19-9063-b049-1e69664bb298"
    listing = parse_capture(
        f"GPU 2: NVIDIA A100-SXM4-80GB (UUID: {a100})\n"
        + "".join(
            f"  MIG 1g.20gb     Device  {i}: (UUID: MIG-{i}0000000-0000-0000-0000-000000000000)\n"
            for i in range(4)
        ),
        "L.txt",
    )
    log = parse_capture(
        read_capture_text(
            FIXTURES / "xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml"
        ),
        "log.xml",
    )

    sample = merge_captures([log, listing]).to_sample()

    assert [
        (u.gpu_index, u.gpu_instance_id, u.memory_total_mib, u.gpueq) for u in sample.units()
    ] == [
        (2, 3, 19968, GpuEq.of(1, 7)),
        (2, 4, 19968, GpuEq.of(1, 7)),
        (2, 5, 19968, GpuEq.of(1, 7)),
        (2, 6, 19968, GpuEq.of(1, 7)),
    ]
