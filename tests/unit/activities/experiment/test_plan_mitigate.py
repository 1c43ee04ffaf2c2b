"""plan -> execute on a noisy AerSimulator -> mitigate, on a prepared artifact built here."""

from __future__ import annotations

from pathlib import Path

import pytest
from qiskit import QuantumCircuit, qasm2, transpile
from qiskit_aer import AerSimulator
from qiskit_aer.noise import NoiseModel, ReadoutError, depolarizing_error

from activities.experiment.mitigate import mitigate
from activities.experiment.plan import BatchTooLargeError, load_qasm, plan
from activities.storage import artifact_store
from schemas.execution import Capabilities, JobResult, Tier
from schemas.pipeline import (
    ExecutionPlan,
    MeasurementBasis,
    MitigateInput,
    MitigationOutcome,
    PlanInput,
    PlannedBatch,
    PreparedCircuits,
    PreparedExperiment,
)
from schemas.request import (
    BitstringProbabilityObservable,
    ExperimentRequest,
    GhzProblem,
    MitigationSpec,
    Observable,
    PauliSumObservable,
    PauliTerm,
    ZneSpec,
)

BASIS_GATES = ["cx", "id", "rz", "sx", "x"]
LINE = [[a, b] for a in range(5) for b in range(5) if abs(a - b) == 1]
LAYOUT = [3, 2, 1]  # logical qubit i sits on physical qubit LAYOUT[i]
SHOTS = 8000
# GHZ-3: <ZZI> = <IZZ> = <XXX> = 1, so the sum is 3.
GHZ_SUM = PauliSumObservable(
    terms=[PauliTerm(pauli="ZZI"), PauliTerm(pauli="IZZ"), PauliTerm(pauli="XXX")]
)
GHZ_POPULATION = BitstringProbabilityObservable(bitstrings=["000", "111"])


@pytest.fixture(autouse=True)
def qloop_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("QLOOP_HOME", str(tmp_path))
    return tmp_path


def capabilities(max_circuits: int = 100) -> Capabilities:
    return Capabilities(
        provider="aer",
        device="line5",
        tier=Tier.NOISY_SIMULATOR,
        num_qubits=5,
        basis_gates=BASIS_GATES,
        coupling_map=[(a, b) for a, b in LINE],
        max_shots=100_000,
        max_circuits_per_job=max_circuits,
        cancellable=True,
    )


def ghz_in_basis(basis: str) -> QuantumCircuit:
    circuit = QuantumCircuit(3)
    circuit.h(0)
    circuit.cx(0, 1)
    circuit.cx(1, 2)
    for qubit, axis in enumerate(reversed(basis)):
        if axis == "X":
            circuit.h(qubit)
    return circuit


def prepare(
    experiment_id: str, observable: Observable, bases: list[str], max_circuits: int = 100
) -> PreparedExperiment:
    transpiled = [
        transpile(
            ghz_in_basis(b),
            basis_gates=BASIS_GATES,
            coupling_map=LINE,
            initial_layout=LAYOUT,
            optimization_level=1,
            seed_transpiler=0,
        )
        for b in bases
    ]
    physical = transpiled[0].layout.final_index_layout()
    assert physical == LAYOUT
    prepared = PreparedCircuits(
        logical_qasm=qasm2.dumps(ghz_in_basis("ZZZ")),
        observable=observable,
        bases=[
            MeasurementBasis(basis=b, qasm=qasm2.dumps(t))
            for b, t in zip(bases, transpiled, strict=True)
        ],
        measured_physical_qubits=physical,
    )
    return PreparedExperiment(
        artifact_uri=artifact_store.put_model(experiment_id, "prepared.json", prepared),
        capabilities=capabilities(max_circuits),
        num_qubits=3,
        transpiled_depth=max(t.depth() for t in transpiled),
        two_qubit_gate_count=2,
        measurement_bases=bases,
        logical_circuit_sha256="0" * 64,
        transpiled_circuits_sha256=["0" * 64] * len(bases),
        observable_label="test observable",
    )


