"""Local simulation as a compute activity: the batch `plan` stored is simulated in a child
process of the compute pool (heartbeating), and its counts go to the artifact store, where
`mitigate` or `score_batch` read them on whatever host they run. A run lost with its host is
redone by another host with the same seed, so it gives the same counts; no job lives on a
worker's disk and nothing but this activity runs a simulator.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from activities.runtime.heartbeats import in_child_with_heartbeats
from activities.storage import artifact_store
from adapters.base import LocalSimulator
from adapters.errors import InvalidRequestError
from adapters.registry import get_adapter
from schemas import activity_contracts
from schemas.activity_contracts import implements
from schemas.execution import Cost, JobRef
from schemas.pipeline import FetchedResult, PlannedBatch, Simulated, SimulateInput

COUNTS_ARTIFACT = "counts.json"


def seed_of(input: SimulateInput) -> int:
    """The requested seed, else one derived from the run's client token: never a random one,
    since a run redone elsewhere must give the same counts."""
    if input.seed is not None:
        return input.seed
    return int.from_bytes(hashlib.sha256(input.client_token.encode()).digest()[:4]) >> 1


def simulate(input: SimulateInput) -> Simulated:
    adapter = get_adapter(input.backend)
    if not isinstance(adapter, LocalSimulator):
        raise InvalidRequestError(
            f"{input.backend.provider} device {input.backend.device!r} is not a local simulator"
        )
    planned = artifact_store.read_model(input.batch_uri, PlannedBatch)
    started = datetime.now(UTC)
    result = adapter.simulate_here(planned.batch, input.shots, seed_of(input))
    counts_uri = artifact_store.put_model(input.artifact_folder, COUNTS_ARTIFACT, result)
    job = JobRef(
        provider=input.backend.provider,
        device=input.backend.device,
        job_id=input.client_token,
        client_token=input.client_token,
        submitted_at=started,
    )
    fetched = FetchedResult(
        counts_uri=counts_uri,
        shots=result.shots,
        actual_cost=Cost(usd=0.0, detail="local simulator"),
    )
    return Simulated(job=job, fetched=fetched)


@implements(activity_contracts.simulate)
async def simulate_activity(input: SimulateInput) -> Simulated:
    return await in_child_with_heartbeats(simulate, input)
