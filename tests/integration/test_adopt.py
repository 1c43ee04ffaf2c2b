"""`qloop adopt` on the whole local stack: tasks submitted through the plain Braket SDK against
the QPU stand-in (as a notebook would), adopted by a real worker process, their money committed
in the account's ledger at what the stand-in billed, to the cent."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from braket.aws import AwsDevice, AwsQuantumTask, AwsSession
from braket.circuits import Circuit
from braket.ir.openqasm import Program as OpenQasmProgram
from temporalio.client import Client

from activities.governance.budget_calls import show_budget
from schemas.adoption import AdoptReport, ledger_key
from schemas.budget import LedgerView, ledger_workflow_id
from tests.harness import QPU, LocalStack, record_history, run_qloop, running_stack

pytestmark = pytest.mark.integration

ACCOUNT = "notebooks"
POLICIES = {"accounts": {"default": {"budget": {"limit_usd": 100}}}}
ENDED = {"COMPLETED", "FAILED", "CANCELLED"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with running_stack(tmp_path_factory.mktemp("adopt"), "adopt", policies=POLICIES) as local:
        yield local


@pytest.fixture(scope="module")
def notebook(stack: LocalStack) -> Iterator[dict[str, str]]:
    """This process as a notebook: the plain Braket SDK pointed at the stand-in through
    botocore's own endpoint variables (and qloop's, for the planning step of one test)."""
    env = stack.worker_env()
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            if key.startswith(("AWS_", "QLOOP_BRAKET", "QLOOP_S3", "QLOOP_HOME")):
                patch.setenv(key, value)
        yield env


def bell() -> Circuit:
    return Circuit().h(0).cnot(0, 1)


def wait_until_ended(task: AwsQuantumTask, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while (state := task.state()) not in ENDED:
        assert time.monotonic() < deadline, f"task {task.id} still {state}"
        time.sleep(0.2)
    return state


def bucket(env: dict[str, str]) -> tuple[str, str]:
    return env["QLOOP_BRAKET_S3_BUCKET"], "notebook"


def billed(stack: LocalStack, arns: list[str]) -> dict[str, Decimal]:
    return {
        t["quantumTaskArn"]: Decimal(t["billedUsd"])
        for t in stack.tasks()
        if t["quantumTaskArn"] in arns
    }


async def adopt(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_qloop(env, "adopt", "--device", QPU, "--poll-ceiling", "1", *args)


async def ledger(client: Client) -> LedgerView:
    view = await show_budget(client, ACCOUNT)
    assert view is not None
    return view


async def committed(client: Client) -> Decimal:
    """The account's committed total; 0 before its ledger exists."""
    view = await show_budget(client, ACCOUNT)
    return Decimal(0) if view is None else Decimal(str(view.committed_usd))


