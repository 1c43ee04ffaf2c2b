"""Messages people and ops tooling send to a running experiment, and the record it keeps of them.

Every message is plain JSON, the same whether it comes from the CLI, the Web UI or
`temporal workflow signal|update`:
- approve / reject:  {"approver": "alice", "reason": "within the quarter's plan"}
  and, where the account's policy requires signed decisions, "signature": {"experiment": ID,
  "run_id": RUN, "issued_at": "2025-06-01T12:00:00Z", "key_id": "16 hex", "value": "base64"}
  (`qloop approve ID --as NAME --key FILE --print-json` prints it; schemas/signatures.py says
  what is signed)
- pause / resume / cancel:  {"by": "ops-bot", "reason": "device calibration at 14:00"}
- reroute:  {"backend": {"provider": "aer", "device": "noisy", "noise_profile": "ibm_guadalupe"},
             "by": "ops-bot", "reason": "Guadalupe queue > 6 h"}
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.policy import ApproverName
from schemas.request import BackendChoice, StrictModel
from schemas.signatures import DecisionSignature

APPROVE = "approve"
REJECT = "reject"
PAUSE = "pause"
RESUME = "resume"
REROUTE = "reroute"
CANCEL = "cancel"


class ApprovalDecision(StrictModel):
    approver: ApproverName
    reason: Annotated[str, Field(max_length=1000)] = ""
    signature: DecisionSignature | None = None


class OpsCommand(StrictModel):
    by: Annotated[str, Field(max_length=100)] = ""
    reason: Annotated[str, Field(max_length=1000)] = ""


class RerouteCommand(OpsCommand):
    backend: BackendChoice


class RecordModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecordedDecision(RecordModel):
    """`verdict` refused: the sender is not an approver of this account, nothing was pending, or
    a required signature is missing, forged, replayed or made with the wrong key (`note` says
    which). `key_id` and `signed_at`: the key and time of a signed decision that counted."""

    verdict: Literal["approved", "rejected", "refused"]
    approver: str
    reason: str = ""
    at: datetime
    note: str = ""
    key_id: str = ""
    signed_at: datetime | None = None


class ApprovalRecord(RecordModel):
    backend: str
    why_required: str
    approvers: list[str]
    timeout: timedelta
    on_timeout: Literal["reject", "fallback"]
    requested_at: datetime
    signed: bool = False
    outcome: Literal["pending", "approved", "rejected", "timed_out"] = "pending"
    decision: RecordedDecision | None = None


class RouteChange(RecordModel):
    """Why an experiment left a backend: an operator's reroute, a fallback after a failure, an
    open circuit breaker or an approval timeout."""

    at: datetime
    from_backend: str
    to_backend: str
    kind: Literal["reroute", "fallback"]
    why: str
    cancelled_job: str | None = None


class OpsEvent(RecordModel):
    at: datetime
    action: Literal["pause", "resume", "reroute", "cancel"]
    by: str
    reason: str


class BudgetRecord(RecordModel):
    account: str
    reservation_key: str
    reserved_usd: float
    committed_usd: float | None = None
    released: bool = False


class Governance(RecordModel):
    """What rules and people allowed (or stopped) the experiment, in order."""

    account: str
    requested_backend: str
    approvals: list[ApprovalRecord] = []
    route: list[RouteChange] = []
    ops: list[OpsEvent] = []
    budget: list[BudgetRecord] = []
    refused_decisions: list[RecordedDecision] = []
