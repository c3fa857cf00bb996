"""Coalesced AWS reads. The CloudWatch batcher (bot/adapters/metrics/batch.py): concurrent reads of one
window share one GetMetricData call of at most 500 queries and each gets exactly its own series back —
checked against moto through boto3 (each read alone gives the same answer) and, for the limits and
failures, over a scripted caller. DescribeServices (bot/adapters/platforms/ecs_batch.py): 10 a call."""

from __future__ import annotations

import asyncio
import re
import zlib
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto.server import ThreadedMotoServer
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from bot.adapters.aws import Aws
from bot.adapters.metrics.batch import MetricDataBatcher
from bot.adapters.metrics.cloudwatch import NAMESPACE, CloudWatchMetrics
from bot.adapters.platforms.ecs import EcsPlatform
from bot.adapters.platforms.ecs_batch import DescribeServicesBatcher
from bot.adapters.telemetry import Telemetry
from bot.app.ports import MetricScope, PlatformError
from bot.config.load import parse_settings
from bot.config.model import AwsSettings

END = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
START = END - timedelta(seconds=60)


def scope(i: int) -> MetricScope:
    return MetricScope((("TargetGroup", f"targetgroup/tg{i}/{i:016x}"), ("LoadBalancer", "app/lb/1")))


@pytest.fixture(scope="module")
def moto_url():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def published(moto_url, aws_env):
    """40 target groups, each with its own requests, errors and latency inside the window."""
    cw = boto3.client("cloudwatch", endpoint_url=moto_url, region_name="us-east-1")
    at = START + timedelta(seconds=10)
    for i in range(40):
        dims = [{"Name": k, "Value": v} for k, v in scope(i).labels]
        cw.put_metric_data(
            Namespace=NAMESPACE,
            MetricData=[
                {"MetricName": "RequestCount", "Dimensions": dims, "Timestamp": at, "Value": 100.0 + i},
                {
                    "MetricName": "HTTPCode_Target_5XX_Count",
                    "Dimensions": dims,
                    "Timestamp": at,
                    "Value": float(i % 7),
                },
                {
                    "MetricName": "TargetResponseTime",
                    "Dimensions": dims,
                    "Timestamp": at,
                    "Value": 0.01 * (i + 1),
                },
            ],
        )
    return moto_url


async def test_concurrent_reads_share_one_call_and_each_gets_its_own_groups_back(published):
    telemetry = Telemetry()
    aws = Aws(AwsSettings(endpoint_url=published, max_attempts=2), observer=telemetry)
    cloud = CloudWatchMetrics(aws, MetricDataBatcher(aws, observer=telemetry))
    pairs = [{"canary": scope(2 * k), "stable": scope(2 * k + 1)} for k in range(20)]  # 20 reads x 6 queries
    together = await asyncio.gather(*(cloud.slot_metrics(None, p, START, END) for p in pairs))
    assert calls(telemetry) == 1
    assert figure(telemetry, "deploybot_metric_batch_excess_calls_total") == 0
    alone = [await cloud.slot_metrics(None, p, START, END) for p in pairs]  # one call each
    assert calls(telemetry) == 21
    assert together == alone
    for k, read in enumerate(together):
        for name, i in (("canary", 2 * k), ("stable", 2 * k + 1)):
            assert read[name].requests == 100.0 + i
            assert read[name].errors == float(i % 7)
            assert read[name].latency_ms == pytest.approx(10.0 * (i + 1))
    assert figure(telemetry, "deploybot_metric_reads_total") == 40
    assert figure(telemetry, "deploybot_metric_batches_total") == 21
    # the same window read again one by one: that tick took 20 calls more than its 240 queries needed
    assert figure(telemetry, "deploybot_metric_batch_excess_calls_total") == 20


def calls(telemetry: Telemetry) -> float:
    return figure(telemetry, "deploybot_aws_calls_total", operation="CLOUDWATCH GetMetricData")


