"""Artifacts in S3 on the whole local stack: a worker process keeps everything its activities
hand each other in a bucket of the stack's moto S3 (QLOOP_ARTIFACT_URL=s3://...), and the CLI,
run with a QLOOP_HOME and working folder of its own as on another machine, reads every report
and artifact from there. Nothing lands on the worker's disk but its local simulator jobs.
"""

from __future__ import annotations

import csv
import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from temporalio.client import Client

from schemas.pipeline import PollingPolicy
from schemas.report import ExperimentReport
from schemas.variational import SweepInput, SweepReport, SweepRequest
from tests.harness import LocalStack, run_qloop

pytestmark = pytest.mark.integration

PREFIX = "fleet/artifacts"
QUICK = PollingPolicy(initial_seconds=0.2, ceiling_seconds=0.5)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(tmp_path_factory.mktemp("s3-artifacts"), task_queue="s3-artifacts")
    local.start()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def artifact_url(stack: LocalStack) -> str:
    env = stack.worker_env()
    bucket = f"artifacts-{uuid.uuid4().hex[:8]}"
    boto3.session.Session().client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL_S3"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).create_bucket(Bucket=bucket)
    url = f"s3://{bucket}/{PREFIX}"
    stack.start_worker(extra_env={"QLOOP_ARTIFACT_URL": url})
    return url


def elsewhere(stack: LocalStack, artifact_url: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment on a machine that shares only the cluster and the bucket."""
    home = tmp_path / "cli-home"
    return {**stack.worker_env(), "QLOOP_HOME": str(home), "QLOOP_ARTIFACT_URL": artifact_url}


async def test_an_experiment_keeps_every_artifact_in_the_bucket(
    stack: LocalStack, artifact_url: str, tmp_path: Path
) -> None:
    env = elsewhere(stack, artifact_url, tmp_path)
    experiment_id = f"ghz-s3-{uuid.uuid4().hex[:6]}"
    code, out, err = await run_qloop(
        env, "run", "examples/ghz.yaml", "--id", experiment_id, "--wait", "--json", timeout=240
    )
    assert code == 0, err
    report = ExperimentReport.model_validate_json(out)
    assert report.provenance.artifacts
    assert all(
        url.startswith(f"{artifact_url}/{experiment_id}/")
        for url in report.provenance.artifacts.values()
    )

    code, out, err = await run_qloop(env, "artifacts", "ls", experiment_id, "--json")
    assert code == 0, err
    names = {entry["name"] for entry in json.loads(out)}
    assert {"report.json", "manifest.json", "batch.json"} <= names, names

    code, out, err = await run_qloop(env, "result", experiment_id)
    assert code == 0, err
    assert f"artifacts       {artifact_url}/{experiment_id}" in out

    code, out, err = await run_qloop(
        env, "artifacts", "get", experiment_id, "report.json", "-o", "-"
    )
    assert code == 0, err
    stored = ExperimentReport.model_validate_json(out)
    assert stored.experiment_id == experiment_id
    assert stored.value == report.value

    assert not (stack.qloop_home / "artifacts").exists()
    assert not (tmp_path / "cli-home" / "artifacts").exists()


async def test_a_sweep_reads_its_batches_and_writes_its_table_through_the_bucket(
    stack: LocalStack, artifact_url: str, client: Client, tmp_path: Path
) -> None:
    request = SweepRequest.model_validate(
        {
            "name": "s3-sweep",
            "family": {
                "kind": "qaoa_maxcut",
                "graph": {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2}]},
            },
            "points": {"grid": [{"start": 0.0, "stop": 1.0, "num": 4}, {"values": [0.3, 0.6]}]},
            "evaluation": {"shots": 200, "seed": 11},
            "batch_size": 3,
            "canary": None,
        }
    )
    report: SweepReport = await client.execute_workflow(
        "SweepWorkflow",
        SweepInput(
            request=request, polling=PollingPolicy(initial_seconds=0.2, ceiling_seconds=0.5)
        ),
        id=f"s3-sweep-{uuid.uuid4().hex[:6]}",
        task_queue=stack.task_queue,
        result_type=SweepReport,
    )
    assert report.status == "completed" and report.points_evaluated == 8
    assert report.table_uri.startswith(f"{artifact_url}/{report.sweep_id}/")

    env = elsewhere(stack, artifact_url, tmp_path)
    code, out, err = await run_qloop(
        env, "artifacts", "get", report.sweep_id, "results.csv", "-o", "-"
    )
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) == 8
    code, out, err = await run_qloop(env, "artifacts", "ls", report.sweep_id, "--json")
    assert code == 0, err
    names = {entry["name"] for entry in json.loads(out)}
    assert sum(name.startswith("partial-batch-") for name in names) == 3, names
    assert not (stack.qloop_home / "artifacts").exists()
