"""The ECS + ALB platform against the sandbox's moto world: the route is read once and every weight shift
is ONE ModifyRule call; a shift the ALB refuses (the rule went away under us) finds the route again and
lands; the live slot's revision and image come from one method."""

from __future__ import annotations

import pytest

from bot.adapters.aws import Aws
from bot.adapters.platforms.ecs import EcsPlatform
from bot.app.ports import PlatformError
from bot.clock import ManualClock
from bot.config.load import load_settings
from bot.config.model import AwsSettings
from bot.sandbox.aws import AwsWorld
from tests.conftest import CONFIG


@pytest.fixture(scope="module")
def server():
    world = AwsWorld(ManualClock(), services=("web",), environments=("staging",))
    world.start()
    yield world
    world.stop()


@pytest.fixture
def world(server, aws_env):
    server.reset(ManualClock())
    server.provision()
    return server


@pytest.fixture
def target(world):
    return load_settings(CONFIG, env={"DEPLOYBOT_AWS_ENDPOINT": world.endpoint}).target("web", "staging")


@pytest.fixture
def platform(world):
    return EcsPlatform(Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=2)))


def elb_calls(platform: EcsPlatform) -> list[str]:
    """Every ELBv2 call the platform's client makes (botocore's before-call event)."""
    seen: list[str] = []
    platform.aws.client("elbv2").meta.events.register(  # type: ignore[attr-defined]
        "before-call.*.*", lambda model, **kw: seen.append(model.name)
    )
    return seen


def world_weights(world: AwsWorld) -> dict[str, int]:
    rule = world.client("elbv2").describe_rules(RuleArns=[world.rule_arn("web", "staging")])["Rules"][0]
    groups = rule["Actions"][0]["ForwardConfig"]["TargetGroups"]
    by_arn = {g["TargetGroupArn"]: g["Weight"] for g in groups}
    return {s: by_arn.get(world.target_group_arn("web", "staging", s), 0) for s in ("blue", "green")}


async def test_the_route_is_read_once_and_each_weight_shift_is_one_call(world, target, platform):
    calls = elb_calls(platform)
    assert await platform.weights(target) == {"blue": 100, "green": 0}
    assert calls == [
        "DescribeTargetGroups",
        "DescribeTargetGroups",
        "DescribeLoadBalancers",
        "DescribeListeners",
        "DescribeRules",
    ]
    calls.clear()
    for w in (5, 25, 50):
        await platform.set_weights(target, {"green": w, "blue": 100 - w})
    assert calls == ["ModifyRule"] * 3
    assert world_weights(world) == {"blue": 50, "green": 50}
    scope = await platform.metric_scope(target, "green")
    assert [k for k, _ in scope.labels] == ["TargetGroup", "LoadBalancer"]
    assert calls == ["ModifyRule"] * 3  # the scope comes from the route already found


async def test_a_refused_weight_shift_finds_the_route_again_and_lands(world, target, platform):
    await platform.weights(target)
    elb = world.client("elbv2")
    old = elb.describe_rules(RuleArns=[world.rule_arn("web", "staging")])["Rules"][0]
    elb.delete_rule(RuleArn=old["RuleArn"])  # someone replaced the rule under us
    new = elb.create_rule(
        ListenerArn=world.listener_arn("staging"),
        Priority=int(old["Priority"]) + 1,
        Conditions=old["Conditions"],
        Actions=old["Actions"],
    )["Rules"][0]["RuleArn"]
    calls = elb_calls(platform)
    await platform.set_weights(target, {"green": 25, "blue": 75})
    assert calls == [
        "ModifyRule",
        "DescribeLoadBalancers",
        "DescribeListeners",
        "DescribeRules",
        "ModifyRule",
    ]
    rule = elb.describe_rules(RuleArns=[new])["Rules"][0]
    weights = {g["TargetGroupArn"]: g["Weight"] for g in rule["Actions"][0]["ForwardConfig"]["TargetGroups"]}
    assert weights[world.target_group_arn("web", "staging", "green")] == 25
    calls.clear()
    await platform.set_weights(target, {"green": 50, "blue": 50})
    assert calls == ["ModifyRule"]  # the new route is kept


async def test_a_shift_refused_twice_is_a_platform_error(world, target, platform):
    await platform.weights(target)
    elb = world.client("elbv2")
    elb.delete_rule(RuleArn=world.rule_arn("web", "staging"))
    with pytest.raises(PlatformError, match="no rule on deploybot-staging:80 forwards to web-staging-blue"):
        await platform.set_weights(target, {"green": 25, "blue": 75})


async def test_running_names_the_live_slot_its_revision_and_image(world, target, platform):
    now = await platform.running(target)
    assert (now.slot, now.image, now.desired) == ("blue", "web:v1", 2)
    assert now.revision.endswith("task-definition/web-staging:1")
    ecs_calls: list[str] = []
    platform.aws.client("ecs").meta.events.register(  # type: ignore[attr-defined]
        "before-call.*.*", lambda model, **kw: ecs_calls.append(model.name)
    )
    again = await platform.running(target, "blue")
    assert again == now and ecs_calls == ["DescribeServices"]  # a task definition ARN is read once


async def test_weights_are_read_fresh_in_one_call_once_the_route_is_known(world, target, platform):
    await platform.weights(target)
    elb = world.client("elbv2")
    rule = elb.describe_rules(RuleArns=[world.rule_arn("web", "staging")])["Rules"][0]
    action = rule["Actions"][0]
    for g in action["ForwardConfig"]["TargetGroups"]:  # a person moves traffic by hand
        g["Weight"] = 30 if g["TargetGroupArn"] == world.target_group_arn("web", "staging", "green") else 70
    elb.modify_rule(RuleArn=rule["RuleArn"], Actions=[action])
    calls = elb_calls(platform)
    assert await platform.weights(target) == {"blue": 70, "green": 30}  # fresh, not the cached route's
    assert calls == ["DescribeRules"]

    elb.delete_rule(RuleArn=rule["RuleArn"])  # the rule goes: it is looked for again, and not found
    calls.clear()
    with pytest.raises(PlatformError, match="no rule on deploybot-staging:80 forwards to"):
        await platform.weights(target)
    assert calls == ["DescribeRules", "DescribeLoadBalancers", "DescribeListeners", "DescribeRules"]
