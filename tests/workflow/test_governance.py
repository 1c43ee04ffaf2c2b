"""Approval, pause, reroute and cancel of ExperimentWorkflow on the time-skipping test server.

Real activities (Qiskit, Aer), a real policy file, and the signals exactly as the CLI, the Web UI
or `temporal workflow signal` send them. Approval timeouts of hours pass in seconds.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import WorkflowHandle, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from schemas.control import ApprovalDecision, OpsCommand, RecordedDecision, RerouteCommand
from schemas.pipeline import ExperimentInput, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from schemas.signatures import Verdict, own_key_id, public_key_text, sign_decision
from tests.workflow.conftest import StartWorker
from workflows import search_attributes as attrs

APPROVERS = ["alice", "bob"]
SIGNING_KEYS = {name: Ed25519PrivateKey.generate() for name in [*APPROVERS, "mallory"]}
POLICIES = {
    "accounts": {
        "reviewed": {
            "approval": {
                "required_for_tiers": ["simulator", "noisy_simulator", "qpu"],
                "approvers": APPROVERS,
                "timeout": "PT2H",
            }
        },
        "noisy-reviewed": {
            "approval": {
                "required_for_tiers": ["noisy_simulator"],
                "approvers": APPROVERS,
                "timeout": "PT3H",
                "on_timeout": "fallback",
            }
        },
        "signed": {
            "approval": {
                "required_for_tiers": ["simulator"],
                "approvers": APPROVERS,
                "timeout": "PT2H",
                "signed": True,
                "public_keys": {
                    name: public_key_text(SIGNING_KEYS[name].public_key()) for name in APPROVERS
                },
            }
        },
        "ideal-only": {"allowed_backends": ["aer/ideal"]},
        "small": {"max_shots": 100},
    }
}
NOISY = BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe")
IDEAL = BackendChoice(provider="aer", device="ideal")


@pytest.fixture(autouse=True)
def policy_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump(POLICIES))
    monkeypatch.setenv("QLOOP_POLICY_FILE", str(path))
    return path


@pytest_asyncio.fixture
async def task_queue(time_skipping_env: WorkflowEnvironment, start_worker: StartWorker) -> str:
    return await start_worker(time_skipping_env.client)


def ghz(account: str, backend: BackendChoice = IDEAL, **execution: object) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "ghz-governed",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {"shots": 500, "seed": 5, "backend": backend.model_dump(), **execution},
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": account},
        }
    )


async def start(
    env: WorkflowEnvironment, task_queue: str, request: ExperimentRequest
) -> WorkflowHandle:
    return await env.client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request),
        id=f"gov-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=ExperimentReport,
    )


async def progress_when(
    handle: WorkflowHandle, condition: Callable[[Progress], bool], timeout: float = 60.0
) -> Progress:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        progress = await handle.query("progress", result_type=Progress)
        if condition(progress):
            return progress
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"condition not reached; last progress {progress}")
        await asyncio.sleep(0.2)


def awaiting_approval(progress: Progress) -> bool:
    return progress.stage == Stage.AWAITING_APPROVAL


async def test_an_approved_experiment_records_who_approved(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    described = await handle.describe()
    assert described.typed_search_attributes.get(attrs.AWAITING_APPROVAL) is True
    assert described.typed_search_attributes.get(attrs.STAGE) == "awaiting_approval"
    await handle.signal("approve", ApprovalDecision(approver="alice", reason="small run"))
    report = await handle.result()
    assert report.status == "completed"
    assert report.produced_by == "simulator"
    assert report.governance is not None
    (approval,) = report.governance.approvals
    assert approval.outcome == "approved"
    assert approval.decision is not None
    assert (approval.decision.approver, approval.decision.reason) == ("alice", "small run")
    assert "simulator tier" in approval.why_required
    described = await handle.describe()
    assert described.typed_search_attributes.get(attrs.AWAITING_APPROVAL) is False


async def test_a_decision_from_someone_not_listed_is_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    await handle.signal("approve", ApprovalDecision(approver="mallory", reason="trust me"))
    progress = await progress_when(
        handle, lambda p: p.governance is not None and bool(p.governance.refused_decisions)
    )
    assert progress.stage == Stage.AWAITING_APPROVAL
    await handle.signal("reject", ApprovalDecision(approver="bob", reason="not this quarter"))
    report = await handle.result()
    assert report.status == "rejected"
    assert report.status_reason == "rejected by bob: not this quarter"
    assert report.value is None
    assert report.governance is not None
    (refused,) = report.governance.refused_decisions
    assert refused.approver == "mallory"
    assert "not an approver" in refused.note and "alice, bob" in refused.note
    assert report.governance.approvals[0].decision.approver == "bob"  # type: ignore[union-attr]


async def test_no_decision_within_the_timeout_rejects(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    report = await handle.result()
    assert report.status == "rejected"
    assert report.status_reason.startswith("approval timed out: no decision within 2:00:00")
    assert report.governance is not None
    assert report.governance.approvals[0].outcome == "timed_out"


async def test_no_decision_within_the_timeout_falls_back_to_a_simulator(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    request = ghz("noisy-reviewed", NOISY, fallback=[IDEAL.model_dump()])
    handle = await start(time_skipping_env, task_queue, request)
    report = await handle.result()
    assert report.status == "completed"
    assert report.produced_by == "simulator"
    assert report.provenance is not None
    assert report.provenance.backend.device == "ideal"
    assert "approval timed out" in report.produced_by_reason
    assert report.governance is not None
    (change,) = report.governance.route
    assert (change.kind, change.from_backend, change.to_backend) == (
        "fallback",
        "aer/noisy:ibm_guadalupe",
        "aer/ideal",
    )


async def test_a_paused_experiment_submits_nothing_until_resumed(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    await handle.signal("pause", OpsCommand(by="ops", reason="calibration"))
    await handle.signal("approve", ApprovalDecision(approver="alice"))
    progress = await progress_when(handle, lambda p: p.stage == Stage.PAUSED)
    assert progress.job_state is None and progress.polls == 0
    await asyncio.sleep(1.0)
    assert (await handle.query("progress", result_type=Progress)).stage == Stage.PAUSED
    await handle.signal("resume", OpsCommand(by="ops"))
    report = await handle.result()
    assert report.status == "completed"
    assert report.governance is not None
    assert [event.action for event in report.governance.ops] == ["pause", "resume"]


async def test_a_reroute_before_submission_switches_backend(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("noisy-reviewed", NOISY))
    await progress_when(handle, awaiting_approval)
    await handle.signal("reroute", RerouteCommand(backend=IDEAL, by="ops", reason="queue"))
    report = await handle.result()
    assert report.status == "completed"
    assert report.provenance is not None and report.provenance.backend.device == "ideal"
    assert report.governance is not None
    (change,) = report.governance.route
    assert change.kind == "reroute" and change.why == "rerouted by ops: queue"
    assert change.cancelled_job is None
    assert report.governance.approvals[0].outcome == "pending"


async def test_cancel_while_awaiting_approval_reports_cancelled(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    await handle.cancel()
    report = await handle.result()
    assert report.status == "cancelled"
    assert report.status_reason == "cancelled"


async def test_the_cancel_signal_carries_who_and_why(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    await handle.signal("cancel", OpsCommand(by="carol", reason="wrong graph"))
    report = await handle.result()
    assert (report.status, report.status_reason) == ("cancelled", "cancelled by carol: wrong graph")


@pytest.mark.parametrize(
    ("account", "request_changes", "rule"),
    [
        ("ideal-only", {"backend": NOISY}, "allowed_backends"),
        ("small", {"shots": 500}, "max_shots"),
    ],
)
async def test_policy_refusals_name_the_rule(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    account: str,
    request_changes: dict,
    rule: str,
) -> None:
    backend = request_changes.get("backend", IDEAL)
    request = ghz(account, backend, shots=request_changes.get("shots", 500))
    report = await (await start(time_skipping_env, task_queue, request)).result()
    assert report.status == "rejected"
    assert report.status_reason.startswith(f"policy rule {rule}: ")


async def test_an_update_answers_with_the_decision_or_the_refusal(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("reviewed"))
    await progress_when(handle, awaiting_approval)
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update("approve", ApprovalDecision(approver="mallory"))
    assert "'mallory' is not an approver" in str(refused.value.cause)
    decision = await handle.execute_update(
        "approve", ApprovalDecision(approver="bob", reason="ok"), result_type=RecordedDecision
    )
    assert (decision.verdict, decision.approver) == ("approved", "bob")
    report = await handle.result()
    assert report.status == "completed"
    assert report.governance is not None
    assert [d.approver for d in report.governance.refused_decisions] == ["mallory"]


# --- signed decisions (schemas/signatures.py) ---------------------------------------------------


async def signed_decision(
    env: WorkflowEnvironment,
    handle: WorkflowHandle,
    approver: str,
    verdict: Verdict = "approved",
    reason: str = "",
    key: str | None = None,
    issued_late_by: timedelta = timedelta(0),
    run_id: str | None = None,
) -> ApprovalDecision:
    """A decision signed as `qloop approve --key` signs it, at the test server's time (which
    runs ahead of the wall clock once earlier tests skipped time)."""
    signature = sign_decision(
        SIGNING_KEYS[key or approver],
        handle.id,
        run_id or (await handle.describe()).run_id,
        verdict,
        approver,
        reason,
        await env.get_current_time() + issued_late_by,
    )
    return ApprovalDecision(approver=approver, reason=reason, signature=signature)


def as_web_ui_json(decision: ApprovalDecision) -> dict[str, object]:
    """The JSON a person pastes into the Web UI's signal form."""
    return json.loads(decision.model_dump_json(exclude_none=True))


