"""Artifacts in an S3 bucket, addressed by `s3://bucket/prefix/...` URLs: the store of a fleet.

boto3 serves it with the standard AWS configuration: the credential chain, the region, and
`AWS_ENDPOINT_URL_S3` (or `AWS_ENDPOINT_URL`) for an S3-compatible server such as the moto S3
of the local stack. `QLOOP_ARTIFACT_ENDPOINT_URL` names another S3 server for artifacts alone,
when they live apart from the bucket Braket writes results to (MinIO or Ceph beside AWS).

One PUT writes a whole object, so a retried activity never leaves half an artifact. A read
accepts only an `s3://` URL of this bucket under the prefix, without `.` or `..` segments.
"""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import quote, unquote, urlparse

import boto3
from botocore.exceptions import ClientError

from activities.storage.artifact_refusal import ArtifactOutsideStore
from schemas.artifacts import StoredArtifact

MISSING_KEY_CODES = ("NoSuchKey", "404")


class BucketStore:
    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None = None) -> None:
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.prefix = prefix.strip("/")
        self.root_url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client_of_pid: tuple[int, Any] | None = None
        self._lock = threading.Lock()

    def put(self, folder: str, name: str, data: bytes) -> str:
        key = self._key(folder, name)
        self._client().put_object(Bucket=self.bucket, Key=key, Body=data)
        return self._url(key)

    def url_of(self, folder: str, name: str) -> str:
        return self._url(self._key(folder, name))

    def read(self, url: str) -> bytes:
        key = self._checked_key(url)
        try:
            response = self._client().get_object(Bucket=self.bucket, Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in MISSING_KEY_CODES:
                raise FileNotFoundError(f"no artifact at {url}") from error
            raise
        body: bytes = response["Body"].read()
        return body

    def list(self, folder: str) -> list[StoredArtifact]:
        folder_prefix = self._key(folder, "")
        paginator = self._client().get_paginator("list_objects_v2")
        found: list[StoredArtifact] = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=folder_prefix):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(folder_prefix) :]
                if "/" not in name:
                    found.append(
                        StoredArtifact(
                            name=name, url=self._url(entry["Key"]), size_bytes=entry["Size"]
                        )
                    )
        return sorted(found, key=lambda artifact: artifact.name)

    def _key(self, folder: str, name: str) -> str:
        return "/".join(part for part in (self.prefix, folder) if part) + "/" + name

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{quote(key, safe='/')}"

    def _checked_key(self, url: str) -> str:
        parsed = urlparse(url)
        if parsed.scheme != "s3":
            scheme = repr(parsed.scheme) if parsed.scheme else "no"
            raise ArtifactOutsideStore(url, self.root_url, f"has {scheme} scheme")
        if parsed.netloc != self.bucket or parsed.query or parsed.fragment or parsed.params:
            raise ArtifactOutsideStore(url, self.root_url, "names another bucket or a query")
        key = unquote(parsed.path.lstrip("/"))
        segments = key.split("/")
        if any(segment in ("", ".", "..") for segment in segments) or "\0" in key:
            raise ArtifactOutsideStore(url, self.root_url, "has an empty, '.' or '..' segment")
        if self.prefix and not key.startswith(self.prefix + "/"):
            raise ArtifactOutsideStore(url, self.root_url, "lies outside the store's prefix")
        return key

    def _client(self) -> Any:
        """One client per process: boto3 clients are thread-safe but must not cross a fork (the
        compute pool's children make their own)."""
        with self._lock:
            if self._client_of_pid is None or self._client_of_pid[0] != os.getpid():
                self._client_of_pid = (
                    os.getpid(),
                    boto3.session.Session().client("s3", endpoint_url=self.endpoint_url),
                )
            return self._client_of_pid[1]
