"""The canary benchmark's recording machinery and constants: AWS calls by botocore hooks, the garbage
collector's time, a timed store and clock, and a run's figures. See canary_overhead.py."""

from __future__ import annotations

import gc
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.clock import ScaledClock

SERVICE, ENV, VERSION = "web", "production", "v2"
CANARY_STEPS = (5, 25, 50, 100)
TARGET_RATIO = 1.15  # issue 10: the bot within 1.15x of the plain script
MAX_GET_METRIC_DATA = 1  # the issue: at most one GetMetricData call per analysis tick
CALLS_PER_SHIFT = 1  # issue 10: one AWS call per weight shift (the route is read once per deployment)
MAX_STORE_OPS = 30  # issue 10: store round trips per canary
APIS = ("ecs", "elbv2", "cloudwatch")


# ------------------------------------------------------------------------------------------ recording


@dataclass
class Call:
    step: int
    operation: str
    params: dict[str, Any]
    seconds: float


class Recorder:
    """The AWS calls made through the clients it is attached to: operation, parameters, latency and the
    step running at the time (`step`, set by whoever drives the run). After every ModifyRule it runs
    `ticker` (one forced emulator tick) and adds its time to tick_seconds, not to the call's latency."""

    def __init__(self, ticker: Any = None):
        self.calls: list[Call] = []
        self.step = -1
        self.ticker = ticker
        self.tick_seconds = 0.0

    def attach(self, client: Any) -> Any:
        events = client.meta.events
        events.register("before-parameter-build.*.*", self._start)
        events.register("after-call.*.*", self._end)
        events.register("after-call-error.*.*", self._end)
        return client

    def _start(self, params: dict[str, Any], model: Any, context: dict[str, Any], **_: Any) -> None:
        context["bench"] = (time.perf_counter(), model.name, dict(params), self.step)

    def _end(self, context: dict[str, Any], **_: Any) -> None:
        end = time.perf_counter()
        start, operation, params, step = context.pop("bench")
        self.calls.append(Call(step, operation, params, end - start))
        if operation == "ModifyRule" and self.ticker is not None:
            before = time.perf_counter()
            self.ticker()
            self.tick_seconds += time.perf_counter() - before

    @property
    def call_seconds(self) -> float:
        return sum(c.seconds for c in self.calls)


class GcMeter:
    """Time spent in Python's garbage collector (any thread) while a run is measured."""

    def __init__(self) -> None:
        self.seconds, self.full = 0.0, 0
        self._started: float | None = None
        self.active = False
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if not self.active:
            return
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            self.seconds += time.perf_counter() - self._started
            self.full += info.get("generation") == 2
            self._started = None

    def start(self) -> None:
        """Right before a run's clock starts: collect what setup and earlier runs left, so no run pays a
        full collection for garbage it did not make (with moto and many botocore models in this process, a
        full collection takes hundreds of milliseconds), then meter the run."""
        gc.collect()
        self.seconds, self.full, self.active = 0.0, 0, True

    def stop(self) -> tuple[float, int]:
        self.active = False
        return self.seconds, self.full


GC = GcMeter()


class TimedStore(AsyncStore):
    """The bot's store, timing every call it awaits (each runs on the store's one thread)."""

    def __init__(self, store: Store):
        super().__init__(store)
        self.seconds, self.ops = 0.0, 0
        self.inside = 0.0  # of which running on the store's thread (the rest: getting there and back)
        self.by_method: Counter = Counter()

    async def call(self, fn, *args, **kwargs):  # type: ignore[override]
        def timed():
            before = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside += time.perf_counter() - before

        start = time.perf_counter()
        try:
            return await super().call(timed)
        finally:
            self.seconds += time.perf_counter() - start
            self.ops += 1
            self.by_method[getattr(fn, "__name__", "?")] += 1


class TimedClock(ScaledClock):
    """The world's clock (same speed and origin, so the same "now"), timing the bot's sleeps."""

    def __init__(self, base: ScaledClock):
        super().__init__(base.speed, base.origin)
        self.slept = 0.0

    async def sleep(self, seconds: float) -> None:
        start = time.perf_counter()
        await super().sleep(seconds)
        self.slept += time.perf_counter() - start


@dataclass
class Run:
    who: str
    wall: float
    recorder: Recorder
    slept: float
    marks: dict[int, float]  # step index -> perf_counter at its start
    end: float
    ok: bool
    outcome: str = ""
    store_seconds: float = 0.0
    store_inside: float = 0.0
    store_ops: int = 0
    store_methods: Counter = field(default_factory=Counter)
    plan: list[dict[str, Any]] = field(default_factory=list)
    measurements: Counter = field(default_factory=Counter)  # step index -> analysis measurements
    started: list[int] = field(default_factory=list)  # the store's step_started indices, in order
    emulator_ticks: int = 0  # during the run: how much the emulator competed with it for the GIL
    gc_seconds: float = 0.0  # in the garbage collector during the run
    gc_full: int = 0  # full (generation 2) collections during the run

    @property
    def aws(self) -> float:
        return self.recorder.call_seconds

    @property
    def ticks(self) -> float:
        return self.recorder.tick_seconds

    @property
    def other(self) -> float:
        return self.wall - self.aws - self.ticks - self.slept - self.store_seconds

    def step_wall(self, index: int) -> float:
        if index not in self.marks:
            return 0.0
        later = [t for i, t in self.marks.items() if i > index]
        return (min(later) if later else self.end) - self.marks[index]
