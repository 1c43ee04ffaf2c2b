"""Admission: everything that can be checked about a request before anything starts.

The CLI calls `admit` before it starts a workflow, and preprocess calls it again inside the
workflow, so a request is refused at the door with the same message either way.

Admission bounds what a request costs before building anything (limits in schemas/limits.py):
an OpenQASM program's qubits and gates after unrolling are counted statically
(activities/numerics/qasm_cost.py) and a template's follow from its parameters; then the batch
the plan will build (measurement bases x scale factors, plus readout calibration) is checked against
every backend's circuits per job, and its gates against the batch budget. Only then is the
program parsed. A template's circuit and classical baseline are built on first use, so the CLI
admits a request without paying for them (a QAOA baseline is a search over 2^nodes cuts).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from qiskit import QuantumCircuit
from temporalio.exceptions import ApplicationError

from activities.numerics import circuits, classical
from activities.numerics.circuits import Built, CircuitError
from activities.numerics.observables import measurement_bases
from activities.numerics.qasm_cost import qasm_cost
from adapters.errors import InvalidRequestError, RejectedError
from adapters.registry import get_adapter
from schemas import error_types
from schemas.execution import Capabilities
from schemas.limits import MAX_BATCH_GATES, MAX_IDEAL_QUBITS
from schemas.report import ClassicalBaseline
from schemas.request import (
    BackendChoice,
    BitstringProbabilityObservable,
    ExperimentRequest,
    GhzProblem,
    MirrorProblem,
    Observable,
    Problem,
    QaoaMaxcutProblem,
    QasmProblem,
    executed_scale_factors,
)

# Plan adds two readout-calibration circuits to a batch: every qubit prepared 0, and 1.
READOUT_CALIBRATION_CIRCUITS = 2
# Qiskit synthesises a random two-qubit Clifford into at most 19 gates and a one-qubit one into
# at most 4 (measured over 3,000 seeds): what a mirror layer costs at most.
CLIFFORD_2Q_GATES = 19
CLIFFORD_1Q_GATES = 4


class AdmissionError(ValueError):
    """A request qloop refuses; the message starts with the field it is about."""


@dataclass(frozen=True)
class Admitted:
    """A request that passed admission. `program` is the OpenQASM program as parsed at the door;
    a template's circuit and classical baseline are built when first asked for."""

    problem: Problem
    capabilities: Capabilities
    program: QuantumCircuit | None = None

    @cached_property
    def built(self) -> tuple[Built, ClassicalBaseline | None]:
        problem = self.problem
        if isinstance(problem, QasmProblem):
            assert self.program is not None, "a QASM problem is parsed at admission"
            return Built(self.program, problem.observable), None
        if isinstance(problem, GhzProblem):
            return circuits.ghz(problem.num_qubits), _analytic("a GHZ state is 0...0 or 1...1")
        if isinstance(problem, MirrorProblem):
            built = circuits.mirror(problem.num_qubits, problem.depth, problem.seed)
            returned = built.observable
            assert isinstance(returned, BitstringProbabilityObservable)
            return built, _analytic(f"a mirror circuit returns {returned.bitstrings[0]}")
        return _qaoa(problem)

    @property
    def circuit(self) -> QuantumCircuit:
        return self.built[0].circuit

    @property
    def observable(self) -> Observable:
        return self.built[0].observable

    @property
    def classical_baseline(self) -> ClassicalBaseline | None:
        return self.built[1]


@dataclass(frozen=True)
class StaticSize:
    """What a problem costs, known without building it: its width, its logical gates (an upper
    estimate for templates) and the measurement bases its observable needs."""

    qubits: int
    gates: int
    bases: int


def admit(request: ExperimentRequest) -> Admitted:
    """Check the request's cost, the program and every backend; build nothing expensive."""
    size = _static_size(request.problem)
    if size.qubits > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"problem: the circuit has {size.qubits} qubits; qloop simulates the ideal reference "
            f"exactly and allows at most {MAX_IDEAL_QUBITS}"
        )
    program = None
    if isinstance(request.problem, QasmProblem):
        program = _parse(request.problem)
        _check_observable_width(request.problem, program.num_qubits)
    _check_batch_gates(request, size)
    capabilities = _check_backend(request.execution.backend, "execution.backend", size, request)
    for index, fallback in enumerate(request.execution.fallback):
        if isinstance(fallback, BackendChoice):
            _check_backend(fallback, f"execution.fallback[{index}]", size, request)
    return Admitted(problem=request.problem, capabilities=capabilities, program=program)


def invalid_request(error: ValueError) -> ApplicationError:
    """The Temporal form of a refusal: never retried, its message shown as is."""
    return ApplicationError(str(error), type=error_types.INVALID_REQUEST, non_retryable=True)


