"""The artifact store: bulky data lives here and workflow history keeps only its URL.

`QLOOP_ARTIFACT_URL` says where: a `file://` folder (by default `$QLOOP_HOME/artifacts`) for
one machine, or `s3://bucket/prefix` for a fleet (activities/storage/artifact_bucket.py). Everything
one activity writes and another reads goes through here, so any host that has the URL and the
credentials reads what any other host wrote. An experiment's, loop's or sweep's artifacts are
`<root>/<its id>/<name>`.

A URL an activity reads came from its input, and anyone who can start a workflow writes inputs:
every read accepts only a URL under the configured store's root and refuses anything else with
`ArtifactOutsideStore`.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel

from activities.storage.artifact_bucket import BucketStore
from activities.storage.artifact_folder import FolderStore
from activities.storage.artifact_refusal import ArtifactOutsideStore
from schemas.artifacts import StoredArtifact
from schemas.settings import current_settings, qloop_home, store_location

ModelT = TypeVar("ModelT", bound=BaseModel)


def current_store() -> FolderStore | BucketStore:
    """The store `QLOOP_ARTIFACT_URL` names (read on every call, so a test or host may change
    it; the store itself is made once per URL)."""
    settings = current_settings()
    if settings.artifact_url is None:
        return store_at((qloop_home() / "artifacts").as_uri(), None)
    return store_at(settings.artifact_url, settings.artifact_endpoint_url)


@cache
def store_at(url: str, endpoint_url: str | None) -> FolderStore | BucketStore:
    """The store at an artifact URL (`QLOOP_ARTIFACT_URL`'s forms), made once per URL."""
    location = store_location(url)
    if location.folder is not None:
        return FolderStore(location.folder)
    return BucketStore(location.bucket, location.prefix, endpoint_url)


def folder_name(owner_id: str) -> str:
    """The folder of an experiment's, loop's or sweep's artifacts: its id, made safe."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in owner_id)


def put_bytes(owner_id: str, name: str, data: bytes) -> str:
    return current_store().put(folder_name(owner_id), name, data)


def put_model(owner_id: str, name: str, model: BaseModel) -> str:
    return put_bytes(owner_id, name, model.model_dump_json(indent=1).encode())


def put_json(owner_id: str, name: str, data: object) -> str:
    return put_bytes(owner_id, name, json.dumps(data, indent=1, sort_keys=True).encode())


def url_of(owner_id: str, name: str) -> str:
    """Where `name` of `owner_id` is (or would be) stored."""
    return current_store().url_of(folder_name(owner_id), name)


def list_artifacts(owner_id: str) -> list[StoredArtifact]:
    return current_store().list(folder_name(owner_id))


def read_bytes(uri: str) -> bytes:
    return current_store().read(uri)


def read_model(uri: str, model: type[ModelT]) -> ModelT:
    return model.model_validate_json(read_bytes(uri))


def read_json(uri: str) -> object:
    return json.loads(read_bytes(uri))


def store_is_local() -> bool:
    return isinstance(current_store(), FolderStore)


def path_of(uri: str) -> Path:
    """The local file behind an artifact URL of a folder store (to memory-map or show a path);
    ArtifactOutsideStore for any other URL, and for every URL of a bucket store."""
    store = current_store()
    if isinstance(store, BucketStore):
        raise ArtifactOutsideStore(uri, store.root_url, "is not a local file (the store is S3)")
    return store.path_of(uri)
