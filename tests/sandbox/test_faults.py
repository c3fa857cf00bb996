"""Fault injection in the sandbox (bot.sandbox.faults): real boto3 clients over HTTP to one moto server per
module, signed with the bot's key. Each error shape is parsed by botocore itself into the ClientError code AWS
would send; rules filter by service and operation, roll seeded dice, expire by the sandbox clock (a
ManualClock stepped by hand), add latency, hold a call past the read timeout, and never touch the
sandbox's own key. Then once through the Sandbox's HTTP control routes, with the real bot process."""

from __future__ import annotations

import random
import time

import aiohttp
import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError, ReadTimeoutError

from bot.adapters.aws import Aws
from bot.app.ports import PlatformError
from bot.clock import ManualClock
from bot.config.load import load_settings, parse_settings
from bot.config.model import AwsSettings
from bot.config.tables import ConfigError
from bot.sandbox.aws import BOT_ACCESS_KEY, REGION, AwsWorld
from bot.sandbox.faults import parse_rule
from tests.conftest import CONFIG, wait_terminal


@pytest.fixture(scope="module")
def server():
    world = AwsWorld(ManualClock())
    world.start()
    yield world
    world.stop()


@pytest.fixture
def world(server):
    server.reset(ManualClock())  # clears the faults too
    server.faults.timeout_seconds = 30.0
    return server


def bot_client(world: AwsWorld, service: str, attempts: int = 1, read_timeout: float = 10.0, **creds):
    """A boto3 client as the bot makes them (standard retries), signed with the bot's key by default."""
    creds = creds or {"aws_access_key_id": BOT_ACCESS_KEY, "aws_secret_access_key": "x"}
    session = boto3.session.Session(region_name=REGION, **creds)
    config = Config(retries={"mode": "standard", "total_max_attempts": attempts}, read_timeout=read_timeout)
    return session.client(service, endpoint_url=world.endpoint, config=config)


# one read-only call per service that works on an empty world
CALLS = {
    "ecs": lambda c: c.list_clusters(),
    "elbv2": lambda c: c.describe_load_balancers(),
    "cloudwatch": lambda c: c.describe_alarms(),
}
EXPECTED = {  # (service, error) -> (ClientError code, HTTP status), as AWS answers
    ("ecs", "500"): ("ServerException", 500),
    ("ecs", "503"): ("ServiceUnavailableException", 503),
    ("ecs", "throttle"): ("ThrottlingException", 400),
    ("elbv2", "500"): ("InternalFailure", 500),
    ("elbv2", "503"): ("ServiceUnavailable", 503),
    ("elbv2", "throttle"): ("Throttling", 400),
    ("cloudwatch", "500"): ("InternalServiceError", 500),  # the query code of InternalServiceFault
    ("cloudwatch", "503"): ("ServiceUnavailable", 503),
    ("cloudwatch", "throttle"): ("Throttling", 400),
}


def fails(call, client) -> ClientError | None:
    try:
        call(client)
    except ClientError as exc:
        return exc
    return None


@pytest.mark.parametrize(("service", "error"), sorted(EXPECTED))
def test_each_error_parses_in_botocore_as_the_code_aws_sends(world, service, error):
    client = bot_client(world, service)
    assert fails(CALLS[service], client) is None
    world.faults.add({"service": service, "error": error})
    exc = fails(CALLS[service], client)
    assert exc is not None
    code, status = EXPECTED[(service, error)]
    assert exc.response["Error"]["Code"] == code
    assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == status
    assert "fault injection" in exc.response["Error"]["Message"]
    (rule,) = world.faults.rules()
    assert (rule["failed"], rule["passed"]) == (1, 0)


def test_cloudwatch_500_is_its_modeled_fault_and_botocore_retries_every_attempt(world):
    cloudwatch = bot_client(world, "cloudwatch")
    world.faults.add({"service": "cloudwatch", "error": "500"})
    with pytest.raises(cloudwatch.exceptions.InternalServiceFault):
        cloudwatch.describe_alarms()
    world.faults.clear()
    world.faults.add({"service": "elbv2", "error": "throttle"})
    with pytest.raises(ClientError, match="Throttling"):
        CALLS["elbv2"](bot_client(world, "elbv2", attempts=3))
    assert world.faults.rules()[0]["failed"] == 3  # each attempt counts; a rate of 1 fails all of them


