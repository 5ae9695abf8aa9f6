"""A throwaway PostgreSQL server on loopback, for trying the PostgreSQL store, tests and
benchmarks without touching a system database.

:func:`temporary_server` runs ``initdb`` and ``pg_ctl`` from the PATH or from Debian's
``/usr/lib/postgresql/*/bin`` in a fresh directory, listens on 127.0.0.1 and a unix socket in
that directory only, and removes everything when it ends (an immediate shutdown: nothing in
it is kept).  PostgreSQL refuses to run as root,
so as root the server runs as the ``postgres`` system user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from ledger.errors import StoreError


def server_binaries() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                      key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if versions:
        return Path(versions[-1]).parent
    raise StoreError("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                     "/usr/lib/postgresql/*/bin; install the postgresql package")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def temporary_server() -> Iterator[str]:
    """Start a server; yield its ``postgresql://`` URL (user ``postgres``, no password)."""
    bindir = server_binaries()
    root = Path(tempfile.mkdtemp(prefix="gridloop-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        prefix = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()

    def run(*args: str) -> None:
        done = subprocess.run([*prefix, *args], capture_output=True, text=True, cwd=root,
                              check=False)
        if done.returncode:
            raise StoreError(f"{Path(args[0]).name} failed ({done.returncode}): "
                             f"{(done.stderr or done.stdout).strip().splitlines()[-1:]}")

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
            "-E", "UTF8", "--locale=C", "--no-sync")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(root / "server.log"), "-w",
            "-t", "60", "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start")
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            run(str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def schema_url(url: str, schema: str) -> str:
    """``url`` with ``schema`` first on the search path, so one database holds many ledgers."""
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options={quote(f'-csearch_path={schema}')}"


def new_schema_url(url: str) -> str:
    """Create an empty schema with a random name on the server at ``url``; return the URL of a
    new ledger in it (:func:`schema_url`)."""
    import psycopg

    schema = f"ledger_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return schema_url(url, schema)
