"""The AES-GCM payload codec, its key ring and key files, and the codec server's JSON protocol."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.exceptions import ApplicationError

from schemas import payload_encryption as pe
from schemas.request import ExperimentRequest

KEY_1 = bytes(range(32))
KEY_2 = bytes(range(100, 132))
SECRET_NAME = "confidential-bell-7f3a"
QASM = 'OPENQASM 3.0;\ninclude "stdgates.inc";\nqubit[2] q;\nh q[0];\ncx q[0], q[1];\n'


@pytest.fixture(autouse=True)
def no_configured_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys in the developer's shell must not leak into these tests (QLOOP_HOME is per test)."""
    for name in (pe.KEY_ENV, pe.KEY_ID_ENV, pe.KEY_FILE_ENV):
        monkeypatch.delenv(name, raising=False)


def ring(current: str = "k1", **keys: bytes) -> pe.KeyRing:
    return pe.KeyRing(current=current, keys=keys or {"k1": KEY_1}, source="test")


def request() -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": SECRET_NAME,
            "problem": {
                "kind": "qasm",
                "qasm": QASM,
                "observable": {"kind": "pauli_sum", "terms": [{"pauli": "ZZ"}]},
            },
            "execution": {"shots": 100, "backend": {"provider": "aer", "device": "ideal"}},
        }
    )


def plain_payload() -> Payload:
    return pydantic_data_converter.payload_converter.to_payloads([request()])[0]


def key_file(path: Path, current: str, **keys: bytes) -> Path:
    document = {
        "current": current,
        "keys": {i: base64.b64encode(k).decode() for i, k in keys.items()},
    }
    path.write_text(json.dumps(document))
    return path


# --- the codec -----------------------------------------------------------------------------


def test_round_trip_hides_data_and_metadata() -> None:
    original = plain_payload()
    sealed = pe.encrypt_payload(original, ring())

    assert dict(sealed.metadata) == {"encoding": b"binary/encrypted", "encryption-key-id": b"k1"}
    assert SECRET_NAME.encode() not in sealed.data
    assert b"OPENQASM" not in sealed.data
    assert b"json/plain" not in sealed.SerializeToString()
    assert pe.decrypt_payload(sealed, ring()) == original


def test_every_payload_gets_a_fresh_nonce() -> None:
    first, second = (pe.encrypt_payload(plain_payload(), ring()) for _ in range(2))
    assert first.data[: pe.NONCE_BYTES] != second.data[: pe.NONCE_BYTES]
    assert first.data != second.data


@pytest.mark.parametrize("position", [0, pe.NONCE_BYTES, -1])
def test_a_modified_payload_is_refused(position: int) -> None:
    sealed = pe.encrypt_payload(plain_payload(), ring())
    data = bytearray(sealed.data)
    data[position] ^= 0x01
    sealed.data = bytes(data)
    with pytest.raises(pe.PayloadDecryptionError, match="'k1' failed authentication"):
        pe.decrypt_payload(sealed, ring())


def test_a_truncated_payload_is_refused() -> None:
    sealed = pe.encrypt_payload(plain_payload(), ring())
    sealed.data = sealed.data[:20]
    with pytest.raises(pe.PayloadDecryptionError, match="'k1' is truncated: 20 bytes"):
        pe.decrypt_payload(sealed, ring())


def test_a_payload_relabelled_to_another_key_is_refused() -> None:
    both = ring("k1", k1=KEY_1, k2=KEY_2)
    sealed = pe.encrypt_payload(plain_payload(), both)
    sealed.metadata["encryption-key-id"] = b"k2"
    with pytest.raises(pe.PayloadDecryptionError, match="'k2' failed authentication"):
        pe.decrypt_payload(sealed, both)


def test_rotation_old_keys_decrypt_new_payloads_use_the_new_key() -> None:
    before = pe.encrypt_payload(plain_payload(), ring("k1", k1=KEY_1))
    rotated = ring("k2", k1=KEY_1, k2=KEY_2)
    after = pe.encrypt_payload(plain_payload(), rotated)

    assert after.metadata["encryption-key-id"] == b"k2"
    assert pe.decrypt_payload(before, rotated) == plain_payload()
    assert pe.decrypt_payload(after, rotated) == plain_payload()
    with pytest.raises(pe.PayloadDecryptionError) as error:
        pe.decrypt_payload(after, ring("k1", k1=KEY_1))
    assert "key 'k2'" in str(error.value) and "['k1']" in str(error.value)


def test_unencrypted_payloads_pass_through() -> None:
    original = plain_payload()
    assert pe.decrypt_payload(original, ring()) is original


