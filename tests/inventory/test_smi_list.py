"""`nvidia-smi -L` listings: real captures (modern, compute-instance, in-container) and variants."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import parse_list, read_capture_text
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import UnitKind

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
VARIANTS = FIXTURES / "variants"

H100 = "GPU-b4895dbf-9350-2524-a89b-98161ddd9fe4"
MASKED = "GPU-00000000-0000-0000-0000-000000000000"
DGX0 = "GPU-8e100991-ce97-6694-b8eb-b8b1ff5053af"
DGX1 = "GPU-938c4705-98bf-1735-e98b-c2a5872a8022"

Row = tuple[str, UnitKind, int, str | None, GpuEq, int | None, int | None]


def mig(
    uuid: str, gpu: int, profile: str, gpueq: GpuEq, gi: int | None = None, ci: int | None = None
) -> Row:
    """The expected unit row of a MIG device: (uuid, kind, gpu index, profile, gpueq, GI, CI)."""
    return (uuid, UnitKind.MIG, gpu, profile, gpueq, gi, ci)


CASES = [
    pytest.param(
        FIXTURES / "L-1xH100-80GB-HBM3-mig-7x1g.10gb.txt",
        [
            mig("MIG-3f6f389f-b0cc-5e5c-8e32-eaa8fd067902", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-35f93699-4b53-5a19-8289-80b8418eec60", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-9d14fb21-4ae1-546f-a636-011582899c39", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-0f709664-740c-52b0-ae79-3e4c9ede6d3b", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-5d23f73a-d378-50ac-a6f5-3bf5184773bb", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-6cea15c7-8a56-578c-b965-0e73cb6dfc10", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-981c86e9-3607-57d7-9426-295347e4b925", 0, "1g.10gb", GpuEq.of(1, 7)),
        ],
        id="an H100 cut into seven 1g.10gb devices gives seven sevenths (CRLF capture)",
    ),
    pytest.param(
        FIXTURES / "L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt",
        [
            mig("MIG-7089d0f3-293f-58c9-8f8c-5ea666eedbde", 0, "3g.40gb", GpuEq.of(3, 7)),
            mig("MIG-56c30729-347f-5dd6-8da0-c3cc59e969e0", 0, "2g.20gb", GpuEq.of(2, 7)),
            mig("MIG-9d14fb21-4ae1-546f-a636-011582899c39", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-0f709664-740c-52b0-ae79-3e4c9ede6d3b", 0, "1g.10gb", GpuEq.of(1, 7)),
        ],
        id="a mixed H100 layout weighs 3g as 3/7 and 2g as 2/7",
    ),
    pytest.param(
        FIXTURES / "L-A30-in-container-one-mig-1c.2g.12gb.txt",
        [mig("MIG-54cc2421-6f2d-59e9-b074-20707aadd71e", 0, "1c.2g.12gb", GpuEq.of(1, 4))],
        id="a 1c.2g compute instance on a four-slice A30 is one quarter",
    ),
    pytest.param(
        FIXTURES / "L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt",
        [
            mig("MIG-00000000-0000-0000-0000-000000000000", 0, "1c.3g.71gb", GpuEq.of(1, 7)),
            mig("MIG-00000001-0000-0000-0000-000000000001", 0, "2c.3g.71gb", GpuEq.of(2, 7)),
            mig("MIG-00000002-0000-0000-0000-000000000002", 0, "2g.35gb", GpuEq.of(2, 7)),
            mig("MIG-00000003-0000-0000-0000-000000000003", 0, "1g.18gb", GpuEq.of(1, 7)),
            mig("MIG-00000004-0000-0000-0000-000000000004", 0, "1g.18gb", GpuEq.of(1, 7)),
        ],
        id="compute instances in one H200 3g instance count their own slices",
    ),
    pytest.param(
        FIXTURES / "L-DGX-A100-SXM4-80GB-mig-balanced-first10lines.txt",
        [
            mig("MIG-dcf43e8e-5d19-5fa8-8b1d-8aaca1e467f0", 0, "3g.40gb", GpuEq.of(3, 7)),
            mig("MIG-6b84cf06-0978-530f-bea3-dd6108f98ebf", 0, "2g.20gb", GpuEq.of(2, 7)),
            mig("MIG-3fff3a97-95a9-5046-9053-4c0da3d1add7", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-7a99e994-6607-5d8a-9ab3-ace43cf9bd96", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-51872ee5-5410-564e-abd2-27382756d2d4", 1, "3g.40gb", GpuEq.of(3, 7)),
            mig("MIG-9af7553b-306e-55b4-a8c7-4cdef4066af4", 1, "2g.20gb", GpuEq.of(2, 7)),
            mig("MIG-3407f5e5-83f9-55c0-abe5-0e2259ac50b1", 1, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-91e26891-6f5b-5ff3-9c66-310e47d6b059", 1, "1g.10gb", GpuEq.of(1, 7)),
        ],
        id="two balanced DGX A100 GPUs give eight MIG units",
    ),
    pytest.param(
        VARIANTS / "L-2xA100-SXM4-80GB-legacy-mig-uuids-from-DGX.txt",
        [
            mig(f"MIG-{DGX0}/2/0", 0, "3g.40gb", GpuEq.of(3, 7), gi=2, ci=0),
            mig(f"MIG-{DGX0}/3/0", 0, "2g.20gb", GpuEq.of(2, 7), gi=3, ci=0),
            mig(f"MIG-{DGX0}/9/0", 0, "1g.10gb", GpuEq.of(1, 7), gi=9, ci=0),
            mig(f"MIG-{DGX0}/10/0", 0, "1g.10gb", GpuEq.of(1, 7), gi=10, ci=0),
            mig(f"MIG-{DGX1}/2/0", 1, "3g.40gb", GpuEq.of(3, 7), gi=2, ci=0),
            mig(f"MIG-{DGX1}/3/0", 1, "2g.20gb", GpuEq.of(2, 7), gi=3, ci=0),
            mig(f"MIG-{DGX1}/9/0", 1, "1g.10gb", GpuEq.of(1, 7), gi=9, ci=0),
            mig(f"MIG-{DGX1}/10/0", 1, "1g.10gb", GpuEq.of(1, 7), gi=10, ci=0),
        ],
        id="legacy MIG-GPU-uuid/gi/ci names are kept as units and give GI and CI",
    ),
    pytest.param(
        VARIANTS / "L-2xA100-SXM4-80GB-mig-on-gpu0-only-from-DGX.txt",
        [
            mig("MIG-dcf43e8e-5d19-5fa8-8b1d-8aaca1e467f0", 0, "3g.40gb", GpuEq.of(3, 7)),
            mig("MIG-6b84cf06-0978-530f-bea3-dd6108f98ebf", 0, "2g.20gb", GpuEq.of(2, 7)),
            mig("MIG-3fff3a97-95a9-5046-9053-4c0da3d1add7", 0, "1g.10gb", GpuEq.of(1, 7)),
            mig("MIG-7a99e994-6607-5d8a-9ab3-ace43cf9bd96", 0, "1g.10gb", GpuEq.of(1, 7)),
            (DGX1, UnitKind.GPU, 1, None, GpuEq(1), None, None),
        ],
        id="a GPU without MIG lines on a mixed box is one whole unit",
    ),
]


@pytest.mark.parametrize(("path", "units"), CASES)
def test_listing_gives_the_units_ds01_allocates(path: Path, units: list[Row]) -> None:
    sample = parse_list(read_capture_text(path), path.name).to_sample()

    assert [
        (
            u.uuid,
            u.kind,
            u.gpu_index,
            u.profile,
            u.gpueq,
            u.gpu_instance_id,
            u.compute_instance_id,
        )
        for u in sample.units()
    ] == units
    assert sample.warnings == ()


def test_listing_names_gpus_and_leaves_memory_unknown() -> None:
    capture = parse_list(
        read_capture_text(FIXTURES / "L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt"), "L.txt"
    )

    gpu = capture.gpus[0]
    assert (gpu.index, gpu.uuid, gpu.name, gpu.mig_enabled) == (
        0,
        H100,
        "NVIDIA H100 80GB HBM3",
        True,
    )
    assert gpu.memory_total_mib is None
    assert {m.memory_total_mib for m in gpu.mig_devices} == {None}
    assert [m.index for m in gpu.mig_devices] == [0, 1, 2, 3]


def test_gpu_without_mig_lines_has_unknown_mig_mode_not_disabled() -> None:
    capture = parse_list(
        read_capture_text(VARIANTS / "L-2xA100-SXM4-80GB-mig-on-gpu0-only-from-DGX.txt"), "L.txt"
    )

    assert [g.mig_enabled for g in capture.gpus] == [True, None]


def test_legacy_listing_keeps_the_old_gpu_names() -> None:
    capture = parse_list(
        read_capture_text(VARIANTS / "L-2xA100-SXM4-80GB-legacy-mig-uuids-from-DGX.txt"), "L.txt"
    )

    assert [g.name for g in capture.gpus] == ["A100-SXM4-80GB", "A100-SXM4-80GB"]


def test_masked_h100_listing_from_the_exporter_capture() -> None:
    capture = parse_list(
        read_capture_text(FIXTURES / "L-1xH100-80GB-HBM3-mig-3g-2g-1g-1g-driver590-masked.txt"),
        "L.txt",
    )

    assert capture.gpus[0].uuid == MASKED
    assert [(m.index, m.profile) for m in capture.gpus[0].mig_devices] == [
        (0, "3g.40gb"),
        (1, "2g.20gb"),
        (2, "1g.10gb"),
        (3, "1g.10gb"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "  MIG 1g.10gb     Device  0: (UUID: MIG-3f6f389f-b0cc-5e5c-8e32-eaa8fd067902)\n",
            "L.txt: line 1: MIG device before any GPU line",
            id="a MIG line needs a GPU line above it",
        ),
        pytest.param(
            f"GPU 0: NVIDIA H100 (UUID: {H100})\nhello\n",
            "L.txt: line 2: not an nvidia-smi -L line: 'hello'",
            id="a stray line is refused",
        ),
        pytest.param(
            f"GPU 0: A100 (UUID: {DGX0})\n  MIG 1g.5gb Device 0: (UUID: MIG-{DGX1}/7/0)\n",
            f"L.txt: line 2: MIG UUID 'MIG-{DGX1}/7/0' names another GPU than GPU 0",
            id="a legacy MIG UUID must name its own GPU",
        ),
        pytest.param(
            f"GPU 0: A (UUID: {DGX0})\nGPU 0: B (UUID: {DGX1})\n",
            "L.txt: GPU 0 is listed twice",
            id="a GPU index listed twice is refused",
        ),
        pytest.param(
            "GPU 0: A100 (UUID: GPU-12)\n",
            "L.txt: line 1: not a GPU UUID: 'GPU-12'",
            id="a short GPU UUID is refused",
        ),
    ],
)
def test_bad_listings_are_refused_with_one_line(text: str, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_list(text, "L.txt")

    assert str(err.value) == message


def test_mig_device_on_a_gpu_model_ds01_cannot_weigh_offers_no_unit_and_says_why() -> None:
    # Pre-release boards report a generic name, so the slice count of the GPU is unknown.
    sample = parse_list(
        f"GPU 0: NVIDIA Graphics Device (UUID: {MASKED})\n"
        "  MIG 1g.23gb     Device  0: (UUID: MIG-00000000-0000-0000-0000-000000000000)\n",
        "L.txt",
    ).to_sample()

    assert sample.units() == []
    assert sample.gpus[0].mig_devices[0].gpueq is None
    assert sample.warnings == (
        "GPU 0: MIG device MIG-00000000-0000-0000-0000-000000000000 offers no unit: "
        "ds01 cannot weigh profile 1g.23gb on a NVIDIA Graphics Device",
    )


def test_a_profile_of_unknown_shape_is_kept_as_printed_and_offers_no_unit() -> None:
    # A suffix no NVIDIA driver prints today: ds01 does not guess what it means.
    sample = parse_list(
        f"GPU 0: NVIDIA B200 (UUID: {MASKED})\n"
        "  MIG 1g.23gb+Xyz  Device  0: (UUID: MIG-00000000-0000-0000-0000-000000000000)\n",
        "L.txt",
    ).to_sample()

    assert sample.gpus[0].mig_devices[0].profile == "1g.23gb+Xyz"
    assert sample.units() == []
    assert sample.warnings == (
        "GPU 0: MIG device MIG-00000000-0000-0000-0000-000000000000 offers no unit: "
        "ds01 cannot weigh profile 1g.23gb+Xyz on a NVIDIA B200",
    )


@pytest.mark.parametrize(
    ("gpu", "printed", "profile", "gpueq"),
    [
        pytest.param("NVIDIA B200", "1g.23gb-me", "1g.23gb-me", GpuEq.of(1, 7), id="B200 -me"),
        pytest.param(
            "NVIDIA B200", "1g.23gb+me.all", "1g.23gb+me.all", GpuEq.of(1, 7), id="B200 +me.all"
        ),
        pytest.param("NVIDIA H100 80GB HBM3", "1g.10gb+me", "1g.10gb+me", GpuEq.of(1, 7)),
        pytest.param("NVIDIA A30", "2g.12gb+ME", "2g.12gb+me", GpuEq.of(2, 4), id="A30 +ME"),
        pytest.param(
            "NVIDIA RTX PRO 6000 Blackwell Server Edition",
            "2g.48gb+gfx",
            "2g.48gb+gfx",
            GpuEq.of(2, 4),
            id="RTX PRO 6000 +gfx is 2 of 4 slices",
        ),
    ],
)
def test_media_and_graphics_variants_are_units_of_their_own_profile(
    gpu: str, printed: str, profile: str, gpueq: GpuEq
) -> None:
    sample = parse_list(
        f"GPU 0: {gpu} (UUID: {MASKED})\n"
        f"  MIG {printed}  Device  0: (UUID: MIG-00000000-0000-0000-0000-000000000000)\n",
        "L.txt",
    ).to_sample()

    (unit,) = sample.units()
    assert (unit.profile, unit.gpueq, sample.warnings) == (profile, gpueq, ())
