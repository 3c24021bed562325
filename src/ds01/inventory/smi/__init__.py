"""nvidia-smi capture parsers: real outputs of nvidia-smi turned into ds01's inventory model.

Owns reading captures, never running nvidia-smi (the NVML backend reads live GPUs). Each format has
its own module; capture.py holds the parsed types and the one conversion to MachineSample, merge.py
joins captures of one machine, detect.py tells formats apart and loads files.

    load_capture(path)           one file → MachineSample      (`ds01 gpu inventory --from PATH`)
    load_captures(paths)         several files of one machine, merged → MachineSample
    parse_capture(text, source)  any supported format → SmiCapture
    parse_xml / parse_query_text / parse_list / parse_query_gpu / parse_compute_apps /
    parse_table → SmiCapture
    parse_lgip / parse_lci       MIG configuration tables → their own frozen rows

Every parser raises only CaptureError on bad input, with a one-line message naming the source.
"""

from ds01.inventory.smi.capture import (
    CaptureFormat,
    SmiCapture,
    SmiGpu,
    SmiMigDevice,
    SmiProcess,
)
from ds01.inventory.smi.csvquery import parse_compute_apps, parse_query_gpu
from ds01.inventory.smi.detect import (
    detect_format,
    load_capture,
    load_captures,
    parse_capture,
    read_capture_text,
)
from ds01.inventory.smi.listing import parse_list
from ds01.inventory.smi.merge import merge_captures
from ds01.inventory.smi.mig import ComputeInstance, GpuInstanceProfile, parse_lci, parse_lgip
from ds01.inventory.smi.querytext import parse_query_text
from ds01.inventory.smi.table import parse_table
from ds01.inventory.smi.xmllog import parse_xml

__all__ = [
    "CaptureFormat",
    "ComputeInstance",
    "GpuInstanceProfile",
    "SmiCapture",
    "SmiGpu",
    "SmiMigDevice",
    "SmiProcess",
    "detect_format",
    "load_capture",
    "load_captures",
    "merge_captures",
    "parse_capture",
    "parse_compute_apps",
    "parse_lci",
    "parse_lgip",
    "parse_list",
    "parse_query_gpu",
    "parse_query_text",
    "parse_table",
    "parse_xml",
    "read_capture_text",
]
