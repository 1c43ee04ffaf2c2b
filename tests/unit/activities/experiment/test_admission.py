"""Admission, preprocess and prevalidation on real Qiskit/Aer: what is accepted, what is refused
with which message, and that the prepared circuits measure what the observable needs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.experiment.admission import AdmissionError, admit
from activities.experiment.preprocess import preprocess, preprocess_activity
from activities.experiment.prevalidate import (
    PrevalidationError,
    estimated_fidelity,
    prevalidate,
    prevalidate_activity,
)
from activities.numerics import circuits, classical
from activities.numerics.circuits import load_qasm2
from activities.numerics.observables import measurement_bases
from activities.storage import artifact_store
from adapters.profiles import load_profile
from schemas.loading import RequestError, load_request
from schemas.pipeline import PreparedCircuits, PreparedExperiment, PreprocessInput, PrevalidateInput
from schemas.request import ExperimentRequest, PauliSumObservable

NOISY = {"device": "noisy", "noise_profile": "ibm_guadalupe"}
RING4 = {"nodes": 4, "edges": [{"u": i, "v": (i + 1) % 4} for i in range(4)]}
QASM2_2Q = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\n'
QASM_3Q = """OPENQASM 3.0;
include "stdgates.inc";
qubit[3] q;
ry(0.7) q[0];
rx(1.1) q[1];
cx q[0], q[2];
h q[2];
s q[1];
cx q[1], q[0];
"""
TERMS = [("III", 0.5), ("XYZ", 1.0), ("ZZI", -0.3), ("IXX", 0.7), ("YII", 0.2), ("XYI", 0.4)]
QASM3_LOOP = (
    'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit q;\nfor int i in [1:1000000000] { x q; }\n'
)
# 1,000 Pauli terms without identities on 7 qubits: no two share a measurement basis.
DISJOINT_TERMS = [
    {"pauli": "".join(p)} for p in itertools.islice(itertools.product("XYZ", repeat=7), 1000)
]
MANY_SCALES = {"scale_factors": [1, 3, 5, 7, 9, 11, 13, 15, 17, 19], "extrapolation": "linear"}


def request(problem: dict[str, Any], **fields: Any) -> ExperimentRequest:
    return ExperimentRequest.model_validate({"name": "t", "problem": problem, **fields})


def qasm_problem(qasm: str, bitstrings: list[str]) -> dict[str, Any]:
    observable = {"kind": "bitstring_probability", "bitstrings": bitstrings}
    return {"kind": "qasm", "qasm": qasm, "observable": observable}


def pauli_problem() -> dict[str, Any]:
    terms = [{"pauli": p, "coefficient": c} for p, c in TERMS]
    return {"kind": "qasm", "qasm": QASM_3Q, "observable": {"kind": "pauli_sum", "terms": terms}}


def run_pipeline(
    req: ExperimentRequest, experiment_id: str = "exp"
) -> tuple[PreparedExperiment, Any]:
    prepared = preprocess(PreprocessInput(experiment_id=experiment_id, request=req))
    prevalidation = prevalidate(
        PrevalidateInput(experiment_id=experiment_id, request=req, prepared=prepared)
    )
    return prepared, prevalidation


# --- admission -------------------------------------------------------------------------------


def test_admit_qaoa_gives_circuit_observable_and_brute_force_baseline() -> None:
    admitted = admit(request({"kind": "qaoa_maxcut", "graph": RING4}))
    assert admitted.circuit.num_qubits == 4
    assert admitted.observable.num_qubits == 4
    assert admitted.classical_baseline is not None
    assert admitted.classical_baseline.method == "brute_force_maxcut"
    assert admitted.classical_baseline.value == 4.0
    assert admitted.capabilities.device == "ideal"


def test_admit_uses_given_angles() -> None:
    problem = {"kind": "qaoa_maxcut", "graph": RING4, "gammas": [0.1], "betas": [0.2]}
    rzz = [i.operation for i in admit(request(problem)).circuit.data if i.operation.name == "rzz"]
    assert rzz[0].params[0] == pytest.approx(0.2)


@pytest.mark.parametrize(
    ("problem", "fields", "expected"),
    [
        (qasm_problem("OPENQASM 2.0;\nqreg q[1];\nh q[0];\n", ["0"]), {}, "problem.qasm: line 3: "),
        (
            qasm_problem(QASM2_2Q + "h q[0];\n", ["0"]),
            {},
            "problem.observable: acts on 1 qubits but the circuit has 2",
        ),
        (
            qasm_problem(QASM2_2Q + "creg c[2];\nmeasure q[0] -> c[0];\nh q[0];\n", ["00"]),
            {},
            "problem.qasm: mid-circuit measurement on qubit q[0] at instruction 2",
        ),
        (
            {"kind": "ghz", "num_qubits": 2},
            {"execution": {"backend": {"device": "qpu9"}}},
            "execution.backend: unknown device 'qpu9'",
        ),
        (
            {"kind": "ghz", "num_qubits": 2},
            {"execution": {"backend": {"device": "noisy"}}},
            "execution.backend: noisy needs noise_profile",
        ),
        (
            {"kind": "ghz", "num_qubits": 2},
            {"execution": {"backend": {"device": "noisy", "noise_profile": "nowhere"}}},
            "execution.backend: unknown noise profile 'nowhere'",
        ),
        (
            {"kind": "ghz", "num_qubits": 2},
            {"execution": {"fallback": [{"device": "gpu"}]}},
            "execution.fallback[0]: unknown device 'gpu'",
        ),
        (
            {"kind": "ghz", "num_qubits": 17},
            {"execution": {"backend": NOISY}},
            "execution.backend: the circuit needs 17 qubits",
        ),
        ({"kind": "ghz", "num_qubits": 25}, {}, "allows at most 24"),
        (
            qasm_problem(QASM2_2Q.replace("q[2]", "q[100000000]") + "x q[0];\n", ["0"]),
            {},
            "problem: the circuit has 100000000 qubits; qloop simulates the ideal reference "
            "exactly and allows at most 24",
        ),
        (
            qasm_problem(QASM3_LOOP, ["0"]),
            {},
            "problem.qasm: 1,000,000,000 gates after unrolling gate definitions, loops and "
            "broadcasts; the limit is 100,000",
        ),
        (
            {
                "kind": "qasm",
                "qasm": QASM2_2Q.replace("q[2]", "q[7]") + "h q;\n",
                "observable": {"kind": "pauli_sum", "terms": DISJOINT_TERMS},
            },
            {},
            "execution.backend: the batch needs 3,002 circuits (1,000 measurement bases x 3 scale "
            "factors + 2 readout calibration circuits) but aer/ideal takes at most 500 per job",
        ),
        (
            {"kind": "mirror", "num_qubits": 24, "depth": 200},
            {"mitigation": {"zne": MANY_SCALES}},
            "mitigation.zne.scale_factors: the batch would hold about 9,122,400 gates (91,224 "
            "gates x 1 measurement basis x 100, the sum of the scale factors 1, 3, 5, 7, 9, 11, "
            "13, 15, 17, 19); the limit is 2,000,000",
        ),
        (
            {"kind": "qaoa_maxcut", "graph": {"nodes": 25, "edges": [{"u": 0, "v": 24}]}},
            {},
            "problem.graph.nodes: 25 nodes",
        ),
        (
            {"kind": "qaoa_maxcut", "graph": {"nodes": 13, "edges": [{"u": 0, "v": 12}]}},
            {},
            "problem.gammas: ",
        ),
    ],
    ids=[
        "bad-qasm",
        "observable-width",
        "mid-circuit",
        "unknown-device",
        "noisy-without-profile",
        "unknown-profile",
        "bad-fallback",
        "wider-than-device",
        "wider-than-ideal-limit",
        "huge-register",
        "gate-bomb",
        "circuits-per-job",
        "batch-gates",
        "graph-too-big",
        "angles-needed",
    ],
)
def test_refusals_name_the_field(
    problem: dict[str, Any], fields: dict[str, Any], expected: str
) -> None:
    with pytest.raises(AdmissionError) as error:
        admit(request(problem, **fields))
    assert expected in str(error.value)


@pytest.mark.parametrize(
    "problem",
    [
        qasm_problem(QASM3_LOOP, ["0"]),
        qasm_problem(QASM2_2Q.replace("q[2]", "q[100000000]") + "x q[0];\n", ["0"]),
    ],
    ids=["gate-bomb", "huge-register"],
)
def test_bombs_are_refused_before_qiskit_reads_them(
    problem: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    def never(text: str) -> None:
        raise AssertionError("Qiskit's parser was asked to read a bomb")

    monkeypatch.setattr(circuits, "parse_qasm", never)
    with pytest.raises(AdmissionError, match=r"the limit is|allows at most"):
        admit(request(problem))


def test_admitting_a_template_builds_nothing_until_asked() -> None:
    """The CLI admits a QAOA request without its brute-force baseline or angle search."""
    admitted = admit(request({"kind": "qaoa_maxcut", "graph": RING4}))
    assert "built" not in vars(admitted)
    assert admitted.circuit.num_qubits == 4
    assert "built" in vars(admitted)


def test_a_request_file_may_reuse_a_block_through_a_yaml_alias(tmp_path: Path) -> None:
    path = tmp_path / "aliases.yaml"
    path.write_text(
        "name: aliased\nproblem: {kind: ghz, num_qubits: 2}\nexecution:\n"
        "  backend: &ideal {provider: aer, device: ideal}\n  fallback: [*ideal, *ideal]\n"
    )
    request = load_request(path)
    assert request.execution.fallback == [request.execution.backend] * 2


def test_a_tree_of_aliases_is_counted_as_expanded_and_refused(tmp_path: Path) -> None:
    """Level i holds 10 copies of level i - 1: 11, 111, ..., 11,111,111 nodes; with the
    document's mapping, its 8 keys and the name, 12,345,687 once expanded."""
    path = tmp_path / "laughs.yaml"
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 7)
    ]
    path.write_text("\n".join(levels) + "\nname: laughs\n")
    with pytest.raises(RequestError, match=r"12,345,687 values, keys and collections"):
        load_request(path)


