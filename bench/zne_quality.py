"""ZNE quality on the noisy ibm_guadalupe profile: does qloop's mitigation reduce the error, and
is it at least as good as calling mitiq directly with the same settings?

For mirror, GHZ and randomized-benchmarking circuits over several seeds it runs qloop's own
plan -> (noisy Aer) -> mitigate path, with readout mitigation off and on, and
`mitiq.zne.execute_with_zne` on the same transpiled circuit with the same folding, scale
factors, extrapolation and shots. Every observable is a bitstring population with ideal value
known exactly from the statevector. Prints a table, then median errors and ratios.

Run: python bench/zne_quality.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from statistics import median

# Runnable as a plain script from a checkout, installed or not.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import networkx as nx
from mitiq import zne as mitiq_zne
from mitiq.benchmarks import generate_ghz_circuit, generate_mirror_circuit, generate_rb_circuits
from mitiq.interface import convert_from_mitiq
from qiskit import QuantumCircuit, qasm2, transpile
from qiskit.quantum_info import Statevector
from qiskit_aer import AerSimulator

from activities.experiment.mitigate import mitigate
from activities.experiment.plan import load_qasm, measured, plan
from activities.numerics.observables import bitstring_probability
from activities.numerics.zne import make_factory, scale_method, to_device_basis
from activities.storage import artifact_store
from adapters.noise import build_noise_model
from adapters.profiles import load_profile
from adapters.registry import get_adapter
from schemas.execution import Capabilities, JobResult
from schemas.pipeline import (
    MeasurementBasis,
    MitigateInput,
    PlanInput,
    PlannedBatch,
    PreparedCircuits,
    PreparedExperiment,
)
from schemas.request import (
    BackendChoice,
    BitstringProbabilityObservable,
    ExperimentRequest,
    MitigationSpec,
    ZneSpec,
)

PROFILE = "ibm_guadalupe"
SHOTS = 8000
SEEDS = (1, 2, 3)
# qloop's default (global folding at odd integer scales, Richardson), then fractional scales, where
# global folding folds only the circuit's tail, so noise does not grow in proportion.
CONFIGS = (
    ZneSpec(),
    ZneSpec(scale_factors=[1.0, 2.0, 3.0], folding="global", extrapolation="richardson"),
)
BACKEND = BackendChoice(device="noisy", noise_profile=PROFILE)


@dataclass(frozen=True)
class Case:
    family: str
    seed: int
    circuit: QuantumCircuit  # logical, no measurements
    bitstrings: list[str]  # the observable: their total population (Qiskit order)


@dataclass(frozen=True)
class Outcome:
    case: Case
    ideal: float
    raw: float
    qloop: float
    qloop_readout: float
    mitiq: float


def cases() -> list[Case]:
    found: list[Case] = []
    for seed in SEEDS:
        mirror, _ = generate_mirror_circuit(
            nlayers=2,
            two_qubit_gate_prob=1.0,
            connectivity_graph=nx.path_graph(3),
            seed=seed,
            return_type="qiskit",
        )
        found.append(Case("mirror", seed, mirror, [most_likely(mirror)]))
        ghz = generate_ghz_circuit(2 + seed, return_type="qiskit")
        found.append(Case("ghz", seed, ghz, ["0" * (2 + seed), "1" * (2 + seed)]))
        (rb,) = generate_rb_circuits(n_qubits=2, num_cliffords=3, trials=1, seed=seed)
        rb_qiskit = convert_from_mitiq(rb, "qiskit")
        found.append(Case("rb", seed, rb_qiskit, [most_likely(rb_qiskit)]))
    return found


def most_likely(circuit: QuantumCircuit) -> str:
    """Mirror and RB circuits return one bitstring with certainty; read it off the statevector
    rather than trusting a generator's bit order."""
    probabilities = Statevector(
        circuit.remove_final_measurements(inplace=False)
    ).probabilities_dict()
    return max(probabilities, key=probabilities.__getitem__)


def ideal_value(case: Case) -> float:
    probabilities = Statevector(
        case.circuit.remove_final_measurements(inplace=False)
    ).probabilities_dict()
    return sum(probabilities.get(b, 0.0) for b in case.bitstrings)


def observable(case: Case) -> BitstringProbabilityObservable:
    return BitstringProbabilityObservable(bitstrings=case.bitstrings)


