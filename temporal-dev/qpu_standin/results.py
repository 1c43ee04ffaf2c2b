"""Result objects in S3 (a moto server): written on completion, put back when S3 lost them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from qpu_standin.store import Task, TaskStore


class S3Unavailable(Exception):
    """S3 did not answer; the caller retries later."""


class ResultBucket:
    def __init__(self, endpoint_url: str, region: str) -> None:
        self._s3 = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            aws_access_key_id="qloop-standin",
            aws_secret_access_key="qloop-standin",
            config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10),
        )
        self._region = region

    def exists(self, bucket: str) -> bool:
        try:
            self._s3.head_bucket(Bucket=bucket)
        except ClientError as error:
            if error.response["Error"]["Code"] in {"404", "NoSuchBucket", "NotFound"}:
                return False
            raise S3Unavailable(str(error)) from error
        except BotoCoreError as error:
            raise S3Unavailable(str(error)) from error
        return True

    def ensure(self, bucket: str) -> None:
        if self.exists(bucket):
            return
        kwargs: dict[str, Any] = {}
        if self._region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._region}
        self._call(self._s3.create_bucket, Bucket=bucket, **kwargs)

    def put(self, task: Task, other_files: dict[str, str]) -> None:
        """results.json last, so that whoever finds it finds every file it names."""
        assert task.result is not None
        self.ensure(task.bucket)
        for key, body in [*other_files.items(), ("results.json", task.result)]:
            self._call(
                self._s3.put_object,
                Bucket=task.bucket,
                Key=f"{task.directory}/{key}",
                Body=body.encode(),
                ContentType="application/json",
            )

    def has(self, task: Task) -> bool:
        try:
            self._s3.head_object(Bucket=task.bucket, Key=task.result_key)
        except ClientError as error:
            if error.response["Error"]["Code"] in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise S3Unavailable(str(error)) from error
        except BotoCoreError as error:
            raise S3Unavailable(str(error)) from error
        return True

    def restore(self, store: TaskStore, buckets: tuple[str, ...]) -> int:
        """Create `buckets` and put back every stored result S3 lacks; returns how many."""
        for bucket in buckets:
            self.ensure(bucket)
        restored = 0
        for task in store.in_status("COMPLETED"):
            if task.result is not None and not self.has(task):
                self.put(task, store.result_files(task.id))
                restored += 1
        return restored

    @staticmethod
    def _call(method: Callable[..., object], **kwargs: Any) -> None:
        try:
            method(**kwargs)
        except (ClientError, BotoCoreError) as error:
            raise S3Unavailable(str(error)) from error
