"""Expectation values of qloop observables from measured counts (or quasi-probabilities).

Every observable qloop supports is a weighted sum of *product terms*: a Pauli string measured in
a compatible basis is the parity of the bits on its support, and the probability of a bitstring
is the product of one-hot indicators. A product term is a pair of weights per qubit, `factors`
of shape (n, 2): the term's value on outcome x is prod_i factors[i, x_i]. Readout mitigation
then only has to transform those factors (see activities/numerics/readout.py).

Bit order follows Qiskit: in a label or bitstring, the rightmost character is qubit/bit 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from schemas.request import BitstringProbabilityObservable, Observable, PauliSumObservable

FloatArray = npt.NDArray[np.float64]
PARITY = np.array([1.0, -1.0])
TRIVIAL = np.array([1.0, 1.0])


@dataclass(frozen=True)
class Distribution:
    """The distinct outcomes of one circuit: `bits[k, i]` is bit i of outcome k, with `weights[k]`
    its count (or quasi-probability)."""

    bits: npt.NDArray[np.uint8]
    weights: FloatArray

    @classmethod
    def from_counts(cls, counts: Mapping[str, float], num_bits: int) -> Distribution:
        if not counts:
            raise ValueError("no outcomes: the circuit returned empty counts")
        values = [int(key.replace(" ", ""), 2) for key in counts]
        for key, value in zip(counts, values, strict=True):
            if value >> num_bits:
                raise ValueError(f"outcome {key!r} does not fit the {num_bits} measured bits")
        as_ints = np.array(values, dtype=np.uint64)
        shifts = np.arange(num_bits, dtype=np.uint64)
        bits = ((as_ints[:, None] >> shifts[None, :]) & np.uint64(1)).astype(np.uint8)
        return cls(bits=bits, weights=np.array(list(counts.values()), dtype=float))

    @property
    def total(self) -> float:
        return float(self.weights.sum())

    @property
    def num_bits(self) -> int:
        return int(self.bits.shape[1])

    def with_weights(self, weights: FloatArray) -> Distribution:
        return Distribution(bits=self.bits, weights=weights)


@dataclass(frozen=True)
class ProductTerm:
    """`coefficient * prod_i factors[i, x_i]`, averaged over the outcomes of circuit `basis`."""

    basis: str
    coefficient: float
    factors: FloatArray


def term_values(distribution: Distribution, factors: FloatArray) -> FloatArray:
    """The term's value on each distinct outcome; only qubits with non-trivial factors cost."""
    values = np.ones(len(distribution.weights))
    for qubit in np.flatnonzero(np.any(factors != 1.0, axis=1)):
        values = values * factors[qubit, distribution.bits[:, qubit]]
    return values


def product_expectation(distribution: Distribution, factors: FloatArray) -> float:
    return float(distribution.weights @ term_values(distribution, factors) / distribution.total)


def measurement_basis(label: str) -> str:
    """A basis label as measured: `I` is read in the Z basis."""
    return label.replace("I", "Z")


def measurement_bases(observable: Observable) -> list[str]:
    """Qubit-wise commuting groups of the observable's Pauli terms, greedily in term order; each
    basis label has one X, Y or Z per qubit (qubit 0 rightmost), Z where the group is free."""
    width = observable.num_qubits
    if isinstance(observable, BitstringProbabilityObservable):
        return ["Z" * width]
    groups: list[list[str]] = []
    for term in observable.terms:
        if set(term.pauli) == {"I"}:
            continue
        group = next((g for g in groups if _commutes(g, term.pauli)), None)
        if group is None:
            groups.append(list(term.pauli))
        else:
            group[:] = [
                mine if theirs == "I" else theirs
                for mine, theirs in zip(group, term.pauli, strict=True)
            ]
    return ["".join("Z" if c == "I" else c for c in group) for group in groups] or ["Z" * width]


def _commutes(group: list[str], pauli: str) -> bool:
    return all(a == "I" or b == "I" or a == b for a, b in zip(group, pauli, strict=True))


def basis_for_pauli(pauli: str, bases: Sequence[str]) -> str:
    """The first basis agreeing with `pauli` on its non-identity qubits."""
    for basis in bases:
        measured = measurement_basis(basis)
        if len(measured) == len(pauli) and all(
            p in ("I", b) for p, b in zip(pauli, measured, strict=True)
        ):
            return basis
    raise ValueError(f"no measurement basis among {list(bases)} measures the Pauli term {pauli}")


def pauli_factors(pauli: str) -> FloatArray:
    return np.array([TRIVIAL if p == "I" else PARITY for p in reversed(pauli)])


def bitstring_factors(bitstring: str) -> FloatArray:
    return np.array([[1.0, 0.0] if b == "0" else [0.0, 1.0] for b in reversed(bitstring)])


def product_terms(observable: Observable, bases: Sequence[str]) -> list[ProductTerm]:
    if isinstance(observable, PauliSumObservable):
        return [
            ProductTerm(basis_for_pauli(t.pauli, bases), t.coefficient, pauli_factors(t.pauli))
            for t in observable.terms
        ]
    computational = basis_for_pauli("Z" * observable.num_qubits, bases)
    return [ProductTerm(computational, 1.0, bitstring_factors(b)) for b in observable.bitstrings]


def evaluate(terms: Sequence[ProductTerm], distributions: Mapping[str, Distribution]) -> float:
    return sum(
        t.coefficient * product_expectation(distributions[t.basis], t.factors) for t in terms
    )


def expectation(
    observable: Observable, counts_by_basis: Mapping[str, Mapping[str, float]]
) -> float:
    """The observable's value from counts (or quasi-probabilities) keyed by basis label."""
    distributions = _distributions(observable, counts_by_basis)
    return evaluate(product_terms(observable, list(counts_by_basis)), distributions)


def bitstring_probability(
    observable: BitstringProbabilityObservable, counts: Mapping[str, float]
) -> float:
    basis = "Z" * observable.num_qubits
    return expectation(observable, {basis: counts})


def standard_error(
    observable: Observable, counts_by_basis: Mapping[str, Mapping[str, int]]
) -> float:
    """Shot-noise standard error of `expectation` from raw counts. Terms measured in the same
    basis are correlated, so the variance is that of their sum per basis; bases are independent."""
    distributions = _distributions(observable, counts_by_basis)
    terms = product_terms(observable, list(counts_by_basis))
    variance = 0.0
    for basis, distribution in distributions.items():
        per_outcome = sum(
            (
                t.coefficient * term_values(distribution, t.factors)
                for t in terms
                if t.basis == basis
            ),
            start=np.zeros(len(distribution.weights)),
        )
        probabilities = distribution.weights / distribution.total
        mean = probabilities @ per_outcome
        variance += float(probabilities @ (per_outcome - mean) ** 2) / distribution.total
    return float(np.sqrt(variance))


def _distributions(
    observable: Observable, counts_by_basis: Mapping[str, Mapping[str, float]]
) -> dict[str, Distribution]:
    return {
        basis: Distribution.from_counts(counts, observable.num_qubits)
        for basis, counts in counts_by_basis.items()
    }
