"""Faults on the in-memory platform: a rollback never gives up while traffic is not whole, nothing is
called done that the platform does not show, split traffic is repaired before a deploy, and /rollback
returns to the last version that succeeded whole. No moto, no network: the runner over a real store
file, MemoryPlatform and MemoryMetrics, an instant clock."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app import history
from bot.app.engine import Engine
from bot.app.ports import PlatformError
from bot.config.load import parse_settings
from bot.config.model import Target
from bot.domain import events as ev
from bot.domain.analysis import GroupMetrics
from bot.domain.errors import Refused
from bot.domain.model import Deployment
from tests.unit.app.test_engine_on_fakes import CONFIG, HeldTimer, InstantClock, deploy, until_done


def rolling_config() -> dict:
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in CONFIG.items()}
    config["environments"] = {"staging": {**CONFIG["environments"]["staging"], "strategy": "rolling"}}
    return config


async def make_world(tmp_path: Path, platform: MemoryPlatform, config: dict = CONFIG):
    settings = parse_settings(config)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    target = settings.target("web", "staging")
    platform.add_service(target, "web:v1")
    engine = Engine(settings, store, platform, MemoryMetrics(), InstantClock(), timer=HeldTimer())
    return engine, store, target


@pytest.fixture
async def world(tmp_path: Path):
    platform = MemoryPlatform(rollout_polls=2)
    engine, store, target = await make_world(tmp_path, platform)
    yield engine, platform, target
    await engine.shutdown()
    store.close()


async def until(predicate, within: float = 10.0):
    """Poll (a deadline, not a sleep) until `predicate()` (a coroutine function) returns truthy."""
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        if value := await predicate():
            return value
        await asyncio.sleep(0.01)
    raise AssertionError("the condition did not come true in time")


async def said(engine: Engine, deployment_id: int, kind: type[ev.DomainEvent]) -> list[ev.DomainEvent]:
    entries = await engine.store.outbox_after("a-test-reader", 10_000)
    return [e.event for e in entries if e.deployment_id == deployment_id and isinstance(e.event, kind)]


async def failed_tries(engine: Engine, deployment_id: int) -> int:
    return sum(1 for e in await engine.store.events(deployment_id) if e.action == "rollback_step_failed")


def outage(*, times: int) -> list[PlatformError]:
    return [PlatformError("ELBv2 ModifyRule", "InternalFailure: try again", "InternalFailure")] * times


class ElbDown(MemoryPlatform):
    """ELBv2 refuses every change that takes traffic away from the candidate while `down`."""

    down = True

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        if self.down and min(weights.values()) == 0:
            raise outage(times=1)[0]
        await super().set_weights(target, weights)


async def test_a_rollback_keeps_trying_while_traffic_is_split_and_alerts_once(tmp_path):
    platform = ElbDown(rollout_polls=2)
    engine, store, target = await make_world(tmp_path, platform)
    try:
        await _stuck_then_recovered(engine, platform, target)
    finally:
        await engine.shutdown()
        store.close()


async def _stuck_then_recovered(engine: Engine, platform: ElbDown, target: Target) -> None:
    stable, candidate = target.slots
    engine.runner.metrics.set(candidate, GroupMetrics(requests=1000, errors=300, latency_ms=80))
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert isinstance(d, Deployment)

    await until(lambda: _at_least(failed_tries(engine, d.id), 5))
    now = await engine.store.get(d.id)
    assert now.state.value == "rolling_back"  # not "failed": the traffic is still split
    assert platform.service(target).weights[candidate] == 10
    lock = await engine.store.lock_info("web", "staging")
    assert lock is not None and lock.deployment_id == d.id  # held until traffic is whole
    stuck = await said(engine, d.id, ev.RollbackStuck)
    assert len(stuck) == 1 and stuck[0].level() == "critical"  # one alert, not one per try
    assert "ModifyRule" in stuck[0].reason and stuck[0].retry_seconds > 0
    assert now.context.get("stuck")  # the message offers Retry now / All traffic to stable

    platform.down = False  # ELBv2 answers again
    done = await until_done(engine, d.id)
    assert done.state.value == "rolled_back", done.outcome
    assert platform.service(target).weights == {stable: 100, candidate: 0}
    got_through = await said(engine, d.id, ev.RollbackRetried)
    assert len(got_through) == 1 and got_through[0].attempts >= 5
    assert await engine.store.lock_info("web", "staging") is None


async def test_all_traffic_to_stable_moves_it_at_once_and_retry_now_tries_again(world):
    engine, platform, target = world
    stable, candidate = target.slots
    engine.runner.metrics.set(candidate, GroupMetrics(requests=1000, errors=300, latency_ms=80))
    platform.set_health(target, stable, "unhealthy", "Target.FailedHealthChecks")  # stable looks bad too
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    await until(lambda: _at_least(failed_tries(engine, d.id), 2))
    assert platform.service(target).weights[candidate] == 10  # the bot does not move traffic to a sick slot

    await engine.act(d.id, "all_to_stable", "bob", frozenset({"engineers"}))
    assert platform.service(target).weights == {stable: 100, candidate: 0}  # at once, in one change
    forced = await said(engine, d.id, ev.TrafficForced)
    assert len(forced) == 1 and forced[0].by == "bob" and forced[0].slot == stable
    assert (await engine.store.get(d.id)).state.value == "rolling_back"  # its targets still fail

    tries = await failed_tries(engine, d.id)
    platform.set_health(target, stable, None)
    await engine.act(d.id, "retry_rollback", "carol", frozenset({"engineers"}))
    done = await until_done(engine, d.id)
    assert done.state.value == "rolled_back" and await failed_tries(engine, d.id) >= tries
    assert [e.by for e in await said(engine, d.id, ev.RollbackRetried) if e.by] == ["carol"]
    with pytest.raises(Refused, match="not rolling back"):
        await engine.act(d.id, "retry_rollback", "carol", frozenset({"engineers"}))


class Meddler(MemoryPlatform):
    """Someone splits the traffic again right after the rollback's first move back to stable."""

    meddled = False

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        await super().set_weights(target, weights)
        stable, candidate = target.slots
        if not self.meddled and weights.get(candidate) == 0:
            self.meddled = True
            self.service(target).weights = {stable: 80, candidate: 20}


