"""Prevalidation throughput of each local simulator on the QASMBench corpus.

For every backend (Aer ideal, Aer noisy, Braket braket_sv, Braket braket_dm), every corpus
circuit qloop accepts goes through qloop's own preprocess and plan for that backend (ZNE and
readout off) and then through the adapter (submit, poll, result) at 1,000 shots. The table says
how many circuits each backend ran, which it cannot run and why, its throughput, and how much
slower it is than the fastest backend on the circuits every backend ran, so the planner can
pick the fastest simulator that can run a circuit.

    python bench/providers.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
# Artifacts and local jobs of a benchmark are scratch: never mixed into a developer's home.
os.environ["QLOOP_HOME"] = tempfile.mkdtemp(prefix="qloop-bench-providers-")

from activities.experiment.admission import AdmissionError  # noqa: E402
from activities.experiment.plan import plan  # noqa: E402
from activities.experiment.preprocess import preprocess  # noqa: E402
from activities.numerics.circuits import parse_qasm, to_logical  # noqa: E402
from activities.storage import artifact_store  # noqa: E402
from adapters.errors import ProviderError  # noqa: E402
from adapters.registry import get_adapter  # noqa: E402
from schemas.execution import CircuitBatch, JobState  # noqa: E402
from schemas.pipeline import PlanInput, PlannedBatch, PreprocessInput  # noqa: E402
from schemas.request import BackendChoice, ExperimentRequest  # noqa: E402

CORPUS = REPO_ROOT.parent / "shared" / "corpus" / "qasmbench"
SHOTS = 1000
SEED = 7
POLL_SECONDS = 0.005
BACKENDS = {
    "aer ideal": BackendChoice(provider="aer", device="ideal"),
    "aer noisy": BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe"),
    "braket_sv": BackendChoice(provider="braket", device="braket_sv"),
    "braket_dm": BackendChoice(
        provider="braket", device="braket_dm", noise_profile="ibm_guadalupe"
    ),
}


@dataclass
class Outcome:
    backend: str
    seconds: dict[str, float] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)

    def total(self, circuits: set[str] | None = None) -> float:
        return sum(s for name, s in self.seconds.items() if circuits is None or name in circuits)


def corpus() -> dict[str, str]:
    return {path.stem: path.read_text() for path in sorted(CORPUS.glob("*.qasm"))}


def request_for(qasm: str, backend: BackendChoice) -> ExperimentRequest:
    width = to_logical(parse_qasm(qasm)).num_qubits
    return ExperimentRequest.model_validate(
        {
            "name": "bench-providers",
            "problem": {
                "kind": "qasm",
                "qasm": qasm,
                "observable": {"kind": "bitstring_probability", "bitstrings": ["0" * width]},
            },
            "execution": {"shots": SHOTS, "seed": SEED, "backend": backend.model_dump()},
            "mitigation": {"zne": None, "readout": False},
        }
    )


def planned_batch(request: ExperimentRequest) -> CircuitBatch:
    experiment_id = f"bench-{uuid.uuid4().hex[:12]}"
    prepared = preprocess(PreprocessInput(experiment_id=experiment_id, request=request))
    planned = plan(PlanInput(experiment_id=experiment_id, request=request, prepared=prepared))
    return artifact_store.read_model(planned.batch_uri, PlannedBatch).batch


def run_once(qasm: str, backend: BackendChoice) -> float:
    """Seconds from the request to the counts; raises when the backend cannot run it."""
    started = time.perf_counter()
    request = request_for(qasm, backend)
    adapter = get_adapter(backend)
    job = adapter.submit(planned_batch(request), SHOTS, uuid.uuid4().hex, SEED)
    while not (state := adapter.status(job).state).is_final:
        time.sleep(POLL_SECONDS)
    if state is not JobState.DONE:
        raise ProviderError(f"job ended {state}: {adapter.status(job).message}")
    adapter.result(job)
    return time.perf_counter() - started


def accepted(circuits: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The circuits qloop admits at all (as tests/unit/activities/experiment/test_corpus.py), and
    why the rest not."""
    admitted: dict[str, str] = {}
    refused: dict[str, str] = {}
    for name, qasm in circuits.items():
        try:
            planned_batch(request_for(qasm, BACKENDS["aer ideal"]))
        except (AdmissionError, ValueError) as error:
            refused[name] = str(error).splitlines()[0]
        else:
            admitted[name] = qasm
    return admitted, refused


def measure(label: str, backend: BackendChoice, circuits: dict[str, str]) -> Outcome:
    outcome = Outcome(label)
    # Untimed warm-up: noise models and simulators are built once per worker, not per circuit.
    run_once(next(iter(circuits.values())), backend)
    for name, qasm in circuits.items():
        try:
            outcome.seconds[name] = run_once(qasm, backend)
        except (AdmissionError, ProviderError) as error:
            outcome.refused[name] = _short(error)
    return outcome


def _short(error: Exception) -> str:
    text = str(error).splitlines()[0]
    return text if len(text) <= 90 else text[:87] + "..."


def table(outcomes: list[Outcome], total_circuits: int) -> str:
    common = set.intersection(*(set(o.seconds) for o in outcomes))
    fastest = min(o.total(common) for o in outcomes)
    lines = [
        f"| backend | ran (of {total_circuits}) | cannot run | total s | circuits/s | "
        f"s on the {len(common)} common circuits | × fastest | slowest circuit |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        rate = len(o.seconds) / o.total() if o.seconds else 0.0
        slowest = max(o.seconds, key=o.seconds.__getitem__, default=None)
        slow = "-" if slowest is None else f"{slowest} ({o.seconds[slowest]:.2f} s)"
        lines.append(
            f"| {o.backend} | {len(o.seconds)} | {', '.join(sorted(o.refused)) or 'none'} | "
            f"{o.total():.2f} | {rate:.1f} | {o.total(common):.2f} | "
            f"{o.total(common) / fastest:.1f} | {slow} |"
        )
    return "\n".join(lines)


def main() -> None:
    started = time.perf_counter()
    circuits, refused = accepted(corpus())
    print(f"{len(circuits)} QASMBench circuits accepted by qloop, {len(refused)} refused:")
    for name, reason in refused.items():
        print(f"  {name}: {reason}")
    outcomes = [measure(label, backend, circuits) for label, backend in BACKENDS.items()]
    print(f"\n{SHOTS} shots per circuit, preprocess + plan + submit + poll + result each:\n")
    print(table(outcomes, len(circuits)))
    for outcome in outcomes:
        for name, reason in outcome.refused.items():
            print(f"  {outcome.backend} cannot run {name}: {reason}")
    print(f"\nbenchmark took {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
