"""The bot's own health as Prometheus metrics (prometheus-client), one CollectorRegistry per Telemetry (so
two bots or two tests in one process never share a counter). What feeds it:
- the store's writes (`observe_store`): deployments finished by strategy and outcome, steps and their
  durations, analysis measurements by verdict, read from what the runner writes (the same transactions
  that record them);
- bot.adapters.aws.Aws.call: AWS calls, errors and latency by operation;
- the CloudWatch batcher (metrics/batch.py): reads, queries and calls per analysis tick;
- handlers/slack_telemetry.py: Slack Web API calls and 429s;
- at scrape time (`render`): deployments active by state and strategy, the notifier's outbox lag, and the
  leases held (`leases_held`, a callback the wiring sets for a replica: 0 for the only bot);
- `watch_loop`: the event loop's lag (how late a 0.1 s timer fires)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from bot.domain.model import Deployment

CONTENT_TYPE = CONTENT_TYPE_LATEST
NOTIFIER_CONSUMER = "slack"  # handlers/notifier.py's outbox consumer (its lag is the one users feel)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STEP_BUCKETS = (0.1, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
LAG_WINDOW = 600  # samples, one per 0.1 s
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class Telemetry:
    def __init__(self, clock_now: Callable[[], float] = time.time):
        self.registry = CollectorRegistry(auto_describe=True)
        self.now = clock_now
        r = self.registry
        self.deployments_active = Gauge(
            "deploybot_deployments_active",
            "Deployments not yet finished, by state and strategy",
            ["state", "strategy"],
            registry=r,
        )
        self.deployments_finished = Counter(
            "deploybot_deployments_finished",
            "Deployments that reached an end, by strategy and outcome (succeeded, rolled_back, failed, cancelled)",
            ["strategy", "outcome"],
            registry=r,
        )
        self.steps = Counter(
            "deploybot_steps_started", "Plan steps started, by step kind", ["step"], registry=r
        )
        self.step_seconds = Histogram(
            "deploybot_step_duration_seconds",
            "How long each plan step ran (clock seconds), by step kind",
            ["step"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.verdicts = Counter(
            "deploybot_analysis_measurements",
            "Analysis measurements taken, by verdict",
            ["verdict"],
            registry=r,
        )
        self.analysis_read_seconds = Histogram(
            "deploybot_analysis_read_seconds",
            "Wall seconds from asking for a window's metrics to having them (batching wait included)",
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.aws_calls = Counter(
            "deploybot_aws_calls", "AWS API calls, by operation", ["operation"], registry=r
        )
        self.aws_errors = Counter(
            "deploybot_aws_errors",
            "AWS API calls that failed, by operation and code",
            ["operation", "code"],
            registry=r,
        )
        self.aws_seconds = Histogram(
            "deploybot_aws_call_duration_seconds",
            "Wall seconds per AWS call (botocore's retries included), by operation",
            ["operation"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.metric_reads = Counter(
            "deploybot_metric_reads", "Metric windows read (one per measurement)", registry=r
        )
        self.metric_queries = Counter(
            "deploybot_metric_queries", "GetMetricData queries asked for", registry=r
        )
        self.metric_flushes = Counter(
            "deploybot_metric_batches", "Batches of coalesced metric reads sent", registry=r
        )
        self.metric_excess = Counter(
            "deploybot_metric_batch_excess_calls",
            "GetMetricData calls made for an analysis tick beyond ceil(its queries / 500); 0 when coalesced",
            registry=r,
        )
        self.slack_calls = Counter(
            "deploybot_slack_calls",
            "Slack Web API HTTP responses, by method and status",
            ["method", "status"],
            registry=r,
        )
        self.slack_rate_limited = Counter(
            "deploybot_slack_rate_limited", "Slack Web API 429 answers, by method", ["method"], registry=r
        )
        self.outbox_lag = Gauge(
            "deploybot_outbox_lag_events",
            "Outbox events the Slack notifier has not delivered yet (counted up to 1000)",
            registry=r,
        )
        self.outbox_oldest = Gauge(
            "deploybot_outbox_undelivered_oldest_id",
            "Outbox id of the oldest event the Slack notifier has not delivered (0: none)",
            registry=r,
        )
        self.leases = Gauge(
            "deploybot_leases_held",
            "Deployment leases this replica holds (0 while the store has no leases: one replica)",
            registry=r,
        )
        self.leases_held: Callable[[], Awaitable[int] | int] = lambda: 0
        self.loop_lag = Histogram(
            "deploybot_event_loop_lag_seconds",
            "How late the event loop ran a timer (sampled every 0.1 s)",
            buckets=LAG_BUCKETS,
            registry=r,
        )
        self.loop_lag_recent = Gauge(
            "deploybot_event_loop_lag_recent_seconds",
            f"Event loop lag over the last {LAG_WINDOW} samples (about a minute), by quantile",
            ["q"],
            registry=r,
        )
        self._step_started: dict[int, tuple[str, float]] = {}
        self._loop_lags: list[float] = []

    # ------------------------------------------------------------------------------------ the store

    def observe_store(self, store: Any) -> Any:
        """Wrap the store's `transition` and `save_progress` (whatever store class it is) to count what
        they write; returns the store."""
        transition, save_progress = store.transition, store.save_progress

        async def observed_transition(*args: Any, **kwargs: Any) -> Any:
            d = await transition(*args, **kwargs)
            self._saw(d, ())
            return d

        async def observed_save_progress(*args: Any, **kwargs: Any) -> Any:
            d = await save_progress(*args, **kwargs)
            audit = [*kwargs.get("audit", ()), *([kwargs["event"]] if kwargs.get("event") else [])]
            self._saw(d, audit)
            return d

        setattr(store, "transition", observed_transition)  # noqa: B010 - an instance's method, wrapped
        setattr(store, "save_progress", observed_save_progress)  # noqa: B010
        return store

    def _saw(self, d: Any, audit: Sequence[tuple[str, str, dict]]) -> None:
        if not isinstance(d, Deployment):
            return
        for _actor, action, details in audit:
            if action == "measurement":
                self.verdicts.labels(str(details.get("verdict"))).inc()
            elif action in ("step_started", "rollback_step_started"):
                kind = str(details.get("step") or "step")
                self._step(d.id, "rollback_" + kind if action.startswith("rollback") else kind)
        if d.state.terminal:
            self._end_step(d.id)
            self.deployments_finished.labels(d.strategy, d.state.value).inc()

    def _step(self, deployment_id: int, kind: str) -> None:
        self._end_step(deployment_id)
        self.steps.labels(kind).inc()
        self._step_started[deployment_id] = (kind, self.now())

    def _end_step(self, deployment_id: int) -> None:
        started = self._step_started.pop(deployment_id, None)
        if started is not None:
            kind, at = started
            self.step_seconds.labels(kind).observe(max(0.0, self.now() - at))

    # -------------------------------------------------------------------------------------- AWS

    def aws_call(self, operation: str, seconds: float, error_code: str | None) -> None:
        self.aws_calls.labels(operation).inc()
        self.aws_seconds.labels(operation).observe(seconds)
        if error_code is not None:
            self.aws_errors.labels(operation, error_code).inc()

    def metric_flush(self, callers: int, queries: int, calls: int, excess: int) -> None:
        """A batch of coalesced reads went out (bot.adapters.metrics.batch.BatchObserver)."""
        self.metric_flushes.inc()
        self.metric_reads.inc(callers)
        self.metric_queries.inc(queries)
        if excess > 0:
            self.metric_excess.inc(excess)

    def metric_read(self, seconds: float) -> None:
        self.analysis_read_seconds.observe(seconds)

    # ----------------------------------------------------------------------------------- scraping

    async def render(self, store: Any) -> bytes:
        """The text exposition, after reading the store's current figures."""
        active = await store.active()
        self.deployments_active.clear()
        for d in active:
            self.deployments_active.labels(str(d.state), d.strategy).inc()
        pending = await store.outbox_after(NOTIFIER_CONSUMER, 1000)
        self.outbox_lag.set(len(pending))
        self.outbox_oldest.set(pending[0].id if pending else 0)
        held = self.leases_held()
        self.leases.set(await held if not isinstance(held, int) else held)
        self._lag_quantiles()
        return generate_latest(self.registry)

    async def watch_loop(self, every: float = 0.1) -> None:
        """Sample the event loop's lag until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(every)
            lag = max(0.0, loop.time() - before - every)
            self.loop_lag.observe(lag)
            self._loop_lags.append(lag)
            if len(self._loop_lags) > LAG_WINDOW:
                del self._loop_lags[: len(self._loop_lags) - LAG_WINDOW]

    def _lag_quantiles(self) -> None:
        lags = sorted(self._loop_lags)
        for q, name in ((0.5, "0.5"), (0.99, "0.99"), (1.0, "1")):
            value = lags[min(len(lags) - 1, int(len(lags) * q))] if lags else 0.0
            self.loop_lag_recent.labels(name).set(value)
