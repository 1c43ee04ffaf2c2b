"""`qloop cache ls|show|purge` on both databases the cache runs on (SQLite and a real PostgreSQL
server): values grouped by backend and calibration epoch, one value with its provenance, and
purges that forget exactly what they select, only when confirmed."""

from __future__ import annotations

import json

import pytest

import starter
from activities.storage.point_cache import SCHEMA, cached_values, store_in_cache
from adapters.shared_database import shared_database
from cli.output import EXIT_DONE, EXIT_INVALID, EXIT_NOT_ALLOWED
from schemas.variational import PointValue

QPU = "braket/arn:aws:braket:us-east-1::device/qpu/qloop/Guadalupe-16"
MONDAY = "2026-12-07 00:00:00+00:00"
TUESDAY = "2026-12-08 00:00:00+00:00"


def value(fingerprint: str, measured: float) -> PointValue:
    return PointValue(
        parameters=[measured, 0.5],
        fingerprint=fingerprint,
        value=measured,
        std_error=0.01,
        raw=measured - 0.1,
    )


@pytest.fixture
def filled(database_url: str) -> str:
    """Two epochs of the QPU, an ideal simulator's values, and one value stored before the
    cache kept origins."""
    store_in_cache(
        "qpu-1",
        "batch-00000",
        [value("aa01", 1.0), value("aa02", 2.0)],
        backend=QPU,
        calibration_epoch=MONDAY,
    )
    store_in_cache(
        "qpu-2", "batch-00000", [value("bb01", 3.0)], backend=QPU, calibration_epoch=TUESDAY
    )
    store_in_cache("ideal-1", "batch-00001", [value("cc01", 4.0)], backend="aer/ideal")
    with shared_database().transaction(SCHEMA) as tx:
        tx.changed(
            "INSERT INTO point_values VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                "dd01",
                5.0,
                0.01,
                4.9,
                "[5.0]",
                "old-sweep",
                "batch-00000",
                "2026-01-01T00:00:00+00:00",
            ],
        )
    return database_url


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = starter.main(["cache", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def groups(capsys: pytest.CaptureFixture[str]) -> dict[tuple[str | None, str | None], int]:
    code, out, _ = run(capsys, "ls", "--json")
    assert code == EXIT_DONE
    return {(g["backend"], g["calibration_epoch"]): g["entries"] for g in json.loads(out)}


def test_ls_groups_values_by_backend_and_calibration_epoch(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "ls", "--json")
    assert code == EXIT_DONE
    listed = json.loads(out)
    assert {(g["backend"], g["calibration_epoch"], g["entries"], g["sweeps"]) for g in listed} == {
        (QPU, MONDAY, 2, 1),
        (QPU, TUESDAY, 1, 1),
        ("aer/ideal", None, 1, 1),
        (None, None, 1, 1),
    }
    # Newest first: the value from before origins were kept comes last.
    assert listed[-1]["backend"] is None and listed[-1]["newest"].startswith("2026-01-01")

    code, out, _ = run(capsys, "ls")
    assert code == EXIT_DONE
    lines = out.splitlines()
    assert lines[0].split() == [
        "backend",
        "calibration",
        "epoch",
        "values",
        "sweeps",
        "oldest",
        "newest",
        "kind",
    ]
    assert any(line.startswith(QPU) and MONDAY in line for line in lines)
    assert any(line.startswith("(unrecorded)") for line in lines)


def test_show_gives_one_value_with_its_provenance(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "show", "bb", "--json")
    assert code == EXIT_DONE
    shown = json.loads(out)
    assert shown == {
        "fingerprint": "bb01",
        "value": 3.0,
        "std_error": 0.01,
        "raw": pytest.approx(2.9),
        "parameters": "[3.0, 0.5]",
        "sweep_id": "qpu-2",
        "label": "batch-00000",
        "stored_at": shown["stored_at"],
        "backend": QPU,
        "calibration_epoch": TUESDAY,
    }
    code, out, _ = run(capsys, "show", "dd01")
    assert code == EXIT_DONE
    assert "(unrecorded)" in out and "old-sweep (batch-00000)" in out

    code, _, err = run(capsys, "show", "aa")
    assert code == EXIT_INVALID and "aa01" in err and "aa02" in err
    code, _, err = run(capsys, "show", "ff")
    assert code == EXIT_NOT_ALLOWED and "no cached value" in err


def test_purge_forgets_what_it_selects_and_only_when_confirmed(
    filled: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run(capsys, "purge")
    assert code == EXIT_INVALID and "--all" in err

    # Not confirmed (stdin is not a terminal here): nothing forgotten.
    code, _, err = run(capsys, "purge", "--epoch", MONDAY)
    assert code == EXIT_INVALID and "2 cached values match" in err and "--yes" in err
    assert len(cached_values(["aa01", "aa02"])) == 2

    code, out, _ = run(capsys, "purge", "--backend", QPU, "--epoch", MONDAY, "--yes", "--json")
    assert (code, json.loads(out)) == (EXIT_DONE, {"forgotten": 2})
    assert cached_values(["aa01", "aa02", "bb01"]).keys() == {"bb01"}

    # Criteria combine: the ideal simulator has no Tuesday values.
    code, out, _ = run(capsys, "purge", "--backend", "aer/ideal", "--epoch", TUESDAY, "--yes")
    assert code == EXIT_DONE and "forgot 0" in out

    code, out, _ = run(capsys, "purge", "--older-than", "30d", "--yes")
    assert code == EXIT_DONE and "forgot 1 " in out
    assert groups(capsys) == {(QPU, TUESDAY): 1, ("aer/ideal", None): 1}

    code, out, _ = run(capsys, "purge", "--all", "--yes")
    assert code == EXIT_DONE and "forgot 2 " in out
    assert groups(capsys) == {}
    with shared_database().transaction(SCHEMA) as tx:
        assert tx.rows("SELECT COUNT(*) FROM point_origins") == [(0,)]


def test_purge_refuses_a_duration_that_is_not_one(
    database_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit:
        starter.main(["cache", "purge", "--older-than", "soon", "--yes"])
    assert exit.value.code == EXIT_INVALID
    assert "'soon' is not" in capsys.readouterr().err
