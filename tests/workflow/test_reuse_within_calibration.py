"""`execution.reuse: within_calibration` on local simulators, with every real activity on the dev
server: a noisy simulator reuses within its profile's calibration (`calibrated_at`), an ideal one
by the plain fingerprint, and a simulator's seed is part of what is reused. (The QPU stand-in,
recalibration included: tests/integration/test_experiment_reuse.py.)"""

from __future__ import annotations

import uuid

from temporalio.api.enums.v1 import EventType
from temporalio.client import WorkflowHandle
from temporalio.testing import WorkflowEnvironment

from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.workflow.conftest import StartWorker

POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
NOISY = {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"}
IDEAL = {"provider": "aer", "device": "ideal"}
GUADALUPE_CALIBRATION = "2021-04-20T07:26:31+02:00"  # adapters/profiles/ibm_guadalupe.json


def ghz(backend: dict[str, str], seed: int = 3) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "reuse-sim",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {
                "shots": 200,
                "seed": seed,
                "backend": backend,
                "reuse": "within_calibration",
            },
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": True},
        }
    )


async def run(
    env: WorkflowEnvironment, queue: str, request: ExperimentRequest
) -> tuple[ExperimentReport, list[str]]:
    """The report and the activities the experiment scheduled."""
    handle: WorkflowHandle[object, ExperimentReport] = await env.client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"reuse-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=ExperimentReport,
    )
    report = await handle.result()
    assert report.status == "completed", report.status_reason
    scheduled = [
        event.activity_task_scheduled_event_attributes.activity_type.name
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    return report, scheduled


async def test_a_noisy_simulator_reuses_within_its_calibration_and_seed(
    dev_server: WorkflowEnvironment, start_worker: StartWorker
) -> None:
    queue = await start_worker(dev_server.client)
    first, scheduled = await run(dev_server, queue, ghz(NOISY))
    assert first.reused is None and "simulate" in scheduled

    second, scheduled = await run(dev_server, queue, ghz(NOISY))
    assert scheduled == ["preprocess", "prevalidate", "plan", "mitigate", "postprocess"]
    assert second.reused is not None and second.reused.experiment_id == first.experiment_id
    assert second.reused.calibration_epoch == GUADALUPE_CALIBRATION
    assert second.reused.backend == "aer/noisy:ibm_guadalupe"
    assert (second.value, second.raw) == (first.value, first.raw)
    assert second.zne is not None and first.zne is not None
    assert second.zne.points == first.zne.points and second.readout_mitigated
    assert second.cost.actual_usd == 0.0 and "reused the counts" in second.produced_by_reason

    # Another seed is another sample on a simulator: measured, not reused.
    reseeded, scheduled = await run(dev_server, queue, ghz(NOISY, seed=4))
    assert reseeded.reused is None and "simulate" in scheduled


async def test_an_ideal_simulator_reuses_without_an_epoch(
    dev_server: WorkflowEnvironment, start_worker: StartWorker
) -> None:
    queue = await start_worker(dev_server.client)
    first, _ = await run(dev_server, queue, ghz(IDEAL, seed=5))
    second, scheduled = await run(dev_server, queue, ghz(IDEAL, seed=5))
    assert "simulate" not in scheduled
    assert second.reused is not None and second.reused.experiment_id == first.experiment_id
    assert second.reused.calibration_epoch is None
    assert second.value == first.value
