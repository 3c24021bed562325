"""Parser for `nvidia-smi -q -x` (the XML log), DTD versions v10 to v13.

Owns reading the XML log into an SmiCapture. It must not guess what the log does not say.

Differences between DTD versions that matter here (checked against real logs):

* v10 (drivers 410-440) has no <mig_mode> or <mig_devices>, and <process_info> has no
  <gpu_instance_id>/<compute_instance_id>; power is under <power_readings>.
* v11 (450-470) adds <mig_mode><current_mig>, <mig_devices> (the text 'None' when empty) and the
  GI/CI ids on processes.
* v12 (5xx) moves power to <gpu_power_readings><power_draw>, gives MIG devices <fb_memory_usage>.
* v13 (580+) reports <average_power_draw> and <instant_power_draw> instead of <power_draw>.

Decisions:

* GPU index: the log has no index element; nvidia-smi prints GPUs in index order, so the index is
  the position. When <attached_gpus> differs from the number of <gpu> elements (a log taken with
  -i, or cut short) the indices may be wrong, and the capture carries a warning saying so.
* MIG devices: the logs print no MIG UUID and no profile name, only GI/CI ids, memory and the SM
  count. ds01 does not derive a profile from them: the log gives no total SM count for the GPU, and
  SMs do not divide evenly into slices (an H100 3g instance has 60 SMs, a 1g one 16), so profile
  and gpueq stay unknown. Such devices are listed without UUID and are never units (capture.py);
  join with an `nvidia-smi -L` capture (merge.py) to name them. A <uuid> inside <mig_device> is
  read and checked when a driver writes one; no real log in tests/fixtures (drivers 460-595) does.
* Entity declarations are refused outright ('<!ENTITY' anywhere), so the XML parser never expands
  entities (billion laughs); nvidia-smi never writes them.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ds01.inventory.smi._values import (
    MIG_UUID,
    PCI_BUS_ID,
    enabled,
    fail,
    gpu_uuid,
    integer,
    is_unknown,
    number,
    show,
    text_or_none,
)
from ds01.inventory.smi.capture import (
    CaptureFormat,
    SmiCapture,
    SmiGpu,
    SmiMigDevice,
    SmiProcess,
    positional_if_partial,
)

_ROOT = "nvidia_smi_log"


def parse_xml(text: str, source: str) -> SmiCapture:
    """Parse an `nvidia-smi -q -x` log. Raises CaptureError (one line) when it is not one."""
    if "<!ENTITY" in text:
        fail(source, "XML with entity declarations refused (nvidia-smi never writes them)")
    root = _parse_root(text, source)
    gpu_elements = root.findall("gpu")
    if not gpu_elements:
        fail(source, "the XML log lists no GPUs")
    gpus: list[SmiGpu] = []
    processes: list[SmiProcess] = []
    for position, el in enumerate(gpu_elements):
        gpu = _gpu(el, position, source)
        gpus.append(gpu)
        processes.extend(_processes(el, gpu, source))
    gpus, warnings = positional_if_partial(
        gpus, integer(root.findtext("attached_gpus"), "", source, "<attached_gpus>")
    )
    return SmiCapture(
        formats=(CaptureFormat.XML,),
        source=source,
        gpus=tuple(gpus),
        processes=tuple(processes),
        driver_version=text_or_none(root.findtext("driver_version")),
        timestamp=text_or_none(root.findtext("timestamp")),
        warnings=tuple(warnings),
    )


def _parse_root(text: str, source: str) -> ET.Element:
    closing = f"</{_ROOT}>"
    if f"<{_ROOT}" not in text:
        fail(source, f"XML without an <{_ROOT}> element: not an nvidia-smi -q -x log")
    if closing not in text:
        lines = text.count("\n") + 1
        fail(source, f"truncated XML (no closing {closing}) at line {lines}")
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        fail(source, "the XML log is not valid text")
    # The text is already decoded: the parser must not follow the document's own (possibly
    # garbled) encoding declaration, which raises LookupError for unknown names.
    parser = ET.XMLParser(encoding="utf-8")
    try:
        parser.feed(data)
        root = parser.close()
    except ET.ParseError as exc:
        line, column = exc.position
        reason = str(exc).split(":", 1)[0]
        fail(source, f"malformed XML at line {line}, column {column}: {reason}")
    if root.tag != _ROOT:
        fail(source, f"XML root is {show(root.tag, 40)}, not <{_ROOT}>: not nvidia-smi -q -x")
    return root


def _gpu(el: ET.Element, position: int, source: str) -> SmiGpu:
    where = f"<gpu> #{position + 1}"
    raw_uuid = el.findtext("uuid")
    uuid = None if is_unknown(raw_uuid) else gpu_uuid(raw_uuid or "", source, f"{where} <uuid>")
    bus_id = text_or_none(el.findtext("pci/pci_bus_id")) or text_or_none(el.get("id"))
    if bus_id is not None and not PCI_BUS_ID.match(bus_id):
        fail(source, f"{where}: not a PCI bus id: {show(bus_id)}")
    mig_devices = _mig_devices(el, source, where)
    return SmiGpu(
        index=position,
        uuid=uuid,
        name=text_or_none(el.findtext("product_name")),
        pci_bus_id=bus_id,
        memory_total_mib=integer(
            el.findtext("fb_memory_usage/total"), "MiB", source, f"{where} fb_memory_usage/total"
        ),
        memory_used_mib=integer(
            el.findtext("fb_memory_usage/used"), "MiB", source, f"{where} fb_memory_usage/used"
        ),
        mig_enabled=enabled(el.findtext("mig_mode/current_mig"), source, f"{where} current_mig"),
        mig_devices=mig_devices,
        utilization_pct=number(
            el.findtext("utilization/gpu_util"), "%", source, f"{where} gpu_util"
        ),
        temperature_c=number(el.findtext("temperature/gpu_temp"), "C", source, f"{where} gpu_temp"),
        power_w=_power(el, source, where),
    )


def _power(el: ET.Element, source: str, where: str) -> float | None:
    """power.draw: <power_draw> (v10-v12), else the v13 average, else the instant reading."""
    for path in (
        "gpu_power_readings/power_draw",
        "power_readings/power_draw",
        "gpu_power_readings/average_power_draw",
        "power_readings/average_power_draw",
        "gpu_power_readings/instant_power_draw",
        "power_readings/instant_power_draw",
    ):
        value = number(el.findtext(path), "W", source, f"{where} {path}")
        if value is not None:
            return value
    return None


def _mig_devices(el: ET.Element, source: str, where: str) -> tuple[SmiMigDevice, ...]:
    container = el.find("mig_devices")
    if container is None:
        return ()  # v10: no MIG at all
    out: list[SmiMigDevice] = []
    for i, m in enumerate(container.findall("mig_device")):
        at = f"{where} <mig_device> #{i + 1}"
        uuid = text_or_none(m.findtext("uuid"))
        if uuid is not None and not MIG_UUID.match(uuid):
            fail(source, f"{at} <uuid>: not a MIG UUID: {show(uuid)}")
        out.append(
            SmiMigDevice(
                index=integer(m.findtext("index"), "", source, f"{at} <index>"),
                uuid=uuid,
                gpu_instance_id=integer(
                    m.findtext("gpu_instance_id"), "", source, f"{at} <gpu_instance_id>"
                ),
                compute_instance_id=integer(
                    m.findtext("compute_instance_id"), "", source, f"{at} <compute_instance_id>"
                ),
                memory_total_mib=integer(
                    m.findtext("fb_memory_usage/total"), "MiB", source, f"{at} memory total"
                ),
                memory_used_mib=integer(
                    m.findtext("fb_memory_usage/used"), "MiB", source, f"{at} memory used"
                ),
                sm_count=integer(
                    m.findtext("device_attributes/shared/multiprocessor_count"),
                    "",
                    source,
                    f"{at} multiprocessor_count",
                ),
            )
        )
    return tuple(out)


def _processes(el: ET.Element, gpu: SmiGpu, source: str) -> list[SmiProcess]:
    out: list[SmiProcess] = []
    for i, p in enumerate(el.findall("processes/process_info")):
        at = f"GPU {gpu.index} <process_info> #{i + 1}"
        pid = integer(p.findtext("pid"), "", source, f"{at} <pid>")
        if pid is None:
            fail(source, f"{at} has no pid")
        out.append(
            SmiProcess(
                pid=pid,
                gpu_uuid=gpu.uuid,
                gpu_index=gpu.index,
                gpu_pci_bus_id=gpu.pci_bus_id,
                gpu_instance_id=integer(p.findtext("gpu_instance_id"), "", source, f"{at} GI"),
                compute_instance_id=integer(
                    p.findtext("compute_instance_id"), "", source, f"{at} CI"
                ),
                used_memory_mib=integer(p.findtext("used_memory"), "MiB", source, f"{at} memory"),
                name=text_or_none(p.findtext("process_name")),
                type=text_or_none(p.findtext("type")),
            )
        )
    return out
