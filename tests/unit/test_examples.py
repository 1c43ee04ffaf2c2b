"""Every request shipped in examples/ is admitted as it is, so a newcomer can run any of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from activities.admission import admit
from schemas.loading import load_request

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.yaml"))


def test_examples_exist() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_is_admitted(path: Path) -> None:
    admitted = admit(load_request(path))
    assert admitted.circuit.num_qubits >= 2
