"""ExperimentRequest v1: what a user asks qloop to compute, independent of any provider.

Bit and qubit order everywhere in qloop follows Qiskit: in a Pauli label or a bitstring,
the rightmost character is qubit (or classical bit) 0.
"""

from __future__ import annotations

import math
import re
from datetime import timedelta
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schemas.limits import (
    MAX_BITSTRINGS,
    MAX_FALLBACKS,
    MAX_PAULI_TERMS,
    MAX_QAOA_LAYERS,
    MAX_QASM_BYTES,
    MAX_TAGS,
)

MAX_SHOTS = 1_000_000
MAX_TEMPLATE_QUBITS = 32
# A graph lists each pair of its nodes at most once.
MAX_EDGES = MAX_TEMPLATE_QUBITS * (MAX_TEMPLATE_QUBITS - 1) // 2


class StrictModel(BaseModel):
    """Unknown fields are errors: a typo in a request must never be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# --- observables -------------------------------------------------------------------------


class PauliTerm(StrictModel):
    pauli: Annotated[str, Field(pattern=r"^[IXYZ]+$", max_length=64)]
    coefficient: float = 1.0


class PauliSumObservable(StrictModel):
    """Sum of coefficient * Pauli string; label characters are qubits n-1 ... 0."""

    kind: Literal["pauli_sum"] = "pauli_sum"
    terms: Annotated[list[PauliTerm], Field(min_length=1, max_length=MAX_PAULI_TERMS)]

    @model_validator(mode="after")
    def _same_width(self) -> PauliSumObservable:
        widths = {len(term.pauli) for term in self.terms}
        if len(widths) != 1:
            raise ValueError(
                f"all Pauli labels must have the same length, got lengths {sorted(widths)}"
            )
        return self

    @property
    def num_qubits(self) -> int:
        return len(self.terms[0].pauli)


class BitstringProbabilityObservable(StrictModel):
    """Total probability of measuring any of the bitstrings (qubit 0 is the rightmost bit)."""

    kind: Literal["bitstring_probability"] = "bitstring_probability"
    bitstrings: Annotated[
        list[Annotated[str, Field(pattern=r"^[01]+$", max_length=64)]],
        Field(min_length=1, max_length=MAX_BITSTRINGS),
    ]

    @model_validator(mode="after")
    def _same_width(self) -> BitstringProbabilityObservable:
        widths = {len(b) for b in self.bitstrings}
        if len(widths) != 1:
            raise ValueError(
                f"all bitstrings must have the same length, got lengths {sorted(widths)}"
            )
        return self

    @property
    def num_qubits(self) -> int:
        return len(self.bitstrings[0])


Observable = Annotated[
    PauliSumObservable | BitstringProbabilityObservable, Field(discriminator="kind")
]


# --- problems ------------------------------------------------------------------------------


class QasmProblem(StrictModel):
    """A circuit in OpenQASM 2 or 3 and the observable to estimate on its output state.

    Measurements at the end of the circuit are replaced by qloop's own measurement of every
    qubit; a measurement in the middle of the circuit cannot be folded for ZNE.
    """

    kind: Literal["qasm"] = "qasm"
    qasm: Annotated[str, Field(min_length=1, json_schema_extra={"maxLength": MAX_QASM_BYTES})]
    observable: Observable

    @field_validator("qasm")
    def _has_header(cls, text: str) -> str:
        if len(text) > MAX_QASM_BYTES:
            raise ValueError(
                f"the program has {len(text):,} characters; the limit is {MAX_QASM_BYTES:,}"
            )
        if not text.strip():
            raise ValueError("the circuit is empty")
        return text


class WeightedEdge(StrictModel):
    u: Annotated[int, Field(ge=0)]
    v: Annotated[int, Field(ge=0)]
    weight: float = 1.0

    @model_validator(mode="after")
    def _no_loop(self) -> WeightedEdge:
        if self.u == self.v:
            raise ValueError(f"self-loop on node {self.u}: an edge joins two different nodes")
        return self


class Graph(StrictModel):
    nodes: Annotated[int, Field(ge=2, le=MAX_TEMPLATE_QUBITS)]
    edges: Annotated[list[WeightedEdge], Field(min_length=1, max_length=MAX_EDGES)]

    @model_validator(mode="after")
    def _edges_in_range(self) -> Graph:
        seen: set[tuple[int, int]] = set()
        for edge in self.edges:
            if max(edge.u, edge.v) >= self.nodes:
                raise ValueError(
                    f"edge ({edge.u}, {edge.v}) names a node >= nodes={self.nodes}; "
                    f"nodes are numbered 0..{self.nodes - 1}"
                )
            key = (min(edge.u, edge.v), max(edge.u, edge.v))
            if key in seen:
                raise ValueError(f"edge {key} is listed twice")
            seen.add(key)
        return self


class QaoaMaxcutProblem(StrictModel):
    """QAOA for weighted MaxCut. Without angles, qloop picks them by classical optimisation."""

    kind: Literal["qaoa_maxcut"] = "qaoa_maxcut"
    graph: Graph
    layers: Annotated[int, Field(ge=1, le=MAX_QAOA_LAYERS)] = 1
    gammas: Annotated[list[float], Field(max_length=MAX_QAOA_LAYERS)] | None = None
    betas: Annotated[list[float], Field(max_length=MAX_QAOA_LAYERS)] | None = None

    @model_validator(mode="after")
    def _angles_match_layers(self) -> QaoaMaxcutProblem:
        if (self.gammas is None) != (self.betas is None):
            raise ValueError("give both gammas and betas, or neither (qloop then optimises them)")
        for name, angles in (("gammas", self.gammas), ("betas", self.betas)):
            if angles is not None and len(angles) != self.layers:
                raise ValueError(f"{name} has {len(angles)} angles but layers={self.layers}")
        return self


class GhzProblem(StrictModel):
    """GHZ state; the observable is the population of |0...0> and |1...1> (ideal 1)."""

    kind: Literal["ghz"] = "ghz"
    num_qubits: Annotated[int, Field(ge=2, le=MAX_TEMPLATE_QUBITS)]


class MirrorProblem(StrictModel):
    """Mirror benchmark: random Clifford layers, their inverse and a random Pauli frame, so the
    ideal output is one known bitstring; the observable is its probability (ideal 1)."""

    kind: Literal["mirror"] = "mirror"
    num_qubits: Annotated[int, Field(ge=1, le=MAX_TEMPLATE_QUBITS)]
    depth: Annotated[int, Field(ge=1, le=200)] = 4
    seed: Annotated[int, Field(ge=0, lt=2**32)] = 0


Problem = Annotated[
    QasmProblem | QaoaMaxcutProblem | GhzProblem | MirrorProblem, Field(discriminator="kind")
]


# --- execution ----------------------------------------------------------------------------


class DepolarizingNoise(StrictModel):
    """Extra depolarizing error on top of a device profile, per gate."""

    one_qubit: Annotated[float, Field(ge=0.0, le=0.75)] = 0.0
    two_qubit: Annotated[float, Field(ge=0.0, le=0.9375)] = 0.0


BRAKET_LOCAL_DEVICES = ("braket_sv", "braket_dm")
# execution.reuse: whether an experiment may take an earlier experiment's counts.
ResultReuse = Literal["never", "within_calibration"]
RESULT_REUSE: tuple[str, ...] = ("never", "within_calibration")
BRAKET_DEVICE_ARN = re.compile(r"arn:aws:braket:[a-z0-9-]*:[0-9]{0,12}:device/[A-Za-z0-9_./-]+")


class BackendChoice(StrictModel):
    """A backend by provider and device.

    Aer devices: `ideal`, and `noisy` with a noise profile. Braket devices: the local
    simulators `braket_sv` (the default) and `braket_dm` (optionally with a noise profile and
    extra depolarizing noise), or a device ARN (`arn:aws:braket:<region>::device/...`) for the
    real service.
    """

    provider: Literal["aer", "braket"] = "aer"
    device: Annotated[str, Field(min_length=1, max_length=200)] = "ideal"
    noise_profile: Annotated[str, Field(max_length=100)] | None = None
    extra_depolarizing: DepolarizingNoise | None = None

    @model_validator(mode="before")
    @classmethod
    def _braket_default_device(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("provider") == "braket" and "device" not in data:
            return {**data, "device": BRAKET_LOCAL_DEVICES[0]}
        return data

    @model_validator(mode="after")
    def _braket_device(self) -> BackendChoice:
        if self.provider != "braket":
            return self
        is_arn = self.device.startswith("arn:")
        if is_arn and not BRAKET_DEVICE_ARN.fullmatch(self.device):
            raise ValueError(
                f"device {self.device!r} is not a Braket device ARN; expected "
                "arn:aws:braket:<region>:<account or empty>:device/<type>/<provider>/<name>"
            )
        if not is_arn and self.device not in BRAKET_LOCAL_DEVICES:
            raise ValueError(
                f"unknown device {self.device!r} for provider braket; allowed: "
                f"{', '.join(BRAKET_LOCAL_DEVICES)} or a Braket device ARN (arn:aws:braket:...)"
            )
        noisy = self.noise_profile is not None or self.extra_depolarizing is not None
        if noisy and self.device != "braket_dm":
            raise ValueError(
                f"noise_profile and extra_depolarizing apply to braket_dm only, not {self.device!r}"
            )
        return self


class ExecutionSpec(StrictModel):
    """`fallback`: where the work goes when `backend` fails, is refused by its circuit breaker
    or times out waiting for approval, in order; `classical` (last) answers with the exact
    classical value of the observable, labelled as such in the report.

    `reuse`: `never` (the default) runs and pays for every experiment; `within_calibration`
    takes the counts an earlier experiment measured for the same planned circuits, shots and
    backend (and seed, on a simulator) while the backend's calibration is still the one they
    were measured in, instead of submitting and paying again (README, "Reusing a result")."""

    shots: Annotated[int, Field(ge=1, le=MAX_SHOTS)] = 4000
    backend: BackendChoice = BackendChoice()
    fallback: Annotated[
        list[BackendChoice | Literal["classical"]], Field(max_length=MAX_FALLBACKS)
    ] = []
    seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    reuse: ResultReuse = "never"

    @field_validator("reuse", mode="before")
    @classmethod
    def _known_reuse(cls, value: object) -> object:
        if value not in RESULT_REUSE:
            raise ValueError(
                f"execution.reuse must be one of {', '.join(RESULT_REUSE)}; got {value!r}"
            )
        return value

    @field_validator("fallback")
    def _classical_last(
        cls, chain: list[BackendChoice | Literal["classical"]]
    ) -> list[BackendChoice | Literal["classical"]]:
        if "classical" in chain[:-1]:
            raise ValueError("'classical' ends a fallback chain: nothing after it can run")
        return chain


# --- mitigation ---------------------------------------------------------------------------


class ZneSpec(StrictModel):
    scale_factors: Annotated[list[float], Field(min_length=2, max_length=10)] = [1.0, 3.0, 5.0]
    folding: Literal["global", "gates_at_random", "gates_from_left", "gates_from_right"] = "global"
    extrapolation: Literal["richardson", "linear", "polynomial", "exponential"] = "richardson"
    polynomial_order: Annotated[int, Field(ge=1)] | None = None

    @field_validator("scale_factors")
    def _valid_scales(cls, factors: list[float]) -> list[float]:
        if any(f < 1.0 or f > 21.0 for f in factors):
            raise ValueError(f"scale factors must lie in [1, 21], got {factors}")
        if sorted(set(factors)) != factors:
            raise ValueError(f"scale factors must be strictly increasing, got {factors}")
        return factors

    @model_validator(mode="after")
    def _order_fits(self) -> ZneSpec:
        if self.extrapolation == "polynomial":
            if self.polynomial_order is None:
                raise ValueError("extrapolation 'polynomial' needs polynomial_order")
            if self.polynomial_order >= len(self.scale_factors):
                raise ValueError(
                    f"polynomial_order={self.polynomial_order} needs more than "
                    f"{self.polynomial_order} scale factors, got {len(self.scale_factors)}"
                )
        elif self.polynomial_order is not None:
            raise ValueError("polynomial_order is only used with extrapolation 'polynomial'")
        if self.extrapolation == "exponential" and len(self.scale_factors) < 3:
            raise ValueError("extrapolation 'exponential' needs at least 3 scale factors")
        return self


def executed_scale_factors(zne: ZneSpec | None) -> list[float]:
    """The scale factors a batch runs: the fit's, plus 1.0 when the fit leaves it out (the raw
    value is always the unfolded circuit's)."""
    if zne is None:
        return [1.0]
    return sorted({1.0, *zne.scale_factors})