def figure(telemetry: Telemetry, sample: str, **labels: str) -> float:
    """A sample of the text exposition, read back with prometheus-client's own parser."""
    text = generate_latest(telemetry.registry).decode()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return 0.0


class Scripted:
    """Stands in for Aws.call: answers each query with one value derived from its id, or fails."""

    def __init__(self, fail: Exception | None = None, refuse: str | None = None):
        self.requests: list[dict] = []
        self.fail, self.refuse = fail, refuse

    async def call(self, api, operation, role_arn=None, /, **params):
        self.requests.append(params)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        results = []
        for q in params["MetricDataQueries"]:
            if self.refuse and q["Id"].endswith(self.refuse):
                results.append({"Id": q["Id"], "StatusCode": "Forbidden"})
            else:
                own = re.sub(r"^c\d+_", "", q["Id"])  # as its caller named it
                results.append({"Id": q["Id"], "Timestamps": [params["StartTime"]], "Values": [value(own)]})
        return {"MetricDataResults": results, "Messages": [{"Value": "not allowed"}] if self.refuse else []}


def value(qid: str) -> float:
    return float(zlib.crc32(qid.encode()))


def queries(n: int, tag: str) -> list[dict]:
    return [{"Id": f"{tag}_{j}", "MetricStat": {"Period": 60}} for j in range(n)]


async def test_501_queries_take_two_calls_and_every_caller_gets_its_values():
    cloud = Scripted()
    batcher = MetricDataBatcher(cloud)
    reads = [queries(3, f"r{i}") for i in range(167)]  # 501 queries
    out = await asyncio.gather(*(batcher.get(None, q, START, END) for q in reads))
    assert len(cloud.requests) == 2
    assert sorted(len(r["MetricDataQueries"]) for r in cloud.requests) == [1, 500]
    for q, series in zip(reads, out, strict=True):
        assert set(series) == {x["Id"] for x in q}  # its own ids, as it named them
        assert series == {x["Id"]: {START: value(x["Id"])} for x in q}
    assert batcher.excess_calls((None, START, END)) == 0


async def test_an_aws_error_reaches_every_waiter_of_the_call():
    cloud = Scripted(fail=PlatformError("CLOUDWATCH GetMetricData", "Throttling: slow down", "Throttling"))
    batcher = MetricDataBatcher(cloud)
    out = await asyncio.gather(
        *(batcher.get(None, queries(3, f"r{i}"), START, END) for i in range(5)), return_exceptions=True
    )
    assert len(cloud.requests) == 1
    assert all(isinstance(e, PlatformError) and "Throttling" in str(e) for e in out)
    cloud.fail = None
    assert await batcher.get(None, queries(1, "again"), START, END) == {"again_0": {START: value("again_0")}}


async def test_a_query_cloudwatch_refuses_fails_only_the_read_it_belongs_to():
    cloud = Scripted(refuse="bad_0")
    batcher = MetricDataBatcher(cloud)
    good, bad = await asyncio.gather(
        batcher.get(None, queries(2, "good"), START, END),
        batcher.get(None, queries(1, "bad"), START, END),
        return_exceptions=True,
    )
    assert len(cloud.requests) == 1
    assert set(good) == {"good_0", "good_1"}
    assert isinstance(bad, PlatformError) and "bad_0: Forbidden: not allowed" in str(bad)


async def test_other_windows_and_accounts_do_not_share_a_call_and_a_cancelled_read_is_left_out():
    cloud = Scripted()
    batcher = MetricDataBatcher(cloud)
    later = asyncio.ensure_future(batcher.get(None, queries(2, "gone"), START, END))
    reads = [
        batcher.get(None, queries(1, "a"), START, END),
        batcher.get(None, queries(1, "b"), START + timedelta(seconds=5), END + timedelta(seconds=5)),
        batcher.get("arn:aws:iam::2:role/x", queries(1, "c"), START, END),
    ]
    await asyncio.sleep(0)
    later.cancel()
    await asyncio.gather(*reads)
    assert len(cloud.requests) == 3
    asked = [q["Id"] for r in cloud.requests for q in r["MetricDataQueries"]]
    assert not any("gone" in qid for qid in asked)


