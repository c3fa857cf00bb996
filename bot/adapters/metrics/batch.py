"""Coalescing GetMetricData across callers: every read that arrives within one short window (the same loop
turn, or `window_seconds`) for the same account and the same StartTime/EndTime is merged into as few
calls as the 500-query limit allows, and each caller gets back exactly its own series. Deployments whose
analyses come due at the same analysis tick (bot.app.measure aligns them) thus share one call per 500
queries instead of making one each. The Metrics protocol does not change: CloudWatchMetrics.series()
goes through this.

Ids are renamed per caller (`c{n}_{id}`) when several share a call, so their ids never collide, and named back on the way out. A
call that fails (AWS's error, after botocore's retries) fails every caller with a query in it, as each
one's own call would have; a query CloudWatch answers Forbidden / InternalError fails only the caller it
belongs to. Either way the caller's measurement is an "error" and is taken again on its own schedule, as
before. A caller cancelled before the flush is left out of the call."""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from bot.adapters.aws import Answer, Caller
from bot.app.ports import PlatformError
from bot.tasks import detached_task

MAX_QUERIES = 500  # GetMetricData's limit per request
Series = dict[str, dict[datetime, float]]
Key = tuple[str | None, datetime, datetime]  # account (role), StartTime, EndTime


class BatchObserver(Protocol):
    """What the batcher tells (bot.adapters.telemetry.Telemetry): each flush's callers, queries, calls
    and the calls its tick took beyond ceil(queries / 500) so far; each read's wall seconds."""

    def metric_flush(self, callers: int, queries: int, calls: int, excess: int) -> None: ...

    def metric_read(self, seconds: float) -> None: ...


@dataclass(eq=False)
class _Read:
    queries: list[dict[str, Any]]
    future: asyncio.Future[Series]
    prefix: str
    series: Series = field(default_factory=dict)
    failed: BaseException | None = None
    pending_calls: int = 0


@dataclass
class _Pending:
    reads: list[_Read] = field(default_factory=list)
    queries: int = 0


