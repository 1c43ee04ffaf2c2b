"""Activities read only artifacts of their own store: a URI from an input that points anywhere
else (another file, `..` or symlink escapes, other schemes) is refused, and the refusal leaves an
activity as a non-retryable ApplicationError of its own type, with the URI and root named."""

from __future__ import annotations

import pickle
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities import artifact_store
from activities.artifact_store import ARTIFACT_OUTSIDE_STORE, ArtifactOutsideStore
from activities.loop_trajectory import write_trajectory_activity
from schemas.loop import TrajectoryView, WriteTrajectoryInput


class Note(BaseModel):
    text: str


READERS: dict[str, Callable[[str], object]] = {
    "read_bytes": artifact_store.read_bytes,
    "read_model": lambda uri: artifact_store.read_model(uri, Note),
    "read_json": artifact_store.read_json,
    "path_of": artifact_store.path_of,
}


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A JSON file beside QLOOP_HOME, not inside its artifact root."""
    path = tmp_path / "outside.json"
    path.write_text('{"text": "not an artifact"}')
    return path


def test_artifacts_written_by_the_store_read_back(qloop_home: Path) -> None:
    uri = artifact_store.put_model("exp-1", "note.json", Note(text="kept"))
    assert artifact_store.read_model(uri, Note).text == "kept"
    assert artifact_store.read_json(uri) == {"text": "kept"}
    assert artifact_store.path_of(uri) == qloop_home / "artifacts" / "exp-1" / "note.json"
    spaced = artifact_store.put_bytes("exp 2", "a b.txt", b"x")  # percent-encoded in the URI
    assert "%20" in spaced and artifact_store.read_bytes(spaced) == b"x"
    assert artifact_store.read_bytes(f"file://localhost{artifact_store.path_of(uri)}")


def escapes(qloop_home: Path, outside: Path) -> dict[str, str]:
    root = qloop_home / "artifacts"
    inside = artifact_store.put_json("exp-1", "ok.json", {"text": "inside"})
    (root / "exp-1" / "link.json").symlink_to(outside)
    (root / "linked-dir").symlink_to(outside.parent)
    (root / "loop").symlink_to(root / "loop")
    return {
        "system file": "file:///etc/passwd",
        "file beside the store": outside.as_uri(),
        "dot-dot": f"{inside.rsplit('/', 2)[0]}/../../outside.json",
        "encoded dot-dot": f"file://{root}/%2e%2e/%2e%2e/outside.json",
        "symlinked file": (root / "exp-1" / "link.json").as_uri(),
        "symlinked folder": (root / "linked-dir" / "outside.json").as_uri(),
        "symlink loop": (root / "loop" / "x").as_uri(),
        "the root itself": root.as_uri(),
        "s3": "s3://bucket/artifacts/exp-1/ok.json",
        "http": f"http://localhost{root}/exp-1/ok.json",
        "plain path": str(root / "exp-1" / "ok.json"),
        "relative file URI": "file:artifacts/exp-1/ok.json",
        "other host": f"file://attacker.example{root}/exp-1/ok.json",
        "query": f"{inside}?x=1",
        "NUL byte": f"file://{root}/exp-1/ok.json%00.png",
    }


@pytest.mark.parametrize("reader", sorted(READERS))
def test_every_read_refuses_a_uri_outside_the_store(
    reader: str, qloop_home: Path, outside: Path
) -> None:
    root = (qloop_home / "artifacts").resolve()
    for case, uri in escapes(qloop_home, outside).items():
        with pytest.raises(ArtifactOutsideStore) as refused:
            READERS[reader](uri)
        error = refused.value
        assert isinstance(error, ValueError) and isinstance(error, ApplicationError), case
        assert (error.type, error.non_retryable) == (ARTIFACT_OUTSIDE_STORE, True), case
        assert repr(uri) in error.message and str(root) in error.message, case
    assert outside.read_text() == '{"text": "not an artifact"}'


def test_the_refusal_says_where_a_uri_leads(qloop_home: Path, outside: Path) -> None:
    uri = escapes(qloop_home, outside)["symlinked file"]
    with pytest.raises(ArtifactOutsideStore, match=f"resolves to {outside}, outside the store"):
        artifact_store.read_bytes(uri)
    with pytest.raises(ArtifactOutsideStore, match="has 's3' scheme"):
        artifact_store.read_bytes("s3://bucket/key")


def test_the_refusal_crosses_a_process_boundary_as_itself() -> None:
    error = ArtifactOutsideStore("file:///etc/passwd", "/srv/artifacts", "resolves outside")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is ArtifactOutsideStore
    assert (copy.message, copy.type, copy.non_retryable) == (
        error.message,
        ARTIFACT_OUTSIDE_STORE,
        True,
    )


@workflow.defn(sandboxed=False)
class WriteTrajectoryProbe:
    """Calls qloop's write_trajectory activity with whatever chunk URIs it is given, retrying
    without limit: only a non-retryable error ends it."""

    @workflow.run
    async def run(self, input: WriteTrajectoryInput) -> str:
        return await workflow.execute_activity(
            write_trajectory_activity,
            input,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(initial_interval=timedelta(seconds=1)),
        )


async def test_an_activity_given_a_foreign_uri_fails_once_and_says_why(
    time_skipping_env: WorkflowEnvironment, qloop_home: Path
) -> None:
    queue = f"artifacts-{uuid.uuid4()}"
    input = WriteTrajectoryInput(
        owner_id="loop-1", trajectory=TrajectoryView(chunks=["file:///etc/passwd"])
    )
    async with Worker(
        time_skipping_env.client,
        task_queue=queue,
        workflows=[WriteTrajectoryProbe],
        activities=[write_trajectory_activity],
    ):
        handle = await time_skipping_env.client.start_workflow(
            WriteTrajectoryProbe.run, input, id=f"probe-{uuid.uuid4()}", task_queue=queue
        )
        with pytest.raises(WorkflowFailureError) as failed:
            await handle.result()
    activity_error = failed.value.cause
    assert isinstance(activity_error, ActivityError)
    cause = activity_error.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.non_retryable) == (ARTIFACT_OUTSIDE_STORE, True)
    assert "'file:///etc/passwd'" in cause.message
    assert str(qloop_home / "artifacts") in cause.message
    history = await handle.fetch_history()
    attempts = [
        e.activity_task_started_event_attributes.attempt
        for e in history.events
        if e.HasField("activity_task_started_event_attributes")
    ]
    assert attempts == [1]
    assert not (qloop_home / "artifacts" / "loop-1" / "trajectory.json").exists()
