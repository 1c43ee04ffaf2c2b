"""The qloop CLI: validate and start experiments, loops and sweeps, follow them, read their
results, steer them, and look after budgets, breakers, schedules, keys, artifacts and the
sweep cache.

`qloop` and `python starter.py` are the same program; each command group lives in cli/.
Exit codes (cli/output.py): 0 done, 1 refused by policy or not found, 2 invalid input,
3 the workflow failed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

from temporalio.service import RPCError, RPCStatusCode

from cli.adopt import add_adopt_command
from cli.artifacts import add_artifact_commands
from cli.budget import add_budget_commands
from cli.cache import add_cache_commands
from cli.health import add_health_commands
from cli.inspect import add_inspect_commands
from cli.keys import add_keys_commands
from cli.output import EXIT_INVALID, EXIT_NOT_ALLOWED
from cli.plan import add_plan_command
from cli.schedules import add_schedule_commands
from cli.start import add_start_commands
from cli.steer import add_steer_commands
from schemas.payload_encryption import CodecKeyError
from schemas.settings import SettingsError


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(
        prog="qloop", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = root.add_subparsers(dest="command", required=True)
    add_start_commands(commands)
    add_plan_command(commands)
    add_adopt_command(commands)
    add_inspect_commands(commands)
    add_steer_commands(commands)
    add_health_commands(commands)
    add_budget_commands(commands)
    add_keys_commands(commands)
    add_schedule_commands(commands)
    add_artifact_commands(commands)
    add_cache_commands(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = asyncio.run(args.handler(args))
    except RuntimeError as error:
        if "connect" in str(error).lower():
            print(
                f"cannot reach Temporal: {error}\n  start the local stack with `make dev`",
                file=sys.stderr,
            )
            return EXIT_NOT_ALLOWED
        raise
    except RPCError as error:
        if error.status != RPCStatusCode.NOT_FOUND:
            raise
        print(f"not found: {error.message}", file=sys.stderr)
        return EXIT_NOT_ALLOWED
    except CodecKeyError as error:
        print(f"payload encryption is misconfigured: {error}", file=sys.stderr)
        return EXIT_INVALID
    except SettingsError as error:
        print(error, file=sys.stderr)
        return EXIT_INVALID
    return code


def entry_point() -> None:
    """The console script. It leaves without interpreter finalization: the Temporal SDK's
    native runtime threads may call into Python while it finalizes and abort the process
    ("PyGILState_Release ... finalizing", one run in twenty) after the command did its work."""
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry_point()
