"""A fleet of three hosts that cannot read each other's files, sharing only what a fleet shares:
the Temporal server, S3 (the stack's moto), a PostgreSQL server, and the policy and key files an
operator hands to every host.

Each host is a mount namespace (`unshare --mount`) with a private tmpfs over HOST_DISK, where its
QLOOP_HOME lives: what one host writes there no other host sees, and a restarted host starts with
an empty disk, as a replaced machine would. Hosts A and B run an orchestration and a compute
worker each; host C only runs the CLI, each command on a fresh disk of its own.

Experiments on every backend (Aer ideal and noisy, Braket's local simulator, the QPU stand-in)
and a loop that continues as new run while host A is killed with SIGKILL twice, each time while
one of its workers holds a running activity; then a sweep runs on host B alone and the same
sweep again on host A alone, which finds every point in the shared cache. Everything completes
with the right answers, the stand-in holds one task per submission token, and host C reads
every report and artifact.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import yaml
from temporalio.api.enums.v1 import EventType, PendingActivityState
from temporalio.client import Client, WorkflowHandle

from schemas.loop import LoopInput
from schemas.payload_encryption import converter_for, parse_key_file
from schemas.pipeline import ExperimentInput, PollingPolicy
from schemas.report import ExperimentReport
from schemas.request import BackendChoice, ExperimentRequest
from schemas.variational import LoopReport, LoopRequest, SweepInput, SweepReport, SweepRequest
from tests.harness import QPU, REPO_ROOT, LocalStack
from tests.postgres_server import running_postgres
from tests.s3_server import artifact_bucket_environment

HOST_DISK = Path("/tmp/qloop-fleet-host")
POLLING = PollingPolicy(initial_seconds=0.25, ceiling_seconds=1.0)
ROLES = ("orchestration", "compute")
TRIANGLE = {
    "kind": "qaoa_maxcut",
    "graph": {
        "nodes": 3,
        "edges": [{"u": 0, "v": 1, "weight": 1.0}, {"u": 1, "v": 2, "weight": 1.0}],
    },
}


def on_own_disk(argv: Sequence[str]) -> list[str]:
    """`argv` in a new mount namespace whose HOST_DISK is a fresh private tmpfs (mode 700)."""
    script = 'mount -t tmpfs -o mode=700 qloop-host "$0" && mkdir "$0/home" && exec "$@"'
    namespace = ["unshare", "--mount", "--propagation", "private"]
    if os.geteuid() != 0:
        namespace.append("--map-root-user")  # a user namespace lets a plain user mount
    return [*namespace, "sh", "-c", script, str(HOST_DISK), *argv]


class Host:
    """One machine of the fleet: an orchestration and a compute worker on one private disk."""

    def __init__(self, name: str, env: dict[str, str], folder: Path) -> None:
        self.name = name
        self.env = env
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        # Both workers in the one namespace the shell entered: one machine, one disk.
        workers = " & ".join(f"{sys.executable} worker.py --role {role}" for role in ROLES)
        self.starts += 1
        log = (self.folder / f"host-{self.name}-{self.starts}.log").open("wb")
        self.process = subprocess.Popen(
            on_own_disk(["sh", "-c", f"{workers} & wait"]),
            cwd=REPO_ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def worker_pids(self) -> set[int]:
        """The pids of this host's worker processes (children of its shell)."""
        assert self.process is not None
        found = subprocess.run(
            ["pgrep", "-s", str(self.process.pid), "-f", "worker.py --role"],
            capture_output=True,
            text=True,
        )
        # The host's shell names the workers in its command line too.
        return {int(pid) for pid in found.stdout.split()} - {self.process.pid}

    def kill(self) -> None:
        """SIGKILL to every process of the host at once, as when the machine dies."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill()


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with running_postgres() as url:
        yield url


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("fleet"), task_queue=f"fleet-{uuid.uuid4().hex[:8]}", codec=True
    )
    local.start()
    local.set_faults()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def fleet_env(stack: LocalStack, postgres_url: str) -> dict[str, str]:
    """What every host is configured with: nothing on its disk but its own QLOOP_HOME."""
    env = stack.worker_env()
    HOST_DISK.mkdir(exist_ok=True)
    return {
        **env,
        # A bucket of their own on the stack's S3 (its dummy credentials serve the stand-in too).
        **artifact_bucket_environment(env["AWS_ENDPOINT_URL_S3"]),
        "QLOOP_HOME": str(HOST_DISK / "home"),
        "QLOOP_COMPUTE_TASK_QUEUE": stack.compute_task_queue,
        "QLOOP_DATABASE_URL": postgres_url,
        "QLOOP_CODEC_KEY_FILE": str(stack.qloop_home / "codec-keys.json"),
        "QLOOP_LOG_LEVEL": "WARNING",
    }


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: LocalStack, fleet_env: dict[str, str]) -> AsyncIterator[Client]:
    key_file = Path(fleet_env["QLOOP_CODEC_KEY_FILE"])
    ring = parse_key_file(key_file.read_text(), str(key_file))
    yield await Client.connect(stack.address, data_converter=converter_for(ring))


@pytest.fixture(scope="module")
def hosts(stack: LocalStack, fleet_env: dict[str, str]) -> Iterator[dict[str, Host]]:
    fleet = {name: Host(name, fleet_env, stack.folder) for name in ("a", "b")}
    try:
        yield fleet
    finally:
        for host in fleet.values():
            host.stop()


async def host_c(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """The CLI on host C: a machine of its own, with an empty disk."""
    process = await asyncio.create_subprocess_exec(
        *on_own_disk([sys.executable, "starter.py", *args]),
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=120)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


def experiment(name: str, backend: BackendChoice) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": name,
            "problem": {"kind": "ghz", "num_qubits": 3},
            "execution": {"shots": 2000, "backend": backend.model_dump(), "seed": 5},
            "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": True},
        }
    )


def loop_request() -> LoopRequest:
    data = yaml.safe_load((REPO_ROOT / "examples" / "vqe_h2.yaml").read_text())
    data["name"] = "fleet-vqe"
    data["limits"] = {"max_iterations": 6}
    data["optimizer"]["patience"] = 7
    data["evaluation"]["shots"] = 2000
    return LoopRequest.model_validate(data)


def sweep_request() -> SweepRequest:
    return SweepRequest.model_validate(
        {
            "name": "fleet-sweep",
            "family": TRIANGLE,
            "points": {"grid": [{"start": 0.0, "stop": 1.0, "num": 3}, {"values": [0.3, 0.6]}]},
            "evaluation": {"shots": 500, "seed": 3},
            "batch_size": 2,
        }
    )


Victim = tuple[str, str, str]  # workflow id, run id, activity id


async def running_activity_on(
    handles: Sequence[WorkflowHandle[Any, Any]], pids: set[int]
) -> Victim | None:
    """An activity running on one of these worker pids."""
    for handle in handles:
        description = await handle.describe()
        for pending in description.raw_description.pending_activities:
            identity = pending.last_worker_identity.split("@", 1)[0]
            started = pending.state == PendingActivityState.PENDING_ACTIVITY_STATE_STARTED
            if started and identity.isdigit() and int(identity) in pids:
                return handle.id, description.run_id or "", pending.activity_id
    return None


async def still_pending(client: Client, victim: Victim) -> bool:
    workflow_id, run_id, activity_id = victim
    description = await client.get_workflow_handle(workflow_id, run_id=run_id).describe()
    pending = description.raw_description.pending_activities
    return any(activity.activity_id == activity_id for activity in pending)


async def kill_while_busy(
    client: Client, host: Host, handles: Sequence[WorkflowHandle[Any, Any]]
) -> Victim:
    """Kills the host at a random moment at which one of its workers runs an activity, and
    starts it again on an empty disk; returns the activity the kill interrupted. A kill that
    came just after its activity finished does not count, and the host is killed again."""
    while True:
        await asyncio.sleep(random.uniform(0.5, 3.0))
        victim = None
        while victim is None:
            victim = await running_activity_on(handles, host.worker_pids())
            await asyncio.sleep(0.05)
        host.kill()
        host.start()
        if await still_pending(client, victim):
            return victim


async def attempts_of(client: Client, victim: Victim) -> int:
    """How many times the activity was started, by its run's history."""
    workflow_id, run_id, activity_id = victim
    scheduled: set[int] = set()
    attempts = 0
    handle = client.get_workflow_handle(workflow_id, run_id=run_id)
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            if event.activity_task_scheduled_event_attributes.activity_id == activity_id:
                scheduled.add(event.event_id)
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            if started.scheduled_event_id in scheduled:
                attempts = max(attempts, started.attempt)
    return attempts


