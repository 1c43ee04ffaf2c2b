"""Logs, traces and metrics for the worker and the CLI.

- structlog JSON logs; inside an activity every line carries workflow id, run id, activity
  type and attempt; workflow logs (workflow.logger) carry Temporal's own workflow context.
- OpenTelemetry tracing through Temporal's interceptor; the exporter is chosen by the standard
  OTEL_TRACES_EXPORTER variable (console, otlp when its package is installed, or none).
- SDK metrics on a Prometheus endpoint when QLOOP_PROMETHEUS_BIND_ADDRESS is set.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any

import structlog
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from temporalio import activity
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

log = structlog.get_logger("qloop.activity")

SHARED_PROCESSORS: list[Any] = [
    structlog.contextvars.merge_contextvars,
    structlog.stdlib.add_log_level,
    structlog.stdlib.add_logger_name,
    structlog.stdlib.ExtraAdder(),
    structlog.processors.TimeStamper(fmt="iso", utc=True),
]

CREDENTIAL_LOGGERS = ("botocore", "boto3", "s3transfer", "urllib3")


def configure_logging(level: str | None = None) -> None:
    """Every log line, ours and the SDK's, as one JSON object on stderr."""
    level = level or os.environ.get("QLOOP_LOG_LEVEL", "INFO")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=SHARED_PROCESSORS,
            processors=[
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
                    "activity failed", error=str(error), seconds=time.perf_counter() - started
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
    address = os.environ.get("QLOOP_PROMETHEUS_BIND_ADDRESS")
    if not address:
        return None
    return Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address)))
