"""The sandbox's AWS world: what provision() builds, and how the emulators move ECS rollouts, target health
and ALB metrics with the clock. Real boto3 over HTTP to one moto server per module; time is a ManualClock
stepped by hand (world.tick()), never the wall clock."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest
from moto.ecs.models import EC2ContainerServiceBackend
from moto.elbv2.models import FakeTargetGroup

from bot.clock import ManualClock
from bot.sandbox.aws import DEFAULT_RPM, AwsWorld

# Captured before any world starts, to check that stop()/deactivate() put moto back as it was.
MOTO_HEALTH_FOR = FakeTargetGroup.health_for
MOTO_UPDATE_SERVICE = EC2ContainerServiceBackend.update_service


@pytest.fixture(scope="module")
def server():
    world = AwsWorld(ManualClock())
    world.start()
    yield world
    world.stop()
    assert FakeTargetGroup.health_for is MOTO_HEALTH_FOR
    assert EC2ContainerServiceBackend.update_service is MOTO_UPDATE_SERVICE


@pytest.fixture
def world(server):
    server.reset(ManualClock())  # a fresh clock per test: its asyncio.Condition belongs to one event loop
    server.provision()
    return server


# --- helpers ---------------------------------------------------------------------------------------------
async def ticks(world: AwsWorld, n: int = 1) -> None:
    for _ in range(n):
        await world.clock.advance(world.tick_seconds)
        await world.tick()


def describe(world: AwsWorld, service: str, env: str = "staging") -> dict:
    return world.client("ecs").describe_services(cluster=env, services=[service])["services"][0]


def targets(world: AwsWorld, service: str, slot: str, env: str = "staging") -> dict[str, tuple[str, str]]:
    arn = world.target_group_arn(service, env, slot)
    found = world.client("elbv2").describe_target_health(TargetGroupArn=arn)["TargetHealthDescriptions"]
    return {t["Target"]["Id"]: (t["TargetHealth"]["State"], t["TargetHealth"].get("Reason")) for t in found}


def new_revision(world: AwsWorld, service: str, tag: str, env: str = "staging") -> str:
    """Register a copy of the family's revision 1 with image `service:tag`; returns 'family:revision'."""
    ecs = world.client("ecs")
    td = ecs.describe_task_definition(taskDefinition=f"{service}-{env}:1")["taskDefinition"]
    containers = td["containerDefinitions"]
    containers[0]["image"] = f"{service}:{tag}"
    keep = {k: td[k] for k in ("family", "networkMode", "requiresCompatibilities", "cpu", "memory")}
    out = ecs.register_task_definition(containerDefinitions=containers, **keep)["taskDefinition"]
    return f"{out['family']}:{out['revision']}"


def deploy(world: AwsWorld, service: str, task_definition: str, env: str = "staging", **kw) -> None:
    world.client("ecs").update_service(cluster=env, service=service, taskDefinition=task_definition, **kw)


async def tick_until(world: AwsWorld, done, limit: int = 30) -> int:
    for n in range(1, limit + 1):
        await ticks(world)
        if done():
            return n
    raise AssertionError(f"not done after {limit} ticks")


def rollout(world: AwsWorld, service: str, env: str = "staging") -> list[tuple[str, str, str]]:
    return [
        (d["status"], d["taskDefinition"].rsplit("/", 1)[-1], d.get("rolloutState"))
        for d in describe(world, service, env)["deployments"]
    ]


async def fail_a_deploy(world: AwsWorld) -> set[str]:
    """Deploy an unhealthy web:v2 to staging web-blue until the deployment FAILED; returns the v1 targets."""
    old = set(targets(world, "web", "blue"))
    world.inject("web", "v2", unhealthy=True)
    deploy(world, "web-blue", new_revision(world, "web", "v2"))
    await tick_until(world, lambda: rollout(world, "web-blue")[0][2] == "FAILED")
    return old


