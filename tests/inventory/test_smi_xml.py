"""`nvidia-smi -q -x` logs, DTD v10 to v13: real captures and hand-made variants, values by hand."""

from __future__ import annotations

from pathlib import Path

import pytest

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    SmiCapture,
    SmiMigDevice,
    merge_captures,
    parse_list,
    parse_xml,
    read_capture_text,
)
from ds01.model.gpueq import GpuEq
from ds01.model.inventory import GpuProcess, UnkeyedMigDevice

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
V11_V100S = FIXTURES / "xml-8xTeslaV100S-PCIE-32GB-processes-driver460-v11.xml"
V12_A100_MIG = FIXTURES / "xml-A100-SXM4-80GB-mig-enabled-4x1g.20gb-driver535-v12-1of4gpus.xml"
V12_RTX3080 = FIXTURES / "xml-1xRTX3080-windows-wddm-5processes-driver536-v12.xml"
V13_RTX4000 = FIXTURES / "xml-1xRTX4000-SFF-Ada-4processes-driver595-v13.xml"
V10_VARIANT = FIXTURES / "variants" / "xml-2xTeslaV100S-PCIE-32GB-processes-v10-from-v11.xml"
MIXED_VARIANT = FIXTURES / "variants" / "xml-2xA100-SXM4-80GB-mig-on-gpu0-only-v12.xml"
V13_CRLF = FIXTURES / "variants" / "xml-1xRTX4000-SFF-Ada-4processes-v13-crlf.xml"


def parse(path: Path) -> SmiCapture:
    return parse_xml(read_capture_text(path), path.name)


def test_v11_log_of_eight_v100s_lists_every_gpu_by_uuid_in_index_order() -> None:
    capture = parse(V11_V100S)

    assert capture.driver_version == "460.73.01"
    assert capture.timestamp == "Thu Sep 15 13:55:33 2022"
    assert capture.warnings == ()
    assert [(g.index, g.uuid, g.pci_bus_id) for g in capture.gpus] == [
        (0, "GPU-76098dc1-d3bc-9a1b-7ea6-f7b48837829e", "00000000:00:0D.0"),
        (1, "GPU-bbf7a241-bf9a-eb90-b2fb-d213294faf48", "00000000:00:0E.0"),
        (2, "GPU-8f75e71c-23dd-a060-d997-4caf592954db", "00000000:00:0F.0"),
        (3, "GPU-3181eb56-505c-8214-ba05-c132f68f89b8", "00000000:00:10.0"),
        (4, "GPU-2aa87d54-d4ff-2900-812b-1a4b7e119583", "00000000:00:11.0"),
        (5, "GPU-39c3a168-9034-0b5a-223a-1042f30a9242", "00000000:00:12.0"),
        (6, "GPU-d2446f91-171e-1b54-515d-9d9b03484ddf", "00000000:00:13.0"),
        (7, "GPU-1d955959-c95b-4f40-2cac-100d3006ffe2", "00000000:00:14.0"),
    ]
    assert {g.name for g in capture.gpus} == {"Tesla V100S-PCIE-32GB"}
    assert {g.memory_total_mib for g in capture.gpus} == {32510}
    # MIG is N/A on a V100: unknown, not "disabled".
    assert {g.mig_enabled for g in capture.gpus} == {None}


def test_v11_log_reads_first_gpu_readings() -> None:
    gpu = parse(V11_V100S).gpus[0]

    assert gpu.memory_used_mib == 31689
    assert gpu.utilization_pct == 97.0
    assert gpu.temperature_c == 66.0
    assert gpu.power_w == 232.80
    assert gpu.mig_devices == ()


