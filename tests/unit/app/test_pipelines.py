"""Pipelines on the fakes: a version through staging, its integration tests (a one-off task of the
deployed revision) and production's whole gate, driven by the outbox; a failed stage stops it and says
why, and production is then never requested; a bot stopped mid-pipeline carries on from the store with
nothing done twice. The engine over a real store file, the in-memory platform, an instant clock."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform, TaskScript
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.app.ports import HttpError
from bot.config.load import parse_settings
from bot.domain import commands as cmds
from bot.domain.errors import Forbidden, Refused
from bot.domain.model import Deployment
from bot.domain.pipelines import Pipeline
from tests.unit.app.test_engine_on_fakes import HeldTimer, InstantClock

T = TypeVar("T")
TESTS = ["python", "-m", "app.integration"]
ACCESS = {
    "deploy": ["engineers", "release-managers"],
    "approve": ["release-managers"],
    "promote": ["engineers", "release-managers"],
}
CONFIG: dict[str, Any] = {
    "bot": {"default_environment": "staging"},
    "alerts": {"oncall": False},
    "roles": {"engineers": {"users": ["alice", "carol"]}, "release-managers": {"users": ["bob"]}},
    "environments": {
        "staging": {"load_balancer": "lb-staging", "bake_seconds": 10, "poll_seconds": 5, "access": ACCESS},
        "production": {
            "load_balancer": "lb-production",
            "bake_seconds": 10,
            "poll_seconds": 5,
            "access": ACCESS,
            "approvals": {"required": 1, "roles": ["release-managers"]},
            "checklist": [{"id": "team", "label": "Team notified", "kind": "manual"}],
            "guards": {
                "refuse_all_at_once": False,
                "require_rollback_target": False,
                "require_health_and_monitoring": False,
            },
        },
    },
    "services": {
        "web": {
            "ecs_service": "web",  # one slot: a rolling update in place
            "integration_tests": {
                "command": TESTS,
                "url": "https://{service}.{env}.example.com",
                "timeout_seconds": 300,
            },
        },
        "api": {"ecs_service": "api"},
    },
    "pipelines": {"release": {"environments": ["staging", "production"], "services": ["web"]}},
}


class FakeHttp:
    """The Http port: each URL answers what `answers` says (a status and body, or HttpError)."""

    def __init__(self, answers: dict[str, tuple[int, str]]):
        self.answers, self.asked = answers, []

    async def get(self, url: str, timeout_seconds: float = 10.0) -> tuple[int, str]:
        self.asked.append(url)
        if url not in self.answers:
            raise HttpError("ClientConnectorError: refused")
        return self.answers[url]


async def _world(tmp_path: Path, config: dict[str, Any], platform: MemoryPlatform | None = None, http=None):
    settings = parse_settings(config)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    if platform is None:
        platform = MemoryPlatform(rollout_polls=1)
        for service in settings.services:
            for env in settings.environments:
                platform.add_service(settings.target(service, env), f"{service}:v1")
    engine = Engine(settings, store, platform, MemoryMetrics(), InstantClock(), timer=HeldTimer(), http=http)
    return engine, store, platform


@pytest.fixture
async def world(tmp_path: Path):
    engine, store, platform = await _world(tmp_path, CONFIG)
    yield engine, platform
    await engine.shutdown()
    store.close()


def command(text: str) -> cmds.Deploy:
    parsed = cmds.parse(
        "/deploy", text, cmds.Vocabulary(("web", "api"), ("staging", "production"), "staging")
    )
    assert isinstance(parsed, cmds.Deploy)
    return parsed


async def until(probe: Callable[[], Awaitable[T | None]], what: str, within: float = 10.0) -> T:
    """Poll (a deadline, not a sleep) until `probe` answers something truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        found = await probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def ended(engine: Engine, pipeline_id: int) -> Pipeline:
    async def probe() -> Pipeline | None:
        p = await engine.store.pipeline(pipeline_id)
        return p if p.ended else None

    return await until(probe, f"pipeline #{pipeline_id} to end")


