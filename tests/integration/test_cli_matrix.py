"""Every command on every workflow kind it applies to, through `python starter.py` in its own
process on the session's dev server with a real worker: `run`, `loop` and `sweep` with
`--wait --json` (stdout is one JSON document, progress on stderr), then `status`, `result`,
`list --kind` and `watch` with and without `--json`; the steering commands (`approve`, `reject`,
`pause`, `resume`, `reroute`, `cancel`) on running experiments, loops and sweeps with `--json`;
and the exit code of each failure mode (README, "Exit codes")."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment

from cli.output import EXIT_DONE, EXIT_FAILED, EXIT_INVALID, EXIT_NOT_ALLOWED
from cli.steer import SteerOutcome
from schemas.budget import LedgerView, ledger_workflow_id
from schemas.health import HealthInput, HealthView, health_workflow_id
from schemas.pipeline import Progress, Stage
from schemas.report import ExperimentReport
from schemas.variational import LoopReport, SweepReport
from tests.harness import POLICY_FILE, REPO_ROOT, run_qloop

pytestmark = pytest.mark.integration

TIMEOUT = 120
# The matrix's policy file is the local stack's plus this account, whose experiments on an ideal
# simulator wait for alice's approval: free experiments that stay running until steered.
HELD_ACCOUNT = "matrixhold"
NOISY = {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"}


@dataclass
class Started:
    """The workflows the module's CLI runs started, one per kind, and what `--wait --json`
    printed for each."""

    env: dict[str, str]
    ids: dict[str, str]
    stdout: dict[str, str]
    stderr: dict[str, str]
    worker_log: Path


def qloop_now(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "starter.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )


async def qloop(started: Started, *args: str) -> tuple[int, str, str]:
    return await run_qloop(started.env, *args, timeout=TIMEOUT)


def request_files(folder: Path, tag: str) -> dict[str, Path]:
    """Small free Aer requests: a 3-qubit GHZ, a 2-iteration VQE and a 2 x 2 sweep."""
    ghz = {
        "name": f"matrix-ghz-{tag}",
        "problem": {"kind": "ghz", "num_qubits": 3},
        "execution": {"shots": 200, "seed": 3},
        "mitigation": {"zne": None, "readout": False},
    }
    loop = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())
    loop.update(name=f"matrix-vqe-{tag}", limits={"max_iterations": 2})
    loop["evaluation"]["shots"] = 200
    loop["optimizer"]["patience"] = 3
    sweep = yaml.safe_load((REPO_ROOT / "examples" / "sweep_qaoa.yaml").read_text())
    sweep.update(name=f"matrix-sweep-{tag}", canary=None)
    sweep["points"]["grid"] = [
        {"start": 0.0, "stop": 1.0, "num": 2},
        {"start": 0.0, "stop": 1.0, "num": 2},
    ]
    sweep["evaluation"]["shots"] = 200
    files = {"experiment": ghz, "loop": loop, "sweep": sweep}
    paths = {}
    for kind, content in files.items():
        paths[kind] = folder / f"{kind}.yaml"
        paths[kind].write_text(yaml.safe_dump(content))
    return paths


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def started(
    dev_server: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Started]:
    folder = tmp_path_factory.mktemp("cli-matrix")
    policies = yaml.safe_load(POLICY_FILE.read_text())
    policies["accounts"][HELD_ACCOUNT] = {
        "approval": {
            "required_for_tiers": ["simulator"],
            "approvers": ["alice"],
            "timeout": "PT1H",
            "on_timeout": "reject",
        }
    }
    policy_file = folder / "policies.yaml"
    policy_file.write_text(yaml.safe_dump(policies))
    home = folder / "qloop-home"
    home.mkdir()
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "QLOOP_TASK_QUEUE": f"matrix-{uuid.uuid4().hex[:8]}",
        "QLOOP_HOME": str(home),
        "QLOOP_POLICY_FILE": str(policy_file),
    }
    for name in ("QLOOP_ALLOW_UNGOVERNED_SPEND", "QLOOP_CODEC_KEY", "QLOOP_CODEC_KEY_FILE"):
        env.pop(name, None)
    log = folder / "worker.log"
    tag = uuid.uuid4().hex[:6]
    with log.open("w") as sink:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink
        )
        try:
            ids, stdout, stderr = {}, {}, {}
            for kind, path in request_files(folder, tag).items():
                command = {"experiment": "run"}.get(kind, kind)
                ids[kind] = f"matrix-{kind}-{tag}"
                done = qloop_now(env, command, str(path), "--id", ids[kind], "--wait", "--json")
                assert done.returncode == EXIT_DONE, done.stderr + log.read_text()[-3000:]
                stdout[kind], stderr[kind] = done.stdout, done.stderr
            ledger = qloop_now(env, "budget", "set", f"matrix{tag}", "--limit-usd", "12.50")
            assert ledger.returncode == EXIT_DONE, ledger.stderr
            ids["ledger"] = ledger_workflow_id(f"matrix{tag}")
            # Breakers guard remote backends only: this one is started as an experiment on a
            # device would start it (activities/governance/health_calls.py).
            breaker = await dev_server.client.start_workflow(
                "BackendHealthWorkflow",
                HealthInput(backend=f"matrix/{tag}"),
                id=health_workflow_id(f"matrix/{tag}"),
                task_queue=env["QLOOP_TASK_QUEUE"],
            )
            ids["health"] = breaker.id
            yield Started(env, ids, stdout, stderr, log)
        finally:
            worker.terminate()
            worker.wait(timeout=30)


def test_start_commands_print_one_json_document_and_progress_on_stderr(
    started: Started,
) -> None:
    models: dict[str, Any] = {
        "experiment": ExperimentReport,
        "loop": LoopReport,
        "sweep": SweepReport,
    }
    for kind, model in models.items():
        document = json.loads(started.stdout[kind])
        report = model.model_validate(document)
        assert report is not None
        stderr = started.stderr[kind]
        assert f"started {started.ids[kind]}" in stderr
        assert any(line.startswith("[") for line in stderr.splitlines()), stderr
    experiment = ExperimentReport.model_validate_json(started.stdout["experiment"])
    assert experiment.status == "completed" and experiment.raw is not None
    assert LoopReport.model_validate_json(started.stdout["loop"]).iterations == 2
    sweep = SweepReport.model_validate_json(started.stdout["sweep"])
    assert (sweep.status, sweep.points_total) == ("completed", 4)


async def test_run_without_wait_prints_the_started_workflow_as_json(
    started: Started, tmp_path: Path
) -> None:
    path = request_files(tmp_path, uuid.uuid4().hex[:6])["experiment"]
    code, stdout, stderr = await qloop(started, "run", str(path), "--json")
    assert code == EXIT_DONE, stderr
    document = json.loads(stdout)
    assert document["workflow_id"].startswith("matrix-ghz-") and "web_ui" in document
    assert "started" in stderr


KIND_REPORTS: dict[str, Any] = {
    "experiment": ExperimentReport,
    "loop": LoopReport,
    "sweep": SweepReport,
    "ledger": LedgerView,
    "health": HealthView,
}


@pytest.mark.parametrize("kind", list(KIND_REPORTS))
async def test_status_and_result_on_every_kind(started: Started, kind: str) -> None:
    workflow_id = started.ids[kind]
    code, stdout, stderr = await qloop(started, "status", workflow_id)
    assert code == EXIT_DONE, stderr
    expected_status = "RUNNING" if kind in ("ledger", "health") else "COMPLETED"
    assert f"{workflow_id}: {expected_status} ({kind})" in stdout
    code, stdout, stderr = await qloop(started, "status", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    status = json.loads(stdout)
    assert (status["kind"], status["status"]) == (kind, expected_status)
    assert status["progress"] is not None, "a worker answers every kind's query"

    code, stdout, stderr = await qloop(started, "result", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    KIND_REPORTS[kind].model_validate(json.loads(stdout))
    code, stdout, stderr = await qloop(started, "result", workflow_id)
    assert code == EXIT_DONE, stderr
    first_words = {
        "experiment": f"Result of {workflow_id}",
        "loop": f"Loop {workflow_id}",
        "sweep": f"Sweep {workflow_id}",
        "ledger": "budget of account matrix",
        "health": "matrix/",
    }
    assert stdout.startswith(first_words[kind]), stdout


@pytest.mark.parametrize("kind", list(KIND_REPORTS))
async def test_list_by_kind(started: Started, kind: str) -> None:
    code, stdout, stderr = await qloop(started, "list", "--kind", kind, "--limit", "500", "--json")
    assert code == EXIT_DONE, stderr
    rows = json.loads(stdout)
    assert {row["kind"] for row in rows} == {kind}
    assert started.ids[kind] in {row["workflow_id"] for row in rows}
    code, stdout, stderr = await qloop(started, "list", "--kind", kind, "--limit", "500")
    assert code == EXIT_DONE, stderr
    assert stdout.startswith("WORKFLOW ID") and started.ids[kind] in stdout


async def test_list_shows_every_kind_by_default(started: Started) -> None:
    code, stdout, stderr = await qloop(started, "list", "--limit", "1000", "--json")
    assert code == EXIT_DONE, stderr
    listed = {row["workflow_id"] for row in json.loads(stdout)}
    assert set(started.ids.values()) <= listed


@pytest.mark.parametrize("kind", ["experiment", "loop", "sweep"])
async def test_watch_prints_the_report_of_a_finished_workflow(started: Started, kind: str) -> None:
    workflow_id = started.ids[kind]
    code, stdout, stderr = await qloop(started, "watch", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    KIND_REPORTS[kind].model_validate(json.loads(stdout))
    code, stdout, stderr = await qloop(started, "watch", workflow_id)
    assert code == EXIT_DONE, stderr
    assert workflow_id in stdout


async def test_watch_follows_a_running_experiment_live(started: Started, tmp_path: Path) -> None:
    path = request_files(tmp_path, uuid.uuid4().hex[:6])["experiment"]
    code, stdout, stderr = await qloop(started, "run", str(path), "--json")
    assert code == EXIT_DONE, stderr
    workflow_id = json.loads(stdout)["workflow_id"]
    code, stdout, stderr = await qloop(started, "watch", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    assert ExperimentReport.model_validate_json(stdout).experiment_id == workflow_id
    assert "completed" in stderr


@pytest.mark.parametrize("kind", ["ledger", "health"])
async def test_watch_refuses_a_workflow_that_never_ends(started: Started, kind: str) -> None:
    code, _, stderr = await qloop(started, "watch", started.ids[kind])
    assert code == EXIT_INVALID and "runs for ever" in stderr


async def test_invalid_file_exits_2(started: Started, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "problem": {"kind": "ghz", "num_qubits": 0}}))
    for command in ("run", "loop", "sweep"):
        code, stdout, stderr = await qloop(started, command, str(bad), "--wait", "--json")
        assert code == EXIT_INVALID, (command, stderr)
        assert stdout == "" and "refused" in stderr


async def test_unknown_id_exits_1(started: Started) -> None:
    for command in ("status", "result", "watch"):
        code, stdout, stderr = await qloop(started, command, "no-such-workflow", "--json")
        assert code == EXIT_NOT_ALLOWED, (command, stderr)
        assert stdout == "" and "not found" in stderr


async def test_policy_refusal_exits_1(started: Started, tmp_path: Path) -> None:
    request = {
        "name": "too-many-shots",
        "problem": {"kind": "ghz", "num_qubits": 2},
        "execution": {"shots": 30000},
        "policy": {"account": "students"},
    }
    path = tmp_path / "refused.yaml"
    path.write_text(yaml.safe_dump(request))
    code, stdout, stderr = await qloop(started, "run", str(path), "--wait", "--json")
    assert code == EXIT_NOT_ALLOWED, stderr
    assert stdout == "" and "not started" in stderr


async def test_failed_workflow_exits_3(dev_server: WorkflowEnvironment, started: Started) -> None:
    """A workflow that ended without a report (here terminated before any worker ran it)."""
    workflow_id = f"matrix-failed-{uuid.uuid4().hex[:6]}"
    handle = await dev_server.client.start_workflow(
        "ExperimentWorkflow",
        {"never": "run"},
        id=workflow_id,
        task_queue=f"nobody-{uuid.uuid4().hex[:6]}",
    )
    await handle.terminate(reason="the matrix test ends it")
    with pytest.raises(WorkflowFailureError):
        await handle.result()
    for command in ("result", "watch"):
        code, _, stderr = await qloop(started, command, workflow_id)
        assert code == EXIT_FAILED, (command, stderr)
        assert f"failed: {workflow_id}" in stderr
        code, stdout, stderr = await qloop(started, command, workflow_id, "--json")
        assert code == EXIT_FAILED
        assert json.loads(stdout)["status"] == "FAILED"
    code, stdout, _ = await qloop(started, "status", workflow_id)
    assert code == EXIT_DONE and "TERMINATED" in stdout


# --- steering ------------------------------------------------------------------------------


async def start_held_experiment(started: Started, folder: Path) -> str:
    """A GHZ experiment of the held account, started by `qloop run` and waiting for alice."""
    tag = uuid.uuid4().hex[:6]
    request = {
        "name": f"matrix-held-{tag}",
        "problem": {"kind": "ghz", "num_qubits": 3},
        "execution": {"shots": 200, "seed": 5},
        "mitigation": {"zne": None, "readout": False},
        "policy": {"account": HELD_ACCOUNT},
    }
    path = folder / f"held-{tag}.yaml"
    path.write_text(yaml.safe_dump(request))
    code, stdout, stderr = await qloop(started, "run", str(path), "--json")
    assert code == EXIT_DONE, stderr
    workflow_id: str = json.loads(stdout)["workflow_id"]
    for _ in range(150):
        progress = await status_progress(started, workflow_id)
        if progress.stage == Stage.AWAITING_APPROVAL:
            return workflow_id
        await asyncio.sleep(0.2)
    raise AssertionError(f"{workflow_id} never awaited approval: {progress}")


async def status_progress(started: Started, workflow_id: str) -> Progress:
    code, stdout, stderr = await qloop(started, "status", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    return Progress.model_validate(json.loads(stdout)["progress"])


async def steer(started: Started, *args: str, expect: int = EXIT_DONE) -> SteerOutcome:
    code, stdout, stderr = await qloop(started, *args, "--json")
    assert code == expect, (args, stderr, started.worker_log.read_text()[-2000:])
    outcome = SteerOutcome.model_validate(json.loads(stdout))
    assert (outcome.workflow_id, outcome.command) == (args[1], args[0])
    return outcome


async def test_pause_resume_and_decisions_on_an_experiment_awaiting_approval(
    started: Started, tmp_path: Path
) -> None:
    workflow_id = await start_held_experiment(started, tmp_path)

    paused = await steer(started, "pause", workflow_id, "--by", "ops", "--reason", "matrix")
    assert paused.confirmed and paused.kind == "experiment"
    assert (await status_progress(started, workflow_id)).paused
    resumed = await steer(started, "resume", workflow_id, "--by", "ops")
    assert resumed.confirmed
    assert not (await status_progress(started, workflow_id)).paused

    # bob is no approver of the account: refused by its policy (exit 1) and recorded.
    refused = await steer(started, "approve", workflow_id, "--as", "bob", expect=EXIT_NOT_ALLOWED)
    assert refused.decision is not None and refused.decision.verdict == "refused"
    assert "bob" in refused.decision.note
    approved = await steer(started, "approve", workflow_id, "--as", "alice", "--reason", "ok")
    assert approved.confirmed and approved.decision is not None
    assert (approved.decision.verdict, approved.decision.approver) == ("approved", "alice")

    code, stdout, stderr = await qloop(started, "result", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    report = ExperimentReport.model_validate_json(stdout)
    assert report.status == "completed" and report.governance is not None
    assert [event.action for event in report.governance.ops] == ["pause", "resume"]
    assert [event.by for event in report.governance.ops] == ["ops", "ops"]


async def test_reject_ends_an_experiment_awaiting_approval(
    started: Started, tmp_path: Path
) -> None:
    workflow_id = await start_held_experiment(started, tmp_path)
    rejected = await steer(started, "reject", workflow_id, "--as", "alice", "--reason", "no")
    assert rejected.decision is not None and rejected.decision.verdict == "rejected"
    code, stdout, stderr = await qloop(started, "result", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    assert ExperimentReport.model_validate_json(stdout).status == "rejected"


async def test_reroute_moves_an_experiment_awaiting_approval(
    started: Started, tmp_path: Path
) -> None:
    """The noisy simulator needs no approval in the held account: rerouted, it runs there."""
    workflow_id = await start_held_experiment(started, tmp_path)
    rerouted = await steer(
        started,
        "reroute",
        workflow_id,
        "--provider",
        "aer",
        "--device",
        "noisy",
        "--noise-profile",
        "ibm_guadalupe",
    )
    assert rerouted.confirmed and "noisy" in rerouted.message
    code, stdout, stderr = await qloop(started, "result", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    report = ExperimentReport.model_validate_json(stdout)
    assert report.status == "completed"
    assert report.governance is not None and report.governance.ops[-1].action == "reroute"
    assert report.provenance is not None and report.provenance.backend.device == "noisy"


async def test_cancel_ends_an_experiment_with_a_cancelled_report(
    started: Started, tmp_path: Path
) -> None:
    workflow_id = await start_held_experiment(started, tmp_path)
    cancelled = await steer(started, "cancel", workflow_id, "--reason", "matrix", "--wait")
    assert cancelled.confirmed and cancelled.ended is not None
    assert cancelled.ended.startswith("cancelled"), cancelled.ended
    code, stdout, stderr = await qloop(started, "result", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    assert ExperimentReport.model_validate_json(stdout).status == "cancelled"


@pytest.mark.parametrize("kind", ["loop", "sweep"])
async def test_cancel_stops_a_running_loop_or_sweep(
    started: Started, tmp_path: Path, kind: str
) -> None:
    """Long enough not to end by itself first: 300 iterations, or 1,600 points on the noisy
    simulator."""
    path = request_files(tmp_path, uuid.uuid4().hex[:6])[kind]
    content = yaml.safe_load(path.read_text())
    if kind == "loop":
        content["limits"] = {"max_iterations": 300}
        content["optimizer"]["patience"] = 300
    else:
        content["points"]["grid"] = [{"start": 0.0, "stop": 1.0, "num": 40}] * 2
        content["evaluation"]["backend"] = NOISY
    path.write_text(yaml.safe_dump(content))
    code, stdout, stderr = await qloop(started, kind, str(path), "--json")
    assert code == EXIT_DONE, stderr
    workflow_id = json.loads(stdout)["workflow_id"]

    cancelled = await steer(started, "cancel", workflow_id, "--reason", "matrix", "--wait")
    assert (cancelled.kind, cancelled.confirmed, cancelled.ended) == (kind, True, "cancelled")
    code, stdout, stderr = await qloop(started, "status", workflow_id, "--json")
    assert code == EXIT_DONE, stderr
    assert json.loads(stdout)["status"] == "CANCELED"
    code, stdout, stderr = await qloop(started, "result", workflow_id)
    assert code == EXIT_FAILED, stderr


STEERING_MISFITS = [
    ("pause", "sweep"),
    ("resume", "loop"),
    ("approve", "sweep"),
    ("reroute", "loop"),
    ("cancel", "ledger"),
    ("cancel", "health"),
    ("pause", "ledger"),
]


@pytest.mark.parametrize(("command", "kind"), STEERING_MISFITS)
async def test_steering_a_kind_it_does_not_apply_to_exits_2(
    started: Started, command: str, kind: str
) -> None:
    extra = {"approve": ["--as", "alice"], "reroute": ["--provider", "aer"]}.get(command, [])
    code, stdout, stderr = await qloop(started, command, started.ids[kind], *extra, "--json")
    assert code == EXIT_INVALID, stderr
    assert stdout == "" and f"{command} applies to" in stderr and f"is a {kind}" in stderr


@pytest.mark.parametrize("command", ["pause", "resume", "cancel", "approve", "reroute"])
async def test_steering_an_ended_or_unknown_experiment_exits_1(
    started: Started, command: str
) -> None:
    extra = {"approve": ["--as", "alice"], "reroute": ["--provider", "aer"]}.get(command, [])
    ended = started.ids["experiment"]
    code, stdout, stderr = await qloop(started, command, ended, *extra, "--json")
    assert code == EXIT_NOT_ALLOWED, stderr
    assert stdout == "" and "has ended (completed)" in stderr
    code, stdout, stderr = await qloop(started, command, "no-such-workflow", *extra, "--json")
    assert code == EXIT_NOT_ALLOWED, stderr
    assert stdout == "" and "not found" in stderr


async def test_invalid_steering_arguments_exit_2(started: Started) -> None:
    ended = started.ids["experiment"]
    for args in (
        ["approve", ended, "--as", "not a name!"],
        ["reroute", ended, "--provider", "aer", "--device", "no-such-device"],
        ["approve", ended, "--as", "alice", "--key", "missing.key"],
    ):
        code, stdout, stderr = await qloop(started, *args, "--json")
        assert code == EXIT_INVALID, (args, stderr)
        assert stdout == "" and "refused" in stderr
