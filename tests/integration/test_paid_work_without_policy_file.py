"""No policy file, as a newcomer's shell has it: the `qloop` CLI and a worker process against the
session's dev server and the QPU stand-in. Paid work is refused at the door and again by the
workflow, free simulators run, and both processes say so at start; with the operator's explicit
opt-in the same QPU request runs, capped by its budget ledger.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

from activities.governance.budget_calls import set_budget_limit
from schemas.budget import SetLimit, ledger_workflow_id
from schemas.health import health_workflow_id
from schemas.pipeline import ExperimentInput
from schemas.policy import ALLOW_UNGOVERNED_SPEND_ENV, POLICY_FILE_ENV
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import REPO_ROOT, LocalStack, run_qloop
from tests.server_helpers import wait_until

QPU_EXAMPLE = REPO_ROOT / "examples" / "qpu_standin.yaml"
CLOSED_NOTICE = (
    f"qloop: warning: no policy file ({POLICY_FILE_ENV} is not set): work that costs money"
)
OPEN_NOTICE = f"{ALLOW_UNGOVERNED_SPEND_ENV}=1: paid work runs with no policy rules"


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack = LocalStack(tmp_path_factory.mktemp("no-policy"), task_queue="unused")
    stack.sh("standin-start")
    try:
        stack.set_faults()
        yield stack
    finally:
        stack.sh("standin-stop")


@pytest_asyncio.fixture(autouse=True)
async def no_entities_left(dev_server: WorkflowEnvironment) -> AsyncIterator[list[str]]:
    """Entity workflows (the QPU's breaker, ledgers) outlive a test on the session's server, bound
    to its worker's task queue; a later test with another queue would wait on them forever."""
    qpu = yaml.safe_load(QPU_EXAMPLE.read_text())["execution"]["backend"]["device"]
    entities = [health_workflow_id(f"braket/{qpu}")]
    yield entities
    for workflow_id in entities:
        try:
            await dev_server.client.get_workflow_handle(workflow_id).terminate("test over")
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise


@pytest.fixture
def env(dev_server: WorkflowEnvironment, standin: LocalStack, qloop_home: Path) -> dict[str, str]:
    """A shell with no qloop settings but the stand-in's endpoints: no policy file."""
    base = {
        k: v for k, v in os.environ.items() if not k.startswith(("QLOOP_", "TEMPORAL_", "AWS_"))
    }
    lines = standin.sh("standin-env").splitlines()
    return {
        **base,
        **dict(line.split("=", 1) for line in lines if "=" in line),
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "TEMPORAL_NAMESPACE": "default",
        "QLOOP_TASK_QUEUE": f"no-policy-{uuid.uuid4().hex[:8]}",
        "QLOOP_HOME": str(qloop_home),
        "QLOOP_LOG_LEVEL": "WARNING",
    }


def start_worker(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=env, stdout=sink, stderr=sink
        )


def stop_worker(worker: subprocess.Popen[bytes]) -> None:
    worker.terminate()
    worker.wait(timeout=30)


def warnings_in(log: Path) -> list[str]:
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    return [line["event"] for line in lines if line.get("level") == "warning"]


def request_file(folder: Path, name: str, source: dict[str, object]) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(source))
    return path


def qpu_request(account: str) -> dict[str, object]:
    request = yaml.safe_load(QPU_EXAMPLE.read_text())
    return {**request, "policy": {"account": account}}


def report_from(stdout: str) -> ExperimentReport:
    return ExperimentReport.model_validate_json(stdout)


async def test_without_a_file_paid_work_is_refused_and_free_work_runs_with_a_warning(
    dev_server: WorkflowEnvironment, standin: LocalStack, env: dict[str, str], tmp_path: Path
) -> None:
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_until(lambda: bool(warnings_in(log)), timeout=60, interval=0.2)
        assert warnings_in(log)[0].startswith(CLOSED_NOTICE.removeprefix("qloop: warning: "))
        tasks_before = len(standin.tasks())

        # At the door: the QPU example is refused before anything starts, saying how to allow it.
        code, _, stderr = await run_qloop(env, "run", str(QPU_EXAMPLE), timeout=120)
        assert code == 1, stderr  # a policy refusal (README, "Exit codes")
        assert "policy rule no_policy_file: braket/arn:aws:braket:" in stderr
        assert "no policy file is configured, so only free work runs" in stderr
        assert f"{POLICY_FILE_ENV} to a policy file" in stderr
        assert f"{ALLOW_UNGOVERNED_SPEND_ENV}=1 to allow paid work" in stderr

        # A free simulator runs, and the CLI said at start what happens to paid work.
        ghz = yaml.safe_load((REPO_ROOT / "examples" / "ghz.yaml").read_text())
        free = request_file(tmp_path, "free", ghz)
        code, stdout, stderr = await run_qloop(env, "run", str(free), "--wait", "--json")
        assert code == 0, stderr + log.read_text()[-3000:]
        assert stderr.splitlines()[0].startswith(CLOSED_NOTICE), stderr
        assert report_from(stdout).status == "completed"

        # Past the door (a client that does not use the CLI), the workflow refuses it too.
        request = ExperimentRequest.model_validate(qpu_request("lab"))
        report = await dev_server.client.execute_workflow(
            "ExperimentWorkflow",
            ExperimentInput(request=request),
            id=f"no-policy-{uuid.uuid4().hex[:8]}",
            task_queue=env["QLOOP_TASK_QUEUE"],
            result_type=ExperimentReport,
        )
        assert report.status == "rejected"
        assert report.status_reason.startswith("policy rule no_policy_file: braket/arn:"), (
            report.status_reason
        )
        assert len(standin.tasks()) == tasks_before
    finally:
        stop_worker(worker)


async def test_the_operators_opt_in_lets_paid_work_run_within_its_budget(
    dev_server: WorkflowEnvironment,
    standin: LocalStack,
    env: dict[str, str],
    tmp_path: Path,
    no_entities_left: list[str],
) -> None:
    env = {**env, ALLOW_UNGOVERNED_SPEND_ENV: "1"}
    log = tmp_path / "worker.log"
    worker = start_worker(env, log)
    try:
        wait_until(lambda: bool(warnings_in(log)), timeout=60, interval=0.2)
        assert OPEN_NOTICE in warnings_in(log)[0]
        account = f"optin-{uuid.uuid4().hex[:8]}"
        no_entities_left.append(ledger_workflow_id(account))
        # No rules, but money still needs a budget: a new ledger starts at $0.
        await set_budget_limit(
            dev_server.client, env["QLOOP_TASK_QUEUE"], account, SetLimit(limit_usd=50, by="test")
        )
        path = request_file(tmp_path, "qpu", qpu_request(account))
        code, stdout, stderr = await run_qloop(
            env, "run", str(path), "--wait", "--json", "--poll-ceiling", "1"
        )
        assert code == 0, stderr + log.read_text()[-3000:]
        assert OPEN_NOTICE in stderr.splitlines()[0]
        report = report_from(stdout)
        assert (report.status, report.produced_by) == ("completed", "hardware")
        assert 0 < report.cost.actual_usd <= 50
    finally:
        stop_worker(worker)
