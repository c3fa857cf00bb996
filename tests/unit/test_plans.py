"""The rolling, blue-green and canary plans (and their rollback plans) against the in-memory Platform and
Metrics: no moto, no network, an instant clock. Each test asserts the path of the world (which slot runs
what, the weights over time, which slot is live), not the steps' internals."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.app.plans import NeedsHuman, Step, StepContext, StepFailed, plan, rollback_plan, step_from_dict
from bot.app.ports import PlatformError
from bot.clock import Clock
from bot.config.model import DeploymentConfiguration, Environment, Service, Target
from bot.domain.analysis import AnalysisConfig, GroupMetrics


class InstantClock(Clock):
    """Virtual time that passes only when someone sleeps, at once."""

    def __init__(self, start: float = 1_767_225_600.0):
        self.t = start

    def now(self) -> float:
        return self.t

    async def sleep(self, seconds: float) -> None:
        self.t += max(0.0, seconds)
        await asyncio.sleep(0)


def make_target(strategy: str, *, slots: bool = True, **env: Any) -> Target:
    service = Service("web", "web", "web", ecs_service="web-{slot}" if slots else "web")
    env.setdefault("analysis", AnalysisConfig(interval_seconds=30.0, min_requests=50))
    environment = Environment("production", "production", "deploybot-production", **env)
    return Target(
        service=service,
        env=environment,
        strategy=strategy,
        bake_seconds=60.0,
        rollout_timeout_seconds=120.0,
        poll_seconds=5.0,
        deployment_configuration=DeploymentConfiguration(),
        canary_steps=environment.canary_steps,
        step_bake_seconds=60.0,
        keep_warm_seconds=30.0,
    )


class World:
    """A target on the fakes, and a runner doing what the engine does with a plan: each step in turn
    (its to_dict/step_from_dict round trip included), the rollback plan after a failed step."""

    def __init__(self, target: Target, **service: Any):
        self.target = target
        self.platform = MemoryPlatform(rollout_polls=2)
        self.metrics = MemoryMetrics()
        self.platform.add_service(target, "web:v1", **service)
        self.clock = InstantClock()
        self.lines: list[str] = []
        self.records: list[tuple[str, dict[str, Any]]] = []
        self.data: dict[str, Any] = {}

    def context(self, version: str | None) -> StepContext:
        async def line(text: str) -> None:
            self.lines.append(text)

        async def nothing() -> None:
            return None

        async def record(action: str, details: dict[str, Any]) -> None:
            self.records.append((action, details))

        return StepContext(
            deployment_id=1,
            version=version,
            target=self.target,
            platform=self.platform,
            metrics=self.metrics,
            clock=self.clock,
            data=self.data,
            report=line,
            progress=line,
            checkpoint=nothing,
            save=nothing,
            record=record,
        )

    async def run(self, steps: list[Step], version: str | None = "v2") -> None:
        ctx = self.context(version)
        for i, step in enumerate(steps):
            ctx.index = i
            await step_from_dict(step.to_dict()).run(ctx)

    async def deploy(self, version: str = "v2") -> Exception | None:
        """The plan; on a failed step (StepFailed or PlatformError) the rollback plan. Returns the failure."""
        try:
            await self.run(plan(self.target.strategy, self.target), version)
        except (StepFailed, PlatformError) as exc:
            await self.run(rollback_plan(self.target.strategy, self.target), version)
            return exc
        return None

    def image(self, slot: str) -> str | None:
        return self.platform.image_of(self.target, slot)

    def desired(self, slot: str) -> int:
        return self.platform.slot(self.target, slot).desired

    def live(self) -> str:
        weights = self.platform.service(self.target).weights
        return max(weights, key=lambda s: weights[s])


def canary_weights(history: list[dict[str, int]]) -> list[int]:
    return [w["green"] for w in history]


# --------------------------------------------------------------------------------------------- rolling


async def test_rolling_updates_the_one_slot_in_place_and_keeps_the_previous_revision():
    w = World(make_target("rolling", slots=False))
    assert await w.deploy() is None
    assert w.image("main") == "web:v2"
    assert w.data["previous_version"] == "v1" and w.data["previous_task_definition"] == "web-production:1"
    updates = [c.what for c in w.platform.history]
    assert updates == [{"slot": "main", "revision": "web-production:2", "count": None}]


async def test_a_failed_rolling_rollout_puts_the_previous_revision_back():
    w = World(make_target("rolling", slots=False))
    w.platform.fail_rollouts(w.target, "web:v2", "tasks failed to start")
    failure = await w.deploy()
    assert isinstance(failure, StepFailed)
    assert str(failure).startswith("ECS rollout failed: tasks failed to start")
    assert "unhealthy in web-production-main" in str(failure)
    assert [c.what["revision"] for c in w.platform.history] == ["web-production:2", "web-production:1"]
    assert w.image("main") == "web:v1"


async def test_a_rolling_bake_fails_when_targets_go_unhealthy():
    w = World(make_target("rolling", slots=False))
    await w.run(plan("rolling", w.target)[:-1])  # up to the bake
    w.platform.set_health(w.target, "main", "unhealthy", "Target.Timeout")
    with pytest.raises(StepFailed, match=r"during bake: 2 of 2 targets unhealthy .*Target\.Timeout"):
        await w.run(plan("rolling", w.target)[-1:])


# ------------------------------------------------------------------------------------------ blue-green


async def test_blue_green_switches_all_traffic_in_one_move_then_scales_the_old_slot_down():
    w = World(make_target("blue-green"))
    assert await w.deploy() is None
    assert w.platform.weight_history == [{"blue": 0, "green": 100}]
    assert w.live() == "green" and w.image("green") == "web:v2"
    assert (w.desired("green"), w.desired("blue")) == (2, 0)
    assert w.metrics.calls.count("slot_metrics") == 2  # the 60 s bake, measured every 30 s


async def test_blue_green_reuses_a_warm_idle_slot_that_already_runs_the_version():
    w = World(make_target("blue-green"), idle_image="web:v2")
    assert await w.deploy() is None
    assert "register_revision" not in w.platform.calls
    assert w.data["task_definition"] == "web-production:2" and w.image("green") == "web:v2"


async def test_unhealthy_new_targets_stop_blue_green_before_any_traffic_moves():
    w = World(make_target("blue-green"))
    w.platform.set_health(w.target, "green", "unhealthy", "Target.FailedHealthChecks")
    failure = await w.deploy()
    assert isinstance(failure, StepFailed)
    assert "2 of 2 targets unhealthy in web-production-green (Target.FailedHealthChecks)" in str(failure)
    assert w.platform.weight_history == [{"green": 0, "blue": 100}]  # the rollback's one move: all stable
    assert w.live() == "blue" and (w.desired("blue"), w.desired("green")) == (2, 0)


async def test_traffic_split_before_the_deployment_is_refused_and_nothing_changes():
    w = World(make_target("blue-green"))
    w.platform.service(w.target).weights.update(blue=90, green=10)
    with pytest.raises(StepFailed, match=r"traffic is split \(blue 90%, green 10%\)"):
        await w.run(plan("blue-green", w.target))
    assert w.platform.history == []


# ---------------------------------------------------------------------------------------------- canary


async def test_a_canary_walks_the_weights_with_one_measurement_each_and_retires_the_old_slot():
    w = World(make_target("canary"))
    assert await w.deploy() is None
    assert canary_weights(w.platform.weight_history) == [5, 25, 50, 100]
    assert w.live() == "green" and (w.desired("green"), w.desired("blue")) == (2, 0)
    verdicts = [d["verdict"] for action, d in w.records if action == "measurement"]
    assert verdicts == ["pass"] * 8  # 60 s at each weight, every 30 s
    assert w.metrics.calls == ["slot_metrics"] * 8  # one metrics request per measurement, no alarms


async def test_bad_canary_metrics_roll_traffic_back_to_the_stable_slot_in_one_move():
    w = World(make_target("canary"))
    w.metrics.set("green", GroupMetrics(requests=1000.0, errors=200.0, latency_ms=80.0))
    failure = await w.deploy()
    assert isinstance(failure, StepFailed)
    assert str(failure).startswith("analysis failed at canary 5%: error rate 20.0% on the canary > 5.0%")
    assert canary_weights(w.platform.weight_history) == [5, 0]
    assert w.live() == "blue" and (w.desired("blue"), w.desired("green")) == (2, 0)


async def test_too_little_canary_traffic_asks_a_person_and_moves_nothing_further():
    w = World(make_target("canary"))
    w.metrics.set("green", GroupMetrics(requests=3.0, errors=0.0, latency_ms=80.0))
    with pytest.raises(NeedsHuman, match="analysis inconclusive at canary 5%: not enough traffic"):
        await w.run(plan("canary", w.target))
    assert canary_weights(w.platform.weight_history) == [5]


async def test_a_firing_alarm_fails_the_canary():
    w = World(make_target("canary", analysis=AnalysisConfig(alarms=("web-5xx",))))
    w.metrics.alarm("web-5xx", "ALARM", "5XX above 5")
    failure = await w.deploy()
    assert str(failure) == 'analysis failed at canary 5%: CloudWatch alarm "web-5xx" is in ALARM: 5XX above 5'
    assert w.live() == "blue"


async def test_metric_errors_in_a_row_fail_the_bake_and_the_canary_rolls_back():
    w = World(make_target("canary", analysis=AnalysisConfig(interval_seconds=10.0)))
    w.metrics.fail("slot_metrics", *[PlatformError("CLOUDWATCH GetMetricData", "Throttling")] * 5)
    failure = await w.deploy()
    assert [d["verdict"] for action, d in w.records if action == "measurement"] == ["error"] * 5
    assert str(failure) == "analysis failed at canary 5%: CLOUDWATCH GetMetricData failed: Throttling"
    assert canary_weights(w.platform.weight_history) == [5, 0] and w.live() == "blue"


async def test_a_refused_weight_shift_fails_the_canary_and_the_rollback_restores_the_stable_slot():
    w = World(make_target("canary"))
    w.platform.fail("set_weights", PlatformError("ELBv2 ModifyRule", "RuleNotFound: gone"))
    failure = await w.deploy()
    assert str(failure) == "ELBv2 ModifyRule failed: RuleNotFound: gone"
    assert w.platform.weight_history == [{"green": 0, "blue": 100}]  # only the rollback's move landed
    assert w.live() == "blue" and (w.desired("blue"), w.desired("green")) == (2, 0)


async def test_a_rollback_after_the_old_slot_was_scaled_down_scales_it_back_up_first():
    w = World(make_target("canary"))
    assert await w.deploy() is None
    assert w.desired("blue") == 0
    await w.run(rollback_plan("canary", w.target))
    assert w.live() == "blue" and w.image("blue") == "web:v1"
    assert (w.desired("blue"), w.desired("green")) == (2, 0)
    slot_updates = [c.what for c in w.platform.history if c.kind == "slot"]
    assert slot_updates[-2:] == [
        {"slot": "blue", "revision": None, "count": 2},
        {"slot": "green", "revision": None, "count": 0},
    ]


async def test_a_gradual_rollback_walks_traffic_back_with_analysis():
    w = World(make_target("canary"))
    assert await w.deploy() is None
    # What the engine runs for /rollback --gradual of this canary: v1 back into the idle (old) slot.
    w.data.clear()
    w.metrics.calls.clear()
    await w.run(plan("canary", w.target, gradual=True), "v1")
    assert canary_weights(w.platform.weight_history)[-4:] == [75, 50, 25, 0]  # blue takes 25, 50, 75, 100
    assert w.live() == "blue" and w.image("blue") == "web:v1"
    assert w.metrics.calls == ["slot_metrics"] * 8


async def test_every_step_can_run_twice_without_moving_the_world_further():
    w = World(make_target("canary"))
    steps = plan("canary", w.target)
    await w.run(steps)
    before = (dict(w.platform.service(w.target).weights), w.image("green"), w.desired("green"))
    revisions = len(w.platform.revisions)
    await w.run(steps)  # a resumed deployment re-runs its steps against the same persisted data
    assert (dict(w.platform.service(w.target).weights), w.image("green"), w.desired("green")) == before
    assert len(w.platform.revisions) == revisions