# --- provisioning ----------------------------------------------------------------------------------------
async def test_provision_builds_the_demo_world(world):
    ecs, elb = world.client("ecs"), world.client("elbv2")
    assert sorted(a.rsplit("/", 1)[-1] for a in ecs.list_clusters()["clusterArns"]) == [
        "production",
        "staging",
    ]
    for env in ("staging", "production"):
        names = sorted(a.rsplit("/", 1)[-1] for a in ecs.list_services(cluster=env)["serviceArns"])
        assert names == ["api-blue", "api-green", "web-blue", "web-green"]
        lb = elb.describe_load_balancers(Names=[f"deploybot-{env}"])["LoadBalancers"][0]
        (listener,) = elb.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
        assert listener["Port"] == 80 and listener["Protocol"] == "HTTP"
        assert listener["DefaultActions"][0]["Type"] == "fixed-response"
        assert listener["DefaultActions"][0]["FixedResponseConfig"]["StatusCode"] == "404"
        rules = [
            r for r in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"] if not r["IsDefault"]
        ]
        by_host = {r["Conditions"][0]["HostHeaderConfig"]["Values"][0]: r for r in rules}
        assert sorted(by_host) == [f"api.{env}.sandbox.test", f"web.{env}.sandbox.test"]

        for service in ("web", "api"):
            td = ecs.describe_task_definition(taskDefinition=f"{service}-{env}:1")["taskDefinition"]
            (container,) = td["containerDefinitions"]
            assert (container["name"], container["image"]) == (service, f"{service}:v1")
            assert container["portMappings"][0]["containerPort"] == 8080

            tgs = {}
            for slot in ("blue", "green"):
                tg = elb.describe_target_groups(Names=[f"{service}-{env}-{slot}"])["TargetGroups"][0]
                assert (tg["TargetType"], tg["Port"], tg["HealthCheckPath"]) == ("ip", 8080, "/healthz")
                attrs = elb.describe_target_group_attributes(TargetGroupArn=tg["TargetGroupArn"])[
                    "Attributes"
                ]
                assert {"Key": "deregistration_delay.timeout_seconds", "Value": "30"} in attrs
                assert tg["TargetGroupArn"] == world.target_group_arn(service, env, slot)
                tgs[slot] = tg["TargetGroupArn"]

            forward = by_host[f"{service}.{env}.sandbox.test"]["Actions"][0]
            assert forward["Type"] == "forward"
            weights = {g["TargetGroupArn"]: g["Weight"] for g in forward["ForwardConfig"]["TargetGroups"]}
            assert weights == {tgs["blue"]: 100, tgs["green"]: 0}

            for slot, count in (("blue", 2), ("green", 0)):
                svc = describe(world, f"{service}-{slot}", env)
                assert svc["taskDefinition"].endswith(f":task-definition/{service}-{env}:1")
                assert (svc["desiredCount"], svc["runningCount"], svc["pendingCount"]) == (count, count, 0)
                (dep,) = svc["deployments"]
                assert (dep["status"], dep["rolloutState"], dep["runningCount"]) == (
                    "PRIMARY",
                    "COMPLETED",
                    count,
                )
                assert svc["loadBalancers"] == [
                    {"targetGroupArn": tgs[slot], "containerName": service, "containerPort": 8080}
                ]
                assert svc["deploymentConfiguration"]["maximumPercent"] == 200
                assert svc["deploymentConfiguration"]["minimumHealthyPercent"] == 100
                health = targets(world, service, slot, env)
                assert len(health) == count
                assert all(state == ("healthy", None) for state in health.values())
                assert all(ip.startswith("10.") for ip in health)

    snap = world.snapshot()
    assert snap["production"]["api"]["weights"] == {"blue": 100, "green": 0}
    blue = snap["staging"]["web"]["slots"]["blue"]
    assert (blue["taskDefinition"], blue["image"], blue["running"]) == ("web-staging:1", "web:v1", 2)
    assert blue["events"] == ["(service web-blue) has reached a steady state."]


# --- ECS rollouts ----------------------------------------------------------------------------------------
async def test_rollout_to_a_healthy_version_completes_with_only_new_targets(world):
    old = set(targets(world, "web", "blue"))
    deploy(world, "web-blue", new_revision(world, "web", "v2"))
    deployment = [("PRIMARY", "web-staging:2", "IN_PROGRESS"), ("ACTIVE", "web-staging:1", "COMPLETED")]
    assert rollout(world, "web-blue") == deployment  # at once, within update_service, as ECS does
    svc = describe(world, "web-blue")
    assert (svc["runningCount"], svc["deployments"][0]["runningCount"]) == (2, 0)
    assert svc["deployments"][0]["createdAt"] == datetime.fromtimestamp(world.clock.now(), UTC)

    await ticks(world)
    assert rollout(world, "web-blue") == deployment
    health = targets(world, "web", "blue")
    new = set(health) - old
    assert len(new) == 2 and {health[ip][0] for ip in new} == {"initial"}
    assert {health[ip][0] for ip in old} == {"healthy"}

    running_seen = []

    def completed() -> bool:
        running_seen.append(describe(world, "web-blue")["runningCount"])
        return rollout(world, "web-blue")[0][2] == "COMPLETED"

    n = await tick_until(world, completed)
    assert 1 + n <= 10
    assert min(running_seen) >= 2  # minimumHealthyPercent 100: never below desired
    assert rollout(world, "web-blue") == [("PRIMARY", "web-staging:2", "COMPLETED")]
    assert targets(world, "web", "blue") == {ip: ("healthy", None) for ip in new}
    svc = describe(world, "web-blue")
    assert svc["taskDefinition"].endswith("web-staging:2")
    assert (svc["runningCount"], svc["pendingCount"]) == (2, 0)
    assert svc["events"][0]["message"] == "(service web-blue) has reached a steady state."
    assert svc["events"][0]["createdAt"] == datetime.fromtimestamp(world.clock.now(), UTC)
    assert world.snapshot()["staging"]["web"]["slots"]["blue"]["image"] == "web:v2"


