"""The use cases end to end on in-memory adapters: the engine (intake, gate, runner) over a real store
file, the in-memory Platform and Metrics, an instant clock and a timer that never fires by itself. No
moto, no network. Each test asserts what the world and the audit trail show."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.clock import Clock
from bot.config.load import parse_settings
from bot.domain import commands as cmds
from bot.domain.analysis import GroupMetrics
from bot.domain.model import Deployment

CONFIG = {
    "bot": {"default_environment": "staging"},
    "alerts": {"oncall": False},
    "environments": {
        "staging": {
            "load_balancer": "lb-staging",
            "strategy": "canary",
            "canary_steps": [10, 50, 100],
            "step_bake_seconds": 60,
            "keep_warm_seconds": 0,
            "poll_seconds": 5,
            "analysis": {"interval_seconds": 30, "min_requests": 50},
        }
    },
    "services": {"web": {"ecs_service": "web-{slot}"}},
}


class InstantClock(Clock):
    """Virtual time that passes only when someone sleeps, at once."""

    def __init__(self, start: float = 1_767_225_600.0):
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


class HeldTimer:
    """A Timer (bot.app.ports.Timer) that holds its jobs: a test fires them when it wants."""

    misfire_grace_seconds = 300.0

    def __init__(self) -> None:
        self.jobs: dict[str, float] = {}
        self.on_due: Callable[[str], Awaitable[None]] | None = None
        self._running = False

    @property
    def running(self) -> bool:
        return self._running

    def bind(self, on_due: Callable[[str], Awaitable[None]], on_missed: object = None) -> None:
        self.on_due = on_due

    def start(self) -> None:
        self._running = True

    def shutdown(self) -> None:
        self._running = False

    def schedule(self, key: str, due_epoch: float) -> None:
        self.jobs[key] = due_epoch

    def cancel(self, key: str) -> bool:
        return self.jobs.pop(key, None) is not None


@pytest.fixture
async def world(tmp_path: Path):
    settings = parse_settings(CONFIG)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    platform, metrics = MemoryPlatform(rollout_polls=2), MemoryMetrics()
    target = settings.target("web", "staging")
    platform.add_service(target, "web:v1")
    engine = Engine(settings, store, platform, metrics, InstantClock(), timer=HeldTimer())
    yield engine, platform, metrics, target
    await engine.shutdown()
    store.close()


async def until_done(engine: Engine, deployment_id: int, within: float = 10.0) -> Deployment:
    """Poll the store (a deadline, not a sleep): the deployment's terminal state."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        d = await engine.store.get(deployment_id)
        if d.state.terminal:
            return d
        await asyncio.sleep(0.01)
    raise AssertionError(f"deployment #{deployment_id} still {d.state} after {within}s")


def deploy(text: str) -> cmds.Deploy:
    command = cmds.parse("/deploy", text, cmds.Vocabulary(("web",), ("staging",), "staging"))
    assert isinstance(command, cmds.Deploy)
    return command


async def test_a_canary_on_the_fakes_walks_the_weights_and_succeeds(world):
    engine, platform, _, target = world
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert isinstance(d, Deployment)
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded", done.outcome
    new_slot = next(s for s in target.slots if platform.image_of(target, s) == "web:v2")
    assert [w[new_slot] for w in platform.weight_history] == [10, 50, 100]
    states = [e.to_state for e in await engine.store.events(d.id) if e.to_state]
    assert states[0] == "requested" and states[-1] == "succeeded" and "running" in states


async def test_bad_metrics_on_the_canary_roll_it_back_to_the_stable_slot(world):
    engine, platform, metrics, target = world
    stable = target.slots[0]
    candidate = target.slots[1]
    metrics.set(candidate, GroupMetrics(requests=1000, errors=300, latency_ms=80))
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    done = await until_done(engine, d.id)
    assert done.state.value == "rolled_back", done.outcome
    assert "error rate" in (done.outcome or "")
    assert platform.service(target).weights == {stable: 100, candidate: 0}
    assert platform.weight_history[0][candidate] == 10  # it got a canary's share, then all went back
    assert platform.image_of(target, stable) == "web:v1"


