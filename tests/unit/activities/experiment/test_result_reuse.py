"""`execution.reuse`: the request field, the batch fingerprint, and the results kept for reuse in
the shared database (SQLite and a real PostgreSQL server), as `qloop cache` lists and forgets
them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import ValidationError

from activities.experiment.result_reuse import batch_fingerprint, look_up, remember, reuse_summary
from activities.storage import artifact_store
from activities.storage.point_cache_inventory import (
    RESULTS,
    CacheSelection,
    cache_groups,
    count_selected,
    forget,
)
from adapters.base import Adapter
from schemas.execution import CircuitBatch, CircuitSpec, Cost, JobRef, Tier
from schemas.pipeline import FetchedResult
from schemas.request import ExperimentRequest

QPU_ARN = "arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"
QPU = f"braket/{QPU_ARN}"
MONDAY = "2026-12-07T00:00:00Z"
TUESDAY = "2026-12-08T00:00:00Z"


def request(**execution: Any) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": "reuse",
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {"shots": 100, "seed": 1, **execution},
        }
    )


def on_qpu(**execution: Any) -> ExperimentRequest:
    backend = {"provider": "braket", "device": QPU_ARN}
    return request(**{"backend": backend, "reuse": "within_calibration", **execution})


def batch(*qasm: str) -> CircuitBatch:
    return CircuitBatch(
        circuits=[
            CircuitSpec(name=f"c{i}", qasm=text, num_qubits=2, num_clbits=2)
            for i, text in enumerate(qasm or ("OPENQASM 2.0; // a", "OPENQASM 2.0; // b"))
        ]
    )


# --- the request field ------------------------------------------------------------------------


def test_reuse_is_off_unless_asked_for() -> None:
    assert request().execution.reuse == "never"
    assert request(reuse="within_calibration").execution.reuse == "within_calibration"


@pytest.mark.parametrize("value", ["always", "Within_Calibration", "", True, 1, None])
def test_an_unknown_reuse_is_refused_naming_the_allowed_values(value: object) -> None:
    with pytest.raises(ValidationError) as refused:
        request(reuse=value)
    (error,) = refused.value.errors()
    assert error["loc"] == ("execution", "reuse")
    assert "execution.reuse must be one of never, within_calibration" in error["msg"]
    assert repr(value) in error["msg"]


def test_the_json_schema_lists_the_allowed_values() -> None:
    schema = ExperimentRequest.model_json_schema()
    reuse = schema["$defs"]["ExecutionSpec"]["properties"]["reuse"]
    assert reuse["enum"] == ["never", "within_calibration"] and reuse["default"] == "never"


# --- the fingerprint ----------------------------------------------------------------------------


def test_the_fingerprint_covers_circuits_backend_shots_and_epoch() -> None:
    base = batch_fingerprint(batch(), on_qpu(), Tier.QPU, MONDAY)
    assert base == batch_fingerprint(batch(), on_qpu(), Tier.QPU, MONDAY)
    different = {
        batch_fingerprint(batch("OPENQASM 2.0; // a"), on_qpu(), Tier.QPU, MONDAY),
        batch_fingerprint(
            batch("OPENQASM 2.0; // b", "OPENQASM 2.0; // a"), on_qpu(), Tier.QPU, MONDAY
        ),
        batch_fingerprint(batch(), on_qpu(shots=101), Tier.QPU, MONDAY),
        batch_fingerprint(batch(), request(reuse="within_calibration"), Tier.QPU, MONDAY),
        batch_fingerprint(batch(), on_qpu(), Tier.QPU, TUESDAY),
        batch_fingerprint(batch(), on_qpu(), Tier.QPU, None),
    }
    assert base not in different and len(different) == 6


def test_a_qpu_ignores_the_seed_and_a_simulator_does_not() -> None:
    assert batch_fingerprint(batch(), on_qpu(seed=1), Tier.QPU, MONDAY) == batch_fingerprint(
        batch(), on_qpu(seed=2), Tier.QPU, MONDAY
    )
    noisy = {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"}
    one, two = (request(backend=noisy, seed=seed) for seed in (1, 2))
    assert batch_fingerprint(batch(), one, Tier.NOISY_SIMULATOR, MONDAY) != batch_fingerprint(
        batch(), two, Tier.NOISY_SIMULATOR, MONDAY
    )


def test_mitigation_applied_after_the_counts_does_not_change_the_fingerprint() -> None:
    """Extrapolation and confidence act on the counts: the same circuits reuse them."""
    plain = on_qpu()
    other = plain.model_copy(
        update={"mitigation": plain.mitigation.model_copy(update={"confidence_level": 0.9})}
    )
    assert batch_fingerprint(batch(), plain, Tier.QPU, MONDAY) == batch_fingerprint(
        batch(), other, Tier.QPU, MONDAY
    )


# --- the results kept for reuse -----------------------------------------------------------------


class Device:
    """An adapter as far as reuse reads one: its calibration snapshot."""

    def __init__(self, epoch: str | None) -> None:
        self.epoch = epoch

    def calibration(self) -> dict[str, str] | None:
        return None if self.epoch is None else {"updated_at": self.epoch}


def job(name: str) -> JobRef:
    return JobRef(
        provider="braket",
        device=QPU_ARN,
        job_id=f"task-{name}",
        client_token=f"token-{name}",
        submitted_at=datetime(2026, 12, 7, tzinfo=UTC),
    )


def fetched(name: str, usd: float) -> FetchedResult:
    """Counts kept in the test's artifact store (tests/conftest.py gives each test its own)."""
    counts_uri = artifact_store.put_json(name, "counts.json", [{"00": 50, "11": 50}])
    return FetchedResult(counts_uri=counts_uri, shots=100, actual_cost=Cost(usd=usd))