def transpiled(case: Case, capabilities: Capabilities) -> tuple[QuantumCircuit, list[int]]:
    """The circuit on the device's physical qubits and where each logical qubit ends up."""
    circuit = transpile(
        case.circuit.remove_final_measurements(inplace=False),
        basis_gates=capabilities.basis_gates,
        coupling_map=[list(edge) for edge in capabilities.coupling_map or []],
        optimization_level=1,
        seed_transpiler=case.seed,
    )
    return circuit, list(circuit.layout.final_index_layout())


def prepared_experiment(
    experiment_id: str, case: Case, capabilities: Capabilities
) -> tuple[PreparedExperiment, QuantumCircuit, list[int]]:
    physical, qubits = transpiled(case, capabilities)
    prepared = PreparedCircuits(
        logical_qasm=qasm2.dumps(case.circuit),
        observable=observable(case),
        bases=[MeasurementBasis(basis="Z" * case.circuit.num_qubits, qasm=qasm2.dumps(physical))],
        measured_physical_qubits=qubits,
    )
    experiment = PreparedExperiment(
        artifact_uri=artifact_store.put_model(experiment_id, "prepared.json", prepared),
        capabilities=capabilities,
        num_qubits=case.circuit.num_qubits,
        transpiled_depth=physical.depth(),
        two_qubit_gate_count=physical.count_ops().get("cx", 0),
        measurement_bases=["Z" * case.circuit.num_qubits],
        logical_circuit_sha256="",
        transpiled_circuits_sha256=[],
        observable_label=f"P({' or '.join(case.bitstrings)})",
    )
    return experiment, physical, qubits


def qloop_values(
    case: Case, zne: ZneSpec, capabilities: Capabilities, simulator: AerSimulator, readout: bool
) -> tuple[float, float]:
    """(raw, mitigated) from qloop's plan and mitigate activities on the noisy simulator."""
    experiment_id = f"{case.family}-{case.seed}-{zne.scale_factors}-{int(readout)}"
    prepared, _, _ = prepared_experiment(experiment_id, case, capabilities)
    request = ExperimentRequest.model_validate(
        {
            "name": "zne-quality",
            "problem": {
                "kind": "qasm",
                "qasm": qasm2.dumps(case.circuit),
                "observable": observable(case).model_dump(),
            },
            "execution": {"shots": SHOTS, "seed": case.seed, "backend": BACKEND.model_dump()},
            "mitigation": MitigationSpec(
                zne=zne, readout=readout, bootstrap_samples=100
            ).model_dump(),
        }
    )
    execution_plan = plan(
        PlanInput(experiment_id=experiment_id, request=request, prepared=prepared)
    )
    planned = artifact_store.read_model(execution_plan.batch_uri, PlannedBatch)
    circuits = [load_qasm(spec.qasm) for spec in planned.batch.circuits]
    result = simulator.run(circuits, shots=SHOTS, seed_simulator=case.seed).result()
    counts = JobResult(counts=[result.get_counts(i) for i in range(len(circuits))], shots=SHOTS)
    outcome = mitigate(
        MitigateInput(
            experiment_id=experiment_id,
            request=request,
            prepared=prepared,
            plan=execution_plan,
            counts_uri=artifact_store.put_model(experiment_id, "counts.json", counts),
        )
    )
    assert outcome.mitigated is not None
    return outcome.raw.value, outcome.mitigated.value


def mitiq_value(
    case: Case, zne: ZneSpec, capabilities: Capabilities, simulator: AerSimulator
) -> float:
    """`zne.execute_with_zne` on the same transpiled circuit, folding, factory and shots. Folded
    circuits are translated to the device gates (as qloop does) so that the noise model applies
    to every gate; no readout mitigation."""
    physical, qubits = transpiled(case, capabilities)
    seeds = iter(range(1000 * case.seed, 1000 * case.seed + 100))

    def executor(circuit: QuantumCircuit) -> float:
        (executed,) = to_device_basis([measured(circuit, qubits)], capabilities.basis_gates)
        result = simulator.run(executed, shots=SHOTS, seed_simulator=next(seeds)).result()
        return bitstring_probability(observable(case), result.get_counts())

    return float(
        mitiq_zne.execute_with_zne(
            physical,
            executor,
            factory=make_factory(zne.scale_factors, zne.extrapolation),
            scale_noise=scale_method(zne.folding, case.seed),
        )
    )


