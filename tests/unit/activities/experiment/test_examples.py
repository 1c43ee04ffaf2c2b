"""Every request shipped in examples/ is admitted as it is, so a newcomer can run any of them.

The QPU example is admitted against the local QPU stand-in (started here, as `make dev` does),
since admission asks the device for its status, width and shot limit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from activities.experiment.admission import admit
from schemas.loading import load_request
from tests.harness import LocalStack

# Experiment requests (`qloop run`); loop and sweep files have their own admission tests.
EXAMPLES = sorted(
    path
    for path in (Path(__file__).parents[4] / "examples").glob("*.yaml")
    if "problem:" in path.read_text()
)


@pytest.fixture(scope="module")
def standin_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    stack = LocalStack(tmp_path_factory.mktemp("examples-standin"), task_queue="unused")
    stack.sh("standin-start")
    try:
        lines = stack.sh("standin-env").splitlines()
        yield dict(line.split("=", 1) for line in lines if "=" in line)
    finally:
        stack.sh("standin-stop")


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_admitted(
    path: Path, standin_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in standin_env.items():
        monkeypatch.setenv(name, value)
    admitted = admit(load_request(path))
    assert admitted.circuit.num_qubits >= 2
