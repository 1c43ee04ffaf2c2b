"""Classical pre- and postprocessing of weighted MaxCut: the brute-force optimum (the baseline
QAOA is judged against) and the choice of QAOA angles when a request gives none.

Bitstrings follow Qiskit: the rightmost character is node 0, and bit 1 puts a node on the
other side of the cut.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from schemas.request import Graph

MAX_BRUTE_FORCE_NODES = 24
MAX_ANGLE_SEARCH_NODES = 12
_CHUNK = 1 << 20


@dataclass(frozen=True)
class MaxCut:
    value: float
    bitstring: str


def cut_values(graph: Graph, start: int = 0, stop: int | None = None) -> np.ndarray:
    """Cut value of every partition with index in [start, stop) (bit q of the index = node q)."""
    stop = 1 << graph.nodes if stop is None else stop
    index = np.arange(start, stop, dtype=np.int64)
    values = np.zeros(index.shape, dtype=np.float64)
    for edge in graph.edges:
        values += edge.weight * (((index >> edge.u) ^ (index >> edge.v)) & 1)
    return values


def max_cut(graph: Graph) -> MaxCut:
    """The maximum weighted cut by exhaustive search, in chunks so memory stays bounded."""
    if graph.nodes > MAX_BRUTE_FORCE_NODES:
        raise ValueError(
            f"brute-force MaxCut handles at most {MAX_BRUTE_FORCE_NODES} nodes, got {graph.nodes}"
        )
    best_value, best_index = -math.inf, 0
    for start, values in _chunks(graph):
        position = int(np.argmax(values))
        if values[position] > best_value:
            best_value, best_index = float(values[position]), start + position
    return MaxCut(value=best_value, bitstring=format(best_index, f"0{graph.nodes}b"))


def _chunks(graph: Graph) -> Iterator[tuple[int, np.ndarray]]:
    size = 1 << graph.nodes
    for start in range(0, size, _CHUNK):
        yield start, cut_values(graph, start, min(start + _CHUNK, size))


def approximation_ratio(cut: float, optimum: float) -> float:
    """`cut / optimum`; undefined (NaN) when the optimum is not positive."""
    return cut / optimum if optimum > 0 else math.nan


def qaoa_expectation(graph: Graph, gammas: list[float], betas: list[float]) -> float:
    """Exact expected cut of the QAOA state that `circuits.qaoa_maxcut` prepares."""
    return _Qaoa(graph).expected_cut(gammas, betas)


def optimise_qaoa_angles(graph: Graph, layers: int) -> tuple[list[float], list[float]]:
    """Angles that maximise the ideal expected cut, deterministic for a given graph and depth.

    One layer: the best points of a fixed grid, refined by COBYLA. Each further layer starts
    from the previous optimum, interpolated to one more layer and padded with an identity
    layer; the padded start already has the previous value, so adding layers never loses.
    """
    if graph.nodes > MAX_ANGLE_SEARCH_NODES:
        raise ValueError(
            f"qloop optimises QAOA angles classically for at most {MAX_ANGLE_SEARCH_NODES} nodes, "
            f"got {graph.nodes}; give gammas and betas"
        )
    qaoa = _Qaoa(graph)
    best = _refine(qaoa, sorted(_grid(graph), key=qaoa.negative)[:2])
    for _ in range(1, layers):
        gammas, betas = np.split(best, 2)
        padded = np.concatenate([gammas, [0.0], betas, [0.0]])
        best = _refine(qaoa, [np.concatenate([_interpolate(gammas), _interpolate(betas)]), padded])
    gammas, betas = np.split(best, 2)
    return [float(a) for a in gammas], [float(b) for b in betas]


def _grid(graph: Graph) -> list[np.ndarray]:
    # gamma is scaled by the typical weight because the cost phase is gamma * weight.
    scale = float(np.mean([abs(edge.weight) for edge in graph.edges])) or 1.0
    return [
        np.array([gamma, beta])
        for gamma in np.linspace(0, np.pi, 9)[1:-1] / scale
        for beta in np.linspace(0, np.pi / 2, 6)[1:-1]
    ]


def _interpolate(angles: np.ndarray) -> np.ndarray:
    """A schedule of one more layer with the same shape (the INTERP heuristic)."""
    layers = len(angles)
    old = (np.arange(layers) + 0.5) / layers
    new = (np.arange(layers + 1) + 0.5) / (layers + 1)
    return np.interp(new, old, angles)


def _refine(qaoa: _Qaoa, starts: list[np.ndarray]) -> np.ndarray:
    budget = {"maxiter": 40 + 30 * len(starts[0])}
    results = [minimize(qaoa.negative, start, method="COBYLA", options=budget) for start in starts]
    return min(results, key=lambda result: result.fun).x


class _Qaoa:
    """The QAOA state simulated directly: the cost layer exp(-i gamma w Z_u Z_v) over all edges
    is exp(-i gamma (W - 2 cut)), diagonal in the cut values."""

    def __init__(self, graph: Graph) -> None:
        self.nodes = graph.nodes
        self.cuts = cut_values(graph)
        self.cost = sum(edge.weight for edge in graph.edges) - 2 * self.cuts

    def expected_cut(self, gammas: list[float], betas: list[float]) -> float:
        state = np.full(self.cuts.shape, 2.0 ** (-self.nodes / 2), dtype=np.complex128)
        for gamma, beta in zip(gammas, betas, strict=True):
            state *= np.exp(-1j * gamma * self.cost)
            self._mix(state, beta)
        return float(np.dot(np.abs(state) ** 2, self.cuts))

    def negative(self, angles: np.ndarray) -> float:
        """Minus the expected cut of concatenated (gammas, betas): what COBYLA minimises."""
        gammas, betas = np.split(angles, 2)
        return -self.expected_cut(list(gammas), list(betas))

    def _mix(self, state: np.ndarray, beta: float) -> None:
        """rx(2 beta) on every qubit, in place."""
        cos, sin = math.cos(beta), -1j * math.sin(beta)
        for qubit in range(self.nodes):
            view = state.reshape(-1, 2, 1 << qubit)
            view[...] = cos * view + sin * view[:, ::-1, :]
