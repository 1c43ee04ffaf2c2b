"""The engine's floor: a workflow that runs N no-op activities one after another."""

from __future__ import annotations

from datetime import timedelta

from temporalio import activity, workflow


@activity.defn(name="noop")
async def noop(payload: str) -> str:
    return payload


@workflow.defn(name="FloorWorkflow")
class FloorWorkflow:
    @workflow.run
    async def run(self, activities: int) -> int:
        for index in range(activities):
            await workflow.execute_activity(
                noop, str(index), start_to_close_timeout=timedelta(seconds=30)
            )
        return activities
