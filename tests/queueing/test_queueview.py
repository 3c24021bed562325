"""What `ds01 queue`, `ds01 queue explain` and a queued deploy print, from literal answers of
ds01d (the JSON the schemas describe), and that a request cannot carry its own priority."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ds01.api.schemas import DeployIn
from ds01.cli import queueview

ENTRY = {
    "id": 12,
    "user": "ann",
    "name": "exp",
    "image": "img",
    "request": "2 GPUs",
    "state": "queued",
    "position": 2,
    "size": 2.0,
    "queued_at": "2026-12-05T10:00:00+00:00",
    "waited_s": 90.0,
    "note": "no free GPU",
    "priority": 568.5,
    "estimated_start": None,
    "allocation_id": None,
    "container_id": None,
    "mine": True,
}
OTHER = {**ENTRY, "id": 11, "user": None, "name": None, "image": None, "request": None,
         "note": None, "priority": None, "position": 1, "mine": False}  # fmt: skip


def test_explain_prints_each_factor_and_the_sum() -> None:
    text = queueview.explain(
        {
            "entry": ENTRY,
            "usage_gpueq_s": 72100.0,
            "factors": [
                {"name": "fairshare", "value": 0.561, "weight": 1000, "points": 561.0},
                {"name": "age", "value": 0.025, "weight": 100, "points": 2.5},
                {"name": "group", "value": 0.0, "weight": 100, "points": 0.0},
                {"name": "size", "value": 0.5, "weight": 10, "points": 5.0},
            ],
            "total": 568.5,
        }
    )
    lines = text.splitlines()
    assert lines[0] == "Queue entry 12 (exp, 2 GPUs): queued, position 2"
    assert "Expected start: unknown" in lines[1]
    assert lines[2] == "Your decayed GPU use: 20.03 GPU-hours (72100 gpueq·s)"
    assert "┃ Factor" in text
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in lines if "│" in line]
    assert rows == [
        ["fairshare", "0.5610", "1000", "561.000"],
        ["age", "0.0250", "100", "2.500"],
        ["group", "0.0000", "100", "0.000"],
        ["size", "0.5000", "10", "5.000"],
        ["priority", "", "", "568.500"],
    ]


def test_the_queue_table_hides_what_privacy_hides() -> None:
    text = queueview.queue({"entries": [OTHER, ENTRY], "waiting": 2}, 160, all_users=True)
    assert "Queue (2 waiting)" in text
    assert "(hidden)" in text and "ann" in text and "exp" in text
    assert text.endswith("Why this order: ds01 queue explain 12. Cancel: ds01 queue cancel 12.\n")


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        pytest.param("train", "train (docker)", id="a named docker run is marked docker"),
        pytest.param(
            "(docker run 3fa2c1)", "(docker run 3fa2c1)", id="an unnamed one is not marked twice"
        ),
    ],
)
def test_a_docker_create_the_gate_holds_open_is_marked(name: str, shown: str) -> None:
    gate = {**ENTRY, "name": name, "origin": "gate"}
    text = queueview.queue({"entries": [gate], "waiting": 1}, 160, all_users=False)
    rows = [[c.strip() for c in line.strip("│").split("│")] for line in text.splitlines()]
    assert [r[3] for r in rows if len(r) > 3 and r[1] == "12"] == [shown]


def test_an_empty_queue_says_so() -> None:
    assert queueview.queue({"entries": [], "waiting": 0}, 80, all_users=False) == (
        "You have nothing in the queue.\n"
    )
    assert queueview.queue({"entries": [], "waiting": 3}, 80, all_users=False) == (
        "You have nothing in the queue. (3 waiting in all)\n"
    )


def test_a_queued_deploy_says_how_to_watch_and_cancel() -> None:
    text = queueview.queued(ENTRY)
    assert text.startswith("No GPU is free now: 'exp' waits in the queue as entry 12, position 2.")
    assert "ds01 queue cancel 12" in text and "ds01 queue explain 12" in text


@pytest.mark.parametrize("field", ["priority", "position", "user", "created_at"])
def test_a_deploy_request_cannot_set_its_own_place(field: str) -> None:
    with pytest.raises(ValidationError):
        DeployIn.model_validate({"name": "a", "image": "img", "queue": True, field: 1})
