"""Migrations as steps of a deployment, on the in-memory platform and backups: the snapshot first, `up`
with the new revision before any slot changes, a failed migration stopping everything else, rehearsals
(up, down, up) recorded, the way back after traffic, and a lost answer never starting a second task."""

from __future__ import annotations

import asyncio
import copy
from dataclasses import replace
from pathlib import Path

import pytest

from bot.adapters.backups.memory import MemoryBackups
from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform, TaskScript
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.checks import run_check
from bot.app.engine import Engine
from bot.app.ports import PlatformError
from bot.config.load import parse_settings
from bot.domain import commands as cmds
from bot.domain.checklist import Item
from bot.domain.errors import Refused
from tests.unit.app.test_engine_on_fakes import HeldTimer, InstantClock, until_done

UP = ["python", "-m", "app.migrate", "up"]
DOWN = ["python", "-m", "app.migrate", "down", "1"]
CONFIG = {
    "bot": {"default_environment": "staging"},
    "alerts": {"oncall": False},
    "environments": {
        "staging": {"load_balancer": "lb-staging", "bake_seconds": 10, "poll_seconds": 5},
        "rehearsal": {
            "load_balancer": "lb-r",
            "bake_seconds": 10,
            "poll_seconds": 5,
            "rehearse_migrations": True,
        },
    },
    "services": {
        "api": {
            "ecs_service": "api",  # one slot: a rolling update in place
            "migrations": {
                "up": UP,
                "down": DOWN,
                "backup": "rds-snapshot",
                "db_instance": "{service}-{env}",
                "reversible": True,
                "down_on_rollback": True,
                "timeout_seconds": 120,
            },
        }
    },
}


async def _world(tmp_path: Path, config: dict):
    settings = parse_settings(config)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    platform, backups = MemoryPlatform(rollout_polls=1), MemoryBackups(polls=2)
    for env in settings.environments:
        platform.add_service(settings.target("api", env), "api:v1")
    engine = Engine(
        settings, store, platform, MemoryMetrics(), InstantClock(), timer=HeldTimer(), backups=backups
    )
    return engine, store, platform, backups


@pytest.fixture
async def world(tmp_path: Path):
    engine, store, platform, backups = await _world(tmp_path, CONFIG)
    yield engine, platform, backups
    await engine.shutdown()
    store.close()


async def deploy(engine: Engine, text: str) -> int:
    envs = tuple(engine.settings.environments)
    command = cmds.parse("/deploy", text, cmds.Vocabulary(("api",), envs, "staging"))
    d = await engine.request(command, "alice", roles={"engineers"})
    return d.id  # type: ignore[union-attr]


async def actions(engine: Engine, d: int) -> list[str]:
    return [e.action for e in await engine.store.events(d)]


def kinds(platform: MemoryPlatform) -> list[str]:
    """The world's writes in order: "slot" updates, and tasks as "migrate up" / "migrate down"."""
    names = {tuple(UP): "migrate up", tuple(DOWN): "migrate down"}
    return [names.get(c.what["command"], "task") if c.kind == "task" else c.kind for c in platform.history]  # type: ignore[call-overload]


async def test_the_backup_is_available_and_up_ran_with_the_new_image_before_any_slot_changed(world):
    engine, platform, backups = world
    d = await deploy(engine, "api v2 to staging")
    done = await until_done(engine, d)
    assert done.state.value == "succeeded", done.outcome
    assert list(backups.snapshots) == [f"deploybot-staging-api-{d}"]
    assert backups.snapshots[f"deploybot-staging-api-{d}"].instance == "api-staging"
    assert [t.image for t in platform.tasks] == ["api:v2"] and platform.tasks[0].command == tuple(UP)
    assert kinds(platform)[0] == "migrate up" and "slot" in kinds(platform)[1:]
    trail = await actions(engine, d)
    assert trail.index("backup") < trail.index("migration")
    events = {e.action: e.details for e in await engine.store.events(d)}
    assert events["backup"] == {"snapshot": f"deploybot-staging-api-{d}", "instance": "api-staging"}
    assert events["migration"]["exit_code"] == 0 and events["migration"]["task"] == platform.tasks[0].id
    # it waited for the snapshot to be available before starting the task
    assert backups.calls[:3] == ["create_snapshot", "snapshot", "snapshot"]


