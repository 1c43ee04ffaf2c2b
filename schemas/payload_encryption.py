"""Encrypted payloads: an AES-GCM payload codec for Temporal, its key ring and the data converter.

Every payload qloop writes to Temporal (workflow and activity inputs and results, signals,
queries, static summary and details, failure messages and stack traces) is encrypted before it
leaves the process; the server, its database and anyone reading history without the key see
only `binary/encrypted` payloads. Search attributes, workflow ids, workflow and activity type
names, task queues and headers (trace context) are not payloads and stay in clear text.

Keys, first match wins:
- `QLOOP_CODEC_KEY` (base64 of 32 random bytes) with `QLOOP_CODEC_KEY_ID`;
- `QLOOP_CODEC_KEY_FILE`, a JSON key ring `{"current": "k2", "keys": {"k1": "<b64>", ...}}`;
- `$QLOOP_HOME/codec-keys.json` when it exists.
Without any of them nothing is encrypted. New payloads use the current key; every key in the
ring decrypts, so histories written before a rotation still replay.

`python -m schemas.payload_encryption init` creates the key file and the codec server's token
file when they are missing; `new-key` rotates (a new current key, the old ones kept).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import dataclasses
import json
import os
import re
import secrets
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf import json_format
from temporalio.api.common.v1 import Payload, Payloads
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from schemas.settings import current_settings, qloop_home

ENCRYPTED_ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
KEY_ID_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")

KEY_ENV = "QLOOP_CODEC_KEY"
KEY_ID_ENV = "QLOOP_CODEC_KEY_ID"
KEY_FILE_ENV = "QLOOP_CODEC_KEY_FILE"
KEY_FILE_NAME = "codec-keys.json"
TOKEN_FILE_NAME = "codec-server-token"


class CodecKeyError(ValueError):
    """The key configuration cannot be used. Messages name the source, never the key."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload that the configured keys cannot decrypt."""


@dataclass(frozen=True)
class KeyRing:
    """`keys` maps key id to its 32 key bytes; `current` encrypts, every key decrypts.
    `source` says where the keys came from (for error messages)."""

    current: str
    keys: Mapping[str, bytes] = field(repr=False)
    source: str

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not KEY_ID_PATTERN.fullmatch(key_id):
                raise CodecKeyError(
                    f"{self.source}: key id {key_id!r} is not allowed: use 1 to 64 letters, "
                    "digits, '.', '_' or '-' (key ids are stored in clear text in every payload)"
                )
            if len(key) != KEY_BYTES:
                raise CodecKeyError(
                    f"{self.source}: key {key_id!r} is {len(key)} bytes long; AES-256-GCM keys "
                    f"are {KEY_BYTES} bytes (base64 of 32 random bytes)"
                )
        if self.current not in self.keys:
            raise CodecKeyError(
                f"{self.source}: the current key {self.current!r} is not among the keys "
                f"{sorted(self.keys)}"
            )


def encrypt_payload(payload: Payload, ring: KeyRing) -> Payload:
    """The whole payload, metadata included, sealed with the current key. The key id is also
    the associated data, so a payload cannot be relabelled to another key without detection."""
    nonce = os.urandom(NONCE_BYTES)
    key_id = ring.current.encode()
    sealed = AESGCM(ring.keys[ring.current]).encrypt(nonce, payload.SerializeToString(), key_id)
    return Payload(
        metadata={"encoding": ENCRYPTED_ENCODING, KEY_ID_METADATA: key_id},
        data=nonce + sealed,
    )


