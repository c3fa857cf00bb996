"""A version's schema change, as steps of its deployment: the backup first (an RDS snapshot named after the
deployment, waited until available), then the migration's `up` as a one-off task of the NEW revision —
before any slot starts or any traffic moves; on the way back, after traffic is whole again, its `down`
(the new image knows how to undo its own change) where the service says it is reversible and asks for it.
Where the environment rehearses migrations, a deploy runs up, down, up and records that the version's
migration is reversible (the evidence production's checklist asks for).

Every task is started with a key naming the deployment and the run (`deploybot-12-up-1`): the key and
the task are saved before the wait, and a resumed run looks the key up before starting anything, so a
crash never runs a migration twice.

Context keys written here: snapshot, tasks (key -> task id), starting, migrated, rehearsed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.app.plans.steps import Step, StepContext, StepFailed, duration
from bot.config.migrations import Migrations
from bot.config.model import Target
from bot.domain.events import MigrationUndoFailed

LOG_LINES = 10  # a failed task's last log lines, in the thread and the alert
SNAPSHOT_WAIT_SECONDS = 3600.0


def snapshot_id(target: Target, deployment_id: int) -> str:
    """RDS's rules: letters, digits and single hyphens, a letter first, no hyphen last."""
    raw = f"deploybot-{target.env.name}-{target.service.name}-{deployment_id}"
    return re.sub(r"-+", "-", re.sub(r"[^A-Za-z0-9]", "-", raw)).strip("-")


def task_key(deployment_id: int, direction: str, run: int) -> str:
    return f"deploybot-{deployment_id}-{direction}-{run}"


def _migrations(ctx: StepContext) -> Migrations:
    found = ctx.target.migrations
    if found is None:
        raise StepFailed(f"{ctx.target.service.name} has no migrations in {ctx.target.env.name} any more")
    return found


def _short(task: str) -> str:
    return task.rsplit("/", 1)[-1]


@dataclass
class Backup(Step):
    """A snapshot of the service's database in this environment, available before the migration runs."""

    kind = "backup"

    def describe(self) -> str:
        return f"Back up the database (an RDS snapshot, waited until available, at most {duration(SNAPSHOT_WAIT_SECONDS)})"

    async def run(self, ctx: StepContext) -> None:
        m = _migrations(ctx)
        instance = m.instance(ctx.target.service.name, ctx.target.env.name)
        if m.backup != "rds-snapshot" or instance is None:
            return  # backup = "none": the service said it needs none
        if ctx.backups is None:
            raise StepFailed("no backup service is configured for this bot")
        name = ctx.data.get("snapshot") or snapshot_id(ctx.target, ctx.deployment_id)
        account = ctx.target.env.aws_role_arn
        if "snapshot" not in ctx.data:
            ctx.data["snapshot"] = name
            await ctx.save()  # before the call: a retry or a resume finds the same snapshot by name
            await ctx.backups.create_snapshot(account, instance, name)
            await ctx.record("backup", {"snapshot": name, "instance": instance})
            await ctx.report(f"Snapshot {name} of {instance} started")
        deadline = ctx.clock.now() + SNAPSHOT_WAIT_SECONDS
        while True:
            snap = await ctx.backups.snapshot(account, name)
            if snap is None:  # recorded, then lost before the call landed (a crash): make it now
                snap = await ctx.backups.create_snapshot(account, instance, name)
            if snap.available:
                await ctx.report(f"Snapshot {name} of {instance} is available")
                return
            if snap.status in ("failed", "error", "deleted"):
                raise StepFailed(f"snapshot {name} of {instance} is {snap.status}: nothing was migrated")
            if ctx.clock.now() >= deadline:
                raise StepFailed(
                    f"snapshot {name} was not available within {duration(SNAPSHOT_WAIT_SECONDS)}"
                )
            await ctx.progress(f"Waiting for snapshot {name} ({snap.status})")
            await ctx.poll()


