"""What GetDevice says about a Braket device, read with the Braket schemas alone (no SDK, no
simulator), so the calls that submit and poll tasks stay light."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from braket.device_schema import DeviceCapabilities
from braket.schema_common import BraketSchemaBase

from schemas.execution import ProgramSetLimits

ARN_PREFIX = "arn:aws:braket:"
OPENQASM_ACTION = "braket.ir.openqasm.program"
PROGRAM_SET_ACTION = "braket.ir.openqasm.program_set"


@dataclass(frozen=True)
class BraketDevice:
    arn: str
    status: str
    is_qpu: bool
    properties: DeviceCapabilities

    @classmethod
    def from_get_device(cls, response: dict[str, Any]) -> BraketDevice:
        return cls(
            arn=response["deviceArn"],
            status=response["deviceStatus"],
            is_qpu=response["deviceType"] == "QPU",
            properties=BraketSchemaBase.parse_raw_schema(response["deviceCapabilities"]),
        )

    @property
    def supported_gates(self) -> set[str]:
        return {op.lower() for op in self.properties.action[OPENQASM_ACTION].supportedOperations}

    @property
    def native_gates(self) -> set[str]:
        if not self.is_qpu:
            return set()
        return {gate.lower() for gate in self.properties.paradigm.nativeGateSet}

    @property
    def qubit_count(self) -> int:
        return int(self.properties.paradigm.qubitCount)

    @property
    def shots_range(self) -> tuple[int, int]:
        low, high = self.properties.service.shotsRange
        return int(low), int(high)

    @property
    def program_set_limits(self) -> ProgramSetLimits | None:
        """What the device's program-set action allows; None where it offers none."""
        action = self.properties.action.get(PROGRAM_SET_ACTION)
        if action is None:
            return None
        return ProgramSetLimits(
            max_executables=action.maximumExecutables,
            max_total_shots=action.maximumTotalShots,
            min_total_shots=action.minimumTotalShots,
        )