async def test_five_notebook_tasks_one_failed_one_cancelled_are_adopted_to_the_cent(
    stack: LocalStack, notebook: dict[str, str], client: Client
) -> None:
    device = AwsDevice(QPU, AwsSession())
    stack.set_faults(task_failure_rate=1.0)
    failed = device.run(bell(), bucket(notebook), shots=50)
    assert wait_until_ended(failed) == "FAILED"
    stack.set_faults(queue_delay_s=60)
    cancelled = device.run(bell(), bucket(notebook), shots=50)
    cancelled.cancel()
    assert wait_until_ended(cancelled) == "CANCELLED"
    stack.set_faults(queue_delay_s=[1, 3])
    tag = uuid.uuid4().hex[:8]
    completed = [
        device.run(bell(), bucket(notebook), shots=100 + 10 * i, tags={"notebook": tag})
        for i in range(3)
    ]
    arns = [failed.id, cancelled.id, *(task.id for task in completed)]
    arn_file = stack.folder / "arns.txt"
    arn_file.write_text("# from the notebook\n" + "\n".join(arns[2:]) + "\n")

    # Still queued or running when adopted: the workflow waits for them.
    workflow_id = f"adopt-{uuid.uuid4().hex[:8]}"
    code, stdout, stderr = await adopt(
        notebook,
        *arns[:2],
        "--from-file",
        str(arn_file),
        "--account",
        ACCOUNT,
        "--id",
        workflow_id,
        "--wait",
        "--json",
    )
    assert code == 0, stderr
    report = AdoptReport.model_validate_json(stdout)
    stack.set_faults()

    bills = billed(stack, arns)
    assert [t.arn for t in report.tasks] == arns
    assert [t.status for t in report.tasks] == ["FAILED", "CANCELLED", *["COMPLETED"] * 3]
    for task in report.tasks:
        assert Decimal(str(task.cost_usd)).quantize(Decimal("0.000001")) == bills[task.arn]
        assert (task.counts_uri is not None) == (task.status == "COMPLETED")
        assert task.ledger_key == ledger_key(task.arn) and task.ledger_state == "committed"
    assert "injected" in report.tasks[0].failure_reason
    assert bills[failed.id] == bills[cancelled.id] == 0
    assert all(bills[task.id] > 0 for task in completed)
    # Rigetti Ankaa's prices: $0.30 a task, $0.0009 a shot.
    assert sum(bills.values()) == Decimal("0.30") * 3 + Decimal("0.0009") * (100 + 110 + 120)
    assert report.experiment is None and report.experiment_skipped

    counts = json.loads(stack.read_artifact(report.tasks[2].counts_uri or ""))
    assert counts["task_arn"] == completed[0].id
    assert sum(counts["counts"][0].values()) == 100

    view = await ledger(client)
    entries = {entry.key: entry for entry in view.entries}
    assert round(Decimal(str(view.committed_usd)), 2) == round(sum(bills.values()), 2)
    assert abs(Decimal(str(view.committed_usd)) - sum(bills.values())) < Decimal("0.000001")
    assert view.reserved_usd == 0.0
    for task in report.tasks:
        entry = entries[ledger_key(task.arn)]
        assert entry.state == "committed" and entry.experiment_id == workflow_id
        assert Decimal(str(entry.actual_usd)).quantize(Decimal("0.000001")) == bills[task.arn]
    assert entries[ledger_key(failed.id)].reason.startswith("FAILED: ")
    assert entries[ledger_key(cancelled.id)].reason.startswith("CANCELLED")

    code, stdout, stderr = await run_qloop(notebook, "status", workflow_id, "--json")
    assert code == 0, stderr
    assert (json.loads(stdout)["kind"], json.loads(stdout)["status"]) == ("adopt", "COMPLETED")
    code, stdout, stderr = await run_qloop(notebook, "result", workflow_id)
    assert code == 0, stderr
    assert f"{failed.id}  FAILED" in stdout and f"{cancelled.id}  CANCELLED" in stdout

    code, stdout, stderr = await adopt(notebook, *arns, "--account", ACCOUNT, "--wait")
    assert code == 0, stderr
    assert "COMPLETED" in stdout and "FAILED" in stdout and "CANCELLED" in stdout
    again = await ledger(client)
    assert again.committed_usd == view.committed_usd, "a task adopted twice is counted once"

    # The same three found by their tag (SearchQuantumTasks since a time, filtered on tags).
    code, stdout, stderr = await adopt(
        notebook, "--tag", f"notebook={tag}", "--account", ACCOUNT, "--wait", "--json"
    )
    assert code == 0, stderr
    tagged = AdoptReport.model_validate_json(stdout)
    assert [t.arn for t in tagged.tasks] == [task.id for task in completed]
    assert (await ledger(client)).committed_usd == view.committed_usd
    await record_history(client, workflow_id, "adopt-five-tasks")
    await record_history(client, ledger_workflow_id(ACCOUNT), "budget-ledger-external-spend")