@dataclass
class Migrate(Step):
    """The migration's `up` or `down`, once, as a task of the revision in context key `use` (the new
    one); done when it stopped with exit code 0."""

    direction: str = "up"
    run_number: int = 1
    use: str = "task_definition"
    timeout_seconds: float = 900.0  # the plan's copy of migrations.timeout_seconds (for dry runs)
    kind = "migrate"

    def describe(self) -> str:
        return f"Run the migration ({self.direction}) with the new image (at most {duration(self.timeout_seconds)})"

    async def run(self, ctx: StepContext) -> None:
        m = _migrations(ctx)
        command = m.up if self.direction == "up" else m.down
        key = task_key(ctx.deployment_id, self.direction, self.run_number)
        tasks: dict[str, str] = ctx.data.setdefault("tasks", {})
        task = tasks.get(key)
        if task is None and (ctx.resumed or ctx.data.get("starting") == key):
            task = await ctx.platform.find_task(ctx.target, key)  # it may have started before a crash
        if task is None:
            ctx.data["starting"] = key
            await ctx.save()  # a retry or a resume of this call must look for what it started
            task = await ctx.platform.run_task(ctx.target, ctx.data[self.use], command, key=key)
            await ctx.report(f"Migration {self.direction} started: task {_short(task)} ({' '.join(command)})")
        tasks[key] = task
        ctx.data.pop("starting", None)
        await ctx.save()
        await self._wait(ctx, m, task)

    async def _wait(self, ctx: StepContext, m: Migrations, task: str) -> None:
        deadline = ctx.clock.now() + m.timeout_seconds
        while True:
            t = await ctx.platform.task(ctx.target, task)
            if t.stopped:
                break
            if ctx.clock.now() >= deadline:
                raise StepFailed(
                    f"migration {self.direction} (task {_short(task)}) did not finish within "
                    f"{duration(m.timeout_seconds)}; it may still be running"
                )
            await ctx.progress(f"Migration {self.direction}: task {_short(task)} {t.status.lower()}")
            await ctx.poll()
        details = {"direction": self.direction, "task": task, "exit_code": t.exit_code}
        await ctx.record("migration", details)
        if t.exit_code != 0:
            lines = await ctx.platform.task_logs(ctx.target, task, LOG_LINES)
            tail = "\n".join(lines) if lines else "(no log lines)"
            ended = f"exited with code {t.exit_code}" if t.exit_code is not None else "never ran"
            raise StepFailed(
                f"migration {self.direction} failed: task {_short(task)} {ended}"
                + (f" ({t.reason})" if t.reason else "")
                + f"; its last log lines:\n{tail}"
            )
        if self.direction == "up":
            ctx.data["migrated"] = True
        else:
            ctx.data.pop("migrated", None)
        await ctx.report(f"Migration {self.direction} done: task {_short(task)} exited 0")


@dataclass
class RecordRehearsal(Step):
    """Up, down, up all passed with this version (`reversible`), or up alone for a migration that has no
    way back: the evidence production's checklist reads."""

    reversible: bool = True
    kind = "record_rehearsal"

    def describe(self) -> str:
        done = "up, down, up" if self.reversible else "up; it is not reversible"
        return f"Record that this version's migration was rehearsed ({done})"

    async def run(self, ctx: StepContext) -> None:
        if ctx.data.get("rehearsed"):
            return
        ctx.data["rehearsed"] = True
        tasks = dict(ctx.data.get("tasks", {}))
        details = {"version": ctx.version, "reversible": self.reversible, "tasks": tasks}
        await ctx.record("migration_rehearsed", details)
        done = "up, down and up again all exited 0" if self.reversible else "up exited 0 (it has no way back)"
        await ctx.report(f"Migration of {ctx.version} rehearsed: {done}")


@dataclass
class MigrateBack(Step):
    """On the way back, after traffic is whole: `down` where reversible and asked for; otherwise the schema
    stays expanded, and the thread says so (expand/contract)."""

    kind = "migrate_back"

    def describe(self) -> str:
        return "Undo the migration where it ran and the service asks for it"

    async def run(self, ctx: StepContext) -> None:
        m = ctx.target.migrations
        if m is None or not ctx.data.get("migrated") or ctx.data.get("undo_failed"):
            return
        if not (m.reversible and m.down_on_rollback):
            snapshot = ctx.data.get("snapshot")
            await ctx.report(
                "The schema stays migrated (expand/contract): the previous version runs on it"
                + (f"; snapshot {snapshot} holds the data from before" if snapshot else "")
            )
            return
        try:
            await Migrate("down", 0, timeout_seconds=m.timeout_seconds).run(ctx)  # 0: the rollback's own
        except StepFailed as exc:  # it ran and failed (an AWS error is raised on: the rollback tries again)
            # traffic is whole: the rollback ends, and a person decides about the data
            ctx.data["undo_failed"] = True
            snapshot = str(ctx.data.get("snapshot") or "")
            await ctx.say(MigrationUndoFailed(str(exc), snapshot))
            await ctx.report(f"Undoing the migration failed: {exc}")


def forward_steps(target: Target) -> list[Step]:
    """Where a plan's new revision is registered and nothing has started yet."""
    if target.migrations is None:
        return []
    budget = target.migrations.timeout_seconds
    steps: list[Step] = [Backup(), Migrate("up", 1, timeout_seconds=budget)]
    if target.env.rehearse_migrations and target.migrations.reversible:
        steps += [Migrate("down", 1, timeout_seconds=budget), Migrate("up", 2, timeout_seconds=budget)]
        steps.append(RecordRehearsal(reversible=True))
    elif target.env.rehearse_migrations:
        steps.append(RecordRehearsal(reversible=False))
    return steps


def back_steps(target: Target) -> list[Step]:
    """At the end of a rollback plan."""
    return [MigrateBack()] if target.migrations is not None else []
