"""The codec server as stack.sh runs it: bearer token or session cookie, CORS for the Web UI's
origin only, and a real history decoded through it by the `temporal` CLI (the same remote codec
protocol the Web UI speaks).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from email.message import Message

import pytest
import pytest_asyncio
from temporalio.api.common.v1 import Payload
from temporalio.client import Client

from schemas.payload_encryption import (
    ENCRYPTED_ENCODING,
    KeyRing,
    converter_for,
    parse_key_file,
    payloads_from_json,
    payloads_to_json,
)
from schemas.pipeline import ExperimentInput
from schemas.report import ExperimentReport
from schemas.request import ExperimentRequest
from tests.conftest import temporal_cli_path
from tests.harness import LocalStack

OTHER_ORIGIN = "http://evil.example:8233"


@dataclass
class Answer:
    status: int
    headers: Message
    body: bytes


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    local = LocalStack(
        tmp_path_factory.mktemp("codec"), task_queue=f"codec-{uuid.uuid4().hex[:8]}", codec=True
    )
    local.start()
    local.start_worker()
    try:
        yield local
    finally:
        local.stop()


@pytest.fixture(scope="module")
def token(stack: LocalStack) -> str:
    return (stack.qloop_home / "codec-server-token").read_text().strip()


@pytest.fixture(scope="module")
def ring(stack: LocalStack) -> KeyRing:
    path = stack.qloop_home / "codec-keys.json"
    return parse_key_file(path.read_text(), str(path))


@pytest.fixture(scope="module")
def ui_origin(stack: LocalStack) -> str:
    return f"http://localhost:{stack.stack_env['QLOOP_TEMPORAL_UI_PORT']}"


@pytest_asyncio.fixture(loop_scope="session")
async def client(stack: LocalStack, ring: KeyRing) -> AsyncIterator[Client]:
    yield await Client.connect(stack.address, data_converter=converter_for(ring))


def call(
    stack: LocalStack,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    request = urllib.request.Request(
        f"{stack.codec_url}{path}", data=body, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return Answer(response.status, response.headers, response.read())
    except urllib.error.HTTPError as error:
        return Answer(error.code, error.headers, error.read())


def experiment_request(name: str) -> ExperimentRequest:
    return ExperimentRequest.model_validate(
        {
            "name": name,
            "problem": {"kind": "ghz", "num_qubits": 2},
            "execution": {"shots": 500, "backend": {"provider": "aer", "device": "ideal"}},
            "mitigation": {"zne": None, "readout": False},
        }
    )


async def plain_payloads(name: str) -> list[Payload]:
    return await converter_for(None).encode([experiment_request(name), {"note": name}])


async def sealed_payloads(ring: KeyRing, name: str) -> list[Payload]:
    return await converter_for(ring).encode([experiment_request(name), {"note": name}])


async def test_decode_needs_the_codec_server_token(
    stack: LocalStack, ring: KeyRing, token: str
) -> None:
    name = f"secret-{uuid.uuid4().hex[:6]}"
    sealed = await sealed_payloads(ring, name)
    body = payloads_to_json(sealed)
    assert name.encode() not in body

    for headers in [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
    ]:
        answer = call(stack, "POST", "/decode", body, headers)
        assert answer.status == 401, headers
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="qloop-codec"'
        assert set(json.loads(answer.body)) == {"error"}

    answer = call(stack, "POST", "/default/decode", body, {"Authorization": f"Bearer {token}"})
    assert answer.status == 200, answer.body
    assert payloads_from_json(answer.body) == await plain_payloads(name)


async def test_encode_seals_payloads_the_workers_can_read(
    stack: LocalStack, ring: KeyRing, token: str
) -> None:
    plain = await converter_for(None).encode([{"approved_by": "operator"}])
    answer = call(
        stack, "POST", "/encode", payloads_to_json(plain), {"Authorization": f"Bearer {token}"}
    )
    assert answer.status == 200, answer.body
    [sealed] = payloads_from_json(answer.body)
    assert sealed.metadata["encoding"] == ENCRYPTED_ENCODING
    assert await converter_for(ring).decode([sealed]) == [{"approved_by": "operator"}]


def test_bad_requests_and_unknown_paths(stack: LocalStack, token: str) -> None:
    bearer = {"Authorization": f"Bearer {token}"}
    answer = call(stack, "POST", "/decode", b'{"payloads": 3}', bearer)
    assert answer.status == 400
    assert "protobuf JSON of Payloads" in json.loads(answer.body)["error"]
    assert call(stack, "POST", "/transcode", b"{}", bearer).status == 404
    assert call(stack, "GET", "/decode").status == 404
    assert call(stack, "GET", "/health").status == 200


def test_cors_only_for_the_web_ui_origin(stack: LocalStack, token: str, ui_origin: str) -> None:
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type,x-namespace,authorization",
    }
    answer = call(stack, "OPTIONS", "/decode", headers={"Origin": ui_origin, **preflight})
    assert answer.status == 204
    assert answer.headers["Access-Control-Allow-Origin"] == ui_origin
    assert answer.headers["Access-Control-Allow-Credentials"] == "true"
    allowed = {h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")}
    assert {"authorization", "content-type", "x-namespace"} <= allowed
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]

    refused = call(stack, "OPTIONS", "/decode", headers={"Origin": OTHER_ORIGIN, **preflight})
    assert refused.status == 403
    assert not [h for h in refused.headers if h.lower().startswith("access-control-")]

    bearer = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = payloads_to_json([])
    from_ui = call(stack, "POST", "/decode", body, {**bearer, "Origin": ui_origin})
    assert from_ui.headers["Access-Control-Allow-Origin"] == ui_origin
    from_elsewhere = call(stack, "POST", "/decode", body, {**bearer, "Origin": OTHER_ORIGIN})
    assert from_elsewhere.headers["Access-Control-Allow-Origin"] is None


async def test_browser_sign_in_gives_a_session_cookie_the_ui_sends(
    stack: LocalStack, ring: KeyRing, token: str, ui_origin: str
) -> None:
    page = call(stack, "GET", "/login")
    assert page.status == 200 and b'name="token"' in page.body
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]

    form = {"Content-Type": "application/x-www-form-urlencoded"}
    wrong = call(stack, "POST", "/login", b"token=guess", form)
    assert wrong.status == 401 and wrong.headers["Set-Cookie"] is None

    signed_in = call(stack, "POST", "/login", f"token={token}".encode(), form)
    assert signed_in.status == 200
    cookie = signed_in.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    session = cookie.split(";", 1)[0]
    assert token not in session

    name = f"secret-{uuid.uuid4().hex[:6]}"
    body = payloads_to_json(await sealed_payloads(ring, name))
    as_the_ui = {"Origin": ui_origin, "Content-Type": "application/json", "X-Namespace": "default"}
    decoded = call(stack, "POST", "/decode", body, {**as_the_ui, "Cookie": session})
    assert decoded.status == 200
    assert payloads_from_json(decoded.body) == await plain_payloads(name)
    assert decoded.headers["Access-Control-Allow-Credentials"] == "true"
    forged = call(stack, "POST", "/decode", body, {**as_the_ui, "Cookie": "qloop_codec_session=00"})
    assert forged.status == 401


async def test_temporal_cli_reads_history_through_the_codec_server(
    stack: LocalStack, client: Client, token: str
) -> None:
    """The worker encrypts with the key stack.sh created; `temporal workflow show` sees
    ciphertext on its own and the experiment through the codec server."""
    name = f"secret-{uuid.uuid4().hex[:6]}"
    handle = await client.start_workflow(
        "ExperimentWorkflow",
        ExperimentInput(request=experiment_request(name)),
        id=f"codec-{uuid.uuid4().hex[:8]}",
        task_queue=stack.task_queue,
        result_type=ExperimentReport,
    )
    report = await asyncio.wait_for(handle.result(), timeout=180)
    assert report.experiment_id == handle.id

    def show(*codec: str) -> str:
        shown = subprocess.run(
            [temporal_cli_path(), "workflow", "show", "--workflow-id", handle.id,
             "--address", stack.address, "--detailed", *codec],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        return shown.stdout

    without_codec = show()
    assert "input.payloads[0].metadata.encryption-key-id" in without_codec
    assert name not in without_codec
    decoded = show("--codec-endpoint", stack.codec_url, "--codec-auth", f"Bearer {token}")
    assert f"input[0].request.name: {name}" in decoded
    assert f"result[0].experiment_id: {handle.id}" in decoded


def test_stack_files_are_private(stack: LocalStack) -> None:
    for name in ("codec-keys.json", "codec-server-token"):
        assert (stack.qloop_home / name).stat().st_mode & 0o077 == 0, name


def test_codec_server_log_holds_no_token(stack: LocalStack, token: str) -> None:
    body = payloads_to_json([])
    call(stack, "POST", "/decode", body, {"Authorization": f"Bearer {token}"})
    call(stack, "POST", "/decode", body, {"Authorization": f"Bearer {token[::-1]}"})
    call(stack, "POST", "/login", f"token={token}".encode())
    log = (stack.data_dir / "codec-server.log").read_text()
    assert "POST /decode 401" in log and "POST /decode 200" in log and "POST /login 200" in log
    assert token not in log and token[::-1] not in log
