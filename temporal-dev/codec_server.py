"""qloop's codec server: the Temporal Web UI (and `temporal ... --codec-endpoint`) sends it the
encrypted payloads of a history and shows what it returns, so a caller holding the codec server
token can read experiments while the server and its database only ever hold ciphertext.

  POST .../decode, .../encode   Temporal's remote codec protocol: the protobuf JSON of Payloads
                                in and out. Only the last path segment counts, so per-namespace
                                endpoints such as /default/decode work too.
  GET /login, POST /login       signs a browser in with the token: a session cookie, sent by the
                                Web UI when "Include cross-origin credentials" is on in its codec
                                settings (the UI passes bearer tokens only to https endpoints).
  GET /health                   200 once keys and token are loaded (no authentication).

Every POST to /decode or /encode needs `Authorization: Bearer <token>` or the session cookie,
else 401. The token is checked before a byte of the body is read, and a body is read only with a
Content-Length within the limit (else 413, 411 for none or a chunked body, 400 for a bad one), so
a client without the token costs the server nothing but a header. Every read of the socket times
out (--read-timeout) and a whole request must arrive within --request-timeout (slow clients that
trickle bytes are cut off). The token is QLOOP_CODEC_SERVER_TOKEN or the token file next to
the key file (`python -m schemas.payload_encryption init` creates it). Keys are qloop's (see
schemas/payload_encryption.py). Only the Web UI's origin gets CORS headers (credentials
allowed): --cors-origin, QLOOP_CODEC_CORS_ORIGIN, default http://localhost:$QLOOP_TEMPORAL_UI_PORT.

    python temporal-dev/codec_server.py [--host 127.0.0.1] [--port 9323] [--cors-origin URL]
                                        [--read-timeout 10] [--request-timeout 30]
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import html
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import Message
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from schemas.payload_encryption import (
    CodecKeyError,
    KeyRing,
    load_key_ring,
    remote_codec,
    token_file_path,
)

log = logging.getLogger("qloop.codec_server")

TOKEN_ENV = "QLOOP_CODEC_SERVER_TOKEN"
CORS_ORIGIN_ENV = "QLOOP_CODEC_CORS_ORIGIN"
PORT_ENV = "QLOOP_CODEC_PORT"
DEFAULT_PORT = 9323
SESSION_COOKIE = "qloop_codec_session"
SESSION_SECONDS = 12 * 3600
ALLOWED_HEADERS = "Authorization, Content-Type, X-Namespace"
# Temporal refuses a payload over 2 MB and a gRPC message over 4 MB, so what the Web UI or
# `temporal` sends in one decode call (the payloads of an event, or of a page of events) is a few
# MB of payload bytes; proto JSON carries them as base64 (4/3 as large). 16 MiB is six 2 MB
# payloads in base64 with room to spare, and bounds the memory one authorized request can take.
MAX_BODY_BYTES = 16 * 1024 * 1024
LOGIN_BODY_BYTES = 4096  # the sign-in form: one token field
CONTENT_LENGTH = re.compile(r"[0-9]{1,12}")
READ_TIMEOUT_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 30.0
LINGER_SECONDS = 1.0
LINGER_BYTES = 1024 * 1024
LOGIN_PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class CodecServerConfig:
    ring: KeyRing
    token: str = field(repr=False)
    cors_origin: str
    read_timeout_seconds: float = READ_TIMEOUT_SECONDS
    request_timeout_seconds: float = REQUEST_TIMEOUT_SECONDS

    @property
    def session(self) -> str:
        """The session cookie's value: derived from the token, so it survives a restart of the
        server and the token itself never sits in the browser's cookie store."""
        return hmac.new(self.token.encode(), b"qloop codec session v1", hashlib.sha256).hexdigest()


