"""The codec server as stack.sh runs it: bearer token or session cookie, CORS for the Web UI's
origin only, and a real history decoded through it by the `temporal` CLI (the same remote codec
protocol the Web UI speaks). Then a codec server process of its own, spoken to over raw sockets:
the token is checked before any body is read, sizes are capped, and slow clients are cut off.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import subprocess
import sys
import time
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
from tests.harness import REPO_ROOT, LocalStack
from tests.server_helpers import free_ports, wait_until

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


# --- the edges: a codec server process of its own, raw sockets --------------------------------

OWN_TOKEN = "edge-token-" + uuid.uuid4().hex
READ_TIMEOUT = 2.0
REQUEST_TIMEOUT = 4.0
GIGABYTE = 1 << 30


@dataclass
class RawAnswer:
    status: int | None  # None: the connection closed without an answer
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the last byte sent to the first byte of the answer (or the close)


@pytest.fixture(scope="module")
def own_codec(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, KeyRing]]:
    """A codec server with short read and request timeouts; its port and key ring."""
    home = tmp_path_factory.mktemp("own-codec")
    (port,) = free_ports(1)
    key = os.urandom(32)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("QLOOP_")},
        "PYTHONPATH": str(REPO_ROOT),
        "QLOOP_HOME": str(home),
        "QLOOP_CODEC_KEY": base64.b64encode(key).decode(),
        "QLOOP_CODEC_KEY_ID": "edge",
        "QLOOP_CODEC_SERVER_TOKEN": OWN_TOKEN,
    }
    log = (home / "codec-server.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "temporal-dev/codec_server.py", "--port", str(port),
         "--read-timeout", str(READ_TIMEOUT), "--request-timeout", str(REQUEST_TIMEOUT)],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_until(lambda: healthy(port), timeout=30, interval=0.2)
        yield port, KeyRing(current="edge", keys={"edge": key}, source="test")
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


def healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def exchange(port: int, head: list[str], body: bytes = b"") -> RawAnswer:
    """Sends the request line and headers in `head` (and `body`, if any), then reads until the
    server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        sent = time.monotonic()
        received = b""
        first: float | None = None
        while chunk := connection.recv(65536):
            first = time.monotonic() if first is None else first
            received += chunk
        seconds = (first or time.monotonic()) - sent
    if not received:
        return RawAnswer(None, {}, b"", seconds)
    header_block, _, answer_body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = header_block.decode().split("\r\n")
    headers = {
        name.lower(): value.strip()
        for name, _, value in (line.partition(":") for line in header_lines)
    }
    return RawAnswer(int(status_line.split()[1]), headers, answer_body, seconds)


def post(path: str, *headers: str) -> list[str]:
    return [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", "Content-Type: application/json", *headers]


BEARER = f"Authorization: Bearer {OWN_TOKEN}"


def test_a_gigabyte_without_the_token_is_refused_before_a_byte_of_it_is_read(
    own_codec: tuple[int, KeyRing],
) -> None:
    port, _ = own_codec
    attempts = [
        (length, credentials)
        for length in (GIGABYTE, 1000)
        for credentials in (
            [],
            ["Authorization: Bearer not-the-token"],
            ["Cookie: qloop_codec_session=0"],
        )
    ]
    for length, credentials in attempts:
        # Headers claim a body and nothing follows: a server waiting for the body would answer
        # nothing until its read timeout cut the connection.
        answer = exchange(port, post("/decode", f"Content-Length: {length}", *credentials))
        assert answer.status == 401, (length, credentials)
        assert answer.seconds < READ_TIMEOUT / 2, answer.seconds
        assert answer.headers["www-authenticate"] == 'Bearer realm="qloop-codec"'
        assert answer.headers["connection"] == "close"
    # The unknown path is refused from the headers alone as well.
    assert exchange(port, post("/upload", f"Content-Length: {GIGABYTE}")).status == 404


def test_an_oversized_body_with_the_token_is_refused_unread(
    own_codec: tuple[int, KeyRing],
) -> None:
    port, _ = own_codec
    for length in (GIGABYTE, 16 * 1024 * 1024 + 1):
        answer = exchange(port, post("/decode", f"Content-Length: {length}", BEARER))
        assert answer.status == 413, length
        assert answer.seconds < READ_TIMEOUT / 2, answer.seconds
        assert json.loads(answer.body)["error"] == (
            f"the body has {length} bytes; at most {16 * 1024 * 1024} are accepted here"
        )
    login = exchange(port, post("/login", f"Content-Length: {GIGABYTE}"))
    assert login.status == 413 and login.seconds < READ_TIMEOUT / 2


@pytest.mark.parametrize(
    ("case", "headers", "status", "words"),
    [
        ("no length", [], 411, "Content-Length header is required"),
        ("chunked", ["Transfer-Encoding: chunked"], 411, "chunked bodies are not accepted"),
        (
            "chunked with a length",
            ["Transfer-Encoding: chunked", "Content-Length: 5"],
            411,
            "chunked",
        ),
        ("not a number", ["Content-Length: lots"], 400, "one number of bytes"),
        ("negative", ["Content-Length: -1"], 400, "one number of bytes"),
        ("two lengths", ["Content-Length: 2", "Content-Length: 3"], 400, "one number of bytes"),
    ],
)
def test_a_body_without_one_valid_length_is_refused_unread(
    own_codec: tuple[int, KeyRing], case: str, headers: list[str], status: int, words: str
) -> None:
    port, _ = own_codec
    answer = exchange(port, post("/decode", BEARER, *headers))
    assert answer.status == status, case
    assert words in json.loads(answer.body)["error"], case
    assert answer.seconds < READ_TIMEOUT / 2, answer.seconds


async def test_a_normal_decode_still_answers(own_codec: tuple[int, KeyRing]) -> None:
    port, ring = own_codec
    name = f"edge-{uuid.uuid4().hex[:6]}"
    body = payloads_to_json(await sealed_payloads(ring, name))
    answer = exchange(port, post("/default/decode", BEARER, f"Content-Length: {len(body)}"), body)
    assert answer.status == 200, answer.body
    assert payloads_from_json(answer.body) == await plain_payloads(name)
    # A refused body that was sent in full still gets its refusal, not a reset connection.
    wrong = exchange(port, post("/decode", f"Content-Length: {len(body)}"), body)
    assert wrong.status == 401


def test_a_slow_client_is_cut_off(own_codec: tuple[int, KeyRing]) -> None:
    port, _ = own_codec
    head = "\r\n".join(post("/decode", BEARER, "Content-Length: 10")).encode()
    # Half the headers, then silence: the read timeout closes the connection.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as idle:
        idle.sendall(head[:20])
        started = time.monotonic()
        assert idle.recv(1024) == b""
        assert time.monotonic() - started < READ_TIMEOUT + 1.5
    # A byte every half second never trips the read timeout; the request deadline ends it.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as trickle:
        trickle.settimeout(0.5)
        started = time.monotonic()
        closed = False
        for byte in head + b"\r\n\r\n0123456789":
            try:
                trickle.send(bytes([byte]))
                trickle.recv(1024)  # returns only once the server answers or closes
            except TimeoutError:
                continue
            except ConnectionError:
                pass
            closed = True
            break
        assert closed, "the whole request was trickled in"
        assert time.monotonic() - started < REQUEST_TIMEOUT + 1.5
    assert healthy(port)
