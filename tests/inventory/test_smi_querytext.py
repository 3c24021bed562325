"""The text form of `nvidia-smi -q`: the real H200 log, and small literal variants for what that
log does not show (MIG devices, processes, several GPUs, older layouts, garbled values)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    CaptureFormat,
    SmiGpu,
    SmiMigDevice,
    SmiProcess,
    load_captures,
    parse_query_text,
    parse_xml,
    read_capture_text,
)
from ds01.model.inventory import GpuProcess, UnkeyedMigDevice

FIXTURES = Path(__file__).parent.parent / "fixtures"
H200_Q = FIXTURES / "h200" / "h200-driver580-q.txt"
H200_QX = FIXTURES / "h200" / "h200-driver580-q-x.xml"
H200_MIG_L = FIXTURES / "nvidia-smi" / "L-1xH200-mig-1c.3g-2c.3g-2g-1g-1g-driver590-masked.txt"
H200_UUID = "GPU-a8c6ca6e-7bcb-4d25-e05a-cc3de6aa2830"
MASKED_GPU = "GPU-00000000-0000-0000-0000-000000000000"

# Mimics the `nvidia-smi -q` of a MIG H200 on driver 610.43.02 (the "idle :: query (-q)" section
# of utkuozdemir/nvidia_gpu_exporter internal/captures/linux-x86_64__nvidia-h200-mig__610.43.02
# .txt): the 'Driver Version ... [Deprecated ...]' and 'KMD Version' lines, one 'MIG Device'
# block per device with 'Shared FB Memory Usage'. Cut to the sections ds01 reads plus a few it
# skips. The MIG layout (GI/CI ids, memory, bus id) is that of the real driver-590 H200 table
# and `-L` in tests/fixtures/nvidia-smi, so the `-L` names these devices. The two processes
# (GI/CI lines before 'Process ID', as drivers 450+ print them; a name with a colon) are made up.
DEPRECATED_DRIVER = "[Deprecated; will be removed in CUDA 14.0. Use KMD Version instead]"
DEPRECATED_CUDA = "[Deprecated; will be removed in CUDA 14.0. Use CUDA UMD Version instead]"
MIG_H200_Q = f"""
==============NVSMI LOG==============

Timestamp                                              : Tue Sep  1 20:47:29 2026
Driver Version                                         : 610.43.02 {DEPRECATED_DRIVER}
CUDA Version                                           : 13.3 {DEPRECATED_CUDA}
KMD Version                                            : 610.43.02
CUDA UMD Version                                       : 13.3

Attached GPUs                                          : 1
GPU 00000000:83:00.0
    Product Name                                       : NVIDIA H200
    Product Architecture                               : Hopper
    MIG Mode
        Current                                        : Enabled
        Pending                                        : Enabled
    MIG Device
        Index                                          : 0
        GPU Instance ID                                : 2
        Compute Instance ID                            : 0
        Device Attributes
            Shared
                Multiprocessor count                   : 16
        Shared FB Memory Usage
            Total                                      : 71424 MiB
            Reserved                                   : 0 MiB
            Used                                       : 22 MiB
            Free                                       : 71401 MiB
    MIG Device
        Index                                          : 1
        GPU Instance ID                                : 2
        Compute Instance ID                            : 1
        Device Attributes
            Shared
                Multiprocessor count                   : 32
        Shared FB Memory Usage
            Total                                      : 71424 MiB
            Used                                       : 10262 MiB
    MIG Device
        Index                                          : 2
        GPU Instance ID                                : 3
        Compute Instance ID                            : 0
        Shared FB Memory Usage
            Total                                      : 33280 MiB
            Used                                       : 4369 MiB
    MIG Device
        Index                                          : 3
        GPU Instance ID                                : 9
        Compute Instance ID                            : 0
        Shared FB Memory Usage
            Total                                      : 16384 MiB
            Used                                       : 9 MiB
    MIG Device
        Index                                          : 4
        GPU Instance ID                                : 10
        Compute Instance ID                            : 0
        Shared FB Memory Usage
            Total                                      : 16384 MiB
            Used                                       : 9 MiB
    Serial Number                                      : 0000000000000
    GPU UUID                                           : GPU-00000000-0000-0000-0000-000000000000
    PCI
        Bus Id                                         : 00000000:83:00.0
    FB Memory Usage
        Total                                          : 143771 MiB
        Reserved                                       : 623 MiB
        Used                                           : 14671 MiB
        Free                                           : 129100 MiB
    Utilization
        GPU                                            : N/A
    Temperature
        GPU Current Temp                               : 40 C
    GPU Power Readings
        Average Power Draw                             : 130.28 W
        Instantaneous Power Draw                       : 130.66 W
    Processes
        GPU instance ID                                : 2
        Compute instance ID                            : 1
        Process ID                                     : 41200
            Type                                       : C
            Name                                       : /opt/conda/bin/python: worker 3
            Used GPU Memory                            : 10240 MiB
        GPU instance ID                                : 3
        Compute instance ID                            : 0
        Process ID                                     : 41123
            Type                                       : C
            Name                                       : python3
            Used GPU Memory                            : 4352 MiB
