"""`qloop schedule ...`: sweeps on a calendar (Temporal Schedules; schemas/schedule.py)."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionExecution,
    ScheduleActionExecutionStartWorkflow,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleBackfill,
    ScheduleDescription,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleState,
)
from temporalio.service import RPCError, RPCStatusCode

from cli.connection import connect, task_queue, workflow_link
from cli.output import EXIT_INVALID, EXIT_NOT_ALLOWED, moment
from cli.start import (
    admit_sweep_or_exit,
    announce_policy,
    start_search_attributes,
    sweep_input,
    sweep_summary,
)
from schemas.schedule import (
    DURATION_RULE,
    MEMO_KEY,
    NAME_RULE,
    OVERLAP_POLICIES,
    SCHEDULE_ID_PREFIX,
    ScheduleInputError,
    Timing,
    check_name,
    overlap_name,
    overlap_policy,
    parse_interval,
    parse_jitter,
    parse_moment,
    schedule_id,
    schedule_memo,
    spec_summary,
    sweep_workflow_id,
)
from schemas.settings import current_settings
from schemas.variational import (
    SweepRequest,
    SweepStage,
)
from workflows.paid_execution import describe_backend

T = TypeVar("T")


# How long `qloop schedule trigger` waits to name the run it started.
TRIGGER_WAIT_SECONDS = 5.0


def schedule_argument(parse: Callable[[str], T]) -> Callable[[str], T]:
    """An argparse `type=` that shows our message (argparse hides a plain ValueError's)."""

    def convert(text: str) -> T:
        try:
            return parse(text)
        except ScheduleInputError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    convert.__name__ = parse.__name__
    return convert


def time_zone_name(text: str) -> str:
    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time zone: use an IANA name such as UTC, Europe/Berlin or "
            "America/New_York"
        ) from None
    return text


def schedule_link(client: Client, name: str) -> str:
    return (
        f"{current_settings().ui_url}/namespaces/{quote(client.namespace)}/schedules/"
        f"{quote(schedule_id(name), safe='')}"
    )


def sweep_schedule(
    name: str,
    request: SweepRequest,
    timing: Timing,
    overlap: ScheduleOverlapPolicy,
    note: str | None,
) -> Schedule:
    """Starts `SweepWorkflow(sweep_input(request))` on `timing`; each run carries the same
    search attributes as one started by `qloop sweep`."""
    backend = request.evaluation.backend
    return Schedule(
        action=ScheduleActionStartWorkflow(
            "SweepWorkflow",
            sweep_input(request),
            id=sweep_workflow_id(name),
            task_queue=task_queue(),
            typed_search_attributes=start_search_attributes(
                SweepStage.EXPANDING.value, backend, request.policy.account
            ),
            static_summary=f"{sweep_summary(request)}, scheduled by {schedule_id(name)}",
            static_details="\n\n".join(
                [
                    f"**Schedule:** {schedule_id(name)}, {timing.summary()}",
                    f"**Family:** {request.family.kind}",
                    f"**Backend:** {describe_backend(backend)}, {request.evaluation.shots} shots",
                    f"**Account:** {request.policy.account}",
                ]
            ),
        ),
        spec=timing.spec(),
        policy=SchedulePolicy(overlap=overlap),
        state=ScheduleState(note=note),
    )


def no_schedule(name: str) -> int:
    print(
        f"no schedule named {name!r} (schedule id {schedule_id(name)}): "
        "`qloop schedule list` shows the existing ones",
        file=sys.stderr,
    )
    return EXIT_NOT_ALLOWED


def on_existing_schedule(
    handler: Callable[[argparse.Namespace], Awaitable[int]],
) -> Callable[[argparse.Namespace], Awaitable[int]]:
    """Commands on a schedule that may not exist say so by name instead of a server error."""

    async def run(args: argparse.Namespace) -> int:
        try:
            return await handler(args)
        except RPCError as error:
            if error.status != RPCStatusCode.NOT_FOUND:
                raise
            return no_schedule(args.name)

    return run