async def test_a_request_file_maps_adopted_tasks_to_the_plan_and_mitigates(
    stack: LocalStack, notebook: dict[str, str], client: Client
) -> None:
    stack.set_faults()
    document = {
        "name": "adopted-ghz",
        "problem": {"kind": "ghz", "num_qubits": 2},
        "execution": {"shots": 200, "seed": 7, "backend": {"provider": "braket", "device": QPU}},
        "mitigation": {"zne": {"scale_factors": [1, 3, 5]}, "readout": False},
        "policy": {"account": ACCOUNT},
    }
    request_file = stack.folder / "adopted-ghz.yaml"
    request_file.write_text(yaml.safe_dump(document))
    # The notebook user asks qloop which circuits to run (`qloop plan`), runs them with the
    # plain SDK, and the kernel dies.
    folder = stack.folder / "adopted-ghz-plan"
    code, stdout, stderr = await run_qloop(
        notebook, "plan", str(request_file), "--out", str(folder), "--json"
    )
    assert code == 0, stderr
    planned = json.loads(stdout)
    assert [(c["kind"], c["scale_factor"]) for c in planned["circuits"]] == [
        ("observable", 1.0),
        ("observable", 3.0),
        ("observable", 5.0),
    ]
    assert json.loads((folder / "plan.json").read_text()) == planned
    assert len(planned["tasks"]) == 1  # qloop itself would send one program set
    device = AwsDevice(QPU, AwsSession())
    circuits = [
        OpenQasmProgram(source=(folder / circuit["file"]).read_text())
        for circuit in planned["circuits"]
    ]
    arns = [
        device.run(circuit, bucket(notebook), shots=200, disable_qubit_rewiring=True).id
        for circuit in circuits
    ]

    # Too few tasks for the plan: refused before anything is recorded.
    before = await committed(client)
    code, stdout, stderr = await adopt(
        notebook, *arns[:2], "--request", str(request_file), "--wait", "--json"
    )
    assert code == 3
    assert "plans 3 circuits" in json.loads(stdout)["error"]
    assert await committed(client) == before
    view = await show_budget(client, ACCOUNT)
    assert view is None or ledger_key(arns[0]) not in {e.key for e in view.entries}

    workflow_id = f"adopt-ghz-{uuid.uuid4().hex[:8]}"
    code, stdout, stderr = await adopt(
        notebook, *arns, "--request", str(request_file), "--id", workflow_id, "--wait", "--json"
    )
    assert code == 0, stderr
    report = AdoptReport.model_validate_json(stdout)
    assert [t.status for t in report.tasks] == ["COMPLETED"] * len(arns)
    experiment = report.experiment
    assert experiment is not None, report.experiment_skipped
    assert experiment.status == "completed"
    assert experiment.mitigated is not None
    assert experiment.produced_by == "hardware"
    assert experiment.zne is not None
    assert [p.scale_factor for p in experiment.zne.points] == [1, 3, 5]
    bills = billed(stack, arns)
    assert experiment.cost.actual_usd == pytest.approx(float(sum(bills.values())))
    assert abs(await committed(client) - before - sum(bills.values())) < Decimal("0.000001")
    await record_history(client, workflow_id, "adopt-request-mitigated")


def test_adopt_refuses_bad_arguments_before_starting(tmp_path: Path) -> None:
    import starter

    def run(*args: str) -> int:
        return starter.main(["adopt", *args])

    good = "arn:aws:braket:us-east-1:123456789012:quantum-task/abc"
    assert run("--device", "nope", good) == 2
    assert run("--device", QPU, "arn:aws:braket:us-east-1:1:thing/x") == 2
    assert run("--device", QPU, good, good) == 2
    assert run("--device", QPU) == 2
    assert run("--device", QPU, good, "--account", "Bad Name") == 2
    missing = tmp_path / "missing.yaml"
    assert run("--device", QPU, good, "--request", str(missing)) == 2