async def test_codec_encodes_and_decodes_sequences() -> None:
    codec = pe.AesGcmCodec(ring())
    payloads = [plain_payload(), Payload(metadata={"encoding": b"binary/null"})]
    sealed = await codec.encode(payloads)
    assert all(p.metadata["encoding"] == b"binary/encrypted" for p in sealed)
    assert await codec.decode(sealed) == payloads


# --- the data converter --------------------------------------------------------------------


async def test_converter_encrypts_values_and_failure_messages() -> None:
    converter = pe.converter_for(ring())
    [sealed] = await converter.encode([request()])
    assert sealed.metadata["encoding"] == b"binary/encrypted"
    assert await converter.decode([sealed], [ExperimentRequest]) == [request()]

    failure = Failure()
    await converter.encode_failure(ApplicationError(f"cannot run {SECRET_NAME}"), failure)
    assert failure.message == "Encoded failure"
    assert SECRET_NAME.encode() not in failure.SerializeToString()
    decoded = await converter.decode_failure(failure)
    assert str(decoded) == f"cannot run {SECRET_NAME}"


def test_without_a_key_the_plain_pydantic_converter_is_used() -> None:
    assert pe.load_key_ring() is None
    assert pe.data_converter() is pydantic_data_converter


# --- where keys come from ------------------------------------------------------------------


def test_key_from_the_environment(monkeypatch: pytest.MonkeyPatch, qloop_home: Path) -> None:
    key_file(qloop_home / "codec-keys.json", "file-key", **{"file-key": KEY_2})
    monkeypatch.setenv("QLOOP_CODEC_KEY", base64.b64encode(KEY_1).decode())
    monkeypatch.setenv("QLOOP_CODEC_KEY_ID", "env-key")
    loaded = pe.load_key_ring()
    assert loaded is not None
    assert (loaded.current, dict(loaded.keys)) == ("env-key", {"env-key": KEY_1})
    assert isinstance(pe.data_converter().payload_codec, pe.AesGcmCodec)


def test_key_file_from_the_environment_then_the_default_file(
    monkeypatch: pytest.MonkeyPatch, qloop_home: Path, tmp_path: Path
) -> None:
    key_file(qloop_home / "codec-keys.json", "k1", k1=KEY_1)
    loaded = pe.load_key_ring()
    assert loaded is not None and loaded.source == str(qloop_home / "codec-keys.json")

    elsewhere = key_file(tmp_path / "ring.json", "k2", k1=KEY_1, k2=KEY_2)
    monkeypatch.setenv("QLOOP_CODEC_KEY_FILE", str(elsewhere))
    loaded = pe.load_key_ring()
    assert loaded is not None
    assert (loaded.current, sorted(loaded.keys)) == ("k2", ["k1", "k2"])


def test_a_configured_key_file_that_is_missing_is_an_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("QLOOP_CODEC_KEY_FILE", str(tmp_path / "nope.json"))
    with pytest.raises(pe.CodecKeyError, match=r"cannot read the codec key file .*nope\.json"):
        pe.load_key_ring()


@pytest.mark.parametrize(
    "key, key_id, message",
    [
        (base64.b64encode(KEY_1).decode(), None, "go together"),
        (None, "k1", "go together"),
        ("not base64!!", "k1", "'k1' is not valid base64"),
        (base64.b64encode(KEY_1[:16]).decode(), "k1", "'k1' is 16 bytes long"),
        (base64.b64encode(KEY_1).decode(), "bad id", "key id 'bad id' is not allowed"),
    ],
)
def test_bad_keys_in_the_environment(
    monkeypatch: pytest.MonkeyPatch, key: str | None, key_id: str | None, message: str
) -> None:
    if key is not None:
        monkeypatch.setenv("QLOOP_CODEC_KEY", key)
    if key_id is not None:
        monkeypatch.setenv("QLOOP_CODEC_KEY_ID", key_id)
    with pytest.raises(pe.CodecKeyError, match=message) as error:
        pe.data_converter()
    if key:
        assert key not in str(error.value)