async def cmd_schedule_create(args: argparse.Namespace) -> int:
    try:
        timing = Timing(
            cron=args.cron, every=args.every, jitter=args.jitter, time_zone=args.time_zone
        )
    except ScheduleInputError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_INVALID
    request = admit_sweep_or_exit(args.sweep)
    announce_policy()
    client = await connect()
    try:
        handle = await client.create_schedule(
            schedule_id(args.name),
            sweep_schedule(args.name, request, timing, args.overlap, args.note),
            memo=schedule_memo(args.name, request, str(Path(args.sweep).resolve()), timing),
        )
    except ScheduleAlreadyRunningError:
        print(
            f"schedule {args.name!r} already exists ({schedule_id(args.name)}): "
            f"`qloop schedule describe {args.name}` shows it, "
            f"`qloop schedule delete {args.name}` removes it",
            file=sys.stderr,
        )
        return EXIT_NOT_ALLOWED
    except RPCError as error:
        if error.status != RPCStatusCode.INVALID_ARGUMENT:
            raise
        print(f"refused: {error.message}", file=sys.stderr)
        return EXIT_INVALID
    description = await handle.describe()
    print(
        f"created schedule {handle.id}: sweep {request.name} {timing.summary()}, "
        f"overlap {overlap_name(args.overlap)}\n"
        f"  next run        {moment(next(iter(description.info.next_action_times), None))}\n"
        f"  Web UI          {schedule_link(client, args.name)}"
    )
    return 0


async def cmd_schedule_list(args: argparse.Namespace) -> int:
    client = await connect()
    rows: list[tuple[str, str, str, str, str]] = []
    async for entry in await client.list_schedules():
        if not entry.id.startswith(SCHEDULE_ID_PREFIX) or entry.schedule is None:
            continue
        memo = await entry.memo()
        sweep = memo.get(MEMO_KEY, {}).get("sweep", "-")
        next_runs = entry.info.next_action_times if entry.info else []
        rows.append(
            (
                entry.id,
                spec_summary(entry.schedule.spec, memo),
                "yes" if entry.schedule.state.paused else "no",
                moment(next(iter(next_runs), None)),
                sweep,
            )
        )
    if not rows:
        print("no schedules: `qloop schedule create NAME --sweep FILE --every 1d` makes one")
        return 0
    id_width = max(len("SCHEDULE ID"), *(len(row[0]) for row in rows))
    spec_width = max(len("SPEC"), *(len(row[1]) for row in rows))
    print(f"{'SCHEDULE ID':{id_width}} {'SPEC':{spec_width}} {'PAUSED':6} {'NEXT RUN':25} SWEEP")
    for schedule, spec, paused, next_run, sweep in sorted(rows):
        print(f"{schedule:{id_width}} {spec:{spec_width}} {paused:6} {next_run:25} {sweep}")
    return 0


async def run_status(client: Client, action: ScheduleActionExecution) -> str:
    """A started run's status; '-' once the server no longer keeps it (retention)."""
    if not isinstance(action, ScheduleActionExecutionStartWorkflow):
        return "-"
    handle = client.get_workflow_handle(action.workflow_id, run_id=action.first_execution_run_id)
    try:
        description = await handle.describe()
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        return "-"
    return description.status.name if description.status else "?"


def format_schedule(
    description: ScheduleDescription, memo: Mapping[str, Any], statuses: Sequence[str], link: str
) -> str:
    schedule, info = description.schedule, description.info
    stored = memo.get(MEMO_KEY, {})
    action = schedule.action
    assert isinstance(action, ScheduleActionStartWorkflow)
    state = "paused" if schedule.state.paused else "active"
    if schedule.state.note:
        state += f" ({schedule.state.note})"
    lines = [
        f"schedule {description.id}",
        f"  sweep           {stored.get('sweep', '-')} ({stored.get('family', '-')}), "
        f"account {stored.get('account', '-')}",
        f"  sweep file      {stored.get('sweep_file', '-')} (as read at creation)",
        f"  starts          {action.workflow} on task queue {action.task_queue} "
        f"as {action.id}-<scheduled time>",
        f"  spec            {spec_summary(schedule.spec, memo)}",
        f"  overlap         {overlap_name(schedule.policy.overlap)}",
        f"  state           {state}",
        f"  actions         {info.num_actions} taken, {info.num_actions_skipped_overlap} skipped "
        f"(overlap), {info.num_actions_missed_catchup_window} missed (catch-up window)",
        f"  created         {moment(info.created_at)}",
        f"  updated         {moment(info.last_updated_at)}",
        "  next runs       " + (", ".join(moment(at) for at in info.next_action_times[:5]) or "-"),
        "  running         "
        + (
            ", ".join(
                run.workflow_id
                for run in info.running_actions
                if isinstance(run, ScheduleActionExecutionStartWorkflow)
            )
            or "-"
        ),
        "  recent runs     (newest last)",
    ]
    for result, status in zip(info.recent_actions, statuses, strict=True):
        started = result.action
        workflow_id = (
            started.workflow_id
            if isinstance(started, ScheduleActionExecutionStartWorkflow)
            else "-"
        )
        lines.append(
            f"    scheduled {moment(result.scheduled_at)}  started {moment(result.started_at)}  "
            f"{status:10} {workflow_id}"
        )
    if not info.recent_actions:
        lines.append("    none yet")
    lines.append(f"  Web UI          {link}")
    return "\n".join(lines)


