"""ds01/slurm/backend.py: whether a config file may run containers through SLURM, told from its
text. The CLI asks it before every container command and its quick path before every answer,
so it must never block or read without bound, whatever --config names."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from ds01.slurm.backend import may_name_slurm_backend


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("cluster:\n  backend: slurm\n", True),
        ('cluster: {backend: "slurm", name: c}\n', True),
        ("cluster:\n  backend: 'slurm'  # over SLURM\n", True),
        ("cluster:\n  backend: local\n", False),
        ("gpu: {backend: sim}\n", False),
        ("cluster:\n  backend: slurmish\n", False),
        ("", False),
        ("\xff\xfe not utf-8 \x00", False),
    ],
    ids=[
        "block", "flow and quoted", "single quotes and a comment", "local", "the gpu backend",
        "another word", "empty", "not text",
    ],
)  # fmt: skip
def test_the_text_decides(tmp_path: Path, text: str, expected: bool) -> None:
    config = tmp_path / "ds01.yaml"
    config.write_bytes(text.encode("latin-1"))
    assert may_name_slurm_backend(config) is expected
    assert may_name_slurm_backend(str(config)) is expected


def test_a_missing_file_is_the_local_backend(tmp_path: Path) -> None:
    assert may_name_slurm_backend(tmp_path / "none.yaml") is False


def test_what_is_no_plain_config_file_is_left_to_the_loader(tmp_path: Path) -> None:
    """A FIFO (nobody writing), a device without end, a directory, or a file larger than any
    config: answered at once with True, so the full command line loads it and says what is
    wrong; nothing blocks and nothing is read without bound."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    big.write_bytes(b"#" * ((1 << 20) + 1))
    answers: list[bool] = []
    worker = threading.Thread(
        target=lambda: answers.extend(
            may_name_slurm_backend(p) for p in (fifo, Path("/dev/zero"), tmp_path, big)
        ),
        daemon=True,
    )
    worker.start()
    worker.join(timeout=10)
    assert answers == [True, True, True, True]
