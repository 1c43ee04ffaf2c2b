"""Admission: everything that can be checked about a request before anything starts.

The CLI calls `admit` before it starts a workflow, and preprocess calls it again inside the
workflow, so a request is refused at the door with the same message either way.
"""

from __future__ import annotations

from dataclasses import dataclass

from qiskit import QuantumCircuit
from temporalio.exceptions import ApplicationError

from activities import circuits, classical
from activities.circuits import Built, CircuitError
from adapters.errors import InvalidRequestError, RejectedError
from adapters.registry import get_adapter
from schemas.execution import Capabilities
from schemas.report import ClassicalBaseline
from schemas.request import (
    BackendChoice,
    ExperimentRequest,
    GhzProblem,
    MirrorProblem,
    Observable,
    QaoaMaxcutProblem,
    QasmProblem,
)

INVALID_REQUEST = "InvalidRequest"
# The ideal reference is an exact statevector: 2^24 amplitudes (256 MiB) is the most a worker
# should hold for one experiment.
MAX_IDEAL_QUBITS = 24


class AdmissionError(ValueError):
    """A request qloop refuses; the message starts with the field it is about."""


@dataclass(frozen=True)
class Admitted:
    circuit: QuantumCircuit
    observable: Observable
    classical_baseline: ClassicalBaseline | None
    capabilities: Capabilities


def admit(request: ExperimentRequest) -> Admitted:
    """Build the logical circuit and check it against the observable and every backend."""
    built, baseline = _build(request)
    width = built.circuit.num_qubits
    if built.observable.num_qubits != width:
        raise AdmissionError(
            f"problem.observable: acts on {built.observable.num_qubits} qubits but the circuit "
            f"has {width}; give one Pauli character or bit per qubit (rightmost = qubit 0)"
        )
    if width > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"problem: the circuit has {width} qubits; qloop simulates the ideal reference "
            f"exactly and allows at most {MAX_IDEAL_QUBITS}"
        )
    capabilities = _check_backend(request.execution.backend, "execution.backend", width, request)
    for index, fallback in enumerate(request.execution.fallback):
        if isinstance(fallback, BackendChoice):
            _check_backend(fallback, f"execution.fallback[{index}]", width, request)
    return Admitted(built.circuit, built.observable, baseline, capabilities)


def invalid_request(error: ValueError) -> ApplicationError:
    """The Temporal form of a refusal: never retried, its message shown as is."""
    return ApplicationError(str(error), type=INVALID_REQUEST, non_retryable=True)


def _build(request: ExperimentRequest) -> tuple[Built, ClassicalBaseline | None]:
    problem = request.problem
    if isinstance(problem, QasmProblem):
        return _from_qasm(problem), None
    if isinstance(problem, GhzProblem):
        return circuits.ghz(problem.num_qubits), _analytic("a GHZ state is 0...0 or 1...1")
    if isinstance(problem, MirrorProblem):
        built = circuits.mirror(problem.num_qubits, problem.depth, problem.seed)
        return built, _analytic(f"a mirror circuit returns {built.observable.bitstrings[0]}")
    return _qaoa(problem)


def _from_qasm(problem: QasmProblem) -> Built:
    try:
        circuit = circuits.to_logical(circuits.parse_qasm(problem.qasm))
    except CircuitError as error:
        raise AdmissionError(f"problem.qasm: {error}") from None
    return Built(circuit, problem.observable)


def _analytic(detail: str) -> ClassicalBaseline:
    return ClassicalBaseline(method="analytic", value=1.0, detail=detail)


def _qaoa(problem: QaoaMaxcutProblem) -> tuple[Built, ClassicalBaseline]:
    graph = problem.graph
    if graph.nodes > classical.MAX_BRUTE_FORCE_NODES:
        raise AdmissionError(
            f"problem.graph.nodes: {graph.nodes} nodes; the brute-force MaxCut baseline allows "
            f"at most {classical.MAX_BRUTE_FORCE_NODES}"
        )
    gammas, betas = problem.gammas, problem.betas
    if gammas is None or betas is None:
        if graph.nodes > classical.MAX_ANGLE_SEARCH_NODES:
            raise AdmissionError(
                f"problem.gammas: qloop chooses QAOA angles classically for graphs of at most "
                f"{classical.MAX_ANGLE_SEARCH_NODES} nodes; give gammas and betas for "
                f"{graph.nodes} nodes"
            )
        gammas, betas = classical.optimise_qaoa_angles(graph, problem.layers)
    optimum = classical.max_cut(graph)
    baseline = ClassicalBaseline(
        method="brute_force_maxcut",
        value=optimum.value,
        detail=f"optimal partition {optimum.bitstring} (node 0 rightmost) of 2^{graph.nodes} cuts",
    )
    return circuits.qaoa_maxcut(graph, gammas, betas), baseline


def _check_backend(
    choice: BackendChoice, field: str, width: int, request: ExperimentRequest
) -> Capabilities:
    try:
        capabilities = get_adapter(choice).capabilities()
    except (InvalidRequestError, RejectedError) as error:
        raise AdmissionError(f"{field}: {error.message}") from None
    if capabilities.status != "ONLINE":
        raise AdmissionError(
            f"{field}: {choice.provider}/{choice.device} is {capabilities.status}; "
            "only an ONLINE device accepts work (choose another device, or try again later)"
        )
    if width > capabilities.num_qubits:
        raise AdmissionError(
            f"{field}: the circuit needs {width} qubits but {choice.provider}/"
            f"{choice.device} has {capabilities.num_qubits}"
        )
    if request.execution.shots > capabilities.max_shots:
        raise AdmissionError(
            f"execution.shots: {request.execution.shots} exceeds the maximum of "
            f"{capabilities.max_shots} on {choice.provider}/{choice.device}"
        )
    return capabilities