def _static_size(problem: Problem) -> StaticSize:
    if isinstance(problem, QasmProblem):
        try:
            cost = qasm_cost(problem.qasm)
        except CircuitError as error:
            raise AdmissionError(f"problem.qasm: {error}") from None
        return StaticSize(cost.qubits, cost.gates, len(measurement_bases(problem.observable)))
    if isinstance(problem, GhzProblem):
        return StaticSize(problem.num_qubits, problem.num_qubits, 1)
    if isinstance(problem, MirrorProblem):
        n = problem.num_qubits
        layer = (n // 2) * CLIFFORD_2Q_GATES + (n % 2) * CLIFFORD_1Q_GATES
        return StaticSize(n, 2 * problem.depth * layer + n, 1)
    _check_qaoa(problem)
    graph = problem.graph
    gates = graph.nodes + problem.layers * (len(graph.edges) + graph.nodes)
    return StaticSize(graph.nodes, gates, len(measurement_bases(circuits.maxcut_observable(graph))))


def _parse(problem: QasmProblem) -> QuantumCircuit:
    try:
        return circuits.to_logical(circuits.parse_qasm(problem.qasm))
    except CircuitError as error:
        raise AdmissionError(f"problem.qasm: {error}") from None


def _check_observable_width(problem: QasmProblem, width: int) -> None:
    if problem.observable.num_qubits != width:
        raise AdmissionError(
            f"problem.observable: acts on {problem.observable.num_qubits} qubits but the circuit "
            f"has {width}; give one Pauli character or bit per qubit (rightmost = qubit 0)"
        )


def _check_qaoa(problem: QaoaMaxcutProblem) -> None:
    nodes = problem.graph.nodes
    if nodes > classical.MAX_BRUTE_FORCE_NODES:
        raise AdmissionError(
            f"problem.graph.nodes: {nodes} nodes; the brute-force MaxCut baseline allows "
            f"at most {classical.MAX_BRUTE_FORCE_NODES}"
        )
    if problem.gammas is None and nodes > classical.MAX_ANGLE_SEARCH_NODES:
        raise AdmissionError(
            f"problem.gammas: qloop chooses QAOA angles classically for graphs of at most "
            f"{classical.MAX_ANGLE_SEARCH_NODES} nodes; give gammas and betas for {nodes} nodes"
        )


def _check_batch_gates(request: ExperimentRequest, size: StaticSize) -> None:
    scales = executed_scale_factors(request.mitigation.zne)
    total = round(size.gates * size.bases * sum(scales))
    if total > MAX_BATCH_GATES:
        field = "mitigation.zne.scale_factors" if request.mitigation.zne else "problem"
        raise AdmissionError(
            f"{field}: the batch would hold about {total:,} gates ({size.gates:,} gates x "
            f"{_bases(size.bases)} x {sum(scales):g}, the sum of the scale factors "
            f"{', '.join(f'{s:g}' for s in scales)}); the limit is {MAX_BATCH_GATES:,}"
        )


def _bases(count: int) -> str:
    return f"{count:,} measurement {'basis' if count == 1 else 'bases'}"


def _analytic(detail: str) -> ClassicalBaseline:
    return ClassicalBaseline(method="analytic", value=1.0, detail=detail)


def _qaoa(problem: QaoaMaxcutProblem) -> tuple[Built, ClassicalBaseline]:
    graph = problem.graph
    gammas, betas = problem.gammas, problem.betas
    if gammas is None or betas is None:
        gammas, betas = classical.optimise_qaoa_angles(graph, problem.layers)
    optimum = classical.max_cut(graph)
    baseline = ClassicalBaseline(
        method="brute_force_maxcut",
        value=optimum.value,
        detail=f"optimal partition {optimum.bitstring} (node 0 rightmost) of 2^{graph.nodes} cuts",
    )
    return circuits.qaoa_maxcut(graph, gammas, betas), baseline


def _check_backend(
    choice: BackendChoice, field: str, size: StaticSize, request: ExperimentRequest
) -> Capabilities:
    name = f"{choice.provider}/{choice.device}"
    try:
        capabilities = get_adapter(choice).capabilities()
    except (InvalidRequestError, RejectedError) as error:
        raise AdmissionError(f"{field}: {error.message}") from None
    if capabilities.status != "ONLINE":
        raise AdmissionError(
            f"{field}: {name} is {capabilities.status}; only an ONLINE device accepts work "
            "(choose another device, or try again later)"
        )
    if size.qubits > capabilities.num_qubits:
        raise AdmissionError(
            f"{field}: the circuit needs {size.qubits} qubits but {name} has "
            f"{capabilities.num_qubits}"
        )
    if request.execution.shots > capabilities.max_shots:
        raise AdmissionError(
            f"execution.shots: {request.execution.shots} exceeds the maximum of "
            f"{capabilities.max_shots} on {name}"
        )
    scales = len(executed_scale_factors(request.mitigation.zne))
    readout = READOUT_CALIBRATION_CIRCUITS if request.mitigation.readout else 0
    needed = size.bases * scales + readout
    if needed > capabilities.max_circuits_per_job:
        calibration = f" + {readout} readout calibration circuits" if readout else ""
        raise AdmissionError(
            f"{field}: the batch needs {needed:,} circuits ({_bases(size.bases)} x "
            f"{scales} scale factors{calibration}) but {name} takes at most "
            f"{capabilities.max_circuits_per_job:,} per job; use fewer scale factors or a Pauli "
            "sum with fewer measurement bases"
        )
    return capabilities
