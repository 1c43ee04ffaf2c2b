"""Activities read only artifacts of their own store: a URI from an input that points anywhere
else (another file, `..` or symlink escapes, other schemes) is refused, and the refusal leaves an
activity as a non-retryable ApplicationError of its own type, with the URI and root named."""

from __future__ import annotations

import json
import os
import pickle
import uuid
from collections.abc import Callable, Iterator
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

from activities.storage import artifact_store
from activities.storage.artifact_refusal import ArtifactOutsideStore
from activities.variational.loop_trajectory import write_trajectory_activity
from schemas.error_types import ARTIFACT_OUTSIDE_STORE
from schemas.loop import TrajectoryView, WriteTrajectoryInput
from tests.harness import run_qloop
from tests.s3_server import artifact_bucket_environment, running_moto_s3
from tests.server_helpers import free_ports


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


# --- the same store in S3 (moto's server), as a fleet shares it -------------------------------


@pytest.fixture(scope="module")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_moto_s3(tmp_path_factory.mktemp("moto")) as endpoint:
        yield endpoint


@pytest.fixture
def bucket_store(moto_s3: str, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    environment = artifact_bucket_environment(moto_s3)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return environment


def test_artifacts_in_a_bucket_read_back_list_and_leave_no_file(
    bucket_store: dict[str, str], qloop_home: Path
) -> None:
    root = bucket_store["QLOOP_ARTIFACT_URL"]
    uri = artifact_store.put_model("exp-1", "note.json", Note(text="kept"))
    assert uri == f"{root}/exp-1/note.json"
    assert artifact_store.read_model(uri, Note).text == "kept"
    spaced = artifact_store.put_bytes("exp 2", "a b.txt", b"x")
    assert spaced == f"{root}/exp_2/a%20b.txt" and artifact_store.read_bytes(spaced) == b"x"
    assert artifact_store.url_of("exp 2", "a b.txt") == spaced
    artifact_store.put_json("exp-1", "data.json", {"n": 1})
    listed = artifact_store.list_artifacts("exp-1")
    assert [(a.name, a.url) for a in listed] == [
        ("data.json", f"{root}/exp-1/data.json"),
        ("note.json", uri),
    ]
    assert listed[1].size_bytes == len(Note(text="kept").model_dump_json(indent=1))
    assert artifact_store.list_artifacts("exp") == []  # a prefix of an id is not the id
    assert not artifact_store.store_is_local()
    assert not (qloop_home / "artifacts").exists()
    with pytest.raises(FileNotFoundError, match="no artifact at"):
        artifact_store.read_bytes(f"{root}/exp-1/missing.json")


def test_artifacts_may_live_on_another_s3_server_than_brakets_results(
    bucket_store: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """QLOOP_ARTIFACT_ENDPOINT_URL serves the artifacts; AWS_ENDPOINT_URL_S3 stays Braket's."""
    (nowhere,) = free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", f"http://127.0.0.1:{nowhere}")
    monkeypatch.setenv("QLOOP_ARTIFACT_ENDPOINT_URL", bucket_store["AWS_ENDPOINT_URL_S3"])
    uri = artifact_store.put_json("exp-1", "apart.json", {"n": 2})
    assert json.loads(artifact_store.read_bytes(uri)) == {"n": 2}
    assert [a.name for a in artifact_store.list_artifacts("exp-1")] == ["apart.json"]


def test_a_bucket_store_reads_only_its_own_prefix(bucket_store: dict[str, str]) -> None:
    root = bucket_store["QLOOP_ARTIFACT_URL"]
    bucket = root.removeprefix("s3://").split("/")[0]
    artifact_store.put_json("exp-1", "ok.json", {"text": "inside"})
    foreign = {
        "another bucket": "s3://other-bucket/team-a/artifacts/exp-1/ok.json",
        "beside the prefix": f"s3://{bucket}/team-b/artifacts/exp-1/ok.json",
        "a prefix of the prefix": f"s3://{bucket}/team-a/artifacts-old/exp-1/ok.json",
        "dot-dot": f"{root}/exp-1/../../../team-b/x.json",
        "encoded dot-dot": f"{root}/%2e%2e/%2e%2e/team-b/x.json",
        "empty segment": f"{root}//exp-1/ok.json",
        "query": f"{root}/exp-1/ok.json?versionId=1",
        "file": "file:///etc/passwd",
        "no scheme": "exp-1/ok.json",
    }
    for case, uri in foreign.items():
        with pytest.raises(ArtifactOutsideStore) as refused:
            artifact_store.read_bytes(uri)
        error = refused.value
        assert (error.type, error.non_retryable) == (ARTIFACT_OUTSIDE_STORE, True), case
        assert repr(uri) in error.message and root in error.message, case
    with pytest.raises(ArtifactOutsideStore, match="is not a local file"):
        artifact_store.path_of(f"{root}/exp-1/ok.json")


def test_an_invalid_store_url_says_what_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QLOOP_ARTIFACT_URL", "ftp://host/artifacts")
    with pytest.raises(ValueError, match=r"file:///absolute/folder or s3://bucket/prefix"):
        artifact_store.put_bytes("exp-1", "x", b"x")


async def test_the_cli_lists_and_downloads_artifacts_without_the_writers_disk(
    bucket_store: dict[str, str], tmp_path: Path
) -> None:
    """Written here, read by a `qloop` process with another QLOOP_HOME and working folder, as
    on another machine."""
    artifact_store.put_json("sweep-7", "table.json", {"rows": [1, 2]})
    artifact_store.put_bytes("sweep-7", "plot.png", b"\x89PNG fake")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, **bucket_store, "QLOOP_HOME": str(elsewhere / "home")}

    code, out, _ = await run_qloop(env, "artifacts", "ls", "sweep-7", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [entry["name"] for entry in listed] == ["plot.png", "table.json"]
    assert all(entry["url"].startswith(bucket_store["QLOOP_ARTIFACT_URL"]) for entry in listed)

    target = elsewhere / "table.json"
    code, _, err = await run_qloop(
        env, "artifacts", "get", "sweep-7", "table.json", "-o", str(target)
    )
    assert code == 0, err
    assert json.loads(target.read_text()) == {"rows": [1, 2]}
    code, out, _ = await run_qloop(env, "artifacts", "get", "sweep-7", "table.json", "-o", "-")
    assert (code, json.loads(out)) == (0, {"rows": [1, 2]})
    code, _, err = await run_qloop(env, "artifacts", "get", "sweep-7", "-o", str(elsewhere / "all"))
    assert code == 0, err
    assert (elsewhere / "all" / "plot.png").read_bytes() == b"\x89PNG fake"

    code, _, err = await run_qloop(env, "artifacts", "get", "sweep-7", "nope.csv")
    assert code == 1 and "has no artifact 'nope.csv'" in err and "plot.png" in err
    code, out, err = await run_qloop(env, "artifacts", "ls", "sweep-8")
    assert (code, out) == (1, "") and "no artifacts for 'sweep-8'" in err
    bad = {**env, "QLOOP_ARTIFACT_URL": "bucket-without-scheme"}
    code, _, err = await run_qloop(bad, "artifacts", "ls", "sweep-7")
    assert code == 2 and "s3://bucket/prefix" in err
    assert not (elsewhere / "home" / "artifacts").exists()
