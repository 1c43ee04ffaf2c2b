"""`qloop schedule ...` on Temporal Schedules, through `starter.main`, against the session's real
dev server and an in-process worker with qloop's workflows and activities.

The CLI and the worker both run with a payload encryption key, as `make dev` sets them up: the
schedule's stored action (the sweep request) must be ciphertext on the server and still be read
by the worker that runs the scheduled sweep.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import pytest_asyncio
import yaml
from temporalio.api.common.v1 import Payload
from temporalio.client import Client, ScheduleActionStartWorkflow
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

import starter
from schemas.payload_encryption import ENCRYPTED_ENCODING
from schemas.variational import SweepReport
from workflows import search_attributes as attrs

# Waits for the server's visibility store and for sweeps to finish; never an assertion on speed.
PATIENCE_SECONDS = 90.0

TINY_SWEEP = {
    "schema_version": 1,
    "name": "scheduled-qaoa",
    "family": {
        "kind": "qaoa_maxcut",
        "graph": {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2, "weight": 0.5}]},
    },
    "points": {"points": [[0.4, 0.3], [0.8, 0.2], [1.2, 0.6]]},
    "evaluation": {"backend": {"provider": "aer", "device": "ideal"}, "shots": 256, "seed": 7},
    "canary": None,
}


@pytest.fixture
def sweep_file(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(TINY_SWEEP))
    return path


@pytest.fixture
def cli_env(dev_server: WorkflowEnvironment, monkeypatch: pytest.MonkeyPatch) -> str:
    """Points the CLI (and worker.connect) at the dev server, on a task queue of its own, with a
    codec key; returns the task queue."""
    queue = f"schedules-{uuid.uuid4().hex[:8]}"
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    monkeypatch.setenv("TEMPORAL_NAMESPACE", "default")
    monkeypatch.setenv("QLOOP_TASK_QUEUE", queue)
    monkeypatch.delenv("QLOOP_COMPUTE_TASK_QUEUE", raising=False)
    monkeypatch.setenv("QLOOP_CODEC_KEY", base64.b64encode(os.urandom(32)).decode())
    monkeypatch.setenv("QLOOP_CODEC_KEY_ID", "schedules-it")
    return queue


@pytest_asyncio.fixture
async def qloop_client(cli_env: str) -> Client:
    """A client like the CLI's and the worker's: same server, same codec key."""
    from worker import connect

    return await connect()


@pytest_asyncio.fixture
async def worker(qloop_client: Client, cli_env: str) -> AsyncIterator[None]:
    from worker import WORKFLOWS, all_activities

    async with Worker(
        qloop_client, task_queue=cli_env, workflows=WORKFLOWS, activities=all_activities()
    ):
        yield


def run_cli(argv: Sequence[str]) -> int:
    try:
        return starter.main(list(argv))
    except SystemExit as stop:  # argparse and the sweep file check refuse by exiting
        return stop.code if isinstance(stop.code, int) else 1


async def qloop(*argv: str) -> int:
    # main() runs its own event loop, so it runs in a thread beside the test's and the worker's.
    return await asyncio.to_thread(run_cli, argv)


def new_name() -> str:
    return f"it-{uuid.uuid4().hex[:8]}"


async def create(name: str, sweep: Path, *options: str) -> int:
    return await qloop("schedule", "create", name, "--sweep", str(sweep), *options)


async def scheduled_runs(client: Client, name: str, condition: str = "") -> list[str]:
    query = f"TemporalScheduledById = 'qloop-{name}'" + (f" AND {condition}" if condition else "")
    return sorted([execution.id async for execution in client.list_workflows(query)])


async def wait_for_runs(client: Client, name: str, count: int, condition: str = "") -> list[str]:
    """The runs matching `condition` once there are at least `count` of them."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        runs = await scheduled_runs(client, name, condition)
        if len(runs) >= count or time.monotonic() > deadline:
            return runs
        await asyncio.sleep(0.5)


async def wait_until_finished(client: Client, name: str) -> list[str]:
    """The schedule's runs still running once none is (or patience runs out)."""
    deadline = time.monotonic() + PATIENCE_SECONDS
    while True:
        running = await scheduled_runs(client, name, "ExecutionStatus = 'Running'")
        if not running or time.monotonic() > deadline:
            return running
        await asyncio.sleep(0.5)


async def schedule_exists(client: Client, name: str) -> bool:
    try:
        await client.get_schedule_handle(f"qloop-{name}").describe()
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            return False
        raise
    return True


