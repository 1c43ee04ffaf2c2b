"""HTTP front door: restJson1 routing of the Braket operations, error encoding, fault injection.

Any SigV4 signature is accepted (the caller only has to sign at all); errors carry the
`x-amzn-ErrorType` header and the status of botocore's service model, so the SDK raises
ClientError with the same codes as against AWS. /_admin/* is never subject to faults.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from qpu_standin.errors import ApiError, validation
from qpu_standin.service import Service

log = logging.getLogger("qpu_standin")

Handler = Callable[[Service, list[str], dict[str, list[str]], dict[str, Any]], dict[str, Any]]

# (method, path pattern, operation, success status); "*" matches one URL-encoded segment.
_ROUTES: list[tuple[str, tuple[str, ...], str, int, Handler]] = [
    (
        "POST",
        ("quantum-task",),
        "CreateQuantumTask",
        201,
        lambda s, p, q, b: s.create_quantum_task(b),
    ),
    (
        "GET",
        ("quantum-task", "*"),
        "GetQuantumTask",
        200,
        lambda s, p, q, b: s.get_quantum_task(p[0], q.get("additionalAttributeNames", [])),
    ),
    (
        "PUT",
        ("quantum-task", "*", "cancel"),
        "CancelQuantumTask",
        200,
        lambda s, p, q, b: s.cancel_quantum_task(p[0]),
    ),
    ("GET", ("device", "*"), "GetDevice", 200, lambda s, p, q, b: s.get_device(p[0])),
    ("POST", ("devices",), "SearchDevices", 200, lambda s, p, q, b: s.search_devices(b)),
    (
        "POST",
        ("quantum-tasks",),
        "SearchQuantumTasks",
        200,
        lambda s, p, q, b: s.search_quantum_tasks(b),
    ),
    (
        "POST",
        ("spending-limit",),
        "CreateSpendingLimit",
        201,
        lambda s, p, q, b: s.create_spending_limit(b),
    ),
    (
        "PATCH",
        ("spending-limit", "*", "update"),
        "UpdateSpendingLimit",
        200,
        lambda s, p, q, b: s.update_spending_limit(p[0], b),
    ),
    (
        "DELETE",
        ("spending-limit", "*", "delete"),
        "DeleteSpendingLimit",
        200,
        lambda s, p, q, b: s.delete_spending_limit(p[0]),
    ),
    (
        "POST",
        ("spending-limits",),
        "SearchSpendingLimits",
        200,
        lambda s, p, q, b: s.search_spending_limits(b),
    ),
]

_ADMIN: dict[tuple[str, str], Handler] = {
    ("GET", "health"): lambda s, p, q, b: s.health(),
    ("GET", "config"): lambda s, p, q, b: s.config(),
    ("POST", "config"): lambda s, p, q, b: s.update_config(b),
    ("GET", "tasks"): lambda s, p, q, b: s.tasks(),
    ("POST", "s3-sync"): lambda s, p, q, b: s.restore_results(),
}

_MUTATING = {
    "CreateQuantumTask",
    "CancelQuantumTask",
    "CreateSpendingLimit",
    "UpdateSpendingLimit",
    "DeleteSpendingLimit",
}


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        super().__init__(address, _RequestHandler)
        self.service = service


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: StandinServer

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s %s", self.address_string(), format % args)

    def _handle(self, method: str) -> None:
        url = urlsplit(self.path)
        segments = [unquote(part) for part in url.path.strip("/").split("/")]
        query = parse_qs(url.query)
        try:
            body = self._body()
            if segments[0] == "_admin":
                status, payload = 200, self._admin(method, segments, query, body)
            else:
                status, payload = self._braket(method, segments, query, body)
        except ApiError as error:
            self._send(error.status, error.body(), error.code)
            return
        self._send(status, payload)

    def _admin(
        self, method: str, segments: list[str], query: dict[str, list[str]], body: dict[str, Any]
    ) -> dict[str, Any]:
        handler = _ADMIN.get((method, "/".join(segments[1:])))
        if handler is None:
            raise ApiError("UnknownOperationException", f"no admin endpoint {method} {self.path}")
        return handler(self.server.service, [], query, body)

    def _braket(
        self, method: str, segments: list[str], query: dict[str, list[str]], body: dict[str, Any]
    ) -> tuple[int, dict[str, Any]]:
        service = self.server.service
        for route_method, pattern, operation, status, handler in _ROUTES:
            params = _match(pattern, segments)
            if route_method != method or params is None:
                continue
            if "authorization" not in {k.lower() for k in self.headers}:
                raise ApiError("AccessDeniedException", "request is not signed")
            fault = service.faults.before_call(operation, time.time())
            if fault is not None:
                raise fault
            payload = handler(service, params, query, body)
            if operation in _MUTATING and service.faults.lose_response(operation):
                raise ApiError(
                    "InternalServiceException", "injected error after the call took effect"
                )
            return status, payload
        raise ApiError("UnknownOperationException", f"no operation for {method} {self.path}")

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        if not length:
            return {}
        try:
            body = json.loads(self.rfile.read(length))
        except ValueError as error:
            raise validation(f"request body is not JSON: {error}") from error
        if not isinstance(body, dict):
            raise validation("request body must be a JSON object")
        return body

    def _send(self, status: int, payload: dict[str, Any], error_type: str | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if error_type:
            self.send_header("x-amzn-ErrorType", error_type)
        self.end_headers()
        self.wfile.write(data)


def _match(pattern: tuple[str, ...], segments: list[str]) -> list[str] | None:
    if len(pattern) != len(segments):
        return None
    params = []
    for expected, actual in zip(pattern, segments, strict=True):
        if expected == "*":
            params.append(actual)
        elif expected != actual:
            return None
    return params
