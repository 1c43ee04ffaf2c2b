"""Policy: may this account run this work on this backend, and does a person have to approve it?

`evaluate` is a pure function of the account's policy and the facts of one attempt (backend,
tier, shots, estimated cost); the activity reads the policy file at decision time, so a change
of policy applies to the next decision without restarting anything. Without a policy file
(`FreeWorkOnly`) work that costs money is refused: at the door a QPU or a device reached by ARN,
in the workflow also any estimated cost above zero.
"""

from __future__ import annotations

from temporalio.exceptions import ApplicationError

from schemas import activity_contracts, error_types
from schemas.activity_contracts import implements
from schemas.budget import BudgetAdmins, BudgetAdminsInput
from schemas.execution import Tier
from schemas.pipeline import ApprovalRequirement, PolicyDecision, PolicyInput
from schemas.policy import (
    AccountPolicy,
    FreeWorkOnly,
    PolicyError,
    backend_allowed,
    load_policy_book,
    no_policy_file_refusal,
)
from schemas.request import BackendChoice, ExperimentRequest

NO_POLICY_FILE_RULE = "no_policy_file"


def backend_name(choice: BackendChoice) -> str:
    profile = f":{choice.noise_profile}" if choice.noise_profile else ""
    return f"{choice.provider}/{choice.device}{profile}"


def static_refusal(
    policy: AccountPolicy, account: str, backend: BackendChoice, tier: Tier, shots: int
) -> tuple[str, str] | None:
    """The rules that need no cost estimate: (rule, message) of the first one broken."""
    name = backend_name(backend)
    if isinstance(policy, FreeWorkOnly) and paid_backend(backend, tier):
        return (NO_POLICY_FILE_RULE, no_policy_file_refusal(f"{name} is billed by its provider"))
    if not backend_allowed(policy, name):
        return (
            "allowed_backends",
            f"account {account!r} may not use {name}; allowed: "
            f"{', '.join(policy.allowed_backends)}",
        )
    if tier not in policy.allowed_tiers:
        return (
            "allowed_tiers",
            f"account {account!r} may not use the {tier.value} tier ({name}); allowed: "
            f"{', '.join(t.value for t in policy.allowed_tiers)}",
        )
    if policy.max_shots is not None and shots > policy.max_shots:
        return (
            "max_shots",
            f"{shots} shots exceed account {account!r}'s maximum of {policy.max_shots}",
        )
    return None


def paid_backend(backend: BackendChoice, tier: Tier) -> bool:
    """What costs money before any estimate: a QPU, or any device reached by ARN (Braket's
    on-demand simulators bill by the minute)."""
    return tier == Tier.QPU or backend.device.startswith("arn:")


def evaluate(policy: AccountPolicy, input: PolicyInput) -> PolicyDecision:
    refusal = static_refusal(policy, input.account, input.backend, input.tier, input.shots)
    cost = input.estimated_cost_usd
    if refusal is None and isinstance(policy, FreeWorkOnly) and cost > 0:
        what = f"the estimated cost is ${cost:.2f} on {backend_name(input.backend)}"
        refusal = (NO_POLICY_FILE_RULE, no_policy_file_refusal(what))
    if refusal is None and policy.max_cost_usd is not None and cost > policy.max_cost_usd:
        refusal = (
            "max_cost_usd",
            f"estimated cost ${cost:.2f} exceeds account {input.account!r}'s maximum of "
            f"${policy.max_cost_usd:.2f} per experiment",
        )
    request_limit = input.request_max_cost_usd
    if refusal is None and request_limit is not None and cost > request_limit:
        refusal = (
            "request.policy.max_cost_usd",
            f"estimated cost ${cost:.2f} exceeds the request's max_cost_usd of "
            f"${request_limit:.2f}",
        )
    if refusal is not None:
        rule, message = refusal
        return PolicyDecision(allowed=False, rule=rule, message=message)
    return PolicyDecision(
        allowed=True,
        approval=approval_requirement(policy, input),
        on_budget_exhausted=policy.on_budget_exhausted,
        budget_default=policy.budget,
    )


def approval_requirement(policy: AccountPolicy, input: PolicyInput) -> ApprovalRequirement | None:
    rule = policy.approval
    if rule is None:
        return None
    reasons = []
    if rule.required_above_usd is not None and input.estimated_cost_usd > rule.required_above_usd:
        reasons.append(
            f"estimated cost ${input.estimated_cost_usd:.2f} is above the approval threshold "
            f"${rule.required_above_usd:.2f}"
        )
    if input.tier in rule.required_for_tiers:
        reasons.append(
            f"account {input.account!r} requires approval for the {input.tier.value} tier"
        )
    if not reasons:
        return None
    return ApprovalRequirement(
        why="; ".join(reasons),
        approvers=list(rule.approvers),
        timeout_seconds=rule.timeout.total_seconds(),
        on_timeout=rule.on_timeout,
        signed=rule.signed,
        public_keys=dict(rule.public_keys),
    )


def check_at_the_door(request: ExperimentRequest, tier: Tier) -> None:
    """The CLI's early refusal of what policy forbids whatever the cost (raises ValueError)."""
    account = request.policy.account
    policy = load_policy_book().for_account(account)
    refusal = static_refusal(
        policy, account, request.execution.backend, tier, request.execution.shots
    )
    if refusal is not None:
        rule, message = refusal
        raise ValueError(f"policy rule {rule}: {message}")


def account_policy(account: str) -> AccountPolicy:
    try:
        return load_policy_book().for_account(account)
    except PolicyError as error:
        # A broken policy file is an operator's mistake: retrying lets them fix it in place.
        raise ApplicationError(str(error), type=error_types.POLICY_FILE_INVALID) from None


@implements(activity_contracts.evaluate_policy)
async def evaluate_policy_activity(input: PolicyInput) -> PolicyDecision:
    return evaluate(account_policy(input.account), input)


@implements(activity_contracts.budget_admins)
async def budget_admins_activity(input: BudgetAdminsInput) -> BudgetAdmins:
    """The keys that may sign changes of the account's budget limit, read from the policy file
    on a worker: the ledger workflow must not take them from anything a client sends."""
    return BudgetAdmins(admins=dict(account_policy(input.account).budget_admins))
