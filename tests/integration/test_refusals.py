"""Malformed requests are refused by `qloop run` at the door: a message names the field and
the reason, the exit code is 2, and no workflow starts on the (real) server."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio.service import RPCError, RPCStatusCode
from temporalio.testing import WorkflowEnvironment

import cli.start
import starter
from cli.output import EXIT_INVALID

BELL = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nh q[0];\ncx q[0],q[1];\n'
VALID: dict[str, Any] = {
    "schema_version": 1,
    "name": "refusal-probe",
    "problem": {
        "kind": "qasm",
        "qasm": BELL,
        "observable": {"kind": "pauli_sum", "terms": [{"pauli": "ZZ", "coefficient": 1.0}]},
    },
    "execution": {"shots": 1000, "backend": {"provider": "aer", "device": "ideal"}},
}


def changed(path: str, value: Any) -> dict[str, Any]:
    """VALID with the field at dotted `path` set to `value` (or removed when value is DELETE)."""
    request = copy.deepcopy(VALID)
    *parents, last = path.split(".")
    node = request
    for part in parents:
        node = node.setdefault(part, {})
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    return request


DELETE = object()
GHZ = {"kind": "ghz", "num_qubits": 3}
GRAPH = {"nodes": 3, "edges": [{"u": 0, "v": 1}, {"u": 1, "v": 2}]}

# (id, request or raw text, words the message must contain)
CASES: list[tuple[str, Any, list[str]]] = [
    ("not-a-mapping", "- just\n- a list\n", ["expected a mapping"]),
    ("not-yaml", "name: [unclosed\n", ["not valid YAML"]),
    ("unknown-top-field", {**VALID, "shots": 5}, ["shots", "unknown field"]),
    ("schema-version-2", changed("schema_version", 2), ["schema_version"]),
    ("missing-name", changed("name", DELETE), ["name", "required"]),
    ("bad-name", changed("name", "has spaces!"), ["name", "pattern"]),
    ("missing-problem", changed("problem", DELETE), ["problem", "required"]),
    ("unknown-problem-kind", changed("problem.kind", "shor"), ["problem", "qasm", "ghz"]),
    ("shots-as-text", changed("execution.shots", "many"), ["execution.shots", "integer"]),
    (
        "negative-shots",
        changed("execution.shots", -5),
        ["execution.shots", "greater than or equal to 1"],
    ),
    ("zero-shots", changed("execution.shots", 0), ["execution.shots"]),
    ("huge-shots", changed("execution.shots", 10**9), ["execution.shots", "1000000"]),
    ("fractional-shots", changed("execution.shots", 10.5), ["execution.shots"]),
    (
        "unknown-provider",
        changed("execution.backend.provider", "ionq"),
        ["execution.backend.provider", "aer"],
    ),
    (
        "unknown-device",
        changed("execution.backend.device", "falcon"),
        ["device", "falcon", "ideal", "noisy"],
    ),
    (
        "noisy-without-profile",
        changed("execution.backend", {"provider": "aer", "device": "noisy"}),
        ["noise_profile", "ibm_guadalupe"],
    ),
    (
        "unknown-noise-profile",
        changed(
            "execution.backend",
            {"provider": "aer", "device": "noisy", "noise_profile": "ibm_nowhere"},
        ),
        ["ibm_nowhere", "ibm_guadalupe"],
    ),
    ("negative-seed", changed("execution.seed", -1), ["execution.seed"]),
    ("empty-circuit", changed("problem.qasm", "   "), ["problem.qasm", "empty"]),
    (
        "circuit-without-gates",
        changed("problem.qasm", 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\n'),
        ["problem.qasm", "no gates"],
    ),
    (
        "bad-qasm-gate",
        changed("problem.qasm", 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nfoo q[0];\n'),
        ["problem.qasm", "line 4", "foo"],
    ),
    ("qasm-garbage", changed("problem.qasm", "this is not a circuit"), ["problem.qasm"]),
    (
        "mid-circuit-measurement",
        changed(
            "problem.qasm",
            'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\ncreg c[2];\n'
            "h q[0];\nmeasure q[0] -> c[0];\nx q[0];\ncx q[0],q[1];\n",
        ),
        ["mid-circuit measurement"],
    ),
    (
        "observable-too-wide",
        changed("problem.observable", {"kind": "pauli_sum", "terms": [{"pauli": "ZZZ"}]}),
        ["observable", "3", "2"],
    ),
    (
        "bad-pauli-letter",
        changed("problem.observable.terms", [{"pauli": "ZQ"}]),
        ["pauli", "pattern"],
    ),
    ("empty-observable", changed("problem.observable.terms", []), ["terms", "at least 1"]),
    (
        "nan-coefficient",
        changed("problem.observable.terms", [{"pauli": "ZZ", "coefficient": float("nan")}]),
        ["coefficient", "finite"],
    ),
    (
        "bad-bitstring",
        changed("problem.observable", {"kind": "bitstring_probability", "bitstrings": ["0a"]}),
        ["bitstrings", "pattern"],
    ),
    (
        "thousand-qubit-ghz",
        changed("problem", {"kind": "ghz", "num_qubits": 1000}),
        ["num_qubits", "32"],
    ),
    (
        "ghz-wider-than-simulator",
        changed("problem", {"kind": "ghz", "num_qubits": 30}),
        ["30", "qubits"],
    ),
    (
        "thousand-qubit-qasm",
        changed("problem.qasm", 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1000];\nh q[0];\n'),
        ["1000", "qubits"],
    ),
    (
        "mirror-zero-depth",
        changed("problem", {"kind": "mirror", "num_qubits": 2, "depth": 0}),
        ["depth"],
    ),
    (
        "qaoa-edge-outside-graph",
        changed(
            "problem", {"kind": "qaoa_maxcut", "graph": {"nodes": 2, "edges": [{"u": 0, "v": 5}]}}
        ),
        ["edge (0, 5)", "nodes"],
    ),
    (
        "qaoa-self-loop",
        changed(
            "problem", {"kind": "qaoa_maxcut", "graph": {"nodes": 2, "edges": [{"u": 1, "v": 1}]}}
        ),
        ["self-loop"],
    ),
    (
        "qaoa-nan-angle",
        changed(
            "problem",
            {"kind": "qaoa_maxcut", "graph": GRAPH, "gammas": [float("nan")], "betas": [0.1]},
        ),
        ["gammas"],
    ),
    (
        "qaoa-angles-vs-layers",
        changed(
            "problem",
            {"kind": "qaoa_maxcut", "graph": GRAPH, "layers": 2, "gammas": [0.1], "betas": [0.2]},
        ),
        ["gammas", "layers=2"],
    ),
    (
        "zne-scale-below-one",
        changed("mitigation", {"zne": {"scale_factors": [0.5, 1.0]}}),
        ["scale factors"],
    ),
    (
        "zne-unsorted-scales",
        changed("mitigation", {"zne": {"scale_factors": [3.0, 1.0]}}),
        ["increasing"],
    ),
    (
        "zne-unknown-extrapolation",
        changed("mitigation", {"zne": {"extrapolation": "magic"}}),
        ["extrapolation", "richardson"],
    ),
    (
        "zne-polynomial-without-order",
        changed("mitigation", {"zne": {"extrapolation": "polynomial"}}),
        ["polynomial_order"],
    ),
    (
        "confidence-level-above-one",
        changed("mitigation", {"confidence_level": 1.5}),
        ["confidence_level"],
    ),
    ("bad-account", changed("policy", {"account": "Team Rocket!"}), ["policy.account"]),
    ("negative-budget", changed("policy", {"max_cost_usd": -1}), ["policy.max_cost_usd"]),
    (
        "ghz-with-observable",
        changed("problem", {**GHZ, "observable": {}}),
        ["observable", "unknown field"],
    ),
]


def write_request(tmp_path: Path, case_id: str, request: Any) -> Path:
    if isinstance(request, str):
        path = tmp_path / f"{case_id}.yaml"
        path.write_text(request)
    else:
        path = tmp_path / f"{case_id}.json"
        # json.dumps writes NaN for float("nan"), as a careless generator of requests would.
        path.write_text(json.dumps(request))
    return path


def test_there_are_at_least_thirty_cases() -> None:
    assert len(CASES) >= 30


@pytest.mark.parametrize(("case_id", "request_data", "expected"), CASES, ids=[c[0] for c in CASES])
async def test_malformed_request_is_refused_and_nothing_starts(
    case_id: str,
    request_data: Any,
    expected: list[str],
    tmp_path: Path,
    dev_server: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.client.service_client.config.target_host)
    workflow_id = f"refused-{case_id}-{uuid.uuid4().hex[:6]}"
    path = write_request(tmp_path, case_id, request_data)

    with pytest.raises(SystemExit) as exit_info:
        await cli.start.cmd_run(
            starter.parser().parse_args(["run", str(path), "--id", workflow_id])
        )

    assert exit_info.value.code == EXIT_INVALID
    message = capsys.readouterr().err
    assert message.startswith("refused:")
    for word in expected:
        assert word.lower() in message.lower(), f"{word!r} not in {message!r}"
    with pytest.raises(RPCError) as lookup:
        await dev_server.client.get_workflow_handle(workflow_id).describe()
    assert lookup.value.status == RPCStatusCode.NOT_FOUND


def test_the_valid_probe_itself_is_admitted(tmp_path: Path) -> None:
    path = write_request(tmp_path, "valid", VALID)
    assert cli.start.admit_or_exit(str(path)).name == "refusal-probe"