def run_case(
    case: Case, zne: ZneSpec, capabilities: Capabilities, simulator: AerSimulator
) -> Outcome:
    raw, qloop = qloop_values(case, zne, capabilities, simulator, readout=False)
    _, qloop_readout = qloop_values(case, zne, capabilities, simulator, readout=True)
    return Outcome(
        case=case,
        ideal=ideal_value(case),
        raw=raw,
        qloop=qloop,
        qloop_readout=qloop_readout,
        mitiq=mitiq_value(case, zne, capabilities, simulator),
    )


def print_table(outcomes: list[Outcome]) -> None:
    header = (
        f"{'family':<7} {'seed':>4} {'ideal':>6} {'raw':>7} {'mitiq':>7} {'qloop':>7} "
        f"{'qloop+ro':>8}   {'|raw-id|':>8} {'|mitiq-id|':>10} {'|qloop-id|':>10} {'|q+ro-id|':>9}"
    )
    print(header)
    print("-" * len(header))
    for o in outcomes:
        print(
            f"{o.case.family:<7} {o.case.seed:>4} {o.ideal:>6.3f} {o.raw:>7.4f} {o.mitiq:>7.4f} "
            f"{o.qloop:>7.4f} {o.qloop_readout:>8.4f}   {abs(o.raw - o.ideal):>8.4f} "
            f"{abs(o.mitiq - o.ideal):>10.4f} {abs(o.qloop - o.ideal):>10.4f} "
            f"{abs(o.qloop_readout - o.ideal):>9.4f}"
        )


def print_summary(outcomes: list[Outcome]) -> None:
    def errors(pick: str, subset: list[Outcome]) -> list[float]:
        return [abs(getattr(o, pick) - o.ideal) for o in subset]

    print()
    print(
        "median |error| and error-reduction vs raw (median of errors; median of per-circuit ratios)"
    )
    groups = {"all": outcomes} | {
        family: [o for o in outcomes if o.case.family == family]
        for family in ("mirror", "ghz", "rb")
    }
    for name, subset in groups.items():
        raw = errors("raw", subset)
        line = f"  {name:<6} raw {median(raw):.4f}"
        for pick, label in (
            ("mitiq", "mitiq"),
            ("qloop", "qloop"),
            ("qloop_readout", "qloop+readout"),
        ):
            mitigated = errors(pick, subset)
            per_circuit = [r / max(m, 1e-4) for r, m in zip(raw, mitigated, strict=True)]
            line += (
                f" | {label} {median(mitigated):.4f}"
                f" ({median(raw) / max(median(mitigated), 1e-4):.1f}x; {median(per_circuit):.1f}x)"
            )
        print(line)
    gap = median(abs(o.qloop - o.mitiq) for o in outcomes)
    mitiq = median(errors("mitiq", outcomes))
    print(
        f"\n  qloop (readout off) vs direct mitiq: median |qloop - mitiq| {gap:.4f}; median error "
        f"ratio qloop/mitiq {median(errors('qloop', outcomes)) / mitiq:.2f}, "
        f"qloop+readout/mitiq {median(errors('qloop_readout', outcomes)) / mitiq:.2f}"
    )


def main() -> None:
    os.environ.setdefault("QLOOP_HOME", tempfile.mkdtemp(prefix="qloop-bench-"))
    started = time.perf_counter()
    capabilities = get_adapter(BACKEND).capabilities()
    simulator = AerSimulator(noise_model=build_noise_model(load_profile(PROFILE), None))
    print(
        f"noise: {PROFILE} profile (calibrated gate, relaxation and readout errors); "
        f"{SHOTS} shots per circuit; {len(SEEDS)} seeds per family"
    )
    for zne in CONFIGS:
        print(f"\n=== ZNE: {zne.folding} folding at {zne.scale_factors}, {zne.extrapolation}\n")
        outcomes = [run_case(case, zne, capabilities, simulator) for case in cases()]
        print_table(outcomes)
        print_summary(outcomes)
    print(
        f"\nruntime {time.perf_counter() - started:.0f} s; artifacts in {os.environ['QLOOP_HOME']}"
    )


if __name__ == "__main__":
    main()
