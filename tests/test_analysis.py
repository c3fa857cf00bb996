"""Measuring a bake: the bake loop on a ManualClock over a scripted CloudWatch, and measurements through
the CloudWatch adapter against the sandbox's moto world (ALB traffic published by world.tick(); exactly
one GetMetricData call per measurement). Judging is tested in tests/unit/domain/test_analysis.py."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime, timedelta

import pytest

from bot.adapters.aws import Aws
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics, scope_of
from bot.adapters.platforms.ecs import alb_dimensions
from bot.app.measure import alarms_in_alarm, measure, run_analysis
from bot.app.ports import MetricScope
from bot.app.ports import PlatformError as CloudError
from bot.clock import ManualClock
from bot.config.model import AwsSettings
from bot.domain.analysis import Analysis, AnalysisConfig, GroupMetrics, Measurement, judge
from bot.sandbox.aws import DEFAULT_RPM, AwsWorld

CONFIG = AnalysisConfig()
AT = 1_767_225_660.0
HEALTHY = GroupMetrics(requests=100, errors=0, latency_ms=80)
STABLE = GroupMetrics(requests=1000, errors=1, latency_ms=80)


def g(requests=100, errors=0, latency_ms=80.0) -> GroupMetrics:
    return GroupMetrics(requests, errors, latency_ms)


def verdict(canary, stable=STABLE, alarms=(), config=CONFIG) -> Measurement:
    return judge(config, canary, stable, list(alarms), AT, "canary 25%")


# --- the bake loop, on a ManualClock and a scripted cloud --------------------------------------------------
class ScriptedCloud:
    """Stands in for Aws.call: answers GetMetricData from a script of per-call group metrics."""

    def __init__(self, script):
        self.script = list(script)
        self.calls: list[tuple[str, dict]] = []

    async def call(self, api, operation, role_arn=None, /, **params):
        self.calls.append((operation, params))
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        if isinstance(step, Exception):
            raise step
        results = []
        for q in params["MetricDataQueries"]:
            group = step[int(q["Id"][1 : q["Id"].index("_")])]
            value = {
                "requests": group.requests,
                "errors": group.errors,
                "latency": None if group.latency_ms is None else group.latency_ms / 1000,
            }[q["Id"].split("_", 1)[1]]
            values = [] if value is None else [value]
            results.append(
                {"Id": q["Id"], "Values": values, "Timestamps": [params["StartTime"]] * len(values)}
            )
        return {"MetricDataResults": results}


async def drive(clock: ManualClock, task: asyncio.Task, step: float = 5.0, limit: int = 1000):
    for _ in range(limit):
        for _ in range(10):
            await asyncio.sleep(0)
        if task.done():
            return await task
        await clock.advance(step)
    raise AssertionError("the run did not end")


def bake(cloud, clock, duration, config=CONFIG, **kw):
    """A bake through the CloudWatch adapter, whose boto3 calls `cloud` stands in for."""
    seen: list[Measurement] = []

    async def on_measurement(m: Measurement) -> None:
        seen.append(m)

    task = asyncio.create_task(
        run_analysis(
            CloudWatchMetrics(cloud),
            config,
            duration_seconds=duration,
            clock=clock,
            account=None,
            canary=MetricScope((("TargetGroup", "targetgroup/c/1"),)),
            stable=MetricScope((("TargetGroup", "targetgroup/s/2"),)),
            label="canary 10%",
            on_measurement=on_measurement,
            **kw,
        )
    )
    return task, seen


async def test_a_bake_measures_every_interval_and_succeeds():
    clock = ManualClock()
    start = clock.now()
    cloud = ScriptedCloud([[HEALTHY, STABLE]])
    task, seen = bake(cloud, clock, 90)
    run = await drive(clock, task)
    assert run.status == "successful"
    assert [m.at - start for m in seen] == [30, 60, 90]
    assert [op for op, _ in cloud.calls] == ["get_metric_data"] * 3  # one call per measurement
    query = cloud.calls[0][1]
    assert len(query["MetricDataQueries"]) == 6
    assert {q["MetricStat"]["Period"] for q in query["MetricDataQueries"]} == {60}
    assert query["EndTime"] - query["StartTime"] == timedelta(seconds=60)
    assert run.measurements == seen


async def test_a_bake_shorter_than_the_interval_still_measures_once():
    clock = ManualClock()
    start = clock.now()
    task, seen = bake(ScriptedCloud([[HEALTHY, STABLE]]), clock, 10)
    run = await drive(clock, task, step=1)
    assert [m.at - start for m in seen] == [10]
    assert run.status == "successful"


async def test_a_bake_stops_at_the_first_failure_or_inconclusive_measurement():
    clock = ManualClock()
    task, seen = bake(ScriptedCloud([[HEALTHY, STABLE], [g(errors=30), STABLE]]), clock, 300)
    run = await drive(clock, task)
    assert [m.verdict for m in seen] == ["pass", "fail"]
    assert run.status == "failed"

    task, seen = bake(ScriptedCloud([[g(requests=3), STABLE]]), clock, 300)
    run = await drive(clock, task)
    assert [m.verdict for m in seen] == ["inconclusive"]
    assert run.status == "inconclusive"


async def test_api_errors_fail_the_bake_after_the_consecutive_error_limit():
    clock = ManualClock()
    cloud = ScriptedCloud([CloudError("CLOUDWATCH GetMetricData", "Throttling: Rate exceeded")])
    task, seen = bake(cloud, clock, 3600)
    run = await drive(clock, task)
    assert [m.verdict for m in seen] == ["error"] * 5
    assert seen[0].reasons == ["CLOUDWATCH GetMetricData failed: Throttling: Rate exceeded"]
    assert (run.status, run.errored) == ("failed", True)


async def test_a_bake_does_not_end_on_an_api_error_it_measures_again_until_data_or_the_limit():
    clock = ManualClock()
    oops = CloudError("CLOUDWATCH GetMetricData", "InternalFailure: oops")
    start = clock.now()
    task, seen = bake(ScriptedCloud([oops, oops, [HEALTHY, STABLE]]), clock, 60)
    run = await drive(clock, task)
    assert [m.verdict for m in seen] == ["error", "error", "pass"]  # past its 60 s: measured again...
    assert [m.at - start for m in seen] == [30, 60, 90]  # ...a whole interval later, not at once
    assert run.status == "successful"

    task, seen = bake(ScriptedCloud([oops]), clock, 60)  # CloudWatch never answers
    run = await drive(clock, task)
    assert [m.verdict for m in seen] == ["error"] * 5  # until the consecutive error limit (4)
    assert (run.status, run.errored) == ("failed", True)


async def test_time_paused_at_the_checkpoint_does_not_count_toward_the_bake():
    clock = ManualClock()
    start = clock.now()
    gate = asyncio.Event()
    gate.set()
    entered = 0

    async def checkpoint() -> None:
        nonlocal entered
        entered += 1
        await gate.wait()

    task, seen = bake(ScriptedCloud([[HEALTHY, STABLE]]), clock, 60, checkpoint=checkpoint)
    for _ in range(10):
        await asyncio.sleep(0)
    await clock.advance(30)  # the first measurement
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(seen) == 1
    gate.clear()  # paused: the run waits in checkpoint() while time goes by
    await clock.advance(30)
    await clock.advance(100)
    for _ in range(10):
        await asyncio.sleep(0)
    assert len(seen) == 1
    gate.set()
    run = await drive(clock, task)
    assert run.status == "successful"
    assert [m.at - start for m in seen] == [30, 160]  # 130 s paused; then the last measurement
    assert entered >= 4


async def test_a_run_can_go_on_from_stored_measurements():
    clock = ManualClock()
    stored = [verdict(HEALTHY).to_dict()]
    earlier = Analysis(CONFIG, [Measurement.from_dict(d) for d in stored])
    task, seen = bake(ScriptedCloud([[HEALTHY, STABLE]]), clock, 30, analysis=earlier)
    run = await drive(clock, task)
    assert run is earlier and len(run.measurements) == 2 and run.status == "successful"


async def test_metric_pages_and_several_buckets_are_merged():
    class Paged:
        def __init__(self):
            self.tokens = []

        async def call(self, api, operation, role_arn=None, /, **params):
            self.tokens.append(params.get("NextToken"))
            t1, t2 = datetime(2026, 1, 1, 0, 0, tzinfo=UTC), datetime(2026, 1, 1, 0, 1, tzinfo=UTC)
            if "NextToken" not in params:
                return {
                    "MetricDataResults": [
                        {"Id": "g0_requests", "Values": [100.0], "Timestamps": [t1]},
                        {"Id": "g0_latency", "Values": [0.1], "Timestamps": [t1]},
                    ],
                    "NextToken": "page-2",
                }
            return {
                "MetricDataResults": [
                    {"Id": "g0_requests", "Values": [300.0], "Timestamps": [t2]},
                    {"Id": "g0_errors", "Values": [], "Timestamps": []},
                    {"Id": "g0_latency", "Values": [0.2], "Timestamps": [t2]},
                ]
            }

    cloud = Paged()
    start = datetime(2026, 1, 1, 0, 0, 30, tzinfo=UTC)
    metrics = CloudWatchMetrics(cloud)
    out = await metrics.slot_metrics(None, {"c": MetricScope(())}, start, start.replace(minute=2), "Average")
    assert cloud.tokens == [None, "page-2"]
    assert out["c"].requests == 400 and out["c"].errors is None
    assert out["c"].latency_ms == pytest.approx(175.0)  # weighted by requests: (100*0.1 + 300*0.2) / 400
    out = await metrics.slot_metrics(None, {"c": MetricScope(())}, start, start.replace(minute=2), "p99")
    assert out["c"].latency_ms == pytest.approx(200.0)  # a percentile: the worst bucket


def test_alb_dimensions_follow_aws_names_and_reject_other_arns():
    tg = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web-staging-green/73e2d6bc24d8a067"
    lb = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/deploybot-staging/50dc6c495c0c9188"
    assert alb_dimensions(tg, lb) == [
        {"Name": "TargetGroup", "Value": "targetgroup/web-staging-green/73e2d6bc24d8a067"},
        {"Name": "LoadBalancer", "Value": "app/deploybot-staging/50dc6c495c0c9188"},
    ]
    with pytest.raises(ValueError, match="not a target group ARN"):
        alb_dimensions(lb, lb)
    with pytest.raises(ValueError, match="not an application load balancer ARN"):
        alb_dimensions(tg, tg)


# --- against the sandbox's moto world ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def server():
    world = AwsWorld(ManualClock())
    world.start()
    yield world
    world.stop()


@pytest.fixture
def world(server, aws_env):
    server.reset(ManualClock())
    server.provision()
    return server


@pytest.fixture
def cloud(world):
    return CloudWatchMetrics(Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=2)))


def count_calls(cloud: CloudWatchMetrics, operation: str) -> list[str]:
    """Every call of `operation` the metrics' CloudWatch client makes (botocore's before-call event)."""
    seen: list[str] = []
    cloud.aws.client("cloudwatch").meta.events.register(
        f"before-call.cloudwatch.{operation}", lambda **kw: seen.append(operation)
    )
    return seen


async def ticks(world: AwsWorld, n: int = 1) -> None:
    for _ in range(n):
        await world.clock.advance(world.tick_seconds)
        await world.tick()


async def green_runs(world: AwsWorld, tag: str, weight: int = 20, env: str = "staging") -> None:
    """Deploy web:<tag> to the idle green slot, wait until its tasks run, then send it `weight`%."""
    ecs, elb = world.client("ecs"), world.client("elbv2")
    td = ecs.describe_task_definition(taskDefinition=f"web-{env}:1")["taskDefinition"]
    containers = td["containerDefinitions"]
    containers[0]["image"] = f"web:{tag}"
    keep = {k: td[k] for k in ("family", "networkMode", "requiresCompatibilities", "cpu", "memory")}
    revision = ecs.register_task_definition(containerDefinitions=containers, **keep)["taskDefinition"]
    ecs.update_service(
        cluster=env, service="web-green", taskDefinition=revision["taskDefinitionArn"], desiredCount=2
    )
    for _ in range(30):
        await ticks(world)
        (primary, *others) = ecs.describe_services(cluster=env, services=["web-green"])["services"][0][
            "deployments"
        ]
        if primary["rolloutState"] == "COMPLETED" and not others:
            break
    else:
        raise AssertionError("green never completed")
    blue, green = (world.target_group_arn("web", env, s) for s in ("blue", "green"))
    forward = {
        "TargetGroups": [
            {"TargetGroupArn": blue, "Weight": 100 - weight},
            {"TargetGroupArn": green, "Weight": weight},
        ]
    }
    elb.modify_rule(
        RuleArn=world.rule_arn("web", env), Actions=[{"Type": "forward", "ForwardConfig": forward}]
    )


def dims(world: AwsWorld, slot: str, env: str = "staging") -> list[dict[str, str]]:
    return alb_dimensions(world.target_group_arn("web", env, slot), world.load_balancer_arn(env))


def scope(world: AwsWorld, slot: str, env: str = "staging") -> MetricScope:
    return scope_of(dims(world, slot, env))


async def take(world, cloud, config=CONFIG, stable="blue") -> Measurement:
    return await measure(
        cloud,
        config,
        account=None,
        canary=scope(world, "green"),
        stable=scope(world, stable) if stable else None,
        clock=world.clock,
        label="canary 20%",
    )


async def test_alb_dimensions_match_what_the_world_publishes(world):
    for env in world.environments:
        for slot in ("blue", "green"):
            assert dims(world, slot, env) == world.metric_dimensions("web", env, slot)


async def test_a_healthy_canary_passes_in_one_get_metric_data_call(world, cloud):
    await green_runs(world, "v2")
    await ticks(world, 12)
    calls = count_calls(cloud, "GetMetricData")
    m = await take(world, cloud)
    assert calls == ["GetMetricData"]
    assert m.verdict == "pass", m.reasons
    per_tick = DEFAULT_RPM / 12  # ticks of 5 s
    assert m.canary.requests == pytest.approx(0.2 * 11 * per_tick)  # the 11 ticks since the switch
    assert m.stable.requests == pytest.approx(0.8 * 11 * per_tick + per_tick)  # and the tick at the switch
    assert m.canary.latency_ms == pytest.approx(80, rel=0.06)
    assert m.at == world.clock.now()


async def test_a_canary_with_errors_fails_naming_rate_threshold_and_baseline(world, cloud):
    world.inject("web", "v2", error_rate=0.2)
    await green_runs(world, "v2")
    await ticks(world, 12)
    calls = count_calls(cloud, "GetMetricData")
    m = await take(world, cloud)
    assert calls == ["GetMetricData"]
    assert m.verdict == "fail"
    assert m.canary.error_rate == pytest.approx(0.2)
    assert m.stable.error_rate < 0.01
    absolute, delta = m.reasons
    assert re.fullmatch(r"error rate 20\.0% on the canary > 5\.0% threshold \(stable: 0\.\d+%\)", absolute)
    assert re.fullmatch(
        r"error rate 20\.0% on the canary is 19\.\d points above the stable 0\.\d+% "
        r"\(more than 2\.0 allowed\)",
        delta,
    )


async def test_no_traffic_is_inconclusive(world, cloud):
    await green_runs(world, "v2")
    world.inject("web", requests_per_minute=0)
    await ticks(world, 13)
    m = await take(world, cloud)
    assert m.verdict == "inconclusive"
    assert m.reasons == ["not enough traffic: no requests in 60s on the canary, at least 50 needed"]
    assert m.canary.requests is None and m.stable.requests is None


async def test_after_a_blue_green_switch_only_absolute_thresholds_apply(world, cloud):
    world.inject("web", "v2", latency_ms=1500)
    await green_runs(world, "v2", weight=100)
    await ticks(world, 12)
    m = await take(world, cloud, stable=None)
    assert m.verdict == "fail"
    assert m.canary.requests == pytest.approx(11 * DEFAULT_RPM / 12)  # all traffic, 11 ticks since the switch
    assert len(m.reasons) == 1
    assert re.fullmatch(
        r"latency 1\d{3} ms \(Average\) on the canary > 1000 ms threshold \(no stable baseline\)",
        m.reasons[0],
    )


async def test_a_percentile_under_moto_is_an_api_error_never_a_pass(world, cloud):
    # moto 5.2.5 computes no percentiles: GetMetricData with Stat "p99" over existing datapoints answers
    # HTTP 500 (its serializer meets a None value), so each measurement is an "error" (AWS computes p99).
    await green_runs(world, "v2")
    await ticks(world, 12)
    m = await take(world, cloud, AnalysisConfig(latency_statistic="p99"))
    assert m.verdict == "error"
    assert m.reasons[0].startswith("CLOUDWATCH GetMetricData failed: 500: 500 Internal Server Error")
    assert "<" not in m.reasons[0] and len(m.reasons[0]) <= 300


async def test_an_alarm_in_alarm_fails_the_measurement(world, cloud):
    await green_runs(world, "v2")
    await ticks(world, 12)
    cw = world.client("cloudwatch")
    for name in ("web-5xx", "web-latency"):
        cw.put_metric_alarm(
            AlarmName=name,
            Namespace="AWS/ApplicationELB",
            MetricName="HTTPCode_Target_5XX_Count",
            Dimensions=dims(world, "green"),
            Statistic="Sum",
            Period=60,
            EvaluationPeriods=1,
            Threshold=5,
            ComparisonOperator="GreaterThanThreshold",
        )
    config = AnalysisConfig(alarms=("web-5xx", "web-latency"))
    assert await alarms_in_alarm(cloud, None, ["web-5xx", "web-latency"]) == []
    assert (await take(world, cloud, config)).verdict == "pass"

    cw.set_alarm_state(AlarmName="web-5xx", StateValue="ALARM", StateReason="5XX above 5 for 1 minute")
    calls = count_calls(cloud, "GetMetricData")
    m = await take(world, cloud, config)
    assert calls == ["GetMetricData"]
    assert m.verdict == "fail"
    assert m.reasons == ['CloudWatch alarm "web-5xx" is in ALARM: 5XX above 5 for 1 minute']
    assert m.alarms == [{"name": "web-5xx", "reason": "5XX above 5 for 1 minute"}]


async def test_an_alarm_name_that_matches_no_alarm_is_an_error_not_a_silent_pass(world, cloud):
    await green_runs(world, "v2")
    await ticks(world, 12)
    m = await take(world, cloud, AnalysisConfig(alarms=("web-5xxx",)))
    assert m.verdict == "error"
    assert m.reasons == [
        'CLOUDWATCH DescribeAlarms failed: no such alarm: "web-5xxx" (check the analysis alarms setting)'
    ]
    assert await alarms_in_alarm(cloud, None, []) == []


async def test_an_aws_error_becomes_an_error_measurement(world):
    nowhere = CloudWatchMetrics(Aws(AwsSettings(endpoint_url="http://127.0.0.1:1", max_attempts=1)))
    m = await measure(  # connection refused
        nowhere, CONFIG, account=None, canary=scope(world, "green"), stable=None, clock=world.clock, label="x"
    )
    assert m.verdict == "error" and m.canary is None
    assert m.reasons[0].startswith("CLOUDWATCH GetMetricData failed: Could not connect to the endpoint URL")


async def test_a_bake_against_the_world_stops_at_the_first_failing_measurement(world, cloud):
    world.inject("web", "v2", error_rate=0.5)
    await green_runs(world, "v2", weight=50)
    calls = count_calls(cloud, "GetMetricData")
    seen: list[Measurement] = []
    got_one = asyncio.Event()

    async def on_measurement(m: Measurement) -> None:
        seen.append(m)
        got_one.set()

    task = asyncio.create_task(
        run_analysis(
            cloud,
            AnalysisConfig(interval_seconds=60),
            duration_seconds=300,
            clock=world.clock,
            account=None,
            canary=scope(world, "green"),
            stable=scope(world, "blue"),
            label="canary 50%",
            on_measurement=on_measurement,
        )
    )
    for _ in range(12):
        await asyncio.sleep(0)
        await ticks(world)
    await asyncio.wait_for(got_one.wait(), 10)
    run = await asyncio.wait_for(task, 10)
    assert run.status == "failed"
    assert [m.verdict for m in seen] == ["fail"]
    assert calls == ["GetMetricData"]
    assert seen[0].canary.error_rate == pytest.approx(0.5, abs=0.01)  # errors come whole, half of 25 a tick
    assert re.search(
        r"error rate (49|50)\.\d% on the canary is 49\.\d points above the stable 0\.\d+%", run.summary()
    )