# --- preprocess --------------------------------------------------------------------------------


def test_measurement_bases_group_qubitwise_commuting_terms() -> None:
    observable = PauliSumObservable.model_validate(
        {"terms": [{"pauli": p, "coefficient": c} for p, c in TERMS]}
    )
    assert measurement_bases(observable) == ["XYZ", "ZZZ", "YXX"]


def test_preprocess_stores_prepared_circuits_and_is_deterministic() -> None:
    req = request(pauli_problem(), execution={"backend": NOISY, "seed": 5})
    first = preprocess(PreprocessInput(experiment_id="a", request=req))
    second = preprocess(PreprocessInput(experiment_id="b", request=req))
    assert first.transpiled_circuits_sha256 == second.transpiled_circuits_sha256
    assert first.logical_circuit_sha256 == second.logical_circuit_sha256
    assert first.measurement_bases == ["XYZ", "ZZZ", "YXX"]
    assert first.capabilities.num_qubits == 16
    stored = artifact_store.read_model(first.artifact_uri, PreparedCircuits)
    assert [b.basis for b in stored.bases] == first.measurement_bases
    assert len(set(stored.measured_physical_qubits)) == 3
    allowed = set(first.capabilities.basis_gates) | {"barrier"}
    for basis in stored.bases:
        circuit = load_qasm2(basis.qasm)
        assert circuit.num_qubits == 16
        assert set(circuit.count_ops()) <= allowed


