"""One-off ECS tasks for the sandbox. moto runs none (RunTask fails for FARGATE, and nothing would run
anyway: PLATFORM-NOTES), so this emulator owns RunTask, DescribeTasks and ListTasks-by-startedBy: a WSGI
middleware in front of moto's server answers them as ECS does (JSON), and each clock tick moves its
tasks PENDING -> RUNNING -> STOPPED. What a task does comes from its image and command, the way the demo
application's image would behave:

- `... migrate up` applies the migrations the image knows (image `api:vN`: config/sandbox-app/migrations
  0001..000N) that the environment's database has not applied; `... migrate down K` reverts the newest K.
  The database is a real SQLite file per environment (`appdb(env)`).
- a command with `integration` runs the demo's integration tests (they pass unless told to fail).
- anything else exits 0.

Injected per (service, version): `migration` "fails" (up exits 1, nothing applied), "slow" (up takes
SLOW_TICKS ticks), "down_fails" (down exits 1); `integration_tests` "fail". Every task's lines go to
CloudWatch Logs (moto's, for real) under its task definition's awslogs group and stream, which is where the
bot reads them back."""

from __future__ import annotations

import atexit
import io
import json
import re
import shutil
import sqlite3
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moto.ecs.models import ecs_backends

from bot.sandbox.emulator import ACCOUNT_ID, REGION, parse_image

MIGRATIONS = Path(__file__).resolve().parents[2] / "config" / "sandbox-app" / "migrations"
SLOW_TICKS = 40  # a slow migration's running ticks (the sandbox ticks every 5 s of its clock)
_TARGET = "AmazonEC2ContainerServiceV20141113."
_MIGRATION = re.compile(r"^(\d{4})_([a-z0-9_]+)\.up\.sql$")

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WsgiApp = Callable[[Environ, StartResponse], Iterable[bytes]]


def known_migrations() -> list[tuple[int, str]]:
    """(number, name) of the demo application's migrations, in order."""
    found = [
        (int(m[1]), m[2]) for p in sorted(MIGRATIONS.glob("*.up.sql")) if (m := _MIGRATION.match(p.name))
    ]
    return sorted(found)


def image_level(tag: str) -> int:
    """How many migrations image tag `tag` knows: its first number ('v3' -> 3, 'v2.3.1' -> 2), capped."""
    m = re.search(r"\d+", tag)
    return min(int(m.group()) if m else 0, len(known_migrations()))


class AppDatabase:
    """The demo application's database in one environment: a SQLite file with a schema_migrations table."""

    def __init__(self, path: Path):
        self.path = path
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10, isolation_level=None)

    def applied(self) -> list[int]:
        with self._connect() as db:
            return [r[0] for r in db.execute("SELECT version FROM schema_migrations ORDER BY version")]

    def version(self) -> int:
        applied = self.applied()
        return applied[-1] if applied else 0

    def tables(self) -> list[str]:
        with self._connect() as db:
            rows = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' "
                "AND name != 'schema_migrations' ORDER BY name"
            )
            return [r[0] for r in rows]

    def columns(self, table: str) -> list[str]:
        with self._connect() as db:
            return [r[1] for r in db.execute(f"PRAGMA table_info({json.dumps(table)})")]

    def _run(self, number: int, name: str, direction: str) -> None:
        sql = (MIGRATIONS / f"{number:04d}_{name}.{direction}.sql").read_text()
        db = self._connect()
        try:
            db.execute("BEGIN")
            for statement in (s for s in sql.split(";") if s.strip()):  # executescript would COMMIT
                db.execute(statement)
            if direction == "up":
                db.execute("INSERT INTO schema_migrations (version, name) VALUES (?, ?)", (number, name))
            else:
                db.execute("DELETE FROM schema_migrations WHERE version = ?", (number,))
            db.execute("COMMIT")
        except Exception:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def up(self, level: int) -> list[str]:
        lines, applied = [], set(self.applied())
        for number, name in known_migrations():
            if number <= level and number not in applied:
                self._run(number, name, "up")
                lines.append(f"applied {number:04d}_{name}")
        return lines or [f"schema is up to date at {self.version():04d}"]

    def down(self, steps: int) -> list[str]:
        names = dict(known_migrations())
        lines = []
        for number in list(reversed(self.applied()))[:steps]:
            self._run(number, names[number], "down")
            lines.append(f"reverted {number:04d}_{names[number]}")
        return lines or ["nothing to revert"]


def appdb_view(db: AppDatabase) -> dict[str, Any]:
    return {"version": db.version(), "tables": {t: db.columns(t) for t in db.tables()}}


