"""LoopWorkflow: a variational optimisation run to the end as one durable workflow.

Per iteration: SPSA proposes its two points (ask), both go to the backend as one batch through
`run_batch` (budget, submission, polling on timers, scoring), SPSA takes their values (tell), and
the iteration is checkpointed: the optimiser's state and one trajectory entry. The loop stops on
convergence, `limits.max_iterations`, an exhausted budget, `limits.deadline` (workflow time since
the first run started) or `limits.max_cost_usd`, and says which. It continues as new when the
server suggests it and at least every `iterations_per_run` iterations, carrying the optimiser's
state and the trajectory (entries written to artifact chunks first). After the loop, the last
iterate and the iterate SPSA estimated best are measured again as one batch; the better one is
the answer, its exact value is computed, and the report compares both with the classical
baseline.

Everything that varies between runs is derived from the request: SPSA's perturbations from its
seed and the iteration, each batch's evaluation seed from the evaluation seed and the iteration,
each submission's client token from the workflow id and the iteration. So a loop killed and
resumed anywhere, or continued as new, follows the trajectory an uninterrupted run follows.
"""

from __future__ import annotations

import hashlib
from typing import Any

from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from schemas import activity_contracts, error_types
    from schemas.loop import (
        LoopInput,
        LoopProgress,
        LoopStage,
        LoopState,
        SaveTrajectoryChunkInput,
        TrajectoryChunk,
        TrajectoryEntry,
        TrajectoryView,
        WriteTrajectoryInput,
        default_initial_point,
    )
    from schemas.variational import (
        BatchInput,
        LoopObjective,
        LoopReport,
        LoopRequest,
        LoopStopReason,
        Point,
        PointValue,
        QaoaFamily,
        Reference,
        ReferenceInput,
        ScoredBatch,
    )
    from workflows import search_attributes as attrs
    from workflows import spsa
    from workflows.activity_options import (
        ARTIFACT_RETRY,
        COMPUTE_RETRY,
        COMPUTE_TIMEOUT,
        HEARTBEAT_TIMEOUT,
        QUICK_TIMEOUT,
    )
    from workflows.batch_pass import BudgetExhausted, run_batch
    from workflows.cancellation import cancelled_by_request
    from workflows.paid_execution import describe_backend
FINAL_LABEL = "final"


