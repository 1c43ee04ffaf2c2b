"""The pure parts of `qloop schedule`: names, durations, overlap policies, moments, specs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from temporalio.client import (
    ScheduleActionStartWorkflow,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    ScheduleSpec,
)

from cli.schedules import sweep_schedule
from schemas.schedule import (
    MEMO_KEY,
    OVERLAP_POLICIES,
    ScheduleInputError,
    Timing,
    check_name,
    format_duration,
    overlap_name,
    overlap_policy,
    parse_duration,
    parse_interval,
    parse_jitter,
    parse_moment,
    schedule_id,
    spec_summary,
    sweep_workflow_id,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", timedelta(minutes=30)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1w", timedelta(weeks=1)),
        ("90s", timedelta(seconds=90)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("PT30M", timedelta(minutes=30)),
        ("P1D", timedelta(days=1)),
        ("P1DT2H", timedelta(days=1, hours=2)),
        ("pt45s", timedelta(seconds=45)),
    ],
)
def test_durations_in_short_and_iso_forms(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "30", "30x", "h", "1h-", "every hour", "P", "PTXM", "-1h"])
def test_a_bad_duration_names_the_allowed_forms(text: str) -> None:
    with pytest.raises(ScheduleInputError, match=r"30m, 1h.*ISO 8601") as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


def test_an_interval_below_one_second_is_refused() -> None:
    with pytest.raises(ScheduleInputError, match="at least 1 second"):
        parse_interval("0s")
    with pytest.raises(ScheduleInputError, match="at least 1 second"):
        parse_interval("PT0.5S")
    assert parse_interval("1s") == timedelta(seconds=1)


def test_jitter_must_be_positive() -> None:
    with pytest.raises(ScheduleInputError, match="longer than zero"):
        parse_jitter("0m")
    assert parse_jitter("5m") == timedelta(minutes=5)


@pytest.mark.parametrize(
    ("duration", "text"),
    [
        (timedelta(hours=1), "1h"),
        (timedelta(days=2, hours=3, minutes=4, seconds=5), "2d3h4m5s"),
        (timedelta(seconds=1.5), "1.5s"),
        (timedelta(0), "0s"),
        (timedelta(weeks=1), "7d"),
    ],
)
def test_durations_are_shown_in_the_short_form(duration: timedelta, text: str) -> None:
    assert format_duration(duration) == text
    assert parse_duration(text) == duration


def test_every_overlap_policy_name_maps_both_ways() -> None:
    assert set(OVERLAP_POLICIES.values()) == set(ScheduleOverlapPolicy)
    for name, policy in OVERLAP_POLICIES.items():
        assert overlap_policy(name) is policy
        assert overlap_name(policy) == name
    assert overlap_policy("allow_all") is ScheduleOverlapPolicy.ALLOW_ALL


def test_an_unknown_overlap_policy_lists_the_allowed_ones() -> None:
    with pytest.raises(ScheduleInputError, match=r"skip, buffer_one, .*allow_all"):
        overlap_policy("sometimes")


@pytest.mark.parametrize("name", ["nightly", "h2-scan.v2", "A_1", "x" * 63])
def test_good_names(name: str) -> None:
    assert check_name(name) == name
    assert schedule_id(name) == f"qloop-{name}"
    assert sweep_workflow_id(name) == f"{name}-sweep"


@pytest.mark.parametrize("name", ["", "-lead", "has space", "slash/y", "x" * 64, "ümlaut"])
def test_bad_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(ScheduleInputError, match="1 to 63 letters, digits"):
        check_name(name)


def test_moments_without_offset_are_utc() -> None:
    assert parse_moment("2026-01-31T06:00") == datetime(2026, 1, 31, 6, tzinfo=UTC)
    assert parse_moment("2026-01-31") == datetime(2026, 1, 31, tzinfo=UTC)
    assert parse_moment("2026-01-31T06:00+01:00") == datetime(2026, 1, 31, 5, tzinfo=UTC)
    assert parse_moment("2026-01-31T06:00Z").tzinfo is not None
    assert parse_moment("2026-01-31T06:00+01:00").utcoffset() == timedelta(hours=1)
    assert parse_moment("2026-01-31T06:00+01:00").tzinfo == timezone(timedelta(hours=1))


def test_a_bad_moment_shows_examples() -> None:
    with pytest.raises(ScheduleInputError, match="ISO 8601 such as 2026-01-31"):
        parse_moment("yesterday")


def test_timing_builds_a_cron_or_an_interval_spec() -> None:
    cron = Timing(cron="0 3 * * *", time_zone="Europe/Berlin", jitter=timedelta(minutes=5))
    assert cron.spec() == ScheduleSpec(
        cron_expressions=["0 3 * * *"],
        time_zone_name="Europe/Berlin",
        jitter=timedelta(minutes=5),
    )
    assert cron.summary() == "cron 0 3 * * * (Europe/Berlin), jitter 5m"
    every = Timing(every=timedelta(hours=1))
    assert every.spec() == ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))])
    assert every.summary() == "every 1h"


@pytest.mark.parametrize(
    "arguments",
    [{}, {"cron": "0 3 * * *", "every": timedelta(hours=1)}, {"cron": "  "}],
)
def test_timing_needs_exactly_one_of_cron_and_every(arguments: dict[str, object]) -> None:
    with pytest.raises(ScheduleInputError, match="--cron"):
        Timing(**arguments)  # type: ignore[arg-type]


def test_spec_summary_prefers_the_stored_text_and_falls_back_to_the_spec() -> None:
    # The server keeps a cron expression only as calendar ranges; the stored text reads better.
    assert spec_summary(ScheduleSpec(), {MEMO_KEY: {"spec": "cron 0 3 * * *"}}) == "cron 0 3 * * *"
    spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(minutes=30))])
    assert spec_summary(spec, {}) == "every 30m"
    assert spec_summary(ScheduleSpec(), None) == "no spec (trigger and backfill only)"


def test_the_schedule_starts_a_sweep_with_the_sweeps_search_attributes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from schemas.variational import SweepInput, SweepRequest
    from workflows import search_attributes as attrs

    monkeypatch.setenv("QLOOP_TASK_QUEUE", "sweeps")
    request = SweepRequest.model_validate(
        {
            "name": "h2-scan",
            "family": {"kind": "qaoa_maxcut", "graph": {"nodes": 2, "edges": [{"u": 0, "v": 1}]}},
            "points": {"points": [[0.1, 0.2]]},
            "evaluation": {"backend": {"provider": "aer", "device": "noisy",
                                       "noise_profile": "ibm_guadalupe"}},
            "policy": {"account": "lab"},
        }
    )  # fmt: skip
    timing = Timing(every=timedelta(hours=6))
    schedule = sweep_schedule(
        "nightly", request, timing, ScheduleOverlapPolicy.BUFFER_ONE, "first version"
    )

    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    assert (action.workflow, action.id, action.task_queue) == (
        "SweepWorkflow",
        "nightly-sweep",
        "sweeps",
    )
    (argument,) = action.args
    assert isinstance(argument, SweepInput) and argument.request == request
    found = action.typed_search_attributes
    assert found.get(attrs.ACCOUNT) == "lab"
    assert found.get(attrs.BACKEND) == "aer/noisy:ibm_guadalupe"
    assert found.get(attrs.PROVIDER) == "aer"
    assert "qloop-nightly" in str(action.static_summary)
    assert schedule.spec == timing.spec()
    assert schedule.policy.overlap is ScheduleOverlapPolicy.BUFFER_ONE
    assert schedule.state.note == "first version" and not schedule.state.paused