async def sweep_report(client: Client, workflow_id: str) -> SweepReport:
    return await client.get_workflow_handle(workflow_id, result_type=SweepReport).result()


def assert_complete_sweep(report: SweepReport) -> None:
    assert report.status == "completed", report.status_reason
    assert report.name == TINY_SWEEP["name"]
    assert report.points_total == 3
    assert report.points_evaluated + report.points_cached == 3
    assert report.points_pending == 0


async def test_a_schedule_made_with_the_cli_runs_the_sweep_on_its_interval(
    dev_server: WorkflowEnvironment,
    qloop_client: Client,
    worker: None,
    sweep_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = new_name()
    assert await create(name, sweep_file, "--every", "3s") == 0
    created = capsys.readouterr().out
    assert f"created schedule qloop-{name}: sweep scheduled-qaoa every 3s, overlap skip" in created
    assert f"/namespaces/default/schedules/qloop-{name}" in created

    completed = await wait_for_runs(qloop_client, name, 1, "ExecutionStatus = 'Completed'")
    assert completed, "no scheduled run completed"
    first = completed[0]
    assert first.startswith(f"{name}-sweep-")
    assert_complete_sweep(await sweep_report(qloop_client, first))
    found = (await qloop_client.get_workflow_handle(first).describe()).typed_search_attributes
    assert found.get(attrs.ACCOUNT) == "default"
    assert found.get(attrs.BACKEND) == "aer/ideal"
    assert found.get(attrs.PROVIDER) == "aer"

    # Without the key (what the server stores) the sweep request is ciphertext, both in the
    # schedule's action and in the run's history; the worker above read both with its key.
    stored = await dev_server.client.get_schedule_handle(f"qloop-{name}").describe()
    action = stored.schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert [p.metadata["encoding"] for p in action.args if isinstance(p, Payload)] == [
        ENCRYPTED_ENCODING
    ]
    assert b"scheduled-qaoa" not in action.args[0].SerializeToString()  # type: ignore[union-attr]
    history = await dev_server.client.get_workflow_handle(first).fetch_history()
    run_input = history.events[0].workflow_execution_started_event_attributes.input
    assert [p.metadata["encoding"] for p in run_input.payloads] == [ENCRYPTED_ENCODING]

    assert await qloop("schedule", "pause", name, "--note", "calibration day") == 0
    assert f"qloop-{name}: paused (calibration day)" in capsys.readouterr().out
    assert await qloop("schedule", "describe", name) == 0
    described = capsys.readouterr().out
    assert f"schedule qloop-{name}" in described
    assert "sweep           scheduled-qaoa (qaoa_maxcut), account default" in described
    assert f"SweepWorkflow on task queue {os.environ['QLOOP_TASK_QUEUE']}" in described
    assert "spec            every 3s" in described
    assert "overlap         skip" in described
    assert "state           paused (calibration day)" in described
    recent = [line for line in described.splitlines() if first in line]
    assert len(recent) == 1 and "COMPLETED" in recent[0]
    assert f"/namespaces/default/schedules/qloop-{name}" in described
    state = (await dev_server.client.get_schedule_handle(f"qloop-{name}").describe()).schedule
    assert state.state.paused and state.state.note == "calibration day"

    deadline = time.monotonic() + PATIENCE_SECONDS
    listed = ""
    while f"qloop-{name}" not in listed and time.monotonic() < deadline:
        assert await qloop("schedule", "list") == 0
        listed = capsys.readouterr().out
        await asyncio.sleep(0.5)
    row = next(line for line in listed.splitlines() if line.startswith(f"qloop-{name} "))
    assert row.split()[1:4] == ["every", "3s", "yes"]
    assert row.split()[-1] == "scheduled-qaoa"

    assert await qloop("schedule", "unpause", name) == 0
    assert f"qloop-{name}: active" in capsys.readouterr().out
    assert not (
        await qloop_client.get_schedule_handle(f"qloop-{name}").describe()
    ).schedule.state.paused

    assert await qloop("schedule", "delete", name) == 0
    assert f"deleted schedule qloop-{name}" in capsys.readouterr().out
    assert not await schedule_exists(qloop_client, name)
    assert await qloop("schedule", "describe", name) == 1
    assert f"no schedule named {name!r}" in capsys.readouterr().err
    # Runs started before the delete finish on their own.
    assert await wait_until_finished(qloop_client, name) == []


async def test_trigger_starts_a_run_now_on_a_cron_schedule(
    qloop_client: Client, worker: None, sweep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = new_name()
    timing = ("--cron", "0 4 1 1 *", "--time-zone", "Europe/Berlin", "--jitter", "10m")
    assert (
        await create(name, sweep_file, *timing, "--overlap", "buffer_one", "--note", "yearly") == 0
    )
    created = capsys.readouterr().out
    assert "cron 0 4 1 1 * (Europe/Berlin), jitter 10m, overlap buffer_one" in created

    assert await qloop("schedule", "trigger", name) == 0
    triggered = capsys.readouterr().out
    assert f"qloop-{name}: triggered {name}-sweep-" in triggered
    workflow_id = triggered.split("triggered ", 1)[1].split()[0]
    assert_complete_sweep(await sweep_report(qloop_client, workflow_id))

    assert await qloop("schedule", "describe", name) == 0
    described = capsys.readouterr().out
    assert "spec            cron 0 4 1 1 * (Europe/Berlin), jitter 10m" in described
    assert "state           active (yearly)" in described
    assert "actions         1 taken" in described
    assert "next runs       20" in described
    assert await qloop("schedule", "delete", name) == 0


async def test_backfill_starts_every_run_due_in_the_range(
    qloop_client: Client, worker: None, sweep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = new_name()
    assert await create(name, sweep_file, "--every", "1h", "--overlap", "allow_all") == 0
    capsys.readouterr()
    backfill = ("schedule", "backfill", name, "--start", "2025-01-01T00:00")
    assert await qloop(*backfill, "--end", "2025-01-01T03:00") == 0
    assert "both included" in capsys.readouterr().out

    # Only the backfilled hours: the schedule's own next hour may also come round meanwhile.
    in_range = "TemporalScheduledStartTime < '2025-01-02T00:00:00Z'"
    expected = [f"{name}-sweep-2025-01-01T0{hour}:00:00Z" for hour in range(4)]
    assert await wait_for_runs(qloop_client, name, 4, in_range) == expected
    for workflow_id in expected:
        assert_complete_sweep(await sweep_report(qloop_client, workflow_id))

    # The server drops a paused schedule's backfill; the CLI says so instead of doing nothing.
    assert await qloop("schedule", "pause", name) == 0
    capsys.readouterr()
    assert await qloop(*backfill, "--end", "2025-01-01T05:00") == 1
    assert "is paused" in capsys.readouterr().err
    assert await qloop("schedule", "delete", name) == 0


async def test_invalid_input_is_refused_before_a_schedule_exists(
    qloop_client: Client, tmp_path: Path, sweep_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    name = new_name()
    bad_sweep = tmp_path / "bad.yaml"
    bad_sweep.write_text(yaml.safe_dump({**TINY_SWEEP, "points": {"points": []}}))
    assert await create(name, bad_sweep, "--every", "1h") == 2
    refusal = capsys.readouterr().err
    assert "refused:" in refusal and "points is empty" in refusal

    refusals = {
        "'5 minutes' is not a duration": ("--every", "5 minutes"),
        "at least 1 second": ("--every", "0s"),
        "is not an overlap policy": ("--every", "1h", "--overlap", "never"),
        "is not a time zone": ("--cron", "0 3 * * *", "--time-zone", "Mars/Olympus"),
        "Minute is not in range": ("--cron", "61 * * * *"),
        "--cron is empty": ("--cron", " "),
    }
    for message, timing in refusals.items():
        assert await create(name, sweep_file, *timing) == 2, timing
        assert message in capsys.readouterr().err
    assert await create("no spaces", sweep_file, "--every", "1h") == 2
    assert "is not a schedule name: use 1 to 63 letters" in capsys.readouterr().err
    assert not await schedule_exists(qloop_client, name)

    assert await create(name, sweep_file, "--every", "1h") == 0
    assert await create(name, sweep_file, "--every", "2h") == 1
    assert f"schedule {name!r} already exists (qloop-{name})" in capsys.readouterr().err
    backfill = ("schedule", "backfill", name, "--start", "2025-01-02", "--end", "2025-01-01")
    assert await qloop(*backfill) == 2
    assert "is before --start" in capsys.readouterr().err
    assert await qloop("schedule", "delete", name) == 0

    for verb in ("describe", "pause", "unpause", "trigger", "delete"):
        assert await qloop("schedule", verb, name) == 1
        assert f"no schedule named {name!r} (schedule id qloop-{name})" in capsys.readouterr().err
