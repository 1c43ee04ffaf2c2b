"""Builds the Temporal client and the qloop workers; nothing else.

The connection comes from Temporal's standard environment configuration (TEMPORAL_ADDRESS,
TEMPORAL_NAMESPACE, TEMPORAL_API_KEY, TLS settings, TEMPORAL_PROFILE and the config file), so
the same worker runs against the local dev server, a self-hosted cluster or Temporal Cloud.

Roles (`python worker.py [--role all|orchestration|compute]`):
- all (default): everything in one process.
- orchestration: workflows and provider calls on QLOOP_TASK_QUEUE. It imports no simulator and
  no numerical stack (circuits for remote devices are compiled by `plan` in the compute role;
  tests/integration/test_worker_roles.py checks every import), so a restarted orchestration
  worker resumes waiting experiments quickly, and CPU-heavy stages never compete with workflow
  tasks for its GIL.
- compute: the CPU-heavy stages on QLOOP_COMPUTE_TASK_QUEUE, scaled on their own.
The two-role deployment needs QLOOP_COMPUTE_TASK_QUEUE set for workers and starters alike.

Whatever the role, CPU work (the compute stages, local simulations) runs in child processes of
the worker's compute pool (adapters/process_pool.py) under memory and time limits, never on the
threads of the process that serves workflows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import signal
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import structlog
from temporalio.client import Client, Interceptor
from temporalio.envconfig import ClientConfig
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.governance.reconciler_schedule import ensure_reconciler_schedule
from activities.runtime.observability import (
    ActivityLogContext,
    configure_logging,
    configure_tracing,
    temporal_runtime,
)
from adapters.process_pool import close_shared_pool, shared_pool
from schemas.payload_encryption import CodecKeyError, KeyRing, data_converter, load_key_ring
from schemas.policy import PolicyError, governance_notice, load_policy_book
from schemas.settings import SettingsError, current_settings, describe_settings
from workflows.adopt import AdoptWorkflow
from workflows.backend_health import BackendHealthWorkflow
from workflows.budget_ledger import BudgetLedgerWorkflow
from workflows.experiment import ExperimentWorkflow
from workflows.loop import LoopWorkflow
from workflows.reservation_reconciler import ReservationReconcilerWorkflow
from workflows.sweep import SweepWorkflow

log = structlog.get_logger("qloop.worker")
WORKFLOWS = [
    ExperimentWorkflow,
    BackendHealthWorkflow,
    BudgetLedgerWorkflow,
    LoopWorkflow,
    SweepWorkflow,
    ReservationReconcilerWorkflow,
    AdoptWorkflow,
]
ROLES = ("all", "orchestration", "compute")


def orchestration_activities() -> list[Callable[..., Any]]:
    from activities.governance.budget_calls import (
        record_spend_activity,
        release_budget_activity,
        reserve_budget_activity,
        settle_budget_activity,
    )
    from activities.governance.health_calls import (
        acquire_backend_activity,
        report_backend_outcome_activity,
    )
    from activities.governance.open_reservations import settle_orphaned_reservations_activity
    from activities.governance.policy import budget_admins_activity, evaluate_policy_activity
    from activities.providers.adoption import (
        inspect_adopted_tasks_activity,
        settle_adopted_task_activity,
    )
    from activities.providers.provider_calls import (
        cancel_job_activity,
        check_job_activity,
        fetch_result_activity,
        submit_activity,
        wait_for_job_activity,
    )
    from activities.variational.loop_trajectory import (
        save_trajectory_chunk_activity,
        write_trajectory_activity,
    )

    return [
        submit_activity,
        check_job_activity,
        wait_for_job_activity,
        fetch_result_activity,
        cancel_job_activity,
        acquire_backend_activity,
        report_backend_outcome_activity,
        evaluate_policy_activity,
        budget_admins_activity,
        reserve_budget_activity,
        settle_budget_activity,
        release_budget_activity,
        save_trajectory_chunk_activity,
        write_trajectory_activity,
        settle_orphaned_reservations_activity,
        record_spend_activity,
        inspect_adopted_tasks_activity,
        settle_adopted_task_activity,
    ]


def compute_activities() -> list[Callable[..., Any]]:
    # Imported here, not at the top: an orchestration-only worker never loads mitiq and cirq.
    from activities.experiment.mitigate import mitigate_activity
    from activities.experiment.plan import plan_activity
    from activities.experiment.postprocess import (
        classical_report_activity,
        ended_report_activity,
        postprocess_activity,
    )
    from activities.experiment.preprocess import preprocess_activity
    from activities.experiment.prevalidate import prevalidate_activity
    from activities.providers.local_simulation import simulate_activity
    from activities.variational.batch_preparation import prepare_batch_activity
    from activities.variational.batch_scoring import score_batch_activity
    from activities.variational.classical_reference import classical_reference_activity
    from activities.variational.sweep_results import SWEEP_ACTIVITIES

    return [
        preprocess_activity,
        prevalidate_activity,
        plan_activity,
        mitigate_activity,
        postprocess_activity,
        classical_report_activity,
        ended_report_activity,
        prepare_batch_activity,
        score_batch_activity,
        classical_reference_activity,
        simulate_activity,
        *SWEEP_ACTIVITIES,
    ]


def all_activities() -> list[Callable[..., Any]]:
    return [*orchestration_activities(), *compute_activities()]


async def connect(
    interceptors: list[Interceptor] | None = None, patience: timedelta = timedelta(0)
) -> Client:
    """A client from Temporal's environment configuration. With `patience`, a server that does
    not answer yet (starting, restarting) is tried again until that much time has passed.
    Payloads are encrypted when a codec key is configured (schemas/payload_encryption.py)."""
    config = ClientConfig.load_client_connect_config()
    converter = data_converter()
    config.setdefault("target_host", "localhost:7233")
    runtime = temporal_runtime()
    deadline = asyncio.get_running_loop().time() + patience.total_seconds()
    while True:
        try:
            return await Client.connect(
                **config,
                data_converter=converter,
                interceptors=interceptors or [],
                runtime=runtime,
            )
        except RuntimeError as error:
            if asyncio.get_running_loop().time() >= deadline:
                raise
            log.warning("temporal not reachable yet, retrying", error=str(error))
            await asyncio.sleep(1)


def _worker(
    client: Client,
    task_queue: str,
    activities: Sequence[Callable[..., Any]],
    workflows: Sequence[type] = (),
) -> Worker:
    configured = current_settings()
    return Worker(
        client,
        task_queue=task_queue,
        workflows=workflows,
        activities=activities,
        interceptors=[ActivityLogContext()],
        # The sandbox still forbids non-deterministic calls, but imports every module once per
        # process instead of once per workflow run: qloop's workflow modules hold no mutable
        # state, and a thousand waiting experiments would otherwise each carry their own copies.
        workflow_runner=SandboxedWorkflowRunner(
            restrictions=SandboxRestrictions.default.with_passthrough_all_modules()
        ),
        # Experiments mostly wait for hours between polls; keeping each one cached costs memory and
        # saves little, since an evicted one replays its short history at its next poll.
        max_cached_workflows=configured.max_cached_workflows,
        # An activity waiting for a free child process holds a slot but no thread or CPU: enough
        # slots that provider polls and ledger calls never queue behind CPU stages.
        max_concurrent_activities=configured.max_concurrent_activities,
        # After a kill -9 the server waits this long before handing a cached workflow's next task
        # to another worker; a short wait lets a restarted worker resume within one poll interval.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=configured.sticky_timeout_seconds),
    )


def build_workers(client: Client, role: str = "all") -> list[Worker]:
    configured = current_settings()
    task_queue, compute_task_queue = configured.task_queue, configured.compute_task_queue
    if role != "all" and compute_task_queue is None:
        raise SystemExit(f"--role {role} needs QLOOP_COMPUTE_TASK_QUEUE (the compute task queue)")
    if role == "orchestration":
        return [_worker(client, task_queue, orchestration_activities(), WORKFLOWS)]
    if role == "compute":
        assert compute_task_queue is not None
        return [_worker(client, compute_task_queue, compute_activities())]
    if compute_task_queue is None:
        return [_worker(client, task_queue, all_activities(), WORKFLOWS)]
    return [
        _worker(client, task_queue, orchestration_activities(), WORKFLOWS),
        _worker(client, compute_task_queue, compute_activities()),
    ]


async def run(role: str) -> None:
    configure_logging()
    if notice := governance_notice():
        log.warning(notice)
    configured = current_settings()
    patience = timedelta(seconds=configured.connect_patience_seconds)
    client = await connect([configure_tracing(f"qloop-worker-{role}")], patience)
    workers = build_workers(client, role)
    pool = shared_pool()
    log.info(
        "compute pool",
        processes=pool.processes,
        memory_mb=pool.limits.memory_bytes >> 20,
        time_limit_seconds=pool.limits.time_seconds,
    )
    # Children start in the background: a restarted worker polls for work at once.
    warming = asyncio.create_task(asyncio.to_thread(pool.warm_up))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await asyncio.gather(*(worker.__aenter__() for worker in workers))
    if role != "compute":
        reconcile_every = timedelta(minutes=configured.reconcile_minutes)
        await ensure_reconciler_schedule(client, configured.task_queue, reconcile_every)
    try:
        await stop.wait()
    finally:
        await asyncio.gather(*(worker.__aexit__(None, None, None) for worker in workers))
        await warming
        close_shared_pool()


def describe_shared_files(policy_file: Path | None, ring: KeyRing | None) -> str:
    """Digests of what every host of a fleet must hold the same: the policy file and the payload
    keys (a digest of each key, never the key), so an operator compares hosts line by line."""
    if policy_file is None:
        policy = "policy file: none"
    else:
        try:
            digest = hashlib.sha256(policy_file.read_bytes()).hexdigest()[:16]
            accounts = ", ".join(sorted(load_policy_book(policy_file).accounts))
            policy = f"policy file: {policy_file} sha256 {digest} (accounts: {accounts})"
        except (OSError, PolicyError) as error:
            policy = f"policy file: {policy_file} unusable: {error}"
    if ring is None:
        return f"{policy}\ncodec keys: none"
    keys = ", ".join(
        f"{key_id} sha256 {hashlib.sha256(key).hexdigest()[:16]}"
        for key_id, key in sorted(ring.keys.items())
    )
    return f"{policy}\ncodec keys: {keys}; encrypting with {ring.current}"


def main() -> None:
    parser = argparse.ArgumentParser(description="qloop worker")
    parser.add_argument("--role", choices=ROLES, help="default: QLOOP_WORKER_ROLE, else all")
    parser.add_argument(
        "--check-config",
        action="store_true",
        help="print the effective configuration (secrets hidden) and whether it may start",
    )
    args = parser.parse_args()
    try:
        configured = current_settings()
    except SettingsError as error:
        raise SystemExit(f"qloop worker: {error}") from None
    try:
        ring = load_key_ring()
    except CodecKeyError as error:
        raise SystemExit(f"qloop worker: {error}") from None
    codec_key_found = ring is not None
    if args.check_config:
        print(describe_settings(configured, codec_key_found=codec_key_found))
        print(describe_shared_files(configured.policy_file, ring))
        raise SystemExit(
            1 if configured.production_refusals(codec_key_found=codec_key_found) else 0
        )
    if refusals := configured.production_refusals(codec_key_found=codec_key_found):
        raise SystemExit(
            "qloop worker: QLOOP_DEPLOYMENT=production refuses to start: " + "; ".join(refusals)
        )
    asyncio.run(run(args.role or configured.worker_role))


if __name__ == "__main__":
    main()