async def test_a_second_request_is_told_who_holds_the_lock(world):
    engine, _, _, _ = world
    first = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    second = await engine.request(deploy("web v3 to staging"), "bob", roles={"engineers"})
    assert isinstance(first, Deployment)
    assert getattr(second, "deployment", None) is not None and second.deployment.id == first.id
    await until_done(engine, first.id)


async def test_locks_check_access_and_say_who_holds_what(world, tmp_path):
    engine, _, _, _ = world
    assert await engine.lock("web", "staging", "alice", frozenset(), "db maintenance") is None
    held = await engine.lock("web", "staging", "bob", frozenset(), "mine")
    assert held is not None and held.holder == "alice"
    d = await engine.request(deploy("web v2 to staging"), "bob", roles={"engineers"})
    assert getattr(d, "holder", None) == "alice"  # a deploy is told about the manual lock
    freed = await engine.unlock("web", "staging", "bob", frozenset())
    assert freed.removed is not None and freed.removed.holder == "alice"
    again = await engine.unlock("web", "staging", "bob", frozenset())
    assert again.removed is None and again.held_by is None


async def test_freezes_are_read_once_between_changes_and_a_change_is_seen_at_once(world):
    engine, _, _, _ = world
    reads = 0
    real = engine.store.freezes

    async def counted():
        nonlocal reads
        reads += 1
        return await real()

    engine.store.freezes = counted  # type: ignore[method-assign]
    await engine.freeze("staging", "+2h", "release train", "bob")
    with pytest.raises(Exception, match="release train"):
        await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    with pytest.raises(Exception, match="release train"):
        await engine.request(deploy("web v3 to staging"), "alice", roles={"engineers"})
    assert reads == 1  # the second request used what the first read
    await engine.unfreeze("staging", "bob")
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert isinstance(d, Deployment) and reads == 2
    await until_done(engine, d.id)


async def test_a_freezes_read_overtaken_by_a_freeze_is_not_kept(world):
    engine, _, _, _ = world
    release = asyncio.Event()
    real = engine.store.freezes

    async def slow():
        before = await real()  # read before the freeze lands...
        await release.wait()  # ...and handed back after it
        return before

    engine.store.freezes = slow  # type: ignore[method-assign]
    reading = asyncio.create_task(engine.scheduling.freezes())
    await asyncio.sleep(0)
    engine.store.freezes = real  # type: ignore[method-assign]
    await engine.freeze("staging", "+2h", "overtaken", "bob")
    release.set()
    assert [f.reason for f in await reading] == []  # that caller saw the world as it was
    assert [f.reason for f in await engine.scheduling.freezes()] == ["overtaken"]  # nobody after it


async def test_a_new_deployment_touches_nothing_until_the_requests_in_flight_are_answered(world, monkeypatch):
    """People first (bot.app.foreground): while a Slack request is being answered, the deployment it
    created makes no platform call; once it is answered, the deployment runs to its end."""
    from bot.app.foreground import FOREGROUND

    engine, platform, _, _ = world
    monkeypatch.setattr(FOREGROUND, "max_wait", 3600.0)  # the bound is not what is tested here
    FOREGROUND.begin()  # a request being answered
    try:
        d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        assert isinstance(d, Deployment)
        before = len(platform.calls)
        deadline = asyncio.get_running_loop().time() + 10
        while FOREGROUND.waiting == 0:  # until its admission (or its run) waits for the request
            assert asyncio.get_running_loop().time() < deadline, "nothing waited for the request"
            await asyncio.sleep(0.01)
        assert platform.calls[before:] == [] and (await engine.store.get(d.id)).state.value == "requested"
    finally:
        FOREGROUND.end()
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded", done.outcome
    assert platform.calls[before:]