class MitigationSpec(StrictModel):
    zne: ZneSpec | None = ZneSpec()
    readout: bool = True
    confidence_level: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.95
    bootstrap_samples: Annotated[int, Field(ge=50, le=5000)] = 300


# --- policy --------------------------------------------------------------------------------


class PolicySpec(StrictModel):
    account: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")] = "default"
    max_cost_usd: Annotated[float, Field(ge=0.0)] | None = None
    max_queue_wait: timedelta = timedelta(days=7)

    @field_validator("max_queue_wait")
    def _positive(cls, wait: timedelta) -> timedelta:
        if wait <= timedelta(0):
            raise ValueError("max_queue_wait must be positive")
        return wait


# --- the request ---------------------------------------------------------------------------


class ExperimentRequest(StrictModel):
    schema_version: Literal[1] = 1
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]
    problem: Problem
    execution: ExecutionSpec = ExecutionSpec()
    mitigation: MitigationSpec = MitigationSpec()
    policy: PolicySpec = PolicySpec()
    tags: Annotated[
        dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=256)]],
        Field(max_length=MAX_TAGS),
    ] = {}

    @field_validator("tags", mode="before")
    @classmethod
    def _few_tags(cls, tags: Any) -> Any:
        if isinstance(tags, dict) and len(tags) > MAX_TAGS:
            raise ValueError(f"{len(tags):,} tags; the limit is {MAX_TAGS}")
        return tags

    def on_backend(self, backend: BackendChoice) -> ExperimentRequest:
        """The same request run on another backend (a fallback, or a device chosen for it)."""
        return self.model_copy(
            update={"execution": self.execution.model_copy(update={"backend": backend})}
        )

    @model_validator(mode="after")
    def _finite_numbers(self) -> ExperimentRequest:
        # allow_inf_nan=False covers plain floats; this also covers angles nested in lists.
        problem = self.problem
        if isinstance(problem, QaoaMaxcutProblem):
            for name, angles in (("gammas", problem.gammas), ("betas", problem.betas)):
                if angles is not None and not all(math.isfinite(a) for a in angles):
                    raise ValueError(f"problem.{name} must be finite numbers, got {angles}")
        return self