def test_v11_log_lists_one_multi_gpu_process_once_per_gpu() -> None:
    capture = parse(V11_V100S)

    assert [(p.pid, p.gpu_index, p.used_memory_mib) for p in capture.processes] == [
        (37305, 0, 31683),
        (37305, 1, 29539),
        (37305, 2, 29533),
        (37305, 3, 32093),
        (37305, 4, 29511),
        (37305, 5, 32135),
        (37305, 6, 32151),
        (37305, 7, 29495),
    ]
    assert {(p.name, p.type, p.gpu_instance_id) for p in capture.processes} == {
        ("python", "C", None)
    }


def test_v11_log_becomes_eight_whole_gpu_units() -> None:
    sample = parse(V11_V100S).to_sample()

    assert [u.gpueq for u in sample.units()] == [GpuEq(1)] * 8
    assert sample.processes[0] == GpuProcess(
        pid=37305,
        gpu_uuid="GPU-76098dc1-d3bc-9a1b-7ea6-f7b48837829e",
        used_memory_mib=31683,
        name="python",
        unit_uuid="GPU-76098dc1-d3bc-9a1b-7ea6-f7b48837829e",
    )


def test_v12_a100_log_keeps_mig_devices_by_gi_ci_without_inventing_profiles() -> None:
    capture = parse(V12_A100_MIG)
    gpu = capture.gpus[0]

    assert (gpu.uuid, gpu.name, gpu.mig_enabled) == (
        "GPU-513536b6-7d19-9063-b049-1e69664bb298",
        "NVIDIA A100-SXM4-80GB",
        True,
    )
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.utilization_pct) == (81920, 50, None)
    assert (gpu.temperature_c, gpu.power_w) == (27.0, 67.03)
    assert gpu.mig_devices == tuple(
        SmiMigDevice(
            index=i,
            uuid=None,
            profile=None,
            gpu_instance_id=gi,
            compute_instance_id=0,
            memory_total_mib=19968,
            memory_used_mib=12,
            sm_count=14,
        )
        for i, gi in [(0, 3), (1, 4), (2, 5), (3, 6)]
    )


def test_v12_a100_log_of_one_of_four_gpus_warns_that_indices_are_positions() -> None:
    capture = parse(V12_A100_MIG)

    assert capture.warnings == (
        "the log holds 1 of 4 attached GPUs (taken with -i, or cut short); "
        "GPU indices are positions in the file",
    )


def test_v12_a100_sample_lists_mig_devices_it_cannot_name_and_offers_no_units() -> None:
    sample = parse(V12_A100_MIG).to_sample()

    assert sample.gpus[0].mig_devices == ()
    assert sample.gpus[0].unkeyed_mig_devices == tuple(
        UnkeyedMigDevice(
            index=i,
            gpu_instance_id=gi,
            compute_instance_id=0,
            memory_total_mib=19968,
            memory_used_mib=12,
        )
        for i, gi in [(0, 3), (1, 4), (2, 5), (3, 6)]
    )
    assert sample.units() == []
    assert sample.warnings[-1] == (
        "GPU 0: 4 MIG device(s) without a UUID in this capture (GI/CI 3/0, 4/0, 5/0, 6/0): "
        "listed with uuid null and not allocatable; 'nvidia-smi -L' names them: capture it at "
        "the same moment and pass it with another --from"
    )


def test_v12_windows_log_lists_graphics_clients_but_the_sample_keeps_compute_only() -> None:
    capture = parse(V12_RTX3080)

    assert [(p.pid, p.type, p.used_memory_mib) for p in capture.processes] == [
        (835, "G", 550),
        (1481, "G", 18),
        (2214, "G", 79),
        (4044, "G", 541),
        (42416, "G", 159),
    ]
    assert capture.processes[0].name == "/usr/lib/Xorg"
    gpu = capture.gpus[0]
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.power_w) == (10240, 1128, 22.78)
    assert capture.to_sample().processes == ()


