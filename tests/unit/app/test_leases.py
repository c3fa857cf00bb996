"""Leases and the fence on a manual clock: the store's compare-and-set rows (taken when free, expired or
one's own; a token that grows at each change of hands; writes and AWS calls refused to an old token),
and two replicas (two engines on one store file) handing a canary over when one stops renewing."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.app.flags import FlagBook
from bot.app.leases import FencedFlags, FencedPlatform, Leases
from bot.app.replica import Replica
from bot.clock import ManualClock
from bot.config.load import parse_settings
from bot.domain.errors import Conflict
from bot.domain.leases import OUTBOX, Fenced, deployment_lease
from bot.domain.model import BOT, Deployment
from tests.unit.app.quiet import quiet
from tests.unit.app.test_engine_on_fakes import CONFIG, HeldTimer, deploy
from tests.unit.app.test_flags import CONFIG as FLAG_CONFIG


@pytest.fixture
def store(tmp_path: Path):
    clock = ManualClock()
    s = Store(tmp_path / "leases.db", clock)
    yield s, clock
    s.close()


async def test_a_lease_is_taken_once_until_it_expires_then_taken_over_with_a_new_token(store):
    s, clock = store
    assert s.acquire_lease("deployment:1", "a", 30) == 1
    assert s.acquire_lease("deployment:1", "b", 30) is None  # a holds it
    await clock.advance(29)
    assert s.renew_lease("deployment:1", 1, 30)  # renewed: good until 59 s from the start
    await clock.advance(29)
    assert s.acquire_lease("deployment:1", "b", 30) is None
    await clock.advance(2)
    assert s.acquire_lease("deployment:1", "b", 30) == 2  # expired: b takes it, the token moves on
    assert not s.renew_lease("deployment:1", 1, 30)  # a's token is dead
    assert s.lease("deployment:1")["owner"] == "b"


async def test_an_expired_lease_is_lost_even_before_anyone_takes_it(store):
    s, clock = store
    token = s.acquire_lease(OUTBOX, "a", 10)
    await clock.advance(10.5)
    assert not s.renew_lease(OUTBOX, token, 10)
    with pytest.raises(Fenced):
        s.fence(OUTBOX, token, 10, "ModifyRule web blue=90 green=10")


async def test_a_replica_started_again_under_its_name_takes_its_own_lease_back_at_once(store):
    s, _ = store
    assert s.acquire_lease("deployment:3", "a", 30) == 1
    assert s.acquire_lease("deployment:3", "a", 30) == 2  # its earlier life's token is fenced off
    with pytest.raises(Fenced):
        s.fence("deployment:3", 1, 30, "x")


async def test_a_handed_back_lease_is_taken_at_once_and_its_old_token_fenced(store):
    s, _ = store
    assert s.acquire_lease("deployment:4", "a", 30) == 1
    assert s.release_leases("a") == 1
    assert s.acquire_lease("deployment:4", "b", 30) == 2


async def test_a_fenced_write_is_refused_and_writes_nothing_and_a_good_one_records_its_intent(store):
    s, clock = store
    d = s.create_deployment(
        service="web", env="staging", version="v2", strategy="canary", kind="deploy", requested_by="alice"
    )
    assert isinstance(d, Deployment)
    name = deployment_lease(d.id)
    s.acquire_lease(name, "a", 30)
    s.fence(name, 1, 30, "ModifyRule web blue=90 green=10")
    assert s.lease(name)["intent"] == "ModifyRule web blue=90 green=10"
    await clock.advance(31)
    assert s.acquire_lease(name, "b", 30) == 2
    events_before = len(s.events(d.id))
    with pytest.raises(Fenced) as refused:
        s.fenced(name, 1, 30, None, s.record, d.id, BOT, "step_finished", {"index": 0})
    assert refused.value.holder == "b" and refused.value.holder_token == 2
    assert len(s.events(d.id)) == events_before  # nothing was written
    s.fenced(name, 2, 30, None, s.record, d.id, BOT, "step_finished", {"index": 0})
    assert len(s.events(d.id)) == events_before + 1
    assert s.lease(name)["intent"] is None  # a's intent went with its lease; a store write sets none


async def test_a_fenced_platform_never_calls_aws_for_a_lost_lease(store, caplog):
    s, clock = store
    settings = parse_settings(CONFIG)
    target = settings.target("web", "staging")
    platform = MemoryPlatform()
    platform.add_service(target, "web:v1")
    a = Leases(AsyncStore(s), clock, "a", ttl=30)
    b = Leases(AsyncStore(Store(s.path, clock)), clock, "b", ttl=30)
    assert await a.acquire("deployment:9")
    fenced = FencedPlatform(platform, a, "deployment:9")
    await fenced.set_weights(target, {"blue": 90, "green": 10})
    await clock.advance(31)  # a stalled past its lease
    assert await b.acquire("deployment:9")
    with caplog.at_level(logging.WARNING), pytest.raises(Fenced):
        await fenced.set_weights(target, {"blue": 50, "green": 50})
    assert platform.weight_history == [{"blue": 90, "green": 10}]  # the second change never left
    assert "refused ModifyRule web blue=50 green=50" in caplog.text
    assert not a.holds("deployment:9")


async def test_two_replicas_a_canary_handed_over_when_its_runner_stops_renewing(tmp_path, caplog):
    """A runs a canary, then stops renewing (paused); past its lease B takes it over and finishes it
    from the persisted step; A's run is fenced when it wakes and says so; no weight is set twice."""
    settings = parse_settings(CONFIG)
    clock = ManualClock()
    path = tmp_path / "shared.db"
    platform, metrics = MemoryPlatform(rollout_polls=1), MemoryMetrics()
    target = settings.target("web", "staging")
    platform.add_service(target, "web:v1")
    replicas = []
    for name in ("a", "b"):
        store = AsyncStore(Store(path, clock))
        engine = Engine(settings, store, platform, metrics, clock, timer=HeldTimer())
        replicas.append(
            (
                engine,
                Replica(store, clock, Leases(store, clock, name, ttl=30), engine.runner, engine.scheduling),
            )
        )
    (ea, ra), (eb, rb) = replicas
    d = await ea.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert isinstance(d, Deployment)

    async def drive(cond, ticking: list[Replica], what: str) -> None:
        """Move the manual clock a second at a time (the given replicas renewing) until `cond()`."""
        for _ in range(400):
            if await cond():
                return
            await clock.advance(1)
            for r in ticking:
                await r.tick()
            await quiet(ea.store, eb.store)
        raise AssertionError(what)

    async def canary_at_10() -> bool:
        return bool(platform.weight_history) and max(platform.weight_history[-1].values()) == 90

    await drive(canary_at_10, [ra, rb], "the canary at 10%")
    assert await rb.adopt() == []  # A's lease is alive: B takes nothing
    with caplog.at_level(logging.WARNING):
        # A is "paused": its replica loop renews no more. B takes the deployment once A's lease expired.
        await drive(lambda: _held_by(eb, d.id, "b"), [rb], "B to take it over")
        await drive(lambda: _ended(eb, d.id), [rb], "B to finish it")
        done = await eb.store.get(d.id)
        assert done.state.value == "succeeded", done.outcome

        async def a_says_so() -> bool:  # A's run finds out at its next fenced write, on its own task
            return "lost its lease" in caplog.text and "this replica (a)" in caplog.text

        await drive(a_says_so, [rb], "A to log that it lost its lease")
    new = next(s for s in target.slots if platform.image_of(target, s) == "web:v2")
    shares = [w[new] for w in platform.weight_history]
    assert shares == [10, 50, 100]  # each weight once: B did not set 10% again, A set nothing more
    actions = [e.action for e in await eb.store.events(d.id)]
    taken = [e for e in await eb.store.events(d.id) if e.action == "resume_after_restart"]
    assert taken and taken[0].details["taken_over_from"] == "a" and taken[0].details["replica"] == "b"
    assert actions.count("step_finished") == len(done.plan)  # each step finished once on the record
    for engine, _ in replicas:
        await engine.shutdown()
        engine.store.close()  # type: ignore[attr-defined]


