"""The artifact store: bulky data lives here and workflow history keeps only its URI.

A local folder (`$QLOOP_HOME/artifacts/<experiment id>/<name>`) addressed by `file://` URIs.
Writes are atomic (temp file + rename) so a retried activity never leaves half a file.

A URI an activity reads came from its input, and anyone who can start a workflow writes inputs:
every read accepts only a `file://` URI that resolves (after `..` and symlinks) to a file inside
the artifact root, and refuses anything else with `ArtifactOutsideStore`.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

from pydantic import BaseModel
from temporalio.exceptions import ApplicationError

from adapters.settings import qloop_home

ModelT = TypeVar("ModelT", bound=BaseModel)
ARTIFACT_OUTSIDE_STORE = "ArtifactOutsideStore"


class ArtifactOutsideStore(ApplicationError, ValueError):
    """A URI that is not an artifact of this store. The same URI is refused on every attempt, so
    it is never retried. An ApplicationError, so it leaves any activity with its own type and
    non-retryable whichever wrapper let it through (also from a child process of the compute
    pool: it pickles); a ValueError, so pure callers treat it as the bad input it is."""

    def __init__(self, uri: str, root: str, why: str) -> None:
        super().__init__(
            f"artifact URI {uri!r} {why}; only file:// URIs of files under the artifact root "
            f"{root} are read",
            type=ARTIFACT_OUTSIDE_STORE,
            non_retryable=True,
        )
        self.uri, self.root, self.why = uri, root, why

    def __reduce__(self) -> tuple[type[ArtifactOutsideStore], tuple[str, str, str]]:
        return type(self), (self.uri, self.root, self.why)


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
    """The file `uri` names, resolved, when it lies inside the artifact root; else
    ArtifactOutsideStore naming the URI and the root."""
    root = artifact_root().resolve()
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        scheme = repr(parsed.scheme) if parsed.scheme else "no"
        raise ArtifactOutsideStore(uri, str(root), f"has {scheme} scheme")
    if parsed.netloc not in ("", "localhost") or parsed.query or parsed.fragment:
        raise ArtifactOutsideStore(uri, str(root), "names a host, a query or a fragment")
    try:
        path = Path(unquote(parsed.path)).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a NUL byte
        raise ArtifactOutsideStore(uri, str(root), "is not a readable path") from None
    if root not in path.parents:
        raise ArtifactOutsideStore(uri, str(root), f"resolves to {path}, outside the store")
    return path


def read_bytes(uri: str) -> bytes:
    return path_of(uri).read_bytes()


def read_model(uri: str, model: type[ModelT]) -> ModelT:
    return model.model_validate_json(read_bytes(uri))


def read_json(uri: str) -> object:
    return json.loads(read_bytes(uri))
