"""The fingerprint of a parameter point: the key under which the sweep cache keeps its value
(activities/storage/point_cache.py)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence

from schemas.variational import (
    CircuitFamily,
    EvaluationSpec,
)

# Bump when the circuits a family builds change, so cached values of the old circuits are
# not taken for the new ones.
FINGERPRINT_VERSION = 1


# Parameters are fingerprinted at 12 decimals: a grid computed twice (or 0.1 + 0.2 against
# 0.3) is the same point, any difference a circuit could resolve is not.
FINGERPRINT_DECIMALS = 12


def point_fingerprint(
    family: CircuitFamily, point: Sequence[float], evaluation: EvaluationSpec
) -> str:
    """sha256 over canonical JSON of everything that decides a point's value: the family, the
    parameters (rounded, as repr of floats), backend, shots, seed, ZNE and readout settings."""
    identity = {
        "version": FINGERPRINT_VERSION,
        "family": family.model_dump(mode="json"),
        "parameters": [repr(_rounded(value)) for value in point],
        "backend": evaluation.backend.model_dump(mode="json"),
        "shots": evaluation.shots,
        "seed": evaluation.seed,
        "zne": None if evaluation.zne is None else evaluation.zne.model_dump(mode="json"),
        "readout": evaluation.readout,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def with_calibration(fingerprint: str, calibration_epoch: str | None) -> str:
    """A point's fingerprint within one calibration epoch of its backend
    (adapters/calibration_epochs.py): a new epoch makes every point new, so a sweep measures
    again after a recalibration. Without an epoch (an ideal simulator) the fingerprint stays
    what `point_fingerprint` gives, so caches and histories from before epochs stay valid."""
    if calibration_epoch is None:
        return fingerprint
    return hashlib.sha256(f"{fingerprint}@{calibration_epoch}".encode()).hexdigest()


def _rounded(value: float) -> float:
    rounded = round(float(value), FINGERPRINT_DECIMALS)
    return rounded + 0.0  # -0.0 and 0.0 are the same angle
