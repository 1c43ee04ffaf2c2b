"""`qloop cache ls|show|purge`: what the sweep cache of QLOOP_DATABASE_URL holds (grouped by
backend and calibration epoch), one value with its provenance, and forgetting values so that the
next sweep measures them again. They read the database directly: no Temporal server or worker
is involved.

`purge` forgets only with `--yes`, or after a "y" on a terminal; otherwise it says how many
values it would forget and exits 2 (like any missing argument), having changed nothing.

Exit codes: 0 done, 1 no value has that fingerprint, 2 invalid arguments or database URL (or
purge not confirmed).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict
from datetime import UTC, datetime

from activities.storage.point_cache_inventory import (
    CacheSelection,
    cache_entries,
    cache_groups,
    count_selected,
    forget,
)
from cli.output import EXIT_DONE, EXIT_INVALID, EXIT_NOT_ALLOWED, print_json, print_table
from cli.schedules import schedule_argument
from schemas.schedule import parse_duration

NO_EPOCH = "-"  # how a value without calibration epoch (an ideal simulator) is shown
NO_ORIGIN = "(unrecorded)"  # values stored before the cache kept backend and epoch


def add_cache_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    cache = commands.add_parser(
        "cache", help="inspect and forget the sweep cache (values by calibration epoch)"
    )
    actions = cache.add_subparsers(dest="cache_command", required=True)
    listing = actions.add_parser(
        "ls", help="values per backend and calibration epoch: count, sweeps, oldest, newest"
    )
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=cmd_cache_ls)
    show = actions.add_parser("show", help="one value and where it came from")
    show.add_argument("fingerprint", help="a fingerprint, or a prefix of one that is unique")
    show.add_argument("--json", action="store_true", help="one JSON document on stdout")
    show.set_defaults(handler=cmd_cache_show)
    purge = actions.add_parser(
        "purge", help="forget values (those matching every option given), or --all"
    )
    purge.add_argument("--backend", help="values of this backend, as `cache ls` names it")
    purge.add_argument("--epoch", help="values measured in this calibration epoch")
    purge.add_argument(
        "--older-than",
        type=schedule_argument(parse_duration),
        metavar="DURATION",
        help="values stored longer ago than this (90s, 30m, 1h, 2d, 1w, PT30M ...)",
    )
    purge.add_argument("--all", action="store_true", help="every value")
    purge.add_argument("--yes", action="store_true", help="forget without asking")
    purge.add_argument("--json", action="store_true", help="one JSON document on stdout")
    purge.set_defaults(handler=cmd_cache_purge)


async def cmd_cache_ls(args: argparse.Namespace) -> int:
    groups = cache_groups()
    if args.json:
        print_json([asdict(group) for group in groups])
        return EXIT_DONE
    if not groups:
        print("the sweep cache is empty")
        return EXIT_DONE
    # Experiment results kept for reuse: "values" counts results, "sweeps" experiments.
    print_table(
        ["backend", "calibration epoch", "values", "sweeps", "oldest", "newest", "kind"],
        [
            [
                group.backend or NO_ORIGIN,
                group.calibration_epoch or NO_EPOCH,
                f"{group.entries:,}",
                str(group.sweeps),
                group.oldest,
                group.newest,
                group.kind,
            ]
            for group in groups
        ],
    )
    return EXIT_DONE


async def cmd_cache_show(args: argparse.Namespace) -> int:
    found = cache_entries(args.fingerprint)
    if not found:
        print(f"no cached value has a fingerprint starting {args.fingerprint!r}", file=sys.stderr)
        return EXIT_NOT_ALLOWED
    if len(found) > 1:
        print(
            f"{args.fingerprint!r} starts several fingerprints ({found[0].fingerprint}, "
            f"{found[1].fingerprint}, ...): give more of it",
            file=sys.stderr,
        )
        return EXIT_INVALID
    (entry,) = found
    if args.json:
        print_json(asdict(entry))
        return EXIT_DONE
    print(f"fingerprint        {entry.fingerprint}")
    print(f"value              {entry.value!r} ± {entry.std_error!r} (raw {entry.raw!r})")
    print(f"parameters         {entry.parameters}")
    print(f"backend            {entry.backend or NO_ORIGIN}")
    print(f"calibration epoch  {entry.calibration_epoch or NO_EPOCH}")
    print(f"measured by        {entry.sweep_id} ({entry.label})")
    print(f"stored at          {entry.stored_at}")
    return EXIT_DONE


async def cmd_cache_purge(args: argparse.Namespace) -> int:
    stored_before = (
        None
        if args.older_than is None
        else (datetime.now(UTC) - args.older_than).isoformat(timespec="seconds")
    )
    selection = CacheSelection(
        backend=args.backend,
        calibration_epoch=args.epoch,
        stored_before=stored_before,
        everything=args.all,
    )
    if selection.is_empty():
        print(
            "cache purge: say what to forget: --backend, --epoch, --older-than (together they "
            "all must match) or --all",
            file=sys.stderr,
        )
        return EXIT_INVALID
    matching = count_selected(selection)
    if matching and not args.yes and not _confirmed(matching):
        print(
            f"{matching:,} cached values match; nothing forgotten (pass --yes to forget them)",
            file=sys.stderr,
        )
        return EXIT_INVALID
    forgotten = forget(selection) if matching else 0
    if args.json:
        print_json({"forgotten": forgotten})
    else:
        print(f"forgot {forgotten:,} cached values; sweeps and experiments measure them again")
    return EXIT_DONE


def _confirmed(matching: int) -> bool:
    """A "y" from the person at the terminal; never when stdin is not a terminal."""
    if not sys.stdin.isatty():
        return False
    # The question goes to stderr: with --json, stdout carries only the document.
    print(f"forget {matching:,} cached values? [y/N] ", end="", file=sys.stderr, flush=True)
    return sys.stdin.readline().strip().lower() in {"y", "yes"}
