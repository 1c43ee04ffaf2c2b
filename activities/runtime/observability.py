"""Logs, traces and metrics for the worker and the CLI.

- structlog JSON logs; inside an activity every line carries workflow id, run id, activity
  type and attempt; workflow logs (workflow.logger) carry Temporal's own workflow context.
- OpenTelemetry tracing through Temporal's interceptor; the exporter is chosen by the standard
  OTEL_TRACES_EXPORTER variable (console, otlp when its package is installed, or none).
- SDK metrics on a Prometheus endpoint when QLOOP_PROMETHEUS_BIND_ADDRESS is set.
- With payload encryption on (schemas/payload_encryption.py), logs hold no more than history
  shows in clear text: failure messages quote requests (a QASM line, a circuit's name), so every
  exception keeps its type and frames but not its message, and lines of a workflow or an activity
  lose their arguments and `error` text (`RedactFailures`). Ids, types and attempts stay.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import traceback
from collections.abc import Mapping
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio import activity
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from schemas.payload_encryption import CodecKeyError, load_key_ring
from schemas.settings import current_settings

log = structlog.get_logger("qloop.activity")

SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")
REDACTED = "[redacted: payload encryption is on]"
# Keys that put a line in a workflow's or an activity's context: ours (bound by
# ActivityLogContext) and the SDK's (the `extra` of its workflow and activity loggers).
CONTEXT_KEYS = ("workflow_id", "temporal_workflow", "temporal_activity")
SHORTEST_REDACTED_MESSAGE = 4  # replacing shorter texts would mangle lines and hide nothing


def failure_type(error: BaseException) -> str:
    """The type of an error as history shows it without the key: the class, and for an
    ApplicationError its type name."""
    name = type(error).__name__
    if isinstance(error, ApplicationError) and error.type and error.type != name:
        return f"{name}({error.type})"
    return name


def exception_chain(error: BaseException) -> list[BaseException]:
    """`error`, then what caused it (or what it was raised while handling), outermost first."""
    chain = [error]
    while len(chain) < 20:
        last = chain[-1]
        cause = last.__cause__ or (None if last.__suppress_context__ else last.__context__)
        if cause is None or cause in chain:
            break
        chain.append(cause)
    return chain


def redacted_traceback(chain: list[BaseException]) -> str:
    """Python's traceback of `chain` with every message replaced: frames and types stay."""
    parts = [
        "Traceback (most recent call last):\n"
        + "".join(traceback.format_list(traceback.extract_tb(error.__traceback__)))
        + f"{failure_type(error)}: {REDACTED}"
        for error in reversed(chain)
    ]
    return "\n\nwhich led to\n\n".join(parts)


def logged_exception(exc_info: object) -> BaseException | None:
    if isinstance(exc_info, BaseException):
        return exc_info
    if isinstance(exc_info, tuple):
        return exc_info[1] if len(exc_info) > 1 else None
    return sys.exc_info()[1] if exc_info else None


class RedactFailures:
    """A structlog processor for a worker whose history is encrypted.

    - Any line with an exception: the traceback keeps its frames and the types of the chain
      (`error_type`) but not one message, and those messages are cut out of the line's text too
      (the SDK's "Completing activity as failed", "Failed activation on workflow ...").
    - A line of a workflow or an activity (ours, or the SDK's loggers): its `error` value and the
      arguments of its message are replaced, so `workflow.logger.info("leaving %s: %s", ...)`
      keeps its words and ids but not what it quoted.
    Needs the formatter's `pass_foreign_args`, and runs before `remove_processors_meta`.
    """

    def __call__(self, logger: Any, method: str, event_dict: Any) -> Any:
        arguments = event_dict.pop("positional_args", ())
        in_context = any(key in event_dict for key in CONTEXT_KEYS)
        error = logged_exception(event_dict.pop("exc_info", None))
        if in_context and arguments:
            event_dict["event"] = self.without_arguments(event_dict.get("_record"), arguments)
        if in_context and "error" in event_dict:
            event_dict["error"] = REDACTED
        if error is not None:
            chain = exception_chain(error)
            event_dict["error_type"] = " <- ".join(failure_type(e) for e in chain)
            event_dict["exception"] = redacted_traceback(chain)
            event_dict["event"] = self.without_messages(str(event_dict.get("event", "")), chain)
        return event_dict

    @staticmethod
    def without_arguments(record: logging.LogRecord | None, arguments: object) -> str:
        template = str(record.msg) if record is not None else ""
        try:
            if isinstance(arguments, Mapping):
                return template % {name: REDACTED for name in arguments}
            return template % tuple(REDACTED for _ in arguments)  # type: ignore[attr-defined]
        except (TypeError, ValueError, KeyError):
            return f"{template} {REDACTED}"

    @staticmethod
    def without_messages(text: str, chain: list[BaseException]) -> str:
        for error in chain:
            for message in {str(error), getattr(error, "message", "")}:
                if isinstance(message, str) and len(message) >= SHORTEST_REDACTED_MESSAGE:
                    text = text.replace(message, REDACTED)
        return text