async def waiting_in_production(engine: Engine, pipeline_id: int) -> Deployment:
    async def probe() -> Deployment | None:
        p = await engine.store.pipeline(pipeline_id)
        stage = p.stages[-1]
        if p.ended:
            raise AssertionError(f"{p.ref} ended {p.state}: {p.reason}")
        if stage.deployment_id is None:
            return None
        d = await engine.store.get(stage.deployment_id)
        return d if d.state.value == "awaiting_approval" else None

    return await until(probe, "production's deployment to wait for its approval")


async def start(
    engine: Engine, text: str = "web v2 --pipeline", user: str = "alice", key: str = "t1"
) -> Pipeline:
    started = await engine.pipelines.request(command(text), user, key, {"engineers"})
    return started.pipeline


async def audit(engine: Engine, pipeline_id: int) -> list[tuple[str, dict[str, Any]]]:
    return [(e.action, e.details) for e in await engine.store.pipeline_events(pipeline_id)]


async def test_staging_then_the_tests_then_production_through_its_whole_gate(world):
    engine, platform = world
    p = await start(engine, 'web v2 --pipeline --reason "checkout fix"')
    assert [(s.kind, s.env) for s in p.stages] == [
        ("deploy", "staging"),
        ("tests", "staging"),
        ("deploy", "production"),
    ]
    staging = await engine.store.get(p.stages[0].deployment_id or 0)
    assert (staging.env, staging.version, staging.kind, staging.reason) == (
        "staging",
        "v2",
        "deploy",
        "checkout fix",
    )
    assert staging.context["pipeline"] == {"id": p.id, "name": "release", "stage": 0}

    prod = await waiting_in_production(engine, p.id)
    (task,) = platform.tasks  # the tests ran once, as a task of what staging runs now: v2
    assert (
        task.command == tuple(TESTS) and task.image == "web:v2" and task.key == f"deploybot-p{p.id}-tests-1"
    )
    assert task.environment == {
        "DEPLOYBOT_SERVICE": "web",
        "DEPLOYBOT_ENV": "staging",
        "DEPLOYBOT_VERSION": "v2",
        "DEPLOYBOT_ENV_URL": "https://web.staging.example.com",
        "DEPLOYBOT_PIPELINE": str(p.id),
    }
    assert task.revision == platform.slot(engine.settings.target("web", "staging"), "main").revision
    assert (prod.version, prod.kind, prod.requested_by) == ("v2", "promote", "alice")
    assert prod.context["pipeline"] == {"id": p.id, "name": "release", "stage": 2}
    assert prod.reason == f"pipeline #{p.id}: promoted from staging (deployment #{staging.id})"
    assert prod.context["gate"]["waiting_for"] == "1 approval and Team notified"

    with pytest.raises(Refused, match="four eyes"):  # the requester cannot approve their own
        await engine.approve(prod.id, "alice", {"release-managers"})
    await engine.tick(prod.id, "carol", {"engineers"}, {"team"})
    await engine.approve(prod.id, "bob", {"release-managers"})
    done = await ended(engine, p.id)
    assert done.state == "succeeded", done.reason
    assert (await engine.store.get(prod.id)).state.value == "succeeded"
    assert platform.image_of(engine.settings.target("web", "production"), "main") == "web:v2"
    trail = await audit(engine, p.id)
    actions = [a for a, _ in trail]
    assert actions[0] == "pipeline_requested" and actions[-1] == "pipeline_succeeded"
    moves = [(d["stage"], d["stage_state"]) for a, d in trail if a != "pipeline_requested"]
    # the tests' stage: entered, its task's key saved before the start, the task, its exit code, done
    assert moves == [(0, "running"), (0, "succeeded"), *[(1, "running")] * 4, (1, "succeeded"),
                     (2, "running"), (2, "succeeded")]  # fmt: skip
    kinds = [
        e.event.kind
        for e in await engine.store.outbox_after("nobody", 1000)
        if e.event.kind.startswith("pipeline")
    ]
    assert kinds[0] == "pipeline_started" and kinds[-1] == "pipeline_ended"