async def _held_by(engine: Engine, deployment_id: int, owner: str) -> bool:
    row = await engine.store.lease(deployment_lease(deployment_id))  # type: ignore[attr-defined]
    return row is not None and row["owner"] == owner


async def _ended(engine: Engine, deployment_id: int) -> bool:
    return (await engine.store.get(deployment_id)).state.terminal


async def test_people_act_through_either_replica_and_the_one_running_it_follows(tmp_path):
    """Pause, resume and abort pressed on B reach the run on A: A's gate follows the store's state, and
    an abort makes A roll back (B, refused the lease, runs nothing)."""
    settings = parse_settings(CONFIG)
    clock = ManualClock()
    path = tmp_path / "shared.db"
    platform, metrics = MemoryPlatform(rollout_polls=1), MemoryMetrics()
    target = settings.target("web", "staging")
    platform.add_service(target, "web:v1")
    pairs = []
    for name in ("a", "b"):
        store = AsyncStore(Store(path, clock))
        engine = Engine(settings, store, platform, metrics, clock, timer=HeldTimer())
        leases = Leases(store, clock, name, ttl=30)
        pairs.append((engine, Replica(store, clock, leases, engine.runner, engine.scheduling)))
    (ea, ra), (eb, rb) = pairs
    d = await ea.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
    assert isinstance(d, Deployment)

    async def drive(cond, what: str, steps: int = 400) -> None:
        for _ in range(steps):
            if await cond():
                return
            await clock.advance(1)
            await ra.tick()
            await rb.tick()
            await quiet(ea.store, eb.store)
        raise AssertionError(what)

    async def at_10() -> bool:
        return bool(platform.weight_history)

    await drive(at_10, "the canary at 10%")
    await eb.act(d.id, "pause", "alice")
    await ra.tick()
    assert not ea.runner.runs[d.id].gate.is_set()  # A follows B's pause
    moved = len(platform.weight_history)
    for _ in range(120):  # two minutes of clock: a paused run moves no traffic
        await clock.advance(1)
        await ra.tick()
        await rb.tick()
        await asyncio.sleep(0)
    assert len(platform.weight_history) == moved
    await eb.act(d.id, "resume", "alice")
    await ra.tick()
    assert ea.runner.runs[d.id].gate.is_set()

    async def at_50() -> bool:
        return len(platform.weight_history) >= 2

    await drive(at_50, "the canary at 50%")
    await eb.act(d.id, "abort", "alice")
    await eb.runner.wait(d.id)  # B's run, refused the lease (A holds it), ends at once
    assert not eb.runner.running(d.id)

    async def ended() -> bool:
        return (await eb.store.get(d.id)).state.terminal

    await drive(ended, "A to roll it back")
    done = await eb.store.get(d.id)
    assert done.state.value == "rolled_back", done.outcome
    assert platform.service(target).weights[target.slots[0]] in (0, 100)
    assert sorted(platform.service(target).weights.values()) == [0, 100]
    assert (await ea.store.lease(deployment_lease(d.id)))["owner"] == "a"  # type: ignore[attr-defined]
    for engine, _ in pairs:
        await engine.shutdown()
        engine.store.close()  # type: ignore[attr-defined]


