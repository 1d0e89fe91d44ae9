"""A real PostgreSQL server on 127.0.0.1 for tests: initdb in a temp folder, a free port, trust auth on loopback.

`postgres_server` is one server for the whole run; `postgres_dsn` gives each test a database of its own on it;
`start_postgres` starts a private one (a test that stops and starts its server takes that). The server runs as
the `postgres` system user when the tests run as root (it refuses root). Without the binaries the tests skip,
saying how to install them; CI installs them (`.ci/run`).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.control_plane import free_port
from tests.support.coordinator import stop_process

MISSING = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin (apt install postgresql)"
NO_USER = "running as root and there is no `postgres` system user to run the server as (apt install postgresql)"
START_TIMEOUT_S = 30.0


def server_bin_dir() -> Path | None:
    """The newest installed server's bin folder (Debian's layout), or None."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


@dataclass
class PostgresServer:
    bin_dir: Path
    folder: Path
    port: int
    user: str | None  # the system user the server runs as; None: this process's own
    proc: subprocess.Popen[bytes] | None = field(default=None)

    @property
    def data(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "postgres.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *cmd: str) -> None:
        subprocess.run(cmd, check=True, capture_output=True, user=self.user, group=self.user, extra_groups=[])

    def init(self) -> None:
        self._run(str(self.bin_dir / "initdb"), "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8")

    def start(self) -> None:
        """Start (again) on the same port and data; return once it accepts connections."""
        cmd = [str(self.bin_dir / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        cmd += ["-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.folder}"]
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, user=self.user, group=self.user, extra_groups=[]
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"postgres did not accept connections on port {self.port}:\n{tail}")
            time.sleep(0.05)

    def ready(self) -> bool:
        isready = [str(self.bin_dir / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port), "-t", "1"]
        return subprocess.run(isready, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (open connections are ended): what tests call "the database is down"."""
        proc, self.proc = self.proc, None
        if proc is not None:
            stop_process(proc)

    def create_database(self) -> str:
        """A new empty database; its DSN."""
        import psycopg

        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)


@contextlib.contextmanager
def start_postgres() -> Iterator[PostgresServer]:
    """A fresh server in a temp folder of its own, stopped and removed at the end."""
    bin_dir = server_bin_dir()
    if bin_dir is None:
        pytest.skip(reason=MISSING)
    user: str | None = None
    folder = Path(tempfile.mkdtemp(prefix="codegen-mcp-postgres-"))
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            pytest.skip(reason=NO_USER)
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        user = "postgres"
    server = PostgresServer(bin_dir=bin_dir, folder=folder, port=free_port(), user=user)
    try:
        server.init()
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One PostgreSQL for the whole run (tests take a database of their own on it: `postgres_dsn`)."""
    with start_postgres() as server:
        yield server


@pytest.fixture
def postgres_dsn(postgres_server: PostgresServer) -> str:
    """The DSN of a new, empty database on the run's PostgreSQL."""
    return postgres_server.create_database()
