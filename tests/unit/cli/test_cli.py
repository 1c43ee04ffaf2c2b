"""CLI pieces that need no server: the JSON Schema, progress lines, the table of workflow kinds,
`qloop list`'s query and the exit codes."""

from __future__ import annotations

import io
import json

import pytest

import starter
from cli import output
from cli.follow import ProgressPrinter
from cli.inspect import list_query
from cli.reports import describe_progress
from cli.start import experiment_input
from cli.workflow_kinds import KIND_NAMES, KINDS, kind_of_type
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
    assert describe_progress(progress) == "waiting  job queued, queue position 7, 3 polls"


def test_poll_ceiling_reaches_the_workflow_input() -> None:
    args = starter.parser().parse_args(["run", "x.yaml", "--poll-ceiling", "60"])
    request = ExperimentRequest.model_validate(
        {"name": "p", "problem": {"kind": "ghz", "num_qubits": 2}}
    )
    assert experiment_input(request, args.poll_ceiling).polling.ceiling_seconds == 60


def test_poll_ceiling_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        starter.parser().parse_args(["run", "x.yaml", "--poll-ceiling", "0"])
    assert "between 0 and 86400" in capsys.readouterr().err


def test_every_workflow_kind_has_one_entry_found_by_its_type() -> None:
    assert KIND_NAMES == ("experiment", "loop", "sweep", "adopt", "ledger", "health")
    types = [kind.workflow_type for kind in KINDS]
    assert len(set(types)) == len(types)
    for kind in KINDS:
        assert kind_of_type(kind.workflow_type) is kind
    assert kind_of_type("ReservationReconcilerWorkflow") is None
    assert [kind.name for kind in KINDS if kind.long_lived] == ["ledger", "health"]


def test_list_query_names_every_kind_by_default_and_filters_on_request() -> None:
    everything = list_query(None, None, False)
    assert all(f"WorkflowType = '{kind.workflow_type}'" in everything for kind in KINDS)
    sweeps = list_query("sweep", "completed", True)
    assert sweeps == (
        "(WorkflowType = 'SweepWorkflow') AND QloopStage = 'completed' "
        "AND QloopAwaitingApproval = true"
    )


def test_list_refuses_an_unknown_kind_as_invalid_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        starter.parser().parse_args(["list", "--kind", "teapot"])
    assert exited.value.code == output.EXIT_INVALID == 2
    assert "invalid choice" in capsys.readouterr().err


def test_exit_codes_are_the_documented_ones() -> None:
    assert (output.EXIT_DONE, output.EXIT_NOT_ALLOWED, output.EXIT_INVALID, output.EXIT_FAILED) == (
        0,
        1,
        2,
        3,
    )


def test_progress_goes_to_stderr_when_stdout_carries_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    ProgressPrinter(output.notes_stream(as_json=True)).show("waiting")
    ProgressPrinter(output.notes_stream(as_json=False)).show("completed")
    captured = capsys.readouterr()
    assert "waiting" in captured.err and "waiting" not in captured.out
    assert "completed" in captured.out


class Terminal(io.StringIO):
    """A stream that says it is a terminal, as a user's shell is."""

    def isatty(self) -> bool:
        return True


def test_a_table_is_drawn_on_a_terminal_and_plain_when_piped() -> None:
    rows = [["sweep-1", "sweep", "RUNNING"], ["ghz-2", "experiment", "COMPLETED"]]
    piped, terminal = io.StringIO(), Terminal()
    output.print_table(["WORKFLOW ID", "KIND", "STATUS"], rows, piped)
    output.print_table(["WORKFLOW ID", "KIND", "STATUS"], rows, terminal)

    assert piped.getvalue().splitlines() == [
        "WORKFLOW ID  KIND        STATUS",
        "sweep-1      sweep       RUNNING",
        "ghz-2        experiment  COMPLETED",
    ]
    drawn = terminal.getvalue()
    assert "sweep-1" in drawn and "COMPLETED" in drawn and "─" in drawn


def test_progress_is_a_live_bar_on_a_terminal_and_lines_when_piped() -> None:
    piped, terminal = io.StringIO(), Terminal()
    with ProgressPrinter(piped) as printer:
        printer.show("running  batches 1/4", 0.25)
        printer.show("running  batches 1/4", 0.25)
        printer.show("running  batches 2/4", 0.5)
    with ProgressPrinter(terminal) as live:
        live.show("running  batches 2/4", 0.5)

    lines = piped.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].endswith("running  batches 2/4")
    shown = terminal.getvalue()
    assert "running  batches 2/4" in shown and "\x1b[" in shown and "\n[" not in shown


def test_a_stage_that_is_not_a_stage_name_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        starter.parser().parse_args(["list", "--stage", "x' OR WorkflowType = 'y"])
    assert exited.value.code == output.EXIT_INVALID
    assert "stage name" in capsys.readouterr().err
    args = starter.parser().parse_args(["list", "--stage", "awaiting_approval"])
    assert args.stage == "awaiting_approval"
