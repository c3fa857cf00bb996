"""The engine against the sandbox's moto server, in-process: AWS errors, crash and resume, notices.
The bot's own code is real throughout; only time runs faster (ScaledClock)."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from bot.adapters.aws import Aws
from bot.adapters.http import AiohttpClient
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
from bot.adapters.platforms.ecs import EcsPlatform
from bot.adapters.scheduler import Scheduler
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.clock import ScaledClock
from bot.config.load import load_settings
from bot.domain import commands as cmds
from bot.domain.errors import Refused
from bot.domain.events import DeployFailed, DomainEvent
from bot.domain.machine import State
from bot.sandbox.aws import AwsWorld
from bot.sandbox.client import wait_for
from handlers.ui import event_text
from tests.conftest import CONFIG

EVERYONE = frozenset({"engineers", "release-managers", "oncall"})  # roles, as Slack groups would give


@pytest.fixture
async def world(aws_env):
    clock = ScaledClock(200)
    w = AwsWorld(clock)
    w.start()
    w.provision()
    task = asyncio.get_running_loop().create_task(w.run())
    yield w
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    w.stop()


@dataclasses.dataclass(frozen=True)
class Said:
    """One event the engine announced, with its level and its words as Slack shows them."""

    deployment_id: int | None
    event: DomainEvent
    level: str
    text: str


class Announced:
    """What the engine announced: the store's outbox (read as a consumer of its own, delivering nothing)."""

    def __init__(self, store: AsyncStore):
        self.store = store

    async def all(self) -> list[Said]:
        out = []
        for entry in await self.store.outbox_after("tests", 100_000):
            d = await self.store.get(entry.deployment_id) if entry.deployment_id else None
            words = event_text.line(entry.event, d) if d is not None else None
            out.append(Said(entry.deployment_id, entry.event, entry.event.level(), words or ""))
        return out


def make_engine(world: AwsWorld, store: AsyncStore, **env_changes) -> tuple[Engine, Announced]:
    settings = load_settings(CONFIG, env={"DEPLOYBOT_AWS_ENDPOINT": world.endpoint})
    if env_changes:
        envs = dict(settings.environments)
        envs["staging"] = dataclasses.replace(envs["staging"], **env_changes)
        settings = dataclasses.replace(settings, environments=envs)
    aws = Aws(settings.aws)
    engine = Engine(
        settings,
        store,
        EcsPlatform(aws),
        CloudWatchMetrics(aws),
        world.clock,
        timer=Scheduler(world.clock),
        http=AiohttpClient(),
    )
    return engine, Announced(store)


def deploy(version: str, env: str = "staging") -> cmds.Deploy:
    return cmds.Deploy("web", version, env, None, False, None, None, False, None)


@pytest.fixture
def store():
    s = AsyncStore(Store(":memory:"))
    yield s
    s.close()


async def finished(store: AsyncStore, deployment_id: int):
    async def probe():
        d = await store.get(deployment_id)
        return d if d.state.terminal else None

    return await wait_for(probe, 60, what=f"deployment #{deployment_id} to finish")


async def test_an_aws_error_before_any_change_fails_cleanly_and_says_what_aws_said(world, store):
    engine, notices = make_engine(world, store, cluster="no-such-cluster")
    d = await engine.request(deploy("v2"), "U0ALICE", roles=EVERYONE)
    d = await finished(store, d.id)
    assert d.state == State.FAILED
    assert "nothing was changed" in d.outcome
    assert "ClusterNotFound" in d.outcome or "not found" in d.outcome.lower()
    assert await store.lock_info("web", "staging") is None
    said = await notices.all()
    assert isinstance(said[-1].event, DeployFailed) and said[-1].event.nothing_changed
    assert any(n.level == "critical" for n in said)


