"""The artifact store: bulky data lives here and workflow history keeps only its URI.

A local folder (`$QLOOP_HOME/artifacts/<experiment id>/<name>`) addressed by `file://` URIs.
Writes are atomic (temp file + rename) so a retried activity never leaves half a file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pydantic import BaseModel

from adapters.settings import qloop_home

ModelT = TypeVar("ModelT", bound=BaseModel)


def artifact_root() -> Path:
    return qloop_home() / "artifacts"


def experiment_folder(experiment_id: str) -> Path:
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment_id)
    return artifact_root() / safe


def put_bytes(experiment_id: str, name: str, data: bytes) -> str:
    folder = experiment_folder(experiment_id)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / name
    fd, temp = tempfile.mkstemp(dir=folder, prefix=f".{name}.")
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.replace(temp, target)
    return target.as_uri()


def put_model(experiment_id: str, name: str, model: BaseModel) -> str:
    return put_bytes(experiment_id, name, model.model_dump_json(indent=1).encode())


def put_json(experiment_id: str, name: str, data: object) -> str:
    return put_bytes(experiment_id, name, json.dumps(data, indent=1, sort_keys=True).encode())


def path_of(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"unsupported artifact URI {uri!r}: only file:// URIs are configured")
    return Path(unquote(parsed.path))


def read_bytes(uri: str) -> bytes:
    return path_of(uri).read_bytes()


def read_model(uri: str, model: type[ModelT]) -> ModelT:
    return model.model_validate_json(read_bytes(uri))


def read_json(uri: str) -> object:
    return json.loads(read_bytes(uri))