def request(mitigation: MitigationSpec, seed: int = 7) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "plan-mitigate",
            "problem": GhzProblem(num_qubits=3).model_dump(),
            "execution": {"shots": SHOTS, "seed": seed},
            "mitigation": mitigation.model_dump(),
        }
    )


def noisy_simulator() -> AerSimulator:
    noise = NoiseModel(basis_gates=BASIS_GATES)
    noise.add_all_qubit_quantum_error(depolarizing_error(0.004, 1), ["sx", "x"])
    noise.add_all_qubit_quantum_error(depolarizing_error(0.04, 2), ["cx"])
    for qubit, (p10, p01) in enumerate(
        [(0.02, 0.04), (0.03, 0.06), (0.01, 0.05), (0.04, 0.08), (0.02, 0.03)]
    ):
        noise.add_readout_error(ReadoutError([[1 - p10, p10], [p01, 1 - p01]]), [qubit])
    return AerSimulator(noise_model=noise)


def execute(experiment_id: str, execution_plan: ExecutionPlan, seed: int = 1) -> str:
    planned = artifact_store.read_model(execution_plan.batch_uri, PlannedBatch)
    circuits = [load_qasm(spec.qasm) for spec in planned.batch.circuits]
    result = noisy_simulator().run(circuits, shots=SHOTS, seed_simulator=seed).result()
    job = JobResult(counts=[result.get_counts(i) for i in range(len(circuits))], shots=SHOTS)
    return artifact_store.put_model(experiment_id, "counts.json", job)


def run_pipeline(
    observable: Observable, bases: list[str], mitigation: MitigationSpec
) -> tuple[ExecutionPlan, MitigationOutcome, MitigateInput]:
    prepared = prepare("exp", observable, bases)
    experiment_request = request(mitigation)
    execution_plan = plan(
        PlanInput(experiment_id="exp", request=experiment_request, prepared=prepared)
    )
    mitigate_input = MitigateInput(
        experiment_id="exp",
        request=experiment_request,
        prepared=prepared,
        plan=execution_plan,
        counts_uri=execute("exp", execution_plan),
    )
    return execution_plan, mitigate(mitigate_input), mitigate_input


def test_plan_batches_every_basis_and_scale_plus_readout_calibration() -> None:
    prepared = prepare("exp", GHZ_SUM, ["ZZZ", "XXX"])
    mitigation = MitigationSpec(zne=ZneSpec(scale_factors=[1.0, 2.0, 3.0]), readout=True)
    execution_plan = plan(
        PlanInput(experiment_id="exp", request=request(mitigation), prepared=prepared)
    )
    planned = artifact_store.read_model(execution_plan.batch_uri, PlannedBatch)
    assert execution_plan.num_circuits == 2 * 3 + 2
    assert [(r.kind, r.basis, r.scale_factor, r.prepared_bits) for r in planned.roles] == [
        ("observable", "ZZZ", 1.0, None),
        ("observable", "ZZZ", 2.0, None),
        ("observable", "ZZZ", 3.0, None),
        ("observable", "XXX", 1.0, None),
        ("observable", "XXX", 2.0, None),
        ("observable", "XXX", 3.0, None),
        ("readout_calibration", None, None, "000"),
        ("readout_calibration", None, None, "111"),
    ]
    circuits = [load_qasm(spec.qasm) for spec in planned.batch.circuits]
    cx = [c.count_ops()["cx"] for c in circuits[:3]]
    # Global folding: scale 3 is one full fold; scale 2 folds the last few gates only.
    assert cx[0] < cx[1] <= cx[2] == 3 * cx[0]
    for circuit in circuits:
        assert set(circuit.count_ops()) <= {*BASIS_GATES, "measure"}
        measurements = [
            (circuit.find_bit(i.qubits[0]).index, circuit.find_bit(i.clbits[0]).index)
            for i in circuit.data
            if i.operation.name == "measure"
        ]
        assert measurements == [(3, 0), (2, 1), (1, 2)]
    assert circuits[-1].count_ops()["x"] == 3
    assert "x" not in circuits[-2].count_ops()
    assert len(set(execution_plan.executed_circuits_sha256)) == 8
    assert execution_plan.cost_estimate.usd == 0.0


