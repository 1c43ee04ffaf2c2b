"""A whole local stack for tests that break things: a Temporal dev server with its database on
disk, the QPU stand-in with its S3 server, and qloop worker processes that can be killed.

Everything runs through temporal-dev/stack.sh on free ports in a temporary folder, so nothing
touches a developer's running stack.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import yaml

from activities.storage.artifact_store import store_at
from schemas.settings import database_location
from tests import shared_state
from tests.server_helpers import free_ports

REPO_ROOT = Path(__file__).resolve().parents[1]
STACK = REPO_ROOT / "temporal-dev" / "stack.sh"
QPU = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"
OFFLINE_QPU = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16-Maintenance"
QUIET_FAULTS: dict[str, Any] = {
    "queue_delay_s": 0.2,
    "run_time_s": 0.1,
    "throttle_rate": 0.0,
    "error_rate": 0.0,
    "lost_response_rate": 0.0,
    "task_failure_rate": 0.0,
    "executable_failure_rate": 0.0,
    "outages": [],
}

# The local stack's policies: the default account has a budget for the stand-in's QPU.
POLICY_FILE = REPO_ROOT / "temporal-dev" / "policies.yaml"

HISTORIES = REPO_ROOT / "tests" / "histories"


async def record_history(client: Any, workflow_id: str, name: str | None = None) -> None:
    """With QLOOP_RECORD_HISTORIES=1 (`make record-histories`), keeps the workflow's history
    under tests/histories/ for the replay test."""
    if os.environ.get("QLOOP_RECORD_HISTORIES") != "1":
        return
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    HISTORIES.mkdir(exist_ok=True)
    (HISTORIES / f"{name or workflow_id}.json").write_text(history.to_json())


async def run_qloop(env: dict[str, str], *args: str, timeout: float = 300) -> tuple[int, str, str]:
    """The CLI as a user runs it, in its own process: (exit code, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "starter.py",
        *args,
        cwd=REPO_ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=timeout)
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