async def test_old_targets_drain_for_the_deregistration_delay(world):
    old = set(targets(world, "web", "blue"))
    deploy(world, "web-blue", new_revision(world, "web", "v2"))
    await ticks(world, 2)  # new tasks healthy: the old ones are deregistered and start draining
    health = targets(world, "web", "blue")
    assert {health[ip] for ip in old} == {("draining", "Target.DeregistrationInProgress")}
    assert rollout(world, "web-blue")[0][2] == "IN_PROGRESS"
    await ticks(world, 5)  # 25 s of the 30 s delay
    assert old <= set(targets(world, "web", "blue"))
    await ticks(world)
    assert not old & set(targets(world, "web", "blue"))
    assert rollout(world, "web-blue") == [("PRIMARY", "web-staging:2", "COMPLETED")]


async def test_unhealthy_version_fails_after_the_failure_time_and_old_tasks_keep_serving(world):
    old = set(targets(world, "web", "blue"))
    world.inject("web", "v2", unhealthy=True)
    deploy(world, "web-blue", new_revision(world, "web", "v2"))
    started = world.clock.now()
    while world.clock.now() - started < 60:
        await ticks(world)
        health = targets(world, "web", "blue")
        new = set(health) - old
        assert all(health[ip][0] != "healthy" for ip in new)
        assert {health[ip] for ip in old} == {("healthy", None)}
        assert describe(world, "web-blue")["runningCount"] == 2
        if world.clock.now() - started < 60:
            assert rollout(world, "web-blue")[0][2] == "IN_PROGRESS"
    assert {health[ip] for ip in new} == {("unhealthy", "Target.FailedHealthChecks")} and len(new) == 2

    svc = describe(world, "web-blue")
    primary = svc["deployments"][0]
    assert (primary["status"], primary["rolloutState"]) == ("PRIMARY", "FAILED")
    assert primary["rolloutStateReason"].startswith("ECS deployment circuit breaker")
    assert (primary["runningCount"], primary["failedTasks"]) == (0, 2)
    assert svc["deployments"][1]["runningCount"] == 2
    messages = [e["message"] for e in svc["events"]]
    assert (
        f"(service web-blue) (deployment {primary['id']}) deployment failed: tasks failed to start."
        in messages
    )
    assert any("is unhealthy in (target-group" in m for m in messages)

    await ticks(world, 5)  # a failed deployment is frozen; the old tasks still serve
    assert rollout(world, "web-blue")[0][2] == "FAILED"
    assert {targets(world, "web", "blue")[ip] for ip in old} == {("healthy", None)}


async def test_rolling_back_to_the_previous_task_definition_recovers(world):
    old = await fail_a_deploy(world)
    failing = set(targets(world, "web", "blue")) - old
    deploy(world, "web-blue", "web-staging:1")
    await ticks(world)
    assert [d[:2] for d in rollout(world, "web-blue")][0] == ("PRIMARY", "web-staging:1")
    assert {targets(world, "web", "blue")[ip][0] for ip in failing} == {"draining"}
    await tick_until(world, lambda: rollout(world, "web-blue")[0][2] == "COMPLETED")
    assert rollout(world, "web-blue") == [("PRIMARY", "web-staging:1", "COMPLETED")]
    health = targets(world, "web", "blue")
    assert len(health) == 2 and set(health.values()) == {("healthy", None)}
    assert not failing & set(health)
    assert describe(world, "web-blue")["runningCount"] == 2