@on_existing_schedule
async def cmd_schedule_describe(args: argparse.Namespace) -> int:
    client = await connect()
    description = await client.get_schedule_handle(schedule_id(args.name)).describe()
    statuses = await asyncio.gather(
        *(run_status(client, result.action) for result in description.info.recent_actions)
    )
    memo = await description.memo()
    print(format_schedule(description, memo, statuses, schedule_link(client, args.name)))
    return 0


@on_existing_schedule
async def cmd_schedule_pause(args: argparse.Namespace) -> int:
    client = await connect()
    note = args.note or f"paused with qloop by {os.environ.get('USER', 'unknown')}"
    await client.get_schedule_handle(schedule_id(args.name)).pause(note=note)
    print(f"{schedule_id(args.name)}: paused ({note})")
    return 0


@on_existing_schedule
async def cmd_schedule_unpause(args: argparse.Namespace) -> int:
    client = await connect()
    note = args.note or f"unpaused with qloop by {os.environ.get('USER', 'unknown')}"
    await client.get_schedule_handle(schedule_id(args.name)).unpause(note=note)
    print(f"{schedule_id(args.name)}: active ({note})")
    return 0


@on_existing_schedule
async def cmd_schedule_trigger(args: argparse.Namespace) -> int:
    """The server starts the run asynchronously; the command waits briefly to name it."""
    client = await connect()
    handle = client.get_schedule_handle(schedule_id(args.name))
    before = (await handle.describe()).info.num_actions
    await handle.trigger(overlap=args.overlap)
    deadline = time.monotonic() + TRIGGER_WAIT_SECONDS
    while time.monotonic() < deadline:
        info = (await handle.describe()).info
        if info.num_actions > before and info.recent_actions:
            started = info.recent_actions[-1].action
            if isinstance(started, ScheduleActionExecutionStartWorkflow):
                print(
                    f"{handle.id}: triggered {started.workflow_id}\n"
                    f"  Web UI          {workflow_link(client, started.workflow_id)}"
                )
                return 0
        await asyncio.sleep(0.2)
    print(
        f"{handle.id}: trigger sent; no run started within {TRIGGER_WAIT_SECONDS:.0f} s "
        "(with overlap skip or buffer_* a run still going holds it back; "
        f"`qloop schedule describe {args.name}` shows what happened)"
    )
    return 0


@on_existing_schedule
async def cmd_schedule_backfill(args: argparse.Namespace) -> int:
    if args.end < args.start:
        print(
            f"refused: --end {moment(args.end)} is before --start {moment(args.start)}",
            file=sys.stderr,
        )
        return EXIT_INVALID
    client = await connect()
    handle = client.get_schedule_handle(schedule_id(args.name))
    if (await handle.describe()).schedule.state.paused:
        print(
            f"{handle.id} is paused, and the server drops a paused schedule's backfills: "
            f"`qloop schedule unpause {args.name}` first",
            file=sys.stderr,
        )
        return EXIT_NOT_ALLOWED
    await handle.backfill(
        ScheduleBackfill(start_at=args.start, end_at=args.end, overlap=args.overlap)
    )
    overlap = "the schedule's" if args.overlap is None else overlap_name(args.overlap)
    print(
        f"{handle.id}: backfill of every run due from {moment(args.start)} to {moment(args.end)} "
        f"(both included) requested, overlap {overlap}; "
        f"`qloop schedule describe {args.name}` lists the runs"
    )
    return 0


