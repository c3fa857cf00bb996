"""Verification after success, feedback and notes on the fakes: the engine over a real store file, the
in-memory Platform and Metrics, and a ManualClock moved by the test. No moto, no network. Each test
asserts what the audit trail and the outbox show."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aftercare import AsyncAftercare
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.app.verification import next_due
from bot.clock import ManualClock
from bot.config.load import parse_settings
from bot.config.tables import ConfigError
from bot.domain import commands as cmds
from bot.domain.analysis import GroupMetrics
from bot.domain.errors import Forbidden, NotFound, Refused
from bot.domain.model import Deployment
from bot.domain.verification import FeedbackAsked, VerificationRegressed, Verified
from tests.unit.app.quiet import quiet
from tests.unit.app.test_engine_on_fakes import HeldTimer

INTERVAL = 30.0
CONFIG = {
    "bot": {"default_environment": "staging"},
    "alerts": {"oncall": False},
    "roles": {"engineers": {"users": ["alice", "bob", "carol"]}},
    "environments": {
        "staging": {
            "load_balancer": "lb-staging",
            "strategy": "canary",
            "canary_steps": [50, 100],
            "step_bake_seconds": 30,
            "keep_warm_seconds": 0,
            "poll_seconds": 5,
            "verify_seconds": 240,
            "analysis": {"interval_seconds": INTERVAL, "min_requests": 50},
            "access": {"deploy": ["engineers"], "rollback": ["engineers"]},
        }
    },
    "services": {"web": {"ecs_service": "web-{slot}"}},
}
BAD = GroupMetrics(requests=1000, errors=300, latency_ms=80)
ROLES = frozenset({"engineers"})


class World:
    def __init__(self, path: Path, config: dict | None = None):
        self.settings = parse_settings(config or CONFIG)
        self.clock = ManualClock()
        self.path = path
        self.platform, self.metrics = MemoryPlatform(rollout_polls=1), MemoryMetrics()
        self.target = self.settings.target("web", "staging")
        self.platform.add_service(self.target, "web:v1")
        self.open()

    def open(self) -> None:
        self.store = AsyncStore(Store(self.path, self.clock))
        self.engine = Engine(
            self.settings,
            self.store,
            self.platform,
            self.metrics,
            self.clock,
            timer=HeldTimer(),
            aftercare=AsyncAftercare(self.store),
        )

    async def close(self) -> None:
        await self.engine.shutdown()
        self.store.close()

    async def deploy(self, version: str, user: str = "alice") -> Deployment:
        """Request it and move time on until it succeeds (its verification starts then)."""
        command = cmds.parse(
            "/deploy", f"web {version} to staging", cmds.Vocabulary(("web",), ("staging",), "staging")
        )
        d = await self.engine.request(command, user, roles=ROLES)  # type: ignore[arg-type]
        assert isinstance(d, Deployment)
        await self.run_until(lambda: self._state(d.id, "succeeded"), f"#{d.id} to succeed")
        return await self.store.get(d.id)

    async def _state(self, deployment_id: int, state: str) -> bool:
        d = await self.store.get(deployment_id)
        if d.state.terminal and d.state.value != state:
            raise AssertionError(f"#{deployment_id} ended {d.state.value}: {d.outcome}")
        return d.state.value == state

    async def run_until(self, probe, what: str, step: float = 15.0, limit: int = 150) -> None:
        """Advance the clock `step` at a time (letting every task run between) until `probe()`."""
        for _ in range(limit):
            if await probe():
                return
            await self.settle()
            await self.clock.advance(step)
        raise AssertionError(f"waited {limit * step:.0f}s of clock time for {what}")

    async def settle(self) -> None:
        await quiet(self.store)  # the tasks woken run to their next wait

    async def actions(self, deployment_id: int) -> list[str]:
        return [e.action for e in await self.store.events(deployment_id)]

    async def audit(self, deployment_id: int, action: str) -> list[dict]:
        return [e.details for e in await self.store.events(deployment_id) if e.action == action]

    async def outbox(self, deployment_id: int) -> list:
        return [
            e.event for e in await self.store.outbox_after("tests", 1000) if e.deployment_id == deployment_id
        ]


@pytest.fixture
async def world(tmp_path: Path):
    w = World(tmp_path / "deploybot.db")
    yield w
    await w.close()


async def test_a_regression_two_minutes_in_raises_the_alert_within_one_interval(world):
    d = await world.deploy("v2")
    (started,) = await world.audit(d.id, "verification_started")
    t0 = world.clock.now()
    assert started["until"] == pytest.approx(t0 + 240, abs=15.0) and started["slot"] == d.context["slot"]
    assert d.context["verification"]["until"] == started["until"]  # what the message shows

    failing_from: list[float] = []

    async def failing_from_two_minutes() -> bool:
        if world.clock.now() >= t0 + 120 and not failing_from:
            world.metrics.set(d.context["slot"], BAD)
            failing_from.append(world.clock.now())
        return bool(await world.audit(d.id, "verify_regressed"))

    await world.run_until(failing_from_two_minutes, "the regression")
    (regressed,) = await world.audit(d.id, "verify_regressed")
    assert 0 < regressed["measurement_at"] - failing_from[0] <= INTERVAL  # within one analysis interval
    due = regressed["measurement_due"]  # on the schedule's grid: measuring takes time, it never drifts
    steps = (due - (started["until"] - 240)) / INTERVAL
    assert regressed["measurement_at"] >= due and steps == pytest.approx(round(steps), abs=1e-6)
    assert "error rate" in regressed["reason"]
    verdicts = [m["verdict"] for m in regressed["measurements"]]
    assert verdicts[-1] == "fail" and set(verdicts[:-1]) == {"pass"}
    said = await world.outbox(d.id)
    (alert,) = [e for e in said if isinstance(e, VerificationRegressed)]
    assert alert.level() == "critical" and alert.rollback == 0  # a person decides: no automatic rollback
    assert isinstance(said[-1], FeedbackAsked) and said[-1].requester == "alice"
    assert (await world.store.get(d.id)).state.value == "succeeded"  # an event, not a new state

    # Roll back now: /rollback's own path; someone without the rollback role cannot
    with pytest.raises(Forbidden):
        await world.engine.aftercare.rollback_now(d.id, "dave", frozenset())
    back = await world.engine.aftercare.rollback_now(d.id, "carol", ROLES)
    again = await world.engine.aftercare.rollback_now(d.id, "bob", ROLES)  # a second click, another person
    assert isinstance(back, Deployment) and back.kind == "rollback" and again.id == back.id
    await world.run_until(lambda: world._state(back.id, "succeeded"), "the rollback")
    assert world.platform.image_of(world.target, (await world.store.get(back.id)).context["slot"]) == "web:v1"


async def test_a_quiet_period_is_verified_then_the_requester_is_asked_once(world):
    d = await world.deploy("v2")
    await world.run_until(lambda: world.audit(d.id, "verified"), "verified")
    (verified,) = await world.audit(d.id, "verified")
    assert verified["passed"] == verified["total"] == len(verified["measurements"]) == 8  # 240 s / 30 s
    said = await world.outbox(d.id)
    kinds = [type(e) for e in said]
    assert kinds.index(Verified) < kinds.index(FeedbackAsked) and kinds.count(FeedbackAsked) == 1

    book = world.engine.aftercare
    with pytest.raises(Refused, match="for <@alice>"):
        await book.answer(d.id, "bob", "smooth")  # only the requester answers the question
    won, first = await book.answer(d.id, "alice", "had_issues")
    lost, second = await book.answer(d.id, "alice", "smooth")  # a double click / a retry
    assert (won, lost) == (True, False) and second.feedback == "had_issues"
    assert await world.audit(d.id, "feedback") == [{"answer": "had_issues"}]
    assert await book.note(d.id, "alice", "  latency *spike* <!channel>  ", key="V1")
    assert not await book.note(d.id, "alice", "latency spike", key="V1")  # the same modal again
    assert await world.audit(d.id, "note") == [{"text": "latency *spike* <!channel>"}]
    with pytest.raises(NotFound):
        await book.note(999, "alice", "hello")
    with pytest.raises(Refused):
        await book.note(d.id, "alice", "   ")
    assert await book.summaries([d.id]) == {d.id: ("verified", 1, "had_issues")}


async def test_verification_survives_a_restart_and_a_newer_deploy_ends_it(tmp_path):
    long = {
        **CONFIG,
        "environments": {"staging": {**CONFIG["environments"]["staging"], "verify_seconds": 900}},
    }
    world = World(tmp_path / "deploybot.db", long)
    try:
        await _restart_then_supersede(world)
    finally:
        await world.close()


async def _restart_then_supersede(world: World) -> None:
    d = await world.deploy("v2")
    await world.run_until(lambda: _measured(world, d.id, 3), "three measurements")
    await world.close()  # the bot stops mid-verification
    await world.clock.advance(60)
    world.open()
    await world.engine.resume_in_flight()
    await world.run_until(lambda: _measured(world, d.id, 5), "measurements after the restart")
    assert not await world.audit(d.id, "verified")

    newer = await world.deploy("v3")  # the same service and environment: the older verification ends
    assert await world.audit(d.id, "verify_superseded") == [{"by": newer.id}]
    count = len((await world.engine.verifications.book.watch(d.id)).measurements)
    await world.run_until(lambda: _measured(world, newer.id, 3), "the newer one measured")
    assert len((await world.engine.verifications.book.watch(d.id)).measurements) == count  # no more
    assert "feedback_asked" in await world.actions(d.id)


async def _measured(world: World, deployment_id: int, n: int) -> bool:
    w = await world.engine.verifications.book.watch(deployment_id)
    return w is not None and len(w.measurements) >= n


def test_verify_settings_have_defaults_per_environment_and_are_checked():
    base = {k: v for k, v in CONFIG["environments"]["staging"].items() if k != "verify_seconds"}
    config = {**CONFIG, "environments": {"staging": base, "production": {**base, "load_balancer": "lb"}}}
    settings = parse_settings(config)
    assert settings.environments["production"].verify_seconds == 900
    assert settings.environments["staging"].verify_seconds == 0
    assert settings.environments["production"].rollback_during_verify is False
    bad = {**config, "environments": {"staging": {**base, "rollback_during_verify": True}}}
    with pytest.raises(ConfigError, match="rollback_during_verify"):
        parse_settings(bad)
    with pytest.raises(ConfigError, match="verify_seconds"):
        parse_settings({**config, "environments": {"staging": {**base, "verify_seconds": -1}}})


def _automatic() -> dict:
    staging = {**CONFIG["environments"]["staging"], "rollback_during_verify": True, "keep_warm_seconds": 60}
    return {**CONFIG, "environments": {"staging": staging}}


async def test_rollback_during_verify_keeps_the_old_slot_warm_and_rolls_back_by_itself(tmp_path):
    world = World(tmp_path / "deploybot.db", _automatic())
    try:
        steps = [s.kind for s in world.engine.intake.plan("web", "staging", None)[1]]
        assert "scale_down" not in steps  # the verification keeps it warm instead
        d = await world.deploy("v2")
        stable = d.context["stable_slot"]
        assert world.platform.slot(world.target, stable).desired > 0  # still warm after success
        world.metrics.set(d.context["slot"], BAD)
        await world.run_until(lambda: world.audit(d.id, "automatic_rollback"), "the automatic rollback")
        (rolled,) = await world.audit(d.id, "automatic_rollback")
        back = await world.store.get(rolled["rollback"])
        assert back.kind == "rollback" and back.requested_by == "deploybot"
        (alert,) = [e for e in await world.outbox(d.id) if isinstance(e, VerificationRegressed)]
        assert alert.rollback == back.id  # the alert says the bot rolls back
        await world.run_until(lambda: world._state(back.id, "succeeded"), "the rollback")
        assert world.platform.service(world.target).weights[stable] == 100
        assert world.platform.image_of(world.target, stable) == "web:v1"
    finally:
        await world.close()


async def test_a_quiet_verification_scales_the_warm_old_slot_down_when_it_ends(tmp_path):
    world = World(tmp_path / "deploybot.db", _automatic())
    try:
        d = await world.deploy("v2")
        stable = d.context["stable_slot"]
        assert world.platform.slot(world.target, stable).desired > 0
        await world.run_until(lambda: world.audit(d.id, "scale_down"), "the old slot scaled down")
        assert await world.audit(d.id, "verified")
        assert world.platform.slot(world.target, stable).desired == 0
        assert world.platform.service(world.target).weights[stable] == 0
    finally:
        await world.close()


async def test_targets_failing_health_checks_during_verification_are_a_regression(world):
    d = await world.deploy("v2")
    world.platform.set_health(world.target, d.context["slot"], "unhealthy", "Target.FailedHealthChecks")
    await world.run_until(lambda: world.audit(d.id, "verify_regressed"), "the regression")
    (regressed,) = await world.audit(d.id, "verify_regressed")
    assert "unhealthy" in regressed["reason"] and "FailedHealthChecks" in regressed["reason"]


async def test_a_success_whose_verification_never_started_is_verified_after_a_restart(world):
    hooks = world.engine.runner.lifecycle
    world.engine.runner.lifecycle = None  # the crash came between the success and its verification
    d = await world.deploy("v2")
    assert await world.engine.verifications.book.watch(d.id) is None
    world.engine.runner.lifecycle = hooks
    await world.close()
    world.open()
    await world.engine.resume_in_flight()
    (started,) = await world.audit(d.id, "verification_started")
    assert started["until"] <= world.clock.now() + 240  # counted from the success, not the restart
    await world.run_until(lambda: world.audit(d.id, "verified"), "verified after the restart")


def test_measurements_fall_due_on_a_fixed_grid_that_ends_at_the_deadline():
    assert next_due(1000.0, 30.0, 1240.0, now=1000.0) == 1030.0
    assert next_due(1000.0, 30.0, 1240.0, now=1030.0) == 1060.0  # just measured at 1030: the next point
    assert next_due(1000.0, 30.0, 1240.0, now=1031.7) == 1060.0  # a slow measurement does not shift it
    assert next_due(1000.0, 30.0, 1240.0, now=1125.0) == 1150.0  # a restart skips what it missed
    assert next_due(1000.0, 30.0, 1240.0, now=1229.0) == 1240.0  # the last one at the deadline
    assert next_due(1000.0, 30.0, 1240.0, now=1240.0) is None
    assert next_due(1000.0, 30.0, 1240.0, now=990.0) == 1030.0  # a clock before the start: the first
