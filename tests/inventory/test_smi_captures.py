"""Every capture file in tests/fixtures, table-driven: what `ds01 gpu inventory --from FILE` makes
of it, and for the kinds ds01 does not read, why.

The files are real nvidia-smi outputs (tests/fixtures/nvidia-smi/, tests/fixtures/h200/) and
variants derived from them (tests/fixtures/nvidia-smi/variants/); each directory's SOURCES.md says
where every file came from, and a test below holds that true. The H200 files were taken on one
host together with ds01's NVML probe of it, so they are also checked against that probe.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ds01.errors import CaptureError
from ds01.inventory.export import sample_to_json, units_to_json
from ds01.inventory.smi import (
    CaptureFormat,
    load_capture,
    load_captures,
    parse_capture,
    read_capture_text,
)

FIXTURES = Path(__file__).parent.parent / "fixtures"
H200 = FIXTURES / "h200"
PROBE = json.loads((H200 / "h200-driver580-nvml-probe.json").read_text())
F = CaptureFormat


@dataclass(frozen=True)
class Reads:
    """`--from FILE` alone gives a sample with these counts."""

    fmt: CaptureFormat
    gpus: int
    mig_devices: int  # listed, with or without UUID
    without_uuid: int  # of those, listed with uuid null (never units)
    units: int
    processes: int
    warnings: int


@dataclass(frozen=True)
class Keyless:
    """Parsed, but alone it names no GPU by UUID (plain tables): `--from` refuses it unless a
    capture that names the GPUs (`-L`, `-q -x`, `-q`) is given with it."""

    fmt: CaptureFormat
    gpus: int


@dataclass(frozen=True)
class NotRead:
    """A kind of file ds01 does not read as an inventory; `reason` is why, `message` the refusal."""

    reason: str
    message: str


NOT_AN_INVENTORY = "MIG configuration tables carry no UUIDs: they cannot name a single unit"

CAPTURES: dict[str, Reads | Keyless | NotRead] = {
    # The real H200 (driver 580.159.04, MIG disabled): every capture taken there.
    "h200/h200-driver580-q-x.xml": Reads(F.XML, 1, 0, 0, 1, 0, 0),
    "h200/h200-driver580-q.txt": Reads(F.QUERY_TEXT, 1, 0, 0, 1, 0, 0),
    "h200/h200-driver580-L.txt": Reads(F.LIST, 1, 0, 0, 1, 0, 0),
    "h200/h200-driver580-query-gpu.csv": Reads(F.QUERY_GPU, 1, 0, 0, 1, 0, 0),
    "h200/h200-driver580-query-apps.csv": Reads(F.COMPUTE_APPS, 0, 0, 0, 0, 0, 0),
    "h200/h200-driver580-table.txt": Keyless(F.TABLE, 1),
    "h200/h200-driver580-mig-lgi.txt": NotRead(
        "'mig -lgi' lists GPU instances (no UUIDs); on this host it printed only that no GPU "
        "has MIG enabled",
        "this is 'nvidia-smi mig' output saying no GPU has MIG enabled: it lists no GPUs",
    ),
    "h200/h200-driver580-mig-lgip.txt": NotRead(
        NOT_AN_INVENTORY + "; test_smi_mig.py and test_nvml_fake.py read it with parse_lgip",
        "this is 'nvidia-smi mig -lgip' output (MIG configuration, no UUIDs), not a GPU inventory",
    ),
    "h200/h200-driver580-topo.txt": NotRead(
        "'topo -m' gives CPU/NUMA affinity per GPU index, no UUIDs; the NVML backend reads "
        "the NUMA node itself",
        "this is 'nvidia-smi topo -m' output (GPU topology, no UUIDs)",
    ),
    "h200/h200-driver580-nvml-probe.json": NotRead(
        "ds01's own NVML probe, not nvidia-smi output; test_nvml_fake.py replays it through "
        "the NVML backend and expects the recorded sample",
        "this is JSON, not nvidia-smi output (ds01's NVML probe JSON is not a capture)",
    ),
    # Real captures from public repositories (nvidia-smi/SOURCES.md).
    "nvidia-smi/L-1xH100-80GB-HBM3-mig-3g-2g-1g-1g-driver590-masked.txt": Reads(
        F.LIST, 1, 4, 0, 4, 0, 0
    ),
    "nvidia-smi/L-1xH100-80GB-HBM3-mig-7x1g.10gb.txt": Reads(F.LIST, 1, 7, 0, 7, 0, 0),
    "nvidia-smi/L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt": Reads(F.LIST, 1, 4, 0, 4, 0, 0),
    "nvidia-smi/L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt": Reads(
        F.LIST, 1, 5, 0, 5, 0, 0
    ),
    "nvidia-smi/L-A30-in-container-one-mig-1c.2g.12gb.txt": Reads(F.LIST, 1, 1, 0, 1, 0, 0),
    "nvidia-smi/L-DGX-A100-SXM4-80GB-mig-balanced-first10lines.txt": Reads(
        F.LIST, 2, 8, 0, 8, 0, 0
    ),
    "nvidia-smi/csv-query-compute-apps-1xH100-80GB-HBM3-mig-3procs-driver590.csv": Reads(
        F.COMPUTE_APPS, 0, 0, 0, 0, 3, 0
    ),
    # A MIG GPU: --query-gpu cannot list MIG devices (one warning says so).
    "nvidia-smi/csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-driver590.csv": Reads(
        F.QUERY_GPU, 1, 0, 0, 0, 0, 1
    ),
    "nvidia-smi/mig-lci-A100-SXM4-80GB-gpu0-4g.40gb.txt": NotRead(
        NOT_AN_INVENTORY + "; test_smi_mig.py reads it with parse_lci",
        "this is 'nvidia-smi mig -lci' output (MIG configuration, no UUIDs), not a GPU inventory",
    ),
    "nvidia-smi/mig-lgip-A100-SXM4-80GB-partially-allocated.txt": NotRead(
        NOT_AN_INVENTORY + "; test_smi_mig.py reads it with parse_lgip",
        "this is 'nvidia-smi mig -lgip' output (MIG configuration, no UUIDs), not a GPU inventory",
    ),
    "nvidia-smi/table-1xA100-SXM4-40GB-mig-enabled-no-devices-driver450.txt": Keyless(F.TABLE, 1),
    "nvidia-smi/table-1xH100-80GB-HBM3-mig-4devices-3processes-driver590.txt": Keyless(F.TABLE, 1),
    "nvidia-smi/table-1xH200-mig-5devices-idle-driver590.txt": Keyless(F.TABLE, 1),
    "nvidia-smi/table-8xH100-80GB-HBM3-all-mig-32devices-driver535.txt": Keyless(F.TABLE, 8),
    "nvidia-smi/xml-1xRTX3080-windows-wddm-5processes-driver536-v12.xml": Reads(
        F.XML,
        1,
        0,
        0,
        1,
        0,
        0,  # five graphics clients, no compute process
    ),
    "nvidia-smi/xml-1xRTX4000-SFF-Ada-4processes-driver595-v13.xml": Reads(F.XML, 1, 0, 0, 1, 2, 0),
    "nvidia-smi/xml-8xTeslaV100S-PCIE-32GB-processes-driver460-v11.xml": Reads(
        F.XML, 8, 0, 0, 8, 8, 0
    ),
    # Driver 535 prints no MIG UUIDs: 4 devices listed with uuid null, no units; warnings for
    # that and for the log holding 1 of 4 GPUs.
    "nvidia-smi/xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml": Reads(
        F.XML, 1, 4, 4, 0, 0, 2
    ),
    # Variants derived from the real files (nvidia-smi/variants/SOURCES.md).
    "nvidia-smi/variants/L-2xA100-SXM4-80GB-legacy-mig-uuids-from-DGX.txt": Reads(
        F.LIST, 2, 8, 0, 8, 0, 0
    ),
    "nvidia-smi/variants/L-2xA100-SXM4-80GB-mig-on-gpu0-only-from-DGX.txt": Reads(
        F.LIST, 2, 4, 0, 5, 0, 0
    ),
    "nvidia-smi/variants/L-2xA100-SXM4-80GB-mig-on-gpu0-only-pairs-with-xml.txt": Reads(
        F.LIST, 2, 4, 0, 5, 0, 0
    ),
    "nvidia-smi/variants/csv-query-compute-apps-1xH100-noheader.csv": NotRead(
        "--format=csv,noheader: without the header the columns cannot be identified",
        "CSV without a recognised header line (--format=csv,noheader?): "
        "columns cannot be identified",
    ),
    "nvidia-smi/variants/csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-crlf.csv": Reads(
        F.QUERY_GPU, 1, 0, 0, 0, 0, 1
    ),
    "nvidia-smi/variants/csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-nounits.csv": Reads(
        F.QUERY_GPU, 1, 0, 0, 0, 0, 1
    ),
    "nvidia-smi/variants/table-1xA100-SXM4-40GB-driver450-2x3g-devices-1process.txt": Keyless(
        F.TABLE, 1
    ),
    "nvidia-smi/variants/table-1xH100-80GB-HBM3-mig-4devices-3processes-crlf.txt": Keyless(
        F.TABLE, 1
    ),
    "nvidia-smi/variants/xml-1xRTX4000-SFF-Ada-4processes-v13-crlf.xml": Reads(
        F.XML, 1, 0, 0, 1, 2, 0
    ),
    "nvidia-smi/variants/xml-2xA100-SXM4-80GB-mig-on-gpu0-only-v12.xml": Reads(
        F.XML, 2, 4, 4, 1, 2, 1
    ),
    "nvidia-smi/variants/xml-2xTeslaV100S-PCIE-32GB-processes-v10-from-v11.xml": Reads(
        F.XML, 2, 0, 0, 2, 2, 0
    ),
}


def capture_files() -> set[str]:
    """Every file under tests/fixtures that is not a note or a simulated machine."""
    return {
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*")
        if p.is_file()
        and p.suffix != ".md"
        and p.name != ".gitattributes"
        and p.relative_to(FIXTURES).parts[0] != "machines"
    }


def test_every_capture_file_is_in_the_table() -> None:
    assert capture_files() == set(CAPTURES)


@pytest.mark.parametrize("name", sorted(CAPTURES))
def test_every_capture_file_has_a_row_in_the_sources_next_to_it(name: str) -> None:
    sources = (FIXTURES / name).parent / "SOURCES.md"
    rows = [line for line in sources.read_text().splitlines() if line.startswith("| `")]
    assert any(line.startswith(f"| `{Path(name).name}` |") for line in rows), sources


@pytest.mark.parametrize("name", sorted(n for n, e in CAPTURES.items() if isinstance(e, Reads)))
def test_a_capture_ds01_reads_gives_a_sample(name: str) -> None:
    expected = CAPTURES[name]
    assert isinstance(expected, Reads)
    path = FIXTURES / name

    sample = load_capture(path)

    assert parse_capture(read_capture_text(path), name).formats == (expected.fmt,)
    assert (
        len(sample.gpus),
        sum(len(g.mig_devices) + len(g.unkeyed_mig_devices) for g in sample.gpus),
        sum(len(g.unkeyed_mig_devices) for g in sample.gpus),
        len(sample.units()),
        len(sample.processes),
        len(sample.warnings),
    ) == (
        expected.gpus,
        expected.mig_devices,
        expected.without_uuid,
        expected.units,
        expected.processes,
        expected.warnings,
    )
    unit_uuids = {u.uuid for u in sample.units()}
    assert all(u.startswith(("GPU-", "MIG-")) for u in unit_uuids)


@pytest.mark.parametrize("name", sorted(n for n, e in CAPTURES.items() if isinstance(e, Keyless)))
def test_a_table_parses_but_alone_names_no_gpu(name: str) -> None:
    expected = CAPTURES[name]
    assert isinstance(expected, Keyless)
    path = FIXTURES / name

    capture = parse_capture(read_capture_text(path), name)
    with pytest.raises(CaptureError) as err:
        load_capture(path)

    assert capture.formats == (expected.fmt,)
    assert len(capture.gpus) == expected.gpus
    assert all(g.uuid is None and g.name for g in capture.gpus)
    assert str(err.value) == (
        f"{path}: GPU 0 cannot be keyed: plain nvidia-smi tables carry no GPU UUIDs"
    )


@pytest.mark.parametrize("name", sorted(n for n, e in CAPTURES.items() if isinstance(e, NotRead)))
def test_a_kind_ds01_does_not_read_is_refused_saying_what_it_is(name: str) -> None:
    expected = CAPTURES[name]
    assert isinstance(expected, NotRead)
    path = FIXTURES / name

    with pytest.raises(CaptureError) as err:
        load_capture(path)

    assert str(err.value) == f"{path}: {expected.message}"
    assert expected.reason  # the table says why ds01 does not read this kind


# ---- the H200: every capture of one host, and ds01's NVML probe of it ------------------------

IDENTITY = ("index", "uuid", "name", "memory_total_mib", "mig_enabled", "pci_bus_id")
# What each capture cannot say (None), as opposed to what it got wrong.
H200_UNSAID: dict[tuple[str, ...], set[str]] = {
    ("h200-driver580-q-x.xml",): set(),
    ("h200-driver580-q.txt",): set(),
    ("h200-driver580-query-gpu.csv",): set(),
    ("h200-driver580-L.txt",): {"memory_total_mib", "mig_enabled", "pci_bus_id"},
    ("h200-driver580-table.txt", "h200-driver580-L.txt"): set(),
}


def _identity(gpu: dict[str, Any]) -> dict[str, Any]:
    return {k: gpu[k] for k in IDENTITY}


@pytest.mark.parametrize("files", sorted(H200_UNSAID), ids=" + ".join)
def test_each_h200_capture_agrees_with_the_nvml_probe_of_that_host(files: tuple[str, ...]) -> None:
    (nvml,) = PROBE["ds01_sample"]["gpus"]
    sample = sample_to_json(load_captures([H200 / f for f in files]))

    (gpu,) = sample["gpus"]
    unsaid = H200_UNSAID[files]
    assert {k for k, v in _identity(gpu).items() if v is None} == unsaid
    assert {k: v for k, v in _identity(gpu).items() if k not in unsaid} == {
        k: v for k, v in _identity(nvml).items() if k not in unsaid
    }
    assert gpu["mig_devices"] == []
    assert (sample["processes"], sample["warnings"]) == ([], [])


def test_all_h200_captures_merge_into_one_gpu_offering_one_whole_gpu_unit() -> None:
    readable = [
        H200 / name.removeprefix("h200/")
        for name, expected in CAPTURES.items()
        if name.startswith("h200/") and not isinstance(expected, NotRead)
    ]
    sample = load_captures(readable)

    (unit,) = units_to_json(sample)["units"]
    (nvml_unit,) = PROBE["ds01_units"]["units"]
    same = ("uuid", "kind", "gpu_index", "model", "label", "memory_total_mib", "gpueq_exact")
    assert {k: unit[k] for k in same} == {k: nvml_unit[k] for k in same}
    assert (sample.driver_version, sample.processes, sample.warnings) == ("580.159.04", (), ())
