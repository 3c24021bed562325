"""The one MIG profile grammar (ds01.model.profile), driven by tables.

PROFILES holds every profile name NVIDIA lists or NVML prints for A30, A100, H100, H200, B200 and
the RTX PRO Blackwell cards (the only ones with +gfx), each with where it comes from and what it
must parse to. Every expected value is written out by hand from the source, never computed.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

import pytest

from ds01.errors import MigProfileError, UsageError
from ds01.model.gpueq import GpuEq
from ds01.model.profile import (
    MigProfile,
    Variant,
    canonical_or_printed,
    mig_gpueq,
    parse_profile,
    profile_or_none,
    total_slices,
)

# Sources. GUIDE tables are NVIDIA's MIG User Guide (R580), "Supported MIG Profiles":
# https://docs.nvidia.com/datacenter/tesla/mig-user-guide/supported-mig-profiles.html
GUIDE_A30 = "MIG user guide, A30-24GB profiles"
GUIDE_A100_40 = "MIG user guide, A100-SXM4-40GB profiles"
GUIDE_A100_80 = "MIG user guide, A100-SXM4-80GB note (1g.10gb … 7g.80gb)"
GUIDE_H100 = "MIG user guide, H100 80GB profiles"
GUIDE_H200 = "MIG user guide, H200 profiles"
GUIDE_B200 = "MIG user guide, B200 180GB profiles"
GUIDE_RTX6000 = "MIG user guide, RTX PRO 6000 Blackwell profiles"
GUIDE_RTX5000 = "MIG user guide, RTX PRO 5000 Blackwell profiles"
H100_NVL_LGIP = "nvidia-smi mig -lgip on an H100 NVL (94 GB), as NVIDIA's docs list it"
H200_LGIP = "../shared/fixtures/h200/h200-driver580-mig-lgip.txt (nvidia-smi mig -lgip)"
A100_LGIP = "tests/fixtures/nvidia-smi/mig-lgip-A100-SXM4-80GB-partially-allocated.txt"
A100_LCI = "tests/fixtures/nvidia-smi/mig-lci-A100-SXM4-80GB-gpu0-4g.40gb.txt"
H100_L = "tests/fixtures/nvidia-smi/L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt"
H200_L = "tests/fixtures/nvidia-smi/L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt"
A30_L = "tests/fixtures/nvidia-smi/L-A30-in-container-one-mig-1c.2g.12gb.txt"
# NVML names a GPU instance of profile NVML_GPU_INSTANCE_PROFILE_1_SLICE_ALL_ME '+me.all' and
# one of …_1_SLICE_NO_ME '-me' (go-nvlib's naming, which ds01's NVML backend follows); drivers
# print them on B200 although the guide's B200 table lists only +me.
NVML_ALL_ME = "NVML GPU-instance profile …_SLICE_ALL_ME (go-nvlib's name)"
NVML_NO_ME = "NVML GPU-instance profile …_SLICE_NO_ME (go-nvlib's name)"

A30 = "NVIDIA A30"
A100_40 = "NVIDIA A100-SXM4-40GB"
A100_80 = "NVIDIA A100-SXM4-80GB"
H100 = "NVIDIA H100 80GB HBM3"
H100_NVL = "NVIDIA H100 NVL"
H200 = "NVIDIA H200"
B200 = "NVIDIA B200"
RTX6000 = "NVIDIA RTX PRO 6000 Blackwell Server Edition"
RTX5000 = "NVIDIA RTX PRO 5000 Blackwell"

P, ME, ALL, GFX, NO = Variant.PLAIN, Variant.ME, Variant.ME_ALL, Variant.GFX, Variant.NO_ME


class Row(NamedTuple):
    gpu: str
    printed: str  # as the source prints it
    c: int
    g: int
    gb: int
    variant: Variant
    gpueq: Fraction  # compute slices / the GPU's slices
    source: str


def r(gpu: str, printed: str, cgb: tuple[int, int, int], v: Variant, eq: str, src: str) -> Row:
    return Row(gpu, printed, *cgb, v, Fraction(eq), src)


PROFILES = [
    r(A30, "MIG 1g.6gb", (1, 1, 6), P, "1/4", GUIDE_A30),
    r(A30, "MIG 1g.6gb+me", (1, 1, 6), ME, "1/4", GUIDE_A30),
    r(A30, "MIG 2g.12gb", (2, 2, 12), P, "2/4", GUIDE_A30),
    r(A30, "MIG 2g.12gb+me", (2, 2, 12), ME, "2/4", GUIDE_A30),
    r(A30, "MIG 4g.24gb", (4, 4, 24), P, "1", GUIDE_A30),
    r(A30, "MIG 1c.2g.12gb", (1, 2, 12), P, "1/4", A30_L),
    r(A100_40, "MIG 1g.5gb", (1, 1, 5), P, "1/7", GUIDE_A100_40),
    r(A100_40, "MIG 1g.5gb+me", (1, 1, 5), ME, "1/7", GUIDE_A100_40),
    r(A100_40, "MIG 1g.10gb", (1, 1, 10), P, "1/7", GUIDE_A100_40),
    r(A100_40, "MIG 2g.10gb", (2, 2, 10), P, "2/7", GUIDE_A100_40),
    r(A100_40, "MIG 3g.20gb", (3, 3, 20), P, "3/7", GUIDE_A100_40),
    r(A100_40, "MIG 4g.20gb", (4, 4, 20), P, "4/7", GUIDE_A100_40),
    r(A100_40, "MIG 7g.40gb", (7, 7, 40), P, "1", GUIDE_A100_40),
    r(A100_80, "MIG 1g.10gb", (1, 1, 10), P, "1/7", A100_LGIP),
    r(A100_80, "MIG 1g.10gb+me", (1, 1, 10), ME, "1/7", A100_LGIP),
    r(A100_80, "1g.20gb", (1, 1, 20), P, "1/7", GUIDE_A100_80),
    r(A100_80, "MIG 2g.20gb", (2, 2, 20), P, "2/7", A100_LGIP),
    r(A100_80, "MIG 3g.40gb", (3, 3, 40), P, "3/7", A100_LGIP),
    r(A100_80, "MIG 4g.40gb", (4, 4, 40), P, "4/7", A100_LCI),
    r(A100_80, "MIG 7g.80gb", (7, 7, 80), P, "1", A100_LGIP),
    r(H100, "MIG 1g.10gb", (1, 1, 10), P, "1/7", H100_L),
    r(H100, "MIG 1g.10gb+me", (1, 1, 10), ME, "1/7", GUIDE_H100),
    r(H100, "MIG 1g.20gb", (1, 1, 20), P, "1/7", GUIDE_H100),
    r(H100, "MIG 2g.20gb", (2, 2, 20), P, "2/7", H100_L),
    r(H100, "MIG 3g.40gb", (3, 3, 40), P, "3/7", H100_L),
    r(H100, "MIG 4g.40gb", (4, 4, 40), P, "4/7", GUIDE_H100),
    r(H100, "MIG 7g.80gb", (7, 7, 80), P, "1", GUIDE_H100),
    r(H100_NVL, "MIG 1g.12gb", (1, 1, 12), P, "1/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 1g.12gb+me", (1, 1, 12), ME, "1/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 1g.24gb", (1, 1, 24), P, "1/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 2g.24gb", (2, 2, 24), P, "2/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 3g.47gb", (3, 3, 47), P, "3/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 4g.47gb", (4, 4, 47), P, "4/7", H100_NVL_LGIP),
    r(H100_NVL, "MIG 7g.94gb", (7, 7, 94), P, "1", H100_NVL_LGIP),
    r(H200, "MIG 1g.18gb", (1, 1, 18), P, "1/7", H200_LGIP),
    r(H200, "MIG 1g.18gb+me", (1, 1, 18), ME, "1/7", H200_LGIP),
    r(H200, "MIG 1g.35gb", (1, 1, 35), P, "1/7", H200_LGIP),
    r(H200, "MIG 2g.35gb", (2, 2, 35), P, "2/7", H200_LGIP),
    r(H200, "MIG 3g.71gb", (3, 3, 71), P, "3/7", H200_LGIP),
    r(H200, "MIG 4g.71gb", (4, 4, 71), P, "4/7", GUIDE_H200),
    r(H200, "MIG 7g.141gb", (7, 7, 141), P, "1", H200_LGIP),
    r(H200, "MIG 1c.3g.71gb", (1, 3, 71), P, "1/7", H200_L),
    r(H200, "MIG 2c.3g.71gb", (2, 3, 71), P, "2/7", H200_L),
    r(B200, "MIG 1g.23gb", (1, 1, 23), P, "1/7", GUIDE_B200),
    r(B200, "MIG 1g.23gb+me", (1, 1, 23), ME, "1/7", GUIDE_B200),
    r(B200, "MIG 1g.45gb", (1, 1, 45), P, "1/7", GUIDE_B200),
    r(B200, "MIG 2g.45gb", (2, 2, 45), P, "2/7", GUIDE_B200),
    r(B200, "MIG 3g.90gb", (3, 3, 90), P, "3/7", GUIDE_B200),
    r(B200, "MIG 4g.90gb", (4, 4, 90), P, "4/7", GUIDE_B200),
    r(B200, "MIG 7g.180gb", (7, 7, 180), P, "1", GUIDE_B200),
    r(B200, "MIG 1g.23gb+me.all", (1, 1, 23), ALL, "1/7", NVML_ALL_ME),
    r(B200, "MIG 1g.23gb-me", (1, 1, 23), NO, "1/7", NVML_NO_ME),
    r(B200, "MIG 2g.45gb-me", (2, 2, 45), NO, "2/7", NVML_NO_ME),
    r(RTX6000, "MIG 1g.24gb", (1, 1, 24), P, "1/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 1g.24gb+me", (1, 1, 24), ME, "1/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 1g.24gb+gfx", (1, 1, 24), GFX, "1/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 1g.24gb+me.all", (1, 1, 24), ALL, "1/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 1g.24gb-me", (1, 1, 24), NO, "1/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 2g.48gb", (2, 2, 48), P, "2/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 2g.48gb+gfx", (2, 2, 48), GFX, "2/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 2g.48gb+me.all", (2, 2, 48), ALL, "2/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 2g.48gb-me", (2, 2, 48), NO, "2/4", GUIDE_RTX6000),
    r(RTX6000, "MIG 4g.96gb", (4, 4, 96), P, "1", GUIDE_RTX6000),
    r(RTX6000, "MIG 4g.96gb+gfx", (4, 4, 96), GFX, "1", GUIDE_RTX6000),
    r(RTX5000, "MIG 1g.12gb", (1, 1, 12), P, "1/4", GUIDE_RTX5000),
    r(RTX5000, "MIG 1g.12gb+me", (1, 1, 12), ME, "1/4", GUIDE_RTX5000),
    r(RTX5000, "MIG 1g.12gb+gfx", (1, 1, 12), GFX, "1/4", GUIDE_RTX5000),
    r(RTX5000, "MIG 1g.12gb-me", (1, 1, 12), NO, "1/4", GUIDE_RTX5000),
    r(RTX5000, "MIG 2g.24gb-me", (2, 2, 24), NO, "2/4", GUIDE_RTX5000),
    r(RTX5000, "MIG 4g.48gb", (4, 4, 48), P, "1", GUIDE_RTX5000),
    r(RTX5000, "MIG 4g.48gb+gfx", (4, 4, 48), GFX, "1", GUIDE_RTX5000),
]


def _id(row: Row) -> str:
    return f"{row.gpu.removeprefix('NVIDIA ')} {row.printed}"


@pytest.mark.parametrize("row", PROFILES, ids=_id)
def test_every_profile_nvidia_prints_parses(row: Row) -> None:
    p = parse_profile(row.printed)
    assert (p.compute_slices, p.gpu_slices, p.memory_gb, p.variant) == (
        row.c,
        row.g,
        row.gb,
        row.variant,
    )
    # The canonical name is what nvidia-smi prints, without 'MIG '.
    assert p.name == row.printed.removeprefix("MIG ")
    assert parse_profile(p.name) == p
    # How the NVML backend builds names: from slice counts, memory and the variant.
    assert MigProfile(row.c, row.g, row.gb, row.variant).name == p.name
    assert mig_gpueq(row.printed, row.gpu) == GpuEq(row.gpueq)


@pytest.mark.parametrize("row", PROFILES, ids=_id)
def test_every_gpu_in_the_table_has_its_slice_count(row: Row) -> None:
    assert total_slices(row.gpu) == (4 if row.gpu in (A30, RTX6000, RTX5000) else 7)


def test_the_table_covers_every_suffix_and_compute_instances() -> None:
    assert {row.variant for row in PROFILES} == set(Variant)
    assert any(row.c < row.g for row in PROFILES)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        pytest.param("3g.40gb", "3g.40gb", id="as ds01 gpu status shows it"),
        pytest.param("MIG 3g.40gb", "3g.40gb", id="as nvidia-smi -L prints it"),
        pytest.param("mig 3g.40gb", "3g.40gb", id="any case"),
        pytest.param("MIG3g.40gb", "3g.40gb", id="the MIG prefix without a space"),
        pytest.param("MIG   3g.40gb", "3g.40gb", id="the MIG prefix with several spaces"),
        pytest.param("  3G.40GB \t", "3g.40gb", id="spaces around and upper case"),
        pytest.param("3c.3g.40gb", "3g.40gb", id="a compute instance as big as its GPU instance"),
        pytest.param("1C.3G.71GB", "1c.3g.71gb", id="a compute instance"),
        pytest.param("1g.10gb+ME", "1g.10gb+me", id="+me in upper case"),
        pytest.param("MIG 1g.23gb+Me.All", "1g.23gb+me.all", id="+me.all in mixed case"),
        pytest.param("1c.2g.12gb+me", "1c.2g.12gb+me", id="a compute instance of a +me GI"),
        pytest.param("03g.040gb", "3g.40gb", id="leading zeros are numbers"),
    ],
)
def test_accepted_spellings_normalise_to_one_name(text: str, name: str) -> None:
    assert parse_profile(text).name == name
    assert profile_or_none(text) == parse_profile(name)
    assert canonical_or_printed(text) == name


SHAPE = (
    "MIG profiles are written [Nc.]Ng.NNgb with an optional +me, +me.all, +gfx or -me, "
    "such as 3g.40gb, 1c.3g.71gb or 1g.10gb+me."
)
FIX = "Write it as 'ds01 gpu status' shows it, such as 3g.40gb, 1c.3g.71gb or 1g.10gb+me."
SUFFIX = "is not a MIG profile suffix: NVIDIA's are +me, +me.all, +gfx or -me."

# (input, the name the error shows, why): the one error every entry point gives.
BAD = [
    pytest.param("", "", SHAPE, id="empty"),
    pytest.param("   ", "", SHAPE, id="blank"),
    pytest.param("MIG", "MIG", SHAPE, id="the prefix alone"),
    pytest.param("3g", "3g", SHAPE, id="no memory"),
    pytest.param("3g.40", "3g.40", SHAPE, id="memory without gb"),
    pytest.param("40gb", "40gb", SHAPE, id="no slices"),
    pytest.param(
        "3g.40gb.me",
        "3g.40gb.me",
        "Only a suffix (+me, +me.all, +gfx or -me) may follow '40gb'.",
        id="Kubernetes' .me spelling",
    ),
    pytest.param("nvidia.com/mig-1g.10gb", "nvidia.com/mig-1g.10gb", SHAPE, id="a k8s resource"),
    pytest.param("MIG-3g.40gb", "MIG-3g.40gb", SHAPE, id="MIG joined with a dash"),
    pytest.param("3g.40.5gb", "3g.40.5gb", SHAPE, id="a fraction of a GB"),
    pytest.param("3 g.40gb", "3 g.40gb", SHAPE, id="a space inside"),
    pytest.param("1g.10gb+mee", "1g.10gb+mee", f"'+mee' {SUFFIX}", id="a misspelt suffix"),
    pytest.param("1g.10gb+me,gfx", "1g.10gb+me,gfx", f"'+me,gfx' {SUFFIX}", id="two suffixes"),
    pytest.param("1g.10gb-me.all", "1g.10gb-me.all", f"'-me.all' {SUFFIX}", id="-me.all"),
    pytest.param("1g.10gb+", "1g.10gb+", f"'+' {SUFFIX}", id="a bare plus"),
    pytest.param(
        "9g.90gb", "9g.90gb", "A GPU instance has 1 to 8 slices; '9g' has 9.", id="9 slices"
    ),
    pytest.param(
        "0g.10gb", "0g.10gb", "A GPU instance has 1 to 8 slices; '0g' has 0.", id="0 slices"
    ),
    pytest.param(
        "4c.3g.40gb",
        "4c.3g.40gb",
        "A compute instance in a 3g GPU instance has 1 to 3 slices; '4c' has 4.",
        id="a compute instance bigger than its GPU instance",
    ),
    pytest.param(
        "0c.3g.40gb",
        "0c.3g.40gb",
        "A compute instance in a 3g GPU instance has 1 to 3 slices; '0c' has 0.",
        id="a compute instance of no slice",
    ),
    pytest.param(
        "3g.0gb",
        "3g.0gb",
        "'0gb' is no memory: the label is the instance's memory in GB.",
        id="no memory at all",
    ),
    pytest.param(
        "1g.10gb\x1b[2J",
        "1g.10gb?[2J",
        "Only a suffix (+me, +me.all, +gfx or -me) may follow '10gb'.",
        id="a terminal escape is not echoed",
    ),
    pytest.param("x" * 60, "x" * 40 + "…", SHAPE, id="a long name is cut"),
]


@pytest.mark.parametrize(("text", "shown", "why"), BAD)
def test_a_name_that_is_not_a_profile_is_one_precise_usage_error(
    text: str, shown: str, why: str
) -> None:
    with pytest.raises(MigProfileError) as err:
        parse_profile(text)
    assert err.value.lines() == [f"'{shown}' is not a MIG profile name", why, FIX]
    assert isinstance(err.value, UsageError)
    assert (err.value.exit_code, err.value.kind) == (2, "usage")
    assert profile_or_none(text) is None
    assert canonical_or_printed(text) == text.strip()


def test_matching_is_exact_variant_by_variant() -> None:
    plain, me, all_me, no_me = (
        parse_profile(t) for t in ("1g.10gb", "1g.10gb+me", "1g.10gb+me.all", "1g.10gb-me")
    )
    assert len({plain, me, all_me, no_me}) == 4
    assert (me.media_extensions, all_me.media_extensions, no_me.media_extensions) == (
        True,
        True,
        False,
    )
    assert parse_profile("MIG 1G.10GB+ME") == me


def test_a_compute_instance_knows_its_gpu_instance() -> None:
    ci = parse_profile("1c.3g.71gb")
    assert (ci.is_compute_instance, ci.gpu_instance.name) == (True, "3g.71gb")
    assert parse_profile("1c.2g.12gb+me").gpu_instance.name == "2g.12gb+me"
    assert parse_profile("3g.71gb").gpu_instance == parse_profile("3g.71gb")


@pytest.mark.parametrize(
    ("text", "total", "expected"),
    [
        pytest.param("3g.40gb", 7, GpuEq.of(3, 7), id="3 of 7"),
        pytest.param("1c.3g.71gb", 7, GpuEq.of(1, 7), id="a compute instance weighs its own"),
        pytest.param("7g.80gb", 4, None, id="does not fit a 4-slice GPU"),
        pytest.param("1g.10gb", None, None, id="unknown GPU model"),
    ],
)
def test_gpueq_is_compute_slices_over_the_gpus(
    text: str, total: int | None, expected: GpuEq | None
) -> None:
    assert parse_profile(text).gpueq(total) == expected


def test_unknown_gpu_models_have_no_slice_count() -> None:
    assert total_slices("NVIDIA GeForce RTX 4090") is None
    assert total_slices("NVIDIA Graphics Device") is None


def test_building_a_profile_that_cannot_exist_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="'4c' has 4"):
        MigProfile(4, 3, 40)