def test_a_batch_larger_than_the_device_accepts_is_refused() -> None:
    prepared = prepare("exp", GHZ_SUM, ["ZZZ", "XXX"], max_circuits=5)
    with pytest.raises(BatchTooLargeError, match=r"8 circuits .* at most 5"):
        plan(PlanInput(experiment_id="exp", request=request(MitigationSpec()), prepared=prepared))


def test_zne_with_readout_mitigation_moves_a_pauli_sum_toward_the_ideal_value() -> None:
    ideal = 3.0
    mitigation = MitigationSpec(zne=ZneSpec(scale_factors=[1.0, 2.0, 3.0]), readout=True)
    _, outcome, _ = run_pipeline(GHZ_SUM, ["ZZZ", "XXX"], mitigation)
    assert outcome.readout_mitigated
    assert outcome.mitigated is not None
    assert abs(outcome.mitigated.value - ideal) < abs(outcome.raw.value - ideal) / 3
    for estimate in (outcome.raw, outcome.mitigated):
        assert estimate.ci_low <= estimate.value <= estimate.ci_high
    assert outcome.mitigated.ci_low <= ideal <= outcome.mitigated.ci_high
    values = [p.value for p in outcome.points]
    assert values == sorted(values, reverse=True)  # more folding, more noise
    assert all(0 < p.std_error < 0.1 for p in outcome.points)
    assert outcome.plot_uri is not None
    assert artifact_store.read_bytes(outcome.plot_uri).startswith(b"\x89PNG")
    numbers = artifact_store.read_json(outcome.artifact_uri)
    assert isinstance(numbers, dict)
    assert numbers["mitigated"] == outcome.mitigated.model_dump()
    assert len(numbers["readout_confusion"]) == 3


def test_mitigation_is_deterministic_given_the_seed() -> None:
    mitigation = MitigationSpec(
        zne=ZneSpec(
            scale_factors=[1.0, 2.0, 3.0], folding="gates_at_random", extrapolation="linear"
        ),
        readout=True,
    )
    _, first, mitigate_input = run_pipeline(GHZ_POPULATION, ["ZZZ"], mitigation)
    assert mitigate(mitigate_input) == first


def test_without_zne_readout_mitigation_alone_is_the_mitigated_value() -> None:
    _, outcome, _ = run_pipeline(GHZ_POPULATION, ["ZZZ"], MitigationSpec(zne=None, readout=True))
    assert [p.scale_factor for p in outcome.points] == [1.0]
    assert outcome.mitigated is not None
    assert outcome.mitigated.value == outcome.points[0].value
    assert outcome.mitigated.value > outcome.raw.value  # readout errors lose GHZ population
    assert outcome.plot_uri is None


def test_without_any_mitigation_only_the_raw_value_is_reported() -> None:
    execution_plan, outcome, _ = run_pipeline(
        GHZ_POPULATION, ["ZZZ"], MitigationSpec(zne=None, readout=False)
    )
    assert execution_plan.num_circuits == 1
    assert outcome.mitigated is None
    assert not outcome.readout_mitigated
    assert outcome.points[0].value == outcome.raw.value
    assert 0.5 < outcome.raw.value < 1.0


def test_scale_factors_without_one_still_run_the_unfolded_circuit_for_the_raw_value() -> None:
    mitigation = MitigationSpec(
        zne=ZneSpec(scale_factors=[2.0, 3.0], extrapolation="linear"), readout=False
    )
    execution_plan, outcome, _ = run_pipeline(GHZ_POPULATION, ["ZZZ"], mitigation)
    assert execution_plan.num_circuits == 3
    assert [p.scale_factor for p in outcome.points] == [2.0, 3.0]
    assert outcome.raw.value > outcome.points[0].value