async def test_a_start_refuses_when_another_replica_amended_after_the_checks(store):
    s, _ = store
    d = s.create_deployment(
        service="web", env="staging", version="v2", strategy="canary", kind="deploy", requested_by="alice"
    )
    assert isinstance(d, Deployment)
    s.approve(d.id, "bob")
    s.amend(d.id, "alice", version="v3", strategy="canary", plan=[])  # through the other replica
    with pytest.raises(Conflict, match="changed since its checks"):
        s.start_as_seen(d, BOT)
    assert s.get(d.id).state.value == "requested"
    assert [a.voided for a in s.approvals(d.id)] == [True]  # bob approved v2, not v3
    assert s.start_as_seen(s.get(d.id), BOT).state.value == "running"


async def test_a_fenced_rollout_never_serves_its_next_share_after_its_lease_is_lost(store, caplog):
    """A flag rollout's steps write the flag's state behind the lease's fence (one transaction): a replica
    stalled past its lease, whose rollout another replica took over, changes nothing when it wakes."""
    s, clock = store
    settings = parse_settings(FLAG_CONFIG)
    book = FlagBook(settings, AsyncStore(s))
    a = Leases(AsyncStore(s), clock, "a", ttl=30)
    b = Leases(AsyncStore(Store(s.path, clock)), clock, "b", ttl=30)
    assert await a.acquire("deployment:9")
    fenced = FencedFlags(book, a, "deployment:9")

    def share(percent: float):
        return lambda flag, state: replace(
            state, enabled=True, split=(("on", percent), ("off", 100 - percent))
        )

    await fenced.change("staging", "checkout-v2", share(5), actor=BOT, action="flag_step", summary="5%")
    await clock.advance(31)  # a stalled past its lease
    assert await b.acquire("deployment:9")
    with caplog.at_level(logging.WARNING), pytest.raises(Fenced):
        await fenced.change("staging", "checkout-v2", share(25), actor=BOT, action="flag_step", summary="25%")
    record = s.flag_state("staging", "checkout-v2")
    assert (record.revision, record.state.split) == (1, (("on", 5.0), ("off", 95.0)))  # 25% never written
    assert [c.details["summary"] for c in s.flag_changes("staging", "checkout-v2")] == ["5%"]
    assert "refused to record set_flag for deployment:9" in caplog.text
    assert not a.holds("deployment:9")
