"""When an emulated device was last calibrated: the start of its current calibration epoch,
which GetDevice reports as deviceCapabilities.service.updatedAt.

A device's calibration changes at the latest of three moments that are not in the future:
- its profile's `calibrated_at` (the snapshot its noise model comes from);
- every multiple of its `calibration_period_s` since the Unix epoch (86400: 00:00 UTC daily);
- its `recalibrated_at`, which tests and operators set through POST /_admin/config to
  recalibrate it now (or at a chosen time).
The noise model itself stays the profile's: only the epoch moves, which is what tells a client
that results measured before it are stale.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime

from qpu_standin.config import Device
from schemas.profile import DeviceProfile


def calibration_start(device: Device, profile: DeviceProfile | None, now: float) -> datetime | None:
    """The start of the calibration epoch `now` (epoch seconds) lies in; None for a device that
    is never calibrated (no profile, no period, no recalibration)."""
    moments: list[float] = []
    if profile is not None:
        moments.append(datetime.fromisoformat(profile.calibrated_at).timestamp())
    if device.calibration_period_s is not None:
        period = device.calibration_period_s
        moments.append(math.floor(now / period) * period)
    if device.recalibrated_at is not None:
        moments.append(device.recalibrated_at)
    past = [moment for moment in moments if moment <= now]
    if not past:
        return None
    return datetime.fromtimestamp(max(past), UTC)
