"""SPSA (simultaneous perturbation stochastic approximation, Spall 1992) as ask/tell on plain data.

Each iteration k evaluates the two points x_k ± c_k Δ_k, where Δ_k is a vector of ±1, and steps
x_{k+1} = x_k ∓ a_k g_k with the gradient estimate g_k = (y+ − y−) / (2 c_k) · Δ_k (minus to
minimise, plus to maximise). Δ_k comes from sha256 of (seed, k), so the same seed and the same
measured values always give the same trajectory, and the state needs no random generator.

Pure Python without numpy: workflow code imports it.
"""

from __future__ import annotations

import hashlib
import math

from schemas.loop import Goal, SpsaState
from schemas.variational import Point, SpsaSettings

_BITS_PER_BLOCK = 256


def start(settings: SpsaSettings, goal: Goal, point: Point) -> SpsaState:
    return SpsaState(settings=settings, goal=goal, point=list(point))


def perturbation(seed: int, iteration: int, size: int) -> list[int]:
    """Δ_k: `size` values of ±1 from the bits of sha256("spsa/seed/iteration/block")."""
    signs: list[int] = []
    block = 0
    while len(signs) < size:
        digest = hashlib.sha256(f"spsa/{seed}/{iteration}/{block}".encode()).digest()
        bits = int.from_bytes(digest, "big")
        signs.extend(1 if (bits >> i) & 1 else -1 for i in range(_BITS_PER_BLOCK))
        block += 1
    return signs[:size]


def perturbation_size(settings: SpsaSettings, iteration: int) -> float:
    """c_k = c / (k + 1)^gamma."""
    return float(settings.c / (iteration + 1) ** settings.gamma)


def step_size(settings: SpsaSettings, iteration: int) -> float:
    """a_k = a / (k + 1 + stability)^alpha."""
    return float(settings.a / (iteration + 1 + settings.stability) ** settings.alpha)


def ask(state: SpsaState) -> list[Point]:
    """The two points of this iteration, [x + c_k Δ_k, x − c_k Δ_k], to evaluate as one batch."""
    delta = perturbation(state.settings.seed, state.iteration, len(state.point))
    c_k = perturbation_size(state.settings, state.iteration)
    return [
        [x + c_k * d for x, d in zip(state.point, delta, strict=True)],
        [x - c_k * d for x, d in zip(state.point, delta, strict=True)],
    ]


def tell(state: SpsaState, values: list[float]) -> SpsaState:
    """The next state from the values measured at `ask(state)`'s points, in the same order."""
    if len(values) != 2:
        raise ValueError(f"SPSA takes the values of its 2 points, got {len(values)} values")
    if not all(math.isfinite(value) for value in values):
        raise ValueError(f"SPSA needs finite values, got {values}")
    settings, k = state.settings, state.iteration
    plus, minus = values
    delta = perturbation(settings.seed, k, len(state.point))
    direction = -1.0 if state.goal == "minimize" else 1.0
    gradient_scale = (plus - minus) / (2.0 * perturbation_size(settings, k))
    a_k = step_size(settings, k)
    point = [
        x + direction * a_k * gradient_scale * d for x, d in zip(state.point, delta, strict=True)
    ]

    # The iterate's own value is estimated by the mean of its two perturbed evaluations.
    estimate = (plus + minus) / 2.0
    best_point, best_value = state.best_point, state.best_value
    if best_value is None or is_better(estimate, best_value, state.goal):
        best_point, best_value = list(state.point), estimate
    recent = [*state.recent_best, best_value][-(settings.patience + 1) :]
    return state.model_copy(
        update={
            "iteration": k + 1,
            "point": point,
            "best_point": best_point,
            "best_value": best_value,
            "recent_best": recent,
        }
    )


def is_better(value: float, than: float, goal: Goal) -> bool:
    return value < than if goal == "minimize" else value > than


def converged(state: SpsaState) -> bool:
    """The best value improved by less than `tolerance` over the last `patience` iterations."""
    recent = state.recent_best
    if len(recent) <= state.settings.patience:
        return False
    return abs(recent[-1] - recent[0]) < state.settings.tolerance
