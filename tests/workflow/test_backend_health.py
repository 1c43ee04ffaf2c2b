"""BackendHealthWorkflow on real servers, reached the way experiments reach it (update-with-start).

- the real dev server (`dev_server`) with short real-time settings: the breaker's life cycle,
  concurrent callers, retried reports, the activities, the `qloop health` CLI;
- a dev server of its own that suggests continue-as-new after 30 events: state survives it;
- the time-skipping server with the default settings (5 minutes open, 30 minute probe lease).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio
from temporalio import workflow
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.common import RetryPolicy
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

import starter
from activities.governance.health_calls import (
    acquire_backend,
    acquire_backend_activity,
    report_backend_outcome,
    report_backend_outcome_activity,
)
from schemas.health import (
    AcquireBackendInput,
    BreakerSettings,
    HealthView,
    Outcome,
    Permit,
    ReportOutcomeInput,
    ResetRequest,
    health_workflow_id,
)
from schemas.pipeline import PipelineModel
from tests.conftest import SERVER_STARTUP_TIMEOUT, temporal_cli_path
from workflows.backend_health import BackendHealthWorkflow

SHORT = BreakerSettings(failure_threshold=2, open_seconds=2, probe_lease_seconds=60)


class CallerResult(PipelineModel):
    first: Permit
    after_failure: HealthView
    second: Permit


@workflow.defn(name="BreakerCaller")
class BreakerCaller:
    """Uses the breaker as an experiment does: acquire, report a failure, acquire again."""

    @workflow.run
    async def run(self, backend: str) -> CallerResult:
        experiment_id = workflow.info().workflow_id
        options = {
            "start_to_close_timeout": timedelta(seconds=30),
            "retry_policy": RetryPolicy(maximum_attempts=3),
        }
        first = await workflow.execute_activity(
            "acquire_backend",
            AcquireBackendInput(backend=backend, experiment_id=experiment_id),
            result_type=Permit,
            **options,
        )
        after_failure = await workflow.execute_activity(
            "report_backend_outcome",
            ReportOutcomeInput(
                backend=backend, experiment_id=experiment_id, success=False, detail="rejected"
            ),
            result_type=HealthView,
            **options,
        )
        second = await workflow.execute_activity(
            "acquire_backend",
            AcquireBackendInput(backend=backend, experiment_id=experiment_id),
            result_type=Permit,
            **options,
        )
        return CallerResult(first=first, after_failure=after_failure, second=second)


def health_worker(client: Client, task_queue: str) -> Worker:
    # The same sandbox settings as worker.py's workers.
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[BackendHealthWorkflow, BreakerCaller],
        activities=[acquire_backend_activity, report_backend_outcome_activity],
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
    )


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def task_queue(dev_server: WorkflowEnvironment) -> AsyncIterator[str]:
    """One worker for the module, so every breaker created here can still answer the CLI."""
    queue = f"health-{uuid.uuid4()}"
    async with health_worker(dev_server.client, queue):
        yield queue


def new_backend() -> str:
    return f"aer/noisy:test-{uuid.uuid4().hex[:8]}"


async def acquire(
    client: Client, queue: str, backend: str, experiment_id: str, settings: BreakerSettings = SHORT
) -> Permit:
    return await acquire_backend(
        client, queue, AcquireBackendInput(backend=backend, experiment_id=experiment_id), settings
    )


async def report(
    client: Client,
    queue: str,
    backend: str,
    experiment_id: str,
    success: bool,
    settings: BreakerSettings = SHORT,
    update_id: str | None = None,
) -> HealthView:
    outcome = ReportOutcomeInput(
        backend=backend, experiment_id=experiment_id, success=success, detail="throttled"
    )
    return await report_backend_outcome(client, queue, outcome, settings, update_id)


async def open_breaker(client: Client, queue: str, backend: str) -> HealthView:
    for index in range(SHORT.failure_threshold):
        view = await report(client, queue, backend, f"failing-{index}", success=False)
    assert view.state == "open"
    return view


async def sleep_until(moment: datetime | None) -> None:
    assert moment is not None
    await asyncio.sleep(max(0.0, (moment - datetime.now(UTC)).total_seconds()) + 0.3)


async def test_breaker_opens_refuses_probes_and_closes(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    assert (await acquire(client, task_queue, backend, "first")).allowed

    opened = await open_breaker(client, task_queue, backend)
    refused = await acquire(client, task_queue, backend, "during-outage")
    assert (refused.allowed, refused.state) == (False, "open")
    assert "after 2 consecutive failures (last: failing-1: throttled)" in refused.reason
    assert "next probe after" in refused.reason

    handle = client.get_workflow_handle(health_workflow_id(backend))
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "**Breaker:** open, 2 consecutive failures" in metadata.current_details
    assert "**Last failure:** failing-1: throttled" in metadata.current_details

    await sleep_until(opened.next_probe_at)
    probe = await acquire(client, task_queue, backend, "prober")
    assert (probe.allowed, probe.state, probe.probe) == (True, "half_open", True)
    assert not (await acquire(client, task_queue, backend, "impatient")).allowed

    closed = await report(client, task_queue, backend, "prober", success=True)
    assert (closed.state, closed.consecutive_failures) == ("closed", 0)
    assert [(t.from_state, t.to_state) for t in closed.transitions] == [
        ("closed", "open"),
        ("open", "half_open"),
        ("half_open", "closed"),
    ]
    assert (await acquire(client, task_queue, backend, "after")).allowed
    assert await handle.query("view", result_type=HealthView) == closed


async def test_probe_failure_reopens_for_a_fresh_period(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    opened = await open_breaker(client, task_queue, backend)
    await sleep_until(opened.next_probe_at)
    assert (await acquire(client, task_queue, backend, "prober")).probe
    reopened = await report(client, task_queue, backend, "prober", success=False)
    assert reopened.state == "open"
    assert reopened.opened_at is not None and opened.opened_at is not None
    assert reopened.opened_at > opened.opened_at
    assert not (await acquire(client, task_queue, backend, "right-after")).allowed


async def test_concurrent_acquires_in_half_open_give_exactly_one_probe(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    opened = await open_breaker(client, task_queue, backend)
    await sleep_until(opened.next_probe_at)
    permits = await asyncio.gather(
        *(acquire(client, task_queue, backend, f"racer-{index}") for index in range(10))
    )
    probes = [permit for permit in permits if permit.allowed]
    assert len(probes) == 1 and probes[0].probe
    assert all(permit.state == "half_open" for permit in permits)


async def test_first_use_by_many_experiments_at_once_creates_one_breaker(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    settings = BreakerSettings(failure_threshold=6, open_seconds=60)
    views = await asyncio.gather(
        *(
            report(client, task_queue, backend, f"first-{index}", False, settings)
            for index in range(6)
        )
    )
    # One entity saw all six, one after another: the sixth report opened it.
    state_after = {view.consecutive_failures: view.state for view in views}
    assert sorted(state_after) == [1, 2, 3, 4, 5, 6]
    assert (state_after[5], state_after[6]) == ("closed", "open")


async def test_a_retried_report_counts_once(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    first = await report(client, task_queue, backend, "flaky", False, update_id="report-1")
    again = await report(client, task_queue, backend, "flaky", False, update_id="report-1")
    assert first.consecutive_failures == again.consecutive_failures == 1
    handle = client.get_workflow_handle(health_workflow_id(backend))
    assert (await handle.query("view", result_type=HealthView)).consecutive_failures == 1


async def test_report_signal_and_operator_reset(
    dev_server: WorkflowEnvironment, task_queue: str
) -> None:
    client, backend = dev_server.client, new_backend()
    await acquire(client, task_queue, backend, "creator")
    handle = client.get_workflow_handle(health_workflow_id(backend))
    for index in range(SHORT.failure_threshold):
        await handle.signal(
            "report", Outcome(experiment_id=f"signalled-{index}", success=False, detail="5xx")
        )
    view = await handle.query("view", result_type=HealthView)
    assert (view.state, view.last_failure) == ("open", "signalled-1: 5xx")

    with pytest.raises(WorkflowUpdateFailedError) as rejected:
        await handle.execute_update("reset", ResetRequest(by="  "), result_type=HealthView)
    assert "reset needs `by`" in str(rejected.value.cause)

    reset = await handle.execute_update(
        "reset", ResetRequest(by="alice", reason="provider fixed it"), result_type=HealthView
    )
    assert reset.state == "closed"
    assert reset.transitions[-1].reason == "reset by alice: provider fixed it"


async def test_activities_create_the_breaker_with_the_workers_settings(
    dev_server: WorkflowEnvironment, task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QLOOP_BREAKER_FAILURES", "1")
    monkeypatch.setenv("QLOOP_BREAKER_OPEN_SECONDS", "600")
    backend = new_backend()
    result = await dev_server.client.execute_workflow(
        BreakerCaller.run,
        backend,
        id=f"caller-{uuid.uuid4()}",
        task_queue=task_queue,
        result_type=CallerResult,
    )
    assert (result.first.allowed, result.first.state) == (True, "closed")
    assert (result.after_failure.state, result.after_failure.consecutive_failures) == ("open", 1)
    assert (result.second.allowed, result.second.state) == (False, "open")
    assert result.after_failure.next_probe_at is not None
    assert result.after_failure.opened_at is not None
    assert result.after_failure.next_probe_at - result.after_failure.opened_at == timedelta(
        seconds=600
    )


async def run_cli(monkeypatch: pytest.MonkeyPatch, env: WorkflowEnvironment, *argv: str) -> int:
    monkeypatch.setenv("TEMPORAL_ADDRESS", env.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", env.client.namespace)
    # The CLI runs its own event loop, as it does from a shell.
    return await asyncio.to_thread(starter.main, list(argv))


async def test_cli_lists_shows_and_resets_breakers(
    dev_server: WorkflowEnvironment,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, backend = dev_server.client, new_backend()
    await open_breaker(client, task_queue, backend)
    capsys.readouterr()

    assert await run_cli(monkeypatch, dev_server, "health") == 0
    listed = [line.split() for line in capsys.readouterr().out.splitlines()]
    ours = next(row for row in listed if row[0] == backend)
    assert ours[1:5] == ["open", "2", "next", "probe"]

    assert await run_cli(monkeypatch, dev_server, "health", "show", backend, "--json") == 0
    shown = HealthView.model_validate(json.loads(capsys.readouterr().out))
    assert (shown.backend, shown.state, shown.consecutive_failures) == (backend, "open", 2)

    assert await run_cli(monkeypatch, dev_server, "health", "show", backend) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"{backend}: open")
    assert "closed -> open: 2 consecutive failures" in text

    code = await run_cli(
        monkeypatch, dev_server, "health", "reset", backend, "--by", "bob", "--reason", "fixed"
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == f"{backend}: closed (reset by bob)"
    assert (await acquire(client, task_queue, backend, "after-reset")).allowed

    assert await run_cli(monkeypatch, dev_server, "health", "show", "aer/never-used") == 1
    assert "no circuit breaker for 'aer/never-used'" in capsys.readouterr().err


async def test_state_survives_continue_as_new() -> None:
    # A server of its own that suggests continue-as-new after 30 history events (default 4,096).
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        ui=False,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_log_level="error",
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
        dev_server_extra_args=[
            "--dynamic-config-value",
            "limit.historyCount.suggestContinueAsNew=30",
        ],
    )
    try:
        queue, backend = f"health-{uuid.uuid4()}", new_backend()
        settings = BreakerSettings(failure_threshold=2, open_seconds=1, probe_lease_seconds=600)
        async with health_worker(env.client, queue):
            handle = env.client.get_workflow_handle(health_workflow_id(backend))
            for index in range(2):
                opened = await report(env.client, queue, backend, f"f{index}", False, settings)
            first_run = (await handle.describe()).run_id
            await sleep_until(opened.next_probe_at)
            assert (await acquire(env.client, queue, backend, "prober", settings)).probe

            # Refused callers keep adding events until the server suggests continuing as new.
            for attempt in range(40):
                refused = await acquire(env.client, queue, backend, f"waiter-{attempt}", settings)
                assert not refused.allowed
                if (await handle.describe()).run_id != first_run:
                    break
            else:
                pytest.fail("the breaker never continued as new")
            late = await report(env.client, queue, backend, "late", False, settings)

            # The new run still knows the probe, the failures and the transitions.
            after_can = await acquire(env.client, queue, backend, "newcomer", settings)
            assert (after_can.allowed, after_can.state) == (False, "half_open")
            assert "probe by prober" in after_can.reason
            assert late.consecutive_failures == 3
            assert [t.to_state for t in late.transitions] == ["open", "half_open"]
            closed = await report(env.client, queue, backend, "prober", True, settings)
            assert closed.state == "closed"
            assert [t.to_state for t in closed.transitions] == ["open", "half_open", "closed"]
    finally:
        await env.shutdown()


async def test_default_settings_on_the_time_skipping_server(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Five minutes open and a thirty-minute probe lease, skipped instead of waited for."""
    env, defaults = time_skipping_env, BreakerSettings()
    queue, backend = f"health-{uuid.uuid4()}", new_backend()
    async with health_worker(env.client, queue):
        for index in range(defaults.failure_threshold):
            opened = await report(env.client, queue, backend, f"f{index}", False, defaults)
        assert opened.state == "open"
        await env.sleep(timedelta(seconds=290))
        assert not (await acquire(env.client, queue, backend, "early", defaults)).allowed
        await env.sleep(timedelta(seconds=15))
        assert (await acquire(env.client, queue, backend, "lost-probe", defaults)).probe
        await env.sleep(timedelta(minutes=29))
        assert not (await acquire(env.client, queue, backend, "successor", defaults)).allowed
        await env.sleep(timedelta(minutes=2))
        successor = await acquire(env.client, queue, backend, "successor", defaults)
        assert (successor.allowed, successor.probe) == (True, True)
        view = await report(env.client, queue, backend, "successor", False, defaults)
        # An entity left running on the shared time-skipping server could hold its clock.
        await env.client.get_workflow_handle(health_workflow_id(backend)).terminate("test over")
        assert view.state == "open"
        assert "lost-probe did not report within 1800s" in view.transitions[-2].reason
