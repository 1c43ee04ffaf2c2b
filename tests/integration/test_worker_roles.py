"""Two roles, as a fleet deploys them: an orchestration worker (workflows, provider calls) and a
compute worker (the CPU stages and local simulation), against the local stack. Experiments on a
local simulator and on the QPU stand-in complete, and the orchestration worker never imports a
simulator or the numerical stack: it runs under `python -X importtime`, which logs every module
as it is first imported, however late, so its log lists everything it ever loaded."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from temporalio.client import Client

from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from tests.harness import QPU, LocalStack

# Top-level packages, and the Braket SDK's parts that carry its simulators.
NEVER_IN_ORCHESTRATION = (
    "qiskit",
    "qiskit_aer",
    "qiskit_braket_provider",
    "mitiq",
    "numpy",
    "scipy",
    "braket.aws",
    "braket.circuits",
    "braket.devices",
    "braket.default_simulator",
)
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|(\s*)(\S+)$")
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("roles"), task_queue=f"roles-{uuid.uuid4().hex[:8]}")
    local.start()
    local.set_faults()
    try:
        yield local
    finally:
        local.stop()


def modules_imported(log: Path) -> set[str]:
    return {
        match.group(2)
        for line in log.read_text(errors="replace").splitlines()
        if (match := IMPORTED.match(line))
    }


def forbidden(modules: set[str]) -> list[str]:
    return sorted(
        module
        for module in modules
        if any(module == root or module.startswith(f"{root}.") for root in NEVER_IN_ORCHESTRATION)
    )


def ghz_on(backend: BackendChoice) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": f"roles-{backend.device[-12:].replace('/', '-')}",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 1000, "backend": backend.model_dump(), "seed": 11},
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": True},
        }
    )


async def test_the_orchestration_role_never_imports_a_simulator(
    stack: LocalStack, client: Client
) -> None:
    orchestration = stack.start_worker("orchestration", python_options=["-X", "importtime"])
    stack.start_worker("compute")
    backends = [
        BackendChoice(provider="aer", device="ideal"),
        BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe"),
        BackendChoice(provider="braket", device="braket_sv"),
        BackendChoice(provider="braket", device=QPU),
    ]
    handles = [
        await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(
                request=ghz_on(backend),
                polling=POLLING,
                compute_task_queue=stack.compute_task_queue,
            ),
            id=f"roles-{index}-{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            result_type=ExperimentReport,
        )
        for index, backend in enumerate(backends)
    ]
    reports = [await handle.result() for handle in handles]

    for backend, report in zip(backends, reports, strict=True):
        assert report.status == "completed", (backend, report.status_reason)
        assert report.value is not None and report.ideal_value is not None
        # Noise and 1,000 shots keep a GHZ-3 estimate near its ideal value, not at it.
        assert abs(report.value.value - report.ideal_value) < 0.25, (backend, report.value)
    assert [r.produced_by for r in reports] == ["simulator"] * 3 + ["hardware"]
    assert any(task["status"] == "COMPLETED" for task in stack.tasks())

    imported = modules_imported(stack.worker_log(orchestration))
    assert "workflows.experiment" in imported and "adapters.braket_aws" in imported
    assert forbidden(imported) == []
