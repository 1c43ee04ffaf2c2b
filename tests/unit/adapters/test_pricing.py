"""The Braket price table: published prices, matched by ARN, exact to the cent."""

from __future__ import annotations

import pytest

from adapters.errors import InvalidRequestError
from adapters.pricing import estimate_cost, price_table
from schemas.execution import CircuitBatch, CircuitSpec, ProgramSetLimits

FORTE = "arn:aws:braket:us-east-1::device/qpu/ionq/Forte-1"
SV1 = "arn:aws:braket:::device/quantum-simulator/amazon/sv1"
QASM = 'OPENQASM 2.0;\ninclude "qelib1.inc";\nqreg q[1];\ncreg c[1];\nmeasure q -> c;\n'


def batch(circuits: int) -> CircuitBatch:
    specs = [
        CircuitSpec(name=f"c{i}", qasm=QASM, num_qubits=1, num_clbits=1) for i in range(circuits)
    ]
    return CircuitBatch(circuits=specs)


def test_zne_on_ionq_forte_counts_every_circuit() -> None:
    """One ZNE run at 3 scale factors x 1,000 shots: 3 x ($0.30 + $80) = $240.90."""
    cost = estimate_cost(price_table().price_for(FORTE), batch(3), 1000)
    assert cost.usd == 240.90
    assert "3 tasks" in cost.detail and "IonQ Forte" in cost.detail


def test_a_program_set_pays_the_per_task_fee_once() -> None:
    """The QPU stand-in's example: 5 circuits x 1,000 shots at $0.30 + $0.0009 per shot cost
    5 x $1.20 = $6.00 as five tasks, $0.30 + $4.50 = $4.80 as one program set."""
    stand_in = price_table().price_for("arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16")
    limits = ProgramSetLimits(max_executables=100, max_total_shots=200_000)
    assert estimate_cost(stand_in, batch(5), 1000).usd == 6.00
    one_set = estimate_cost(stand_in, batch(5), 1000, limits)
    assert one_set.usd == 4.80
    assert "5 circuits in 1 tasks (program sets)" in one_set.detail


def test_program_sets_split_at_the_device_limits() -> None:
    """2,000 circuits of 100 shots, at most 100 executables and 5,000 shots per set: 50 per
    task, 40 tasks; the shots are billed alike either way."""
    forte = price_table().price_for(FORTE)
    limits = ProgramSetLimits(max_executables=100, max_total_shots=5_000)
    cost = estimate_cost(forte, batch(2000), 100, limits)
    assert cost.usd == pytest.approx(40 * 0.30 + 2000 * 100 * 0.08)
    assert "2000 circuits in 40 tasks" in cost.detail


@pytest.mark.parametrize(
    ("arn", "per_task_and_shot"),
    [
        ("arn:aws:braket:us-east-1::device/qpu/ionq/Forte-Enterprise-1", 0.30 + 0.08),
        ("arn:aws:braket:us-east-1::device/qpu/ionq/Aria-2", 0.30 + 0.03),
        ("arn:aws:braket:us-east-1::device/qpu/quera/Aquila", 0.30 + 0.01),
        ("arn:aws:braket:eu-north-1::device/qpu/iqm/Garnet", 0.30 + 0.00145),
        ("arn:aws:braket:us-west-1::device/qpu/rigetti/Ankaa-3", 0.30 + 0.0009),
        ("arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16", 0.30 + 0.0009),
    ],
)
def test_qpus_bill_per_task_plus_per_shot(arn: str, per_task_and_shot: float) -> None:
    assert estimate_cost(price_table().price_for(arn), batch(1), 1).usd == pytest.approx(
        per_task_and_shot, abs=1e-9
    )


def test_managed_simulators_bill_by_duration_with_a_3_second_minimum() -> None:
    sv1 = price_table().price_for(SV1)
    assert float(sv1.task_cost(shots=1000, duration_seconds=120)) == 0.15
    assert float(sv1.task_cost(shots=1000, duration_seconds=0.4)) == 0.00375  # 3 s billed
    estimate = estimate_cost(sv1, batch(2), 1000)
    assert estimate.usd == 0.0075 and "minimum" in estimate.detail
    assert price_table().price_for(SV1.replace("sv1", "dm1")).name == "DM1"


def test_the_table_is_versioned_and_dated() -> None:
    table = price_table()
    assert table.version >= 1 and table.as_of.year >= 2025
    pricing = table.pricing(table.price_for(FORTE))
    assert pricing.per_task_usd == 0.30 and pricing.per_shot_usd == 0.08
    assert pricing.as_of == table.as_of.isoformat() and f"v{table.version}" in pricing.source


def test_a_device_without_a_published_price_is_refused() -> None:
    with pytest.raises(InvalidRequestError, match="no published price") as caught:
        price_table().price_for("arn:aws:braket:us-east-1::device/qpu/acme/Toy-1")
    assert "IonQ Forte" in str(caught.value)
