"""schemas/activity_contracts.py: one declaration per activity, and implementations held to it."""

from __future__ import annotations

import inspect

import pytest

from schemas import activity_contracts
from schemas.activity_contracts import implements, name_of
from schemas.pipeline import JobInput, PolicyDecision, PolicyInput
from worker import all_activities


def declared() -> dict[str, object]:
    return {
        name_of(contract): contract
        for _, contract in inspect.getmembers(activity_contracts, inspect.iscoroutinefunction)
        if contract.__module__ == activity_contracts.__name__ and not _.startswith("_")
    }


def registered_names(activities: list) -> list[str]:
    return [name_of_registered(activity) for activity in activities]


def name_of_registered(activity: object) -> str:
    definition = activity.__temporal_activity_definition  # type: ignore[attr-defined]
    return str(definition.name)


def test_every_activity_a_worker_runs_is_declared_once_and_every_declaration_is_run() -> None:
    names = registered_names(all_activities())
    assert sorted(names) == sorted(set(names))
    assert set(names) == set(declared())


def test_an_implementation_that_takes_another_input_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match=r"evaluate_policy.*JobInput"):

        @implements(activity_contracts.evaluate_policy)
        async def wrong(input: JobInput) -> PolicyDecision:  # type: ignore[arg-type]
            raise AssertionError("never called")


def test_an_implementation_that_returns_another_result_is_refused_at_import() -> None:
    with pytest.raises(TypeError, match="evaluate_policy"):

        @implements(activity_contracts.evaluate_policy)
        async def wrong(input: PolicyInput) -> str:  # type: ignore[arg-type]
            raise AssertionError("never called")


def test_a_declaration_is_never_run_as_an_activity() -> None:
    with pytest.raises(NotImplementedError, match="declaration"):
        activity_contracts.evaluate_policy(PolicyInput.model_construct()).send(None)
