"""`qloop keys new|public`: Ed25519 signing keys of approvers and budget admins
(schemas/signatures.py), and reading a private key file."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import TypeAdapter, ValidationError

from cli.output import EXIT_INVALID
from schemas.policy import ApproverName
from schemas.signatures import (
    SigningKeyError,
    load_private_key,
    new_private_key_pem,
    own_key_id,
    public_key_text,
)


def read_signing_key(path: str) -> Ed25519PrivateKey:
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise SigningKeyError(f"{path}: cannot read it: {error.strerror}") from None
    return load_private_key(data, path)


def approver_name(text: str) -> str:
    try:
        return TypeAdapter(ApproverName).validate_python(text)
    except ValidationError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a name: 1 to 100 letters, digits, '_', '.', '@' and '-', "
            "starting with a letter or a digit"
        ) from None


def policy_key_line(name: str, public_key: str) -> str:
    return f'  {name}: "{public_key}"'


async def cmd_keys_new(args: argparse.Namespace) -> int:
    path = Path(args.dir) / f"{args.name}.key"
    pem, public_key = new_private_key_pem()
    try:
        # Created readable by its owner only, and never over an existing key.
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        print(f"refused: {path} exists; qloop never overwrites a key", file=sys.stderr)
        return EXIT_INVALID
    except OSError as error:
        print(f"refused: cannot create {path}: {error.strerror}", file=sys.stderr)
        return EXIT_INVALID
    with os.fdopen(descriptor, "wb") as file:
        file.write(pem)
    print(f"wrote {path}: the private key of {args.name}, readable by you only; keep it secret")
    print(
        "the operator adds this line to the account's approval.public_keys (and sets "
        "`signed: true`) or to its budget_admins in the policy file:"
    )
    print(policy_key_line(args.name, public_key))
    return 0


async def cmd_keys_public(args: argparse.Namespace) -> int:
    try:
        key = read_signing_key(args.file)
    except SigningKeyError as error:
        print(f"refused: {error}", file=sys.stderr)
        return EXIT_INVALID
    public_key = public_key_text(key.public_key())
    print(policy_key_line(args.name or Path(args.file).stem, public_key))
    print(f"  # key id {own_key_id(key)}")
    return 0


def add_keys_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    keys = commands.add_parser("keys", help="signing keys of approvers and budget admins (Ed25519)")
    actions = keys.add_subparsers(dest="keys_command", required=True)
    new = actions.add_parser(
        "new", help="write NAME.key (0600) and print the public key line for the policy file"
    )
    new.add_argument("name", type=approver_name, help="approver or budget admin name")
    new.add_argument("--dir", default=".", help="folder for NAME.key (default: here)")
    new.set_defaults(handler=cmd_keys_new)
    public = actions.add_parser("public", help="print the policy line of a private key file")
    public.add_argument("file")
    public.add_argument("--name", type=approver_name, help="name for the line (default: file stem)")
    public.set_defaults(handler=cmd_keys_public)