@pytest.mark.parametrize("backend", [{"device": "ideal"}, NOISY], ids=["ideal", "noisy"])
def test_prevalidation_samples_estimate_the_ideal_value(backend: dict[str, Any]) -> None:
    """Every basis circuit measured on `measured_physical_qubits` reproduces the observable:
    this checks the basis rotations, the layout and the bit order together."""
    req = request(pauli_problem(), execution={"backend": backend, "shots": 40000, "seed": 3})
    _, prevalidation = run_pipeline(req)
    record = artifact_store.read_json(prevalidation.artifact_uri)
    estimate = sum(
        coefficient * pauli_mean(record["counts"], pauli) for pauli, coefficient in TERMS
    )
    assert abs(estimate - prevalidation.ideal_value) < 0.05  # > 5 standard errors at 40k shots
    assert 0.0 < prevalidation.estimated_fidelity <= 1.0


def pauli_mean(counts_by_basis: dict[str, dict[str, int]], pauli: str) -> float:
    basis = next(
        b for b in counts_by_basis if all(p in ("I", c) for p, c in zip(pauli, b, strict=True))
    )
    counts = counts_by_basis[basis]
    total = 0
    for bits, count in counts.items():
        parity = sum(bit == "1" for bit, p in zip(bits, pauli, strict=True) if p != "I") % 2
        total += count * (-1 if parity else 1)
    return total / sum(counts.values())