async def test_a_fleet_of_hosts_that_share_nothing_on_disk(
    stack: LocalStack, client: Client, hosts: dict[str, Host], fleet_env: dict[str, str]
) -> None:
    for host in hosts.values():
        host.start()
    backends = [
        BackendChoice(provider="aer", device="ideal"),
        BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe"),
        BackendChoice(provider="braket", device="braket_sv"),
        BackendChoice(provider="braket", device=QPU),
    ]
    experiments: list[WorkflowHandle[Any, ExperimentReport]] = [
        await client.start_workflow(
            "ExperimentWorkflow",
            ExperimentInput(
                request=experiment(f"fleet-{index}", backend),
                polling=POLLING,
                compute_task_queue=stack.compute_task_queue,
            ),
            id=f"fleet-{index}-{uuid.uuid4().hex[:8]}",
            task_queue=stack.task_queue,
            result_type=ExperimentReport,
        )
        for index, backend in enumerate(backends)
    ]
    loop = await client.start_workflow(
        "LoopWorkflow",
        LoopInput(
            request=loop_request(),
            polling=POLLING,
            compute_task_queue=stack.compute_task_queue,
            iterations_per_run=2,
        ),
        id=f"fleet-vqe-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=LoopReport,
    )
    running = [*experiments, loop]
    victims = [await kill_while_busy(client, hosts["a"], running) for _ in range(2)]

    reports = [await asyncio.wait_for(handle.result(), 600) for handle in experiments]
    loop_report = await asyncio.wait_for(loop.result(), 600)
    for backend, report in zip(backends, reports, strict=True):
        assert report.status == "completed", (backend, report.status_reason)
        assert report.value is not None and report.ideal_value is not None
        assert abs(report.value.value - report.ideal_value) < 0.25, (backend, report.value)
    assert loop_report.iterations == 6 and loop_report.runs >= 3
    for victim in victims:
        # The kill landed on running work: the activity had to start again elsewhere.
        assert await attempts_of(client, victim) >= 2, victim
    per_token = stack.tasks_per_token()
    assert per_token and set(per_token.values()) == {1}, per_token

    # A sweep on host B alone, then again on host A alone: A finds B's points in the cache.
    sweep_input = SweepInput(
        request=sweep_request(),
        polling=POLLING,
        compute_task_queue=stack.compute_task_queue,
        batches_per_run=1,
    )
    hosts["a"].kill()
    first = await client.execute_workflow(
        "SweepWorkflow",
        sweep_input,
        id=f"fleet-sweep-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )
    hosts["b"].kill()
    hosts["a"].start()
    second = await client.execute_workflow(
        "SweepWorkflow",
        sweep_input,
        id=f"fleet-sweep-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )
    assert (first.status, first.points_evaluated, first.points_cached) == ("completed", 6, 0)
    assert (second.status, second.points_evaluated, second.points_cached) == ("completed", 0, 6)
    assert second.best == first.best

    # Host C reads every report and artifact from S3 and the server, never from A's or B's disk.
    cli_env = {k: v for k, v in fleet_env.items() if k != "QLOOP_COMPUTE_TASK_QUEUE"}
    for handle, report in zip(experiments, reports, strict=True):
        code, stdout, stderr = await host_c(cli_env, "result", handle.id, "--json")
        assert code == 0, stderr
        assert ExperimentReport.model_validate_json(stdout) == report
    owners = [*(h.id for h in experiments), loop.id, first.sweep_id, second.sweep_id]
    for owner in owners:
        code, stdout, stderr = await host_c(cli_env, "artifacts", "ls", owner, "--json")
        assert code == 0, (owner, stderr)
        listed = json.loads(stdout)
        assert listed and all(a["url"].startswith("s3://") for a in listed), listed
    code, table, stderr = await host_c(
        cli_env, "artifacts", "get", second.sweep_id, Path(second.table_uri).name, "-o", "-"
    )
    assert code == 0, stderr
    assert len(table.strip().splitlines()) == 1 + 6
    code, trajectory, stderr = await host_c(
        cli_env, "artifacts", "get", loop.id, Path(loop_report.trajectory_uri).name, "-o", "-"
    )
    assert code == 0 and trajectory, stderr
