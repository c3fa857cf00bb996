"""Every adapter implements its port: statically (mypy checks these annotated assignments) and at run
time (each protocol method exists on each adapter as a coroutine function). No network: constructing the
AWS adapters makes no call."""

from __future__ import annotations

import inspect

from bot.adapters.aws import Aws
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.ecs import EcsPlatform
from bot.adapters.platforms.memory import MemoryPlatform
from bot.app.ports import Metrics, MetricScope, Platform
from bot.config.model import AwsSettings


def methods(protocol: type) -> list[str]:
    return [n for n, v in vars(protocol).items() if inspect.iscoroutinefunction(v)]


def test_every_adapter_implements_its_port() -> None:
    aws = Aws(AwsSettings(endpoint_url="http://127.0.0.1:1"))
    platforms: list[Platform] = [EcsPlatform(aws), MemoryPlatform()]
    metrics: list[Metrics] = [CloudWatchMetrics(aws), MemoryMetrics()]
    assert len(methods(Platform)) == 15 and len(methods(Metrics)) == 5
    for adapter, protocol in [*((p, Platform) for p in platforms), *((m, Metrics) for m in metrics)]:
        for name in methods(protocol):
            assert inspect.iscoroutinefunction(getattr(adapter, name)), (type(adapter).__name__, name)


def test_a_metric_scope_reads_its_labels() -> None:
    scope = MetricScope((("TargetGroup", "targetgroup/web/1"), ("LoadBalancer", "app/lb/2")))
    assert scope.get("LoadBalancer") == "app/lb/2" and scope.get("slot") is None
