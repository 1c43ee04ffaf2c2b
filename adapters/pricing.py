"""Published Amazon Braket prices from a versioned, dated table: prices/braket-<date>.json.

A QPU bills per task plus per shot; a managed simulator (SV1, DM1) bills per minute of
execution with a minimum per task. Devices are matched by the part of their ARN after
`device/` (region-independent), with shell-style wildcards for device generations. Amounts
are Decimal so that a published price times a shot count is exact to the cent.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from adapters.errors import InvalidRequestError
from adapters.program_sets import task_sizes
from schemas.execution import CircuitBatch, Cost, Pricing, ProgramSetLimits

PRICE_DIR = Path(__file__).with_name("prices")
SECONDS_PER_MINUTE = Decimal(60)


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DevicePrice(_Frozen):
    name: str
    kind: Literal["qpu", "simulator"]
    pattern: str
    per_task_usd: Decimal = Decimal(0)
    per_shot_usd: Decimal = Decimal(0)
    per_minute_usd: Decimal = Decimal(0)
    minimum_billed_seconds: Decimal = Decimal(0)

    def task_cost(self, shots: int, duration_seconds: float | None = None) -> Decimal:
        """What one task costs: per task + per shot on a QPU; on a simulator, its billed
        duration (at least the minimum; the minimum when the duration is unknown)."""
        if self.kind == "qpu":
            return self.per_task_usd + self.per_shot_usd * shots
        seconds = Decimal(str(duration_seconds)) if duration_seconds is not None else Decimal(0)
        billed = max(seconds, self.minimum_billed_seconds)
        return self.per_minute_usd * billed / SECONDS_PER_MINUTE


class PriceTable(_Frozen):
    version: int
    as_of: date
    currency: Literal["USD"]
    source: str
    # How a program set (many programs in one task) is billed, with its source and date.
    program_sets: str
    devices: list[DevicePrice]

    def price_for(self, device_arn: str) -> DevicePrice:
        """The price of the device with this ARN; a device without a published price is
        refused, since a budget cannot be enforced on an unknown cost."""
        _, _, resource = device_arn.partition(":device/")
        for device in self.devices:
            if fnmatchcase(resource, device.pattern):
                return device
        known = ", ".join(device.name for device in self.devices)
        raise InvalidRequestError(
            f"no published price for {device_arn!r} in Braket price table v{self.version} "
            f"({self.as_of}); priced devices: {known}"
        )

    def pricing(self, device: DevicePrice) -> Pricing:
        return Pricing(
            per_task_usd=float(device.per_task_usd),
            per_shot_usd=float(device.per_shot_usd),
            per_minute_usd=float(device.per_minute_usd),
            minimum_billed_seconds=float(device.minimum_billed_seconds),
            source=f"Braket price table v{self.version}: {device.name} ({self.source})",
            as_of=self.as_of.isoformat(),
        )


@lru_cache(maxsize=1)
def price_table() -> PriceTable:
    """The newest table in adapters/prices/ (file names sort by their date)."""
    newest = max(PRICE_DIR.glob("braket-*.json"))
    return PriceTable.model_validate_json(newest.read_text())


def estimate_cost(
    device: DevicePrice, batch: CircuitBatch, shots: int, limits: ProgramSetLimits | None = None
) -> Cost:
    """Every executed circuit of the batch (ZNE's folded circuits and every binding of a
    template included) runs `shots` times, in as many tasks as adapters/program_sets.py makes
    of them: one each, or program sets where the device runs them (one per-task fee per program
    set, the per-shot fee on every executable's shots: the table's `program_sets` rule)."""
    circuits = batch.num_executions
    tasks = len(task_sizes(circuits, shots, limits))
    grouping = f"{circuits} circuits in {tasks} tasks" + (
        " (program sets)" if tasks < circuits else ""
    )
    if device.kind == "qpu":
        total = device.per_task_usd * tasks + device.per_shot_usd * shots * circuits
        detail = (
            f"{grouping} x ${device.per_task_usd} per task + {circuits * shots} shots x "
            f"${device.per_shot_usd} on {device.name}"
        )
    else:
        total = device.task_cost(shots) * tasks
        detail = (
            f"{grouping} x the {device.minimum_billed_seconds} s minimum at "
            f"${device.per_minute_usd}/min on {device.name}; billed by actual duration"
        )
    return Cost(usd=float(round(total, 6)), detail=detail)