async def test_a_failed_staging_deploy_stops_it_and_production_is_never_requested(world):
    engine, platform = world
    platform.fail_rollouts(engine.settings.target("web", "staging"), "web:v2", "tasks failed to start")
    p = await start(engine)
    done = await ended(engine, p.id)
    assert done.state == "failed"
    staging = await engine.store.get(p.stages[0].deployment_id or 0)
    assert done.reason and done.reason.startswith(f"the deployment to staging (#{staging.id}) rolled back: ")
    assert [s.state for s in done.stages] == ["failed", "pending", "pending"]
    assert platform.tasks == []  # no tests against a staging that rolled back
    assert [d.env for d in await engine.store.latest("web")] == ["staging"]


async def test_failed_integration_tests_say_why_and_production_is_never_requested(world):
    engine, platform = world
    lines = tuple(f"test_{i} ... ok" for i in range(20)) + ("test_checkout ... FAILED", "1 failed, 20 passed")
    platform.script_tasks("app.integration", TaskScript(exit_code=1, logs=lines, polls=3))
    p = await start(engine)
    done = await ended(engine, p.id)
    assert done.state == "failed"
    task = platform.tasks[0].id.rsplit("/", 1)[-1]
    reason = done.reason or ""
    assert reason.startswith(f"the integration tests in staging failed: task {task} exited with code 1"), (
        reason
    )
    assert "test_checkout ... FAILED" in reason and "test_0 ... ok" not in reason  # the last lines only
    assert [s.state for s in done.stages] == ["succeeded", "failed", "pending"]
    await engine.pipelines.settle()
    assert [d.env for d in await engine.store.latest("web")] == ["staging"]  # production never requested
    assert [a for a, _ in await audit(engine, p.id)][-1] == "pipeline_failed"


async def test_a_rejected_production_deployment_stops_the_pipeline(world):
    engine, _ = world
    p = await start(engine)
    prod = await waiting_in_production(engine, p.id)
    await engine.reject(prod.id, "bob", {"release-managers"}, "not during the sale")
    done = await ended(engine, p.id)
    assert done.state == "failed" and "cancelled: rejected: not during the sale" in (done.reason or ""), (
        done.reason
    )


SLOW = copy.deepcopy(CONFIG)
SLOW["services"]["web"]["integration_tests"]["timeout_seconds"] = 10**9  # the instant clock races on


async def test_a_stop_mid_pipeline_carries_on_from_the_store_with_nothing_done_twice(tmp_path):
    engine, store, platform = await _world(tmp_path, SLOW)
    platform.script_tasks("app.integration", TaskScript(exit_code=0, polls=10**9))  # runs until told
    p = await start(engine)

    async def task_running():
        return platform.tasks and (await engine.store.pipeline(p.id)).stages[1].task

    await until(task_running, "the tests' task to be recorded")
    await engine.shutdown()  # the bot stops while the tests run (its store holds the task)
    store.close()

    platform.tasks[0].polls_left = 2  # the task finishes while the bot is away
    engine, store, _ = await _world(tmp_path, SLOW, platform)
    try:
        await engine.resume_in_flight()
        prod = await waiting_in_production(engine, p.id)
        assert len(platform.tasks) == 1  # the task it had started was read, not started again
        await engine.shutdown()  # and once more while production waits for its approval
        store.close()

        engine, store, _ = await _world(tmp_path, SLOW, platform)
        await engine.resume_in_flight()
        await engine.pipelines.settle()
        assert [d.id for d in await engine.store.latest("web") if d.env == "production"] == [prod.id]
        await engine.tick(prod.id, "carol", {"engineers"}, {"team"})
        await engine.approve(prod.id, "bob", {"release-managers"})
        assert (await ended(engine, p.id)).state == "succeeded"
        assert len(platform.tasks) == 1  # the tests ran once
        assert len(await engine.store.latest("web")) == 2  # one deployment per environment
    finally:
        await engine.shutdown()
        store.close()