def payload_encryption_on() -> bool:
    try:
        return load_key_ring() is not None
    except CodecKeyError:  # bad key material stops the worker at connect; until then, redact
        return True


def configure_logging(level: str | None = None, redact: bool | None = None) -> None:
    """Every log line, ours and the SDK's, as one JSON object on stderr; redacted as
    `RedactFailures` says when `redact` (by default: when payload encryption is on)."""
    level = level or current_settings().log_level
    redact = payload_encryption_on() if redact is None else redact
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED_PROCESSORS,
            pass_foreign_args=redact,
            processors=[
                *([RedactFailures()] if redact else []),
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.format_exc_info,
                structlog.processors.JSONRenderer(default=str),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # At DEBUG the AWS SDK logs request headers, credentials included: never below INFO.
    for name in CREDENTIAL_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.INFO))
    structlog.configure(
        processors=[*SHARED_PROCESSORS, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )


class _ActivityContextInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        with structlog.contextvars.bound_contextvars(
            workflow_id=info.workflow_id,
            run_id=info.workflow_run_id,
            activity=info.activity_type,
            attempt=info.attempt,
        ):
            started = time.perf_counter()
            try:
                result = await super().execute_activity(input)
            except Exception as error:
                log.warning(
                    "activity failed",
                    error_type=failure_type(error),
                    error=str(error),
                    seconds=time.perf_counter() - started,
                )
                raise
            log.info("activity completed", seconds=round(time.perf_counter() - started, 4))
            return result


class ActivityLogContext(Interceptor):
    """Binds the activity's workflow id, run id, type and attempt to every log line it writes."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityContextInbound(super().intercept_activity(next))


def _span_exporter(name: str) -> SpanExporter | None:
    if name == "console":
        return ConsoleSpanExporter()
    if name == "otlp":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        except ImportError as error:
            raise RuntimeError(
                "OTEL_TRACES_EXPORTER=otlp needs opentelemetry-exporter-otlp installed"
            ) from error
        return OTLPSpanExporter()
    if name in ("", "none"):
        return None
    raise RuntimeError(f"OTEL_TRACES_EXPORTER={name!r} is not supported; use console, otlp or none")


def configure_tracing(service_name: str) -> TracingInterceptor:
    """Installs a tracer provider when OTEL_TRACES_EXPORTER asks for one; the interceptor then
    traces every workflow and activity (without one, spans are no-ops)."""
    exporter = _span_exporter(os.environ.get("OTEL_TRACES_EXPORTER", "none").strip().lower())
    if exporter is not None:
        resource = Resource.create(
            {"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)}
        )
        provider = TracerProvider(resource=resource)
        provider.add_span_processor(BatchSpanProcessor(exporter))
        trace.set_tracer_provider(provider)
    # Workflows started without a traced client (Web UI, `temporal` CLI, schedules) get spans too.
    return TracingInterceptor(always_create_workflow_spans=True)


def temporal_runtime() -> Runtime | None:
    """A runtime serving SDK metrics to Prometheus when QLOOP_PROMETHEUS_BIND_ADDRESS is set."""
    address = current_settings().prometheus_bind_address
    if address is None:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