def decrypt_payload(payload: Payload, ring: KeyRing) -> Payload:
    """The original payload; payloads that were never encrypted pass through unchanged, so
    histories written before encryption was turned on still replay."""
    if payload.metadata.get("encoding") != ENCRYPTED_ENCODING:
        return payload
    key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
    key = ring.keys.get(key_id)
    if key is None:
        raise PayloadDecryptionError(
            f"payload encrypted with key {key_id!r}, which is not among the configured keys "
            f"{sorted(ring.keys)} ({ring.source}); add it to the key ring to read this payload"
        )
    if len(payload.data) < NONCE_BYTES + TAG_BYTES:
        raise PayloadDecryptionError(
            f"payload encrypted with key {key_id!r} is truncated: {len(payload.data)} bytes, "
            f"less than a nonce and an authentication tag ({NONCE_BYTES + TAG_BYTES})"
        )
    nonce, sealed = payload.data[:NONCE_BYTES], payload.data[NONCE_BYTES:]
    try:
        plain = AESGCM(key).decrypt(nonce, sealed, key_id.encode())
    except InvalidTag:
        raise PayloadDecryptionError(
            f"payload encrypted with key {key_id!r} failed authentication: it was modified, or "
            f"sealed with a different key under the same id ({ring.source})"
        ) from None
    original = Payload()
    original.ParseFromString(plain)
    return original


