"""SPSA ask/tell on plain data: convergence on quadratics (exact and noisy), determinism from the
seed, and a state that survives a JSON round trip in the middle of a run."""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest

from schemas.loop import LoopState, SpsaState, default_initial_point
from schemas.variational import LoopRequest, SpsaSettings
from workflows import spsa

CENTRE = [0.7, -1.2, 0.3, 2.0]
SCALES = [1.0, 2.0, 0.5, 1.5]


def quadratic(point: list[float]) -> float:
    return sum(s * (x - c) ** 2 for x, c, s in zip(point, CENTRE, SCALES, strict=True))


def distance_to_centre(point: list[float]) -> float:
    return max(abs(x - c) for x, c in zip(point, CENTRE, strict=True))


def optimise(
    state: SpsaState, objective: Callable[[list[float]], float], iterations: int
) -> SpsaState:
    for _ in range(iterations):
        state = spsa.tell(state, [objective(point) for point in spsa.ask(state)])
    return state


def test_ask_gives_two_points_mirrored_around_the_iterate_by_plus_minus_c_k() -> None:
    settings = SpsaSettings(seed=3, c=0.2, gamma=0.101)
    state = spsa.start(settings, "minimize", [1.0, 2.0, 3.0])
    plus, minus = spsa.ask(state)
    c_0 = spsa.perturbation_size(settings, 0)
    assert c_0 == pytest.approx(0.2)
    for x, p, m in zip(state.point, plus, minus, strict=True):
        assert abs(p - x) == pytest.approx(c_0)
        assert (p + m) / 2 == pytest.approx(x)


def test_perturbations_are_plus_minus_one_balanced_and_differ_between_iterations() -> None:
    signs = spsa.perturbation(seed=11, iteration=0, size=1000)
    assert set(signs) == {1, -1}
    assert 400 < signs.count(1) < 600
    assert spsa.perturbation(11, 0, 1000) == signs
    assert spsa.perturbation(11, 1, 1000) != signs
    assert spsa.perturbation(12, 0, 1000) != signs


def test_noiseless_quadratic_converges_to_its_minimum() -> None:
    settings = SpsaSettings(seed=1, a=0.5, c=0.1, stability=5, tolerance=1e-6, patience=10)
    state = optimise(spsa.start(settings, "minimize", [0.0, 0.0, 0.0, 0.0]), quadratic, 300)
    assert distance_to_centre(state.point) < 1e-3
    assert state.best_point is not None and distance_to_centre(state.best_point) < 1e-3
    # The best value is estimated from the perturbed points: above the minimum by sum(s) c_k^2.
    bias = sum(SCALES) * spsa.perturbation_size(settings, 299) ** 2
    assert state.best_value == pytest.approx(bias, rel=0.05)
    assert state.iteration == 300


def test_noisy_quadratic_converges_near_its_minimum() -> None:
    noise = random.Random(5)

    def noisy(point: list[float]) -> float:
        return quadratic(point) + noise.gauss(0.0, 0.05)

    settings = SpsaSettings(seed=2, a=0.1, c=0.2, stability=5)
    state = optimise(spsa.start(settings, "minimize", [0.0, 0.0, 0.0, 0.0]), noisy, 400)
    assert distance_to_centre(state.point) < 0.1
    assert quadratic(state.point) < 0.01 * quadratic([0.0] * 4)


def test_maximize_climbs() -> None:
    settings = SpsaSettings(seed=4, a=0.5, c=0.1, stability=5)
    state = spsa.start(settings, "maximize", [0.0, 0.0, 0.0, 0.0])
    state = optimise(state, lambda point: -quadratic(point), 300)
    assert distance_to_centre(state.point) < 1e-3
    assert state.best_value is not None and -0.02 < state.best_value < 0


def test_same_seed_and_values_give_the_same_trajectory_another_seed_does_not() -> None:
    def trajectory(seed: int) -> list[list[float]]:
        state = spsa.start(SpsaSettings(seed=seed), "minimize", [0.0] * 4)
        points = []
        for _ in range(25):
            state = spsa.tell(state, [quadratic(point) for point in spsa.ask(state)])
            points.append(state.point)
        return points

    assert trajectory(9) == trajectory(9)
    assert trajectory(9) != trajectory(10)


def test_state_round_trips_through_json_mid_run_and_continues_identically() -> None:
    noise = random.Random(8)
    values = [[quadratic([0.1 * i] * 4) + noise.gauss(0, 0.1) for _ in range(2)] for i in range(60)]
    settings = SpsaSettings(seed=21, a=0.3, c=0.15)
    uninterrupted = spsa.start(settings, "minimize", [0.0] * 4)
    for pair in values:
        uninterrupted = spsa.tell(uninterrupted, pair)

    resumed = spsa.start(settings, "minimize", [0.0] * 4)
    for pair in values[:27]:
        resumed = spsa.tell(resumed, pair)
    resumed = SpsaState.model_validate_json(resumed.model_dump_json())
    for pair in values[27:]:
        resumed = spsa.tell(resumed, pair)
    assert resumed == uninterrupted