@dataclass
class TaskBehaviour:
    migration: str | None = None  # fails | slow | down_fails
    integration_tests: str | None = None  # fail


@dataclass
class EmuTask:
    arn: str
    cluster: str
    cluster_arn: str
    task_definition: str
    started_by: str
    service: str
    tag: str
    container: str
    command: list[str]
    environment: dict[str, str]
    created_at: float
    log: tuple[str, str] | None
    created_wall: float = field(
        default_factory=time.time
    )  # to compare with moto's wall-clock times  # (group, stream) from the task definition's awslogs options
    status: str = "PENDING"
    started_at: float | None = None
    stopped_at: float | None = None
    exit_code: int | None = None
    ticks_left: int = 1
    lines: list[str] = field(default_factory=list)

    def to_ecs(self) -> dict[str, Any]:
        container: dict[str, Any] = {
            "name": self.container,
            "lastStatus": self.status,
            "image": f"{self.service}:{self.tag}",
        }
        task: dict[str, Any] = {
            "taskArn": self.arn,
            "clusterArn": self.cluster_arn,
            "taskDefinitionArn": self.task_definition,
            "lastStatus": self.status,
            "desiredStatus": "STOPPED" if self.status == "STOPPED" else "RUNNING",
            "startedBy": self.started_by,
            "launchType": "FARGATE",
            "createdAt": self.created_at,
            "containers": [container],
        }
        if self.started_at is not None:
            task["startedAt"] = self.started_at
        if self.status == "STOPPED":
            container["exitCode"] = self.exit_code
            task["stoppedAt"] = self.stopped_at
            task["stoppedReason"] = "Essential container in task exited"
            task["stopCode"] = "EssentialContainerExited"
        return task


