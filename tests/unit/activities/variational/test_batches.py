"""Parameterized batches end to end without Temporal: the execution plane's templates (Aer's
parameter_binds, Braket's expansion), the batch activities' functions on real Aer, template
folding, fingerprints and the sizes a sweep plans with."""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from qiskit import QuantumCircuit, qasm2, qasm3
from qiskit.circuit import Parameter
from qiskit.quantum_info import Operator

from activities.experiment.admission import AdmissionError
from activities.experiment.plan import BatchTooLargeError
from activities.numerics.observables import expectation, standard_error
from activities.providers import provider_calls
from activities.storage import artifact_store
from activities.variational import batch_scoring
from activities.variational.batch_preparation import BatchPlan, fold_template, prepare_batch
from activities.variational.batch_scoring import score_batch
from activities.variational.batch_sizes import (
    admit_family,
    circuits_per_point,
    max_points_per_batch,
)
from activities.variational.classical_reference import classical_reference
from activities.variational.point_fingerprints import point_fingerprint
from adapters.aer import AerAdapter
from adapters.braket_local import BraketLocalAdapter
from adapters.errors import InvalidRequestError
from adapters.job_limits import MAX_CIRCUITS_PER_JOB
from adapters.pricing import estimate_cost, price_table
from adapters.registry import get_adapter
from schemas.execution import CircuitBatch, CircuitSpec, JobResult, JobState
from schemas.pipeline import FetchInput, JobInput, SubmitInput
from schemas.request import BackendChoice, Graph
from schemas.variational import (
    BatchInput,
    EvaluationSpec,
    Point,
    QaoaFamily,
    ReferenceInput,
    ScoredBatch,
    ScoreInput,
    VqeFamily,
)
from tests.unit.activities.numerics.test_families import GRAPH, h2_family

NOISY = BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe")
QPU_ARN = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"
# A value within this many standard errors of the exact one is right (two-sided, p ~ 6e-5).
Z_LIMIT = 4.0


# --- helpers -------------------------------------------------------------------------------


def template_spec(points: Sequence[Point], name: str = "tpl") -> CircuitSpec:
    """RY(a) on qubit 0, RX(b) on qubit 1, CX, measured: an OpenQASM 3 template."""
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(2, 2)
    circuit.ry(a, 0)
    circuit.rx(b, 1)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    return CircuitSpec(
        name=name,
        qasm=qasm3.dumps(circuit),
        num_qubits=2,
        num_clbits=2,
        parameters=["a", "b"],
        bindings=[list(p) for p in points],
    )


def bound_spec(point: Point, name: str) -> CircuitSpec:
    """The template at one point as a plain OpenQASM 2 circuit."""
    circuit = QuantumCircuit(2, 2)
    circuit.ry(point[0], 0)
    circuit.rx(point[1], 1)
    circuit.cx(0, 1)
    circuit.measure([0, 1], [0, 1])
    return CircuitSpec(name=name, qasm=qasm2.dumps(circuit), num_qubits=2, num_clbits=2)


def x_on_qubit_0() -> CircuitSpec:
    circuit = QuantumCircuit(3, 3)
    circuit.x(0)
    circuit.measure([0, 1, 2], [0, 1, 2])
    return CircuitSpec(name="x0", qasm=qasm2.dumps(circuit), num_qubits=3, num_clbits=3)


def run_on(adapter: AerAdapter | BraketLocalAdapter, batch: CircuitBatch, shots: int) -> JobResult:
    job = adapter.submit(batch, shots, f"tok-{uuid.uuid4().hex[:12]}", seed=5)
    deadline = time.monotonic() + 120
    while not (state := adapter.status(job).state).is_final:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert state is JobState.DONE, adapter.status(job).message
    return adapter.result(job)


def evaluate(batch: BatchInput) -> ScoredBatch:
    """prepare → submit → poll → fetch → score, through the same functions the activities wrap."""
    prepared = prepare_batch(batch)
    backend = batch.evaluation.backend
    job = provider_calls.submit(
        SubmitInput(
            backend=backend,
            batch_uri=prepared.batch_uri,
            shots=batch.evaluation.shots,
            seed=batch.evaluation.seed,
            client_token=f"test-{uuid.uuid4().hex[:12]}",
        )
    )
    deadline = time.monotonic() + 120
    while not provider_calls.check_job(JobInput(backend=backend, job=job)).state.is_final:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    fetched = provider_calls.fetch_result(
        FetchInput(experiment_id=batch.artifact_folder, backend=backend, job=job)
    )
    return score_batch(ScoreInput(batch=batch, prepared=prepared, counts_uri=fetched.counts_uri))


