"""The demo request end to end on a real local dev server, a real worker process and the CLI.

Set QLOOP_RECORD_HISTORIES=1 to store the completed runs' histories under tests/histories/ for
the replay test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from schemas.report import ExperimentReport
from tests.harness import record_history, run_qloop
from workflows import search_attributes as attrs

REPO_ROOT = Path(__file__).resolve().parents[2]


def target_of(env: WorkflowEnvironment) -> str:
    return env.client.service_client.config.target_host


@pytest.fixture
def stack_env(dev_server: WorkflowEnvironment, qloop_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "TEMPORAL_ADDRESS": target_of(dev_server),
        "TEMPORAL_NAMESPACE": "default",
        "QLOOP_TASK_QUEUE": f"it-{uuid.uuid4().hex[:8]}",
        "QLOOP_HOME": str(qloop_home),
    }


@pytest.fixture
def worker_process(stack_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    log = tmp_path / "worker.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=stack_env, stdout=sink, stderr=sink
        )
        try:
            yield log
        finally:
            process.terminate()
            process.wait(timeout=30)


async def qloop(stack_env: dict[str, str], *args: str) -> tuple[int, str, str]:
    return await run_qloop(stack_env, *args)


def report_from(stdout: str) -> ExperimentReport:
    return ExperimentReport.model_validate_json(stdout)


async def test_demo_qaoa_with_zne_on_the_noisy_profile(
    dev_server: WorkflowEnvironment, stack_env: dict[str, str], worker_process: Path
) -> None:
    workflow_id = f"demo-qaoa-{uuid.uuid4().hex[:6]}"
    code, stdout, stderr = await qloop(
        stack_env, "run", "examples/qaoa_maxcut.yaml", "--id", workflow_id, "--wait", "--json"
    )
    assert code == 0, stderr + worker_process.read_text()[-3000:]

    # With --json stdout holds the report alone; progress lines go to stderr.
    stages = [
        line.split("] ", 1)[1].split()[0] for line in stderr.splitlines() if line.startswith("[")
    ]
    assert stages[0] in ("preprocessing", "prevalidating")
    assert stages[-1] in ("postprocessing", "completed")
    for later, earlier in [("mitigating", "planning"), ("planning", "prevalidating")]:
        if later in stages and earlier in stages:
            assert stages.index(earlier) < stages.index(later)

    report = report_from(stdout)
    assert report.produced_by == "simulator"
    assert report.provenance.backend.noise_profile == "ibm_guadalupe"
    assert report.provenance.calibration is not None
    assert report.objective is not None and report.objective.name == "approximation_ratio"
    assert 0.5 < report.objective.ideal <= 1.0
    assert report.objective.raw < report.objective.ideal
    assert report.mitigated is not None
    assert abs(report.mitigated.value - report.ideal_value) < abs(
        report.raw.value - report.ideal_value
    )
    for uri in report.provenance.artifacts.values():
        assert Path(uri.removeprefix("file://")).exists(), uri

    description = await dev_server.client.get_workflow_handle(workflow_id).describe()
    assert description.status == WorkflowExecutionStatus.COMPLETED
    assert description.typed_search_attributes.get(attrs.STAGE) == "completed"
    assert description.typed_search_attributes.get(attrs.BACKEND) == "aer/noisy:ibm_guadalupe"
    await record_history(dev_server.client, workflow_id)

    logged = [
        json.loads(line) for line in worker_process.read_text().splitlines() if line.startswith("{")
    ]
    mine = [entry for entry in logged if entry.get("workflow_id") == workflow_id]
    assert {"preprocess", "plan", "simulate", "mitigate", "postprocess"} <= {
        e.get("activity") for e in mine
    }
    assert all(entry.get("run_id") == description.run_id for entry in mine)

    code, stdout, _ = await qloop(stack_env, "status", workflow_id)
    assert code == 0 and "COMPLETED" in stdout
    code, stdout, _ = await qloop(stack_env, "result", workflow_id)
    assert code == 0 and "approximation_ratio" in stdout
    code, stdout, _ = await qloop(stack_env, "list")
    assert code == 0 and workflow_id in stdout


async def test_ghz_on_the_ideal_simulator_without_zne(
    dev_server: WorkflowEnvironment, stack_env: dict[str, str], worker_process: Path, tmp_path: Path
) -> None:
    request = tmp_path / "ghz.json"
    request.write_text(
        json.dumps(
            {
                "name": "ghz-ideal",
                "problem": {"kind": "ghz", "num_qubits": 4},
                "execution": {"shots": 1000, "seed": 3},
                "mitigation": {"zne": None, "readout": False},
            }
        )
    )
    workflow_id = f"ghz-ideal-{uuid.uuid4().hex[:6]}"
    code, stdout, stderr = await qloop(
        stack_env, "run", str(request), "--id", workflow_id, "--wait", "--json"
    )
    assert code == 0, stderr + worker_process.read_text()[-3000:]
    report = report_from(stdout)
    assert report.raw.value == pytest.approx(1.0)
    assert report.mitigated is None and report.zne is None
    await record_history(dev_server.client, workflow_id)