# --- DescribeServices (bot/adapters/platforms/ecs_batch.py) --------------------------------------------------
class ScriptedEcs:
    def __init__(self, missing: str = ""):
        self.requests: list[dict] = []
        self.missing = missing

    async def call(self, api, operation, role_arn=None, /, **params):
        assert (api, operation) == ("ecs", "describe_services")
        self.requests.append(params)
        await asyncio.sleep(0)
        names = params["services"]
        return {
            "services": [
                {"serviceName": n, "clusterArn": params["cluster"]} for n in names if n != self.missing
            ],
            "failures": [
                {"arn": f"arn:aws:ecs:us-east-1:1:service/{params['cluster']}/{n}", "reason": "MISSING"}
                for n in names
                if n == self.missing
            ],
        }


async def test_describe_services_coalesces_by_cluster_ten_a_call_and_fails_only_the_missing_one():
    ecs = ScriptedEcs(missing="gone")
    batcher = DescribeServicesBatcher(ecs)
    names = [f"svc{i}" for i in range(12)]
    asked = [(None, "prod", n) for n in [*names, "svc0", "gone"]] + [(None, "staging", "svc0")]
    out = await asyncio.gather(*(batcher.service(*a) for a in asked), return_exceptions=True)
    assert sorted(len(r["services"]) for r in ecs.requests) == [1, 3, 10]  # prod: 13 names; staging: 1
    assert all(len(set(r["services"])) == len(r["services"]) for r in ecs.requests)  # each asked once
    for (_, cluster, name), got in zip(asked, out, strict=True):
        if name == "gone":
            assert isinstance(got, PlatformError) and "service gone in cluster prod: MISSING" in str(got)
        else:
            assert got == {"serviceName": name, "clusterArn": cluster}


# --- DescribeRules pages (a listener with more rules than one page: 200 services in one ALB) ---------------
class PagedElb:
    """Answers the reads that find a route: the service's rule is on the second page of DescribeRules."""

    def __init__(self):
        self.rule_pages: list[dict] = []

    async def call(self, api, operation, role_arn=None, /, **params):
        if operation == "describe_target_groups":
            return {"TargetGroups": [{"TargetGroupArn": f"arn:tg/{params['Names'][0]}"}]}
        if operation == "describe_load_balancers":
            return {"LoadBalancers": [{"LoadBalancerArn": "arn:lb/1"}]}
        if operation == "describe_listeners":
            return {"Listeners": [{"Port": 80, "ListenerArn": "arn:listener/1"}]}
        assert operation == "describe_rules"
        self.rule_pages.append(params)
        other = [
            {"RuleArn": f"arn:rule/{i}", "Actions": [forward(f"arn:tg/other{i}-blue", 100)]} for i in range(3)
        ]
        if "Marker" not in params:
            return {"Rules": other, "NextMarker": "page2"}
        mine = forward("arn:tg/web-staging-blue", 90, "arn:tg/web-staging-green", 10)
        return {"Rules": [{"RuleArn": "arn:rule/web", "Actions": [mine]}]}


def forward(*groups_and_weights) -> dict:
    pairs = zip(groups_and_weights[::2], groups_and_weights[1::2], strict=True)
    return {
        "Type": "forward",
        "ForwardConfig": {"TargetGroups": [{"TargetGroupArn": g, "Weight": w} for g, w in pairs]},
    }


async def test_the_route_is_found_on_a_later_page_of_the_listeners_rules():
    settings = parse_settings(
        {
            "bot": {"default_environment": "staging"},
            "environments": {"staging": {"load_balancer": "lb-staging"}},
            "services": {"web": {"ecs_service": "web-{slot}"}},
        }
    )
    elb = PagedElb()
    weights = await EcsPlatform(elb).weights(settings.target("web", "staging"))
    assert weights == {"blue": 90, "green": 10}
    assert [p.get("Marker") for p in elb.rule_pages] == [None, "page2"]
