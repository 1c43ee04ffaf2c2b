"""Ed25519 signatures of approval decisions and budget-limit changes: what is signed, how keys
are written, and whether a signed message counts.

Anyone who may send signals and updates to qloop's workflows may claim any name. When an
account's policy says `approval.signed: true` (or names `budget_admins`), a decision counts only
with a signature by the private key whose public key the operator wrote in the policy file.
Everything here is a pure function of its arguments (Ed25519 verification is deterministic), so
workflows call it directly.

What is signed: UTF-8 bytes, a version line, then a JSON array without spaces
(`json.dumps(fields, separators=(",", ":"))`):

    qloop-approval-v1
    ["<experiment id>","<run id>","<verdict>","<approver>","<issued at>","<reason sha256>"]

    qloop-budget-limit-v1
    ["<account>","<limit usd, 6 decimals>","<period>","<admin>","<issued at>"]

`<verdict>` is "approved" or "rejected", `<issued at>` is UTC with microseconds
(`2025-06-01T12:00:00.000000Z`), `<reason sha256>` the hex SHA-256 of the reason's UTF-8 bytes,
`<limit usd>` a string such as "250.000000". Binding the run id means a reset experiment (a new
run) needs a new decision.

Keys: a public key is written `ed25519:` + base64 of its 32 raw bytes (what `qloop keys new NAME`
prints); a private key file is PEM PKCS#8 (what `qloop keys new` writes) or an OpenSSH
`ssh-keygen -t ed25519` key, unencrypted (protect it with file permissions). A key id is the
first 16 hex digits of the SHA-256 of the 32 raw bytes of the public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, NamedTuple

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

APPROVAL_VERSION = "qloop-approval-v1"
LIMIT_CHANGE_VERSION = "qloop-budget-limit-v1"
PUBLIC_KEY_PREFIX = "ed25519:"
KEY_RULE = (
    "'ed25519:' followed by the base64 of a 32-byte Ed25519 public key, "
    "as `qloop keys new NAME` prints it"
)
# How far a signer's clock may be from the workflow's: a decision signed up to this long
# before the approval was requested, or this far in the future, still counts.
CLOCK_SKEW = timedelta(minutes=5)
# A signed limit change must reach the ledger this soon after it was signed.
LIMIT_CHANGE_LIFETIME = timedelta(minutes=10)

Verdict = Literal["approved", "rejected"]


class SignatureModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _checked_public_key(text: str) -> str:
    parse_public_key(text)
    return text


PublicKeyText = Annotated[str, AfterValidator(_checked_public_key)]
SignatureText = Annotated[str, Field(min_length=1, max_length=200)]
KeyId = Annotated[str, Field(pattern=r"^[0-9a-f]{16}$")]


class DecisionSignature(SignatureModel):
    """The signed part of an approve / reject message. `experiment` and `run_id` repeat what was
    signed, so that a decision meant for another experiment or run is refused as such."""

    experiment: Annotated[str, Field(min_length=1, max_length=1000)]
    run_id: Annotated[str, Field(min_length=1, max_length=100)]
    issued_at: AwareDatetime
    key_id: KeyId
    value: SignatureText


class LimitSignature(SignatureModel):
    """The signed part of a budget-limit change; the admin is the change's `by`."""

    issued_at: AwareDatetime
    key_id: KeyId
    value: SignatureText


class SigningKeyError(ValueError):
    """A private key file that cannot sign; the message names the file and what is expected."""


# --- keys -------------------------------------------------------------------------------------


