"""What every local simulator adapter (Aer, Braket's local simulators) shares: it is free, it
runs a batch where it is asked to with the run's seed (`simulate_here`, inside the `simulate`
compute activity), and it answers the asynchronous job contract of remote hardware from the
on-disk job store of adapters/local_jobs.py for histories recorded before that activity."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from adapters import local_jobs
from adapters.job_limits import check_job_size
from adapters.local_jobs import JobStore, NoiseChoice
from adapters.profiles import profile_calibration
from schemas.execution import CircuitBatch, Cost, JobRef, JobResult, JobStatus
from schemas.profile import DeviceProfile


class LocalSimulatorAdapter:
    """The protocol's cost, calibration and job methods; a subclass adds `capabilities`."""

    def __init__(
        self,
        *,
        provider: str,
        device: str,
        noise: NoiseChoice,
        profile: DeviceProfile | None,
        store: JobStore,
        job_prefix: str,
        cost_detail: str,
    ) -> None:
        self.provider = provider
        self.device = device
        self._noise = noise
        self._profile = profile
        self._store = store
        self._job_prefix = job_prefix
        self._cost_detail = cost_detail

    def estimate_cost(self, batch: CircuitBatch, shots: int) -> Cost:
        return Cost(usd=0.0, detail=self._cost_detail)

    def calibration(self) -> dict[str, str] | None:
        return profile_calibration(self._profile)

    def submit(
        self,
        batch: CircuitBatch,
        shots: int,
        client_token: str,
        seed: int | None,
        tags: Mapping[str, str] | None = None,
    ) -> JobRef:
        check_job_size(batch, shots)
        return self._store.submit(self._new_request(batch, shots, client_token, seed))

    def status(self, job: JobRef) -> JobStatus:
        return self._store.status(*self._job(job))

    def result(self, job: JobRef) -> JobResult:
        job_dir, _ = self._job(job)
        return self._store.result(job_dir, job.job_id)

    def cancel(self, job: JobRef) -> None:
        job_dir, _ = self._job(job)
        self._store.cancel(job_dir)

    def billed(self, job: JobRef) -> Cost | None:
        return local_jobs.free_once_ended(self.status(job))

    def simulate_here(self, batch: CircuitBatch, shots: int, seed: int) -> JobResult:
        check_job_size(batch, shots)
        request = self._new_request(batch, shots, "here", seed)
        return JobResult.model_validate(self._store.simulate(request))

    def _new_request(
        self, batch: CircuitBatch, shots: int, token: str, seed: int | None
    ) -> dict[str, Any]:
        return local_jobs.new_job_request(
            self._job_prefix, self.provider, self.device, self._noise, batch, shots, token, seed
        )

    def _job(self, job: JobRef) -> tuple[Path, dict[str, Any]]:
        return local_jobs.owned_job(self._store, job, self.provider, self.device, self._noise)