def qaoa_batch(points: list[Point], **evaluation: object) -> BatchInput:
    return BatchInput(
        owner_id="test",
        label=f"b-{uuid.uuid4().hex[:6]}",
        family=QaoaFamily(graph=GRAPH, layers=1),
        points=points,
        evaluation=EvaluationSpec.model_validate({"shots": 20_000, "seed": 7, **evaluation}),
    )


def vqe_batch(points: list[Point], **evaluation: object) -> BatchInput:
    return BatchInput(
        owner_id="test",
        label=f"b-{uuid.uuid4().hex[:6]}",
        family=h2_family(),
        points=points,
        evaluation=EvaluationSpec.model_validate({"shots": 20_000, "seed": 7, **evaluation}),
    )


def assert_within_std_errors(scored: ScoredBatch, exact: list[float]) -> None:
    for value, truth in zip(scored.values, exact, strict=True):
        assert value.std_error > 0
        z = (value.value - truth) / value.std_error
        assert abs(z) < Z_LIMIT, f"{value.value} ± {value.std_error} vs exact {truth}"


# --- the contract --------------------------------------------------------------------------


def test_a_spec_counts_its_bindings_and_a_plain_one_counts_once() -> None:
    batch = CircuitBatch(circuits=[template_spec([[0, 0], [1, 1], [2, 2]]), x_on_qubit_0()])
    assert [spec.num_executions for spec in batch.circuits] == [3, 1]
    assert batch.num_executions == 4


