"""A throwaway PostgreSQL server for tests and the sandbox: initdb + pg_ctl in a temporary folder, on a
free loopback port, its unix socket in that folder, gone when stopped. Run as root (CI), initdb and the
server refuse to start, so they run as `nobody`, which then owns the folder."""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

MISSING = (
    "PostgreSQL's server programs (initdb, pg_ctl) were not found: install the Debian package "
    "`postgresql` (apt-get install postgresql), or put their folder on PATH"
)


class PgServerError(RuntimeError):
    """The throwaway server could not be found or started (the message says why)."""


def bindir() -> Path:
    """The folder holding initdb and pg_ctl: `pg_config --bindir`, else the newest /usr/lib/postgresql/*/bin,
    else PATH."""
    candidates: list[Path] = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        if out.returncode == 0 and out.stdout.strip():
            candidates.append(Path(out.stdout.strip()))
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True)
    candidates += [Path(p) for p in versions]
    if shutil.which("initdb"):
        candidates.append(Path(str(shutil.which("initdb"))).parent)
    for c in candidates:
        if (c / "initdb").exists() and (c / "pg_ctl").exists():
            return c
    raise PgServerError(MISSING)


def _version(path: str) -> int:
    part = Path(path).parent.name
    return int(part) if part.isdigit() else 0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgServer:
    """One server: `start()` returns it running; `url` (database `postgres`, user `postgres`, trust auth on
    loopback only); `stop()` ends it and removes its folder (also at exit)."""

    def __init__(self) -> None:
        self.bin = bindir()
        self.dir = Path(tempfile.mkdtemp(prefix="deploybot-pg-"))
        self.data = self.dir / "data"
        self.port = 0
        self.started_in = 0.0
        self._as: dict[str, Any] = {}
        self._running = False
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as nobody, who owns the folder
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "HOME": str(self.dir), "LC_ALL": "C"}
        return subprocess.run(
            [str(self.bin / args[0]), *args[1:]],
            capture_output=True, text=True, check=False, env=env, cwd=self.dir, **self._as,
        )  # fmt: skip

    def start(self, attempts: int = 5) -> PgServer:
        began = time.monotonic()
        out = self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                        "--locale=C", "-N")  # fmt: skip
        if out.returncode != 0:
            raise PgServerError(f"initdb failed: {out.stderr.strip() or out.stdout.strip()}")
        # A throwaway cluster: no durability needed, so no fsync; a free port found, and tried again when
        # another process took it meanwhile (postgres cannot be told to bind port 0).
        for _ in range(attempts):
            self.port = _free_port()
            options = (
                f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
            )
            log = self.dir / "server.log"
            out = self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-o", options, "-w", "-t", "60",
                            "start")  # fmt: skip
            if out.returncode == 0:
                self._running = True
                self.started_in = time.monotonic() - began
                atexit.register(self.stop)
                return self
            text = log.read_text(errors="replace") if log.exists() else out.stderr
            if "could not bind" not in text and "in use" not in text:
                raise PgServerError(f"PostgreSQL did not start: {text.strip()[-2000:]}")
            log.unlink(missing_ok=True)
        raise PgServerError(f"PostgreSQL found no free port in {attempts} attempts")

    def create_database(self, name: str) -> str:
        """A new empty database; its URL."""
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url.rsplit("/", 1)[0] + f"/{name}"

    def stop(self) -> None:
        if self._running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self._running = False
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