async def test_a_failed_try_runs_the_whole_rollback_again_so_a_step_undone_meanwhile_is_redone(tmp_path):
    platform = Meddler(rollout_polls=1)
    engine, store, target = await make_world(tmp_path, platform)
    try:
        stable, candidate = target.slots
        engine.runner.metrics.set(candidate, GroupMetrics(requests=1000, errors=300, latency_ms=80))
        d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        done = await until_done(engine, d.id)
        assert done.state.value == "rolled_back", done.outcome
        assert platform.meddled and await failed_tries(engine, d.id) >= 1  # the scale-down saw 20%
        assert platform.service(target).weights == {stable: 100, candidate: 0}  # moved back again
        assert platform.slot(target, candidate).desired == 0
    finally:
        await engine.shutdown()
        store.close()


class StickyWeights(MemoryPlatform):
    """An ALB that answers the first move to 100% but leaves a quarter of the traffic where it was."""

    stuck = False

    async def set_weights(self, target: Target, weights: Mapping[str, int]) -> None:
        wanted = dict(weights)
        top = max(wanted, key=lambda s: wanted[s])
        if wanted[top] == 100 and self.service(target).weights.get(top, 0) > 0 and not self.stuck:
            self.stuck = True
            wanted = {s: 75 if s == top else 25 for s in wanted}
        await super().set_weights(target, wanted)


async def test_a_deploy_aws_does_not_show_whole_is_not_called_live(tmp_path):
    platform = StickyWeights(rollout_polls=1)
    engine, store, target = await make_world(tmp_path, platform)
    try:
        d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        done = await until_done(engine, d.id)
        assert done.state.value == "rolled_back", done.outcome
        assert await said(engine, d.id, ev.Succeeded) == []
        # caught before the old slot lost its tasks (the scale-down reads the weights first)
        assert "still has traffic (blue 25%, green 75%)" in (done.outcome or ""), done.outcome
        stable = target.slots[0]
        assert platform.service(target).weights[stable] == 100  # and the rollback made it whole
    finally:
        await engine.shutdown()
        store.close()