def test_convergence_needs_patience_iterations_without_tolerance_sized_improvement() -> None:
    settings = SpsaSettings(seed=0, patience=3, tolerance=0.01)
    state = spsa.start(settings, "minimize", [0.0])
    flat = [1.0, 1.0]
    for step in range(3):
        state = spsa.tell(state, flat)
        assert not spsa.converged(state), step
    state = spsa.tell(state, flat)
    assert spsa.converged(state)

    improving = spsa.start(settings, "minimize", [0.0])
    for step in range(10):
        improving = spsa.tell(improving, [1.0 - 0.1 * step] * 2)
    assert not spsa.converged(improving)
    assert len(improving.recent_best) == settings.patience + 1


def test_best_point_is_the_iterate_with_the_best_estimate() -> None:
    state = spsa.start(SpsaSettings(seed=0), "maximize", [0.5])
    first = state.point
    state = spsa.tell(state, [3.0, 1.0])
    assert (state.best_point, state.best_value) == (first, 2.0)
    state = spsa.tell(state, [1.0, 1.0])
    assert (state.best_point, state.best_value) == (first, 2.0)
    third = state.point
    state = spsa.tell(state, [5.0, 4.0])
    assert (state.best_point, state.best_value) == (third, 4.5)


@pytest.mark.parametrize(
    ("values", "message"),
    [([1.0], "2 points, got 1"), ([1.0, float("nan")], "finite values")],
)
def test_tell_refuses_values_that_do_not_match_the_points(
    values: list[float], message: str
) -> None:
    state = spsa.start(SpsaSettings(), "minimize", [0.0, 0.0])
    with pytest.raises(ValueError, match=message):
        spsa.tell(state, values)


def test_default_initial_point_is_a_ramp_for_qaoa_and_the_reference_for_vqe() -> None:
    qaoa = LoopRequest.model_validate(
        {
            "name": "q",
            "goal": "maximize",
            "family": {
                "kind": "qaoa_maxcut",
                "layers": 2,
                "graph": {"nodes": 3, "edges": [{"u": 0, "v": 1, "weight": 2.0}]},
            },
        }
    )
    gammas, betas = default_initial_point(qaoa)[:2], default_initial_point(qaoa)[2:]
    assert 0 < gammas[0] < gammas[1]
    assert betas[0] < betas[1] < 0
    vqe = LoopRequest.model_validate(
        {
            "name": "v",
            "family": {
                "kind": "vqe",
                "hamiltonian": {"terms": [{"pauli": "ZZ", "coefficient": 1.0}]},
            },
        }
    )
    assert default_initial_point(vqe) == [0.0] * 4
    given = vqe.model_copy(update={"initial_point": [0.1, 0.2, 0.3, 0.4]})
    assert default_initial_point(given) == [0.1, 0.2, 0.3, 0.4]


def test_loop_state_round_trips_through_json() -> None:
    state = LoopState.model_validate(
        {
            "optimizer": spsa.start(SpsaSettings(seed=1), "minimize", [0.1, 0.2]).model_dump(),
            "started_at": "2026-01-01T00:00:00Z",
            "baseline_method": "exact_diagonalisation",
            "baseline_value": -1.85,
            "trajectory": {
                "chunks": ["file:///tmp/a.json"],
                "entries": [
                    {
                        "iteration": 0,
                        "point": [0.1],
                        "values": [1, 2],
                        "best_value": 1.5,
                        "cost_usd": 0.0,
                    }
                ],
            },
        }
    )
    assert LoopState.model_validate_json(state.model_dump_json()) == state


@pytest.mark.parametrize("bits", ["01", "10", "11", "101", "0110"])
@pytest.mark.parametrize("reps", [1, 2, 3])
def test_default_vqe_point_prepares_the_reference_state(bits: str, reps: int) -> None:
    from qiskit.quantum_info import Statevector

    from activities.numerics.families import family_circuit

    request = LoopRequest.model_validate(
        {
            "name": "v",
            "family": {
                "kind": "vqe",
                "hamiltonian": {"terms": [{"pauli": "Z" * len(bits)}]},
                "ansatz": {"reps": reps, "initial_bits": bits},
            },
        }
    )
    point = default_initial_point(request)
    state = Statevector(family_circuit(request.family).bind(point))
    assert state.probabilities_dict()[bits] == pytest.approx(1.0)
