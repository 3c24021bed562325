"""`nvidia-smi mig -lgip` and `mig -lci`: typed rows, and refusal as an inventory."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    ComputeInstance,
    GpuInstanceProfile,
    parse_capture,
    parse_lci,
    parse_lgip,
    read_capture_text,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
LGIP = FIXTURES / "mig-lgip-A100-SXM4-80GB-partially-allocated.txt"
LCI = FIXTURES / "mig-lci-A100-SXM4-80GB-gpu0-4g.40gb.txt"


def test_lgip_reads_every_two_line_profile_row() -> None:
    rows = parse_lgip(read_capture_text(LGIP), "lgip.txt")

    assert rows == (
        GpuInstanceProfile(0, "1g.10gb", 19, 4, 7, 9.50, False, 14, 0, 0, 1, 0, 0),
        GpuInstanceProfile(0, "1g.10gb+me", 20, 1, 1, 9.50, False, 14, 1, 0, 1, 1, 1),
        GpuInstanceProfile(0, "2g.20gb", 14, 2, 3, 19.50, False, 28, 1, 0, 2, 0, 0),
        GpuInstanceProfile(0, "3g.40gb", 9, 1, 2, 39.50, False, 42, 2, 0, 3, 0, 0),
        GpuInstanceProfile(0, "4g.40gb", 5, 0, 1, 39.50, False, 56, 2, 0, 4, 0, 0),
        GpuInstanceProfile(0, "7g.80gb", 0, 0, 1, 79.25, False, 98, 5, 0, 7, 1, 1),
    )


def test_lci_reads_compute_instances_with_their_placement() -> None:
    rows = parse_lci(read_capture_text(LCI), "lci.txt")

    assert rows == (
        ComputeInstance(
            gpu_index=0,
            gpu_instance_id=2,
            name="4g.40gb",
            profile_id=3,
            compute_instance_id=0,
            placement_start=0,
            placement_size=4,
        ),
    )


@pytest.mark.parametrize(
    ("path", "message"),
    [
        pytest.param(
            LGIP,
            "lgip.txt: this is 'nvidia-smi mig -lgip' output (MIG configuration, no UUIDs), "
            "not a GPU inventory",
            id="a profile table is named and refused as an inventory",
        ),
        pytest.param(
            LCI,
            "lgip.txt: this is 'nvidia-smi mig -lci' output (MIG configuration, no UUIDs), "
            "not a GPU inventory",
            id="a compute instance table is named and refused as an inventory",
        ),
    ],
)
def test_mig_configuration_tables_are_not_inventories(path: Path, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_capture(read_capture_text(path), "lgip.txt")

    assert str(err.value) == message
    assert err.value.fix is not None and "nvidia-smi -q -x" in err.value.fix


def test_empty_listings_give_no_rows() -> None:
    lci = (
        "+------------------------------------------+\n"
        "| Compute instances:                       |\n"
        "|==========================================|\n"
        "|  No compute instances found              |\n"
        "+------------------------------------------+\n"
    )

    assert parse_lci(lci, "lci.txt") == ()


@pytest.mark.parametrize(
    ("cut_after", "message"),
    [
        pytest.param(
            "|   0  MIG 2g.20gb       14     2/3        19.50      No     28     1     0   |\n",
            "lgip.txt: truncated table: 'GPU instance profiles:' does not end with a '+---+' rule",
            id="an lgip table cut after a first row line is refused",
        ),
        pytest.param(
            "|   0  MIG 2g.20gb       14     2/3        19",
            "lgip.txt: line 12: not a table row: '|   0  MIG 2g.20gb       14     2/3        19'",
            id="an lgip table cut mid-row names the line",
        ),
    ],
)
def test_truncated_lgip_is_refused(cut_after: str, message: str) -> None:
    text = read_capture_text(LGIP)
    text = text[: text.index(cut_after) + len(cut_after)]

    with pytest.raises(CaptureError) as err:
        parse_lgip(text, "lgip.txt")

    assert str(err.value) == message
