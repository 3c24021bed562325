"""Every place that reads a MIG profile name agrees with the one grammar (model/profile.py):
the scheduler's request, a simulated machine file, nvidia-smi's -L listing and `mig -lci`
table, and the names the NVML backend builds. Same accepted set, same canonical name, and for
a name that is not a profile the same error, word for word.

Before, three parsers disagreed: '1g.23gb+me.all' and '1g.10gb-me' normalised to nothing (such
units could not be asked for), and 'MIG3g.40gb' was a profile to the scheduler only.
(The API and the CLI are driven through a real ds01d in tests/daemon/test_mig_profiles.py.)
"""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import MachineFileError, MigProfileError
from ds01.inventory.nvml import mig_profile_name
from ds01.inventory.sim import SimBackend
from ds01.inventory.smi import parse_list
from ds01.inventory.smi.mig import parse_lci
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import Unit, UnitKind
from ds01.model.limits import Limits
from ds01.model.profile import Variant, parse_profile
from ds01.scheduler.place import place
from ds01.scheduler.snapshot import Request, RequestKind, Snapshot, UnitState

REPO = Path(__file__).resolve().parents[2]
LCI = REPO / "tests" / "fixtures" / "nvidia-smi" / "mig-lci-A100-SXM4-80GB-gpu0-4g.40gb.txt"
GPU = "NVIDIA H100 80GB HBM3"  # a 7-slice GPU every name below fits
H100_MIB = 81559

# Spellings → the one canonical name. Each fits an H100.
GOOD = {
    "1g.10gb": "1g.10gb",
    "MIG 1g.10gb": "1g.10gb",
    "MIG3g.40gb": "3g.40gb",
    "3G.40GB": "3g.40gb",
    "3c.3g.40gb": "3g.40gb",
    "1c.3g.40gb": "1c.3g.40gb",
    "1g.10gb+me": "1g.10gb+me",
    "1g.10gb+ME": "1g.10gb+me",
    "1g.10gb+me.all": "1g.10gb+me.all",
    "1g.10gb-me": "1g.10gb-me",
    "2g.20gb+gfx": "2g.20gb+gfx",
    "2g.20gb-me": "2g.20gb-me",
}
BAD = ["1g.10gb+mee", "1g.10gb.me", "9g.90gb", "4c.3g.40gb", "3g.40", "big", "1g.10gb+me,gfx"]
CANONICAL = sorted(set(GOOD.values()))


def error_lines(text: str) -> list[str]:
    with pytest.raises(MigProfileError) as err:
        parse_profile(text)
    return err.value.lines()


# ---- the scheduler: a request naming the profile -------------------------------------------


def machine_with_every_profile() -> Snapshot:
    units = [
        Unit(
            uuid=f"MIG-{i}",
            kind=UnitKind.MIG,
            gpu_uuid=f"GPU-{i}",
            gpu_index=i,
            model=GPU,
            memory_total_mib=None,
            gpueq=GpuEq.of(parse_profile(name).compute_slices, 7),
            profile=name,
        )
        for i, name in enumerate(CANONICAL)
    ]
    return Snapshot(units=tuple(UnitState(u) for u in units))


LIMITS = Limits(
    max_gpueq=GpuEq(8),
    max_units_per_container=8,
    max_containers=8,
    allow_full_gpu=True,
)


def ask(text: str) -> Request:
    return Request(user="alice", kind=RequestKind.MIG, profiles=(text,))


@pytest.mark.parametrize(("text", "name"), GOOD.items())
def test_the_scheduler_gives_the_unit_of_exactly_that_profile(text: str, name: str) -> None:
    (unit,) = place(machine_with_every_profile(), ask(text), LIMITS).units
    assert unit.profile == name


@pytest.mark.parametrize("text", BAD)
def test_the_scheduler_refuses_a_bad_name_with_the_one_error(text: str) -> None:
    with pytest.raises(MigProfileError) as err:
        place(machine_with_every_profile(), ask(text), LIMITS)
    assert err.value.lines() == error_lines(text)


# ---- a simulated machine file --------------------------------------------------------------


def sim_machine(tmp_path: Path, profile: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        "machine: m\ngpus:\n"
        f"  - {{name: {GPU}, memory_mib: {H100_MIB}, mig_enabled: true,\n"
        f"     mig_devices: [{{profile: {profile!r}, gpu_instance_id: 1}}]}}\n"
    )
    return path


@pytest.mark.parametrize(("text", "name"), GOOD.items())
def test_a_machine_file_reads_every_spelling_as_the_canonical_name(
    tmp_path: Path, text: str, name: str
) -> None:
    (unit,) = SimBackend(sim_machine(tmp_path, text)).sample().units()
    assert unit.profile == name


@pytest.mark.parametrize("text", BAD)
def test_a_machine_file_refuses_a_bad_name_with_the_one_error(tmp_path: Path, text: str) -> None:
    path = sim_machine(tmp_path, text)
    with pytest.raises(MachineFileError) as err:
        SimBackend(path)
    what, why, _ = error_lines(text)
    assert err.value.what == f"{path}:4: gpus[0].mig_devices[0].profile: {what}: {why}"


# ---- nvidia-smi captures: what the driver prints is kept; a unit only for a profile ----------


def listing(profile: str) -> str:
    return (
        "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-00000000-0000-0000-0000-000000000000)\n"
        f"  MIG {profile}  Device  0: (UUID: MIG-00000000-0000-0000-0000-000000000000)\n"
    )


NO_SPACES = {text: name for text, name in GOOD.items() if " " not in text.removeprefix("MIG ")}


@pytest.mark.parametrize(("text", "name"), NO_SPACES.items())
def test_nvidia_smi_listing_reads_every_spelling_as_the_canonical_name(
    text: str, name: str
) -> None:
    sample = parse_list(listing(text.removeprefix("MIG ")), "L.txt").to_sample()
    assert [u.profile for u in sample.units()] == [name]
    (lci,) = parse_lci(LCI.read_text().replace("4g.40gb", text.removeprefix("MIG ")), "lci")
    assert lci.name == name


@pytest.mark.parametrize("text", [t for t in BAD if " " not in t])
def test_nvidia_smi_captures_keep_a_bad_name_as_printed_and_offer_no_unit(text: str) -> None:
    sample = parse_list(listing(text), "L.txt").to_sample()
    assert sample.units() == []
    assert sample.gpus[0].mig_devices[0].profile == text
    (lci,) = parse_lci(LCI.read_text().replace("4g.40gb", text), "lci")
    assert lci.name == text


# ---- the NVML backend: names built from slice counts parse back to themselves ---------------

# (GI slices, CI slices, MiB of the GPU instance on an H100 as nvidia-smi shows it, suffix)
NVML = [
    (1, 1, 9984, "", "1g.10gb"),
    (1, 1, 9984, "+me", "1g.10gb+me"),
    (1, 1, 9984, "+me.all", "1g.10gb+me.all"),
    (1, 1, 9984, "-me", "1g.10gb-me"),
    (2, 2, 20096, "+gfx", "2g.20gb+gfx"),
    (3, 1, 40448, "", "1c.3g.40gb"),
]


@pytest.mark.parametrize(("gi", "ci", "mib", "suffix", "name"), NVML)
def test_nvml_names_are_canonical_names(gi: int, ci: int, mib: int, suffix: str, name: str) -> None:
    built = mig_profile_name(gi, ci, mib, H100_MIB * 1024 * 1024, Variant(suffix))
    assert built == name
    assert parse_profile(built).name == name
    assert name in CANONICAL
