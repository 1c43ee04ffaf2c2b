"""CLI pieces that need no server: the JSON Schema and the progress lines."""

from __future__ import annotations

import json

import pytest

import starter
from schemas.execution import JobState
from schemas.pipeline import Progress, Stage


def test_schema_prints_the_request_json_schema(capsys: pytest.CaptureFixture[str]) -> None:
    assert starter.main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema["title"] == "ExperimentRequest"
    assert {"name", "problem"} <= set(schema["required"])
    kinds = {
        kind
        for definition in schema["$defs"].values()
        for kind in [definition.get("properties", {}).get("kind", {}).get("const")]
        if kind
    }
    assert {"qasm", "qaoa_maxcut", "ghz", "mirror", "pauli_sum", "bitstring_probability"} <= kinds


def test_progress_while_waiting_names_job_state_queue_and_polls() -> None:
    progress = Progress(
        stage=Stage.WAITING,
        backend="aer/ideal",
        job_state=JobState.QUEUED,
        queue_position=7,
        polls=3,
    )
    assert starter.describe_progress(progress) == "waiting  job queued, queue position 7, 3 polls"
