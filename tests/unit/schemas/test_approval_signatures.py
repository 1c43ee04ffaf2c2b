"""Signature verification of approval decisions and budget-limit changes (schemas/signatures.py),
and the policy file's key sections: valid, forged, replayed, wrong key, key of someone not
listed, and the exact bytes a third-party signer must produce."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.policy import PolicyError, load_policy_book
from schemas.signatures import (
    CLOCK_SKEW,
    LIMIT_CHANGE_LIFETIME,
    DecisionSignature,
    SigningKeyError,
    Verdict,
    approval_message,
    check_decision,
    key_id,
    limit_change_refusal,
    limit_message,
    load_private_key,
    new_private_key_pem,
    public_key_text,
    sign_decision,
    sign_limit_change,
)

EXPERIMENT = "ghz-9f2c01"
RUN = "5b1c7e0a-1111-4c2e-9a51-3f0d2b6c8e90"
REQUESTED = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
NOW = REQUESTED + timedelta(minutes=30)

ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()
MALLORY = Ed25519PrivateKey.generate()
KEYS = {
    "alice": public_key_text(ALICE.public_key()),
    "bob": public_key_text(BOB.public_key()),
}


def signed(
    key: Ed25519PrivateKey = ALICE,
    approver: str = "alice",
    verdict: Verdict = "approved",
    reason: str = "within plan",
    issued_at: datetime = NOW,
    experiment: str = EXPERIMENT,
    run_id: str = RUN,
) -> DecisionSignature:
    return sign_decision(key, experiment, run_id, verdict, approver, reason, issued_at)


def check(
    signature: DecisionSignature | None,
    approver: str = "alice",
    verdict: Verdict = "approved",
    reason: str = "within plan",
    counted: frozenset[str] = frozenset(),
) -> tuple[str | None, str]:
    result = check_decision(
        experiment_id=EXPERIMENT,
        run_id=RUN,
        verdict=verdict,
        approver=approver,
        reason=reason,
        signature=signature,
        public_keys=KEYS,
        requested_at=REQUESTED,
        now=NOW,
        counted=counted,
    )
    return result.refusal, result.fingerprint


# --- approval decisions -----------------------------------------------------------------------


def test_a_valid_signed_decision_counts() -> None:
    refusal, fingerprint = check(signed())
    assert refusal is None
    assert len(fingerprint) == 64
    refusal, _ = check(signed(BOB, "bob", "rejected", "not now"), "bob", "rejected", "not now")
    assert refusal is None


@pytest.mark.parametrize(
    ("sent_verdict", "sent_reason"),
    [("rejected", "within plan"), ("approved", "within plan, and the QPU run too")],
    ids=["verdict-changed", "reason-changed"],
)
def test_a_signature_over_another_decision_is_refused_as_forged(
    sent_verdict: Verdict, sent_reason: str
) -> None:
    refusal, _ = check(signed(), verdict=sent_verdict, reason=sent_reason)
    assert refusal is not None
    assert refusal.startswith("forged: the signature does not verify with alice's key")


def test_made_up_signature_bytes_are_refused_as_forged() -> None:
    forged = signed().model_copy(update={"value": "A" * 86 + "=="})
    refusal, _ = check(forged)
    assert refusal is not None and refusal.startswith("forged:")
    not_base64 = signed().model_copy(update={"value": "not base64!"})
    refusal, _ = check(not_base64)
    assert refusal is not None and refusal.startswith("forged:")


def test_a_decision_already_counted_is_refused_as_replayed() -> None:
    first, fingerprint = check(signed())
    assert first is None
    again, _ = check(signed(), counted=frozenset({fingerprint}))
    assert again == "replayed: this signed decision was already counted"


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"experiment": "ghz-other"}, "experiment 'ghz-other'"),
        ({"run_id": "an-earlier-run"}, "run an-earlier-run"),
    ],
)
def test_a_decision_signed_for_another_experiment_or_run_is_refused_as_replayed(
    changes: dict[str, str], named: str
) -> None:
    refusal, _ = check(signed(**changes))  # type: ignore[arg-type]
    assert refusal is not None
    assert refusal.startswith("replayed: signed for ") and named in refusal
    assert f"not this one (experiment {EXPERIMENT!r} run {RUN})" in refusal


def test_a_decision_signed_before_the_approval_was_requested_is_refused_as_replayed() -> None:
    early = REQUESTED - CLOCK_SKEW - timedelta(seconds=1)
    refusal, _ = check(signed(issued_at=early))
    assert refusal == (
        "replayed: issued at 2026-06-01T11:54:59.000000Z, before the approval was requested at "
        "2026-06-01T12:00:00.000000Z"
    )
    # A signer's clock a little behind the workflow's is tolerated.
    assert check(signed(issued_at=REQUESTED - timedelta(minutes=1)))[0] is None


def test_a_decision_signed_too_far_in_the_future_is_refused() -> None:
    refusal, _ = check(signed(issued_at=NOW + CLOCK_SKEW + timedelta(seconds=1)))
    assert refusal is not None and "more than 0:05:00 after the workflow's time" in refusal
    assert check(signed(issued_at=NOW + timedelta(minutes=4)))[0] is None


def test_a_decision_signed_with_another_approvers_key_is_refused_as_wrong_key() -> None:
    refusal, _ = check(signed(key=BOB, approver="alice"))
    assert refusal == (
        f"wrong key: signed with key {key_id(KEYS['bob'])} (bob's key); "
        f"approver alice's key is {key_id(KEYS['alice'])}"
    )


def test_a_decision_signed_with_a_key_not_in_the_policy_is_refused_as_wrong_key() -> None:
    refusal, _ = check(signed(key=MALLORY, approver="alice"))
    assert refusal is not None
    assert refusal.startswith("wrong key: signed with key ")
    assert "(a key not in the policy)" in refusal


def test_a_wrong_key_claiming_the_right_key_id_is_refused_as_forged() -> None:
    lying = signed(key=MALLORY).model_copy(update={"key_id": key_id(KEYS["alice"])})
    refusal, _ = check(lying)
    assert refusal is not None and refusal.startswith("forged:")


def test_the_key_of_an_approver_not_listed_is_refused() -> None:
    refusal, _ = check(signed(key=MALLORY, approver="mallory"), approver="mallory")
    assert refusal == "not listed: 'mallory' has no key in the policy; listed: alice, bob"


def test_an_unsigned_decision_is_refused_where_signatures_are_required() -> None:
    refusal, fingerprint = check(None)
    assert refusal is not None and refusal.startswith("unsigned: this account requires signed")
    assert fingerprint == ""


def test_the_signed_bytes_are_exactly_as_documented() -> None:
    issued = datetime(2026, 6, 1, 12, 0, 5, 250000, tzinfo=UTC)
    reason_digest = hashlib.sha256(b"within plan").hexdigest()
    assert (
        approval_message(EXPERIMENT, RUN, "approved", "alice", "within plan", issued)
        == (
            f'qloop-approval-v1\n["{EXPERIMENT}","{RUN}","approved","alice",'
            f'"2026-06-01T12:00:05.250000Z","{reason_digest}"]'
        ).encode()
    )
    assert limit_message("lab", 250.0, "month", "carol", issued) == (
        b'qloop-budget-limit-v1\n["lab","250.000000","month","carol","2026-06-01T12:00:05.250000Z"]'
    )


def test_the_decision_json_round_trips_as_the_web_ui_sends_it() -> None:
    signature = signed()
    parsed = DecisionSignature.model_validate_json(signature.model_dump_json())
    assert check(parsed)[0] is None


# --- budget-limit changes -----------------------------------------------------------------------

CAROL = Ed25519PrivateKey.generate()
ADMINS = {"carol": public_key_text(CAROL.public_key())}


def limit_refusal(
    signature_key: Ed25519PrivateKey | None = CAROL,
    admin: str = "carol",
    signed_limit: float = 500.0,
    sent_limit: float = 500.0,
    issued_at: datetime = NOW,
    last_signed_at: datetime | None = None,
    admins: dict[str, str] = ADMINS,
) -> str | None:
    signature = (
        sign_limit_change(signature_key, "lab", signed_limit, "month", admin, issued_at)
        if signature_key is not None
        else None
    )
    return limit_change_refusal(
        account="lab",
        limit_usd=sent_limit,
        period="month",
        admin=admin,
        signature=signature,
        admins=admins,
        last_signed_at=last_signed_at,
        now=NOW,
    )


def test_a_signed_limit_change_by_an_admin_is_applied() -> None:
    assert limit_refusal() is None
    assert limit_refusal(last_signed_at=NOW - timedelta(minutes=1)) is None


def test_without_budget_admins_any_change_is_applied() -> None:
    assert limit_refusal(signature_key=None, admin="anyone", admins={}) is None


def test_an_unsigned_limit_change_is_refused_when_the_policy_names_admins() -> None:
    refusal = limit_refusal(signature_key=None)
    assert refusal is not None and refusal.startswith("unsigned: account 'lab' takes only signed")


def test_a_limit_change_with_another_limit_than_signed_is_refused_as_forged() -> None:
    refusal = limit_refusal(signed_limit=5.0, sent_limit=5000.0)
    assert refusal is not None and refusal.startswith("forged: the signature does not verify")


def test_a_limit_change_signed_with_a_key_not_in_the_policy_is_refused_as_wrong_key() -> None:
    refusal = limit_refusal(signature_key=MALLORY)
    assert refusal is not None and refusal.startswith("wrong key:")
    assert "budget admin carol's key is" in refusal


def test_a_limit_change_by_someone_not_listed_is_refused() -> None:
    refusal = limit_refusal(signature_key=MALLORY, admin="mallory")
    assert refusal == "not listed: 'mallory' is not a budget admin of account 'lab'; admins: carol"


@pytest.mark.parametrize(
    ("issued_at", "last_signed_at", "expected"),
    [
        (NOW, NOW, "not after the last signed change the ledger applied"),
        (NOW - timedelta(minutes=2), NOW - timedelta(minutes=1), "not after the last signed"),
        (NOW - LIMIT_CHANGE_LIFETIME - timedelta(seconds=1), None, "before the ledger received"),
    ],
    ids=["same-change-again", "older-than-the-applied-one", "stale"],
)
def test_a_replayed_limit_change_is_refused(
    issued_at: datetime, last_signed_at: datetime | None, expected: str
) -> None:
    refusal = limit_refusal(issued_at=issued_at, last_signed_at=last_signed_at)
    assert refusal is not None and refusal.startswith("replayed: ") and expected in refusal


# --- keys ---------------------------------------------------------------------------------------


def test_a_new_key_pair_signs_what_its_public_key_verifies() -> None:
    pem, public = new_private_key_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    private_key = load_private_key(pem, "alice.key")
    assert public_key_text(private_key.public_key()) == public
    signature = sign_decision(private_key, EXPERIMENT, RUN, "approved", "alice", "", NOW)
    result = check_decision(
        experiment_id=EXPERIMENT,
        run_id=RUN,
        verdict="approved",
        approver="alice",
        reason="",
        signature=signature,
        public_keys={"alice": public},
        requested_at=REQUESTED,
        now=NOW,
        counted=(),
    )
    assert result.refusal is None


def test_an_openssh_ed25519_key_signs_too() -> None:
    openssh = ALICE.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    loaded = load_private_key(openssh, "id_ed25519")
    assert public_key_text(loaded.public_key()) == KEYS["alice"]


def test_key_files_that_cannot_sign_are_refused_with_the_file_named() -> None:
    encrypted = ALICE.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"secret"),
    )
    with pytest.raises(SigningKeyError, match=r"^alice\.key: the key is encrypted; give an"):
        load_private_key(encrypted, "alice.key")
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(SigningKeyError, match=r"^rsa\.key: a .*RSAPrivateKey.*, not Ed25519"):
        load_private_key(rsa_pem, "rsa.key")
    with pytest.raises(SigningKeyError, match=r"^notes\.txt: not a private key"):
        load_private_key(b"hello", "notes.txt")


# --- the policy file ----------------------------------------------------------------------------


def policy_error(tmp_path: Path, approval: dict[str, object], **account: object) -> str:
    path = tmp_path / "policies.yaml"
    path.write_text(yaml.safe_dump({"accounts": {"lab": {"approval": approval, **account}}}))
    with pytest.raises(PolicyError) as raised:
        load_policy_book(path)
    return str(raised.value)


def test_a_signed_policy_loads_and_keeps_the_keys(tmp_path: Path) -> None:
    path = tmp_path / "policies.yaml"
    approval = {"approvers": ["alice", "bob"], "signed": True, "public_keys": KEYS}
    path.write_text(
        yaml.safe_dump({"accounts": {"lab": {"approval": approval, "budget_admins": ADMINS}}})
    )
    policy = load_policy_book(path).for_account("lab")
    assert policy.approval is not None and policy.approval.signed
    assert policy.approval.public_keys == KEYS
    assert policy.budget_admins == ADMINS


def test_signed_approval_needs_a_key_for_every_approver(tmp_path: Path) -> None:
    message = policy_error(
        tmp_path,
        {"approvers": ["alice", "bob"], "signed": True, "public_keys": {"alice": KEYS["alice"]}},
    )
    assert "accounts.lab.approval" in message
    assert "signed: true needs a public key for every approver; none for bob" in message


def test_keys_without_signed_are_refused(tmp_path: Path) -> None:
    message = policy_error(tmp_path, {"approvers": ["alice"], "public_keys": KEYS})
    assert "public_keys are given but signed is false" in message


def test_keys_of_people_who_are_not_approvers_are_refused(tmp_path: Path) -> None:
    message = policy_error(tmp_path, {"approvers": ["alice"], "signed": True, "public_keys": KEYS})
    assert "public_keys of bob, who are not approvers (alice)" in message


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("AAAA", "must be 'ed25519:' followed by the base64"),
        ("ed25519:not base64!", "is not base64"),
        ("ed25519:" + "QUFB", "has 3 bytes, not 32"),
    ],
)
def test_a_malformed_public_key_names_the_field_and_the_rule(
    tmp_path: Path, key: str, problem: str
) -> None:
    message = policy_error(
        tmp_path, {"approvers": ["alice"], "signed": True, "public_keys": {"alice": key}}
    )
    assert "accounts.lab.approval.public_keys.alice" in message
    assert problem in message
    admins_message = policy_error(tmp_path, {"approvers": ["alice"]}, budget_admins={"carol": key})
    assert "accounts.lab.budget_admins.carol" in admins_message and problem in admins_message


def test_the_local_stacks_example_account_takes_signed_decisions() -> None:
    policy_file = Path(__file__).parents[3] / "temporal-dev" / "policies.yaml"
    audited = load_policy_book(policy_file).for_account("audited")
    assert audited.approval is not None and audited.approval.signed
    assert sorted(audited.approval.public_keys) == sorted(audited.approval.approvers)
    assert list(audited.budget_admins) == ["carol"]
