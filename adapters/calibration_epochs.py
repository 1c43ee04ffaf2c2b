"""A backend's calibration epoch: the timestamp its provider reports for the calibration in force,
as the provider writes it (Braket: GetDevice's deviceCapabilities.service.updatedAt; a noisy
simulator: its profile's `calibrated_at`). Results measured in one epoch stay valid until the
next; an ideal simulator has no calibration and so no epoch.

The epoch is compared as an opaque string, never parsed: two readings of the same calibration
give the same text, and any change of it, forwards or not, starts a new epoch.
"""

from __future__ import annotations

from collections.abc import Mapping

from adapters.base import Adapter

# The snapshot keys that carry the timestamp (adapters/braket_aws.py, adapters/profiles.py).
EPOCH_KEYS = ("updated_at", "calibrated_at")


def epoch_of(snapshot: Mapping[str, str] | None) -> str | None:
    """The calibration epoch a calibration snapshot names; None without one."""
    if snapshot is None:
        return None
    return next((snapshot[key] for key in EPOCH_KEYS if snapshot.get(key)), None)


def current_epoch(adapter: Adapter) -> str | None:
    """The backend's calibration epoch now (one GetDevice for a Braket device)."""
    return epoch_of(adapter.calibration())