class AesGcmCodec(PayloadCodec):
    """Temporal payload codec: AES-256-GCM with a key id per payload (see module docstring)."""

    def __init__(self, ring: KeyRing) -> None:
        self.ring = ring

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [encrypt_payload(payload, self.ring) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [decrypt_payload(payload, self.ring) for payload in payloads]


# --- keys ----------------------------------------------------------------------------------


def decode_key(encoded: str, key_id: str, source: str) -> bytes:
    try:
        return base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise CodecKeyError(
            f"{source}: key {key_id!r} is not valid base64 (want base64 of 32 random bytes)"
        ) from None


def encode_key(key: bytes) -> str:
    return base64.b64encode(key).decode()


def parse_key_file(text: str, source: str) -> KeyRing:
    """A key ring from the JSON text of a key file; `source` names it in errors."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        # The position only: the parser's message could quote part of a key.
        raise CodecKeyError(
            f"{source}: not valid JSON (line {error.lineno}, column {error.colno}); want "
            '{"current": "<key id>", "keys": {"<key id>": "<base64 key>", ...}}'
        ) from None
    if not isinstance(document, dict) or set(document) != {"current", "keys"}:
        found = sorted(document) if isinstance(document, dict) else type(document).__name__
        raise CodecKeyError(
            f'{source}: want exactly the fields "current" and "keys", found {found}'
        )
    current, keys = document["current"], document["keys"]
    if not isinstance(current, str) or not isinstance(keys, dict) or not keys:
        raise CodecKeyError(
            f'{source}: "current" must be a key id and "keys" a non-empty mapping of key id to '
            "base64 key"
        )
    for key_id, encoded in keys.items():
        if not isinstance(encoded, str):
            raise CodecKeyError(f"{source}: key {key_id!r} must be a base64 string")
    return KeyRing(
        current=current,
        keys={key_id: decode_key(encoded, key_id, source) for key_id, encoded in keys.items()},
        source=source,
    )


def key_file_path() -> Path:
    """`QLOOP_CODEC_KEY_FILE`, or `codec-keys.json` in QLOOP_HOME."""
    configured = current_settings().codec_key_file
    return configured.expanduser() if configured else qloop_home() / KEY_FILE_NAME


def token_file_path() -> Path:
    """The codec server's bearer token file, next to the key file."""
    return key_file_path().parent / TOKEN_FILE_NAME


def load_key_ring() -> KeyRing | None:
    """The configured key ring (sources and order in the module docstring), None when no key
    is configured. Bad key material is a CodecKeyError at start-up, not at the first payload."""
    configured = current_settings()
    secret, key_id = configured.codec_key, configured.codec_key_id
    encoded = secret.get_secret_value() if secret is not None else None
    if encoded or key_id:
        if not (encoded and key_id):
            raise CodecKeyError(
                f"{KEY_ENV} and {KEY_ID_ENV} go together: set both (a base64 key of 32 bytes "
                f"and its id), or neither and use {KEY_FILE_ENV}"
            )
        source = f"${KEY_ENV}"
        return KeyRing(
            current=key_id, keys={key_id: decode_key(encoded, key_id, source)}, source=source
        )
    path = key_file_path()
    if configured.codec_key_file is None and not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise CodecKeyError(f"cannot read the codec key file {path}: {error.strerror}") from None
    return parse_key_file(text, str(path))


def converter_for(ring: KeyRing | None) -> DataConverter:
    """The pydantic data converter, encrypting with `ring` (failure messages and stack traces
    too), or as it is when `ring` is None."""
    if ring is None:
        return pydantic_data_converter
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=AesGcmCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def data_converter() -> DataConverter:
    """The data converter for the configured keys: what every qloop client and worker uses."""
    return converter_for(load_key_ring())


# --- the remote codec protocol (Temporal's codec server JSON) ------------------------------


def payloads_from_json(body: bytes) -> list[Payload]:
    """`{"payloads": [{"metadata": {k: b64}, "data": b64}, ...]}` (protobuf JSON of Payloads)."""
    try:
        return list(json_format.Parse(body, Payloads(), ignore_unknown_fields=True).payloads)
    except (json_format.ParseError, UnicodeDecodeError) as error:
        raise ValueError(
            'want the protobuf JSON of Payloads: {"payloads": [{"metadata": {...}, "data": '
            f'"<base64>"}}]}}: {error}'
        ) from None


def payloads_to_json(payloads: Sequence[Payload]) -> bytes:
    # Empty lists and empty data are written out: the Web UI reads `payloads` and `data` as is.
    message = Payloads(payloads=payloads)
    text = json_format.MessageToJson(
        message, indent=None, always_print_fields_with_no_presence=True
    )
    return text.encode()


def remote_codec(ring: KeyRing, operation: Literal["encode", "decode"], body: bytes) -> bytes:
    """A codec server's answer to POST /encode or /decode with `body`."""
    convert = encrypt_payload if operation == "encode" else decrypt_payload
    return payloads_to_json([convert(payload, ring) for payload in payloads_from_json(body)])


# --- key files -----------------------------------------------------------------------------


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only, never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as sink:
            sink.write(text)
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def next_key_id(existing: Mapping[str, bytes]) -> str:
    number = 1
    while f"k{number}" in existing:
        number += 1
    return f"k{number}"


def new_key(path: Path, key_id: str | None = None) -> str:
    """Adds a fresh random key to the key file at `path` (created when missing) and makes it
    current; older keys stay for decryption. Returns the new key's id."""
    ring = parse_key_file(path.read_text(encoding="utf-8"), str(path)) if path.exists() else None
    keys = dict(ring.keys) if ring else {}
    key_id = key_id or next_key_id(keys)
    if key_id in keys:
        raise CodecKeyError(
            f"{path}: key id {key_id!r} already exists (ids: {sorted(keys)}); pick a new id, "
            "old keys are kept to decrypt older payloads"
        )
    keys[key_id] = secrets.token_bytes(KEY_BYTES)
    rotated = KeyRing(current=key_id, keys=keys, source=str(path))
    document = {"current": key_id, "keys": {i: encode_key(k) for i, k in rotated.keys.items()}}
    write_private(path, json.dumps(document, indent=2) + "\n")
    return key_id


def ensure_token_file(path: Path) -> bool:
    """Creates the codec server's token file when missing; True when it did."""
    if path.exists():
        return False
    write_private(path, secrets.token_urlsafe(32) + "\n")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schemas.payload_encryption",
        description="qloop's payload encryption keys (never printed)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser(
        "init",
        help="create the key file (unless a key is set in the environment) and the "
        "codec server's token file when they are missing",
    )
    init.add_argument("--file", type=Path, help="key file (default: the configured one)")
    rotate = commands.add_parser("new-key", help="add a new current key, keeping the old ones")
    rotate.add_argument("--file", type=Path, help="key file (default: the configured one)")
    rotate.add_argument("--id", help="the new key's id (default: the next free k<N>)")
    args = parser.parse_args(argv)

    path: Path = args.file or key_file_path()
    try:
        if args.command == "new-key":
            key_id = new_key(path, args.id)
            print(
                f"key {key_id!r} is now current in {path}; older keys still decrypt. Restart "
                "workers and the codec server to use it."
            )
        else:
            if current_settings().codec_key is None and not path.exists():
                print(f"created codec key {new_key(path)!r} in {path}")
            token = path.parent / TOKEN_FILE_NAME
            if ensure_token_file(token):
                print(f"created the codec server token file {token}")
    except CodecKeyError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