async def test_a_failed_migration_changes_nothing_else_and_says_which_task_code_and_lines(world):
    engine, platform, backups = world
    platform.script_tasks("up", TaskScript(exit_code=3, logs=tuple(f"line {i}" for i in range(30))))
    d = await deploy(engine, "api v2 to staging")
    done = await until_done(engine, d)
    assert done.state.value == "failed", done.outcome
    outcome = done.outcome or ""
    task = platform.tasks[0].id.rsplit("/", 1)[-1]
    assert f"task {task} exited with code 3" in outcome and "line 29" in outcome and "line 19" not in outcome
    assert f"snapshot deploybot-staging-api-{d}" in outcome and "nothing was changed" not in outcome
    assert kinds(platform) == ["migrate up"]  # no slot update, no weights
    assert platform.image_of(engine.settings.target("api", "staging"), "main") == "api:v1"
    assert len(platform.tasks) == 1 and (await engine.store.lock_info("api", "staging")) is None


async def test_a_rehearsal_runs_up_down_up_and_records_the_version_as_rehearsed(world):
    engine, platform, _ = world
    d = await deploy(engine, "api v2 to rehearsal")
    done = await until_done(engine, d)
    assert done.state.value == "succeeded", done.outcome
    assert [t.command for t in platform.tasks] == [tuple(UP), tuple(DOWN), tuple(UP)]
    assert [t.key for t in platform.tasks] == [
        f"deploybot-{d}-up-1",
        f"deploybot-{d}-down-1",
        f"deploybot-{d}-up-2",
    ]
    rehearsed = [e for e in await engine.store.events(d) if e.action == "migration_rehearsed"]
    assert len(rehearsed) == 1 and rehearsed[0].details["version"] == "v2"


async def test_on_rollback_traffic_goes_back_first_then_down_runs_with_the_new_image(world):
    engine, platform, _ = world
    target = engine.settings.target("api", "staging")
    platform.fail_rollouts(target, "api:v2", "tasks failed to start")
    d = await deploy(engine, "api v2 to staging")
    done = await until_done(engine, d)
    assert done.state.value == "rolled_back", done.outcome
    assert [(t.command, t.image) for t in platform.tasks] == [(tuple(UP), "api:v2"), (tuple(DOWN), "api:v2")]
    history = kinds(platform)
    assert history == ["migrate up", "slot", "slot", "migrate down"], history  # v2 in, v1 back, then down
    assert platform.image_of(target, "main") == "api:v1"


