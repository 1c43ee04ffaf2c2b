"""A real worker process with tracing and metrics switched on by their standard settings:
spans reach the exporter named by OTEL_TRACES_EXPORTER, SDK metrics are served to Prometheus,
and activity log lines carry the workflow context."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

from temporalio.testing import WorkflowEnvironment

from schemas.pipeline import ExperimentInput
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest

REPO_ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def test_traces_metrics_and_logs_of_a_worker(
    dev_server: WorkflowEnvironment, qloop_home: Path, tmp_path: Path
) -> None:
    task_queue = f"obs-{uuid.uuid4().hex[:8]}"
    metrics_address = f"127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": dev_server.client.service_client.config.target_host,
        "QLOOP_TASK_QUEUE": task_queue,
        "QLOOP_HOME": str(qloop_home),
        "OTEL_TRACES_EXPORTER": "console",
        "QLOOP_PROMETHEUS_BIND_ADDRESS": metrics_address,
    }
    spans_file, logs_file = tmp_path / "spans.out", tmp_path / "worker.log"
    with spans_file.open("w") as spans, logs_file.open("w") as logs:
        worker = subprocess.Popen(
            [sys.executable, "worker.py"], cwd=REPO_ROOT, env=env, stdout=spans, stderr=logs
        )
        try:
            request = ExperimentRequest.model_validate(
                {
                    "name": "observed",
                    "problem": {"kind": "ghz", "num_qubits": 2},
                    "execution": {"shots": 200, "seed": 5},
                    "mitigation": {"zne": None, "readout": False},
                }
            )
            workflow_id = f"observed-{uuid.uuid4().hex[:6]}"
            report = await dev_server.client.execute_workflow(
                "ExperimentWorkflow",
                ExperimentInput(request=request),
                id=workflow_id,
                task_queue=task_queue,
                result_type=ExperimentReport,
            )
            assert report.raw.value > 0.9
            with urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=10) as page:
                metrics = page.read().decode()
        finally:
            worker.terminate()
            worker.wait(timeout=30)

    assert "temporal_activity_execution_latency" in metrics
    assert f'task_queue="{task_queue}"' in metrics

    span_text = spans_file.read_text()
    for name in (
        "RunWorkflow:ExperimentWorkflow",
        "RunActivity:preprocess",
        "RunActivity:postprocess",
    ):
        assert name in span_text, f"span {name} not exported"

    entries = [
        json.loads(line) for line in logs_file.read_text().splitlines() if line.startswith("{")
    ]
    completed = [e for e in entries if e.get("event") == "activity completed"]
    assert {e["activity"] for e in completed} >= {"preprocess", "simulate", "postprocess"}
    assert all(e["workflow_id"] == workflow_id and e["run_id"] for e in completed)