def same_secret(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def bearer_token(headers: Message) -> str | None:
    scheme, _, credentials = (headers.get("Authorization") or "").partition(" ")
    return credentials.strip() if scheme.lower() == "bearer" else None


def session_cookie(headers: Message) -> str | None:
    cookies = SimpleCookie()
    try:
        cookies.load(headers.get("Cookie") or "")
    except CookieError:
        return None
    morsel = cookies.get(SESSION_COOKIE)
    return morsel.value if morsel else None


def is_authorized(headers: Message, config: CodecServerConfig) -> bool:
    token = bearer_token(headers)
    if token is not None:
        return same_secret(token, config.token)
    session = session_cookie(headers)
    return session is not None and same_secret(session, config.session)


def cors_headers(origin: str | None, config: CodecServerConfig, preflight: bool) -> dict[str, str]:
    """CORS headers for a request from `origin`: none unless it is the Web UI's origin."""
    if origin != config.cors_origin:
        return {}
    headers = {
        "Access-Control-Allow-Origin": origin,
        "Access-Control-Allow-Credentials": "true",
    }
    if preflight:
        headers |= {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
        }
    return headers


def login_page(message: str) -> bytes:
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>qloop codec server</title></head>
<body><h1>qloop codec server</h1><p>{html.escape(message)}</p>
<form method="post" action="/login">
<label>Codec server token <input type="password" name="token" autocomplete="off"></label>
<button type="submit">Sign in</button></form></body></html>
""".encode()


class CodecServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: CodecServerConfig) -> None:
        self.config = config
        super().__init__(address, CodecRequestHandler)


class CodecRequestHandler(BaseHTTPRequestHandler):
    server: CodecServer
    server_version = "qloop-codec"

    body_unread = False

    def setup(self) -> None:
        config = self.server.config
        self.timeout = config.read_timeout_seconds  # applied to the socket by StreamRequestHandler
        super().setup()
        # The read timeout alone lets a client that sends a byte now and then hold a thread
        # forever; past this deadline the connection reads end of file.
        self.deadline = threading.Timer(config.request_timeout_seconds, self.stop_reading)
        self.deadline.daemon = True
        self.deadline.start()

    def stop_reading(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RD)
        except OSError:  # the connection is closed already
            return

    def finish(self) -> None:
        self.deadline.cancel()
        super().finish()
        if self.body_unread:
            self.discard_unread()

    def discard_unread(self) -> None:
        """A socket closed with unread bytes is reset, and a client that sent a body may lose
        the refusal before it reads it. So the answer is sent and the sending side closed, then
        what the client has sent meanwhile is dropped, a bounded amount for a bounded time."""
        deadline = time.monotonic() + LINGER_SECONDS
        dropped = 0
        try:
            self.connection.shutdown(socket.SHUT_WR)
            while dropped < LINGER_BYTES and (left := deadline - time.monotonic()) > 0:
                self.connection.settimeout(left)
                chunk = self.connection.recv(65536)
                if not chunk:
                    return
                dropped += len(chunk)
        except OSError:  # timed out, or the client is gone
            return

    def do_OPTIONS(self) -> None:
        cors = cors_headers(self.headers.get("Origin"), self.server.config, preflight=True)
        status = HTTPStatus.NO_CONTENT if cors else HTTPStatus.FORBIDDEN
        self.respond(status, b"", "text/plain", cors)

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        if path == "/health":
            self.respond(HTTPStatus.OK, b"ok\n", "text/plain")
        elif path == "/login":
            page = login_page("Sign in to let the Temporal Web UI decode qloop's payloads.")
            self.respond(HTTPStatus.OK, page, "text/html; charset=utf-8", LOGIN_PAGE_HEADERS)
        else:
            self.respond_error(HTTPStatus.NOT_FOUND, "unknown path; POST /decode or /encode")

    def do_POST(self) -> None:
        """Path and token first, from the headers alone; the body is read last, if at all."""
        config = self.server.config
        cors = cors_headers(self.headers.get("Origin"), config, preflight=False)
        path = urllib.parse.urlsplit(self.path).path
        if path == "/login":
            form = self.read_body(LOGIN_BODY_BYTES, cors)
            if form is not None:
                self.login(form)
            return
        operation = path.rstrip("/").rsplit("/", 1)[-1]
        if operation not in ("decode", "encode"):
            self.refuse(HTTPStatus.NOT_FOUND, "unknown path; POST /decode or /encode", cors)
            return
        if not is_authorized(self.headers, config):
            self.refuse(
                HTTPStatus.UNAUTHORIZED,
                "send 'Authorization: Bearer <codec server token>', or sign in at /login",
                {**cors, "WWW-Authenticate": 'Bearer realm="qloop-codec"'},
            )
            return
        body = self.read_body(MAX_BODY_BYTES, cors)
        if body is None:
            return
        try:
            answer = remote_codec(config.ring, operation, body)
        except ValueError as error:  # bad JSON, or payloads the keys cannot decrypt
            self.respond_error(HTTPStatus.BAD_REQUEST, str(error), cors)
            return
        self.respond(HTTPStatus.OK, answer, "application/json", cors)

    def login(self, body: bytes) -> None:
        fields = urllib.parse.parse_qs(body.decode(errors="replace"))
        token = (fields.get("token") or [""])[0].strip()
        config = self.server.config
        if not same_secret(token, config.token):
            page = login_page("That is not the codec server token; try again.")
            self.respond(
                HTTPStatus.UNAUTHORIZED, page, "text/html; charset=utf-8", LOGIN_PAGE_HEADERS
            )
            return
        cookie = (
            f"{SESSION_COOKIE}={config.session}; HttpOnly; SameSite=Strict; Path=/; "
            f"Max-Age={SESSION_SECONDS}"
        )
        page = login_page(
            "Signed in. In the Web UI's codec server settings, turn on 'Include cross-origin "
            "credentials'; payloads then show decrypted."
        )
        self.respond(
            HTTPStatus.OK,
            page,
            "text/html; charset=utf-8",
            {**LOGIN_PAGE_HEADERS, "Set-Cookie": cookie},
        )

    def read_body(self, limit: int, cors: Mapping[str, str]) -> bytes | None:
        """The body, when its Content-Length is given and at most `limit`; else None after a
        refusal that reads none of it."""
        if self.headers.get("Transfer-Encoding") is not None:
            self.refuse(
                HTTPStatus.LENGTH_REQUIRED,
                "send the body with a Content-Length; chunked bodies are not accepted",
                cors,
            )
            return None
        lengths = self.headers.get_all("Content-Length") or []
        if not lengths:
            self.refuse(HTTPStatus.LENGTH_REQUIRED, "a Content-Length header is required", cors)
            return None
        if len(lengths) > 1 or not CONTENT_LENGTH.fullmatch(lengths[0].strip()):
            self.refuse(HTTPStatus.BAD_REQUEST, "Content-Length must be one number of bytes", cors)
            return None
        length = int(lengths[0])
        if length > limit:
            self.refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the body has {length} bytes; at most {limit} are accepted here",
                cors,
            )
            return None
        body = self.rfile.read(length)
        if len(body) < length:  # the client stopped sending, or the request deadline passed
            self.close_connection = True
            return None
        return body

    def refuse(self, status: HTTPStatus, message: str, headers: Mapping[str, str]) -> None:
        """An error answered without reading the body: the connection cannot carry another
        request after the unread bytes, so it is closed."""
        self.close_connection = True
        self.body_unread = True
        self.respond_error(status, message, {**headers, "Connection": "close"})

    def respond_error(
        self, status: HTTPStatus, message: str, headers: Mapping[str, str] | None = None
    ) -> None:
        body = json.dumps({"error": message}).encode()
        self.respond(status, body, "application/json", headers)

    def respond(
        self,
        status: HTTPStatus,
        body: bytes,
        content_type: str,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Vary", "Origin")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # Method, path and status only: headers carry the token and bodies carry payloads.
        path = urllib.parse.urlsplit(self.path).path
        log.info("%s %s %s", self.command, path, code)


def read_token() -> str:
    token = os.environ.get(TOKEN_ENV, "").strip()
    if token:
        return token
    path = token_file_path()
    try:
        token = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        token = ""
    if not token:
        raise CodecKeyError(
            f"no codec server token: set {TOKEN_ENV}, or create {path} with "
            "`python -m schemas.payload_encryption init`"
        )
    return token


def default_cors_origin() -> str:
    return f"http://localhost:{os.environ.get('QLOOP_TEMPORAL_UI_PORT', '8233')}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="qloop's codec server for the Temporal Web UI")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get(PORT_ENV, DEFAULT_PORT)))
    parser.add_argument(
        "--cors-origin",
        default=os.environ.get(CORS_ORIGIN_ENV) or default_cors_origin(),
        help="the Web UI's origin, the only one given CORS headers",
    )
    parser.add_argument(
        "--read-timeout",
        type=float,
        default=READ_TIMEOUT_SECONDS,
        help="seconds one read of a connection may wait for data",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        default=REQUEST_TIMEOUT_SECONDS,
        help="seconds a whole request (headers and body) may take to arrive",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        ring = load_key_ring()
        if ring is None:
            raise CodecKeyError(
                "no codec key is configured: set QLOOP_CODEC_KEY and QLOOP_CODEC_KEY_ID, or "
                "QLOOP_CODEC_KEY_FILE, or run `python -m schemas.payload_encryption init`"
            )
        config = CodecServerConfig(
            ring=ring,
            token=read_token(),
            cors_origin=args.cors_origin,
            read_timeout_seconds=args.read_timeout,
            request_timeout_seconds=args.request_timeout,
        )
    except CodecKeyError as error:
        print(f"codec_server: error: {error}", file=sys.stderr)
        return 2
    server = CodecServer((args.host, args.port), config)
    log.info(
        "serving http://%s:%s for origin %s; keys %s (current %s)",
        args.host,
        args.port,
        config.cors_origin,
        sorted(ring.keys),
        ring.current,
    )
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
