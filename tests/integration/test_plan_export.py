"""`qloop plan FILE`: the circuits qloop would submit, written for someone who runs them outside
qloop, planned against the QPU stand-in's real GetDevice; and what it refuses before planning."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from braket.aws import AwsDevice, AwsSession
from braket.ir.openqasm import Program as OpenQasmProgram

import starter
from tests.braket_calls import BUCKET, plain_client, task_when_ended
from tests.harness import OFFLINE_QPU, QPU, LocalStack

pytestmark = pytest.mark.integration

GHZ_WITH_READOUT = {
    "name": "exported-ghz",
    "problem": {"kind": "ghz", "num_qubits": 3},
    "execution": {"shots": 100, "backend": {"provider": "aer", "device": "ideal"}},
    "mitigation": {"zne": {"scale_factors": [1, 3]}, "readout": True},
}


def plan(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    try:
        code = starter.main(["plan", *args])
    except SystemExit as exit:  # the refusals before planning exit as `qloop run`'s do
        code = int(str(exit.code))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def request_file(folder: Path, document: dict[str, object], name: str = "request") -> str:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(document))
    return str(path)


def test_the_plan_names_every_circuit_and_its_files_run_on_the_device(
    standin: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    standin.set_faults()
    out = tmp_path / "plan"
    code, stdout, stderr = plan(
        capsys,
        request_file(tmp_path, GHZ_WITH_READOUT),
        "--device",
        QPU,
        "--out",
        str(out),
        "--json",
    )
    assert code == 0, stderr
    document = json.loads(stdout)
    assert json.loads((out / "plan.json").read_text()) == document
    # Measurement bases of a GHZ parity (one, Z...Z) x scale factors, then readout calibration.
    assert [(c["kind"], c["scale_factor"], c["prepared_bits"]) for c in document["circuits"]] == [
        ("observable", 1.0, None),
        ("observable", 3.0, None),
        ("readout_calibration", None, "000"),
        ("readout_calibration", None, "111"),
    ]
    assert (document["device"], document["shots"]) == (QPU, 100)
    # The device runs program sets: qloop would send the four circuits as one task.
    (task,) = document["tasks"]
    assert task["shots"] == 400
    assert task["action"]["braketSchemaHeader"]["name"] == "braket.ir.openqasm.program_set"
    assert document["estimated_cost_usd"] == pytest.approx(0.30 + 400 * 0.0009)

    # Each file is a program the device runs, as a notebook would submit it.
    device = AwsDevice(QPU, AwsSession())
    braket = plain_client(standin.standin_url)
    for circuit in document["circuits"]:
        source = (out / circuit["file"]).read_text()
        task_arn = device.run(OpenQasmProgram(source=source), (BUCKET, "exported"), shots=10).id
        assert task_when_ended(braket, task_arn)["status"] == "COMPLETED"


def test_invalid_requests_and_devices_are_refused_before_planning(
    standin: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = request_file(tmp_path, GHZ_WITH_READOUT)
    code, _, stderr = plan(capsys, path, "--device", "qpu-please")
    assert code == 2 and "is not a Braket device ARN" in stderr

    code, _, stderr = plan(capsys, path, "--out", str(tmp_path / "never"))
    assert code == 2 and "the request's backend is aer (give --device ARN)" in stderr
    assert not (tmp_path / "never").exists()

    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "circuit-000.qasm").write_text("OPENQASM 3.0;")
    code, _, stderr = plan(capsys, path, "--device", QPU, "--out", str(taken))
    assert code == 2 and "exists and is not an empty folder" in stderr

    broken = request_file(tmp_path, {**GHZ_WITH_READOUT, "problem": {"kind": "ghz"}}, "broken")
    code, _, stderr = plan(capsys, broken, "--device", QPU)
    assert code == 2 and "num_qubits" in stderr

    standin.set_faults()
    code, _, stderr = plan(capsys, path, "--device", OFFLINE_QPU, "--out", str(tmp_path / "off"))
    # As `qloop run` refuses it: only an ONLINE device accepts work.
    assert code == 2 and "is OFFLINE; only an ONLINE device accepts work" in stderr, stderr
    assert not (tmp_path / "off").exists()