async def test_a_crash_mid_plan_resumes_from_the_persisted_step(world, store):
    first, _ = make_engine(world, store)
    d = await first.request(deploy("v2"), "U0ALICE", roles=EVERYONE)

    async def past_update():
        row = await store.get(d.id)
        return row if row.step_index >= 3 else None  # capture, register, update_service done

    await wait_for(past_update, 30, what="the update_service step")
    await first.shutdown()  # the process dies here: tasks cancelled, nothing cleaned up
    assert (await store.get(d.id)).state == State.RUNNING

    second, _ = make_engine(world, store)
    resumed = await second.resume_in_flight()
    assert [r.id for r in resumed] == [d.id]
    d = await finished(store, d.id)
    assert d.state == State.SUCCEEDED
    ecs = world.client("ecs")
    revisions = ecs.list_task_definitions(familyPrefix="web-staging")["taskDefinitionArns"]
    assert len(revisions) == 2, "resuming must not register the revision again"
    actions = [e.action for e in await store.events(d.id)]
    assert "resume_after_restart" in actions
    started = [e.details["index"] for e in await store.events(d.id) if e.action == "step_started"]
    assert started[:3] == [0, 1, 2] and started[3:] == sorted(started[3:]) and started[-1] == 5


async def test_rollback_refuses_without_a_known_good_version(world, store):
    engine, _ = make_engine(world, store)
    with pytest.raises(Refused, match="No known-good version of web in staging"):
        await engine.request(cmds.Rollback("web", "staging", None, False, None), "U0BOB", roles=EVERYONE)


async def test_rollback_returns_to_the_last_known_good_version_and_promote_uses_staging(world, store):
    engine, _ = make_engine(world, store)
    for version in ("v2", "v3"):
        d = await engine.request(deploy(version), "U0ALICE", roles=EVERYONE)
        assert (await finished(store, d.id)).state == State.SUCCEEDED
    back = await engine.request(cmds.Rollback("web", "staging", None, False, None), "U0BOB", roles=EVERYONE)
    back = await finished(store, back.id)
    assert (back.kind, back.version, back.state) == ("rollback", "v2", State.SUCCEEDED)
    ecs = world.client("ecs")
    arn = ecs.describe_services(cluster="staging", services=["web-blue"])["services"][0]["taskDefinition"]
    image = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]["containerDefinitions"][0][
        "image"
    ]
    assert image == "web:v2"

    promoted = await engine.request(cmds.Promote("web", "staging", "production"), "U0BOB", roles=EVERYONE)
    assert (promoted.version, promoted.env, promoted.kind) == ("v2", "production", "promote")
    with pytest.raises(Refused, match="no deployment of api has succeeded in staging"):
        await engine.request(cmds.Promote("api", "staging", "production"), "U0BOB", roles=EVERYONE)

    async def waiting_for_people():
        d = await store.get(promoted.id)
        return d if d.state == State.AWAITING_APPROVAL else None

    waiting = await wait_for(waiting_for_people, 30, what="the promotion to wait for its checklist")
    assert (
        "1 approval" in waiting.context["gate"]["waiting_for"]
    )  # production's checklist applies to promotions
    assert (await engine.act(promoted.id, "cancel", "U0BOB")).state == State.CANCELLED


async def test_unknown_strategy_is_refused_before_anything_is_created(world, store):
    engine, _ = make_engine(world, store)
    command = dataclasses.replace(deploy("v2"), strategy="big-bang")
    with pytest.raises(Refused, match='no "big-bang" strategy'):
        await engine.request(command, "U0ALICE", roles=EVERYONE)
    assert await store.latest() == []


async def test_an_error_outside_any_step_fails_on_the_record_and_releases_the_lock(world, store):
    engine, notices = make_engine(world, store)
    d = await store.create_deployment(
        service="web",
        env="staging",
        version="v2",
        strategy="rolling",
        kind="deploy",
        requested_by="U0ALICE",
        plan=[{"kind": "no_such_step"}],
    )
    engine.start(d.id)
    d = await finished(store, d.id)
    assert d.state == State.FAILED and "internal error (KeyError)" in d.outcome
    assert await store.lock_info("web", "staging") is None
    assert (await notices.all())[-1].level == "critical"
