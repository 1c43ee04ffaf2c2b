"""The refusal of an artifact URL that is not in the configured store."""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from schemas.error_types import ARTIFACT_OUTSIDE_STORE


class ArtifactOutsideStore(ApplicationError, ValueError):
    """A URL that is not an artifact of this store. The same URL is refused on every attempt, so
    it is never retried. An ApplicationError, so it leaves any activity with its own type and
    non-retryable whichever wrapper let it through (also from a child process of the compute
    pool: it pickles); a ValueError, so pure callers treat it as the bad input it is."""

    def __init__(self, uri: str, root: str, why: str) -> None:
        super().__init__(
            f"artifact URL {uri!r} {why}; only artifacts under the store's root {root} are "
            "read (QLOOP_ARTIFACT_URL)",
            type=ARTIFACT_OUTSIDE_STORE,
            non_retryable=True,
        )
        self.uri, self.root, self.why = uri, root, why

    def __reduce__(self) -> tuple[type[ArtifactOutsideStore], tuple[str, str, str]]:
        return type(self), (self.uri, self.root, self.why)
