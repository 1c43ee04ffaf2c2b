"""qloop's configuration: every `QLOOP_*` variable in one validated object.

`current_settings()` reads the environment once, and again only when a `QLOOP_*` variable
changed (tests; the compute pool's children get their parent's environment); an invalid value is a
`SettingsError` naming the variable, its value and what is allowed. `python worker.py
--check-config` prints the effective configuration without secrets.

`QLOOP_DEPLOYMENT=production` makes a worker fail closed: it refuses to start without a policy
file, without a payload encryption key, or with ungoverned spending allowed, and says which.
Temporal's own connection settings (TEMPORAL_*) and AWS's (AWS_*) keep their standard variables
and are read by their SDKs.
"""

from __future__ import annotations

import os
import typing
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "QLOOP_"
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]
ARTIFACT_URL_FORMS = "file:///absolute/folder or s3://bucket/prefix"
DATABASE_URL_FORMS = "sqlite:///absolute/path or postgresql://user:password@host:port/database"


class SettingsError(ValueError):
    """A `QLOOP_*` variable with a value qloop cannot use."""


class QloopSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=PREFIX, extra="ignore", frozen=True, validate_default=True
    )

    deployment: Literal["development", "production"] = "development"
    home: Path = Field(default=Path(".qloop"), description="local state: simulator jobs, defaults")
    task_queue: str = Field(default="qloop", min_length=1)
    compute_task_queue: str | None = None
    worker_role: Literal["all", "orchestration", "compute"] = "all"

    artifact_url: str | None = None
    artifact_endpoint_url: str | None = None
    database_url: SecretStr | None = None

    policy_file: Path | None = None
    allow_ungoverned_spend: bool = False
    codec_key: SecretStr | None = None
    codec_key_id: str | None = None
    codec_key_file: Path | None = None

    braket_endpoint_url: str | None = None
    s3_endpoint_url: str | None = None
    braket_s3_bucket: str | None = None
    braket_s3_prefix: str = "qloop"

    sticky_timeout_seconds: float = Field(default=1.0, gt=0, allow_inf_nan=False)
    max_cached_workflows: int = Field(default=250, ge=1)
    max_concurrent_activities: int = Field(default=32, ge=1)
    connect_patience_seconds: float = Field(default=120.0, ge=0, allow_inf_nan=False)
    reconcile_minutes: float = Field(default=10.0, gt=0, allow_inf_nan=False)

    compute_processes: int | None = Field(default=None, ge=1)
    compute_max_processes: int | None = Field(default=None, ge=1)
    task_memory_mb: float = Field(default=2048.0, gt=0, allow_inf_nan=False)
    task_time_limit_seconds: float = Field(default=1800.0, gt=0, allow_inf_nan=False)
    tasks_per_process: int = Field(default=50, ge=1)

    breaker_failures: int = Field(default=3, ge=1)
    breaker_open_seconds: float = Field(default=300.0, gt=0, allow_inf_nan=False)
    breaker_probe_lease_seconds: float = Field(default=1800.0, gt=0, allow_inf_nan=False)

    max_depth: int = Field(default=3000, ge=1)
    log_level: LogLevel = "INFO"
    prometheus_bind_address: str | None = None
    ui_url: str = "http://localhost:8233"
    decision_wait_seconds: float = Field(default=10.0, gt=0, allow_inf_nan=False)

    @field_validator(
        "compute_task_queue",
        "artifact_url",
        "artifact_endpoint_url",
        "database_url",
        "policy_file",
        "codec_key",
        "codec_key_id",
        "codec_key_file",
        "braket_endpoint_url",
        "s3_endpoint_url",
        "braket_s3_bucket",
        "prometheus_bind_address",
        "compute_processes",
        "compute_max_processes",
        mode="before",
    )
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("allow_ungoverned_spend", mode="before")
    @classmethod
    def _zero_or_one(cls, value: object) -> object:
        if isinstance(value, str):
            if value.strip() not in ("", "0", "1"):
                raise ValueError(
                    "set it to 1 to allow paid work without a policy file, or to 0 (or leave it "
                    "unset) to refuse it"
                )
            return value.strip() == "1"
        return value

    @field_validator("braket_s3_prefix", mode="before")
    @classmethod
    def _default_prefix(cls, value: object) -> object:
        return "qloop" if isinstance(value, str) and not value.strip() else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.strip().upper() if isinstance(value, str) else value

    @field_validator("artifact_url")
    @classmethod
    def _artifact_store(cls, value: str | None) -> str | None:
        if value is not None:
            store_location(value)
        return value

    @field_validator("artifact_endpoint_url")
    @classmethod
    def _http_endpoint(cls, value: str | None) -> str | None:
        if value is not None and urlparse(value).scheme not in ("http", "https"):
            raise ValueError("use an http:// or https:// URL of an S3-compatible server")
        return value

    @field_validator("database_url")
    @classmethod
    def _database(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            database_location(value.get_secret_value())
        return value

    def production_refusals(self, *, codec_key_found: bool) -> list[str]:
        """Why a production worker must not start (empty: it may). `codec_key_found`: a payload
        encryption key is configured or in its default file (schemas/payload_encryption.py)."""
        if self.deployment != "production":
            return []
        refusals = []
        if self.policy_file is None:
            refusals.append(
                "QLOOP_POLICY_FILE is not set: paid work would run without approvals or caps"
            )
        if self.allow_ungoverned_spend:
            refusals.append("QLOOP_ALLOW_UNGOVERNED_SPEND=1 lets paid work run without rules")
        if not codec_key_found:
            refusals.append(
                "no payload encryption key (QLOOP_CODEC_KEY and QLOOP_CODEC_KEY_ID, or "
                "QLOOP_CODEC_KEY_FILE): circuits and results would reach the server in clear"
            )
        return refusals


@dataclass(frozen=True)
class StoreLocation:
    """Where `QLOOP_ARTIFACT_URL` points: a local folder, or a bucket and a key prefix."""

    folder: Path | None = None
    bucket: str = ""
    prefix: str = ""


def store_location(url: str) -> StoreLocation:
    parsed = urlparse(url)
    if parsed.scheme == "file" and parsed.netloc in ("", "localhost") and parsed.path:
        return StoreLocation(folder=Path(unquote(parsed.path)).resolve())
    if parsed.scheme == "s3" and parsed.netloc:
        return StoreLocation(bucket=parsed.netloc, prefix=unquote(parsed.path))
    raise ValueError(f"{url!r} is not an artifact store: use {ARTIFACT_URL_FORMS}")


@dataclass(frozen=True)
class DatabaseLocation:
    """Where `QLOOP_DATABASE_URL` points: a SQLite file, or a PostgreSQL server (`url`)."""

    dialect: Literal["sqlite", "postgresql"]
    url: str
    sqlite_path: Path | None = None


def database_location(url: str) -> DatabaseLocation:
    parsed = urlparse(url)
    if parsed.scheme == "sqlite" and parsed.path:
        return DatabaseLocation("sqlite", url, Path(unquote(parsed.path)))
    if parsed.scheme in ("postgresql", "postgres") and parsed.netloc:
        return DatabaseLocation("postgresql", url)
    raise ValueError(f"{redacted(url)!r} is not a database: use {DATABASE_URL_FORMS}")


def redacted(url: str) -> str:
    """The URL without its password, to show in errors and `--check-config`."""
    parsed = urlparse(url)
    if parsed.password is None:
        return url
    netloc = parsed.netloc.replace(f":{parsed.password}@", ":***@")
    return parsed._replace(netloc=netloc).geturl()


def current_settings() -> QloopSettings:
    return _settings_for(_qloop_environment())


def qloop_home() -> Path:
    """`QLOOP_HOME`, or `.qloop` in the working directory; created on first use."""
    home = current_settings().home.expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    return home


def describe_settings(configured: QloopSettings, *, codec_key_found: bool) -> str:
    """The effective configuration, one `QLOOP_*` variable a line, secrets hidden; then what a
    production worker would refuse and which `QLOOP_*` variables are no setting."""
    set_here = {name for name, _ in _qloop_environment()}
    lines = []
    for field, value in configured.model_dump().items():
        name = f"{PREFIX}{field}".upper()
        if isinstance(value, SecretStr):
            shown = "*** (set)"
        elif value is None:
            shown = "(unset)"
        else:
            shown = str(value)
        origin = "" if name in set_here else "  [default]"
        lines.append(f"{name}={shown}{origin}")
    refusals = configured.production_refusals(codec_key_found=codec_key_found)
    lines.append(
        "production: refuses to start: " + "; ".join(refusals)
        if refusals
        else f"deployment {configured.deployment}: may start"
    )
    if unknown := unknown_variables():
        lines.append("not qloop settings (ignored): " + ", ".join(unknown))
    return "\n".join(lines)


def unknown_variables() -> list[str]:
    """`QLOOP_*` variables that are no setting (a typo, or one of temporal-dev/stack.sh's)."""
    known = {f"{PREFIX}{name}".upper() for name in QloopSettings.model_fields}
    return sorted(name for name, _ in _qloop_environment() if name.upper() not in known)


def _qloop_environment() -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, v) for k, v in os.environ.items() if k.upper().startswith(PREFIX)))


@lru_cache(maxsize=8)
def _settings_for(environment: tuple[tuple[str, str], ...]) -> QloopSettings:
    try:
        return QloopSettings()
    except ValidationError as error:
        problems = []
        for issue in error.errors():
            name = f"{PREFIX}{'_'.join(str(part) for part in issue['loc'])}".upper()
            value = dict(environment).get(name, "")
            shown = "***" if name in secret_variables() else repr(value)
            message = issue["msg"].removeprefix("Value error, ")
            problems.append(f"{name}={shown}: {message}")
        raise SettingsError("invalid configuration: " + "; ".join(problems)) from None


def secret_variables() -> set[str]:
    """The variables whose values are never shown: the `SecretStr` settings."""
    return {
        f"{PREFIX}{name}".upper()
        for name, field in QloopSettings.model_fields.items()
        if SecretStr in (field.annotation, *typing.get_args(field.annotation))
    }