async def test_circuit_breaker_with_rollback_rolls_back_by_itself(world):
    config = {
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
    }
    world.inject("web", "v2", unhealthy=True)
    deploy(world, "web-blue", new_revision(world, "web", "v2"), deploymentConfiguration=config)
    await tick_until(world, lambda: "FAILED" in [d[2] for d in rollout(world, "web-blue")])
    await tick_until(world, lambda: rollout(world, "web-blue") == [("PRIMARY", "web-staging:1", "COMPLETED")])
    messages = [e["message"] for e in describe(world, "web-blue")["events"]]
    assert any(m.startswith("(service web-blue) rolling back to deployment ecs-svc/") for m in messages)


async def test_force_new_deployment_replaces_the_tasks(world):
    old = set(targets(world, "api", "blue", "production"))
    world.client("ecs").update_service(cluster="production", service="api-blue", forceNewDeployment=True)
    assert rollout(world, "api-blue", "production") == [
        ("PRIMARY", "api-production:1", "IN_PROGRESS"),
        ("ACTIVE", "api-production:1", "COMPLETED"),
    ]
    await tick_until(world, lambda: rollout(world, "api-blue", "production")[0][2] == "COMPLETED")
    health = targets(world, "api", "blue", "production")
    assert len(health) == 2 and not old & set(health)


async def test_scaling_the_green_slot_up_and_down(world):
    ecs = world.client("ecs")
    ecs.update_service(cluster="staging", service="web-green", desiredCount=2)
    assert describe(world, "web-green")["runningCount"] == 0  # counts follow over ticks, not at once

    await ticks(world)
    svc = describe(world, "web-green")
    assert (svc["desiredCount"], svc["runningCount"], svc["pendingCount"]) == (2, 0, 2)
    assert {s for s, _ in targets(world, "web", "green").values()} == {"initial"}
    await ticks(world)
    svc = describe(world, "web-green")
    assert (svc["runningCount"], svc["pendingCount"]) == (2, 0)
    up = targets(world, "web", "green")
    assert len(up) == 2 and set(up.values()) == {("healthy", None)}
    assert svc["events"][0]["message"] == "(service web-green) has reached a steady state."
    assert (
        world.client("ecs").describe_clusters(clusters=["staging"])["clusters"][0]["runningTasksCount"] == 6
    )

    ecs.update_service(cluster="staging", service="web-green", desiredCount=0)
    assert describe(world, "web-green")["runningCount"] == 2
    await ticks(world)
    assert describe(world, "web-green")["runningCount"] == 0
    assert {s for s, _ in targets(world, "web", "green").values()} == {"draining"}
    await tick_until(world, lambda: not targets(world, "web", "green"))
    assert rollout(world, "web-green") == [("PRIMARY", "web-staging:1", "COMPLETED")]
    assert describe(world, "web-blue")["runningCount"] == 2  # the live slot untouched


# --- traffic ---------------------------------------------------------------------------------------------
def metric_sum(world: AwsWorld, name: str, service: str, slot: str, start: float, stat: str = "Sum") -> float:
    result = world.client("cloudwatch").get_metric_data(
        MetricDataQueries=[
            {
                "Id": "m",
                "MetricStat": {
                    "Metric": {
                        "Namespace": "AWS/ApplicationELB",
                        "MetricName": name,
                        "Dimensions": world.metric_dimensions(service, "staging", slot),
                    },
                    "Period": 3600,
                    "Stat": stat,
                },
            }
        ],
        StartTime=datetime.fromtimestamp(start, UTC),
        EndTime=datetime.fromtimestamp(world.clock.now() + 1, UTC),
    )["MetricDataResults"][0]
    return sum(result["Values"])