@on_existing_schedule
async def cmd_schedule_delete(args: argparse.Namespace) -> int:
    client = await connect()
    await client.get_schedule_handle(schedule_id(args.name)).delete()
    print(f"deleted schedule {schedule_id(args.name)}; runs it already started keep running")
    return 0


def add_name_argument(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "name", type=schedule_argument(check_name), help=f"schedule name: {NAME_RULE}"
    )


def add_schedule_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    schedule = commands.add_parser(
        "schedule", help="run a sweep on a calendar (Temporal Schedules, id qloop-NAME)"
    )
    actions = schedule.add_subparsers(dest="schedule_command", required=True)

    create = actions.add_parser(
        "create", help="validate a sweep file and start it on a cron spec or an interval"
    )
    add_name_argument(create)
    create.add_argument("--sweep", required=True, metavar="FILE", help="sweep request (YAML/JSON)")
    when = create.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--cron", metavar="EXPR", help="cron expression, e.g. '0 3 * * *' (UTC unless --time-zone)"
    )
    when.add_argument(
        "--every", type=schedule_argument(parse_interval), metavar="DURATION", help=DURATION_RULE
    )
    create.add_argument(
        "--overlap",
        default=OVERLAP_POLICIES["skip"],
        help="when a run is due while the last one still runs (default: skip)",
        type=schedule_argument(overlap_policy),
        metavar="|".join(OVERLAP_POLICIES),
    )
    create.add_argument(
        "--jitter",
        type=schedule_argument(parse_jitter),
        metavar="DURATION",
        help="start each run up to this much later, at random",
    )
    create.add_argument(
        "--time-zone", type=time_zone_name, metavar="ZONE", help="IANA time zone of --cron"
    )
    create.add_argument("--note", help="a note shown with the schedule's state")
    create.set_defaults(handler=cmd_schedule_create)

    listing = actions.add_parser("list", help="qloop's schedules: spec, paused, next run")
    listing.set_defaults(handler=cmd_schedule_list)

    describe = actions.add_parser(
        "describe", help="spec, state, next runs, recent runs and the Web UI link"
    )
    add_name_argument(describe)
    describe.set_defaults(handler=cmd_schedule_describe)

    for verb, handler, help_text in (
        ("pause", cmd_schedule_pause, "stop starting runs (runs already going keep going)"),
        ("unpause", cmd_schedule_unpause, "start runs again from the next due time"),
    ):
        toggle = actions.add_parser(verb, help=help_text)
        add_name_argument(toggle)
        toggle.add_argument("--note", help="why, shown with the schedule's state")
        toggle.set_defaults(handler=handler)

    trigger = actions.add_parser("trigger", help="start one run now")
    add_name_argument(trigger)
    trigger.add_argument(
        "--overlap",
        help="for this run only (default: the schedule's)",
        type=schedule_argument(overlap_policy),
        metavar="|".join(OVERLAP_POLICIES),
    )
    trigger.set_defaults(handler=cmd_schedule_trigger)

    backfill = actions.add_parser(
        "backfill", help="start the runs that were due in a past time range"
    )
    add_name_argument(backfill)
    moment_help = "ISO 8601, e.g. 2026-01-31T06:00 (UTC without an offset)"
    backfill.add_argument(
        "--start", required=True, type=schedule_argument(parse_moment), help=moment_help
    )
    backfill.add_argument(
        "--end", required=True, type=schedule_argument(parse_moment), help=moment_help
    )
    backfill.add_argument(
        "--overlap",
        help="default: the schedule's; the runs are due at once, so skip starts only the first: "
        "use allow_all or buffer_all to get every one",
        type=schedule_argument(overlap_policy),
        metavar="|".join(OVERLAP_POLICIES),
    )
    backfill.set_defaults(handler=cmd_schedule_backfill)

    delete = actions.add_parser(
        "delete", help="delete a schedule (runs it already started keep running)"
    )
    add_name_argument(delete)
    delete.set_defaults(handler=cmd_schedule_delete)
