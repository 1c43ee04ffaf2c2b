"""Without a policy file qloop fails closed: free simulators run, work that costs money is refused
with a message saying how to allow it, unless the operator opts in to ungoverned spending."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from temporalio.testing import ActivityEnvironment

from activities.governance.policy import (
    NO_POLICY_FILE_RULE,
    evaluate,
    evaluate_policy_activity,
    static_refusal,
)
from schemas.execution import Tier
from schemas.pipeline import PolicyInput
from schemas.policy import (
    ALLOW_UNGOVERNED_SPEND_ENV,
    POLICY_FILE_ENV,
    FreeWorkOnly,
    governance_notice,
    load_policy_book,
)
from schemas.request import BackendChoice
from schemas.settings import SettingsError

QPU = BackendChoice(provider="braket", device="arn:aws:braket:us-east-1::device/qpu/qloop/G-16")
SV1 = BackendChoice(
    provider="braket", device="arn:aws:braket:::device/quantum-simulator/amazon/sv1"
)
IDEAL = BackendChoice(provider="aer", device="ideal")
NOISY = BackendChoice(provider="aer", device="noisy", noise_profile="ibm_guadalupe")
BRAKET_LOCAL = BackendChoice(provider="braket", device="braket_dm")

FREE = [(IDEAL, Tier.SIMULATOR), (NOISY, Tier.NOISY_SIMULATOR), (BRAKET_LOCAL, Tier.SIMULATOR)]
PAID = [(QPU, Tier.QPU), (SV1, Tier.SIMULATOR)]


@pytest.fixture(autouse=True)
def no_policy_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(POLICY_FILE_ENV, raising=False)
    monkeypatch.delenv(ALLOW_UNGOVERNED_SPEND_ENV, raising=False)


def attempt(backend: BackendChoice, tier: Tier, cost: float, account: str = "lab") -> PolicyInput:
    return PolicyInput(
        account=account, backend=backend, tier=tier, shots=1000, estimated_cost_usd=cost
    )


def assert_says_how_to_allow(message: str) -> None:
    assert "no policy file is configured" in message
    assert POLICY_FILE_ENV in message and f"{ALLOW_UNGOVERNED_SPEND_ENV}=1" in message


def test_without_a_file_every_account_may_run_only_free_work() -> None:
    book = load_policy_book()
    for account in ("default", "lab", "students"):
        assert isinstance(book.for_account(account), FreeWorkOnly)


@pytest.mark.parametrize(("backend", "tier"), FREE)
def test_free_simulators_run_without_a_file(backend: BackendChoice, tier: Tier) -> None:
    policy = load_policy_book().for_account("lab")
    assert static_refusal(policy, "lab", backend, tier, 1000) is None
    decision = evaluate(policy, attempt(backend, tier, 0.0))
    assert decision.allowed and decision.approval is None


@pytest.mark.parametrize(("backend", "tier"), PAID)
def test_remote_and_qpu_backends_are_refused_at_the_door(
    backend: BackendChoice, tier: Tier
) -> None:
    policy = load_policy_book().for_account("lab")
    refusal = static_refusal(policy, "lab", backend, tier, 1000)
    assert refusal is not None
    rule, message = refusal
    assert rule == NO_POLICY_FILE_RULE
    assert message.startswith(f"braket/{backend.device} is billed by its provider")
    assert_says_how_to_allow(message)
    # The workflow's decision refuses the same, even at an estimate of zero.
    decision = evaluate(policy, attempt(backend, tier, 0.0))
    assert (decision.allowed, decision.rule) == (False, NO_POLICY_FILE_RULE)


def test_any_estimated_cost_is_refused_in_the_workflow() -> None:
    policy = load_policy_book().for_account("lab")
    decision = evaluate(policy, attempt(NOISY, Tier.NOISY_SIMULATOR, 0.01))
    assert (decision.allowed, decision.rule) == (False, NO_POLICY_FILE_RULE)
    assert decision.message.startswith("the estimated cost is $0.01 on aer/noisy:ibm_guadalupe")
    assert_says_how_to_allow(decision.message)


async def test_the_policy_activity_refuses_paid_work_without_a_file() -> None:
    decision = await ActivityEnvironment().run(evaluate_policy_activity, attempt(QPU, Tier.QPU, 3))
    assert (decision.allowed, decision.rule) == (False, NO_POLICY_FILE_RULE)
    free = await ActivityEnvironment().run(
        evaluate_policy_activity, attempt(IDEAL, Tier.SIMULATOR, 0)
    )
    assert free.allowed


@pytest.mark.parametrize(("backend", "tier"), PAID)
def test_the_operator_may_opt_in_to_paid_work_without_rules(
    backend: BackendChoice, tier: Tier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_UNGOVERNED_SPEND_ENV, "1")
    policy = load_policy_book().for_account("lab")
    assert not isinstance(policy, FreeWorkOnly)
    assert static_refusal(policy, "lab", backend, tier, 1000) is None
    decision = evaluate(policy, attempt(backend, tier, 240.90))
    assert decision.allowed and decision.approval is None
    # The ledger still caps it: a new account's ledger starts with no money.
    assert decision.budget_default.limit_usd == 0.0


@pytest.mark.parametrize("value", ["", "0"])
def test_an_opt_out_value_keeps_paid_work_refused(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_UNGOVERNED_SPEND_ENV, value)
    assert isinstance(load_policy_book().for_account("lab"), FreeWorkOnly)


@pytest.mark.parametrize("value", ["yes", "true", "2", "on"])
def test_an_unclear_opt_in_is_an_error_naming_the_allowed_values(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ALLOW_UNGOVERNED_SPEND_ENV, value)
    with pytest.raises(SettingsError, match=f"{ALLOW_UNGOVERNED_SPEND_ENV}='{value}': set it to 1"):
        load_policy_book()
    with pytest.raises(SettingsError):
        governance_notice()


def test_a_policy_file_governs_and_the_opt_in_does_not_matter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump({"accounts": {"default": {"max_cost_usd": 5}}}))
    monkeypatch.setenv(POLICY_FILE_ENV, str(path))
    for opt_in in ("0", "1"):
        monkeypatch.setenv(ALLOW_UNGOVERNED_SPEND_ENV, opt_in)
        policy = load_policy_book().for_account("lab")
        assert not isinstance(policy, FreeWorkOnly)
        assert evaluate(policy, attempt(QPU, Tier.QPU, 3.0)).allowed
        refused = evaluate(policy, attempt(QPU, Tier.QPU, 6.0))
        assert (refused.allowed, refused.rule) == (False, "max_cost_usd")
    assert governance_notice() is None


def test_the_start_up_notice_says_what_happens_to_paid_work(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    closed = governance_notice()
    assert closed is not None
    assert closed.startswith(f"no policy file ({POLICY_FILE_ENV} is not set): work that costs")
    assert "is refused and free simulators run" in closed
    monkeypatch.setenv(ALLOW_UNGOVERNED_SPEND_ENV, "1")
    opened = governance_notice()
    assert opened is not None
    assert f"{ALLOW_UNGOVERNED_SPEND_ENV}=1: paid work runs with no policy rules" in opened
