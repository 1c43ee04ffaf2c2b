"""CLI pieces that need no server: the JSON Schema and the progress lines."""

from __future__ import annotations

import json

import pytest

import starter
from schemas.execution import JobState
from schemas.pipeline import Progress, Stage
from schemas.request import ExperimentRequest


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


def test_poll_ceiling_reaches_the_workflow_input() -> None:
    args = starter.parser().parse_args(["run", "x.yaml", "--poll-ceiling", "60"])
    request = ExperimentRequest.model_validate(
        {"name": "p", "problem": {"kind": "ghz", "num_qubits": 2}}
    )
    assert starter.experiment_input(request, args.poll_ceiling).polling.ceiling_seconds == 60


def test_poll_ceiling_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        starter.parser().parse_args(["run", "x.yaml", "--poll-ceiling", "0"])
    assert "between 0 and 86400" in capsys.readouterr().err
