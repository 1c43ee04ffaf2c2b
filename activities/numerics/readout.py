"""Tensored readout mitigation: one 2x2 confusion matrix per measured qubit.

The matrices come from two calibration circuits (all measured qubits prepared in |0>, and all
in |1>). `confusion[i][measured, prepared]` is the probability that qubit i reads `measured`
when it holds `prepared`. Applying the per-qubit inverses to a distribution gives a
quasi-probability distribution; for product observables the same correction is a change of
the term's per-qubit factors, which costs nothing per outcome and scales to any width.
"""

from __future__ import annotations

import numpy as np

from activities.numerics.observables import Distribution, FloatArray

# Below this determinant a qubit's readout is (nearly) random and its inverse meaningless.
MIN_DETERMINANT = 1e-6


def confusion_matrices(zeros: Distribution, ones: Distribution) -> FloatArray:
    """Shape (n, 2, 2): column `prepared` is qubit i's marginal in that calibration circuit."""
    p1_given_0 = _marginal_ones(zeros)
    p1_given_1 = _marginal_ones(ones)
    confusion = np.empty((zeros.num_bits, 2, 2))
    confusion[:, 0, 0] = 1.0 - p1_given_0
    confusion[:, 1, 0] = p1_given_0
    confusion[:, 0, 1] = 1.0 - p1_given_1
    confusion[:, 1, 1] = p1_given_1
    return confusion


def inverse_matrices(confusion: FloatArray) -> FloatArray:
    determinants = np.linalg.det(confusion)
    bad = np.flatnonzero(np.abs(determinants) < MIN_DETERMINANT)
    if bad.size:
        raise ValueError(
            f"readout of qubits {bad.tolist()} cannot be inverted: their calibration circuits "
            "read |0> and |1> alike"
        )
    inverses: FloatArray = np.linalg.inv(confusion).astype(np.float64)
    return inverses


def mitigate_factors(factors: FloatArray, inverses: FloatArray) -> FloatArray:
    """Per-qubit factors f_i such that E_q[prod f_i] on the mitigated quasi-distribution q
    equals E_p[prod f'_i] on the measured p: f'_i[x] = sum_b f_i[b] inverse_i[b, x]."""
    mitigated: FloatArray = np.einsum("ib,ibx->ix", factors, inverses)
    return mitigated


def mitigate_distribution(probabilities: FloatArray, inverses: FloatArray) -> FloatArray:
    """Quasi-probabilities from a dense distribution over n bits (index = integer value of the
    bitstring, bit 0 least significant). Cost n * 2**n: meant for up to ~16 bits."""
    num_bits = len(inverses)
    tensor = probabilities.reshape((2,) * num_bits)
    for bit, inverse in enumerate(inverses):
        axis = num_bits - 1 - bit  # the most significant bit is the first axis
        tensor = np.moveaxis(np.tensordot(inverse, tensor, axes=([1], [axis])), 0, axis)
    return tensor.reshape(-1)


def _marginal_ones(distribution: Distribution) -> FloatArray:
    return (distribution.weights @ distribution.bits) / distribution.total
