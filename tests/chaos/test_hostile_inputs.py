"""Hostile input on a live worker: every resource bomb of tests/hostile/ that is a well-formed
experiment request is started as a workflow, bypassing the CLI's door, beside a normal
experiment. The bombs the door refuses are refused again by preprocess (in a child process);
the ones that pass every static limit fail cleanly in a child process at its memory or time
limit, or finish. The worker process stays up, its resident memory stays under 1.5 GB
throughout (sampled every 100 ms), and the normal experiment completes with the same answer, in
about the time it takes alone.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError

from schemas import error_types
from schemas.loading import RequestError, load_request
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.harness import REPO_ROOT, LocalStack
from tests.hostile import large_requests

HOSTILE = REPO_ROOT / "tests" / "hostile"
MEMORY_LIMIT_MB = 1024
TIME_LIMIT_SECONDS = 30
WORKER_RSS_LIMIT_MB = 1536
# A normal experiment beside the bombs may take this much longer than alone, plus some seconds:
# the bombs share the two cores (at lower priority once they have run for 5 s).
SLOWDOWN = 3.0
SLACK_SECONDS = 15.0
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
_PAGE = os.sysconf("SC_PAGE_SIZE")


def normal_request(seed: int) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "beside-the-bombs",
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {
                "shots": 2000,
                "seed": seed,
                "backend": {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"},
            },
        }
    )


def bombs(folder: Path) -> dict[str, ExperimentRequest]:
    """Every hostile file that is a well-formed experiment request (the rest never get past
    reading the file, at the CLI or anywhere else)."""
    written = large_requests.write(folder, {**large_requests.REFUSED, **large_requests.ADMITTED})
    files = [
        *sorted((HOSTILE / "requests").iterdir()),
        *sorted((HOSTILE / "admitted").iterdir()),
        *written.values(),
    ]
    requests = {}
    for path in files:
        try:
            requests[path.name] = load_request(path)
        except (RequestError, ValueError):
            continue
    return requests


def resident_mb(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE / (1 << 20)


class PeakMemory:
    """Samples a process's resident memory every 100 ms in a thread, keeping the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.1):
            self.peak_mb = max(self.peak_mb, resident_mb(self.pid))


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("hostile"), task_queue=f"bombs-{uuid.uuid4().hex[:8]}"
    )
    local.start()
    try:
        yield local
    finally:
        local.stop()


async def start(
    client: Client, stack: LocalStack, request: ExperimentRequest
) -> WorkflowHandle[Any, ExperimentReport]:
    return await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=request, polling=POLLING),
        id=f"{request.name}-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )


async def timed(handle: WorkflowHandle[Any, ExperimentReport]) -> tuple[ExperimentReport, float]:
    started = time.monotonic()
    report = await asyncio.wait_for(handle.result(), 600)
    return report, time.monotonic() - started


async def outcome(handle: WorkflowHandle[Any, ExperimentReport]) -> ApplicationError | None:
    """None when the bomb finished, else the error that ended it."""
    try:
        await asyncio.wait_for(handle.result(), 900)
    except WorkflowFailureError as failure:
        cause = failure.cause
        assert isinstance(cause, ApplicationError), f"{handle.id}: {cause!r}"
        return cause
    return None


async def test_bombs_fail_in_their_children_and_the_worker_serves_everyone_else(
    stack: LocalStack, client: Client, tmp_path: Path
) -> None:
    requests = bombs(tmp_path)
    assert len(requests) >= 20
    worker = stack.start_worker(
        extra_env={
            "QLOOP_TASK_MEMORY_MB": str(MEMORY_LIMIT_MB),
            "QLOOP_TASK_TIME_LIMIT_SECONDS": str(TIME_LIMIT_SECONDS),
        }
    )
    with PeakMemory(worker.pid) as memory:
        alone, alone_seconds = await timed(await start(client, stack, normal_request(1)))
        handles = {name: await start(client, stack, r) for name, r in requests.items()}
        beside, beside_seconds = await timed(await start(client, stack, normal_request(1)))
        outcomes = dict(
            zip(handles, await asyncio.gather(*(outcome(h) for h in handles.values())), strict=True)
        )
        assert worker.poll() is None, "the worker died"
    stack.kill_worker(worker)

    assert memory.peak_mb < WORKER_RSS_LIMIT_MB, f"worker peaked at {memory.peak_mb:.0f} MB"
    assert (beside.raw, beside.mitigated) == (alone.raw, alone.mitigated)
    assert beside_seconds <= SLOWDOWN * alone_seconds + SLACK_SECONDS, (
        alone_seconds,
        beside_seconds,
    )

    limits_hit = 0
    for name, error in outcomes.items():
        if error is None:
            continue  # within every limit after all: it ran to its end
        if error.type == error_types.RESOURCE_LIMIT_EXCEEDED:
            limits_hit += 1
            assert "exceeded its" in error.message and handles[name].id in error.message, name
            assert any(
                f"({env})" in error.message
                for env in ("QLOOP_TASK_MEMORY_MB", "QLOOP_TASK_TIME_LIMIT_SECONDS")
            ), name
        else:
            # Refused again inside the workflow, as at the door: the limit is named.
            assert error.type == error_types.INVALID_REQUEST, (name, error.type, error.message)
            assert any(
                word in error.message
                for word in (
                    "limit",
                    "at most",
                    "no bound",
                    "recursive",
                    "not a constant",
                    "2^64",
                    "only",
                )
            ), (name, error.message)
    assert limits_hit >= 1, "no bomb reached a child process's limit"
    for name, error in sorted(outcomes.items()):
        print(f"  {name}: {'completed' if error is None else f'{error.type}: {error.message}'}")
    print(
        f"{len(requests)} bombs; worker peak {memory.peak_mb:.0f} MB; normal experiment "
        f"{alone_seconds:.1f} s alone, {beside_seconds:.1f} s beside the bombs; "
        f"{limits_hit} stopped at a child's limit"
    )