@pytest.mark.parametrize(
    "text, message",
    [
        ('{"current": "k1", "keys": {"k1": "' + "A" * 10, "not valid JSON"),
        ('{"keys": {}}', 'exactly the fields "current" and "keys"'),
        ('{"current": "k1", "keys": {}}', "non-empty mapping"),
        (
            '{"current": "k9", "keys": {"k1": "' + base64.b64encode(KEY_1).decode() + '"}}',
            r"current key 'k9' is not among the keys \['k1'\]",
        ),
        (
            '{"current": "k1", "keys": {"k1": "' + base64.b64encode(b"short").decode() + '"}}',
            "'k1' is 5 bytes long",
        ),
        ('{"current": "k1", "keys": {"k1": 42}}', "'k1' must be a base64 string"),
    ],
)
def test_bad_key_files_name_the_file_and_never_the_key(text: str, message: str) -> None:
    with pytest.raises(pe.CodecKeyError, match=message) as error:
        pe.parse_key_file(text, "/keys/codec-keys.json")
    assert str(error.value).startswith("/keys/codec-keys.json: ")
    assert base64.b64encode(KEY_1).decode() not in str(error.value)
    assert "AAAAAAAAAA" not in str(error.value)


def test_key_ring_repr_shows_no_key() -> None:
    assert repr(KEY_1) not in repr(ring()) and "keys=" not in repr(ring())


# --- key files -----------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_new_key_creates_a_private_file_and_rotation_keeps_old_keys(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "codec-keys.json"
    assert pe.new_key(path) == "k1"
    assert mode(path) == 0o600
    first = pe.parse_key_file(path.read_text(), str(path))

    assert pe.new_key(path) == "k2"
    assert mode(path) == 0o600
    second = pe.parse_key_file(path.read_text(), str(path))
    assert second.current == "k2"
    assert second.keys["k1"] == first.keys["k1"]
    assert second.keys["k2"] != first.keys["k1"]
    assert [p.name for p in path.parent.iterdir()] == ["codec-keys.json"]

    sealed_before = pe.encrypt_payload(plain_payload(), first)
    assert pe.decrypt_payload(sealed_before, second) == plain_payload()


def test_new_key_refuses_an_existing_id(tmp_path: Path) -> None:
    path = tmp_path / "codec-keys.json"
    pe.new_key(path, "2026-11")
    before = path.read_text()
    with pytest.raises(pe.CodecKeyError, match="'2026-11' already exists"):
        pe.new_key(path, "2026-11")
    assert path.read_text() == before


def test_init_creates_key_and_token_files_once(
    qloop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pe.main(["init"]) == 0
    keys, token = qloop_home / "codec-keys.json", qloop_home / "codec-server-token"
    assert mode(keys) == 0o600 and mode(token) == 0o600
    assert pe.token_file_path() == token
    assert len(token.read_text().strip()) >= 40
    contents = keys.read_text(), token.read_text()

    assert pe.main(["init"]) == 0
    assert (keys.read_text(), token.read_text()) == contents
    output = capsys.readouterr().out
    loaded = pe.load_key_ring()
    assert loaded is not None
    assert pe.encode_key(loaded.keys["k1"]) not in output
    assert token.read_text().strip() not in output


def test_new_key_command_rotates_and_reports_bad_ids(
    qloop_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert pe.main(["new-key"]) == 0
    assert pe.main(["new-key", "--id", "spring"]) == 0
    loaded = pe.load_key_ring()
    assert loaded is not None and (loaded.current, sorted(loaded.keys)) == (
        "spring",
        ["k1", "spring"],
    )
    assert pe.main(["new-key", "--id", "no spaces"]) == 2
    assert "key id 'no spaces' is not allowed" in capsys.readouterr().err


# --- the codec server's JSON protocol ------------------------------------------------------


def test_remote_codec_speaks_protobuf_json() -> None:
    body = pe.payloads_to_json([plain_payload()])
    wire = json.loads(body)
    assert set(wire) == {"payloads"}
    assert base64.b64decode(wire["payloads"][0]["metadata"]["encoding"]) == b"json/plain"

    encoded = pe.remote_codec(ring(), "encode", body)
    sealed = json.loads(encoded)["payloads"][0]
    assert base64.b64decode(sealed["metadata"]["encryption-key-id"]) == b"k1"
    assert SECRET_NAME not in encoded.decode()

    decoded = pe.remote_codec(ring(), "decode", encoded)
    assert pe.payloads_from_json(decoded) == [plain_payload()]
    assert json.loads(pe.remote_codec(ring(), "decode", b"{}")) == {"payloads": []}


def test_remote_codec_refuses_what_is_not_payloads_json() -> None:
    with pytest.raises(ValueError, match="protobuf JSON of Payloads"):
        pe.remote_codec(ring(), "decode", b'{"payloads": "nope"}')
    with pytest.raises(ValueError, match="protobuf JSON of Payloads"):
        pe.remote_codec(ring(), "decode", b"not json")
