"""Classical MaxCut: brute force against hand-checked and naively enumerated answers, and the
QAOA angle choice against the brute-force optimum."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from activities.numerics import classical
from schemas.request import Graph


def graph(nodes: int, edges: list[tuple[int, int, float]]) -> Graph:
    return Graph(nodes=nodes, edges=[{"u": u, "v": v, "weight": w} for u, v, w in edges])


def ring(nodes: int) -> Graph:
    return graph(nodes, [(i, (i + 1) % nodes, 1.0) for i in range(nodes)])


def cut_of(g: Graph, bitstring: str) -> float:
    side = [int(bit) for bit in reversed(bitstring)]  # rightmost character is node 0
    return sum(e.weight for e in g.edges if side[e.u] != side[e.v])


def naive_max_cut(g: Graph) -> float:
    return max(
        sum(e.weight for e in g.edges if sides[e.u] != sides[e.v])
        for sides in itertools.product((0, 1), repeat=g.nodes)
    )


@pytest.mark.parametrize(
    ("g", "expected"),
    [
        (graph(3, [(0, 1, 1), (1, 2, 1), (0, 2, 1)]), 2.0),  # triangle
        (ring(4), 4.0),
        (ring(5), 4.0),
        (graph(4, [(0, 1, 1), (0, 2, 1), (0, 3, 1), (1, 2, 1), (1, 3, 1), (2, 3, 1)]), 4.0),  # K4
        (graph(3, [(0, 1, 5.0), (1, 2, -2.0), (0, 2, 1.0)]), 6.0),
        (graph(2, [(0, 1, -1.0)]), 0.0),
    ],
    ids=["triangle", "ring4", "ring5", "k4", "weighted", "negative"],
)
def test_max_cut_known_graphs(g: Graph, expected: float) -> None:
    result = classical.max_cut(g)
    assert result.value == pytest.approx(expected)
    assert cut_of(g, result.bitstring) == pytest.approx(expected)


@pytest.mark.parametrize("seed", range(5))
def test_max_cut_matches_naive_enumeration(seed: int) -> None:
    rng = np.random.default_rng(seed)
    nodes = int(rng.integers(3, 10))
    pairs = [(u, v) for u in range(nodes) for v in range(u + 1, nodes) if rng.random() < 0.5]
    g = graph(nodes, [(u, v, float(rng.uniform(-1, 3))) for u, v in pairs] or [(0, 1, 1.0)])
    result = classical.max_cut(g)
    assert result.value == pytest.approx(naive_max_cut(g))
    assert cut_of(g, result.bitstring) == pytest.approx(result.value)


def test_max_cut_across_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(classical, "_CHUNK", 8)
    g = graph(6, [(0, 5, 1.0), (1, 5, 1.0), (2, 3, 2.0), (4, 5, 0.5)])
    assert classical.max_cut(g).value == pytest.approx(naive_max_cut(g))


def test_cut_values_index_bit_is_node() -> None:
    values = classical.cut_values(graph(3, [(0, 2, 1.0)]))
    assert list(values) == [0, 1, 0, 1, 1, 0, 1, 0]


def test_too_many_nodes_for_brute_force() -> None:
    with pytest.raises(ValueError, match="at most 24 nodes"):
        classical.max_cut(ring(25))


def test_approximation_ratio() -> None:
    assert classical.approximation_ratio(3.0, 4.0) == 0.75
    assert math.isnan(classical.approximation_ratio(0.0, 0.0))


def test_optimised_angles_on_a_ring() -> None:
    g = ring(4)
    gammas, betas = classical.optimise_qaoa_angles(g, layers=1)
    expected = classical.qaoa_expectation(g, gammas, betas)
    optimum = classical.max_cut(g).value
    assert expected <= optimum + 1e-9
    assert classical.approximation_ratio(expected, optimum) > 0.6
    assert classical.optimise_qaoa_angles(g, layers=1) == (gammas, betas)


def test_more_layers_do_not_do_worse() -> None:
    g = graph(5, [(0, 1, 1.0), (1, 2, 2.0), (2, 3, 1.0), (3, 4, 0.5), (4, 0, 1.0), (1, 3, 1.0)])
    one = classical.qaoa_expectation(g, *classical.optimise_qaoa_angles(g, 1))
    two = classical.qaoa_expectation(g, *classical.optimise_qaoa_angles(g, 2))
    assert two >= one - 1e-6
    assert two <= classical.max_cut(g).value + 1e-9


def test_angle_search_is_bounded() -> None:
    with pytest.raises(ValueError, match="give gammas and betas"):
        classical.optimise_qaoa_angles(ring(classical.MAX_ANGLE_SEARCH_NODES + 1), 1)