async def refused_notes(handle: WorkflowHandle, count: int) -> list[str]:
    progress = await progress_when(
        handle,
        lambda p: p.governance is not None and len(p.governance.refused_decisions) >= count,
    )
    assert progress.governance is not None
    return [refused.note for refused in progress.governance.refused_decisions]


async def test_a_signed_approval_counts_and_records_the_key(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    handle = await start(time_skipping_env, task_queue, ghz("signed"))
    progress = await progress_when(handle, awaiting_approval)
    assert progress.awaiting is not None and progress.awaiting.startswith("signed approval by")
    decision = await signed_decision(time_skipping_env, handle, "alice", reason="small run")
    await handle.signal("approve", as_web_ui_json(decision))
    report = await handle.result()
    assert report.status == "completed"
    assert report.governance is not None
    (approval,) = report.governance.approvals
    assert approval.signed and approval.outcome == "approved"
    assert approval.decision is not None
    assert (approval.decision.approver, approval.decision.reason) == ("alice", "small run")
    assert approval.decision.key_id == own_key_id(SIGNING_KEYS["alice"])
    assert decision.signature is not None
    assert approval.decision.signed_at == decision.signature.issued_at
    assert report.governance.refused_decisions == []


async def test_unsigned_forged_replayed_and_wrong_key_decisions_are_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    env = time_skipping_env
    handle = await start(env, task_queue, ghz("signed"))
    await progress_when(handle, awaiting_approval)
    run_id = (await handle.describe()).run_id

    # What anyone with write access to the namespace can send: a name without a signature, a
    # signature over another verdict, the wrong person's key, a decision for another run of
    # this experiment (as a reset would bring back), one signed before the approval was asked.
    attempts = [
        ApprovalDecision(approver="alice", reason="trust me"),
        await signed_decision(env, handle, "alice", verdict="rejected"),
        await signed_decision(env, handle, "alice", key="bob"),
        await signed_decision(env, handle, "alice", key="mallory"),
        await signed_decision(env, handle, "alice", run_id="an-earlier-run"),
        await signed_decision(env, handle, "alice", issued_late_by=-timedelta(hours=1)),
    ]
    for attempt in attempts:
        await handle.signal("approve", as_web_ui_json(attempt))
    notes = await refused_notes(handle, len(attempts))
    assert [note.split(":")[1].strip() for note in notes] == [
        "unsigned",
        "forged",
        "wrong key",
        "wrong key",
        "replayed",
        "replayed",
    ]
    assert all(note.startswith("approve refused: ") for note in notes)
    assert "(bob's key)" in notes[2] and "(a key not in the policy)" in notes[3]
    assert f"not this one (experiment {handle.id!r} run {run_id})" in notes[4]
    assert "before the approval was requested" in notes[5]
    assert (await handle.query("progress", result_type=Progress)).stage == Stage.AWAITING_APPROVAL

    # An update answers with the refusal at once.
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(
            "approve", await signed_decision(env, handle, "bob", key="alice")
        )
    assert "approve refused: wrong key" in str(refused.value.cause)

    bob = await signed_decision(env, handle, "bob", verdict="rejected", reason="not this quarter")
    decision = await handle.execute_update("reject", bob, result_type=RecordedDecision)
    assert (decision.verdict, decision.key_id) == ("rejected", own_key_id(SIGNING_KEYS["bob"]))
    report = await handle.result()
    assert report.status == "rejected"
    assert report.status_reason == "rejected by bob: not this quarter"
    assert report.governance is not None
    assert len(report.governance.refused_decisions) == len(attempts) + 1