async def test_traffic_is_split_by_weight_and_errors_follow_the_injected_rate(world):
    ecs, elb = world.client("ecs"), world.client("elbv2")
    ecs.update_service(
        cluster="staging",
        service="web-green",
        taskDefinition=new_revision(world, "web", "v2"),
        desiredCount=2,
    )
    await tick_until(
        world, lambda: rollout(world, "web-green") == [("PRIMARY", "web-staging:2", "COMPLETED")]
    )
    world.inject("web", "v1", error_rate=0.0, latency_ms=50)
    world.inject("web", "v2", error_rate=0.2, latency_ms=300)
    blue, green = (world.target_group_arn("web", "staging", s) for s in ("blue", "green"))
    forward = {
        "TargetGroups": [{"TargetGroupArn": blue, "Weight": 90}, {"TargetGroupArn": green, "Weight": 10}]
    }
    elb.modify_rule(
        RuleArn=world.rule_arn("web", "staging"), Actions=[{"Type": "forward", "ForwardConfig": forward}]
    )
    assert world.snapshot()["staging"]["web"]["weights"] == {"blue": 90, "green": 10}

    start = world.clock.now() + 1
    await ticks(world, 12)  # one minute of the default rate
    rpm = DEFAULT_RPM
    requests = {slot: metric_sum(world, "RequestCount", "web", slot, start) for slot in ("blue", "green")}
    assert requests == {"blue": pytest.approx(0.9 * rpm), "green": pytest.approx(0.1 * rpm)}
    assert metric_sum(world, "HTTPCode_Target_5XX_Count", "web", "blue", start) == 0
    assert metric_sum(world, "HTTPCode_Target_5XX_Count", "web", "green", start) == pytest.approx(
        0.2 * 0.1 * rpm
    )
    assert metric_sum(world, "HTTPCode_Target_2XX_Count", "web", "green", start) == pytest.approx(
        0.8 * 0.1 * rpm
    )
    blue_latency = metric_sum(world, "TargetResponseTime", "web", "blue", start, "Average")
    green_latency = metric_sum(world, "TargetResponseTime", "web", "green", start, "Average")
    assert blue_latency == pytest.approx(0.050, rel=0.05)
    assert green_latency == pytest.approx(0.300, rel=0.05)
    assert world.metric_dimensions("web", "staging", "green") == [
        {"Name": "TargetGroup", "Value": "targetgroup/web-staging-green/" + green.rsplit("/", 1)[-1]},
        {
            "Name": "LoadBalancer",
            "Value": "app/deploybot-staging/" + world.load_balancer_arn("staging").rsplit("/", 1)[-1],
        },
    ]


async def test_no_requests_per_minute_publishes_nothing(world):
    world.inject("web", requests_per_minute=0)
    start = world.clock.now()
    await ticks(world, 3)
    assert metric_sum(world, "RequestCount", "web", "blue", start) == 0
    assert (
        metric_sum(world, "RequestCount", "api", "blue", start) == DEFAULT_RPM / 4
    )  # 3 ticks of 5s: the other service still serves
    cloudwatch = world.client("cloudwatch")
    metrics = cloudwatch.list_metrics(Namespace="AWS/ApplicationELB", MetricName="RequestCount")["Metrics"]
    published = {d["Value"] for m in metrics for d in m["Dimensions"] if d["Name"] == "TargetGroup"}
    assert not any("/web-" in value for value in published)


# --- the loop, the behaviour table, the patches ----------------------------------------------------------
async def test_run_ticks_on_the_clock(world):
    for service in world.services:
        world.inject(service, requests_per_minute=0)  # no metric calls: each tick is pure in-process work
    world.client("ecs").update_service(cluster="staging", service="web-green", desiredCount=2)
    loop = asyncio.create_task(world.run())
    try:
        for _ in range(5):
            await asyncio.sleep(0)
        assert describe(world, "web-green")["pendingCount"] == 2  # the first tick runs at once
        await world.clock.advance(4.9)
        assert describe(world, "web-green")["runningCount"] == 0
        await world.clock.advance(0.1)
        for _ in range(5):
            await asyncio.sleep(0)
        assert describe(world, "web-green")["runningCount"] == 2
    finally:
        loop.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loop


def test_inject_sets_and_reports_behaviour():
    world = AwsWorld(ManualClock())  # no server needed
    table = world.inject("web", "v3", error_rate=0.25)
    assert table["versions"] == {"web:v3": {"error_rate": 0.25, "latency_ms": 80.0, "unhealthy": False}}
    table = world.inject("web", "web:v3", latency_ms=900, requests_per_minute=60)
    assert table["versions"]["web:v3"] == {"error_rate": 0.25, "latency_ms": 900.0, "unhealthy": False}
    assert table["requests_per_minute"] == {"web": 60.0, "api": DEFAULT_RPM}
    assert world.behaviour("api", "v1").error_rate == 0.001
    for bad in (
        lambda: world.inject("db", "v1", error_rate=0.1),
        lambda: world.inject("web", "v1", error_rate=1.5),
        lambda: world.inject("web", error_rate=0.1),
        lambda: world.inject("web", "api:v1", unhealthy=True),
        lambda: world.inject("web", requests_per_minute=-1),
    ):
        with pytest.raises(ValueError):
            bad()


async def test_moto_patches_are_installed_only_while_a_world_is_active(world):
    assert FakeTargetGroup.health_for is not MOTO_HEALTH_FOR
    world.emulator.deactivate()
    try:
        assert FakeTargetGroup.health_for is MOTO_HEALTH_FOR
        assert EC2ContainerServiceBackend.update_service is MOTO_UPDATE_SERVICE
    finally:
        world.emulator.activate()
    assert FakeTargetGroup.health_for is not MOTO_HEALTH_FOR