class TaskEmulator:
    """`now`: the sandbox clock; `workdir`: where the environments' databases live; `behaviour`: what a
    (service, version) is told to do; `write_logs(group, stream, lines)` puts lines into CloudWatch Logs."""

    def __init__(
        self,
        now: Callable[[], float],
        behaviour: Callable[[str, str], TaskBehaviour],
        workdir: Path | None = None,
    ):
        self.now, self.behaviour, self.workdir = now, behaviour, workdir
        self.tasks: dict[str, EmuTask] = {}
        self.lock = threading.Lock()
        self._dbs: dict[str, AppDatabase] = {}

    def clear(self) -> None:
        """Forget every task and delete the environments' databases (provisioning makes them again)."""
        with self.lock:
            self.tasks.clear()
            for db in self._dbs.values():
                db.path.unlink(missing_ok=True)
            self._dbs.clear()

    def appdb(self, env: str) -> AppDatabase:
        if env not in self._dbs:
            if self.workdir is None:  # a world made without one (tests of one adapter): a folder of its own
                self.workdir = Path(tempfile.mkdtemp(prefix="deploybot-appdb-"))
                atexit.register(shutil.rmtree, self.workdir, True)
            self._dbs[env] = AppDatabase(self.workdir / f"appdb-{env}.sqlite")
        return self._dbs[env]

    # ------------------------------------------------------------------------------------- the API

    def wrap(self, app: WsgiApp) -> WsgiApp:
        def middleware(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
            target = environ.get("HTTP_X_AMZ_TARGET", "")
            if not target.startswith(_TARGET):
                return app(environ, start_response)
            body = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            environ["wsgi.input"] = io.BytesIO(body)
            answer = self.answer(target.removeprefix(_TARGET), json.loads(body or b"{}"))
            if answer is None:
                return app(environ, start_response)
            status, payload = answer
            data = json.dumps(payload).encode()
            start_response(
                "200 OK" if status == 200 else f"{status} Bad Request",
                [("Content-Type", "application/x-amz-json-1.1"), ("Content-Length", str(len(data)))],
            )
            return [data]

        return middleware

    def answer(self, operation: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
        """ECS's answer to one of the operations this emulator owns; None: moto answers."""
        with self.lock:
            if operation == "RunTask":
                return self._run_task(body)
            if operation == "DescribeTasks":
                ours = [self.tasks[a] for a in body.get("tasks", []) if a in self.tasks]
                if not ours:
                    return None
                missing = [
                    {"arn": a, "reason": "MISSING"} for a in body.get("tasks", []) if a not in self.tasks
                ]
                return 200, {"tasks": [t.to_ecs() for t in ours], "failures": missing}
            if operation == "ListTasks" and body.get("startedBy"):
                cluster = str(body.get("cluster", "default")).rsplit("/", 1)[-1]
                wanted = body.get("desiredStatus", "RUNNING")
                arns = [
                    t.arn
                    for t in self.tasks.values()
                    if t.cluster == cluster
                    and t.started_by == body["startedBy"]
                    and (t.status == "STOPPED") == (wanted == "STOPPED")
                ]
                return 200, {"taskArns": arns}
        return None

    def _run_task(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        cluster = str(body.get("cluster", "default")).rsplit("/", 1)[-1]
        backend = ecs_backends[ACCOUNT_ID][REGION]
        if cluster not in backend.clusters:
            return 400, _error("ClusterNotFoundException", "Cluster not found.")
        try:
            td = backend.describe_task_definition(body.get("taskDefinition", ""))
        except Exception:
            return 400, _error("ClientException", "Unable to describe task definition.")
        overrides = {c.get("name"): c for c in (body.get("overrides") or {}).get("containerOverrides", [])}
        containers: list[dict[str, Any]] = list(td.container_definitions)
        container = next((c for c in containers if c.get("name") in overrides), containers[0])
        override: dict[str, Any] = overrides.get(container.get("name"), {})
        service, tag = parse_image(container.get("image", ""))
        task_id = uuid.uuid4().hex
        options = (container.get("logConfiguration") or {}).get("options") or {}
        log = None
        if "awslogs-group" in options:
            stream = f"{options.get('awslogs-stream-prefix', 'ecs')}/{container['name']}/{task_id}"
            log = (options["awslogs-group"], stream)
        task = EmuTask(
            arn=f"arn:aws:ecs:{REGION}:{ACCOUNT_ID}:task/{cluster}/{task_id}",
            cluster=cluster,
            cluster_arn=backend.clusters[cluster].arn,
            task_definition=td.arn,
            started_by=str(body.get("startedBy", "")),
            service=service,
            tag=tag,
            container=container["name"],
            command=list(override.get("command") or container.get("command") or []),
            environment={e["name"]: e["value"] for e in override.get("environment", [])},
            created_at=self.now(),
            log=log,
        )
        self.tasks[task.arn] = task
        return 200, {"tasks": [task.to_ecs()], "failures": []}

    # ------------------------------------------------------------------------------------- the clock

    def step(self, now: float) -> list[tuple[tuple[str, str], list[str]]]:
        """Move every task on one tick; returns the log lines to write, per (group, stream)."""
        out = []
        with self.lock:
            for task in self.tasks.values():
                if task.status == "PENDING":
                    task.status, task.started_at = "RUNNING", now
                    behaviour = self.behaviour(task.service, task.tag)
                    slow = behaviour.migration == "slow" and "up" in task.command
                    task.ticks_left = SLOW_TICKS if slow else 1
                elif task.status == "RUNNING":
                    task.ticks_left -= 1
                    if task.ticks_left <= 0:
                        task.exit_code, task.lines = self._execute(task)
                        task.status, task.stopped_at = "STOPPED", now
                        if task.log is not None:
                            out.append((task.log, list(task.lines)))
        return out

    def _execute(self, task: EmuTask) -> tuple[int, list[str]]:
        behaviour = self.behaviour(task.service, task.tag)
        words = task.command
        head = [f"$ {' '.join(words)}"]
        try:
            if "migrate" in " ".join(words):
                db = self.appdb(task.cluster)
                if "up" in words:
                    if behaviour.migration == "fails":
                        return 1, [*head, f"applying migrations of {task.service}:{task.tag}",
                                   "ERROR: relation \"orders\" is locked by another session (injected)",
                                   "migration failed: nothing was applied"]  # fmt: skip
                    return 0, [*head, *db.up(image_level(task.tag)), f"schema at {db.version():04d}"]
                if "down" in words:
                    if behaviour.migration == "down_fails":
                        return 1, [*head, "ERROR: cannot drop column: a view depends on it (injected)"]
                    steps = next((int(w) for w in words[words.index("down") + 1 :] if w.isdigit()), 1)
                    return 0, [*head, *db.down(steps), f"schema at {db.version():04d}"]
                return 2, [*head, "usage: migrate up | migrate down N"]
            if any("integration" in w for w in words):
                if behaviour.integration_tests == "fail":
                    return 1, [*head, "test_checkout ... FAILED (injected)", "1 failed, 11 passed"]
                return 0, [*head, "12 passed"]
            return 0, [*head, "done"]
        except Exception as exc:  # a broken migration file is the image's bug: the task fails, loudly
            return 1, [*head, f"ERROR: {exc}"]


def _error(code: str, message: str) -> dict[str, Any]:
    return {"__type": code, "message": message}
