"""A real PostgreSQL server for tests: Debian's `postgresql` package (`make test` installs it
where it is missing), a throwaway cluster made with initdb in a temp folder and started with
pg_ctl on a free port. PostgreSQL refuses to run as root, so as root the cluster belongs to the
unprivileged `postgres` user (or `nobody`)."""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.server_helpers import free_ports

DATABASE = "qloop"


def postgres_binary(name: str) -> str:
    """`name` from PATH, else from Debian's /usr/lib/postgresql/<version>/bin (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)
    if not candidates:
        raise RuntimeError(
            f"PostgreSQL's {name} was not found: install Debian's postgresql package "
            "(`make test` does where apt-get is available)"
        )
    return candidates[0]


def _as_owner(owner: str | None, command: list[str]) -> list[str]:
    return ["runuser", "-u", owner, "--", *command] if owner else command


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """A `postgresql://` URL of a fresh database on a cluster that lives as long as the context."""
    owner: str | None = None
    if os.geteuid() == 0:
        owner = "postgres" if _user_exists("postgres") else "nobody"
    folder = Path(tempfile.mkdtemp(prefix="qloop-pg-"))
    data, sockets = folder / "data", folder / "sockets"
    sockets.mkdir()
    if owner is not None:
        user = pwd.getpwnam(owner)
        for path in (folder, sockets):
            os.chown(path, user.pw_uid, user.pw_gid)
    (port,) = free_ports(1)
    log = folder / "server.log"

    def run(command: list[str]) -> None:
        _run(owner, folder, command)

    run([postgres_binary("initdb"), "-D", str(data), "-A", "trust", "-U", "qloop", "-E", "UTF8"])
    run(
        [
            postgres_binary("pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {port} -h 127.0.0.1 -k {sockets} -c fsync=off -c max_connections=200",
            "start",
        ]
    )
    try:
        createdb = postgres_binary("createdb")
        run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "qloop", DATABASE])
        yield f"postgresql://qloop@127.0.0.1:{port}/{DATABASE}"
    finally:
        run([postgres_binary("pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
        shutil.rmtree(folder, ignore_errors=True)


def new_database(server_url: str) -> str:
    """The URL of a database just made on the server of `server_url`."""
    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}".encode())
    return f"{server_url.rsplit('/', 1)[0]}/{name}"


def _run(owner: str | None, folder: Path, command: list[str]) -> None:
    done = subprocess.run(
        _as_owner(owner, command), cwd=folder, capture_output=True, text=True, timeout=120
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(command)} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
        )


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