async def test_a_task_started_before_a_crash_is_found_not_started_again(tmp_path):
    engine, store, platform = await _world(tmp_path, SLOW)
    platform.script_tasks("app.integration", TaskScript(exit_code=0, polls=10**9))
    p = await start(engine)

    async def started():
        return bool(platform.tasks)

    await until(started, "the task to start")
    await engine.shutdown()
    store.close()
    # the crash came between the task's start and saving it: the record has its key, not its id
    raw = Store(tmp_path / "deploybot.db")
    row = raw.pipeline(p.id)
    stages = [s.to_dict() for s in row.stages]
    stages[1]["task"] = None
    raw.db.execute("UPDATE pipelines SET stages = ? WHERE id = ?", [json.dumps(stages), p.id])
    assert raw.pipeline(p.id).stages[1].task_key == f"deploybot-p{p.id}-tests-1"
    raw.close()

    platform.tasks[0].polls_left = 1
    engine, store, _ = await _world(tmp_path, SLOW, platform)
    try:
        await engine.resume_in_flight()
        await waiting_in_production(engine, p.id)
        assert len(platform.tasks) == 1 and "find_task" in platform.calls
    finally:
        await engine.shutdown()
        store.close()


async def test_http_checks_pass_or_stop_the_pipeline_saying_what_answered(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["services"]["web"]["integration_tests"] = {
        "http": [
            {"url": "https://{env}.example.com/version", "expect_body": "{version}", "timeout_seconds": 30}
        ]
    }
    http = FakeHttp({"https://staging.example.com/version": (200, "web v1")})
    engine, store, platform = await _world(tmp_path, config, http=http)
    try:
        p = await start(engine)
        done = await ended(engine, p.id)
        assert done.state == "failed" and platform.tasks == []
        assert "GET https://staging.example.com/version → 200 'web v1' (wanted 200 with 'v2'" in (
            done.reason or ""
        )
        http.answers["https://staging.example.com/version"] = (200, "web v2")
        p = await start(engine, "web v2 --pipeline release", key="t2")
        await waiting_in_production(engine, p.id)
        stage = (await engine.store.pipeline(p.id)).stages[1]
        assert stage.state == "succeeded" and stage.detail == "GET https://staging.example.com/version → 200"
    finally:
        await engine.shutdown()
        store.close()


async def test_who_may_start_a_pipeline_and_which_one(tmp_path):
    config = copy.deepcopy(CONFIG)
    config["environments"]["production"]["access"] = {**ACCESS, "promote": ["release-managers"]}
    engine, store, _ = await _world(tmp_path, config)
    try:
        await _refusals(engine)
    finally:
        await engine.shutdown()
        store.close()


async def _refusals(engine: Engine) -> None:
    with pytest.raises(Forbidden, match="to promote in production"):  # every environment checked at once
        await engine.pipelines.request(command("web v2 --pipeline"), "alice", "k1", {"engineers"})
    refused = [e.details for e in await engine.store.events() if e.action == "refused"]
    assert [(r["action"], r["env"]) for r in refused] == [("promote", "production")]
    with pytest.raises(Refused, match="No pipeline takes api"):
        await engine.pipelines.request(command("api v2 --pipeline"), "alice", "k2", {"engineers"})
    with pytest.raises(Refused, match='There is no pipeline "nightly". Pipelines: release.'):
        await engine.pipelines.request(command("web v2 --pipeline nightly"), "alice", "k3", {"engineers"})
    assert await engine.store.latest("web") == [] and await engine.store.running_pipelines() == []


async def test_the_same_request_again_is_the_same_pipeline(world):
    engine, _ = world
    first = await engine.pipelines.request(command("web v2 --pipeline"), "alice", "same", {"engineers"})
    again = await engine.pipelines.request(command("web v2 --pipeline"), "alice", "same", {"engineers"})
    assert again.pipeline.id == first.pipeline.id and again.first.id == first.first.id  # type: ignore[union-attr]
    await waiting_in_production(engine, first.pipeline.id)
    assert len(await engine.store.latest("web")) == 2


async def test_a_locked_first_environment_stops_it_at_once_and_says_who_holds_it(world):
    engine, _ = world
    assert await engine.lock("web", "staging", "carol", frozenset({"engineers"}), "db maintenance") is None
    started = await engine.pipelines.request(command("web v2 --pipeline"), "alice", "k", {"engineers"})
    assert getattr(started.first, "holder", None) == "carol"
    p = await engine.store.pipeline(started.pipeline.id)
    assert p.state == "failed" and p.reason == "web in staging is locked by hand (carol): db maintenance"