class MetricDataBatcher:
    """`aws` is bot.adapters.aws.Aws (or anything with its call()). `window_seconds` 0: the reads that
    arrive before the loop has turned `turns` times (the deployments woken by one analysis tick) go
    together; > 0: also those arriving within that many wall seconds of the first."""

    def __init__(
        self,
        aws: Caller,
        *,
        window_seconds: float = 0.0,
        turns: int = 3,
        max_queries: int = MAX_QUERIES,
        observer: BatchObserver | None = None,
    ):
        self.aws, self.window, self.turns, self.max_queries = aws, window_seconds, turns, max_queries
        self.observer = observer
        self._pending: dict[Key, _Pending] = {}
        self._serial = 0
        self._tasks: set[asyncio.Task[None]] = set()
        # per tick (key) seen lately: (queries, calls) so far, to tell a tick split over two flushes
        self.ticks: OrderedDict[Key, tuple[int, int]] = OrderedDict()

    async def get(
        self, account: str | None, queries: list[dict[str, Any]], start: datetime, end: datetime
    ) -> Series:
        """query id -> {timestamp: value} for `queries` over [start, end), read together with whatever
        other reads of the same window arrive with it."""
        if not queries:
            return {}
        loop = asyncio.get_running_loop()
        key: Key = (account, start, end)
        pending = self._pending.get(key)
        if pending is None:
            pending = self._pending[key] = _Pending()
            self._schedule(loop, key)
        self._serial += 1
        read = _Read(list(queries), loop.create_future(), f"c{self._serial}_")
        pending.reads.append(read)
        pending.queries += len(queries)
        began = time.monotonic()
        try:
            return await read.future
        finally:
            if self.observer is not None:
                self.observer.metric_read(time.monotonic() - began)

    def _schedule(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        def turn(left: int) -> None:
            if left > 0:
                loop.call_soon(turn, left - 1)
            else:
                self._flush(loop, key)

        if self.window > 0:
            loop.call_later(self.window, turn, self.turns)
        else:
            loop.call_soon(turn, self.turns)

    def _flush(self, loop: asyncio.AbstractEventLoop, key: Key) -> None:
        pending = self._pending.pop(key, None)
        if pending is None:
            return
        reads = [r for r in pending.reads if not r.future.done()]  # cancelled callers: not asked for
        if len(reads) == 1:
            reads[0].prefix = ""  # alone in its call: its ids as it named them
        flat = [(read, q) for read in reads for q in read.queries]
        chunks = [flat[i : i + self.max_queries] for i in range(0, len(flat), self.max_queries)]
        for chunk in chunks:
            for read in dict.fromkeys(r for r, _ in chunk):
                read.pending_calls += 1
        self._count_tick(key, len(reads), len(flat), len(chunks))
        for chunk in chunks:
            task = detached_task(self._call(key, chunk), "get-metric-data")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _count_tick(self, key: Key, callers: int, queries: int, calls: int) -> None:
        excess = self.excess_calls(key)
        before_q, before_c = self.ticks.pop(key, (0, 0))
        self.ticks[key] = (before_q + queries, before_c + calls)
        while len(self.ticks) > 256:
            self.ticks.popitem(last=False)
        if self.observer is not None:
            self.observer.metric_flush(callers, queries, calls, self.excess_calls(key) - excess)

    def excess_calls(self, key: Key) -> int:
        """Calls made for a tick beyond ceil(its queries / 500): 0 when it was read in as few as possible."""
        queries, calls = self.ticks.get(key, (0, 0))
        return calls - math.ceil(queries / self.max_queries)

    async def _call(self, key: Key, chunk: list[tuple[_Read, dict[str, Any]]]) -> None:
        account, start, end = key
        names: dict[str, tuple[_Read, str]] = {}
        queries = []
        for read, q in chunk:
            qid = read.prefix + q["Id"]
            names[qid] = (read, q["Id"])
            queries.append({**q, "Id": qid})
            read.series.setdefault(q["Id"], {})
        readers = list(dict.fromkeys(r for r, _ in chunk))
        try:
            _split(names, *await _get_metric_data(self.aws, account, queries, start, end))
        except BaseException as exc:  # handed to every caller in this call, then re-raised if fatal
            for read in readers:
                read.failed = read.failed or exc
            if not isinstance(exc, Exception):
                raise
        finally:
            for read in readers:
                read.pending_calls -= 1
                if read.pending_calls == 0:
                    _answer(read)


def _split(names: dict[str, tuple[_Read, str]], series: Series, refused: dict[str, str]) -> None:
    """Each caller's values under its own ids; a refused query fails its caller's read."""
    for qid, values in series.items():
        if qid in names:  # not an id nobody asked for
            read, own = names[qid]
            read.series.setdefault(own, {}).update(values)
    for qid, why in refused.items():
        if qid in names:
            read, own = names[qid]
            read.failed = read.failed or PlatformError("CLOUDWATCH GetMetricData", f"{own}: {why}")


def _answer(read: _Read) -> None:
    if read.future.done():
        return
    if read.failed is not None and not isinstance(read.failed, Exception):
        read.future.cancel()  # the call was cancelled (shutting down): so are its readers
    elif read.failed is not None:
        read.future.set_exception(read.failed)
    else:
        read.future.set_result(read.series)


async def _get_metric_data(
    aws: Caller, account: str | None, queries: list[dict[str, Any]], start: datetime, end: datetime
) -> tuple[Series, dict[str, str]]:
    """One GetMetricData request (its pages followed): query id -> {timestamp: value}, and the ids
    CloudWatch answered Forbidden or InternalError -> why (StatusCode: its messages); missing values are
    absent. AWS's own error raises PlatformError (bot.adapters.aws)."""
    series: Series = {q["Id"]: {} for q in queries}
    refused: dict[str, str] = {}
    params: dict[str, Any] = {
        "MetricDataQueries": queries,
        "StartTime": start,
        "EndTime": end,
        "ScanBy": "TimestampAscending",
    }
    while True:
        out: Answer = await aws.call("cloudwatch", "get_metric_data", account, **params)
        for result in out.get("MetricDataResults", []):
            if result.get("StatusCode") in ("Forbidden", "InternalError"):
                messages = "; ".join(m.get("Value", "") for m in out.get("Messages", [])) or "no message"
                refused[result.get("Id", "")] = f"{result['StatusCode']}: {messages}"
                continue
            values = series.setdefault(result["Id"], {})
            for ts, value in zip(result.get("Timestamps", []), result.get("Values", []), strict=False):
                if value is not None:
                    values[ts] = float(value)
        if not out.get("NextToken"):
            return series, refused
        params["NextToken"] = out["NextToken"]
