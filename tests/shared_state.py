"""The suites that break things, run a second time with the state a fleet shares.

With `QLOOP_TEST_SHARED_STATE=1` (the second pass of `make test`) the test session starts its own
moto S3 server and PostgreSQL cluster, and every test and every `LocalStack` gets a fresh bucket
for its artifacts (`QLOOP_ARTIFACT_URL=s3://...`) and a fresh database (`QLOOP_DATABASE_URL=
postgresql://...`). The artifact S3 is not the stand-in's: a test that restarts the stand-in
restarts its S3 too, and a fleet's artifacts would not vanish with it; it is reached through
`QLOOP_ARTIFACT_ENDPOINT_URL`, as MinIO beside AWS would be. Without the variable nothing of
this starts and `environment()` is empty: the defaults (a folder and SQLite in QLOOP_HOME).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tests.postgres_server import new_database, running_postgres
from tests.s3_server import CREDENTIALS, new_bucket, running_moto_s3, s3_client

REQUEST_VARIABLE = "QLOOP_TEST_SHARED_STATE"


@dataclass(frozen=True)
class SharedServices:
    s3_endpoint: str
    postgres_server: str


_running: list[SharedServices] = []


def requested() -> bool:
    return os.environ.get(REQUEST_VARIABLE) == "1"


@contextlib.contextmanager
def running_shared_services(log_folder: Path) -> Iterator[SharedServices]:
    """The S3 server and PostgreSQL cluster of the session; `environment()` uses them meanwhile."""
    with running_moto_s3(log_folder) as endpoint, running_postgres() as server:
        services = SharedServices(s3_endpoint=endpoint, postgres_server=server)
        _running.append(services)
        try:
            yield services
        finally:
            _running.remove(services)


def artifacts_stored(services: SharedServices) -> int:
    """How many objects the session's S3 server holds, over all its buckets."""
    client = s3_client(services.s3_endpoint)
    return sum(
        page.get("KeyCount", 0)
        for bucket in client.list_buckets()["Buckets"]
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket["Name"])
    )


def environment() -> dict[str, str]:
    """A fresh bucket and database as qloop's settings name them; empty in the default
    configuration."""
    if not _running:
        return {}
    services = _running[-1]
    return {
        **CREDENTIALS,
        "QLOOP_ARTIFACT_URL": f"s3://{new_bucket(services.s3_endpoint)}/fleet/artifacts",
        "QLOOP_ARTIFACT_ENDPOINT_URL": services.s3_endpoint,
        "QLOOP_DATABASE_URL": new_database(services.postgres_server),
    }
