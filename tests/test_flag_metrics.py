"""A flag's per-variant metrics: the CloudWatch adapter against moto's server (boto3 publishes per
variant as an application would, flag_metrics reads them back in ONE GetMetricData call), and the
in-memory fake's per-variant numbers and record of reads."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto.core import enable_iam_authentication
from moto.server import ThreadedMotoServer

from bot.adapters.aws import Aws
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics, flag_scope
from bot.adapters.metrics.memory import HEALTHY, FlagRead, MemoryMetrics
from bot.app.ports import PlatformError
from bot.config.flags import FlagMetrics
from bot.config.model import AwsSettings
from bot.domain.analysis import GroupMetrics

DEFAULT = FlagMetrics()
NOTHING = GroupMetrics(requests=None, errors=None, latency_ms=None)


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def url(moto_url, aws_env):
    """The server, emptied."""
    urllib.request.urlopen(urllib.request.Request(moto_url + "/moto-api/reset", method="POST")).read()
    return moto_url


# Every datapoint is published at one fixed instant and read in a window around it: no test here reads
# the wall clock (moto keeps datapoints of any age).
AT = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def publish(url: str, flag: str, variant: str, env: str, requests: float, errors: float, latencies, *,
            metrics: FlagMetrics = DEFAULT) -> None:  # fmt: skip
    """What an application reports for one variant: a request count, an error count and latencies (ms).
    A session of its own, so it reads the credentials in the environment now."""
    cw = boto3.session.Session().client("cloudwatch", endpoint_url=url, region_name="us-east-1")
    dims = [{"Name": k, "Value": v} for k, v in flag_scope(metrics, flag, variant, env).labels]
    at = AT
    data = [
        {"MetricName": metrics.requests, "Dimensions": dims, "Value": requests, "Unit": "Count", "Timestamp": at},
        {"MetricName": metrics.errors, "Dimensions": dims, "Value": errors, "Unit": "Count", "Timestamp": at},
    ] + [
        {"MetricName": metrics.latency, "Dimensions": dims, "Value": ms, "Unit": "Milliseconds", "Timestamp": at}
        for ms in latencies
    ]  # fmt: skip
    cw.put_metric_data(Namespace=metrics.namespace, MetricData=data)


def window() -> tuple[datetime, datetime]:
    return AT - timedelta(minutes=5), AT + timedelta(minutes=1)


def reader(url: str) -> tuple[CloudWatchMetrics, list[str]]:
    """The adapter on moto, and every GetMetricData call its client makes."""
    cloud = CloudWatchMetrics(Aws(AwsSettings(endpoint_url=url, max_attempts=1)))
    seen: list[str] = []
    cloud.aws.client("cloudwatch").meta.events.register(  # type: ignore[attr-defined]
        "before-call.cloudwatch.GetMetricData", lambda **kw: seen.append("GetMetricData")
    )
    return cloud, seen


async def test_every_variant_is_read_back_in_one_call(url):
    publish(url, "checkout-v2", "on", "staging", 400, 8, [100, 140, 120])
    publish(url, "checkout-v2", "off", "staging", 1600, 16, [80, 80])
    publish(url, "checkout-v2", "on", "production", 9999, 999, [900])  # another environment
    publish(url, "search-ranking", "on", "staging", 7777, 777, [700])  # another flag, same variant name
    cloud, calls = reader(url)
    start, end = window()
    got = await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on", "off"], start, end)
    assert calls == ["GetMetricData"]
    assert got == {
        "on": GroupMetrics(requests=400, errors=8, latency_ms=pytest.approx(120.0)),
        "off": GroupMetrics(requests=1600, errors=16, latency_ms=pytest.approx(80.0)),
    }
    worst = await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on"], start, end, "Maximum")
    assert worst["on"].latency_ms == pytest.approx(140.0)  # milliseconds as published, not scaled


async def test_a_variant_with_no_data_has_none_values(url):
    publish(url, "checkout-v2", "off", "staging", 100, 1, [80])
    cloud, calls = reader(url)
    start, end = window()
    got = await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on", "off"], start, end)
    assert got["on"] == NOTHING and got["off"].requests == 100
    assert await cloud.flag_metrics(None, DEFAULT, "nope", "staging", ["on"], start, end) == {"on": NOTHING}
    assert await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", [], start, end) == {}
    assert calls == ["GetMetricData", "GetMetricData"]  # no variants: no call


async def test_the_namespace_dimensions_and_metric_names_come_from_the_config(url):
    shop = FlagMetrics(
        namespace="Shop/Experiments",
        flag_dimension="feature",
        variant_dimension="arm",
        environment_dimension="stage",
        requests="Calls",
        errors="Failures",
        latency="DurationMs",
    )
    publish(url, "checkout-v2", "on", "staging", 50, 5, [300], metrics=shop)
    cloud, _ = reader(url)
    start, end = window()
    assert await cloud.flag_metrics(None, shop, "checkout-v2", "staging", ["on"], start, end) == {
        "on": GroupMetrics(requests=50, errors=5, latency_ms=pytest.approx(300.0))
    }
    # the default names see nothing of it
    assert await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on"], start, end) == {
        "on": NOTHING
    }
    assert [k for k, _ in flag_scope(shop, "f", "v", "e").labels] == ["feature", "arm", "stage"]


async def test_access_denied_is_a_platform_error(url, monkeypatch):
    # moto's IAM simulation: a publisher allowed PutMetricData only (moto names CloudWatch "monitoring").
    iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1")
    iam.create_user(UserName="publisher")
    policy = {"Effect": "Allow", "Action": "monitoring:PutMetricData", "Resource": "*"}
    iam.put_user_policy(
        UserName="publisher",
        PolicyName="publish-only",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [policy]}),
    )
    key = iam.create_access_key(UserName="publisher")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])  # the bot runs as the publisher
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    start, end = window()
    with enable_iam_authentication():
        publish(url, "checkout-v2", "on", "staging", 10, 0, [80])  # allowed: proves the key is in use
        cloud, _ = reader(url)
        with pytest.raises(PlatformError) as err:
            await cloud.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on"], start, end)
    assert str(err.value).startswith("CLOUDWATCH GetMetricData failed:")
    assert "AccessDenied" in str(err.value) and "monitoring:GetMetricData" in str(err.value)


async def test_a_forbidden_query_is_a_platform_error_not_missing_data():
    # GetMetricData answers 200 with a result whose StatusCode is Forbidden (a cross-account metric the
    # role may not read); moto never does, so a scripted Aws.call stands in for CloudWatch here.
    class Forbidding:
        async def call(self, api, operation, role_arn=None, /, **params):
            return {
                "MetricDataResults": [
                    {"Id": q["Id"], "StatusCode": "Forbidden", "Values": [], "Timestamps": []}
                    for q in params["MetricDataQueries"]
                ],
                "Messages": [{"Code": "Forbidden", "Value": "not authorized for DeployBot/Flags"}],
            }

    start, end = window()
    with pytest.raises(PlatformError, match="g0_requests: Forbidden: not authorized for DeployBot/Flags"):
        await CloudWatchMetrics(Forbidding()).flag_metrics(
            None, DEFAULT, "checkout-v2", "staging", ["on"], start, end
        )


def test_each_variant_query_names_namespace_and_dimensions_in_the_canonical_order():
    queries: list[dict] = []

    class Recording:
        async def call(self, api, operation, role_arn=None, /, **params):
            queries.extend(params["MetricDataQueries"])
            return {"MetricDataResults": []}

    start, end = window()
    asyncio.run(
        CloudWatchMetrics(Recording()).flag_metrics(
            "arn:aws:iam::1:role/r", DEFAULT, "checkout-v2", "staging", ["on", "off", "on"], start, end, "p99"
        )
    )
    assert [q["Id"] for q in queries] == [
        f"g{i}_{s}" for i in range(2) for s in ("requests", "errors", "latency")
    ]
    first = queries[0]["MetricStat"]
    assert first["Metric"] == {
        "Namespace": "DeployBot/Flags",
        "MetricName": "Requests",
        "Dimensions": [
            {"Name": "Flag", "Value": "checkout-v2"},
            {"Name": "Variant", "Value": "on"},
            {"Name": "Environment", "Value": "staging"},
        ],
    }
    assert [q["MetricStat"]["Stat"] for q in queries[:3]] == ["Sum", "Sum", "p99"]
    assert first["Period"] == int((end - start).total_seconds())


# --- the in-memory fake -------------------------------------------------------------------------------------
async def test_the_memory_fake_answers_per_variant_and_environment_and_records_reads():
    fake = MemoryMetrics()
    bad = GroupMetrics(requests=100, errors=20, latency_ms=400)
    fake.set_variant("checkout-v2", "on", bad)
    fake.set_variant("checkout-v2", "on", HEALTHY, env="production")
    start, end = window()
    staging = await fake.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on", "off"], start, end)
    production = await fake.flag_metrics(
        None, DEFAULT, "checkout-v2", "production", ["on"], start, end, "p99"
    )
    assert staging == {"on": bad, "off": HEALTHY} and production == {"on": HEALTHY}
    assert fake.flag_reads == [
        FlagRead("checkout-v2", "staging", ("on", "off"), start, end, "Average", "DeployBot/Flags"),
        FlagRead("checkout-v2", "production", ("on",), start, end, "p99", "DeployBot/Flags"),
    ]
    fake.fail("flag_metrics", PlatformError("CLOUDWATCH GetMetricData", "throttled"))
    with pytest.raises(PlatformError, match="throttled"):
        await fake.flag_metrics(None, DEFAULT, "checkout-v2", "staging", ["on"], start, end)
    assert fake.calls == ["flag_metrics"] * 3
