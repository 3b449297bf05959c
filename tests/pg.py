"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` in a temporary directory.

The cluster listens on 127.0.0.1 only, on a free port, with its unix socket inside its own
directory and trust authentication for the ``postgres`` superuser. It favours speed over
durability (``fsync=off``): it is deleted when the tests end.

PostgreSQL refuses to run as root, so under root the server binaries run as the unprivileged
user ``nobody`` (through ``runuser``, else ``su``) and the directory belongs to that user.
"""

from __future__ import annotations

import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType

import psycopg
from psycopg import sql

INSTALL_HINT = "run scripts/ensure-postgres.sh (installs the Debian 'postgresql' package)"
UNPRIVILEGED_USER = "nobody"
SUPERUSER = "postgres"
_START_ATTEMPTS = 3  # another process may take the free port between the probe and the bind


class PostgresNotFound(RuntimeError):
    """No PostgreSQL server binaries on this machine."""


def find_bin_dir() -> Path:
    """The directory holding ``initdb`` and ``pg_ctl``: from PATH, else the newest
    ``/usr/lib/postgresql/*/bin``. Raises ``PostgresNotFound`` naming the fix."""
    on_path = shutil.which("initdb")
    if on_path is not None:
        return Path(on_path).resolve().parent
    candidates = [Path(p) for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if candidates:
        return max(candidates, key=_major_version).parent
    raise PostgresNotFound("no PostgreSQL server binaries: initdb is neither on PATH nor "
                           f"under /usr/lib/postgresql/*/bin; {INSTALL_HINT}")


class PostgresCluster:
    """A PostgreSQL cluster that exists between ``__enter__`` and ``__exit__``.

    ``__exit__`` always stops the server (``pg_ctl stop -m immediate``) and deletes its
    directory. Not thread-safe; one per test session is plenty (databases are cheap).
    """

    def __init__(self, bin_dir: Path | None = None) -> None:
        self.bin_dir = bin_dir or find_bin_dir()
        self.root = Path()
        self.port = 0

    def __enter__(self) -> PostgresCluster:
        self.root = Path(tempfile.mkdtemp(prefix="servetune-pg-"))
        try:
            if os.geteuid() == 0:
                account = pwd.getpwnam(UNPRIVILEGED_USER)
                os.chown(self.root, account.pw_uid, account.pw_gid)
            self._run(["initdb", "-D", str(self.data_dir), "-U", SUPERUSER, "-A", "trust",
                       "-E", "UTF8", "--locale=C", "--no-sync"])
            self._start()
        except BaseException:
            self._remove()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        try:
            if (self.data_dir / "postmaster.pid").exists():
                self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "immediate",
                           "-w"], check=False)
        finally:
            self._remove()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = "postgres", connect_timeout_s: int = 5) -> str:
        """SQLAlchemy URL of ``database`` on this cluster (psycopg 3 driver)."""
        return (f"postgresql+psycopg://{SUPERUSER}@127.0.0.1:{self.port}/{database}"
                f"?connect_timeout={connect_timeout_s}")

    def create_database(self, name: str) -> str:
        """Create an empty database ``name`` and return its URL."""
        with psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                             dbname="postgres", autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (an outage: clients' connections break); ``start`` brings it back
        on the same port."""
        self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w"])

    def start(self) -> None:
        self._start(keep_port=True)

    def _start(self, keep_port: bool = False) -> None:
        failure = ""
        for _ in range(1 if keep_port else _START_ATTEMPTS):
            if not keep_port:
                self.port = free_port()
            server_options = " ".join([
                f"-p {self.port}", f"-k {shlex.quote(str(self.root))}",
                "-c listen_addresses=127.0.0.1",
                # A throwaway cluster: durability buys nothing and costs seconds.
                "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            ])
            result = self._run(["pg_ctl", "start", "-D", str(self.data_dir), "-w", "-t", "30",
                                "-l", str(self.log_path), "-o", server_options], check=False)
            if result.returncode == 0:
                return
            failure = f"{result.stdout}\n{self._log_tail()}"
            if "could not bind" not in failure and "already in use" not in failure:
                break
        raise RuntimeError(f"pg_ctl could not start PostgreSQL in {self.root}:\n{failure}")

    def _run(self, argv: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / argv[0]), *argv[1:]]
        # cwd: the server user may not be able to read the caller's working directory.
        result = subprocess.run(_as_cluster_user(command), cwd=self.root, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        if check and result.returncode != 0:
            raise RuntimeError(f"{shlex.join(command)} exited {result.returncode}:\n"
                               f"{result.stdout}")
        return result

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-lines:])
        except OSError:
            return "(no server log)"

    def _remove(self) -> None:
        if self.root != Path():
            shutil.rmtree(self.root, ignore_errors=True)


def _as_cluster_user(command: list[str]) -> list[str]:
    """Wrap ``command`` so it runs as an unprivileged user when we are root."""
    if os.geteuid() != 0:
        return command
    if shutil.which("runuser"):
        return ["runuser", "-u", UNPRIVILEGED_USER, "--", *command]
    if shutil.which("su"):
        return ["su", "-s", "/bin/sh", UNPRIVILEGED_USER, "-c", shlex.join(command)]
    raise RuntimeError("running as root and neither runuser nor su is available to start "
                       f"PostgreSQL as {UNPRIVILEGED_USER!r}; run the tests as a normal user")


def _major_version(initdb: Path) -> int:
    # /usr/lib/postgresql/<major>/bin/initdb
    version = initdb.parts[-3]
    return int(version) if version.isdigit() else 0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
