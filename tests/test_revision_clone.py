"""A new task definition revision is its base with one image replaced — every field and the tags — and is
tagged with the deployment it is for, so a restarted bot finds it instead of registering another. Against
moto's server over HTTP (boto3, the real EcsPlatform); what moto itself does not keep is said so below."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.adapters.aws import Aws
from bot.adapters.platforms.ecs import BASE_TAG, KEY_TAG, NOT_COPIED, EcsPlatform, clone_params
from bot.clock import ManualClock
from bot.config.load import load_settings
from bot.config.model import AwsSettings
from bot.sandbox.aws import AwsWorld
from tests.conftest import CONFIG

ROLE = "arn:aws:iam::123456789012:role"
RICH: dict[str, Any] = {
    "family": "web-staging",
    "taskRoleArn": f"{ROLE}/web-task",
    "executionRoleArn": f"{ROLE}/web-execution",
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "1024",
    "memory": "2048",
    "runtimePlatform": {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"},
    "ephemeralStorage": {"sizeInGiB": 100},
    "proxyConfiguration": {
        "type": "APPMESH",
        "containerName": "envoy",
        "properties": [
            {"name": "IgnoredUID", "value": "1337"},
            {"name": "AppPorts", "value": "8080"},
            {"name": "ProxyIngressPort", "value": "15000"},
            {"name": "ProxyEgressPort", "value": "15001"},
        ],
    },
    "inferenceAccelerators": [{"deviceName": "eia-1", "deviceType": "eia2.medium"}],
    "enableFaultInjection": True,
    "pidMode": "task",
    "ipcMode": "task",
    "volumes": [
        {"name": "scratch", "host": {"sourcePath": "/scratch"}},
        {"name": "shared", "efsVolumeConfiguration": {"fileSystemId": "fs-1234", "rootDirectory": "/web"}},
    ],
    "placementConstraints": [{"type": "memberOf", "expression": "attribute:ecs.cpu-architecture == arm64"}],
    "tags": [
        {"key": "team", "value": "payments"},
        {"key": "cost-centre", "value": "4711"},
        {"key": "aws:cloudformation:stack-name", "value": "web"},  # AWS's own: refused on register
        {"key": KEY_TAG, "value": "3"},  # the base was itself deployed by deployment 3
    ],
    "containerDefinitions": [
        {
            "name": "web",
            "image": "web:v1",
            "essential": True,
            "cpu": 768,
            "memoryReservation": 1024,
            "portMappings": [{"containerPort": 8080, "protocol": "tcp", "name": "http"}],
            "environment": [{"name": "MODE", "value": "production"}],
            "secrets": [
                {"name": "DB_PASSWORD", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/web/db"}
            ],
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {"awslogs-group": "/ecs/web", "awslogs-region": "us-east-1"},
                "secretOptions": [
                    {"name": "token", "valueFrom": "arn:aws:ssm:us-east-1:123456789012:parameter/logs"}
                ],
            },
            "healthCheck": {
                "command": ["CMD-SHELL", "curl -fs localhost:8080/health || exit 1"],
                "interval": 10,
                "timeout": 5,
                "retries": 3,
                "startPeriod": 30,
            },
            "dependsOn": [{"containerName": "envoy", "condition": "HEALTHY"}],
            "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/tmp/scratch", "readOnly": False}],
            "ulimits": [{"name": "nofile", "softLimit": 65536, "hardLimit": 65536}],
            "stopTimeout": 60,
        },
        {
            "name": "envoy",
            "image": "public.ecr.aws/appmesh/aws-appmesh-envoy:v1.27.3.0-prod",
            "essential": True,
            "user": "1337",
            "memoryReservation": 256,
            "environment": [{"name": "APPMESH_RESOURCE_ARN", "value": "mesh/web/virtualNode/web"}],
            "healthCheck": {
                "command": [
                    "CMD-SHELL",
                    "curl -s http://localhost:9901/server_info | grep state | grep -q LIVE",
                ],
                "interval": 5,
                "timeout": 2,
                "retries": 3,
                "startPeriod": 10,
            },
        },
        {
            "name": "log-router",
            "image": "public.ecr.aws/aws-observability/aws-for-fluent-bit:stable",
            "essential": False,
            "memoryReservation": 64,
            "firelensConfiguration": {"type": "fluentbit", "options": {"enable-ecs-log-metadata": "true"}},
        },
    ],
}
# What moto's server does not keep of RICH (moto 5.2.5): it accepts `enableFaultInjection` and drops it
# (describe_task_definition never returns it), so against moto the clone cannot carry it either; the
# pure test below shows the platform copies it whenever DescribeTaskDefinition returns it. moto also
# accepts a tag with the reserved `aws:` prefix that AWS refuses, which lets the base here carry one.
MOTO_DROPS = {"enableFaultInjection"}


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


def new_platform(world: AwsWorld) -> EcsPlatform:
    """A platform as a freshly started bot has it: nothing cached."""
    return EcsPlatform(Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=2)))


def ecs_calls(platform: EcsPlatform) -> list[str]:
    seen: list[str] = []
    platform.aws.client("ecs").meta.events.register(  # type: ignore[attr-defined]
        "before-call.*.*", lambda model, **kw: seen.append(model.name)
    )
    return seen


def described(world: AwsWorld, arn: str) -> tuple[dict[str, Any], dict[str, str]]:
    out = world.client("ecs").describe_task_definition(taskDefinition=arn, include=["TAGS"])
    return out["taskDefinition"], {t["key"]: t["value"] for t in out.get("tags", [])}


def rich_base(world: AwsWorld) -> str:
    out = world.client("ecs").register_task_definition(**RICH)
    arn: str = out["taskDefinition"]["taskDefinitionArn"]
    return arn


async def test_the_new_revision_is_the_base_field_by_field_but_the_image(world, target):
    base = rich_base(world)
    before, base_tags = described(world, base)
    stored = {k for k in RICH if k != "tags"} - MOTO_DROPS
    assert stored <= before.keys() and not MOTO_DROPS & before.keys()  # what moto keeps, and drops
    for sent, kept in zip(RICH["containerDefinitions"], before["containerDefinitions"], strict=True):
        assert {k: kept.get(k) for k in sent} == sent  # moto keeps every container field sent here
    assert base_tags["aws:cloudformation:stack-name"] == "web"

    platform = new_platform(world)
    calls = ecs_calls(platform)
    arn = await platform.register_revision(target, base, "web:v9", key="41")
    assert calls == ["DescribeTaskDefinition", "RegisterTaskDefinition"]

    after, tags = described(world, arn)
    assert after["revision"] == before["revision"] + 1
    for name in sorted((before.keys() | after.keys()) - NOT_COPIED - {"containerDefinitions"}):
        assert after.get(name) == before.get(name), name
    assert after["ephemeralStorage"] == {"sizeInGiB": 100}
    assert after["runtimePlatform"] == {"cpuArchitecture": "ARM64", "operatingSystemFamily": "LINUX"}
    assert after["proxyConfiguration"] == RICH["proxyConfiguration"]
    assert after["inferenceAccelerators"] == RICH["inferenceAccelerators"]
    expected = copy.deepcopy(before["containerDefinitions"])
    expected[0]["image"] = "web:v9"
    assert after["containerDefinitions"] == expected  # secrets, logs, health checks, the sidecars: all kept
    assert tags == {"team": "payments", "cost-centre": "4711", KEY_TAG: "41", BASE_TAG: base}

    world.client("ecs").update_service(cluster=target.cluster, service="web-blue", taskDefinition=arn)
    calls.clear()
    now = await platform.running(target, "blue")
    assert now.revision == arn and now.image == "web:v9"
    assert calls == ["DescribeServices"]  # the registered revision's answer is kept: no describe of it


def test_a_field_moto_drops_is_still_copied_from_what_aws_describes():
    answer = {
        "taskDefinition": {
            **{k: v for k, v in RICH.items() if k != "tags"},
            "taskDefinitionArn": "arn:aws:ecs:us-east-1:123456789012:task-definition/web-staging:7",
            "revision": 7,
            "status": "ACTIVE",
            "compatibilities": ["EC2", "FARGATE"],
            "requiresAttributes": [{"name": "ecs.capability.secrets.ssm.environment-variables"}],
            "registeredAt": "2026-01-01T00:00:00Z",
            "registeredBy": f"{ROLE}/ci",
            "deregisteredAt": None,
            "trustedExecutionConfiguration": None,
        },
        "tags": RICH["tags"],
    }
    params = clone_params(answer, "web:v9", "web", "41", "web-staging:7")
    assert params["enableFaultInjection"] is True
    assert not NOT_COPIED & params.keys() and "trustedExecutionConfiguration" not in params
    assert {k for k in params if k != "tags"} == {k for k in RICH if k != "tags"}
    assert [c["image"] for c in params["containerDefinitions"]][0] == "web:v9"
    assert params["containerDefinitions"][1:] == RICH["containerDefinitions"][1:]
    assert [t["key"] for t in params["tags"]] == ["team", "cost-centre", KEY_TAG, BASE_TAG]


def test_the_deployment_tags_fit_within_awss_fifty():
    answer = {
        "taskDefinition": {"family": "f", "containerDefinitions": [{"name": "web", "image": "web:v1"}]},
        "tags": [{"key": f"k{i}", "value": "v"} for i in range(49)],
    }
    params = clone_params(answer, "web:v2", "web", "41", "f:1")
    assert len(params["tags"]) == 50 and params["tags"][-1] == {"key": KEY_TAG, "value": "41"}


async def test_a_restarted_bot_finds_the_revision_registered_for_its_deployment(world, target):
    base = rich_base(world)
    crashed = new_platform(world)
    arn = await crashed.register_revision(target, base, "web:v9", key="41")
    for i in range(12):  # later deployments of the same family: the lookup reads the newest page
        await crashed.register_revision(target, base, f"web:v{10 + i}", key=str(50 + i))
    newest = await crashed.register_revision(target, base, "web:v30", key="70")

    fresh = new_platform(world)  # the process that crashed is gone, and its cache with it
    assert await fresh.find_revision(target, base, "web:v30", "70") == newest
    assert await fresh.find_revision(target, base, "web:v30", "71") is None  # another deployment's
    assert await fresh.find_revision(target, base, "web:v31", "70") is None  # another image
    # the first one is older than the page a resume looks at: that is the bound, and it is kept
    assert await fresh.find_revision(target, base, "web:v9", "41") is None
    assert described(world, arn)[1][KEY_TAG] == "41"


async def test_finding_costs_one_list_and_a_describe_per_revision_looked_at(world, target):
    base = rich_base(world)
    mine = await new_platform(world).register_revision(target, base, "web:v9", key="41")
    await new_platform(world).register_revision(target, base, "web:v10", key="42")
    fresh = new_platform(world)
    calls = ecs_calls(fresh)
    assert await fresh.find_revision(target, base, "web:v9", "41") == mine
    assert calls == ["DescribeTaskDefinition", "ListTaskDefinitions"] + ["DescribeTaskDefinition"] * 2
