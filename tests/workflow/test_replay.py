"""Histories of completed runs, recorded from the local dev server and kept under
tests/histories/, must replay against the current workflow code without non-determinism.

Record new ones with `make record-histories` after a change that is meant to be compatible.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from worker import WORKFLOWS

HISTORIES = sorted((Path(__file__).parents[1] / "histories").glob("*.json"))


def test_histories_are_recorded() -> None:
    assert len(HISTORIES) >= 2, "record histories with `make record-histories`"


def test_every_workflow_type_has_a_recorded_history() -> None:
    recorded = {
        json.loads(path.read_text())["events"][0]["workflowExecutionStartedEventAttributes"][
            "workflowType"
        ]["name"]
        for path in HISTORIES
    }
    defined = {definition.__temporal_workflow_definition.name for definition in WORKFLOWS}  # type: ignore[attr-defined]
    assert defined <= recorded, f"no recorded history of {sorted(defined - recorded)}"


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_history_replays(path: Path) -> None:
    history = WorkflowHistory.from_json(path.stem, json.loads(path.read_text()))
    replayer = Replayer(workflows=WORKFLOWS, data_converter=pydantic_data_converter)
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None