def test_only_the_named_service_and_operations_fail(world):
    ecs, elb = bot_client(world, "ecs"), bot_client(world, "elbv2")
    world.faults.add({"service": "ecs", "operations": ["DescribeClusters", "UpdateService"]})
    assert fails(lambda c: c.describe_clusters(clusters=["staging"]), ecs) is not None
    assert fails(lambda c: c.list_clusters(), ecs) is None
    assert fails(CALLS["elbv2"], elb) is None
    world.faults.add({"service": "elbv2", "operations": ["DescribeTargetGroups"], "error": "503"})
    assert fails(lambda c: c.describe_target_groups(), elb).response["Error"]["Code"] == "ServiceUnavailable"
    assert fails(CALLS["elbv2"], elb) is None  # DescribeLoadBalancers: a form body's other Action
    ecs_rule, elb_rule = world.faults.rules()
    assert (ecs_rule["failed"], ecs_rule["passed"]) == (1, 0)  # a call it does not name is not counted
    assert (elb_rule["failed"], elb_rule["passed"]) == (1, 0)


def test_every_service_with_a_star_and_the_credentials_sts_hands_the_bot(world):
    world.faults.add(
        {"service": "*", "operations": ["ListClusters", "DescribeAlarms", "DescribeLoadBalancers"]}
    )
    for service, call in CALLS.items():
        assert fails(call, bot_client(world, service)) is not None, service
    world.faults.clear()
    world.faults.add({"service": "ecs"})
    sts = bot_client(world, "sts")
    creds = sts.assume_role(RoleArn="arn:aws:iam::210987654321:role/deploybot", RoleSessionName="deploybot")
    c = creds["Credentials"]
    assumed = bot_client(
        world,
        "ecs",
        aws_access_key_id=c["AccessKeyId"],
        aws_secret_access_key=c["SecretAccessKey"],
        aws_session_token=c["SessionToken"],
    )
    assert fails(CALLS["ecs"], assumed) is not None  # a role's credentials are the bot's too


def test_the_sandboxs_own_key_is_never_faulted_nor_counted(world):
    world.faults.add({"service": "*", "error": "timeout"})
    world.faults.add({"service": "*", "latency_ms": 60_000})
    world.provision()  # provisioning through the sandbox's clients: every call passes at once
    assert world.client("ecs").list_clusters()["clusterArns"]
    assert world.snapshot()["staging"]["web"]["weights"] == {"blue": 100, "green": 0}
    assert [(r["failed"], r["passed"]) for r in world.faults.rules()] == [(0, 0), (0, 0)]


def test_a_rate_fails_the_attempts_its_seeded_dice_say(world):
    world.faults.add({"service": "ecs", "rate": 0.5, "seed": 42})
    ecs = bot_client(world, "ecs")
    outcomes = [fails(CALLS["ecs"], ecs) is not None for _ in range(40)]
    dice = random.Random(42)
    assert outcomes == [dice.random() < 0.5 for _ in range(40)]  # reproducible from the seed
    assert 10 <= sum(outcomes) <= 30
    (rule,) = world.faults.rules()
    assert (rule["failed"], rule["passed"], rule["seed"]) == (sum(outcomes), 40 - sum(outcomes), 42)


async def test_a_fault_lasts_its_seconds_of_sandbox_clock(world):
    ecs = bot_client(world, "ecs")
    world.faults.add({"service": "ecs", "seconds": 6})
    world.faults.add({"service": "ecs", "operations": ["DescribeClusters"]})  # until cleared
    await world.clock.advance(5.9)
    assert fails(CALLS["ecs"], ecs) is not None
    assert [r["remaining_seconds"] for r in world.faults.rules()] == [pytest.approx(0.1), None]
    await world.clock.advance(0.2)
    assert fails(CALLS["ecs"], ecs) is None
    assert [r["operations"] for r in world.faults.rules()] == [["DescribeClusters"]]


def test_latency_is_added_to_the_call_that_passes(world):
    ecs = bot_client(world, "ecs")
    world.faults.add({"service": "ecs", "rate": 0, "latency_ms": 300})
    started = time.monotonic()
    assert fails(CALLS["ecs"], ecs) is None
    assert time.monotonic() - started >= 0.3
    assert world.faults.rules()[0]["passed"] == 1


def test_a_timeout_outlasts_the_read_timeout_and_clear_lets_it_go(world):
    assert fails(CALLS["elbv2"], bot_client(world, "elbv2")) is None  # moto makes its backend on first use
    world.faults.timeout_seconds = 1.5
    world.faults.add({"service": "elbv2", "error": "timeout"})
    started = time.monotonic()
    with pytest.raises(ReadTimeoutError):
        CALLS["elbv2"](bot_client(world, "elbv2", read_timeout=0.3))
    assert time.monotonic() - started >= 0.3
    assert world.faults.clear() == 1
    assert world.faults.rules() == []
    assert fails(CALLS["elbv2"], bot_client(world, "elbv2")) is None