def test_a_batch_without_parameters_keeps_its_old_identity() -> None:
    """Local jobs and Braket task records fingerprint the batch: a batch written before
    templates existed must fingerprint as it did, or a retried submit would be refused."""
    spec = x_on_qubit_0()
    batch = CircuitBatch(circuits=[spec])
    assert batch.identity() == {
        "circuits": [{"name": "x0", "qasm": spec.qasm, "num_qubits": 3, "num_clbits": 3}]
    }


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"parameters": ["a", "b"], "bindings": [[1.0]]}, "binding 0 .* has 1 values"),
        ({"parameters": ["a", "b"]}, "has parameters but no bindings"),
        ({"bindings": [[1.0]]}, "has bindings but no parameters"),
        ({"parameters": ["a", "a"], "bindings": [[1.0, 2.0]]}, "names a parameter twice"),
        ({"parameters": ["a"], "bindings": [[math.nan]]}, "not finite"),
    ],
)
def test_invalid_bindings_are_refused(fields: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        CircuitSpec(name="t", qasm="", num_qubits=1, num_clbits=1, **fields)


# --- Aer -----------------------------------------------------------------------------------


def test_aer_parameter_binds_give_exactly_the_counts_of_bound_circuits() -> None:
    """Same seed: the template with N bindings returns the counts of its N bound circuits run
    one by one, in binding order (Aer seeds the k-th executed circuit alike either way)."""
    points = np.random.default_rng(1).uniform(0, math.pi, size=(6, 2)).tolist()
    adapter = AerAdapter()
    templated = run_on(adapter, CircuitBatch(circuits=[template_spec(points)]), 500)
    bound = run_on(
        adapter,
        CircuitBatch(circuits=[bound_spec(p, f"p{i}") for i, p in enumerate(points)]),
        500,
    )
    assert templated.counts == bound.counts
    assert len({tuple(sorted(c.items())) for c in templated.counts}) == len(points)


def test_results_are_template_major_in_binding_order_and_canonical() -> None:
    """[template (2 bindings), plain circuit, template (1 binding)]: four results in that order;
    X on qubit 0 of 3 reads "001"."""
    batch = CircuitBatch(
        circuits=[
            template_spec([[0.0, 0.0], [math.pi, 0.0]], "first"),
            x_on_qubit_0(),
            template_spec([[0.0, math.pi]], "second"),
        ]
    )
    result = run_on(AerAdapter(), batch, 200)
    assert result.counts == [{"00": 200}, {"11": 200}, {"001": 200}, {"10": 200}]


def test_noisy_aer_runs_a_template_mapped_by_prepare_batch() -> None:
    batch = qaoa_batch([[0.4, 0.3], [0.1, 1.2]], backend=NOISY.model_dump(), shots=2000)
    prepared = prepare_batch(batch)
    plan = artifact_store.read_model(prepared.batch_uri, BatchPlan)
    (template,) = plan.batch.circuits
    assert template.num_qubits == 16  # laid out on the device
    result = run_on(AerAdapter("noisy", "ibm_guadalupe"), plan.batch, 2000)
    assert len(result.counts) == 2
    assert all(sum(c.values()) == 2000 for c in result.counts)


def test_every_binding_counts_against_the_circuits_per_job() -> None:
    points = [[0.1, 0.2]] * (MAX_CIRCUITS_PER_JOB + 1)
    with pytest.raises(InvalidRequestError, match=f"got {MAX_CIRCUITS_PER_JOB + 1}"):
        AerAdapter().submit(CircuitBatch(circuits=[template_spec(points)]), 10, "too-many", 1)


def test_a_template_input_without_a_value_is_invalid() -> None:
    spec = template_spec([[0.1, 0.2]]).model_copy(update={"parameters": ["a", "c"]})
    with pytest.raises(InvalidRequestError, match=r"declares inputs \['b'\]"):
        AerAdapter().submit(CircuitBatch(circuits=[spec]), 10, "unbound", 1)


# --- Braket --------------------------------------------------------------------------------


def test_braket_local_runs_a_parameterized_batch() -> None:
    """Each binding becomes its own Braket circuit; the counts match the bound circuits'."""
    points = [[0.0, 0.0], [math.pi, 0.0], [0.0, math.pi], [math.pi / 2, 0.0]]
    batch = CircuitBatch(circuits=[template_spec(points), x_on_qubit_0()])
    result = run_on(BraketLocalAdapter("braket_sv"), batch, 4000)
    assert result.counts[:3] == [{"00": 4000}, {"11": 4000}, {"10": 4000}]
    half = result.counts[3]
    assert set(half) == {"00", "11"} and abs(half["00"] - 2000) < 4 * math.sqrt(1000)
    assert result.counts[4] == {"001": 4000}


def test_braket_cost_counts_every_bound_circuit_as_a_task() -> None:
    price = price_table().price_for(QPU_ARN)
    three = CircuitBatch(circuits=[template_spec([[0.1, 0.2]] * 3)])
    one = CircuitBatch(circuits=[template_spec([[0.1, 0.2]])])
    assert estimate_cost(price, three, 100).usd == pytest.approx(
        3 * estimate_cost(price, one, 100).usd
    )
    assert estimate_cost(price, one, 100).usd == pytest.approx(0.30 + 100 * 0.0009)


# --- prepare and score on ideal Aer ----------------------------------------------------------


def test_qaoa_values_agree_with_the_exact_statevector() -> None:
    points = np.random.default_rng(2).uniform(-1.2, 1.2, size=(6, 2)).tolist()
    batch = qaoa_batch(points)
    scored = evaluate(batch)
    exact = classical_reference(ReferenceInput(family=batch.family, points=points)).exact_values
    assert [v.parameters for v in scored.values] == points
    assert all(v.value == v.raw for v in scored.values)
    assert_within_std_errors(scored, exact)
    assert scored.actual_cost.usd == 0.0


def test_h2_values_agree_with_the_exact_statevector_over_two_bases() -> None:
    points = np.random.default_rng(4).uniform(-1.0, 1.0, size=(5, 4)).tolist()
    batch = vqe_batch(points)
    prepared = prepare_batch(batch)
    plan = artifact_store.read_model(prepared.batch_uri, BatchPlan)
    assert plan.bases == ["ZZ", "XX"]
    assert (
        prepared.num_circuits
        == 2 * len(points)
        == circuits_per_point(batch.family, batch.evaluation) * len(points)
    )
    scored = evaluate(batch)
    exact = classical_reference(ReferenceInput(family=batch.family, points=points)).exact_values
    assert_within_std_errors(scored, exact)


@pytest.mark.parametrize("gather_elements", [None, 8], ids=["one-chunk", "term-by-term"])
def test_value_and_standard_error_are_those_of_the_experiment_pipeline(
    gather_elements: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """score_batch's value and error agree with the experiment pipeline's expectation and
    standard_error on the same counts, also when the terms are gathered in small chunks."""
    if gather_elements is not None:
        monkeypatch.setattr(batch_scoring, "_GATHER_ELEMENTS", gather_elements)
    batch = vqe_batch([[0.3, -0.2, 0.5, 0.1]], shots=3000)
    scored = evaluate(batch)
    counts_url = artifact_store.url_of(batch.artifact_folder, "counts.json")
    counts = artifact_store.read_model(counts_url, JobResult).counts
    by_basis = {"ZZ": counts[0], "XX": counts[1]}
    hamiltonian = h2_family().hamiltonian
    assert scored.values[0].value == pytest.approx(expectation(hamiltonian, by_basis), rel=1e-12)
    assert scored.values[0].std_error == pytest.approx(
        standard_error(hamiltonian, by_basis), rel=1e-9
    )


def test_zne_and_readout_bring_noisy_values_closer_to_the_exact_ones() -> None:
    """QAOA p=2 under ibm_guadalupe noise, fixed seeds (so deterministic): the mitigated values
    are several times closer to the exact ones than the raw values (3.0x to 4.4x over seeds
    1, 2, 3 and 7; ZNE keeps a residual bias on a circuit this deep, so no error-bar check)."""
    family = QaoaFamily(graph=GRAPH, layers=2)
    points = np.random.default_rng(5).uniform(-1.0, 1.0, size=(4, 4)).tolist()
    evaluation = {"shots": 20_000, "seed": 7, "backend": NOISY.model_dump()}
    batch = BatchInput(
        owner_id="test",
        label="zne",
        family=family,
        points=points,
        evaluation=EvaluationSpec.model_validate(
            {**evaluation, "zne": {"scale_factors": [1, 3, 5]}, "readout": True}
        ),
    )
    scored = evaluate(batch)
    exact = classical_reference(ReferenceInput(family=family, points=points)).exact_values
    raw_error = np.mean([abs(v.raw - e) for v, e in zip(scored.values, exact, strict=True)])
    mitigated_error = np.mean([abs(v.value - e) for v, e in zip(scored.values, exact, strict=True)])
    assert mitigated_error < raw_error / 2
    record = artifact_store.read_json(scored.artifact_uri)
    assert isinstance(record, dict) and record["readout_mitigated"] is True
    assert [s["scale_factor"] for s in record["points"][0]["scaled"]] == [1.0, 3.0, 5.0]


def test_readout_correction_alone_is_unbiased_on_a_shallow_circuit() -> None:
    """H2's two-qubit ansatz under ibm_guadalupe noise: readout error dominates, so the
    readout-corrected values agree with the exact ones within their error bars."""
    points = np.random.default_rng(5).uniform(-1.0, 1.0, size=(4, 4)).tolist()
    scored = evaluate(vqe_batch(points, backend=NOISY.model_dump(), readout=True))
    exact = classical_reference(ReferenceInput(family=h2_family(), points=points)).exact_values
    assert_within_std_errors(scored, exact)
    assert any(
        abs(v.raw - e) > Z_LIMIT * v.std_error for v, e in zip(scored.values, exact, strict=True)
    )


def test_zne_on_the_ideal_simulator_changes_nothing_but_the_error_bar() -> None:
    points = [[0.7, 0.2]]
    scored = evaluate(qaoa_batch(points, zne={"scale_factors": [1, 3]}))
    exact = classical_reference(ReferenceInput(family=QaoaFamily(graph=GRAPH), points=points))
    assert_within_std_errors(scored, exact.exact_values)
    assert scored.values[0].std_error > 0


def test_a_batch_larger_than_a_job_is_refused_with_the_points_that_fit() -> None:
    batch = vqe_batch([[0.0] * 4] * 300, zne={"scale_factors": [1, 3]})
    # 2 bases x 2 scale factors per point: 125 points fill Aer's 500 circuits.
    assert max_points_per_batch(batch.family, batch.evaluation, MAX_CIRCUITS_PER_JOB) == 125
    with pytest.raises(BatchTooLargeError, match="use at most 125 points per batch"):
        prepare_batch(batch)


def test_readout_calibration_takes_room_from_the_points() -> None:
    evaluation = EvaluationSpec(readout=True)
    assert max_points_per_batch(h2_family(), evaluation, MAX_CIRCUITS_PER_JOB) == 249


@pytest.mark.parametrize(
    ("make_batch", "message"),
    [
        (lambda: qaoa_batch([[0.1, 0.2, 0.3]]), r"points\[0\]: has 3 values; the family takes 2"),
        (lambda: qaoa_batch([]), "at least one point"),
    ],
)
def test_invalid_batches_are_refused_before_anything_runs(
    make_batch: Callable[[], BatchInput], message: str, qloop_home: Path
) -> None:
    with pytest.raises(AdmissionError, match=message):
        prepare_batch(make_batch())
    assert not list((qloop_home / "artifacts").glob("*/batch.json"))


def test_shots_above_the_backend_maximum_are_refused() -> None:
    batch = qaoa_batch([[0.1, 0.2]], backend={"provider": "braket", "device": "braket_sv"})
    # model_copy skips EvaluationSpec's own limit (1,000,000), as a device with a lower maximum
    # than the request schema's (a QPU: 100,000) would let through.
    too_many = batch.evaluation.model_copy(update={"shots": 2_000_000})
    with pytest.raises(AdmissionError, match=r"evaluation\.shots: 2000000 exceeds the maximum"):
        admit_family(batch.family, too_many)


def test_a_family_wider_than_the_device_is_refused() -> None:
    wide = Graph.model_validate({"nodes": 17, "edges": [{"u": i, "v": i + 1} for i in range(16)]})
    with pytest.raises(AdmissionError, match="needs 17 qubits but aer/noisy has 16"):
        admit_family(QaoaFamily(graph=wide), EvaluationSpec(backend=NOISY))


# --- folding templates -----------------------------------------------------------------------


def folding_template() -> QuantumCircuit:
    a, b = Parameter("a"), Parameter("b")
    circuit = QuantumCircuit(2)
    circuit.h(0)
    circuit.ry(a, 0)
    circuit.cx(0, 1)
    circuit.rz(2 * b + a, 1)
    circuit.sx(1)
    return circuit


@pytest.mark.parametrize(
    "method", ["global", "gates_at_random", "gates_from_left", "gates_from_right"]
)
@pytest.mark.parametrize("scale", [1.0, 2.0, 3.0, 5.0])
def test_a_folded_template_is_the_same_unitary_with_scaled_gate_count(
    method: str, scale: float
) -> None:
    template = folding_template()
    folded = fold_template(template, scale, method, seed=3)  # type: ignore[arg-type]
    assert set(folded.parameters) == set(template.parameters)
    values = {p: v for p, v in zip(template.parameters, [0.37, -1.1], strict=True)}
    assert Operator(folded.assign_parameters(values)).equiv(
        Operator(template.assign_parameters(values))
    )
    gates = len(template.data)
    assert len(folded.data) == pytest.approx(scale * gates, abs=1.0)
    if scale.is_integer() and int(scale) % 2 == 1:
        assert len(folded.data) == scale * gates


def test_local_folding_from_the_left_folds_the_first_gates() -> None:
    template = folding_template()
    folded = fold_template(template, 1.8, "gates_from_left", seed=0)
    names = [inst.operation.name for inst in folded.data]
    assert names[:6] == ["h", "h", "h", "ry", "ry", "ry"]
    assert names[-1] == "sx" and names[-2] != "sxdg"


def test_random_folding_depends_on_the_seed_only() -> None:
    template = folding_template()

    def picked(seed: int) -> list[str]:
        return [
            i.operation.name for i in fold_template(template, 2.0, "gates_at_random", seed).data
        ]

    assert picked(1) == picked(1)
    assert any(picked(1) != picked(seed) for seed in range(2, 8))


def test_a_scale_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match=">= 1"):
        fold_template(folding_template(), 0.5, "global", seed=0)


# --- fingerprints ----------------------------------------------------------------------------


def base_fingerprint_inputs() -> tuple[QaoaFamily, Point, EvaluationSpec]:
    return QaoaFamily(graph=GRAPH, layers=1), [0.25, 1.5], EvaluationSpec(shots=1000, seed=3)


def test_fingerprints_are_stable() -> None:
    family, point, evaluation = base_fingerprint_inputs()
    first = point_fingerprint(family, point, evaluation)
    again = point_fingerprint(
        QaoaFamily.model_validate(family.model_dump()),
        list(point),
        EvaluationSpec.model_validate(evaluation.model_dump()),
    )
    assert first == again
    assert len(first) == 64 and int(first, 16) >= 0
    # Float noise far below anything a circuit resolves is the same point.
    assert point_fingerprint(family, [0.25 + 1e-15, 1.5], evaluation) == first
    assert point_fingerprint(family, [0.1 + 0.2, 1.5], evaluation) == point_fingerprint(
        family, [0.3, 1.5], evaluation
    )
    assert point_fingerprint(family, [-0.0, 1.5], evaluation) == point_fingerprint(
        family, [0.0, 1.5], evaluation
    )


def test_fingerprints_change_with_every_field() -> None:
    family, point, evaluation = base_fingerprint_inputs()
    base = point_fingerprint(family, point, evaluation)
    heavier = GRAPH.model_copy(
        update={"edges": [GRAPH.edges[0].model_copy(update={"weight": 1.1}), *GRAPH.edges[1:]]}
    )
    variants = {
        "family graph": point_fingerprint(QaoaFamily(graph=heavier), point, evaluation),
        "family layers": point_fingerprint(
            QaoaFamily(graph=GRAPH, layers=2), [*point, *point], evaluation
        ),
        "family kind": point_fingerprint(h2_family(), [0.25, 1.5, 0, 0], evaluation),
        "parameter": point_fingerprint(family, [0.25, 1.5 + 1e-9], evaluation),
        "parameter order": point_fingerprint(family, [1.5, 0.25], evaluation),
        "backend": point_fingerprint(
            family, point, evaluation.model_copy(update={"backend": NOISY})
        ),
        "shots": point_fingerprint(family, point, evaluation.model_copy(update={"shots": 1001})),
        "seed": point_fingerprint(family, point, evaluation.model_copy(update={"seed": 4})),
        "zne": point_fingerprint(
            family,
            point,
            EvaluationSpec.model_validate(
                {**evaluation.model_dump(), "zne": {"scale_factors": [1, 3]}}
            ),
        ),
        "zne scale factors": point_fingerprint(
            family,
            point,
            EvaluationSpec.model_validate(
                {**evaluation.model_dump(), "zne": {"scale_factors": [1, 3, 5]}}
            ),
        ),
        "readout": point_fingerprint(
            family, point, evaluation.model_copy(update={"readout": True})
        ),
    }
    assert base not in variants.values()
    assert len(set(variants.values())) == len(variants)


def test_prepare_batch_gives_each_point_its_fingerprint() -> None:
    points = [[0.1, 0.2], [0.3, 0.4], [0.1, 0.2]]
    batch = qaoa_batch(points)
    prepared = prepare_batch(batch)
    assert prepared.fingerprints == [
        point_fingerprint(batch.family, p, batch.evaluation) for p in points
    ]
    assert prepared.fingerprints[0] == prepared.fingerprints[2] != prepared.fingerprints[1]


def test_the_adapter_registry_serves_prepared_batches_to_submit() -> None:
    """The batch artifact is a PlannedBatch: the existing submit activity reads it as is."""
    batch = vqe_batch([[0.0] * 4], readout=True)
    prepared = prepare_batch(batch)
    plan = artifact_store.read_model(prepared.batch_uri, BatchPlan)
    assert [role.kind for role in plan.roles] == [
        "observable",
        "observable",
        "readout_calibration",
        "readout_calibration",
    ]
    assert [spec.parameters for spec in plan.batch.circuits[2:]] == [[], []]
    assert prepared.num_circuits == 4
    assert get_adapter(batch.evaluation.backend).capabilities().provider == "aer"


def test_a_vqe_family_with_a_single_qubit_runs() -> None:
    family = VqeFamily.model_validate(
        {"hamiltonian": {"terms": [{"pauli": "Z", "coefficient": 1.0}]}, "ansatz": {"reps": 1}}
    )
    batch = BatchInput(
        owner_id="test",
        label="one-qubit",
        family=family,
        points=[[0.0, math.pi], [math.pi / 2, 0.0]],
        evaluation=EvaluationSpec(shots=4000, seed=2),
    )
    scored = evaluate(batch)
    assert scored.values[0].value == pytest.approx(-1.0)
    assert abs(scored.values[1].value) < Z_LIMIT * scored.values[1].std_error