"""

# Mimics an older driver's `-q` (before GI/CI ids, drivers up to 440, e.g. the text form of the
# v10 logs in tests/fixtures/nvidia-smi/variants): 'Power Readings' / 'Power Draw', processes
# without instance ids, and a log taken with `-i 1` (2 attached GPUs, one shown). Values made up.
OLD_DRIVER_Q = """
==============NVSMI LOG==============

Timestamp                           : Mon Jun  1 10:00:00 2020
Driver Version                      : 440.64.00
CUDA Version                        : 10.2

Attached GPUs                       : 2
GPU 00000000:00:09.0
    Product Name                    : Tesla V100S-PCIE-32GB
    GPU UUID                        : GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90
    FB Memory Usage
        Total                       : 32510 MiB
        Used                        : 30567 MiB
        Free                        : 1943 MiB
    Utilization
        Gpu                         : 87 %
    Temperature
        GPU Current Temp            : 58 C
    Power Readings
        Power Draw                  : 212.45 W
    Processes
        Process ID                  : 52210
            Type                    : C
            Name                    : /opt/conda/bin/python
            Used GPU Memory         : 30517 MiB
        Process ID                  : 1624
            Type                    : G
            Name                    : /usr/lib/xorg/Xorg
            Used GPU Memory         : Not available
