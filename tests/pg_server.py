"""A real PostgreSQL server on 127.0.0.1 for the shared-study tests: Debian's PostgreSQL 15.

``PostgresServer`` runs ``initdb`` into a scratch data directory (password authentication
over TCP, so a wrong password is refused as on any real server), starts it with
``pg_ctl`` on a free port, creates a database, and stops it (or can stop and start it again,
for the "database went away mid-study" test). The server binaries refuse to run as root, so
under root they run as the ``postgres`` user that Debian's package creates.
"""
from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

def server_bin() -> Path:
    """POSTGRES_BIN, else the newest Debian server (/usr/lib/postgresql/VERSION/bin)."""
    if os.environ.get("POSTGRES_BIN"):
        return Path(os.environ["POSTGRES_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0)
    return found[-1].parent if found else Path("/usr/lib/postgresql/15/bin")


BIN = server_bin()
HOST = "127.0.0.1"
USER, PASSWORD, DATABASE = "vae", "study-secret", "study"


def available() -> str | None:
    """Why a server cannot be run here, or None."""
    if not (BIN / "initdb").exists():
        return f"no PostgreSQL server binaries in {BIN} (apt-get install postgresql; make test does)"
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no 'postgres' user to run the server as"
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class PostgresServer:
    def __init__(self):
        # Not under pytest's private temporary directory: the postgres user must reach it.
        self.base = Path(tempfile.mkdtemp(prefix="vae-postgres-"))
        self.base.chmod(0o755)
        self.data, self.log = self.base / "data", self.base / "server.log"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_user:
            shutil.chown(self.base, "postgres")
        password_file = self.base / "password"
        password_file.write_text(PASSWORD + "\n")
        if self.as_user:
            shutil.chown(password_file, "postgres")
        self._run(BIN / "initdb", "-D", self.data, "-U", USER, f"--pwfile={password_file}", "--auth-host=scram-sha-256",
                  "--auth-local=trust", "-E", "UTF8", "--no-sync")
        password_file.unlink()
        self.start()
        import psycopg

        with psycopg.connect(host=HOST, port=self.port, user=USER, password=PASSWORD, dbname="postgres",
                             autocommit=True) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")

    def _run(self, *cmd) -> None:
        result = subprocess.run([*self.as_user, *map(str, cmd)], cwd=self.base, capture_output=True, text=True,
                                timeout=120)
        if result.returncode != 0:
            log = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{' '.join(map(str, cmd))} failed:\n{result.stdout}\n{result.stderr}\n{log}")

    def start(self) -> None:
        self._run(BIN / "pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o",
                  f"-p {self.port} -k {self.base} -c listen_addresses={HOST} -c fsync=off", "start")

    def stop(self) -> None:
        self._run(BIN / "pg_ctl", "-D", self.data, "-w", "-m", "fast", "stop")

    def url(self, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{USER}:{password}@{HOST}:{self.port}/{DATABASE}"

    def close(self) -> None:
        try:
            self._run(BIN / "pg_ctl", "-D", self.data, "-w", "-m", "immediate", "stop")
        except RuntimeError:
            pass  # already stopped
        shutil.rmtree(self.base, ignore_errors=True)