def parse_public_key(text: str) -> Ed25519PublicKey:
    if not text.startswith(PUBLIC_KEY_PREFIX):
        raise ValueError(f"public key {text[:20]!r}... must be {KEY_RULE}")
    try:
        raw = base64.b64decode(text[len(PUBLIC_KEY_PREFIX) :], validate=True)
    except binascii.Error:
        raise ValueError(
            f"public key {text[:20]!r}... is not base64; it must be {KEY_RULE}"
        ) from None
    if len(raw) != 32:
        raise ValueError(f"public key has {len(raw)} bytes, not 32; it must be {KEY_RULE}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return PUBLIC_KEY_PREFIX + base64.b64encode(raw).decode()


def key_id(public_key: str) -> str:
    raw = base64.b64decode(public_key[len(PUBLIC_KEY_PREFIX) :])
    return hashlib.sha256(raw).hexdigest()[:16]


def new_private_key_pem() -> tuple[bytes, str]:
    """(PEM of a fresh private key, its public key text)."""
    private_key = Ed25519PrivateKey.generate()
    pem = private_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem, public_key_text(private_key.public_key())


def load_private_key(data: bytes, source: str) -> Ed25519PrivateKey:
    expected = "an unencrypted Ed25519 private key (PEM, as `qloop keys new NAME` writes it)"
    try:
        key: PrivateKeyTypes
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key = serialization.load_ssh_private_key(data, password=None)
        else:
            key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise SigningKeyError(f"{source}: the key is encrypted; give {expected}") from None
    except (ValueError, UnsupportedAlgorithm):
        raise SigningKeyError(f"{source}: not a private key; give {expected}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SigningKeyError(f"{source}: a {type(key).__name__}, not Ed25519; give {expected}")
    return key


def own_key_id(private_key: Ed25519PrivateKey) -> str:
    return key_id(public_key_text(private_key.public_key()))


# --- what is signed ---------------------------------------------------------------------------


def issued_at_text(issued_at: datetime) -> str:
    return issued_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _message(version: str, fields: list[str]) -> bytes:
    return f"{version}\n{json.dumps(fields, separators=(',', ':'))}".encode()


def approval_message(
    experiment_id: str,
    run_id: str,
    verdict: Verdict,
    approver: str,
    reason: str,
    issued_at: datetime,
) -> bytes:
    reason_digest = hashlib.sha256(reason.encode()).hexdigest()
    fields = [experiment_id, run_id, verdict, approver, issued_at_text(issued_at), reason_digest]
    return _message(APPROVAL_VERSION, fields)


def limit_message(
    account: str, limit_usd: float, period: str, admin: str, issued_at: datetime
) -> bytes:
    fields = [account, f"{limit_usd:.6f}", period, admin, issued_at_text(issued_at)]
    return _message(LIMIT_CHANGE_VERSION, fields)


def _signature_text(private_key: Ed25519PrivateKey, message: bytes) -> str:
    return base64.b64encode(private_key.sign(message)).decode()


def sign_decision(
    private_key: Ed25519PrivateKey,
    experiment_id: str,
    run_id: str,
    verdict: Verdict,
    approver: str,
    reason: str,
    issued_at: datetime,
) -> DecisionSignature:
    message = approval_message(experiment_id, run_id, verdict, approver, reason, issued_at)
    return DecisionSignature(
        experiment=experiment_id,
        run_id=run_id,
        issued_at=issued_at,
        key_id=own_key_id(private_key),
        value=_signature_text(private_key, message),
    )


def sign_limit_change(
    private_key: Ed25519PrivateKey,
    account: str,
    limit_usd: float,
    period: str,
    admin: str,
    issued_at: datetime,
) -> LimitSignature:
    return LimitSignature(
        issued_at=issued_at,
        key_id=own_key_id(private_key),
        value=_signature_text(
            private_key, limit_message(account, limit_usd, period, admin, issued_at)
        ),
    )


# --- whether it counts --------------------------------------------------------------------------


class SignatureCheck(NamedTuple):
    """`refusal` None: the decision counts; `fingerprint` identifies what was signed, so the
    same signed decision is never counted twice."""

    refusal: str | None
    fingerprint: str


def _load_invalid_signature_type() -> None:
    """cryptography's Rust code imports the InvalidSignature type the first time it raises it.
    Inside Temporal's workflow sandbox that import fails and aborts the whole worker process
    (a pyo3 panic), so a forged signature would kill every workflow on the worker. Raising it
    once here, when this module is imported outside the sandbox (worker start, or a passed-through
    import), caches the type for the life of the process."""
    key = Ed25519PrivateKey.from_private_bytes(bytes(32)).public_key()
    try:
        key.verify(bytes(64), b"")
    except InvalidSignature:
        return


_load_invalid_signature_type()


def _verifies(public_key: str, message: bytes, value: str) -> bool:
    try:
        parse_public_key(public_key).verify(base64.b64decode(value, validate=True), message)
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


def _key_refusal(name: str, role: str, claimed_key_id: str, keys: Mapping[str, str]) -> str | None:
    """'wrong key' when the signature names a key other than `name`'s own."""
    own = key_id(keys[name])
    if claimed_key_id == own:
        return None
    holders = [other for other, text in keys.items() if key_id(text) == claimed_key_id]
    whose = f"{holders[0]}'s key" if holders else "a key not in the policy"
    return f"wrong key: signed with key {claimed_key_id} ({whose}); {role} {name}'s key is {own}"


def check_decision(
    *,
    experiment_id: str,
    run_id: str,
    verdict: Verdict,
    approver: str,
    reason: str,
    signature: DecisionSignature | None,
    public_keys: Mapping[str, str],
    requested_at: datetime,
    now: datetime,
    counted: Collection[str],
) -> SignatureCheck:
    """Whether a decision on an approval requested at `requested_at` counts at `now`, given the
    approvers' public keys and the fingerprints of signed decisions already counted."""
    if signature is None:
        return SignatureCheck(
            "unsigned: this account requires signed decisions "
            "(`qloop approve ID --as NAME --key FILE`)",
            "",
        )
    message = approval_message(
        experiment_id, run_id, verdict, approver, reason, signature.issued_at
    )
    fingerprint = hashlib.sha256(message).hexdigest()

    def refused(why: str) -> SignatureCheck:
        return SignatureCheck(why, fingerprint)

    if approver not in public_keys:
        listed = ", ".join(sorted(public_keys)) or "nobody"
        return refused(f"not listed: {approver!r} has no key in the policy; listed: {listed}")
    if (signature.experiment, signature.run_id) != (experiment_id, run_id):
        return refused(
            f"replayed: signed for experiment {signature.experiment!r} run {signature.run_id}, "
            f"not this one (experiment {experiment_id!r} run {run_id})"
        )
    if fingerprint in counted:
        return refused("replayed: this signed decision was already counted")
    wrong_key = _key_refusal(approver, "approver", signature.key_id, public_keys)
    if wrong_key is not None:
        return refused(wrong_key)
    if not _verifies(public_keys[approver], message, signature.value):
        return refused(
            f"forged: the signature does not verify with {approver}'s key {signature.key_id} "
            "over this experiment, run, verdict, approver, time and reason"
        )
    issued = issued_at_text(signature.issued_at)
    if signature.issued_at < requested_at - CLOCK_SKEW:
        return refused(
            f"replayed: issued at {issued}, before the approval was requested at "
            f"{issued_at_text(requested_at)}"
        )
    if signature.issued_at > now + CLOCK_SKEW:
        return refused(
            f"issued at {issued}, more than {CLOCK_SKEW} after the workflow's time "
            f"{issued_at_text(now)}"
        )
    return SignatureCheck(None, fingerprint)


def limit_change_refusal(
    *,
    account: str,
    limit_usd: float,
    period: str,
    admin: str,
    signature: LimitSignature | None,
    admins: Mapping[str, str],
    last_signed_at: datetime | None,
    now: datetime,
) -> str | None:
    """None when the change may be applied: the account names no budget admins, or `admin`
    signed exactly this change recently and after the last signed change the ledger applied."""
    if not admins:
        return None
    listed = ", ".join(sorted(admins))
    if admin not in admins:
        return (
            f"not listed: {admin!r} is not a budget admin of account {account!r}; admins: {listed}"
        )
    if signature is None:
        return (
            f"unsigned: account {account!r} takes only signed limit changes from its budget "
            f"admins (`qloop budget set {account} --limit-usd X --as NAME --key FILE`)"
        )
    wrong_key = _key_refusal(admin, "budget admin", signature.key_id, admins)
    if wrong_key is not None:
        return wrong_key
    message = limit_message(account, limit_usd, period, admin, signature.issued_at)
    if not _verifies(admins[admin], message, signature.value):
        return (
            f"forged: the signature does not verify with {admin}'s key {signature.key_id} over "
            "this account, limit, period, admin and time"
        )
    issued = issued_at_text(signature.issued_at)
    if last_signed_at is not None and signature.issued_at <= last_signed_at:
        return (
            f"replayed: issued at {issued}, not after the last signed change the ledger applied "
            f"({issued_at_text(last_signed_at)})"
        )
    if signature.issued_at < now - LIMIT_CHANGE_LIFETIME:
        return (
            f"replayed: issued at {issued}, more than {LIMIT_CHANGE_LIFETIME} before the ledger "
            f"received it at {issued_at_text(now)}"
        )
    if signature.issued_at > now + CLOCK_SKEW:
        return (
            f"issued at {issued}, more than {CLOCK_SKEW} after the ledger's time "
            f"{issued_at_text(now)}"
        )
    return None
