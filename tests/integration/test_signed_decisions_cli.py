"""Signed approvals and signed budget-limit changes through the CLI as a person uses it:
`qloop keys new`, `qloop approve --key`, `qloop approve --print-json`, `qloop budget set --key`,
through `starter.main` against the real dev server (real clock), with the worker's own workflows
and activities running in process and a real policy file."""

from __future__ import annotations

import asyncio
import json
import stat
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from cli.output import EXIT_INVALID, EXIT_NOT_ALLOWED
from schemas.control import ApprovalDecision
from schemas.pipeline import ExperimentInput, Progress, Stage
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import record_history
from worker import WORKFLOWS, all_activities

ACCOUNT = "signed-lab"


async def qloop(*argv: str) -> int:
    # main() runs its own event loop, so it runs in a thread beside the test's (and the worker's).
    return await asyncio.to_thread(starter.main, list(argv))


def policy_line(output: str, name: str) -> str:
    """The public key from the `  NAME: "ed25519:..."` line `qloop keys new` prints."""
    line = next(line for line in output.splitlines() if line.startswith(f"  {name}: "))
    return line.split('"')[1]


@pytest_asyncio.fixture
async def keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    """alice (approver), carol (budget admin) and mallory (nobody), made with `qloop keys new`."""
    public = {}
    for name in ("alice", "carol", "mallory"):
        assert await qloop("keys", "new", name, "--dir", str(tmp_path)) == 0
        public[name] = policy_line(capsys.readouterr().out, name)
    return public


@pytest_asyncio.fixture
async def task_queue(
    dev_server: WorkflowEnvironment,
    keys: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[str]:
    account = {
        "approval": {
            "required_for_tiers": ["simulator"],
            "approvers": ["alice"],
            "signed": True,
            "public_keys": {"alice": keys["alice"]},
        },
        "budget_admins": {"carol": keys["carol"]},
    }
    policy_file = tmp_path / "policies.yaml"
    policy_file.write_text(yaml.safe_dump({"accounts": {ACCOUNT: account}}))
    queue = f"signed-cli-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("QLOOP_POLICY_FILE", str(policy_file))
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("QLOOP_TASK_QUEUE", queue)
    async with Worker(
        dev_server.client, task_queue=queue, workflows=WORKFLOWS, activities=all_activities()
    ):
        yield queue


async def awaiting_approval(handle: WorkflowHandle) -> Progress:
    for _ in range(300):
        progress = await handle.query("progress", result_type=Progress)
        if progress.stage == Stage.AWAITING_APPROVAL:
            return progress
        await asyncio.sleep(0.2)
    raise AssertionError(f"never awaited approval; last progress {progress}")


async def test_keys_new_writes_a_private_key_only_its_owner_reads(
    keys: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key_file = tmp_path / "alice.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert key_file.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert keys["alice"].startswith("ed25519:")
    # Never over an existing key.
    assert await qloop("keys", "new", "alice", "--dir", str(tmp_path)) == EXIT_INVALID
    assert "exists; qloop never overwrites a key" in capsys.readouterr().err
    assert await qloop("keys", "public", str(key_file)) == 0
    assert policy_line(capsys.readouterr().out, "alice") == keys["alice"]


async def test_only_the_approvers_signed_decision_counts(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    request = ExperimentRequest.model_validate(
        {
            "name": "ghz-signed",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {"shots": 200, "seed": 3, "backend": {"provider": "aer"}},
            "mitigation": {"zne": None, "readout": False},
            "policy": {"account": ACCOUNT},
        }
    )
    experiment_id = f"signed-approval-{uuid.uuid4().hex[:6]}"
    handle = await dev_server.client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request),
        id=experiment_id,
        task_queue=task_queue,
        result_type=ExperimentReport,
    )
    progress = await awaiting_approval(handle)
    assert progress.awaiting is not None and progress.awaiting.startswith("signed approval")
    alice_key, mallory_key = str(tmp_path / "alice.key"), str(tmp_path / "mallory.key")

    # A name alone, and alice's name with mallory's key, are refused and recorded.
    assert await qloop("approve", experiment_id, "--as", "alice") == EXIT_NOT_ALLOWED
    assert "approve refused: unsigned:" in capsys.readouterr().err
    assert (
        await qloop("approve", experiment_id, "--as", "alice", "--key", mallory_key)
        == EXIT_NOT_ALLOWED
    )
    assert "approve refused: wrong key:" in capsys.readouterr().err
    assert await qloop("approve", experiment_id, "--as", "alice", "--key", "missing.key") == 2
    assert "refused: --key missing.key: cannot read it" in capsys.readouterr().err

    # --print-json prints what a Web UI user pastes, and sends nothing.
    assert (
        await qloop("approve", experiment_id, "--as", "alice", "--key", alice_key, "--print-json")
        == 0
    )
    printed = ApprovalDecision.model_validate(json.loads(capsys.readouterr().out))
    assert printed.signature is not None and printed.signature.experiment == experiment_id
    assert printed.signature.run_id == handle.result_run_id
    still = await handle.query("progress", result_type=Progress)
    assert still.stage == Stage.AWAITING_APPROVAL
    assert still.governance is not None and len(still.governance.refused_decisions) == 2
    # The printed JSON with its reason changed no longer verifies.
    altered = printed.model_copy(update={"reason": "and the QPU run next week too"})
    await handle.signal("approve", json.loads(altered.model_dump_json(exclude_none=True)))
    for _ in range(100):
        progress = await handle.query("progress", result_type=Progress)
        if progress.governance is not None and len(progress.governance.refused_decisions) == 3:
            break
        await asyncio.sleep(0.1)
    assert progress.stage == Stage.AWAITING_APPROVAL

    assert (
        await qloop("approve", experiment_id, "--as", "alice", "--key", alice_key, "--reason", "ok")
        == 0
    )
    confirmed = capsys.readouterr().out
    assert f"{experiment_id}: approved by alice, signed with key " in confirmed
    report = await handle.result()
    assert report.status == "completed"
    assert report.governance is not None
    (approval,) = report.governance.approvals
    assert approval.decision is not None and approval.decision.key_id in confirmed
    assert [
        refused.note.split(":")[1].strip() for refused in report.governance.refused_decisions
    ] == [
        "unsigned",
        "wrong key",
        "forged",
    ]
    # Named by its workflow id: the replay test replays a history under its file's name, and
    # what was signed includes the experiment id.
    await record_history(dev_server.client, experiment_id)


async def test_only_a_budget_admins_signed_limit_change_is_applied(
    task_queue: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    carol_key, mallory_key = str(tmp_path / "carol.key"), str(tmp_path / "mallory.key")
    set_limit = ("budget", "set", ACCOUNT, "--limit-usd")

    assert await qloop(*set_limit, "1000000", "--as", "carol") == EXIT_NOT_ALLOWED
    assert "limit change refused: unsigned:" in capsys.readouterr().err
    assert (
        await qloop(*set_limit, "1000000", "--as", "carol", "--key", mallory_key)
        == EXIT_NOT_ALLOWED
    )
    assert "limit change refused: wrong key:" in capsys.readouterr().err

    assert (
        await qloop(*set_limit, "75", "--period", "month", "--as", "carol", "--key", carol_key) == 0
    )
    shown = capsys.readouterr().out
    assert "$75.00 per month (set by carol, signed with key " in shown
    assert shown.count("refused change") == 2
    assert "$1,000,000.00 per none by carol" in shown