async def test_the_bots_aws_adapter_uses_the_timeouts_of_its_settings(world, aws_env):
    settings = AwsSettings(endpoint_url=world.endpoint, max_attempts=1, read_timeout_seconds=0.3)
    aws = Aws(settings)
    assert "clusterArns" in await aws.call("ecs", "list_clusters")  # no rule yet (and a warm backend)
    config = aws.client("ecs").meta.config
    assert (config.read_timeout, config.connect_timeout) == (0.3, 5.0)
    world.faults.timeout_seconds = 1.5
    world.faults.add({"service": "ecs", "operations": ["ListClusters"], "error": "timeout"})
    with pytest.raises(PlatformError, match="Read timeout"):
        await aws.call("ecs", "list_clusters")
    assert world.faults.rules()[0]["failed"] == 2  # aws.max_attempts counts retries: 1 + 1 attempts


def test_the_aws_timeouts_are_settings():
    settings = load_settings(CONFIG, env={})
    assert (settings.aws.read_timeout_seconds, settings.aws.connect_timeout_seconds) == (5.0, 5.0)
    data = {"environments": {"staging": {"cluster": "c", "load_balancer": "lb"}}, "services": {"web": {}}}
    assert parse_settings(data).aws.read_timeout_seconds == 30.0
    for bad in (0, -1, "2", True):
        with pytest.raises(ConfigError, match="aws.read_timeout_seconds: expected a number of seconds > 0"):
            parse_settings({**data, "aws": {"read_timeout_seconds": bad}})


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"service": "s3"}, "service must be one of ecs, elbv2, cloudwatch or *"),
        ({"rate": 1}, "service must be one of"),
        ({"service": "ecs", "error": "418"}, "error must be one of 500, 503, throttle, timeout"),
        ({"service": "ecs", "rate": 1.5}, "rate must be within 0..1"),
        ({"service": "ecs", "rate": "half"}, "rate must be a number"),
        ({"service": "ecs", "seconds": -1}, "seconds must be > 0"),
        ({"service": "ecs", "latency_ms": -5}, "latency_ms must be >= 0"),
        ({"service": "ecs", "operations": ["update_service"]}, "AWS operation names such as UpdateService"),
        ({"service": "ecs", "operations": []}, "non-empty list"),
        ({"service": "ecs", "seed": "x"}, "seed must be an integer"),
        ({"service": "ecs", "operation": ["UpdateService"]}, "unknown key 'operation'"),
        (["ecs"], "a fault is a JSON object"),
    ],
)
def test_a_bad_fault_says_what_is_wrong(body, says):
    with pytest.raises(ValueError, match=None) as info:
        parse_rule(body)
    assert says in str(info.value)


async def test_the_control_routes_fault_the_bots_calls_only(sandbox, client):
    url = sandbox.slack_url + "/_sandbox/faults"
    assert sandbox.world.faults.timeout_seconds == 6.0  # the config's read timeout (5) and a margin
    async with aiohttp.ClientSession() as http:
        for bad, says in (
            ({"service": "s3"}, "service must be one of"),
            ({"service": "ecs", "rate": 2}, "rate must be within 0..1"),
            ({"service": "ecs", "seconds": -3}, "seconds must be > 0"),
            ({"service": "ecs", "error": "teapot"}, "error must be one of"),
        ):
            async with http.post(url, json=bad) as r:
                assert r.status == 400 and says in (await r.json())["error"], bad
        async with http.post(url, data=b"{not json", headers={"Content-Type": "application/json"}) as r:
            assert r.status == 400 and "not JSON" in (await r.json())["error"]
        # The emulator publishes metrics every tick with the sandbox's key: never failed, never counted.
        async with http.post(url, json={"service": "cloudwatch", "operations": ["PutMetricData"]}) as r:
            assert r.status == 200 and len((await r.json())["faults"]) == 1
        async with http.post(url, json={"service": "ecs", "rate": 0, "seed": 1}) as r:
            answer = await r.json()
            assert answer["added"]["seed"] == 1 and len(answer["faults"]) == 2
        added_at = sandbox.clock.now()

        r = await client.slash("alice", "/deploy", "web v2 to staging")
        assert r["status"] == 200
        message = await wait_terminal(client, 1)
        assert ": succeeded" in message["text"]

    metrics, ecs = (await client.faults())["faults"]  # GET, through the client scripts use
    assert ecs["passed"] > 0 and ecs["failed"] == 0  # the bot's ECS calls went through the rule
    assert sandbox.world._last_traffic_at > added_at  # the emulator published while the rule was on
    assert (metrics["failed"], metrics["passed"]) == (0, 0)
    assert (await client.clear_faults())["cleared"] == 2  # DELETE
    assert (await client.faults())["faults"] == []