def test_qaoa_ideal_value_is_the_classical_expectation() -> None:
    req = request(
        {"kind": "qaoa_maxcut", "graph": RING4, "gammas": [0.4], "betas": [0.3]},
        mitigation={"zne": None},
    )
    prepared, prevalidation = run_pipeline(req)
    graph = req.problem.graph  # type: ignore[union-attr]
    assert prevalidation.ideal_value == pytest.approx(
        classical.qaoa_expectation(graph, [0.4], [0.3])
    )
    assert prepared.classical_baseline is not None and prepared.classical_baseline.value == 4.0
    assert prepared.observable_label.startswith("2*IIII")


@pytest.mark.parametrize(
    "problem",
    [{"kind": "ghz", "num_qubits": 4}, {"kind": "mirror", "num_qubits": 4, "depth": 3, "seed": 9}],
)
def test_templates_prevalidate_to_one_on_the_noisy_layout(problem: dict[str, Any]) -> None:
    req = request(problem, execution={"backend": NOISY})
    prepared, prevalidation = run_pipeline(req)
    assert prevalidation.ideal_value == pytest.approx(1.0)
    record = artifact_store.read_json(prevalidation.artifact_uri)
    (counts,) = record["counts"].values()
    stored = artifact_store.read_model(prepared.artifact_uri, PreparedCircuits)
    wanted = set(stored.observable.bitstrings)  # type: ignore[union-attr]
    assert sum(n for bits, n in counts.items() if bits in wanted) == record["shots"]
    assert 0.5 < prevalidation.estimated_fidelity < 1.0


# --- refusals inside the workflow ---------------------------------------------------------------


def test_too_deep_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QLOOP_MAX_DEPTH", "5")
    req = request({"kind": "mirror", "num_qubits": 3, "depth": 4})
    with pytest.raises(PrevalidationError, match=r"too deep: depth \d+ exceeds the limit 5"):
        run_pipeline(req)


def test_hopeless_fidelity_is_refused() -> None:
    backend = {**NOISY, "extra_depolarizing": {"two_qubit": 0.5}}
    req = request({"kind": "mirror", "num_qubits": 6, "depth": 20}, execution={"backend": backend})
    with pytest.raises(
        PrevalidationError, match=r"cannot succeed: estimated fidelity .* below 0.01"
    ):
        run_pipeline(req)


def test_estimated_fidelity_counts_gates_and_readout() -> None:
    profile = load_profile("ibm_guadalupe")
    circuit = load_qasm2(
        'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[2];\nsx q[0];\ncx q[0],q[1];\n'
    )
    errors = {(g.gate, tuple(g.qubits)): g.error for g in profile.gates}
    readout = [
        (profile.qubits[q].readout_p1_given_0 + profile.qubits[q].readout_p0_given_1) / 2
        for q in (0, 1)
    ]
    expected = (
        (1 - errors[("sx", (0,))])
        * (1 - errors[("cx", (0, 1))])
        * (1 - readout[0])
        * (1 - readout[1])
    )
    assert estimated_fidelity(circuit, [0, 1], profile) == pytest.approx(expected)


async def test_activities_refuse_as_non_retryable_invalid_requests(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = ActivityEnvironment()
    bad = request({"kind": "ghz", "num_qubits": 3}, execution={"backend": {"device": "qpu9"}})
    with pytest.raises(ApplicationError) as error:
        await env.run(preprocess_activity, PreprocessInput(experiment_id="x", request=bad))
    assert error.value.type == "InvalidRequest" and error.value.non_retryable
    assert "execution.backend: unknown device" in error.value.message

    good = request({"kind": "ghz", "num_qubits": 3})
    prepared = await env.run(preprocess_activity, PreprocessInput(experiment_id="y", request=good))
    monkeypatch.setenv("QLOOP_MAX_DEPTH", "1")
    with pytest.raises(ApplicationError) as error:
        await env.run(
            prevalidate_activity,
            PrevalidateInput(experiment_id="y", request=good, prepared=prepared),
        )
    assert error.value.type == "InvalidRequest" and error.value.non_retryable
    assert "too deep" in error.value.message