async def test_a_deploy_onto_split_traffic_first_puts_it_all_on_the_last_good_slot(world):
    engine, platform, target = world
    first = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert (await until_done(engine, first.id)).state.value == "succeeded"
    v2_slot = next(s for s in target.slots if platform.image_of(target, s) == "web:v2")
    other = next(s for s in target.slots if s != v2_slot)
    platform.service(target).weights = {v2_slot: 70, other: 30}  # someone split it by hand

    d = await engine.request(deploy("web v3 to staging"), "alice", roles={"engineers"})
    done = await until_done(engine, d.id)
    assert done.state.value == "succeeded", done.outcome
    repaired = await said(engine, d.id, ev.TrafficRepaired)
    assert [(e.slot, e.version) for e in repaired] == [(v2_slot, "v2")]
    assert "70%" in repaired[0].was and "30%" in repaired[0].was
    assert platform.weight_history[-4] == {v2_slot: 100, other: 0}  # repair first, then 10, 50, 100
    assert platform.service(target).weights == {other: 100, v2_slot: 0}
    assert platform.image_of(target, other) == "web:v3"


async def test_a_repaired_slot_that_fails_its_analysis_stops_the_deploy_with_traffic_whole(world):
    engine, platform, target = world
    first = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert (await until_done(engine, first.id)).state.value == "succeeded"
    v2_slot = next(s for s in target.slots if platform.image_of(target, s) == "web:v2")
    other = next(s for s in target.slots if s != v2_slot)
    platform.service(target).weights = {v2_slot: 70, other: 30}
    engine.runner.metrics.set(v2_slot, GroupMetrics(requests=1000, errors=200, latency_ms=80))

    d = await engine.request(deploy("web v3 to staging"), "alice", roles={"engineers"})
    done = await until_done(engine, d.id)
    assert done.state.value == "failed", done.outcome
    assert "after the repair" in done.outcome and "error rate" in done.outcome
    assert platform.service(target).weights == {v2_slot: 100, other: 0}  # the repair stands, whole
    assert platform.image_of(target, other) != "web:v3"  # nothing else moved


async def test_split_traffic_with_no_known_good_slot_is_refused_with_what_runs(world):
    engine, platform, target = world
    blue, green = target.slots
    platform.service(target).weights = {blue: 50, green: 50}  # nothing ever succeeded here
    d = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    done = await until_done(engine, d.id)
    assert done.state.value == "failed"
    assert "traffic is split" in done.outcome and "known good: none yet" in done.outcome
    assert platform.service(target).weights == {blue: 50, green: 50}  # it touched nothing


async def test_a_rolling_deploy_onto_split_traffic_repairs_it_and_ends_whole(tmp_path):
    platform = MemoryPlatform(rollout_polls=1)
    engine, store, target = await make_world(tmp_path, platform, rolling_config())
    try:
        first = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        assert (await until_done(engine, first.id)).state.value == "succeeded"
        blue, green = target.slots
        platform.slot(target, green).revision = platform.slot(target, blue).revision
        platform.slot(target, green).desired = platform.slot(target, green).running = 2
        platform.service(target).weights = {blue: 75, green: 25}
        d = await engine.request(deploy("web v3 to staging"), "alice", roles={"engineers"})
        done = await until_done(engine, d.id)
        assert done.state.value == "succeeded", done.outcome
        live = next(s for s, w in platform.service(target).weights.items() if w == 100)
        assert platform.image_of(target, live) == "web:v3"  # all traffic on the slot it updated
    finally:
        await engine.shutdown()
        store.close()


async def test_rollback_after_a_failed_deploy_that_changed_things_returns_to_the_last_good(world):
    engine, _, _ = world
    store = engine.store
    for version, end in (("v1", "succeed"), ("v2", "succeed"), ("v3", "fail")):
        d = await store.create_deployment(
            service="web", env="staging", version=version, strategy="canary", kind="deploy",
            requested_by="alice",
        )  # fmt: skip
        assert isinstance(d, Deployment)
        await store.transition(d.id, "start", "deploybot")
        await store.save_progress(d.id, context={"changed": True})
        await store.transition(d.id, end, "deploybot")
    assert await history.rollback_version(store, "web", "staging") == "v2"  # not v1: v2 is what was whole
    d = await store.create_deployment(
        service="web", env="staging", version="v4", strategy="canary", kind="deploy", requested_by="alice"
    )
    await store.transition(d.id, "start", "deploybot")
    await store.transition(d.id, "succeed", "deploybot")
    assert await history.rollback_version(store, "web", "staging") == "v2"  # the one before v4


async def _state_is(engine: Engine, deployment_id: int, state: str) -> bool:
    return (await engine.store.get(deployment_id)).state.value == state


async def _at_least(count, n: int) -> bool:
    return await count >= n