def iteration_seed(seed: int, iteration: int) -> int:
    """The evaluation seed of iteration k: different shots every iteration, the same on replay."""
    digest = hashlib.sha256(f"evaluation/{seed}/{iteration}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


@workflow.defn(name="LoopWorkflow")
class LoopWorkflow:
    @workflow.init
    def __init__(self, input: LoopInput) -> None:
        self._request = input.request
        self._state: LoopState | None = input.state
        self._stage: LoopStage = "starting"
        self._stop: LoopStopReason | None = None
        self._published_stage: LoopStage | None = None
        self._published_cost: float | None = None

    # --- queries ------------------------------------------------------------------------------

    @workflow.query(name="progress")
    def progress(self) -> LoopProgress:
        state = self._state
        if state is None:
            return LoopProgress(stage=self._stage)
        optimizer = state.optimizer
        return LoopProgress(
            stage=self._stage,
            iteration=optimizer.iteration,
            best_value=optimizer.best_value,
            best_point=optimizer.best_point,
            cost_usd=state.cost_usd,
            evaluations=state.evaluations,
            baseline_value=state.baseline_value,
            runs=state.runs,
            stop_reason=self._stop,
        )

    @workflow.query(name="trajectory")
    def trajectory(self) -> TrajectoryView:
        """Chunk URIs (entries written before a continue-as-new) and the entries held here."""
        return self._state.trajectory if self._state is not None else TrajectoryView()

    # --- the run ------------------------------------------------------------------------------

    @workflow.run
    async def run(self, input: LoopInput) -> LoopReport:
        try:
            return await self._run(input)
        except ActivityError as error:
            if cancelled_by_request(error):
                raise
            cause = error.cause
            message = cause.message if isinstance(cause, ApplicationError) else str(cause)
            error_type = cause.type if isinstance(cause, ApplicationError) else None
            raise self._failed(message, error_type) from error
        except ApplicationError as error:
            raise self._failed(error.message, error.type) from error

    async def _run(self, input: LoopInput) -> LoopReport:
        request = input.request
        backend = request.evaluation.backend
        self._published_stage = "iterating"
        workflow.upsert_search_attributes(
            [
                attrs.STAGE.value_set(self._published_stage),
                attrs.BACKEND.value_set(describe_backend(backend)),
                attrs.PROVIDER.value_set(backend.provider),
                attrs.ACCOUNT.value_set(request.policy.account),
            ]
        )
        state = self._state or await self._first_state(request, input.compute_task_queue)
        self._checkpoint(state, "iterating")
        iterations_this_run = 0
        while True:
            reason, detail = self._stop_reason(request, state)
            if reason is not None:
                break
            if iterations_this_run >= input.iterations_per_run or (
                workflow.info().is_continue_as_new_suggested()
            ):
                await self._continue_as_new(input, state)
            try:
                state = await self._iterate(request, state, input)
            except BudgetExhausted as refused:
                reason, detail = self._refusal(request, state, refused)
                break
            iterations_this_run += 1
        self._stop = reason
        return await self._finish(request, state, input, reason, detail)

    async def _first_state(self, request: LoopRequest, compute_queue: str | None) -> LoopState:
        baseline = await self._reference(request, [], compute_queue)
        return LoopState(
            optimizer=spsa.start(request.optimizer, request.goal, default_initial_point(request)),
            started_at=workflow.now(),
            baseline_method=baseline.baseline_method,
            baseline_value=baseline.baseline_value,
        )

    async def _iterate(self, request: LoopRequest, state: LoopState, input: LoopInput) -> LoopState:
        optimizer = state.optimizer
        k = optimizer.iteration
        scored = await self._evaluate(
            request, spsa.ask(optimizer), f"iter-{k:04d}", f"iter-{k}", k, state.cost_usd, input
        )
        values = [point.value for point in scored.values]
        try:
            told = spsa.tell(optimizer, values)
        except ValueError as error:
            raise ApplicationError(
                f"iteration {k}: {error}", type=error_types.INVALID_VALUES, non_retryable=True
            ) from error
        assert told.best_value is not None
        cost = state.cost_usd + scored.actual_cost.usd
        entry = TrajectoryEntry(
            iteration=k,
            point=optimizer.point,
            values=values,
            best_value=told.best_value,
            cost_usd=cost,
        )
        trajectory = state.trajectory
        state = state.model_copy(
            update={
                "optimizer": told,
                "evaluations": state.evaluations + len(values),
                "cost_usd": cost,
                "trajectory": trajectory.model_copy(
                    update={"entries": [*trajectory.entries, entry]}
                ),
            }
        )
        self._checkpoint(state, "iterating")
        return state

    async def _evaluate(
        self,
        request: LoopRequest,
        points: list[Point],
        label: str,
        token_label: str,
        seed_index: int,
        cost_so_far: float,
        input: LoopInput,
    ) -> ScoredBatch:
        evaluation = request.evaluation.model_copy(
            update={"seed": iteration_seed(request.evaluation.seed, seed_index)}
        )
        batch = BatchInput(
            owner_id=workflow.info().workflow_id,
            label=label,
            family=request.family,
            points=points,
            evaluation=evaluation,
        )
        limit = request.limits.max_cost_usd
        _, scored = await run_batch(
            batch,
            account=request.policy.account,
            polling=input.polling,
            compute_queue=input.compute_task_queue,
            token_label=token_label,
            max_queue_wait=request.policy.max_queue_wait,
            name=request.name,
            max_cost_usd=None if limit is None else max(limit - cost_so_far, 0.0),
        )
        return scored

    def _stop_reason(
        self, request: LoopRequest, state: LoopState
    ) -> tuple[LoopStopReason | None, str]:
        limits, optimizer = request.limits, state.optimizer
        settings = optimizer.settings
        if spsa.converged(optimizer):
            return "converged", (
                f"the best value changed by less than {settings.tolerance} over the last "
                f"{settings.patience} iterations"
            )
        if optimizer.iteration >= limits.max_iterations:
            return "max_iterations", f"reached limits.max_iterations ({limits.max_iterations})"
        if limits.deadline is not None:
            elapsed = workflow.now() - state.started_at
            if elapsed >= limits.deadline:
                return "deadline", (
                    f"limits.deadline {limits.deadline} passed ({elapsed} since the loop started)"
                )
        return None, ""

    @staticmethod
    def _refusal(
        request: LoopRequest, state: LoopState, refused: BudgetExhausted
    ) -> tuple[LoopStopReason, str]:
        """`max_cost` when the batch would not fit what is left under limits.max_cost_usd,
        else the account's ledger refused it."""
        limit = request.limits.max_cost_usd
        if limit is not None and refused.estimated_cost_usd > limit - state.cost_usd:
            return "max_cost", (
                f"${state.cost_usd:.2f} spent; the next batch (${refused.estimated_cost_usd:.2f})"
                f" would exceed limits.max_cost_usd ${limit:.2f}"
            )
        return "budget_exhausted", refused.message

    async def _continue_as_new(self, input: LoopInput, state: LoopState) -> None:
        """Writes the entries held so far to a chunk, then continues with the optimiser's state,
        the chunk URIs and nothing else, so the carried input stays small."""
        trajectory = state.trajectory
        chunks = trajectory.chunks
        if trajectory.entries:
            uri = await workflow.execute_activity(
                activity_contracts.save_trajectory_chunk,
                SaveTrajectoryChunkInput(
                    owner_id=workflow.info().workflow_id,
                    index=len(chunks),
                    chunk=TrajectoryChunk(entries=trajectory.entries),
                ),
                start_to_close_timeout=QUICK_TIMEOUT,
                retry_policy=ARTIFACT_RETRY,
                summary="save trajectory chunk",
            )
            chunks = [*chunks, uri]
        carried = state.model_copy(
            update={"trajectory": TrajectoryView(chunks=chunks), "runs": state.runs + 1}
        )
        await workflow.wait_condition(workflow.all_handlers_finished)
        workflow.continue_as_new(input.model_copy(update={"state": carried}))

    # --- the end ------------------------------------------------------------------------------

    async def _finish(
        self,
        request: LoopRequest,
        state: LoopState,
        input: LoopInput,
        reason: LoopStopReason,
        detail: str,
    ) -> LoopReport:
        self._checkpoint(state, "finishing")
        optimizer = state.optimizer
        best_point = optimizer.best_point or optimizer.point
        best_value = optimizer.best_value
        measured: list[PointValue] = []
        chosen: PointValue | None = None
        if reason in ("converged", "max_iterations"):
            # SPSA's estimates are biased by its perturbations; measuring the candidates
            # themselves is not.
            candidates = [optimizer.point]
            if optimizer.best_point is not None and optimizer.best_point != optimizer.point:
                candidates.append(optimizer.best_point)
            try:
                scored = await self._evaluate(
                    request,
                    candidates,
                    FINAL_LABEL,
                    FINAL_LABEL,
                    optimizer.iteration,
                    state.cost_usd,
                    input,
                )
            except BudgetExhausted as refused:
                detail += f"; no final evaluation: {refused.message}"
            else:
                measured = list(scored.values)
                chosen = measured[0]
                for value in measured[1:]:
                    if spsa.is_better(value.value, chosen.value, request.goal):
                        chosen = value
                best_point, best_value = chosen.parameters, chosen.value
                state = state.model_copy(
                    update={
                        "evaluations": state.evaluations + len(candidates),
                        "cost_usd": state.cost_usd + scored.actual_cost.usd,
                    }
                )
        reference = await self._reference(request, [best_point], input.compute_task_queue)
        trajectory_uri = await workflow.execute_activity(
            activity_contracts.write_trajectory,
            WriteTrajectoryInput(owner_id=workflow.info().workflow_id, trajectory=state.trajectory),
            start_to_close_timeout=COMPUTE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=ARTIFACT_RETRY,
            summary="write trajectory",
        )
        evaluation = request.evaluation
        report = LoopReport(
            loop_id=workflow.info().workflow_id,
            name=request.name,
            family=request.family.kind,
            goal=request.goal,
            stop_reason=reason,
            stop_detail=detail,
            iterations=optimizer.iteration,
            evaluations=state.evaluations,
            runs=state.runs,
            best_point=best_point,
            best_value=best_value,
            best_measured=chosen,
            final_evaluation=measured,
            exact_value=reference.exact_values[0],
            baseline_method=state.baseline_method,
            baseline_value=state.baseline_value,
            objective=objective(request, state.baseline_value, reference.exact_values[0], chosen),
            cost_usd=state.cost_usd,
            trajectory_uri=trajectory_uri,
            backend=describe_backend(evaluation.backend),
            shots=evaluation.shots,
            zne=evaluation.zne,
            readout=evaluation.readout,
            optimizer=request.optimizer,
            evaluation_seed=evaluation.seed,
            elapsed_seconds=(workflow.now() - state.started_at).total_seconds(),
        )
        self._checkpoint(state, "completed")
        return report

    async def _reference(
        self, request: LoopRequest, points: list[Point], compute_queue: str | None
    ) -> Reference:
        reference: Reference = await workflow.execute_activity(
            activity_contracts.classical_reference,
            ReferenceInput(family=request.family, points=points),
            task_queue=compute_queue,
            start_to_close_timeout=COMPUTE_TIMEOUT,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            retry_policy=COMPUTE_RETRY,
            summary="classical reference",
        )
        return reference

    def _failed(self, message: str, error_type: str | None) -> ApplicationError:
        """Marks the loop failed where others look (stage, details) and says where it failed."""
        where = (
            "starting" if self._state is None else f"iteration {self._state.optimizer.iteration}"
        )
        self._stage = "failed"
        workflow.upsert_search_attributes([attrs.STAGE.value_set("failed")])
        workflow.set_current_details(f"**Failed** at {where}: {message}")
        return ApplicationError(
            f"loop failed at {where}: {message}", type=error_type, non_retryable=True
        )

    # --- what others see ----------------------------------------------------------------------

    def _checkpoint(self, state: LoopState, stage: LoopStage) -> None:
        """Publishes the state: queries, search attributes (stage, cost so far), details."""
        self._state = state
        self._stage = stage
        attributes: list[SearchAttributeUpdate[Any]] = []
        if stage != self._published_stage:
            self._published_stage = stage
            attributes.append(attrs.STAGE.value_set(stage))
        if state.cost_usd != self._published_cost:
            self._published_cost = state.cost_usd
            attributes.append(attrs.ESTIMATED_COST_USD.value_set(state.cost_usd))
        if attributes:
            workflow.upsert_search_attributes(attributes)
        workflow.set_current_details(self._details(state))

    def _details(self, state: LoopState) -> str:
        optimizer = state.optimizer
        best = "-" if optimizer.best_value is None else f"{optimizer.best_value:.6g}"
        lines = [
            f"**Stage:** {self._stage}",
            f"**Iteration:** {optimizer.iteration} of at most {self._request.limits.max_iterations}"
            f" ({state.evaluations} evaluations, run {state.runs})",
            f"**Best value:** {best} ({self._request.goal})",
            f"**Classical baseline:** {state.baseline_value:.6g} ({state.baseline_method})",
            f"**Cost so far:** ${state.cost_usd:.2f}",
        ]
        if self._stop is not None:
            lines.append(f"**Stopped:** {self._stop}")
        return "\n\n".join(lines)


def objective(
    request: LoopRequest, baseline: float, exact: float, final: PointValue | None
) -> LoopObjective:
    """QAOA: approximation ratio against the maximum cut; VQE: energy above the ground energy."""
    if isinstance(request.family, QaoaFamily):

        def compare(value: float) -> float | None:
            return value / baseline if baseline > 0 else None

        name = "approximation_ratio"
    else:

        def compare(value: float) -> float | None:
            return value - baseline

        name = "energy_error_ha"
    return LoopObjective(
        name=name,
        exact=compare(exact),
        measured=None if final is None else compare(final.value),
        raw=None if final is None else compare(final.raw),
    )
