"""Zero-noise extrapolation, split in two stages as a batch submission needs.

Stage one folds a circuit at every scale factor (mitiq's `zne.construct_circuits`); the folded
circuits run as one batch; stage two fits the measured values and extrapolates to zero noise
(mitiq's `zne.combine_results` with a Factory's extrapolation). A parametric bootstrap over
the shot counts gives the confidence interval, and `plot_fit` draws the fit.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Literal

import cirq
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mitiq import zne
from mitiq.interface import accept_qprogram_and_validate
from mitiq.zne.inference import (
    BatchedFactory,
    ExpFactory,
    LinearFactory,
    PolyFactory,
    RichardsonFactory,
)
from mitiq.zne.scaling import fold_gates_at_random, fold_global
from mitiq.zne.scaling.folding import UnfoldableCircuitError
from qiskit import QuantumCircuit, transpile

from activities.numerics.observables import Distribution, FloatArray

Folding = Literal["global", "gates_at_random", "gates_from_left", "gates_from_right"]
Extrapolation = Literal["richardson", "linear", "polynomial", "exponential"]
ScaleMethod = Callable[[QuantumCircuit, float], QuantumCircuit]
ExtrapolationMethod = Callable[[Sequence[float], Sequence[float]], float]


# --- stage one: folding ---------------------------------------------------------------------


def fold(
    circuit: QuantumCircuit, scale_factors: Sequence[float], method: Folding, seed: int
) -> list[QuantumCircuit]:
    """One unitarily folded copy of `circuit` per scale factor (in mitiq's gate set)."""
    return zne.construct_circuits(circuit, list(scale_factors), scale_method(method, seed))


def to_device_basis(
    circuits: Sequence[QuantumCircuit], basis_gates: Sequence[str]
) -> list[QuantumCircuit]:
    """Re-express circuits that are already on physical qubits in the device's gate set.
    Optimisation level 0 keeps every fold (any optimisation would cancel G G^dag); without a
    coupling map nothing is laid out or routed, so every qubit keeps its index."""
    translated = transpile(
        list(circuits), basis_gates=list(basis_gates), coupling_map=None, optimization_level=0
    )
    return list(translated)


def scale_method(method: Folding, seed: int) -> ScaleMethod:
    if method == "global":
        return fold_global
    if method == "gates_at_random":
        return partial(fold_gates_at_random, seed=seed)
    return partial(fold_gates_in_order, from_left=method == "gates_from_left")


@accept_qprogram_and_validate
def fold_gates_in_order(
    circuit: cirq.Circuit, scale_factor: float, from_left: bool
) -> cirq.Circuit:
    """Local folding G -> G G^dag G, gates taken from the left (or right) end of the circuit.
    mitiq 1.x only ships the random order; this is its algorithm with a fixed order and its
    default gate weights (0.99 per qubit a gate acts on). Identities weigh nothing: mitiq pads
    idle qubits with them, and folding those would scale no noise. Measurements stay at the end."""
    if not circuit.are_all_measurements_terminal():
        raise UnfoldableCircuitError(
            "Circuit contains intermediate measurements and cannot be folded."
        )
    gates = [op for op in circuit.all_operations() if not cirq.is_measurement(op)]
    if cirq.inverse(cirq.Circuit(gates), default=None) is None:
        raise UnfoldableCircuitError(
            "Circuit contains non-invertible operations and cannot be folded."
        )
    measurements = [op for op in circuit.all_operations() if cirq.is_measurement(op)]
    weights = [
        0.0 if isinstance(op.gate, cirq.IdentityGate) else 0.99 ** len(op.qubits) for op in gates
    ]
    folded = cirq.Circuit()
    for gate, folds in zip(gates, ordered_fold_mask(weights, scale_factor, from_left), strict=True):
        folded.append([gate, *folds * [cirq.inverse(gate), gate]])
    folded.append(measurements, strategy=cirq.InsertStrategy.NEW_THEN_INLINE)
    return folded


def ordered_fold_mask(weights: list[float], scale_factor: float, from_left: bool) -> list[int]:
    """How many times to fold each gate (weight 0: never) for `scale_factor`: every weighted gate
    the same whole number of times, then one more fold a gate, from one end, while that brings
    the scale closer to `scale_factor`."""
    if scale_factor < 1.0:
        raise ValueError(f"scale factors must be >= 1, got {scale_factor}")
    uniform = int((scale_factor - 1.0) / 2.0)
    mask = [0 if np.isclose(w, 0.0) else uniform for w in weights]
    target = scale_factor * sum(weights)
    achieved = (2 * uniform + 1) * sum(weights)
    order = range(len(weights)) if from_left else reversed(range(len(weights)))
    for index in order:
        if np.isclose(weights[index], 0.0):
            continue
        folded = achieved + 2 * weights[index]
        if abs(folded - target) >= abs(achieved - target):
            break
        achieved = folded
        mask[index] += 1
    return mask


# --- stage two: extrapolation ---------------------------------------------------------------


def make_factory(
    scale_factors: Sequence[float], method: Extrapolation, order: int | None = None
) -> BatchedFactory:
    """The mitiq Factory for these settings (what `zne.execute_with_zne` takes)."""
    factors = list(scale_factors)
    if method == "richardson":
        return RichardsonFactory(factors)
    if method == "linear":
        return LinearFactory(factors)
    if method == "polynomial":
        return PolyFactory(factors, order=_required_order(order))
    return ExpFactory(factors)


def extrapolation_method(method: Extrapolation, order: int | None = None) -> ExtrapolationMethod:
    if method == "richardson":
        return RichardsonFactory.extrapolate
    if method == "linear":
        return LinearFactory.extrapolate
    if method == "polynomial":
        return partial(PolyFactory.extrapolate, order=_required_order(order))
    return ExpFactory.extrapolate


def extrapolate(
    scale_factors: Sequence[float],
    values: Sequence[float],
    method: Extrapolation,
    order: int | None = None,
) -> float:
    """The zero-noise value. Raises mitiq's ExtrapolationError when the fit fails."""
    combined = zne.combine_results(scale_factors, values, extrapolation_method(method, order))
    return float(combined)


def fitted_curve(
    scale_factors: Sequence[float],
    values: Sequence[float],
    method: Extrapolation,
    order: int | None = None,
) -> Callable[[float], float]:
    # With full_output mitiq's extrapolate returns a tuple whose last item is the fitted curve.
    fit: Callable[..., Any] = extrapolation_method(method, order)
    curve: Callable[[float], float] = fit(scale_factors, values, full_output=True)[-1]
    return curve


def _required_order(order: int | None) -> int:
    if order is None:
        raise ValueError("polynomial extrapolation needs an order")
    return order


# --- confidence intervals -------------------------------------------------------------------


def bootstrap(
    distributions: Sequence[Distribution],
    statistic: Callable[[Sequence[Distribution]], FloatArray],
    samples: int,
    rng: np.random.Generator,
) -> FloatArray:
    """`statistic` on `samples` parametric resamplings: each circuit's counts are redrawn from a
    multinomial with the observed frequencies and the same number of shots. Shape (samples, k)."""
    draws = [
        rng.multinomial(round(d.total), d.weights / d.total, size=samples).astype(float)
        for d in distributions
    ]
    return np.array(
        [
            statistic(
                [d.with_weights(draw[s]) for d, draw in zip(distributions, draws, strict=True)]
            )
            for s in range(samples)
        ]
    )


def percentile_interval(samples: FloatArray, confidence_level: float) -> tuple[float, float]:
    """Percentile interval; samples that are NaN (a failed fit) are left out."""
    finite = samples[np.isfinite(samples)]
    if finite.size == 0:
        raise ValueError("no bootstrap sample produced a value: the fit fails on every resampling")
    tail = (1.0 - confidence_level) / 2.0 * 100.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


# --- plot -----------------------------------------------------------------------------------


def plot_fit(
    scale_factors: Sequence[float],
    values: Sequence[float],
    std_errors: Sequence[float],
    method: Extrapolation,
    order: int | None,
    zero_noise: tuple[float, float, float],
    ideal: float | None = None,
) -> bytes:
    """PNG of the measured points, the fitted curve and the zero-noise value (value, low, high)."""
    figure = Figure(figsize=(6.0, 4.0), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.errorbar(scale_factors, values, yerr=std_errors, fmt="o", capsize=4, label="measured")
    curve = fitted_curve(scale_factors, values, method, order)
    grid = np.linspace(0.0, max(scale_factors), 200)
    axes.plot(grid, [curve(x) for x in grid], "-", label=f"{method} fit")
    value, low, high = zero_noise
    axes.errorbar(
        [0.0],
        [value],
        yerr=[[max(value - low, 0.0)], [max(high - value, 0.0)]],
        fmt="s",
        capsize=4,
        label="zero-noise estimate",
    )
    if ideal is not None:
        axes.axhline(ideal, linestyle="--", color="grey", label="ideal")
    axes.set_xlabel("noise scale factor")
    axes.set_ylabel("expectation value")
    axes.legend()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()