def as_adapter(device: Device) -> Adapter:
    return device  # type: ignore[return-value]


def test_a_stored_result_is_found_within_its_epoch_only(database_url: str) -> None:
    device = Device(MONDAY)
    first = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert first is not None and first.found is None and first.calibration_epoch == MONDAY
    assert remember(first, "exp-1", job("1"), fetched("exp-1", 0.39))
    # The first result stored wins.
    assert not remember(first, "exp-2", job("2"), fetched("exp-2", 0.39))

    again = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert again is not None and again.found is not None
    found = again.found
    assert (found.experiment_id, found.job) == ("exp-1", job("1"))
    assert found.counts_uri == artifact_store.url_of("exp-1", "counts.json")
    assert (found.backend, found.calibration_epoch, found.paid_usd) == (QPU, MONDAY, 0.39)
    summary = reuse_summary(found)
    assert "exp-1" in summary and "task-1" in summary and MONDAY in summary

    device.epoch = TUESDAY  # the device recalibrated
    after = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert after is not None and after.found is None
    assert look_up(as_adapter(device), batch(), on_qpu(reuse="never"), Tier.QPU) is None


def test_a_result_whose_counts_are_gone_is_not_reused(database_url: str) -> None:
    device = Device(MONDAY)
    first = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert first is not None
    gone = artifact_store.url_of("exp-1", "counts.json")  # never written, or deleted since
    remember(
        first,
        "exp-1",
        job("1"),
        FetchedResult(counts_uri=gone, shots=100, actual_cost=Cost(usd=0.39)),
    )
    again = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert again is not None and again.found is None


def test_cache_ls_and_purge_see_the_results(database_url: str) -> None:
    device = Device(MONDAY)
    monday = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert monday is not None
    remember(monday, "exp-1", job("1"), fetched("exp-1", 0.39))
    device.epoch = TUESDAY
    tuesday = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert tuesday is not None
    remember(tuesday, "exp-2", job("2"), fetched("exp-2", 0.39))

    groups = {(g.backend, g.calibration_epoch, g.entries, g.sweeps, g.kind) for g in cache_groups()}
    assert groups == {(QPU, MONDAY, 1, 1, RESULTS), (QPU, TUESDAY, 1, 1, RESULTS)}

    assert count_selected(CacheSelection(calibration_epoch=MONDAY)) == 1
    assert forget(CacheSelection(calibration_epoch=MONDAY)) == 1
    assert [g.calibration_epoch for g in cache_groups()] == [TUESDAY]
    device.epoch = MONDAY
    forgotten = look_up(as_adapter(device), batch(), on_qpu(), Tier.QPU)
    assert forgotten is not None and forgotten.found is None
    assert forget(CacheSelection(everything=True)) == 1
    assert cache_groups() == []
