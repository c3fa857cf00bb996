"""The sandbox's one-off tasks, through the bot's own ECS adapter against moto's server with the task
emulator in front: a migration task of image api:vN applies the demo application's real SQL up to N, is
found again by its key, reports its exit code, and its lines are read back from CloudWatch Logs; injected
failures fail it without touching the database."""

from __future__ import annotations

import pytest

from bot.adapters.aws import Aws
from bot.adapters.platforms.ecs import EcsPlatform
from bot.clock import ManualClock
from bot.config.load import load_settings
from bot.config.model import AwsSettings
from bot.sandbox.aws import AwsWorld
from tests.conftest import CONFIG

UP = ["python", "-m", "app.migrate", "up"]
DOWN = ["python", "-m", "app.migrate", "down", "1"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    world = AwsWorld(
        ManualClock(), services=("api",), environments=("staging",), workdir=tmp_path_factory.mktemp("w")
    )
    world.start()
    yield world
    world.stop()


@pytest.fixture
def world(server, aws_env):
    server.reset(ManualClock())
    server.provision()
    return server


@pytest.fixture
def target(world):
    return load_settings(CONFIG, env={"DEPLOYBOT_AWS_ENDPOINT": world.endpoint}).target("api", "staging")


@pytest.fixture
def platform(world):
    return EcsPlatform(Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=2)))


async def revision_with(platform: EcsPlatform, target, image: str) -> str:
    now = await platform.running(target)
    return await platform.register_revision(target, now.revision, image, key="7")


async def finish(world: AwsWorld, platform: EcsPlatform, target, task: str, ticks: int = 5):
    for _ in range(ticks):
        await world.clock.advance(5)  # type: ignore[attr-defined]
        await world.tick()
        run = await platform.task(target, task)
        if run.stopped:
            return run
    raise AssertionError(f"task {task} still {run.status} after {ticks} ticks")


async def test_a_migration_task_applies_the_images_sql_and_logs_it(world, platform, target):
    db = world.tasks.appdb("staging")
    assert db.version() == 1 and db.tables() == ["accounts"]
    revision = await revision_with(platform, target, "api:v3")
    task = await platform.run_task(target, revision, UP, key="deploybot-7-up-1")
    assert (await platform.task(target, task)).status == "PENDING"
    assert await platform.find_task(target, "deploybot-7-up-1") == task
    assert await platform.find_task(target, "deploybot-7-up-2") is None
    run = await finish(world, platform, target, task)
    assert run.exit_code == 0 and run.started_at is not None and run.stopped_at >= run.started_at
    assert db.version() == 3 and db.tables() == ["accounts", "orders"] and "status" in db.columns("orders")
    lines = await platform.task_logs(target, task)
    assert lines[0] == "$ " + " ".join(UP) and "applied 0003_add_order_status" in lines
    assert await platform.find_task(target, "deploybot-7-up-1") == task  # stopped tasks are listed too

    down = await platform.run_task(target, revision, DOWN, key="deploybot-7-down-1")
    assert (await finish(world, platform, target, down)).exit_code == 0
    assert db.version() == 2 and "status" not in db.columns("orders")


async def test_an_injected_failure_exits_non_zero_and_leaves_the_database(world, platform, target):
    world.inject("api", "v4", migration="fails")
    revision = await revision_with(platform, target, "api:v4")
    task = await platform.run_task(target, revision, UP, key="deploybot-8-up-1")
    run = await finish(world, platform, target, task)
    assert run.exit_code == 1 and "Essential container" in run.reason
    assert world.tasks.appdb("staging").version() == 1
    assert "migration failed: nothing was applied" in await platform.task_logs(target, task)
    with pytest.raises(ValueError, match="migration must be"):
        world.inject("api", "v4", migration="explodes")
