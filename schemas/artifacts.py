"""What the artifact store lists: one stored artifact of an experiment, loop or sweep."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StoredArtifact(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    url: str
    size_bytes: int