def test_v13_log_reads_average_power_when_power_draw_is_gone() -> None:
    gpu = parse(V13_RTX4000).gpus[0]

    assert gpu.uuid == "GPU-37037c3f-65c8-ec4d-24a9-420204ad8026"
    assert gpu.name == "NVIDIA RTX 4000 SFF Ada Generation"
    assert gpu.power_w == 8.81
    assert (gpu.memory_total_mib, gpu.memory_used_mib, gpu.temperature_c) == (20475, 3534, 38.0)


def test_v13_sample_keeps_compute_and_mixed_processes_on_the_whole_gpu() -> None:
    uuid = "GPU-37037c3f-65c8-ec4d-24a9-420204ad8026"

    sample = parse(V13_RTX4000).to_sample()

    assert sample.processes == (
        GpuProcess(pid=4937, gpu_uuid=uuid, used_memory_mib=160, name="python", unit_uuid=uuid),
        GpuProcess(
            pid=34626,
            gpu_uuid=uuid,
            used_memory_mib=183,
            name="/usr/lib/chromium/chromium",
            unit_uuid=uuid,
        ),
    )


def test_v10_log_without_mig_elements_or_process_instance_ids_parses() -> None:
    capture = parse(V10_VARIANT)

    assert capture.driver_version == "440.64.00"
    assert [(g.uuid, g.mig_enabled, g.mig_devices) for g in capture.gpus] == [
        ("GPU-76098dc1-d3bc-9a1b-7ea6-f7b48837829e", None, ()),
        ("GPU-bbf7a241-bf9a-eb90-b2fb-d213294faf48", None, ()),
    ]
    assert [(p.pid, p.gpu_instance_id, p.used_memory_mib) for p in capture.processes] == [
        (37305, None, 31683),
        (37305, None, 29539),
    ]
    assert [u.gpueq for u in capture.to_sample().units()] == [GpuEq(1), GpuEq(1)]


def test_mixed_box_log_has_one_mig_gpu_and_one_whole_gpu() -> None:
    capture = parse(MIXED_VARIANT)

    assert [(g.index, g.mig_enabled, len(g.mig_devices)) for g in capture.gpus] == [
        (0, True, 4),
        (1, False, 0),
    ]
    assert [
        (p.pid, p.gpu_index, p.gpu_instance_id, p.compute_instance_id) for p in capture.processes
    ] == [
        (41123, 0, 3, 0),
        (52210, 1, None, None),
    ]
    sample = capture.to_sample()
    assert [u.uuid for u in sample.units()] == ["GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90"]
    # The MIG process's device is unknown without MIG UUIDs; the whole-GPU one is on its GPU.
    assert [p.unit_uuid for p in sample.processes] == [
        None,
        "GPU-7d1c2e4a-0b5f-4a8e-9c3d-2f6e8a1b5c90",
    ]


