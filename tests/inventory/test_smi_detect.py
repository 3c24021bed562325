"""Format detection by content, file loading, and the one-line refusals of `--from PATH`."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import CaptureFormat, detect_format, load_capture, read_capture_text

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
VARIANTS = FIXTURES / "variants"

F = CaptureFormat
EXPECTED_FORMATS = {
    "L-1xH100-80GB-HBM3-mig-3g-2g-1g-1g-driver590-masked.txt": F.LIST,
    "L-1xH100-80GB-HBM3-mig-7x1g.10gb.txt": F.LIST,
    "L-1xH100-80GB-HBM3-mig-mixed-3g-2g-1g-1g.txt": F.LIST,
    "L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt": F.LIST,
    "L-A30-in-container-one-mig-1c.2g.12gb.txt": F.LIST,
    "L-DGX-A100-SXM4-80GB-mig-balanced-first10lines.txt": F.LIST,
    "csv-query-compute-apps-1xH100-80GB-HBM3-mig-3procs-driver590.csv": F.COMPUTE_APPS,
    "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-driver590.csv": F.QUERY_GPU,
    "mig-lci-A100-SXM4-80GB-gpu0-4g.40gb.txt": F.MIG_LCI,
    "mig-lgip-A100-SXM4-80GB-partially-allocated.txt": F.MIG_LGIP,
    "table-1xA100-SXM4-40GB-mig-enabled-no-devices-driver450.txt": F.TABLE,
    "table-1xH100-80GB-HBM3-mig-4devices-3processes-driver590.txt": F.TABLE,
    "table-1xH200-mig-5devices-idle-driver590.txt": F.TABLE,
    "table-8xH100-80GB-HBM3-all-mig-32devices-driver535.txt": F.TABLE,
    "xml-1xRTX3080-windows-wddm-5processes-driver536-v12.xml": F.XML,
    "xml-1xRTX4000-SFF-Ada-4processes-driver595-v13.xml": F.XML,
    "xml-8xTeslaV100S-PCIE-32GB-processes-driver460-v11.xml": F.XML,
    "xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml": F.XML,
    "variants/L-2xA100-SXM4-80GB-legacy-mig-uuids-from-DGX.txt": F.LIST,
    "variants/L-2xA100-SXM4-80GB-mig-on-gpu0-only-from-DGX.txt": F.LIST,
    "variants/L-2xA100-SXM4-80GB-mig-on-gpu0-only-pairs-with-xml.txt": F.LIST,
    "variants/csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-crlf.csv": F.QUERY_GPU,
    "variants/csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-nounits.csv": F.QUERY_GPU,
    "variants/table-1xA100-SXM4-40GB-driver450-2x3g-devices-1process.txt": F.TABLE,
    "variants/table-1xH100-80GB-HBM3-mig-4devices-3processes-crlf.txt": F.TABLE,
    "variants/xml-1xRTX4000-SFF-Ada-4processes-v13-crlf.xml": F.XML,
    "variants/xml-2xA100-SXM4-80GB-mig-on-gpu0-only-v12.xml": F.XML,
    "variants/xml-2xTeslaV100S-PCIE-32GB-processes-v10-from-v11.xml": F.XML,
}


def test_every_fixture_has_an_expected_format() -> None:
    on_disk = {
        str(p.relative_to(FIXTURES))
        for p in FIXTURES.rglob("*")
        if p.is_file() and p.suffix != ".md" and p.name != ".gitattributes"
    }

    assert on_disk - {"variants/csv-query-compute-apps-1xH100-noheader.csv"} == set(
        EXPECTED_FORMATS
    )


@pytest.mark.parametrize(("name", "fmt"), sorted(EXPECTED_FORMATS.items()))
def test_format_is_detected_from_content(name: str, fmt: CaptureFormat) -> None:
    assert detect_format(read_capture_text(FIXTURES / name), name) is fmt


@pytest.mark.parametrize(
    ("name", "gpus", "units"),
    [
        pytest.param("xml-8xTeslaV100S-PCIE-32GB-processes-driver460-v11.xml", 8, 8, id="v11 XML"),
        pytest.param("xml-1xRTX3080-windows-wddm-5processes-driver536-v12.xml", 1, 1, id="v12 XML"),
        pytest.param("xml-1xRTX4000-SFF-Ada-4processes-driver595-v13.xml", 1, 1, id="v13 XML"),
        pytest.param(
            "xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml",
            1,
            0,
            id="MIG XML without MIG UUIDs offers no units",
        ),
        pytest.param("L-DGX-A100-SXM4-80GB-mig-balanced-first10lines.txt", 2, 8, id="-L"),
        pytest.param(
            "csv-query-gpu-1xH100-80GB-HBM3-mig-allfields-driver590.csv",
            1,
            0,
            id="query-gpu CSV of a MIG GPU offers no units",
        ),
        pytest.param(
            "csv-query-compute-apps-1xH100-80GB-HBM3-mig-3procs-driver590.csv",
            0,
            0,
            id="compute-apps CSV lists processes only",
        ),
    ],
)
def test_load_capture_gives_a_machine_sample(name: str, gpus: int, units: int) -> None:
    sample = load_capture(FIXTURES / name)

    assert (len(sample.gpus), len(sample.units())) == (gpus, units)
    assert sample.source == str(FIXTURES / name)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "c.txt: empty capture", id="an empty file"),
        pytest.param(" \n\r\n\t\n", "c.txt: empty capture", id="a file of blank lines"),
        pytest.param(
            "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n",
            "c.txt: the capture holds nvidia-smi's failure message, not GPU data",
            id="nvidia-smi's driver failure message",
        ),
        pytest.param(
            "No devices were found\n",
            "c.txt: nvidia-smi found no GPUs when this was captured",
            id="nvidia-smi on a machine without GPUs",
        ),
        pytest.param(
            "\n==============NVSMI LOG==============\n\nTimestamp : Fri Jul  3 22:22:00 2026\n",
            "c.txt: the 'nvidia-smi -q' log lists no GPUs",
            id="a -q log cut short before its first GPU",
        ),
        pytest.param(
            "No MIG-enabled devices found.\n",
            "c.txt: this is 'nvidia-smi mig' output saying no GPU has MIG enabled: "
            "it lists no GPUs",
            id="nvidia-smi mig -lgi on a machine without MIG",
        ),
        pytest.param(
            '{"ds01_sample": {"gpus": []}}\n',
            "c.txt: this is JSON, not nvidia-smi output (ds01's NVML probe JSON is not a capture)",
            id="JSON",
        ),
        pytest.param(
            "hello world\nsecond line\n",
            "c.txt: not a known nvidia-smi capture (first line 'hello world')",
            id="unknown text",
        ),
        pytest.param(
            "0, GPU-00000000-0000-0000-0000-000000000000, 81559 MiB\n",
            "c.txt: CSV without a recognised header line (--format=csv,noheader?): "
            "columns cannot be identified",
            id="CSV without header",
        ),
        pytest.param(
            "<html><body>502 Bad Gateway</body></html>",
            "c.txt: XML without an <nvidia_smi_log> element: not an nvidia-smi -q -x log",
            id="other markup",
        ),
    ],
)
def test_unusable_captures_are_refused_in_one_line_naming_the_file(
    tmp_path: Path, text: str, message: str
) -> None:
    path = tmp_path / "c.txt"
    path.write_text(text)

    with pytest.raises(CaptureError) as err:
        load_capture(path)

    assert str(err.value) == f"{tmp_path}/{message}"
    assert "\n" not in str(err.value)


def test_a_missing_file_is_a_capture_error(tmp_path: Path) -> None:
    with pytest.raises(CaptureError) as err:
        load_capture(tmp_path / "nope.xml")

    assert str(err.value) == f"{tmp_path}/nope.xml: cannot read: No such file or directory"


def test_a_utf16_capture_with_bom_is_read(tmp_path: Path) -> None:
    # PowerShell's '>' writes UTF-16 with a BOM.
    original = FIXTURES / "L-A30-in-container-one-mig-1c.2g.12gb.txt"
    path = tmp_path / "L.txt"
    path.write_bytes(codecs.BOM_UTF16_LE + original.read_text().encode("utf-16-le"))

    sample = load_capture(path)

    assert [u.uuid for u in sample.units()] == ["MIG-54cc2421-6f2d-59e9-b074-20707aadd71e"]


def test_a_utf8_bom_is_ignored(tmp_path: Path) -> None:
    original = FIXTURES / "L-A30-in-container-one-mig-1c.2g.12gb.txt"
    path = tmp_path / "L.txt"
    path.write_bytes(codecs.BOM_UTF8 + original.read_bytes())

    assert len(load_capture(path).units()) == 1


def test_bytes_that_are_not_utf8_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.txt"
    path.write_bytes(b"GPU 0: \xff\xfe\xfd")

    with pytest.raises(CaptureError) as err:
        load_capture(path)

    assert str(err.value) == f"{path}: not UTF-8 text (bad byte at offset 7)"
