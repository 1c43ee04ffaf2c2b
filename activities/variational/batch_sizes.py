"""How many circuits a point of a family costs on a backend, how many points one batch holds,
and whether a family may run there at all (checked before anything starts)."""

from __future__ import annotations

from activities.experiment.admission import (
    MAX_IDEAL_QUBITS,
    READOUT_CALIBRATION_CIRCUITS,
    AdmissionError,
)
from activities.numerics import classical
from activities.numerics.families import (
    family_observable,
)
from activities.numerics.observables import (
    measurement_bases,
)
from adapters.errors import InvalidRequestError, RejectedError
from adapters.registry import get_adapter
from schemas.execution import Capabilities
from schemas.request import executed_scale_factors
from schemas.variational import (
    CircuitFamily,
    EvaluationSpec,
    QaoaFamily,
)


def circuits_per_point(family: CircuitFamily, evaluation: EvaluationSpec) -> int:
    """Executed circuits each point adds to a batch: measurement bases x ZNE scale factors."""
    bases = measurement_bases(family_observable(family))
    return len(bases) * len(executed_scale_factors(evaluation.zne))


def calibration_circuits(evaluation: EvaluationSpec) -> int:
    """Executed circuits a batch holds whatever its size: readout calibration."""
    return READOUT_CALIBRATION_CIRCUITS if evaluation.readout else 0


def max_points_per_batch(
    family: CircuitFamily, evaluation: EvaluationSpec, max_circuits_per_job: int
) -> int:
    """The most points one submission can hold on a backend (0: not even one fits)."""
    room = max_circuits_per_job - calibration_circuits(evaluation)
    return max(room, 0) // circuits_per_point(family, evaluation)


def admit_family(
    family: CircuitFamily, evaluation: EvaluationSpec, points: int = 1
) -> Capabilities:
    """What can be checked before anything starts (the CLI calls this too): the backend exists
    and is online, the family fits it, `points` points fit one job, and qloop can compute the
    family's classical reference. Refusals are AdmissionErrors whose message starts with the
    field."""
    width = family.num_qubits
    if width > MAX_IDEAL_QUBITS:
        raise AdmissionError(
            f"family: {width} qubits; qloop computes the exact reference of a family by "
            f"statevector and allows at most {MAX_IDEAL_QUBITS}"
        )
    if isinstance(family, QaoaFamily) and width > classical.MAX_BRUTE_FORCE_NODES:
        raise AdmissionError(
            f"family.graph.nodes: {width} nodes; the brute-force MaxCut baseline allows at most "
            f"{classical.MAX_BRUTE_FORCE_NODES}"
        )
    choice = evaluation.backend
    name = f"{choice.provider}/{choice.device}"
    try:
        capabilities = get_adapter(choice).capabilities()
    except (InvalidRequestError, RejectedError) as error:
        raise AdmissionError(f"evaluation.backend: {error.message}") from None
    if capabilities.status != "ONLINE":
        raise AdmissionError(
            f"evaluation.backend: {name} is {capabilities.status}; only an ONLINE device "
            "accepts work"
        )
    if width > capabilities.num_qubits:
        raise AdmissionError(
            f"family: needs {width} qubits but {name} has {capabilities.num_qubits}"
        )
    if evaluation.shots > capabilities.max_shots:
        raise AdmissionError(
            f"evaluation.shots: {evaluation.shots} exceeds the maximum of "
            f"{capabilities.max_shots} on {name}"
        )
    if max_points_per_batch(family, evaluation, capabilities.max_circuits_per_job) < points:
        per_point = circuits_per_point(family, evaluation)
        calibration = calibration_circuits(evaluation)
        raise AdmissionError(
            f"evaluation: a batch of {points} point(s) needs {points * per_point + calibration} "
            f"circuits ({per_point} per point: measurement bases x ZNE scale factors, plus "
            f"{calibration} for readout calibration) but {name} takes at most "
            f"{capabilities.max_circuits_per_job} per job; use fewer ZNE scale factors"
        )
    return capabilities
