"""Feature flags' use cases on in-memory adapters over a real store file: changes (who may, freezes,
four eyes, the audit trail, the snapshot every evaluation reads), the kill switch, and a gradual rollout
through the gate and the runner, judged on per-variant metrics. No moto, no network."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.app.flags import FlagBook
from bot.config.load import parse_settings
from bot.domain import commands as cmds
from bot.domain.analysis import GroupMetrics
from bot.domain.errors import Forbidden, Refused
from bot.domain.events import FlagKilled
from bot.domain.flags import Condition
from bot.domain.model import Deployment
from tests.unit.app.test_engine_on_fakes import HeldTimer, InstantClock

HEALTHY = GroupMetrics(requests=1000.0, errors=1.0, latency_ms=80.0)
ACCESS = {
    "deploy": ["engineers"],
    "approve": ["release-managers"],
    "rollback": ["engineers", "oncall"],
    "flag": ["engineers", "release-managers"],
    "override_freeze": ["release-managers"],
}
CONFIG = {
    "alerts": {"oncall": False},
    "roles": {
        "engineers": {"groups": ["engineers"]},
        "release-managers": {"groups": ["release-managers"]},
        "oncall": {"groups": ["oncall"]},
    },
    "environments": {
        "staging": {
            "load_balancer": "lb-staging",
            "access": ACCESS,
            "analysis": {"interval_seconds": 30, "min_requests": 50},
            "flags": {"rollout_steps": [5, 25, 50, 100], "step_bake_seconds": 60},
        },
        "production": {
            "load_balancer": "lb-production",
            "access": {**ACCESS, "flag": ["release-managers"]},
            "approvals": {"required": 1, "roles": ["release-managers"]},
            "analysis": {"interval_seconds": 30, "min_requests": 50},
            "flags": {"approvals": 1, "approve_above_percent": 10, "step_bake_seconds": 60},
        },
    },
    "services": {"web": {}},
    "flags": {
        "checkout-v2": {"type": "boolean", "services": ["web"]},
        "search-ranking": {"type": "string", "variants": {"control": "a", "treatment": "b"}, "default_variant": "control"},
    },
    "segments": {"beta": {"rules": [{"attribute": "plan", "op": "in", "values": ["beta"]}]}},
}  # fmt: skip
ENG, RM = frozenset({"engineers"}), frozenset({"release-managers"})


@pytest.fixture
async def world(tmp_path: Path):
    settings = parse_settings(CONFIG)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    metrics = MemoryMetrics(HEALTHY)
    engine = Engine(settings, store, MemoryPlatform(), metrics, InstantClock(), timer=HeldTimer())
    await engine.flag_book.load()
    yield engine, metrics
    await engine.shutdown()
    store.close()


def flag(text: str) -> cmds.FlagChange:
    words = text.split()
    key, env = words[0], words[-1]
    rest = words[1:-2]
    if rest[0].endswith("%"):
        return cmds.FlagChange(key, env, "percent", percent=float(rest[0][:-1]))
    return cmds.FlagChange(key, env, rest[0])


def on_share(engine: Engine, env: str, key: str = "checkout-v2", n: int = 2000) -> tuple[float, set[str]]:
    snap = engine.flag_book.snapshot(env)
    assert snap is not None
    on = {f"user-{i}" for i in range(n) if snap.evaluate(key, {"targetingKey": f"user-{i}"}).value is True}
    return len(on) / n, on


async def until(engine: Engine, deployment_id: int, *states: str, within: float = 10.0) -> Deployment:
    deadline = asyncio.get_running_loop().time() + within
    while asyncio.get_running_loop().time() < deadline:
        d = await engine.store.get(deployment_id)
        if d.state.value in states:
            return d
        await asyncio.sleep(0.01)
    raise AssertionError(f"#{deployment_id} is {d.state.value}, not {states}: {d.outcome}")


async def test_a_percentage_is_served_at_once_stable_monotonic_and_on_the_record(world):
    engine, _ = world
    answer = await engine.flags.change(flag("checkout-v2 25% in staging"), "alice", ENG)
    assert answer.changed and "25%" in answer.summary and "off" in answer.before
    share, at_25 = on_share(engine, "staging")
    assert 0.22 <= share <= 0.28
    assert on_share(engine, "staging")[1] == at_25  # the same answer twice
    await engine.flags.change(flag("checkout-v2 50% in staging"), "alice", ENG)
    share50, at_50 = on_share(engine, "staging")
    assert 0.47 <= share50 <= 0.53 and at_25 <= at_50  # everyone in at 25% is still in at 50%
    assert on_share(engine, "production")[0] == 0  # another environment is untouched
    changes = await engine.store.flag_changes("staging", "checkout-v2")
    assert [e.actor for e in changes] == ["alice", "alice"]
    assert changes[0].details["revision"] == 2 and changes[0].details["before"]["split"][0] == ["on", 25.0]
    # a fresh book (a restart) reads the same state back from the store
    again = FlagBook(engine.settings, engine.store)
    await again.load()
    assert again.snapshot("staging").etag == engine.flag_book.snapshot("staging").etag  # type: ignore[union-attr]


async def test_targeting_rules_and_segments_and_an_ab_split(world):
    engine, _ = world
    region = cmds.FlagChange(
        "checkout-v2", "staging", "target", conditions=(Condition("region", "in", ("eu-west-1",)),)
    )
    await engine.flags.change(region, "alice", ENG)
    snap = engine.flag_book.snapshot("staging")
    assert snap is not None
    eu = snap.evaluate("checkout-v2", {"targetingKey": "u1", "region": "eu-west-1"})
    us = snap.evaluate("checkout-v2", {"targetingKey": "u1", "region": "us-east-1"})
    assert (eu.value, eu.reason, us.value, us.reason) == (True, "TARGETING_MATCH", False, "DEFAULT")
    with pytest.raises(Refused, match="no segment 'bta'.*beta"):
        await engine.flags.change(
            cmds.FlagChange("checkout-v2", "staging", "target", segment="bta"), "alice", ENG
        )
    split = cmds.FlagChange(
        "search-ranking", "staging", "variants", weights=(("control", 50.0), ("treatment", 50.0))
    )
    await engine.flags.change(split, "alice", ENG)
    snap = engine.flag_book.snapshot("staging")
    assert snap is not None
    got = Counter(snap.evaluate("search-ranking", {"targetingKey": f"k{i}"}).variant for i in range(2000))
    assert abs(got["control"] - 1000) <= 60 and abs(got["treatment"] - 1000) <= 60
    with pytest.raises(Refused, match="no variant 'blue'"):
        bad = cmds.FlagChange(
            "search-ranking", "staging", "variants", weights=(("blue", 50.0), ("control", 50.0))
        )
        await engine.flags.change(bad, "alice", ENG)


async def test_who_may_change_and_kill_a_production_flag(world):
    engine, _ = world
    with pytest.raises(Forbidden):
        await engine.flags.change(flag("checkout-v2 5% in production"), "dave", frozenset())
    with pytest.raises(Forbidden):
        await engine.flags.change(flag("checkout-v2 kill in production"), "dave", frozenset())
    with pytest.raises(Forbidden):  # engineers may not change production flags here (flag: release-managers)
        await engine.flags.change(flag("checkout-v2 5% in production"), "erin", ENG)
    refusals = [e for e in await engine.store.events() if e.action == "refused"]
    assert {e.actor for e in refusals} == {"dave", "erin"}
    assert on_share(engine, "production")[0] == 0
    # the kill switch falls back to rollback's roles (kill_flag is not listed): engineers may
    await engine.flags.change(flag("checkout-v2 kill in production"), "erin", ENG)


async def test_a_change_above_the_threshold_waits_for_four_eyes(world):
    engine, _ = world
    small = await engine.flags.change(flag("checkout-v2 5% in production"), "rita", RM)
    assert small.deployment is None and 0.03 <= on_share(engine, "production")[0] <= 0.07
    big = await engine.flags.change(flag("checkout-v2 50% in production"), "rita", RM)
    assert big.needs_approval and big.deployment is not None
    d = await until(engine, big.deployment.id, "awaiting_approval")
    assert on_share(engine, "production")[0] < 0.1  # nothing served until approved
    with pytest.raises(Refused, match="someone else"):
        await engine.approve(d.id, "rita", RM)
    await engine.approve(d.id, "sam", RM)
    done = await until(engine, d.id, "succeeded")
    assert 0.47 <= on_share(engine, "production")[0] <= 0.53, done.outcome
    assert "50%" in (done.outcome or "")


async def test_a_freeze_refuses_a_change_but_never_the_kill_switch(world):
    engine, _ = world
    await engine.freeze("staging", "2100-01-01 00:00", "holiday", "rita")
    with pytest.raises(Refused, match="holiday"):
        await engine.flags.change(flag("checkout-v2 25% in staging"), "alice", ENG)
    killed = await engine.flags.change(flag("checkout-v2 kill in staging"), "alice", ENG)
    assert killed.summary.startswith("killed")


async def test_a_healthy_rollout_walks_every_step_to_everyone(world):
    engine, metrics = world
    answer = await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert answer.deployment is not None
    done = await until(engine, answer.deployment.id, "succeeded", "rolled_back", "failed", "paused")
    assert done.state.value == "succeeded", done.outcome
    steps = [
        e.details.get("summary") for e in reversed(await engine.store.flag_changes("staging", "checkout-v2"))
    ]
    assert steps == [f"rollout: on for {p}%" for p in (5, 25, 50, 100)] + ["rollout: on for everyone"]
    snap = engine.flag_book.snapshot("staging")
    assert snap is not None and snap.evaluate("checkout-v2", {}).reason == "STATIC"  # no split left
    assert metrics.calls.count("flag_metrics") >= 8  # two measurements (60 s / 30 s) at each step


async def test_a_failing_variant_is_turned_off_at_the_first_step(world):
    engine, metrics = world
    metrics.set_variant("checkout-v2", "on", GroupMetrics(requests=500.0, errors=100.0, latency_ms=90.0))
    answer = await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert answer.deployment is not None
    done = await until(engine, answer.deployment.id, "rolled_back", "failed")
    assert done.state.value == "rolled_back" and "error rate" in (done.outcome or "")
    assert on_share(engine, "staging")[0] == 0
    summaries = [e.details.get("summary") for e in await engine.store.flag_changes("staging", "checkout-v2")]
    assert summaries[0].startswith("rollout rolled back") and "rollout: on for 25%" not in summaries


async def test_no_data_pauses_the_rollout_and_the_kill_switch_ends_it(world):
    engine, metrics = world
    metrics.set_variant("checkout-v2", "on", GroupMetrics())  # nobody reports the on variant: no data
    answer = await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert answer.deployment is not None
    paused = await until(engine, answer.deployment.id, "paused")
    assert 0.03 <= on_share(engine, "staging")[0] <= 0.07  # it waits at 5%
    killed = await engine.flags.change(flag("checkout-v2 kill in staging"), "bob", frozenset({"oncall"}))
    assert on_share(engine, "staging")[0] == 0  # off before the answer returns
    assert killed.stopped is not None and killed.stopped.id == paused.id
    done = await until(engine, paused.id, "rolled_back", "failed")
    assert done.state.value == "rolled_back", done.outcome
    outbox = [e.event for e in await engine.store.outbox_after("test", 500)]
    kills = [e for e in outbox if isinstance(e, FlagKilled)]
    assert len(kills) == 1 and kills[0].rollout == paused.id and kills[0].by == "bob"
    state = (await engine.store.flag_state("staging", "checkout-v2")).state
    assert state.killed and not state.enabled


async def test_a_killed_flag_is_never_turned_back_on_by_a_rollout_step(world):
    engine, _ = world
    await engine.flags.change(flag("checkout-v2 kill in staging"), "bob", ENG)
    answer = await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert answer.deployment is not None
    done = await until(engine, answer.deployment.id, "failed", "rolled_back")
    assert "killed" in (done.outcome or "") and on_share(engine, "staging")[0] == 0


async def test_one_rollout_per_flag_and_environment_and_changes_wait_for_it(world):
    engine, metrics = world
    metrics.set_variant("checkout-v2", "on", GroupMetrics())  # it pauses at its first step
    first = await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert first.deployment is not None
    await until(engine, first.deployment.id, "paused")
    with pytest.raises(Refused, match="one change of a flag at a time"):
        await engine.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "bob", ENG)
    with pytest.raises(Refused, match="kill"):
        await engine.flags.change(flag("checkout-v2 on in staging"), "bob", ENG)
    # another flag is not held up
    await engine.flags.change(cmds.FlagChange("search-ranking", "staging", "on"), "bob", ENG)
    off = await engine.flags.change(flag("checkout-v2 off in staging"), "bob", ENG)  # off stops it
    assert off.stopped is not None
    await until(engine, first.deployment.id, "rolled_back", "failed")


async def test_concurrent_changes_are_serialised_and_each_recorded(world):
    engine, _ = world
    changes = [flag(f"checkout-v2 {p}% in staging") for p in (10, 20, 30, 40, 50)]
    await asyncio.gather(*(engine.flags.change(c, f"user{i}", ENG) for i, c in enumerate(changes)))
    record = await engine.store.flag_state("staging", "checkout-v2")
    assert record.revision == 5
    audited = await engine.store.flag_changes("staging", "checkout-v2")
    assert sorted(e.details["revision"] for e in audited) == [1, 2, 3, 4, 5]
    # the served state is the stored one, whichever change came last
    snap = engine.flag_book.snapshot("staging")
    assert snap is not None and snap.states["checkout-v2"] == record.state


async def test_a_dry_run_changes_nothing_and_says_what_it_would_need(world):
    engine, _ = world
    dry = await engine.flags.change(
        cmds.FlagChange("checkout-v2", "production", "percent", percent=50, dry_run=True), "rita", RM
    )
    assert dry.dry_run and any("approval" in n for n in dry.notes)
    assert (await engine.store.flag_state("production", "checkout-v2")).revision == 0


async def test_a_change_waiting_for_approval_holds_the_flag_until_it_is_decided(world):
    engine, _ = world
    big = await engine.flags.change(flag("checkout-v2 50% in production"), "rita", RM)
    assert big.deployment is not None
    await until(engine, big.deployment.id, "awaiting_approval")
    with pytest.raises(Refused, match=r"Change #\d+ of checkout-v2 in production is awaiting approval"):
        await engine.flags.change(flag("checkout-v2 5% in production"), "sam", RM)
    killed = await engine.flags.change(flag("checkout-v2 kill in production"), "carl", frozenset({"oncall"}))
    assert killed.stopped is not None and killed.stopped.state.value == "cancelled"
    assert on_share(engine, "production")[0] == 0


async def test_an_approved_change_of_a_flag_changed_since_is_not_applied(world):
    engine, _ = world
    big = await engine.flags.change(flag("checkout-v2 50% in production"), "rita", RM)
    assert big.deployment is not None
    await until(engine, big.deployment.id, "awaiting_approval")
    # another process (a replica, an older bot) changes the flag meanwhile, bypassing this one's lock
    record = await engine.store.flag_state("production", "checkout-v2")
    from bot.domain.flags import at_percent

    five = at_percent(engine.settings.flags["checkout-v2"], record.state, 5)
    await engine.store.set_flag("production", "checkout-v2", five, expected_revision=0, actor="sam",
                                action="flag_percent", details={})  # fmt: skip
    await engine.approve(big.deployment.id, "tom", RM)
    done = await until(engine, big.deployment.id, "failed", "rolled_back", "succeeded")
    assert done.state.value != "succeeded" and "changed meanwhile" in (done.outcome or ""), done.outcome
    assert (await engine.store.flag_state("production", "checkout-v2")).state == five  # sam's stands


class HeldFlagReads(MemoryMetrics):
    """MemoryMetrics whose flag reads, from read number `at` on, wait for `held` (never set here: the host
    dies there); `reached` says one is waiting."""

    def __init__(self, default: GroupMetrics, at: int):
        super().__init__(default)
        self.at, self.held, self.reached = at, asyncio.Event(), asyncio.Event()

    async def flag_metrics(self, *args, **kwargs):  # type: ignore[override]
        if len(self.flag_reads) + 1 >= self.at:
            self.reached.set()
            await self.held.wait()
        return await super().flag_metrics(*args, **kwargs)


@pytest.mark.parametrize("dies_at_read", [1, 2])  # before the step's first measurement, and after it
async def test_a_bake_resumed_after_a_restart_judges_no_window_from_before_it(tmp_path: Path, dies_at_read):
    """Killed mid-bake, the bot was not there for the traffic of the time it was down: a window reaching
    back before the restart would judge it (a CI flake paused a resumed rollout for "no requests"; this
    passes, so that was not its cause). The resumed bake waits a whole window again before it reads; it
    fails if the step's "settled" mark is saved before the step ends."""
    settings, clock = parse_settings(CONFIG), InstantClock()
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    before = HeldFlagReads(HEALTHY, at=dies_at_read)  # the host dies in that read of the first step
    first = Engine(settings, store, MemoryPlatform(), before, clock, timer=HeldTimer())
    await first.flag_book.load()
    answer = await first.flags.change(cmds.FlagChange("checkout-v2", "staging", "rollout"), "alice", ENG)
    assert answer.deployment is not None
    await asyncio.wait_for(before.reached.wait(), 10)
    await first.shutdown()

    after = MemoryMetrics(HEALTHY)
    second = Engine(settings, store, MemoryPlatform(), after, clock, timer=HeldTimer())
    await second.flag_book.load()
    resumed_at = clock.now()
    await second.resume_in_flight()
    try:
        done = await until(second, answer.deployment.id, "succeeded", "rolled_back", "failed", "paused")
        assert done.state.value == "succeeded", done.outcome
        first_read = after.flag_reads[0]
        assert first_read.start.timestamp() >= resumed_at, first_read.start.timestamp() - resumed_at
    finally:
        await second.shutdown()
        store.close()