def test_crlf_log_parses_like_the_original() -> None:
    assert parse(V13_CRLF).gpus == parse(V13_RTX4000).gpus
    assert parse(V13_CRLF).processes == parse(V13_RTX4000).processes


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            '<?xml version="1.0"?>\n<!DOCTYPE lol [<!ENTITY a "aaaa">]>\n'
            "<nvidia_smi_log>&a;</nvidia_smi_log>",
            "log.xml: XML with entity declarations refused (nvidia-smi never writes them)",
            id="entity declarations are refused before parsing",
        ),
        pytest.param(
            "<?xml version='1.0'?>\n<nvidia_smi_log>\n<gpu id='x'>\n<uuid>",
            "log.xml: truncated XML (no closing </nvidia_smi_log>) at line 4",
            id="a log cut short names the line it ends on",
        ),
        pytest.param(
            "<nvidia_smi_log>\n<gpu>\n</nvidia_smi_log>",
            "log.xml: malformed XML at line 3, column 2: mismatched tag",
            id="a malformed log names line and column",
        ),
        pytest.param(
            "<nvidia_smi_log></nvidia_smi_log>",
            "log.xml: the XML log lists no GPUs",
            id="a log without GPUs is refused",
        ),
        pytest.param(
            "<config><nvidia_smi_log></nvidia_smi_log></config>",
            "log.xml: XML root is 'config', not <nvidia_smi_log>: not nvidia-smi -q -x",
            id="another XML document is refused",
        ),
        pytest.param(
            "<nvidia_smi_log><gpu><uuid>GPU-1</uuid></gpu></nvidia_smi_log>",
            "log.xml: <gpu> #1 <uuid>: not a GPU UUID: 'GPU-1'",
            id="a garbled GPU UUID is refused",
        ),
        pytest.param(
            "<nvidia_smi_log><gpu><fb_memory_usage><total>80 GiB</total></fb_memory_usage>"
            "</gpu></nvidia_smi_log>",
            "log.xml: <gpu> #1 fb_memory_usage/total: expected MiB, got '80 GiB'",
            id="a value in an unexpected unit is refused",
        ),
        pytest.param(
            "<nvidia_smi_log><gpu><processes><process_info><pid>N/A</pid></process_info>"
            "</processes></gpu></nvidia_smi_log>",
            "log.xml: GPU 0 <process_info> #1 has no pid",
            id="a process without a pid is refused",
        ),
    ],
)
def test_bad_logs_are_refused_with_one_line_naming_the_file(text: str, message: str) -> None:
    with pytest.raises(CaptureError) as err:
        parse_xml(text, "log.xml")

    assert str(err.value) == message


def test_gpu_element_without_uuid_parses_but_cannot_become_a_sample() -> None:
    capture = parse_xml(
        "<nvidia_smi_log><gpu><product_name>X</product_name></gpu></nvidia_smi_log>", "log.xml"
    )

    assert capture.gpus[0].uuid is None
    with pytest.raises(CaptureError, match=r"^log\.xml: GPU 0 cannot be keyed"):
        capture.to_sample()


# ---- MIG devices without UUID: listed, never units -------------------------------------------

# Mimics a v11 log (driver 470, CUDA 11.4) of one A100-SXM4-40GB with two MIG devices, cut to
# the elements ds01 reads: the <mig_device> layout (index, GI/CI ids, device_attributes,
# fb_memory_usage, no UUID, no profile) is that of the real driver-535 A100 log in
# tests/fixtures/nvidia-smi; the GI ids, memory and the one process (in GI 1 / CI 0) are made up.
OLD_MIG_LOG = """<?xml version="1.0" ?>
<!DOCTYPE nvidia_smi_log SYSTEM "nvsmi_device_v11.dtd">
<nvidia_smi_log>
	<driver_version>470.82.01</driver_version>
	<attached_gpus>1</attached_gpus>
	<gpu id="00000000:07:00.0">
		<product_name>NVIDIA A100-SXM4-40GB</product_name>
		<mig_mode>
			<current_mig>Enabled</current_mig>
			<pending_mig>Enabled</pending_mig>
		</mig_mode>
		<mig_devices>
			<mig_device>
				<index>0</index>
				<gpu_instance_id>1</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
				<device_attributes>
					<shared>
						<multiprocessor_count>42</multiprocessor_count>
					</shared>
				</device_attributes>
				<fb_memory_usage>
					<total>20096 MiB</total>
					<used>4375 MiB</used>
					<free>15721 MiB</free>
				</fb_memory_usage>
			</mig_device>
			<mig_device>
				<index>1</index>
				<gpu_instance_id>2</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
				<fb_memory_usage>
					<total>20096 MiB</total>
					<used>11 MiB</used>
					<free>20085 MiB</free>
				</fb_memory_usage>
			</mig_device>
		</mig_devices>
		<uuid>GPU-1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b</uuid>
		<fb_memory_usage>
			<total>40536 MiB</total>
			<used>4386 MiB</used>
		</fb_memory_usage>
		<processes>
			<process_info>
				<gpu_instance_id>1</gpu_instance_id>
				<compute_instance_id>0</compute_instance_id>
				<pid>23105</pid>
				<type>C</type>
				<process_name>python</process_name>
				<used_memory>4352 MiB</used_memory>
			</process_info>
		</processes>
	</gpu>
</nvidia_smi_log>
"""
# What `nvidia-smi -L` prints on that machine at the same moment (the driver-470 -L layout).
OLD_MIG_LIST = """GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b)
  MIG 3g.20gb     Device  0: (UUID: MIG-5c6d7e8f-1111-5a6b-9c0d-1e2f3a4b5c6d)
  MIG 3g.20gb     Device  1: (UUID: MIG-6d7e8f9a-2222-5b6c-8d9e-2f3a4b5c6d7e)
"""
OLD_MIG_GPU = "GPU-1a2b3c4d-0000-4e5f-8a9b-0c1d2e3f4a5b"


