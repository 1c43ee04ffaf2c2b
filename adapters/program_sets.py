"""How a job's circuits are split into provider tasks where the device runs program sets.

One rule for planning, pricing and submission alike, so the estimate counts the tasks that are
sent: as few tasks as the device's limits allow, their sizes as even as possible (so no last
task falls below a minimum the device sets), one circuit per task where the device offers no
program sets or a program set would hold a single circuit anyway.
"""

from __future__ import annotations

import math

from schemas.execution import ProgramSetLimits


def task_sizes(circuits: int, shots: int, limits: ProgramSetLimits | None) -> list[int]:
    """How many of the job's circuits (each run `shots` times) each of its tasks holds, in
    order; they add up to `circuits`."""
    if limits is None or circuits < 2:
        return [1] * circuits
    per_task = min(limits.max_executables, limits.max_total_shots // shots)
    if per_task < 2:
        return [1] * circuits
    tasks = math.ceil(circuits / per_task)
    smaller, larger_count = divmod(circuits, tasks)
    if smaller * shots < (limits.min_total_shots or 1):
        return [1] * circuits
    return [smaller + 1] * larger_count + [smaller] * (tasks - larger_count)