class LocalStack:
    def __init__(
        self,
        folder: Path,
        task_queue: str,
        web_ui: bool = False,
        codec: bool = False,
        policy_file: Path = POLICY_FILE,
    ) -> None:
        """`web_ui` serves the dev server's Web UI at `ui_url` (off by default: only the browser
        test needs it). `codec` creates a codec key and token in `qloop_home` (so the workers
        encrypt payloads) and runs the codec server at `codec_url`; off by default, since most
        tests read histories with plain clients. `policy_file` governs the workers."""
        temporal, ui, standin, s3, codec_port = free_ports(5)
        self.folder = folder
        self.qloop_home = folder / "qloop-home"
        self.codec_url = f"http://127.0.0.1:{codec_port}"
        self.ui_url = f"http://127.0.0.1:{ui}"
        self.data_dir = folder / "stack"
        self.address = f"127.0.0.1:{temporal}"
        self.standin_url = f"http://127.0.0.1:{standin}"
        self.task_queue = task_queue
        self.policy_file = policy_file
        self.compute_task_queue = f"{task_queue}.compute"
        base = {
            k: v for k, v in os.environ.items() if not k.startswith(("QLOOP_", "TEMPORAL_", "AWS_"))
        }
        self.stack_env = {
            **base,
            "VENV": sys.prefix,
            "QLOOP_STACK_DATA_DIR": str(self.data_dir),
            "QLOOP_TEMPORAL_PORT": str(temporal),
            "QLOOP_TEMPORAL_UI_PORT": str(ui),
            "QLOOP_TEMPORAL_UI": "1" if web_ui else "0",
            "QLOOP_STANDIN_PORT": str(standin),
            "QLOOP_S3_PORT": str(s3),
            "QLOOP_STACK_TIMEOUT": "90",
            "QLOOP_HOME": str(self.qloop_home),
            "QLOOP_CODEC": "1" if codec else "0",
            "QLOOP_CODEC_PORT": str(codec_port),
            **shared_state.environment(),
        }
        self.workers: list[subprocess.Popen[bytes]] = []

    # --- processes ---------------------------------------------------------------------------

    def sh(self, *args: str, standin: bool = True) -> str:
        env = {**self.stack_env, "QLOOP_STANDIN": "1" if standin else "0"}
        done = subprocess.run(
            ["bash", str(STACK), *args], env=env, capture_output=True, text=True, timeout=180
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"stack.sh {' '.join(args)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
            )
        return done.stdout

    def start(self) -> None:
        self.sh("start")

    def stop(self) -> None:
        for worker in self.workers:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    # A worker stuck in shutdown must not leave the server and stand-in running.
                    worker.kill()
                    worker.wait(timeout=30)
        self.sh("stop")

    def restart_temporal(self) -> None:
        self.sh("stop", standin=False)
        self.sh("start", standin=False)

    def restart_standin(self) -> None:
        self.sh("standin-restart")

    def worker_env(self) -> dict[str, str]:
        env = {**self.stack_env}
        for line in self.sh("standin-env").splitlines():
            key, _, value = line.partition("=")
            env[key] = value
        env.update(
            TEMPORAL_ADDRESS=self.address,
            QLOOP_TASK_QUEUE=self.task_queue,
            QLOOP_HOME=str(self.qloop_home),
            QLOOP_LOG_LEVEL="INFO",
            QLOOP_POLICY_FILE=str(self.policy_file),
        )
        return env

    def start_worker(
        self,
        role: str = "all",
        extra_env: dict[str, str] | None = None,
        python_options: Sequence[str] = (),
    ) -> subprocess.Popen[bytes]:
        """role "all" serves everything on `task_queue`; "orchestration" and "compute" split the
        stages between `task_queue` and `compute_task_queue` (start experiments accordingly).
        `extra_env` adds to the worker's environment (e.g. QLOOP_POLICY_FILE);
        `python_options` go to the interpreter (e.g. `-X importtime`). Its output goes to
        `worker_log(worker)`."""
        env = {**self.worker_env(), **(extra_env or {})}
        if role != "all":
            env["QLOOP_COMPUTE_TASK_QUEUE"] = self.compute_task_queue
        log = (self.folder / f"worker-{len(self.workers)}-{role}.log").open("wb")
        worker = subprocess.Popen(
            [sys.executable, *python_options, "worker.py", "--role", role],
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.workers.append(worker)
        return worker

    def worker_log(self, worker: subprocess.Popen[bytes]) -> Path:
        index = self.workers.index(worker)
        (log,) = self.folder.glob(f"worker-{index}-*.log")
        return log

    def kill_worker(self, worker: subprocess.Popen[bytes]) -> None:
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait(timeout=30)

    # --- the state the workers keep ------------------------------------------------------------

    def read_artifact(self, url: str) -> bytes:
        """What a worker stored at `url`, in the store the workers were given."""
        configured = self.stack_env.get("QLOOP_ARTIFACT_URL")
        store = store_at(
            configured or (self.qloop_home / "artifacts").as_uri(),
            self.stack_env.get("QLOOP_ARTIFACT_ENDPOINT_URL"),
        )
        return store.read(url)

    def forget_point_cache(self) -> None:
        """Empties the workers' sweep cache, so that a sweep measures again."""
        configured = self.stack_env.get("QLOOP_DATABASE_URL")
        if configured is None:
            for path in self.qloop_home.glob("qloop.sqlite3*"):
                path.unlink()
            return
        assert database_location(configured).dialect == "postgresql", configured
        with psycopg.connect(configured, autocommit=True) as connection:
            connection.execute("DELETE FROM point_values")

    # --- the stand-in's admin API ------------------------------------------------------------

    def admin(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.standin_url}/_admin/{path}",
            data=None if body is None else json.dumps(body).encode(),
            method="GET" if body is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_faults(self, **faults: Any) -> None:
        self.admin("config", {"faults": {**QUIET_FAULTS, **faults}})

    def tasks(self) -> list[dict[str, Any]]:
        return self.admin("tasks")["tasks"]

    def billed_usd(self, account: str | None = None, workflow_id: str | None = None) -> Decimal:
        """What the stand-in billed for the tasks of an account and/or a workflow (their tags)."""
        wanted = {"qloop:account": account, "qloop:workflow-id": workflow_id}
        return sum(
            (
                Decimal(task["billedUsd"])
                for task in self.tasks()
                if all(v is None or task["tags"].get(k) == v for k, v in wanted.items())
            ),
            Decimal(0),
        )

    def tasks_per_token(self) -> Counter[str]:
        return Counter(task["clientToken"] for task in self.tasks())


@contextmanager
def running_stack(
    folder: Path,
    name: str,
    *,
    policies: Mapping[str, Any] | None = None,
    quiet: bool = False,
    worker_env: dict[str, str] | None = None,
) -> Iterator[LocalStack]:
    """A test module's stack: dev server, stand-in and one worker serving every role on a queue
    named after `name`. `policies` become the workers' policy file (else the repository's);
    `quiet` clears the stand-in's default faults; `worker_env` adds to the worker's environment."""
    policy_file = POLICY_FILE
    if policies is not None:
        policy_file = folder / "policies.yaml"
        policy_file.write_text(yaml.safe_dump(dict(policies)))
    local = LocalStack(folder, task_queue=f"{name}-{uuid.uuid4().hex[:8]}", policy_file=policy_file)
    try:
        local.start()
        if quiet:
            local.set_faults()
        local.start_worker(extra_env=worker_env)
        yield local
    finally:
        local.stop()
