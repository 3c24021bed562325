"""Mutated real captures and random text: every parser either parses or raises CaptureError.

Nothing else may escape (no IndexError, ValueError, KeyError or ET.ParseError), and every
refusal is one line that starts with the name of the capture.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ds01.errors import CaptureError
from ds01.inventory.smi import (
    SmiCapture,
    merge_captures,
    parse_capture,
    parse_compute_apps,
    parse_lci,
    parse_lgip,
    parse_list,
    parse_query_gpu,
    parse_table,
    parse_xml,
    read_capture_text,
)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "nvidia-smi"
PATHS = sorted(
    p
    for p in FIXTURES.rglob("*")
    if p.is_file() and p.suffix != ".md" and p.name != ".gitattributes"
)
TEXTS = {str(p.relative_to(FIXTURES)): read_capture_text(p) for p in PATHS}
SOURCE = "mutant.txt"

PARSERS: list[Callable[[str, str], object]] = [
    parse_xml,
    parse_list,
    parse_query_gpu,
    parse_compute_apps,
    parse_table,
    parse_lgip,
    parse_lci,
]

# Characters that steer random text into the parsers' deeper paths.
SMI_ALPHABET = "<>/|+-=:,.[]()% \n\r\tGPUMIGNAgbcx0123456789 nvidia_smi_log UUID Device MiB W C"


def _one_line_refusal(err: CaptureError) -> None:
    message = str(err)
    assert "\n" not in message and "\r" not in message, message
    assert message.startswith(f"{SOURCE}: "), message


def exercise(text: str) -> None:
    """Run text through detection, every parser and the sample conversion, as ds01 would."""
    try:
        capture = parse_capture(text, SOURCE)
        capture.to_sample()
        merge_captures([capture, capture]).to_sample()
    except CaptureError as err:
        _one_line_refusal(err)
    for parser in PARSERS:
        try:
            result = parser(text, SOURCE)
            if isinstance(result, SmiCapture):
                result.to_sample()
        except CaptureError as err:
            _one_line_refusal(err)


fixture_names = st.sampled_from(sorted(TEXTS))


@settings(max_examples=200, deadline=None)
@given(name=fixture_names, data=st.data())
def test_truncated_captures_parse_or_are_refused(name: str, data: st.DataObject) -> None:
    text = TEXTS[name]
    cut = data.draw(st.integers(min_value=0, max_value=len(text)), label="cut")

    exercise(text[:cut])


@settings(max_examples=200, deadline=None)
@given(name=fixture_names, data=st.data())
def test_captures_with_changed_characters_parse_or_are_refused(
    name: str, data: st.DataObject
) -> None:
    text = TEXTS[name]
    flips = data.draw(
        st.lists(
            st.tuples(st.integers(min_value=0, max_value=max(len(text) - 1, 0)), st.characters()),
            min_size=1,
            max_size=5,
        ),
        label="flips",
    )
    chars = list(text)
    for at, char in flips:
        if chars:
            chars[at] = char

    exercise("".join(chars))


@settings(max_examples=200, deadline=None)
@given(name=fixture_names, data=st.data())
def test_captures_with_lines_deleted_or_repeated_parse_or_are_refused(
    name: str, data: st.DataObject
) -> None:
    lines = TEXTS[name].split("\n")
    edits = data.draw(
        st.lists(
            st.tuples(
                st.sampled_from(["delete", "repeat", "swap"]),
                st.integers(min_value=0, max_value=len(lines) - 1),
            ),
            min_size=1,
            max_size=4,
        ),
        label="edits",
    )
    for kind, wanted in edits:
        at = min(wanted, len(lines) - 1)
        if kind == "delete" and len(lines) > 1:
            del lines[at]
        elif kind == "repeat":
            lines.insert(at, lines[at])
        elif kind == "swap" and at + 1 < len(lines):
            lines[at], lines[at + 1] = lines[at + 1], lines[at]
    crlf = data.draw(st.booleans(), label="crlf")

    exercise(("\r\n" if crlf else "\n").join(lines))


@settings(max_examples=200, deadline=None)
@given(text=st.text())
def test_random_text_is_parsed_or_refused(text: str) -> None:
    exercise(text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=SMI_ALPHABET, max_size=400))
def test_random_text_made_of_capture_characters_is_parsed_or_refused(text: str) -> None:
    exercise(text)


@settings(max_examples=200, deadline=None)
@given(name=fixture_names, data=st.data())
def test_random_text_spliced_into_a_capture_is_parsed_or_refused(
    name: str, data: st.DataObject
) -> None:
    text = TEXTS[name]
    at = data.draw(st.integers(min_value=0, max_value=len(text)), label="at")
    junk = data.draw(st.text(alphabet=SMI_ALPHABET, max_size=40), label="junk")

    exercise(text[:at] + junk + text[at:])


XML_NAMES = [n for n in sorted(TEXTS) if n.endswith(".xml")]


@settings(max_examples=200, deadline=None)
@given(name=st.sampled_from(XML_NAMES), data=st.data())
def test_an_xml_log_cut_before_its_closing_tag_is_always_refused(
    name: str, data: st.DataObject
) -> None:
    text = TEXTS[name]
    end = text.rindex("</nvidia_smi_log>") + len("</nvidia_smi_log>")
    cut = data.draw(st.integers(min_value=0, max_value=end - 1), label="cut")

    with pytest.raises(CaptureError) as err:
        parse_capture(text[:cut], SOURCE)

    _one_line_refusal(err.value)


INVENTORY_NAMES = [
    n
    for n in sorted(TEXTS)
    if not n.startswith(("mig-", "variants/csv-query-compute-apps-1xH100-noheader"))
]


@pytest.mark.parametrize("name", INVENTORY_NAMES)
def test_crlf_line_ends_change_nothing(name: str) -> None:
    lf = TEXTS[name].replace("\r\n", "\n")

    assert parse_capture(lf.replace("\n", "\r\n"), SOURCE) == parse_capture(lf, SOURCE)
