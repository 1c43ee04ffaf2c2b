"""`qloop artifacts ls ID` and `qloop artifacts get ID [FILE] [-o PATH]`: what an experiment,
loop or sweep stored, read from the artifact store of QLOOP_ARTIFACT_URL, so they work on any
machine that has the URL and the credentials (no worker's disk involved).

Exit codes: 0 done, 1 nothing stored under that id or name, 2 the store URL is invalid.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from activities.storage import artifact_store
from schemas.artifacts import StoredArtifact

NOT_FOUND = 1
INVALID = 2


def add_artifact_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    artifacts = commands.add_parser(
        "artifacts", help="list and download what an experiment, loop or sweep stored"
    )
    actions = artifacts.add_subparsers(dest="artifacts_command", required=True)
    listing = actions.add_parser("ls", help="the artifacts of one workflow id")
    listing.add_argument("id")
    listing.add_argument("--json", action="store_true", help="one JSON document on stdout")
    listing.set_defaults(handler=cmd_artifacts_ls)
    get = actions.add_parser("get", help="download one artifact, or all of them")
    get.add_argument("id")
    get.add_argument("file", nargs="?", help="an artifact's name (default: every artifact)")
    get.add_argument(
        "-o",
        "--output",
        help="where to write: a file for FILE ('-' for stdout), else a folder (default ./ID)",
    )
    get.set_defaults(handler=cmd_artifacts_get)


async def cmd_artifacts_ls(args: argparse.Namespace) -> int:
    found = _listed(args.id)
    if found is None:
        return INVALID
    if args.json:
        print(json.dumps([artifact.model_dump() for artifact in found], indent=2))
        return 0 if found else NOT_FOUND
    if not found:
        return NOT_FOUND
    width = max(len(artifact.name) for artifact in found)
    for artifact in found:
        print(f"{artifact.name:<{width}}  {artifact.size_bytes:>10,}  {artifact.url}")
    return 0


async def cmd_artifacts_get(args: argparse.Namespace) -> int:
    found = _listed(args.id)
    if found is None:
        return INVALID
    if args.file is not None:
        chosen = [artifact for artifact in found if artifact.name == args.file]
        if not chosen:
            names = ", ".join(artifact.name for artifact in found) or "none"
            print(f"{args.id} has no artifact {args.file!r}; it has: {names}", file=sys.stderr)
            return NOT_FOUND
        data = artifact_store.read_bytes(chosen[0].url)
        if args.output == "-":
            sys.stdout.buffer.write(data)
            return 0
        target = Path(args.output or args.file)
        target.write_bytes(data)
        print(f"{chosen[0].url} -> {target} ({len(data):,} bytes)", file=sys.stderr)
        return 0
    if not found:
        return NOT_FOUND
    folder = Path(args.output or artifact_store.folder_name(args.id))
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in found:
        (folder / artifact.name).write_bytes(artifact_store.read_bytes(artifact.url))
    print(f"{len(found)} artifacts of {args.id} -> {folder}/", file=sys.stderr)
    return 0


def _listed(owner_id: str) -> list[StoredArtifact] | None:
    """The stored artifacts (a message on stderr when there are none), or None when the
    store's URL is invalid."""
    try:
        found = artifact_store.list_artifacts(owner_id)
        root = artifact_store.current_store().root_url
    except ValueError as error:
        print(error, file=sys.stderr)
        return None
    if not found:
        print(f"no artifacts for {owner_id!r} in {root}", file=sys.stderr)
    return found
