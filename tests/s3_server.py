"""A real S3 API for tests: moto's server (the one the local stack runs) in a child process on a
free port, and the environment a qloop process needs to keep its artifacts there."""

from __future__ import annotations

import contextlib
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3

from tests.server_helpers import free_ports, wait_until

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "qloop-test",
    "AWS_SECRET_ACCESS_KEY": "qloop-test",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2):
        return True
    return False


@contextlib.contextmanager
def running_moto_s3(log_folder: Path) -> Iterator[str]:
    """The endpoint URL of a moto S3 server that lives as long as the context."""
    (port,) = free_ports(1)
    moto_server = Path(sys.executable).parent / "moto_server"
    with (log_folder / "moto.log").open("wb") as log:
        process = subprocess.Popen(
            [str(moto_server), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=log
        )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout=30, interval=0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


def s3_client(endpoint: str) -> Any:
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
    )


def new_bucket(endpoint: str) -> str:
    """The name of a bucket just made on `endpoint`."""
    bucket = f"qloop-artifacts-{uuid.uuid4().hex[:12]}"
    s3_client(endpoint).create_bucket(Bucket=bucket)
    return bucket


def artifact_bucket_environment(endpoint: str) -> dict[str, str]:
    """A new bucket on `endpoint` and the environment that makes qloop's artifact store use it
    (under a prefix, as a shared bucket would be), through the standard AWS variables."""
    return {
        **CREDENTIALS,
        "AWS_ENDPOINT_URL_S3": endpoint,
        "QLOOP_ARTIFACT_URL": f"s3://{new_bucket(endpoint)}/team-a/artifacts",
    }