def test_an_old_mig_log_lists_devices_without_uuid_as_not_allocatable() -> None:
    sample = parse_xml(OLD_MIG_LOG, "old.xml").to_sample()

    (gpu,) = sample.gpus
    assert gpu.mig_devices == ()
    assert gpu.unkeyed_mig_devices == (
        UnkeyedMigDevice(0, 1, 0, 20096, 4375),
        UnkeyedMigDevice(1, 2, 0, 20096, 11),
    )
    assert sample.units() == []
    assert sample.warnings == (
        "GPU 0: 2 MIG device(s) without a UUID in this capture (GI/CI 1/0, 2/0): listed with "
        "uuid null and not allocatable; 'nvidia-smi -L' names them: capture it at the same "
        "moment and pass it with another --from",
    )
    # The process is on the GPU, in a MIG device ds01 cannot name: its unit is unknown.
    assert sample.processes == (GpuProcess(23105, OLD_MIG_GPU, 4352, "python", unit_uuid=None),)


def test_an_old_mig_log_with_its_l_listing_offers_both_devices() -> None:
    merged = merge_captures(
        [parse_xml(OLD_MIG_LOG, "old.xml"), parse_list(OLD_MIG_LIST, "L.txt")]
    ).to_sample()

    assert [
        (u.uuid[:12], u.profile, u.gpu_instance_id, u.memory_total_mib) for u in merged.units()
    ] == [
        ("MIG-5c6d7e8f", "3g.20gb", 1, 20096),
        ("MIG-6d7e8f9a", "3g.20gb", 2, 20096),
    ]
    assert merged.warnings == ()
    assert merged.processes[0].unit_uuid == "MIG-5c6d7e8f-1111-5a6b-9c0d-1e2f3a4b5c6d"


def test_a_uuid_inside_a_mig_device_is_read_and_checked() -> None:
    # Some tools report that the DTD allows <uuid> in <mig_device>; no real log here has one.
    named = OLD_MIG_LOG.replace(
        "<index>1</index>",
        "<index>1</index>\n<uuid>MIG-6d7e8f9a-2222-5b6c-8d9e-2f3a4b5c6d7e</uuid>",
    )
    garbled = OLD_MIG_LOG.replace("<index>1</index>", "<index>1</index><uuid>MIG-1</uuid>")

    sample = parse_xml(named, "named.xml").to_sample()
    with pytest.raises(CaptureError) as err:
        parse_xml(garbled, "garbled.xml")

    assert [m.uuid for m in sample.gpus[0].mig_devices] == [
        "MIG-6d7e8f9a-2222-5b6c-8d9e-2f3a4b5c6d7e"
    ]
    assert [m.index for m in sample.gpus[0].unkeyed_mig_devices] == [0]
    assert sample.units() == []  # a profile is still unknown: no gpueq, no unit
    assert str(err.value) == (
        "garbled.xml: <gpu> #1 <mig_device> #2 <uuid>: not a MIG UUID: 'MIG-1'"
    )
