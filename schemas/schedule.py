"""Sweeps on a calendar: the pure parts of `qloop schedule ...` (names, durations, overlap
policies, moments, the schedule's spec and memo).

A schedule named NAME has the schedule id `qloop-NAME`; each run it starts is the workflow
`NAME-sweep-<scheduled time>` (Temporal appends the time), carrying the search attributes
`QloopAccount`, `QloopBackend` and `QloopProvider` of the sweep, and Temporal's own
`TemporalScheduledById = "qloop-NAME"`. The sweep request is read and validated once, when the
schedule is created; the schedule keeps that request (encrypted like every other payload).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from temporalio.client import ScheduleIntervalSpec, ScheduleOverlapPolicy, ScheduleSpec

from schemas.variational import SweepRequest

SCHEDULE_ID_PREFIX = "qloop-"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,62}"
NAME_RULE = "1 to 63 letters, digits, '_', '.' or '-', starting with a letter or digit"
MEMO_KEY = "qloop_schedule"

OVERLAP_POLICIES: dict[str, ScheduleOverlapPolicy] = {
    "skip": ScheduleOverlapPolicy.SKIP,
    "buffer_one": ScheduleOverlapPolicy.BUFFER_ONE,
    "buffer_all": ScheduleOverlapPolicy.BUFFER_ALL,
    "cancel_other": ScheduleOverlapPolicy.CANCEL_OTHER,
    "terminate_other": ScheduleOverlapPolicy.TERMINATE_OTHER,
    "allow_all": ScheduleOverlapPolicy.ALLOW_ALL,
}
# The server refuses shorter intervals ("interval is too small").
SHORTEST_INTERVAL = timedelta(seconds=1)

_UNIT_SECONDS = {"w": 604_800, "d": 86_400, "h": 3_600, "m": 60, "s": 1}
_SHORT_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[wdhms])+")
_SHORT_PART = re.compile(r"(\d+(?:\.\d+)?)([wdhms])")
_ISO_DURATION = TypeAdapter(timedelta)
DURATION_RULE = "a duration such as 90s, 30m, 1h, 1h30m, 2d, 1w or ISO 8601 (PT30M, P1D)"


class ScheduleInputError(ValueError):
    """A schedule argument that cannot be accepted; the message names it and what is allowed."""


def check_name(name: str) -> str:
    if re.fullmatch(NAME_PATTERN, name) is None:
        raise ScheduleInputError(f"{name!r} is not a schedule name: use {NAME_RULE}")
    return name


def schedule_id(name: str) -> str:
    return SCHEDULE_ID_PREFIX + name


def sweep_workflow_id(name: str) -> str:
    """The id Temporal starts each run under, before it appends the scheduled time."""
    return f"{name}-sweep"


def parse_duration(text: str) -> timedelta:
    """`90s`, `30m`, `1h`, `1h30m`, `2d`, `1w`, or ISO 8601 (`PT30M`, `P1D`)."""
    cleaned = text.strip().replace(" ", "")
    if _SHORT_DURATION.fullmatch(cleaned):
        return timedelta(
            seconds=sum(
                float(amount) * _UNIT_SECONDS[unit] for amount, unit in _SHORT_PART.findall(cleaned)
            )
        )
    if cleaned[:1].upper() == "P":
        try:
            return _ISO_DURATION.validate_python(cleaned.upper())
        except ValidationError:
            pass
    raise ScheduleInputError(f"{text!r} is not {DURATION_RULE}")


def parse_interval(text: str) -> timedelta:
    every = parse_duration(text)
    if every < SHORTEST_INTERVAL:
        raise ScheduleInputError(f"{text!r}: the interval must be at least 1 second")
    return every


def parse_jitter(text: str) -> timedelta:
    jitter = parse_duration(text)
    if jitter <= timedelta(0):
        raise ScheduleInputError(f"{text!r}: jitter must be longer than zero (or leave it out)")
    return jitter


def overlap_policy(name: str) -> ScheduleOverlapPolicy:
    try:
        return OVERLAP_POLICIES[name]
    except KeyError:
        raise ScheduleInputError(
            f"{name!r} is not an overlap policy: use one of {', '.join(OVERLAP_POLICIES)}"
        ) from None


def overlap_name(policy: ScheduleOverlapPolicy) -> str:
    return next(name for name, known in OVERLAP_POLICIES.items() if known == policy)


def parse_moment(text: str) -> datetime:
    """ISO 8601 date or date and time; without an offset it is UTC."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ScheduleInputError(
            f"{text!r} is not a time: use ISO 8601 such as 2026-01-31, 2026-01-31T06:00 or "
            "2026-01-31T06:00+01:00 (UTC when no offset is given)"
        ) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def format_duration(duration: timedelta) -> str:
    """The shortest `1d2h30m`-style text for a duration (seconds kept to milliseconds)."""
    remaining = round(duration.total_seconds(), 3)
    parts: list[str] = []
    for unit in ("d", "h", "m"):
        whole, remaining = divmod(remaining, _UNIT_SECONDS[unit])
        if whole:
            parts.append(f"{int(whole)}{unit}")
    if remaining or not parts:
        parts.append(f"{remaining:g}s")
    return "".join(parts)


@dataclass(frozen=True)
class Timing:
    """When a schedule fires: exactly one of `cron` and `every`."""

    cron: str | None = None
    every: timedelta | None = None
    jitter: timedelta | None = None
    time_zone: str | None = None

    def __post_init__(self) -> None:
        if (self.cron is None) == (self.every is None):
            raise ScheduleInputError("give either --cron or --every")
        if self.cron is not None and not self.cron.strip():
            raise ScheduleInputError("--cron is empty: give an expression such as '0 3 * * *'")

    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(
            cron_expressions=[self.cron] if self.cron is not None else [],
            intervals=[ScheduleIntervalSpec(every=self.every)] if self.every is not None else [],
            jitter=self.jitter,
            time_zone_name=self.time_zone,
        )

    def summary(self) -> str:
        """The server stores a cron expression as calendar ranges, so the text shown later comes
        from this summary, kept in the schedule's memo."""
        if self.every is not None:
            when = f"every {format_duration(self.every)}"
        else:
            when = f"cron {self.cron}"
        if self.time_zone:
            when += f" ({self.time_zone})"
        if self.jitter:
            when += f", jitter {format_duration(self.jitter)}"
        return when


def schedule_memo(name: str, request: SweepRequest, source: str, timing: Timing) -> dict[str, Any]:
    """What `describe` and `list` show about the sweep without decrypting the action's input."""
    return {
        MEMO_KEY: {
            "name": name,
            "sweep": request.name,
            "sweep_file": source,
            "family": request.family.kind,
            "account": request.policy.account,
            "spec": timing.summary(),
        }
    }


def spec_summary(spec: ScheduleSpec, memo: Mapping[str, Any] | None = None) -> str:
    """The summary qloop stored at creation, else one rebuilt from the spec (for schedules made
    by other tools)."""
    stored = (memo or {}).get(MEMO_KEY, {})
    spec_text = stored.get("spec") if isinstance(stored, Mapping) else None
    if isinstance(spec_text, str):
        return spec_text
    parts: list[str] = [f"cron {cron}" for cron in spec.cron_expressions]
    parts.extend(f"every {format_duration(interval.every)}" for interval in spec.intervals)
    if spec.calendars:
        parts.append(f"{len(spec.calendars)} calendar spec(s)")
    return "; ".join(parts) or "no spec (trigger and backfill only)"