"""


def test_the_real_h200_log_reads_name_uuid_memory_mig_mode_and_readings() -> None:
    capture = parse_query_text(read_capture_text(H200_Q), "q.txt")

    assert capture.formats == (CaptureFormat.QUERY_TEXT,)
    assert capture.gpus == (
        SmiGpu(
            index=0,
            uuid=H200_UUID,
            name="NVIDIA H200",
            pci_bus_id="00000000:00:06.0",
            memory_total_mib=143771,
            memory_used_mib=0,
            mig_enabled=False,
            utilization_pct=0.0,
            temperature_c=35.0,
            power_w=93.22,  # 'Average Power Draw': driver 580 prints no plain 'Power Draw'
        ),
    )
    assert (capture.processes, capture.warnings) == ((), ())  # 'Processes : None'
    assert (capture.driver_version, capture.timestamp) == ("580.159.04", "Fri Dec  4 16:59:14 2026")


def test_the_real_h200_log_and_its_xml_form_describe_the_same_gpu() -> None:
    text = parse_query_text(read_capture_text(H200_Q), "q.txt").to_sample().gpus
    xml = parse_xml(read_capture_text(H200_QX), "q.xml").to_sample().gpus

    identity = ("index", "uuid", "name", "memory_total_mib", "mig_enabled", "pci_bus_id")
    assert [[getattr(g, k) for k in identity] for g in text] == [
        [getattr(g, k) for k in identity] for g in xml
    ]


def test_mig_devices_are_listed_without_uuid_and_offer_no_unit() -> None:
    capture = parse_query_text(MIG_H200_Q, "mig-q.txt")
    sample = capture.to_sample()

    assert capture.driver_version == "610.43.02"
    assert capture.gpus[0].mig_devices[:2] == (
        SmiMigDevice(0, None, None, 2, 0, 71424, 22, 16),
        SmiMigDevice(1, None, None, 2, 1, 71424, 10262, 32),
    )
    (gpu,) = sample.gpus
    assert (gpu.uuid, gpu.mig_enabled, gpu.mig_devices, gpu.utilization_pct) == (
        MASKED_GPU,
        True,
        (),
        None,
    )
    assert gpu.unkeyed_mig_devices[2] == UnkeyedMigDevice(2, 3, 0, 33280, 4369)
    assert len(gpu.unkeyed_mig_devices) == 5
    assert sample.units() == []
    assert sample.warnings == (
        "GPU 0: 5 MIG device(s) without a UUID in this capture "
        "(GI/CI 2/0, 2/1, 3/0, 9/0, 10/0): listed with uuid null and not allocatable; "
        "'nvidia-smi -L' names them: capture it at the same moment and pass it with another "
        "--from",
    )
    # The processes are known to run in a MIG device, but not in which unit.
    assert sample.processes == (
        GpuProcess(41200, MASKED_GPU, 10240, "/opt/conda/bin/python: worker 3", unit_uuid=None),
        GpuProcess(41123, MASKED_GPU, 4352, "python3", unit_uuid=None),
    )


def test_the_l_listing_names_the_mig_devices_and_their_processes(tmp_path: Path) -> None:
    q = tmp_path / "q.txt"
    q.write_text(MIG_H200_Q)

    sample = load_captures([q, H200_MIG_L])

    assert sample.warnings == ()
    assert [
        (u.uuid, u.profile, u.gpu_instance_id, u.compute_instance_id) for u in sample.units()
    ] == [
        ("MIG-00000000-0000-0000-0000-000000000000", "1c.3g.71gb", 2, 0),
        ("MIG-00000001-0000-0000-0000-000000000001", "2c.3g.71gb", 2, 1),
        ("MIG-00000002-0000-0000-0000-000000000002", "2g.35gb", 3, 0),
        ("MIG-00000003-0000-0000-0000-000000000003", "1g.18gb", 9, 0),
        ("MIG-00000004-0000-0000-0000-000000000004", "1g.18gb", 10, 0),
    ]
    assert [(p.pid, p.unit_uuid) for p in sample.processes] == [
        (41200, "MIG-00000001-0000-0000-0000-000000000001"),
        (41123, "MIG-00000002-0000-0000-0000-000000000002"),
    ]
    assert sample.gpus[0].unkeyed_mig_devices == ()


def test_an_older_driver_log_of_one_of_two_gpus() -> None:
    capture = parse_query_text(OLD_DRIVER_Q, "old-q.txt")

    (gpu,) = capture.gpus
    assert (gpu.index, gpu.index_from_position, gpu.name, gpu.mig_enabled) == (
        0,
        True,
        "Tesla V100S-PCIE-32GB",
        None,  # no 'MIG Mode' section: the driver does not say
    )
    assert (gpu.memory_total_mib, gpu.utilization_pct, gpu.power_w) == (32510, 87.0, 212.45)
    assert capture.warnings == (
        "the log holds 1 of 2 attached GPUs (taken with -i, or cut short); "
        "GPU indices are positions in the file",
    )
    assert capture.processes == (
        SmiProcess(
            52210,
            "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90",
            0,
            "00000000:00:09.0",
            None,
            None,
            30517,
            "/opt/conda/bin/python",
            "C",
        ),
        SmiProcess(
            1624,
            "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90",
            0,
            "00000000:00:09.0",
            None,
            None,
            None,  # 'Not available'
            "/usr/lib/xorg/Xorg",
            "G",
        ),
    )
    # The sample keeps compute work only, on the whole GPU.
    assert [(p.pid, p.unit_uuid) for p in capture.to_sample().processes] == [
        (52210, "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90")
    ]


def test_crlf_line_ends_read_like_lf() -> None:
    text = read_capture_text(H200_Q)

    crlf = parse_query_text(text.replace("\n", "\r\n"), "q.txt")

    assert crlf == parse_query_text(text, "q.txt")


def _h200_with(old: str, new: str) -> str:
    text = read_capture_text(H200_Q)
    assert old in text
    return text.replace(old, new, 1)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            _h200_with(H200_UUID, "GPU-xyz"),
            "q.txt: GPU 00000000:00:06.0 GPU UUID: not a GPU UUID: 'GPU-xyz'",
            id="a garbled GPU UUID",
        ),
        pytest.param(
            _h200_with("143771 MiB", "140 GB"),
            "q.txt: GPU 00000000:00:06.0 FB Memory Total: expected MiB, got '140 GB'",
            id="memory in another unit",
        ),
        pytest.param(
            _h200_with(
                "        Current                                        : Disabled",
                "        Current                                        : Sometimes",
            ),
            "q.txt: GPU 00000000:00:06.0 MIG Mode: expected Enabled or Disabled, got 'Sometimes'",
            id="an unknown MIG mode word",
        ),
        pytest.param(
            _h200_with(
                "Bus Id                                         : 00000000:00:06.0",
                "Bus Id                                         : slot 6",
            ),
            "q.txt: GPU 00000000:00:06.0: not a PCI bus id: 'slot 6'",
            id="a garbled bus id",
        ),
        pytest.param(
            MIG_H200_Q.replace(
                "Process ID                                     : 41123",
                "Process ID                                     : N/A",
            ),
            "q.txt: GPU 0 process line 85: a process without a pid",
            id="a process without a pid",
        ),
        pytest.param(
            "==============NVSMI LOG==============\nAttached GPUs : 0\n",
            "q.txt: the 'nvidia-smi -q' log lists no GPUs",
            id="no GPU",
        ),
        pytest.param(
            "Attached GPUs : 1\nGPU 00000000:00:06.0\n",
            "q.txt: no '==============NVSMI LOG==============' line: not an 'nvidia-smi -q' log",
            id="no banner",
        ),
    ],
)
def test_garbled_logs_are_refused_in_one_line(text: str, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_query_text(text, "q.txt")

    assert str(err.value) == message


def test_a_log_taken_with_d_has_no_uuid_and_cannot_become_a_sample() -> None:
    # `nvidia-smi -q -d MEMORY` prints the sections asked for, without 'GPU UUID'.
    text = (
        "\n==============NVSMI LOG==============\n\nAttached GPUs : 1\nGPU 00000000:00:06.0\n"
        "    FB Memory Usage\n        Total : 143771 MiB\n        Used : 0 MiB\n"
    )
    capture = parse_query_text(text, "q.txt")

    with pytest.raises(CaptureError) as err:
        capture.to_sample()

    assert capture.gpus[0].memory_total_mib == 143771
    assert str(err.value) == (
        "q.txt: GPU 0 cannot be keyed: this -q log has no 'GPU UUID' line (taken with -d?)"
    )
