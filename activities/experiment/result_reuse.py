"""Reusing an earlier experiment's result (`execution.reuse: within_calibration`).

Plan fingerprints the batch it built and looks the fingerprint up (`look_up`); when an earlier
experiment stored counts under it, the workflow takes them instead of submitting, and pays
nothing. Postprocess stores the counts of every run that asked for reuse (`remember`), so the
next one finds them.

The fingerprint covers what decides the counts: every executed circuit in order (name and
OpenQASM hash: the measurement bases of the observable, every ZNE scale factor as folded, the
readout-calibration circuits), the backend, the shots, and on a simulator the seed (a QPU ignores
it; random folding's seed is already in the folded circuits). Extrapolation, confidence level and
the observable's coefficients are not in it: they act on the counts after the fact, so a request
that differs only in them reuses the counts and mitigates them its own way. Over that, the
backend's calibration epoch (adapters/calibration_epochs.py) read at planning, before anything
runs: a recalibration makes every result new. An ideal simulator has no epoch and so reuses by
the plain fingerprint (its results never drift; with a fixed seed they are even the same counts).
A result whose counts artifact is gone from the artifact store is not reused: the experiment runs.
"""

from __future__ import annotations

import hashlib
import json

from activities.governance.policy import backend_name
from activities.storage import artifact_store
from activities.storage.result_cache import store_result, stored_result
from activities.variational.point_fingerprints import with_calibration
from adapters.base import Adapter
from adapters.calibration_epochs import current_epoch
from schemas.execution import CircuitBatch, JobRef, Tier
from schemas.pipeline import FetchedResult, ReuseLookup
from schemas.report import ReusedResult
from schemas.request import ExperimentRequest

# Bump when what a batch's counts mean changes (its circuit order or roles), so stored results of
# the old layout are never taken for the new one.
RESULT_FINGERPRINT_VERSION = 1


def batch_fingerprint(
    batch: CircuitBatch, request: ExperimentRequest, tier: Tier, calibration_epoch: str | None
) -> str:
    """sha256 over canonical JSON of the executed circuits, backend, shots and (simulators) seed,
    then within the calibration epoch (`with_calibration`, as a sweep point's)."""
    execution = request.execution
    identity = {
        "kind": "experiment-batch",
        "version": RESULT_FINGERPRINT_VERSION,
        "circuits": [
            [spec.name, hashlib.sha256(spec.qasm.encode()).hexdigest()] for spec in batch.circuits
        ],
        "backend": execution.backend.model_dump(mode="json"),
        "shots": execution.shots,
        "seed": None if tier is Tier.QPU else execution.seed,
    }
    canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return with_calibration(hashlib.sha256(canonical.encode()).hexdigest(), calibration_epoch)


def look_up(
    adapter: Adapter, batch: CircuitBatch, request: ExperimentRequest, tier: Tier
) -> ReuseLookup | None:
    """The lookup for a request that asked for reuse (None for one that did not): the batch's
    fingerprint in the backend's current epoch (one GetDevice on Braket) and what it holds."""
    if request.execution.reuse != "within_calibration":
        return None
    epoch = current_epoch(adapter)
    fingerprint = batch_fingerprint(batch, request, tier, epoch)
    found = stored_result(fingerprint)
    if found is not None and not _readable(found.counts_uri):
        found = None  # the earlier experiment's artifacts are gone: run again
    return ReuseLookup(
        fingerprint=fingerprint,
        backend=backend_name(request.execution.backend),
        calibration_epoch=epoch,
        found=found,
    )


def _readable(uri: str) -> bool:
    try:
        artifact_store.read_bytes(uri)
    except FileNotFoundError:
        return False
    return True


def remember(lookup: ReuseLookup, experiment_id: str, job: JobRef, fetched: FetchedResult) -> bool:
    """Stores a run's counts under the fingerprint planning computed (its epoch is the one read
    before the run, so a recalibration while it queued leaves the result in the old epoch, where
    nothing looks any more, never in the new one). False when a result was already there."""
    return store_result(
        lookup.fingerprint,
        backend=lookup.backend,
        calibration_epoch=lookup.calibration_epoch,
        experiment_id=experiment_id,
        job=job,
        counts_uri=fetched.counts_uri,
        shots=fetched.shots,
        paid_usd=fetched.actual_cost.usd,
    )


def reuse_summary(found: ReusedResult) -> str:
    """The report's reason for a reused answer."""
    epoch = found.calibration_epoch or "none (ideal simulator)"
    return (
        f"reused the counts of experiment {found.experiment_id} (job {found.job.job_id}) on "
        f"{found.backend}, calibration epoch {epoch}, stored {found.stored_at}; nothing was "
        f"submitted or paid (that run paid ${found.paid_usd:.2f})"
    )
