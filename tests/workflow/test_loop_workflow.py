"""LoopWorkflow with every real part: real Qiskit, Aer and mitiq in the activities, the
time-skipping test server (polling timers pass at once) or real dev servers.

- VQE H2 on the ideal simulator reaches chemical accuracy (the example we ship);
- QAOA MaxCut on the noisy profile: ZNE measures a better approximation ratio than the raw
  value of the same run (the example we ship);
- continue-as-new, every few iterations or when a server with a low threshold suggests it,
  loses nothing: the trajectory equals an uninterrupted run's, entry by entry;
- a deadline stops the loop and says so.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.numerics.classical import qaoa_expectation
from activities.variational.loop_trajectory import read_trajectory
from schemas.loop import (
    LoopInput,
    LoopProgress,
    TrajectoryChunk,
    TrajectoryEntry,
    TrajectoryView,
    default_initial_point,
    load_loop_request,
)
from schemas.variational import LoopReport, LoopRequest, QaoaFamily
from tests.conftest import SERVER_STARTUP_TIMEOUT, qloop_search_attribute_keys, temporal_cli_path
from worker import WORKFLOWS, all_activities
from workflows import search_attributes as attrs

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
H2_GROUND_ENERGY = -1.857275030202382
CHEMICAL_ACCURACY = 1.6e-3


@asynccontextmanager
async def loop_worker(client: Client) -> AsyncIterator[str]:
    task_queue = f"loop-{uuid.uuid4().hex[:8]}"
    async with Worker(
        client, task_queue=task_queue, workflows=WORKFLOWS, activities=all_activities()
    ):
        yield task_queue


async def start_loop(
    client: Client, task_queue: str, request: LoopRequest, **options: object
) -> WorkflowHandle[object, LoopReport]:
    return await client.start_workflow(
        "LoopWorkflow",
        LoopInput(request=request, **options),
        id=f"{request.name}-{uuid.uuid4().hex[:8]}",
        task_queue=task_queue,
        result_type=LoopReport,
    )


async def whole_trajectory(handle: WorkflowHandle[object, LoopReport]) -> list[TrajectoryEntry]:
    view = await handle.query("trajectory", result_type=TrajectoryView)
    return read_trajectory(view)


def short_vqe(iterations: int) -> LoopRequest:
    request = load_loop_request(EXAMPLES / "vqe_h2.yaml")
    limits = request.limits.model_copy(update={"max_iterations": iterations})
    return request.model_copy(update={"limits": limits, "name": "vqe-h2-short"})


async def test_vqe_h2_reaches_chemical_accuracy_on_the_ideal_simulator(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    request = load_loop_request(EXAMPLES / "vqe_h2.yaml")
    client = time_skipping_env.client
    async with loop_worker(client) as task_queue:
        handle = await start_loop(client, task_queue, request)
        report = await handle.result()
        trajectory = await whole_trajectory(handle)
        progress = await handle.query("progress", result_type=LoopProgress)

    assert report.baseline_method == "exact_diagonalisation"
    assert report.baseline_value == pytest.approx(H2_GROUND_ENERGY, abs=1e-9)
    # The exact (statevector) energy of the answer, not a sampled estimate, is what is judged.
    assert report.objective.name == "energy_error_ha"
    assert 0 <= report.exact_value - H2_GROUND_ENERGY < CHEMICAL_ACCURACY
    assert report.objective.exact == pytest.approx(report.exact_value - H2_GROUND_ENERGY)
    # The answer beats Hartree-Fock (the starting point) by most of the correlation energy.
    hartree_fock = -1.836967991203
    assert report.exact_value < hartree_fock - 0.9 * (hartree_fock - H2_GROUND_ENERGY)

    # The final evaluation measured the answer itself; shot noise keeps it near the exact value.
    measured = report.best_measured
    assert measured is not None and measured.parameters == report.best_point
    assert measured in report.final_evaluation and len(report.final_evaluation) in (1, 2)
    assert abs(measured.value - report.exact_value) < 4 * measured.std_error
    assert report.best_value == measured.value

    assert report.stop_reason in ("converged", "max_iterations")
    assert 1 <= report.iterations <= request.limits.max_iterations
    assert report.evaluations == 2 * report.iterations + len(report.final_evaluation)
    # The time-skipping server fires poll timers at once while a simulation runs in its child
    # process, so the loop may be told to continue as new on the way: the trajectory is whole.
    assert report.runs >= 1
    assert (report.cost_usd, report.backend) == (0.0, "aer/ideal")
    assert (report.optimizer.seed, report.evaluation_seed) == (7, 7)

    assert [entry.iteration for entry in trajectory] == list(range(report.iterations))
    assert trajectory[0].point == default_initial_point(request)
    best = [entry.best_value for entry in trajectory]
    assert best == sorted(best, reverse=True), "the best value never gets worse"
    written = TrajectoryChunk.model_validate_json(
        Path(report.trajectory_uri.removeprefix("file://")).read_text()
    )
    assert written.entries == trajectory
    assert Path(report.trajectory_uri.removeprefix("file://")).with_suffix(".csv").exists()

    assert progress.stage == "completed" and progress.stop_reason == report.stop_reason
    assert progress.iteration == report.iterations
    found = (await handle.describe()).typed_search_attributes
    assert found.get(attrs.STAGE) == "completed"
    assert found.get(attrs.BACKEND) == "aer/ideal"
    assert found.get(attrs.ACCOUNT) == "default"
    assert found.get(attrs.ESTIMATED_COST_USD) == 0.0


async def test_qaoa_with_zne_measures_a_better_approximation_ratio_than_without(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """The shipped QAOA example on the noisy Guadalupe profile. Its answer is measured again
    after the loop; with ZNE the approximation ratio measured there is higher than the raw one
    (the same run's unfolded circuits, i.e. the loop without ZNE) and closer to the exact ratio
    of that point, which noise hides from the raw value. SPSA also improves the exact ratio of
    its starting point."""
    request = load_loop_request(EXAMPLES / "qaoa_loop.yaml")
    assert request.evaluation.zne is not None
    assert request.evaluation.backend.noise_profile == "ibm_guadalupe"
    client = time_skipping_env.client
    async with loop_worker(client) as task_queue:
        report = await (await start_loop(client, task_queue, request)).result()

    ratio = report.objective
    assert ratio.name == "approximation_ratio" and report.baseline_value == 6.0
    assert ratio.measured is not None and ratio.raw is not None and ratio.exact is not None
    assert ratio.measured > ratio.raw + 0.02
    assert abs(ratio.measured - ratio.exact) < abs(ratio.raw - ratio.exact)

    family = request.family
    assert isinstance(family, QaoaFamily)
    start = default_initial_point(request)
    layers = family.layers
    start_ratio = qaoa_expectation(family.graph, start[:layers], start[layers:]) / 6.0
    assert ratio.exact > start_ratio + 0.02


async def test_continuing_as_new_every_few_iterations_keeps_the_trajectory(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    request = short_vqe(9)
    client = time_skipping_env.client
    async with loop_worker(client) as task_queue:
        reference = await start_loop(client, task_queue, request)
        chained = await start_loop(client, task_queue, request, iterations_per_run=4)
        reference_report, chained_report = await reference.result(), await chained.result()
        reference_trajectory = await whole_trajectory(reference)
        chained_view = await chained.query("trajectory", result_type=TrajectoryView)

    # 9 iterations, 4 per run: runs of 4, 4 and 1; the two earlier runs left one chunk each.
    assert (reference_report.runs, chained_report.runs) == (1, 3)
    assert len(chained_view.chunks) == 2 and len(chained_view.entries) == 1
    assert read_trajectory(chained_view) == reference_trajectory
    assert len(reference_trajectory) == 9
    assert chained_report.best_point == reference_report.best_point
    assert chained_report.exact_value == reference_report.exact_value
    assert chained_report.evaluations == reference_report.evaluations
    written = TrajectoryChunk.model_validate_json(
        Path(chained_report.trajectory_uri.removeprefix("file://")).read_text()
    )
    assert written.entries == reference_trajectory


async def test_server_suggested_continue_as_new_keeps_optimiser_state(
    dev_server: WorkflowEnvironment,
) -> None:
    """A dev server that suggests continuing as new after 60 history events (an iteration takes
    about 20) against the session's dev server with the default threshold."""
    request = short_vqe(8)
    async with loop_worker(dev_server.client) as task_queue:
        reference = await start_loop(dev_server.client, task_queue, request)
        reference_report = await reference.result()
        reference_trajectory = await whole_trajectory(reference)

    eager = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        search_attributes=qloop_search_attribute_keys(),
        ui=False,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_log_level="error",
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=60",
        ],
    )
    try:
        async with loop_worker(eager.client) as task_queue:
            chained = await start_loop(eager.client, task_queue, request)
            chained_report = await chained.result()
            chained_trajectory = await whole_trajectory(chained)
            runs = [
                execution.run_id
                async for execution in eager.client.list_workflows(f"WorkflowId = '{chained.id}'")
            ]
    finally:
        await eager.shutdown()

    assert reference_report.runs == 1
    assert chained_report.runs >= 2 and len(runs) == chained_report.runs
    assert chained_trajectory == reference_trajectory
    assert chained_report.best_point == reference_report.best_point
    assert chained_report.exact_value == reference_report.exact_value


async def test_a_deadline_stops_the_loop_without_a_final_evaluation(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    request = load_loop_request(EXAMPLES / "vqe_h2.yaml")
    request = request.model_copy(
        update={
            "name": "vqe-deadline",
            "limits": request.limits.model_copy(
                update={"max_iterations": 100, "deadline": timedelta(seconds=3)}
            ),
            "optimizer": request.optimizer.model_copy(update={"patience": 100}),
        }
    )
    client = time_skipping_env.client
    async with loop_worker(client) as task_queue:
        handle = await start_loop(client, task_queue, request)
        report = await handle.result()
        trajectory = await whole_trajectory(handle)

    assert report.stop_reason == "deadline"
    assert "limits.deadline 0:00:03" in report.stop_detail
    assert 1 <= report.iterations < 100 and len(trajectory) == report.iterations
    assert report.final_evaluation == [] and report.best_measured is None
    assert report.evaluations == 2 * report.iterations
    # Without a final evaluation the answer is SPSA's best iterate, valued by its estimate.
    assert report.best_value == trajectory[-1].best_value
    (best,) = [entry for entry in trajectory if sum(entry.values) / 2 == report.best_value]
    assert report.best_point == best.point