async def test_without_down_on_rollback_the_schema_stays_and_the_thread_says_so(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["services"]["api"]["migrations"]["down_on_rollback"] = False
    engine, store, platform, _ = await _world(tmp_path, config)
    try:
        platform.fail_rollouts(engine.settings.target("api", "staging"), "api:v2", "tasks failed to start")
        d = await deploy(engine, "api v2 to staging")
        done = await until_done(engine, d)
        assert done.state.value == "rolled_back", done.outcome
        assert [t.command for t in platform.tasks] == [tuple(UP)]
        details = [e.details.get("text", "") for e in await engine.store.events(d) if e.action == "detail"]
        assert any(
            "stays migrated (expand/contract)" in t and f"snapshot deploybot-staging-api-{d}" in t
            for t in details
        )
    finally:
        await engine.shutdown()
        store.close()


async def test_a_run_task_whose_answer_was_lost_is_found_not_started_twice(world):
    engine, platform, _ = world
    platform.lose("run_task", PlatformError("ECS RunTask", "Read timeout on endpoint URL"))
    d = await deploy(engine, "api v2 to staging")
    done = await until_done(engine, d)
    assert done.state.value == "succeeded", done.outcome
    assert len(platform.tasks) == 1 and "find_task" in platform.calls


async def test_production_sees_a_rehearsed_version_as_tested_and_an_unrehearsed_one_not(world):
    engine, platform, _ = world
    rehearsed = await deploy(engine, "api v2 to rehearsal")
    assert (await until_done(engine, rehearsed)).state.value == "succeeded"
    item = Item(
        "migrations",
        "Database migrations tested",
        "automatic",
        "migrations_rehearsed",
        {"source_env": "rehearsal"},
    )
    target = engine.settings.target("api", "staging")
    d = await engine.store.get(rehearsed)

    async def check(version: str, target=target):
        return await run_check(
            item, replace(d, version=version), target, platform, MemoryMetrics(), engine.store
        )

    done, evidence = await check("v2")
    assert done and f"rehearsed in rehearsal by #{rehearsed}" in evidence, evidence
    done, evidence = await check("v3")
    assert not done and "the migration of v3 was never rehearsed in rehearsal" in evidence, evidence
    without = replace(target, migrations=None)
    assert (await check("v3", without))[0] is True


async def test_a_migration_with_no_way_back_is_rehearsed_forward_only_and_says_so(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["services"]["api"]["migrations"].update(reversible=False, down_on_rollback=False)
    engine, store, platform, _ = await _world(tmp_path, config)
    try:
        d = await deploy(engine, "api v2 to rehearsal")
        assert (await until_done(engine, d)).state.value == "succeeded"
        assert [t.command for t in platform.tasks] == [tuple(UP)]
        item = Item(
            "m",
            "Database migrations tested",
            "automatic",
            "migrations_rehearsed",
            {"source_env": "rehearsal"},
        )
        done, evidence = await run_check(
            item,
            await store.get(d),
            engine.settings.target("api", "staging"),
            platform,
            MemoryMetrics(),
            store,
        )
        assert done and "up exited 0 (it is not reversible)" in evidence, evidence
    finally:
        await engine.shutdown()
        store.close()


async def test_a_rollback_to_the_older_version_runs_no_migration(world):
    engine, platform, backups = world
    d = await deploy(engine, "api v2 to staging")
    assert (await until_done(engine, d)).state.value == "succeeded"
    command = cmds.parse(
        "/rollback",
        "api in staging",
        cmds.Vocabulary(("api",), tuple(engine.settings.environments), "staging"),
    )
    back = await engine.request(command, "alice", roles={"engineers"})
    done = await until_done(engine, back.id)  # type: ignore[union-attr]
    assert done.state.value == "succeeded" and done.version == "v1", done.outcome
    assert len(platform.tasks) == 1 and len(backups.snapshots) == 1  # only v2's own


async def test_a_rollback_needs_no_rehearsal(world):
    engine, platform, _ = world
    item = Item("m", "Database migrations tested", "automatic", "migrations_rehearsed")
    d = await deploy(engine, "api v2 to staging")
    row = replace(await engine.store.get(d), kind="rollback", version="v1")
    done, evidence = await run_check(
        item, row, engine.settings.target("api", "staging"), platform, MemoryMetrics(), engine.store
    )
    assert done and "a rollback runs no migration" in evidence


async def restore_state(engine: Engine, d: int, within: float = 5.0) -> str:
    """The deployment's restore once RDS answered (polled with a deadline: it runs after the answer)."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        state = ((await engine.store.get(d)).context.get("restore") or {}).get("state")
        if state in ("restored", "failed"):
            return str(state)
        await asyncio.sleep(0.01)
    raise AssertionError(f"#{d}'s restore still {state} after {within}s")


async def test_restore_breaks_glass_once_to_a_new_instance(world):
    engine, platform, backups = world
    d = await deploy(engine, "api v2 to staging")
    assert (await until_done(engine, d)).state.value == "succeeded"
    backups.fail(
        "restore", PlatformError("RDS RestoreDBInstanceFromDBSnapshot", "InternalFailure: try again")
    )
    r = await engine.restore(d, "carol", frozenset({"oncall"}), "v2 dropped the refunds")
    assert (r.snapshot, r.instance) == (f"deploybot-staging-api-{d}", f"api-staging-restore-{d}")
    assert await restore_state(engine, d) == "failed"  # RDS is asked after the answer: its error is recorded
    assert backups.restored == {}
    r = await engine.restore(d, "carol", frozenset({"oncall"}), "v2 dropped the refunds")  # asked again
    assert await restore_state(engine, d) == "restored"
    assert backups.restored == {f"api-staging-restore-{d}": f"deploybot-staging-api-{d}"}
    events = [e for e in await engine.store.events(d) if e.action == "restore"]
    assert events[0].actor == "carol" and events[0].details["reason"] == "v2 dropped the refunds"
    assert [e.action for e in await engine.store.events(d) if e.action.startswith("restore_")] == [
        "restore_failed",
        "restore_done",
    ]
    said = [o.event for o in await engine.store.outbox_after("test") if o.deployment_id == d]
    assert any(type(e).__name__ == "SnapshotRestoring" and e.level() == "critical" for e in said)
    lines = [e.text for e in said if type(e).__name__ == "Detail"]
    assert any("failed: RDS RestoreDBInstanceFromDBSnapshot failed: InternalFailure" in t for t in lines)
    assert any(f"restored to the new instance api-staging-restore-{d}" in t for t in lines)
    with pytest.raises(Refused, match="restored already"):
        await engine.restore(d, "carol", frozenset({"oncall"}), "again")
    with pytest.raises(Refused, match="There is no deployment #999"):
        await engine.restore(999, "carol", frozenset({"oncall"}), "x")
    command = cmds.parse(
        "/rollback",
        "api in staging",
        cmds.Vocabulary(("api",), tuple(engine.settings.environments), "staging"),
    )
    back = await engine.request(command, "alice", roles={"engineers"})
    await until_done(engine, back.id)  # type: ignore[union-attr]
    with pytest.raises(Refused, match="made no backup"):
        await engine.restore(back.id, "carol", frozenset({"oncall"}), "x")  # type: ignore[union-attr]
    assert len(backups.restored) == 1


async def test_a_failed_down_ends_the_rollback_with_a_critical_alert_naming_the_snapshot(world):
    engine, platform, _ = world
    target = engine.settings.target("api", "staging")
    platform.fail_rollouts(target, "api:v2", "tasks failed to start")
    platform.script_tasks("down", TaskScript(exit_code=1, logs=("cannot drop column",)))
    d = await deploy(engine, "api v2 to staging")
    done = await until_done(engine, d)
    assert done.state.value == "rolled_back", done.outcome  # traffic is whole: the rollback is not stuck
    assert platform.image_of(target, "main") == "api:v1"
    said = [o.event for o in await engine.store.outbox_after("test") if o.deployment_id == d]
    failed = [e for e in said if type(e).__name__ == "MigrationUndoFailed"]
    assert len(failed) == 1 and failed[0].level() == "critical"
    assert failed[0].snapshot == f"deploybot-staging-api-{d}" and "exited with code 1" in failed[0].reason
    assert len([t for t in platform.tasks if "down" in t.command]) == 1


async def test_a_dry_run_lists_the_backup_and_the_migration_with_their_time_budget(world):
    engine, platform, backups = world
    envs = tuple(engine.settings.environments)
    planned = engine.dry_run(
        cmds.parse("/deploy", "api v2 to rehearsal --dry-run", cmds.Vocabulary(("api",), envs, "staging"))
    )
    said = [s.describe() for s in planned.steps]
    backup = next(i for i, s in enumerate(said) if s.startswith("Back up the database"))
    migrations = [s for s in said if s.startswith("Run the migration")]
    assert migrations == [
        "Run the migration (up) with the new image (at most 2m)",
        "Run the migration (down) with the new image (at most 2m)",
        "Run the migration (up) with the new image (at most 2m)",
    ], said
    assert (
        backup
        < said.index(migrations[0])
        < next(i for i, s in enumerate(said) if "Update the ECS service" in s)
    )
    assert platform.tasks == [] and backups.calls == []  # it touched nothing
