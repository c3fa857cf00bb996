"""What does the bot's machinery cost on top of the AWS calls a canary needs? A 4-step canary with zero bake,
run by the real Engine against the sandbox's moto server, versus a plain boto3 script making the same API
calls against the same emulator, in the same run.

Run it by hand from the repository root (it is a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/canary_overhead.py [--speed 1000] [--rounds 5] [--warmup 1] [--poll 1]

What it does:
  1. Starts an AwsWorld (moto's ThreadedMotoServer on 127.0.0.1, the demo world, its emulator loop
     `world.run()` as a task on a ScaledClock running `--speed` times faster than the wall).
  2. Builds an Engine as tests/test_engine.py does (settings from config/deploybot.toml with
     DEPLOYBOT_AWS_ENDPOINT = the world, the real EcsPlatform and CloudWatchMetrics over one Aws,
     AsyncStore(Store(":memory:"))), with production
     (and the web service's production overrides) changed to a zero-bake canary: canary_steps (5, 25, 50,
     100), step_bake_seconds = keep_warm_seconds = bake_seconds = 0, poll_seconds = `--poll` (virtual
     seconds) and the analysis interval the same. With a bake of 0, run_analysis takes exactly one
     measurement per Analyze step (it sleeps min(interval, 0) and stops once the deadline has passed).
  3. Per round, on a fresh world each time (reset + provision; the web target groups' deregistration
     delay set to 0 so the scale-down does not drain for 30 s; web's traffic raised to 60000 requests a
     minute so one emulator tick gives a 5% canary enough requests for the analysis' min_requests):
       bot       `deploy web v2 to production --strategy canary`: engine.request() until the deployment
                 is terminal (it must be `succeeded`; otherwise its outcome is printed).
       baseline  a synchronous boto3 script (no engine, no store, no asyncio) making the calls the bot
                 must make, in its order with its parameters (written from the bot's recorded calls:
                 the route read once, a task definition read once; re-deriving the ARNs of the fresh world),
                 polling DescribeServices / DescribeTargetHealth at the same interval while the same
                 emulator progresses the rollout; it runs in a worker thread so the emulator keeps ticking.
     The order of the two alternates between rounds; one unmeasured warm-up round comes first.
  4. Counts AWS calls with botocore event hooks (before-parameter-build / after-call) on the bot's Aws
     clients and on the baseline's clients only, so the emulator's own calls (the traffic simulator's
     PutMetricData from the world's client) are not counted. A call's latency is its whole boto3 call
     (serialisation, HTTP to moto, parsing). Calls are attributed to the running step from the engine's
     notices (a Notice's deployment.step_index is the running step), checked against the store's
     step_started / measurement events.
  5. Zero bake makes the 5% analysis race the emulator: the canary group has no datapoint until an
     emulator tick after the weight change, and without one the analysis is inconclusive and the bot
     pauses for a person. So right after every ModifyRule, in both runs alike, the hook runs one emulator
     tick (world.tick(), as world.run() does) and lets the clock pass the next whole virtual second (moto
     keeps datapoints strictly before EndTime). That time is reported as "forced emulator ticks".

Right before each run's clock starts, gc.collect() clears what setup and earlier runs left: this process
holds moto's backends and many botocore models, so a full collection takes hundreds of milliseconds and,
left to chance, lands in one run or the other (a 2x "ratio" from one pause). Time in the collector during
each run is printed beside it.

Prints, per round and as the median over `--rounds`: both wall times and their ratio (target <= 1.15:
PASS/MISS), and a breakdown of each run's time: AWS call time (the time NOT spent waiting on the
emulator; ratio printed too), forced emulator ticks, sleeping between polls, the bot's store calls, and
the rest (the engine's own work: asyncio thread hops, notices, plan bookkeeping). Then a per-step table
of the median bot round (step, kind, description, AWS calls by action for bot and baseline, wall ms of
each), GetMetricData calls per analysis measurement (target <= 1: PASS/MISS), AWS calls per weight shift
(target 1), store round trips per canary (target <= 30), whether the baseline's call
sequence matches the bot's (consecutive identical polls collapsed; ARNs, ids and times normalised), and
the bot's repeated identical reads outside the wait steps (calls a cache would save).

Both runs wait on the emulator (rollout ticks, poll intervals), which dominates at low `--speed`: the
ratio of AWS call time is the fairer comparison of the work each side does. Everything is on loopback.
Exit code: 0, or 1 when a bot run did not succeed or the baseline failed.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import math
import os
import re
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# The bot's Aws and the baseline use boto3's credential chain: dummy credentials, never real ones.
for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_key, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)

import boto3  # noqa: E402

from bot import commands as cmds  # noqa: E402
from bot.adapters.aws import Aws  # noqa: E402
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics  # noqa: E402
from bot.adapters.platforms.ecs import EcsPlatform  # noqa: E402
from bot.clock import ScaledClock  # noqa: E402
from bot.engine import Engine, Notice  # noqa: E402
from bot.machine import State  # noqa: E402
from bot.sandbox.aws import REGION, SLOTS, AwsWorld  # noqa: E402
from bot.settings import Settings, load_settings  # noqa: E402
from bot.store import AsyncStore, Deployment, Store  # noqa: E402

CONFIG = ROOT / "config" / "deploybot.toml"
SERVICE, ENV, VERSION = "web", "production", "v2"
CANARY_STEPS = (5, 25, 50, 100)
TARGET_RATIO = 1.15  # issue 10: the bot within 1.15x of the plain script
MAX_GET_METRIC_DATA = 1  # the issue: at most one GetMetricData call per analysis tick
CALLS_PER_SHIFT = 1  # issue 10: one AWS call per weight shift (the route is read once per deployment)
MAX_STORE_OPS = 30  # issue 10: store round trips per canary
TRAFFIC_RPM = 60000.0  # one 5 s tick at 5%: 250 canary requests (> min_requests)
RUN_TIMEOUT = 60.0
APIS = ("ecs", "elbv2", "cloudwatch")
USER = "U0BENCH"


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


def make_ticker(world: AwsWorld, loop: asyncio.AbstractEventLoop):
    """One emulator tick on the loop (from a worker thread), then wait until the virtual clock has passed
    the next whole second, so a measurement's EndTime (floor(now)) lies after the tick's datapoints."""

    def tick() -> None:
        asyncio.run_coroutine_threadsafe(world.tick(), loop).result(timeout=30)
        due = math.floor(world.clock.now()) + 1
        while world.clock.now() < due:
            time.sleep(0.2 / world.clock.speed)

    return tick


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


# ------------------------------------------------------------------------------------------ the world


def benchmark_settings(endpoint: str, poll: float) -> Settings:
    """config/deploybot.toml with production made a zero-bake canary (environment and web's overrides)."""
    settings = load_settings(CONFIG, env={"DEPLOYBOT_AWS_ENDPOINT": endpoint})
    zero = {
        "strategy": "canary",
        "canary_steps": CANARY_STEPS,
        "step_bake_seconds": 0.0,
        "keep_warm_seconds": 0.0,
        "bake_seconds": 0.0,
        "poll_seconds": poll,
    }
    envs = dict(settings.environments)
    prod = envs[ENV]
    # Smoke checks are HTTP to the app, not AWS (and would leave loopback); a checklist / approvals policy
    # waits for people. Neither is part of this measurement: off, whatever the config says.
    people = {f.name: type(getattr(prod, f.name))() for f in dataclasses.fields(prod) if f.name == "policy"}
    envs[ENV] = dataclasses.replace(
        prod,
        **zero,
        **people,
        smoke_checks=(),
        analysis=dataclasses.replace(prod.analysis, interval_seconds=poll),
    )
    services = dict(settings.services)
    web = services[SERVICE]
    overrides = {k: dict(v) for k, v in web.overrides.items()}
    overrides[ENV] = {k: v for k, v in overrides.get(ENV, {}).items() if k not in zero}
    services[SERVICE] = dataclasses.replace(web, overrides=overrides)
    settings = dataclasses.replace(settings, environments=envs, services=services)
    target = settings.target(SERVICE, ENV)
    assert (target.strategy, target.canary_steps) == ("canary", CANARY_STEPS), target
    assert target.step_bake_seconds == target.keep_warm_seconds == target.bake_seconds == 0, target
    assert target.poll_seconds == poll and not target.smoke_checks, target
    return settings


class World:
    """The AwsWorld and its emulator loop, made fresh (reset + provision) before every run."""

    def __init__(self, speed: float):
        self.aws = AwsWorld(ScaledClock(speed))
        self.endpoint = self.aws.start()
        self._task: asyncio.Task | None = None
        self.ticks = 0  # emulator ticks so far (world.run()'s and the forced ones)
        tick = self.aws.tick

        async def counted() -> None:
            self.ticks += 1
            await tick()

        self.aws.tick = counted  # type: ignore[method-assign]

    async def fresh(self) -> None:
        await self.pause()
        self.aws.reset()
        self.aws.provision()
        elb = self.aws.client("elbv2")
        for slot in SLOTS:
            elb.modify_target_group_attributes(
                TargetGroupArn=self.aws.target_group_arn(SERVICE, ENV, slot),
                Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": "0"}],
            )
        self.aws.inject(SERVICE, requests_per_minute=TRAFFIC_RPM)
        await self.aws.tick()  # the stable group has datapoints before anything starts
        self._task = asyncio.get_running_loop().create_task(self.aws.run())

    async def pause(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def stop(self) -> None:
        await self.pause()
        self.aws.stop()


# ---------------------------------------------------------------------------------------------- the bot


async def run_bot(world: World, settings: Settings) -> Run:
    loop = asyncio.get_running_loop()
    recorder = Recorder(make_ticker(world.aws, loop))
    aws = Aws(settings.aws)
    for api in APIS:  # created before the clock starts, as a running bot has them
        recorder.attach(aws.client(api))
    store = TimedStore(Store(":memory:"))
    clock = TimedClock(world.aws.clock)
    engine = Engine(settings, store, EcsPlatform(aws), CloudWatchMetrics(aws), clock)
    marks: dict[int, float] = {}
    aborts: list[asyncio.Task] = []
    ends: list[float] = []
    finished = asyncio.Event()

    async def on_notice(n: Notice) -> None:
        index = n.deployment.step_index  # the running step: step_index counts the finished ones
        if index != recorder.step:
            recorder.step = index
            marks.setdefault(index, time.perf_counter())
        if n.kind != "update":
            return
        if n.deployment.state.terminal:  # the clock stops at the terminal transition's notice
            ends.append(time.perf_counter())
            finished.set()
        elif n.deployment.state == State.PAUSED:  # an inconclusive analysis: nobody will answer it
            aborts.append(loop.create_task(engine.act(n.deployment.id, "abort", USER)))

    engine.subscribe(on_notice)
    command = cmds.Deploy(SERVICE, VERSION, ENV, "canary", False, None, None, False, None)
    try:
        GC.start()
        start = time.perf_counter()
        d = await engine.request(command, USER)
        if not isinstance(d, Deployment):
            raise RuntimeError(f"could not deploy: {d}")
        try:
            await asyncio.wait_for(finished.wait(), RUN_TIMEOUT)
        except TimeoutError:
            ends.append(time.perf_counter())
        end = ends[0]
        gc_seconds, gc_full = GC.stop()
        await asyncio.gather(*aborts, return_exceptions=True)
        await asyncio.wait_for(engine.wait(d.id), 10)
        d = await store.get(d.id)
        measurements: Counter = Counter()
        started: list[int] = []
        step = None
        for event in await store.events(d.id):
            if event.action == "step_started":
                step = event.details["index"]
                started.append(step)
            elif event.action == "measurement":
                measurements[step] += 1
        return Run(
            "bot",
            end - start,
            recorder,
            clock.slept,
            marks,
            end,
            ok=d.state == State.SUCCEEDED,
            outcome=f"{d.state.value}: {d.outcome}"
            + ("" if d.state.terminal else f" (not finished within {RUN_TIMEOUT:g} s)"),
            store_seconds=store.seconds,
            store_inside=store.inside,
            store_ops=store.ops,
            store_methods=store.by_method,
            plan=d.plan,
            measurements=measurements,
            started=started,
            gc_seconds=gc_seconds,
            gc_full=gc_full,
        )
    finally:
        await engine.shutdown()
        store.close()


# ------------------------------------------------------------------------------------------ the baseline


def plain_script(endpoint: str, clock: ScaledClock, poll: float, recorder: Recorder) -> Run:
    """The same canary as a plain synchronous boto3 script: the calls the bot must make, in its order,
    nothing else. Like the bot it reads the route once (the weight shifts reuse it) and a task definition
    once (the idle slot's is read only when it differs from the live one's)."""
    session = boto3.session.Session(region_name=REGION)
    ecs, elb, cw = (recorder.attach(session.client(api, endpoint_url=endpoint)) for api in APIS)
    cluster, lb_name, port = ENV, f"deploybot-{ENV}", 80
    deployment_configuration = {
        "maximumPercent": 150,
        "minimumHealthyPercent": 100,
        "deploymentCircuitBreaker": {"enable": True, "rollback": False},
    }
    marks: dict[int, float] = {}
    slept = 0.0

    def step(index: int) -> None:
        recorder.step = index
        marks[index] = time.perf_counter()

    def sleep() -> None:
        nonlocal slept
        before = time.perf_counter()
        time.sleep(poll / clock.speed)
        slept += time.perf_counter() - before

    def route(tgs: dict[str, str]) -> tuple[str, str, dict[str, Any], dict[str, int]]:
        lb = elb.describe_load_balancers(Names=[lb_name])["LoadBalancers"][0]["LoadBalancerArn"]
        listeners = elb.describe_listeners(LoadBalancerArn=lb)["Listeners"]
        listener = next(li for li in listeners if li["Port"] == port)
        for rule in elb.describe_rules(ListenerArn=listener["ListenerArn"])["Rules"]:
            for action in rule["Actions"]:
                groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
                if {g["TargetGroupArn"] for g in groups} & set(tgs.values()):
                    return lb, rule["RuleArn"], action, {g["TargetGroupArn"]: g["Weight"] for g in groups}
        raise RuntimeError("no rule forwards to the web target groups")

    def dimensions(tg: str, lb: str) -> list[dict[str, str]]:
        return [
            {"Name": "TargetGroup", "Value": tg.split(":", 5)[-1]},
            {"Name": "LoadBalancer", "Value": lb.split(":", 5)[-1].removeprefix("loadbalancer/")},
        ]

    GC.start()
    start = time.perf_counter()
    index = 0
    # capture_traffic
    step(index)
    tgs = {
        s: elb.describe_target_groups(Names=[f"{SERVICE}-{ENV}-{s}"])["TargetGroups"][0]["TargetGroupArn"]
        for s in SLOTS
    }
    lb, rule, action, weights = route(tgs)  # once: every weight shift below reuses it
    stable = next(s for s in SLOTS if weights.get(tgs[s], 0) > 0)
    new = next(s for s in SLOTS if s != stable)
    live = ecs.describe_services(cluster=cluster, services=[f"{SERVICE}-{stable}"])["services"][0]
    previous = live["taskDefinition"]
    desired = max(1, live["desiredCount"])
    base = ecs.describe_task_definition(taskDefinition=previous)["taskDefinition"]
    # use_revision: the idle slot's task definition does not run the new image, so register one
    index += 1
    step(index)
    idle = ecs.describe_services(cluster=cluster, services=[f"{SERVICE}-{new}"])["services"][0]
    if idle["taskDefinition"] != previous:
        ecs.describe_task_definition(taskDefinition=idle["taskDefinition"])
    containers = [
        {**c, "image": f"{SERVICE}:{VERSION}"} if c["name"] == SERVICE else c
        for c in base["containerDefinitions"]
    ]
    keep = ("family", "taskRoleArn", "executionRoleArn", "networkMode", "volumes", "placementConstraints")
    keep += ("requiresCompatibilities", "cpu", "memory", "runtimePlatform", "pidMode", "ipcMode")
    revision = ecs.register_task_definition(
        containerDefinitions=containers, **{k: base[k] for k in keep if base.get(k) not in (None, [], "")}
    )["taskDefinition"]["taskDefinitionArn"]
    # prepare_slot
    index += 1
    step(index)
    ecs.update_service(
        cluster=cluster,
        service=f"{SERVICE}-{new}",
        deploymentConfiguration=deployment_configuration,
        taskDefinition=revision,
        desiredCount=desired,
    )
    # wait_for_rollout
    index += 1
    step(index)
    while True:
        svc = ecs.describe_services(cluster=cluster, services=[f"{SERVICE}-{new}"])["services"][0]
        primary = next((d for d in svc["deployments"] if d["status"] == "PRIMARY"), {})
        if primary.get("taskDefinition") == revision:
            if primary.get("rolloutState") == "COMPLETED":
                break
            if primary.get("rolloutState") == "FAILED":
                raise RuntimeError(f"rollout failed: {primary.get('rolloutStateReason')}")
        sleep()
    # wait_for_healthy_targets
    index += 1
    step(index)
    while True:
        health = elb.describe_target_health(TargetGroupArn=tgs[new])["TargetHealthDescriptions"]
        states = [h["TargetHealth"]["State"] for h in health]
        if all(s in ("healthy", "draining") for s in states) and states.count("healthy") >= desired:
            break
        sleep()
    # set_weights + analyze, per canary step
    for weight in CANARY_STEPS:
        index += 1
        step(index)
        groups = [
            {"TargetGroupArn": tgs[new], "Weight": weight},
            {"TargetGroupArn": tgs[stable], "Weight": 100 - weight},
        ]
        forward = {**action.get("ForwardConfig", {}), "TargetGroups": groups}
        elb.modify_rule(RuleArn=rule, Actions=[{"Type": "forward", "ForwardConfig": forward}])
        index += 1
        step(index)
        groups_dims = {"canary": dimensions(tgs[new], lb)}
        if weight < 100:
            groups_dims["stable"] = dimensions(tgs[stable], lb)
        at = float(math.floor(clock.now()))
        queries = [
            {
                "Id": f"g{i}_{suffix}",
                "MetricStat": {
                    "Metric": {"Namespace": "AWS/ApplicationELB", "MetricName": metric, "Dimensions": dims},
                    "Period": 60,
                    "Stat": stat,
                },
                "ReturnData": True,
            }
            for i, dims in enumerate(groups_dims.values())
            for suffix, metric, stat in (
                ("requests", "RequestCount", "Sum"),
                ("errors", "HTTPCode_Target_5XX_Count", "Sum"),
                ("latency", "TargetResponseTime", "Average"),
            )
        ]
        out = cw.get_metric_data(
            MetricDataQueries=queries,
            StartTime=datetime.fromtimestamp(at - 60, UTC),
            EndTime=datetime.fromtimestamp(at, UTC),
            ScanBy="TimestampAscending",
        )
        if not out["MetricDataResults"][0].get("Values"):
            raise RuntimeError(f"no canary requests at {weight}%")
    # scale_down
    index += 1
    step(index)
    attributes = elb.describe_target_group_attributes(TargetGroupArn=tgs[stable])["Attributes"]
    delay = next(float(a["Value"]) for a in attributes if a["Key"] == "deregistration_delay.timeout_seconds")
    time.sleep(delay / clock.speed)
    ecs.update_service(
        cluster=cluster,
        service=f"{SERVICE}-{stable}",
        deploymentConfiguration=deployment_configuration,
        desiredCount=0,
    )
    end = time.perf_counter()
    gc_seconds, gc_full = GC.stop()
    return Run(
        "baseline", end - start, recorder, slept, marks, end, ok=True, gc_seconds=gc_seconds, gc_full=gc_full
    )


async def run_baseline(world: World, poll: float) -> Run:
    recorder = Recorder(make_ticker(world.aws, asyncio.get_running_loop()))
    try:
        return await asyncio.to_thread(plain_script, world.endpoint, world.aws.clock, poll, recorder)
    except Exception as exc:
        return Run("baseline", 0.0, recorder, 0.0, {}, 0.0, ok=False, outcome=f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------------------------------------- analysis


_ID = re.compile(r"^(arn:|targetgroup/|app/|ecs-svc/)")


def normalise(value: Any) -> Any:
    """Parameters with what differs between two fresh worlds (ARNs, ids, times) blanked."""
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in sorted(value.items())}
    if isinstance(value, list | tuple):
        return [normalise(v) for v in value]
    if isinstance(value, datetime):
        return "<time>"
    if isinstance(value, str) and _ID.match(value):
        return "<id>"
    return value


def collapsed(calls: list[Call]) -> list[tuple[int, str, str]]:
    """(step, operation, parameters) with consecutive identical calls (polls) counted once."""
    out: list[tuple[int, str, str]] = []
    for c in calls:
        key = (c.step, c.operation, repr(normalise(c.params)))
        if not out or out[-1] != key:
            out.append(key)
    return out


def by_action(calls: list[Call], step: int) -> str:
    counts = Counter(c.operation for c in calls if c.step == step)
    return ", ".join(f"{op} {n}" for op, n in counts.items()) or "-"


def redundant_reads(run: Run) -> list[Call]:
    """The bot's Describe calls identical to an earlier one, outside the wait steps (whose repeated polls
    are the point): what caching the route and the task definition within a deployment would save."""
    waits = {i for i, s in enumerate(run.plan) if s["kind"].startswith("wait_for")}
    seen: set[tuple[str, str]] = set()
    out = []
    for c in run.recorder.calls:
        if c.step in waits or not c.operation.startswith("Describe"):
            continue
        key = (c.operation, repr(sorted(c.params.items())))
        if key in seen:
            out.append(c)
        seen.add(key)
    return out


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.1f}"


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b > 0 else "     -"


def describe_step(step: dict[str, Any]) -> str:
    from bot.app.plans import step_from_dict

    return step_from_dict(step).describe()


def report(rounds: list[tuple[Run, Run]], args: argparse.Namespace) -> int:
    bots = [b for b, _ in rounds]
    bases = [p for _, p in rounds]
    if not all(b.ok for b in bots) or not all(p.ok for p in bases):
        for b, p in rounds:
            for run in (b, p):
                if not run.ok:
                    print(f"{run.who} did not succeed: {run.outcome}")
        return 1

    def med(runs: list[Run], attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in runs)

    print(f"\nmedian of {len(rounds)} rounds (ms)        bot  baseline    ratio")
    rows = [
        ("wall time, request to terminal", "wall"),
        ("AWS call time (not waiting)", "aws"),
        ("forced emulator ticks", "ticks"),
        ("sleeping between polls", "slept"),
        ("store calls (bot only)", "store_seconds"),
        ("the rest (engine, thread hops)", "other"),
    ]
    for label, attr in rows:
        b, p = med(bots, attr), med(bases, attr)
        print(f"  {label:<32}{ms(b)}  {ms(p)}  {ratio(b, p) if attr in ('wall', 'aws') else ''}")
    calls_b = statistics.median(len(r.recorder.calls) for r in bots)
    calls_p = statistics.median(len(r.recorder.calls) for r in bases)
    print(f"  {'AWS calls':<32}{calls_b:8.0f}  {calls_p:8.0f}")
    gc_b, gc_p = med(bots, "gc_seconds"), med(bases, "gc_seconds")
    print(f"  {'in the garbage collector':<32}{ms(gc_b)}  {ms(gc_p)}  (overlaps the rows above)")
    ticks_b, ticks_p = med(bots, "emulator_ticks"), med(bases, "emulator_ticks")
    print(f"  {'emulator ticks during the run':<32}{ticks_b:8.0f}  {ticks_p:8.0f}")
    print(
        f"  {'store calls':<32}{med(bots, 'store_ops'):8.0f}  (of their {med(bots, 'store_seconds') * 1000:.1f} ms, "
        f"{med(bots, 'store_inside') * 1000:.1f} ms on the store's thread, the rest getting there and back)"
    )
    per_round = [b.wall / p.wall for b, p in rounds]
    per_round_aws = [b.aws / p.aws for b, p in rounds]
    wall_ratio = med(bots, "wall") / med(bases, "wall")
    print(
        f"  per-round wall ratios: {', '.join(f'{r:.2f}' for r in per_round)} (median "
        f"{statistics.median(per_round):.2f}); AWS call time ratios: {', '.join(f'{r:.2f}' for r in per_round_aws)}"
    )

    # the per-step table of the median bot round and the baseline of the same round
    order = sorted(range(len(rounds)), key=lambda i: bots[i].wall)
    bot, base = rounds[order[len(order) // 2]]
    print(f"\nper step (median bot round: bot {bot.wall * 1000:.0f} ms, baseline {base.wall * 1000:.0f} ms)")
    print(f" {'#':>2} {'kind':<25}{'bot ms':>7}{'base ms':>8}  bot calls | baseline calls (if different)")
    for i, s in enumerate(bot.plan):
        b_calls, p_calls = by_action(bot.recorder.calls, i), by_action(base.recorder.calls, i)
        print(
            f" {i:>2} {s['kind']:<25}{bot.step_wall(i) * 1000:7.1f}{base.step_wall(i) * 1000:8.1f}  {b_calls}"
            + ("" if p_calls == b_calls else f" | {p_calls}")
        )
        print(f"    {describe_step(s)}")

    # GetMetricData per analysis measurement, over every bot round
    worst = 0.0
    total_m = total_g = 0
    for run in bots:
        for i, s in enumerate(run.plan):
            if s["kind"] != "analyze":
                continue
            m = run.measurements.get(i, 0)
            g = sum(1 for c in run.recorder.calls if c.step == i and c.operation == "GetMetricData")
            total_m, total_g = total_m + m, total_g + g
            worst = max(worst, g / m if m else (math.inf if g else 0.0))
    verdict = "PASS" if worst <= MAX_GET_METRIC_DATA else "MISS"
    print(
        f"\nGetMetricData per analysis measurement: at most {worst:g} ({total_g} calls for {total_m} "
        f"measurements in {len(bots)} runs) -- target <= {MAX_GET_METRIC_DATA}: {verdict}"
    )

    # AWS calls per weight shift and store round trips per canary, over every bot round
    shifts = [
        sum(1 for c in run.recorder.calls if c.step == i)
        for run in bots
        for i, s in enumerate(run.plan)
        if s["kind"] == "set_weights"
    ]
    most = max(shifts, default=0)
    print(
        f"AWS calls per weight shift: at most {most} ({sum(shifts)} calls for {len(shifts)} shifts in "
        f"{len(bots)} runs) -- target {CALLS_PER_SHIFT}: {'PASS' if most <= CALLS_PER_SHIFT else 'MISS'}"
    )
    ops = max(r.store_ops for r in bots)
    print(
        f"store round trips per canary: at most {ops} -- target <= {MAX_STORE_OPS}: "
        f"{'PASS' if ops <= MAX_STORE_OPS else 'MISS'}"
    )

    attributed = all(sorted(i for i in b.marks if i < len(b.plan)) == b.started for b in bots)
    print(
        "calls attributed to steps by the engine's notices; the steps they saw match the store's step_started "
        f"events: {'yes' if attributed else 'NO'}"
    )
    same = all(collapsed(b.recorder.calls) == collapsed(p.recorder.calls) for b, p in rounds)
    print(
        f"baseline makes the bot's calls (polls collapsed, ARNs/ids/times normalised): {'yes' if same else 'NO'}"
    )
    if not same:
        b_seq, p_seq = collapsed(bot.recorder.calls), collapsed(base.recorder.calls)
        first = next((i for i, (x, y) in enumerate(zip(b_seq, p_seq, strict=False)) if x != y), None)
        print(f"  first difference at call {first}: bot {b_seq[first] if first is not None else '-'}")
        print(
            f"  baseline {p_seq[first] if first is not None else '-'} (bot {len(b_seq)}, baseline {len(p_seq)})"
        )

    for run in (bot, base):
        slow = sorted(run.recorder.calls, key=lambda c: -c.seconds)[:3]
        print(
            f"slowest AWS calls, {run.who} (that round): "
            + ", ".join(f"{c.operation} {c.seconds * 1000:.1f} ms (step {c.step})" for c in slow)
        )
    methods = ", ".join(f"{m} {n}" for m, n in bot.store_methods.most_common())
    print(f"bot store calls by method: {methods}")
    extra = redundant_reads(bot)
    if extra:
        counts = Counter(c.operation for c in extra)
        print(
            f"bot reads repeated verbatim outside the wait steps: {len(extra)} calls, "
            f"{sum(c.seconds for c in extra) * 1000:.1f} ms ({', '.join(f'{op} {n}' for op, n in counts.items())})"
        )

    print(
        f"\nbot {med(bots, 'wall') * 1000:.0f} ms, baseline {med(bases, 'wall') * 1000:.0f} ms, ratio "
        f"{wall_ratio:.2f} -- target <= {TARGET_RATIO}: {'PASS' if wall_ratio <= TARGET_RATIO else 'MISS'}"
        f" (AWS call time ratio {med(bots, 'aws') / med(bases, 'aws'):.2f})"
    )
    return 0


# -------------------------------------------------------------------------------------------------- main


async def benchmark(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    world = World(args.speed)
    settings = benchmark_settings(world.endpoint, args.poll)
    print(
        f"canary overhead: {SERVICE} {VERSION} to {ENV}, canary {CANARY_STEPS}, zero bake; clock "
        f"{args.speed:g}x (emulator tick {world.aws.tick_seconds:g}s virtual = "
        f"{world.aws.tick_seconds / args.speed * 1000:.1f} ms), poll {args.poll:g}s virtual; "
        f"{args.rounds} rounds after {args.warmup} warm-up",
        flush=True,
    )
    rounds: list[tuple[Run, Run]] = []
    try:
        for r in range(-args.warmup, args.rounds):
            runs: dict[str, Run] = {}
            for who in ("bot", "baseline") if r % 2 == 0 else ("baseline", "bot"):
                await world.fresh()
                ticks = world.ticks
                runs[who] = await (
                    run_bot(world, settings) if who == "bot" else run_baseline(world, args.poll)
                )
                GC.stop()  # already stopped, unless the run failed
                runs[who].emulator_ticks = world.ticks - ticks
            bot, base = runs["bot"], runs["baseline"]
            label = "warm-up" if r < 0 else f"round {r + 1}"
            print(
                f"{label:>8}: bot {bot.wall * 1000:7.1f} ms ({len(bot.recorder.calls)} calls, AWS "
                f"{bot.aws * 1000:.1f} ms, {'succeeded' if bot.ok else bot.outcome}); baseline "
                f"{base.wall * 1000:7.1f} ms ({len(base.recorder.calls)} calls, AWS {base.aws * 1000:.1f} ms"
                f"{'' if base.ok else ', ' + base.outcome}); ratio {ratio(bot.wall, base.wall).strip()}"
                f"; GC bot {bot.gc_seconds * 1000:.0f} ms ({bot.gc_full} full), "
                f"baseline {base.gc_seconds * 1000:.0f} ms ({base.gc_full} full)",
                flush=True,
            )
            if r >= 0:
                rounds.append((bot, base))
    finally:
        await world.stop()
    code = report(rounds, args)
    print(f"\ntotal {time.perf_counter() - started:.1f}s")
    return code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--speed", type=float, default=1000.0, help="sandbox clock speed (default 1000)")
    p.add_argument("--rounds", type=int, default=5, help="measured rounds; medians are reported (default 5)")
    p.add_argument("--warmup", type=int, default=1, help="unmeasured rounds first (default 1)")
    p.add_argument("--poll", type=float, default=1.0, help="poll_seconds, virtual (default 1)")
    args = p.parse_args()
    if args.rounds < 1 or args.speed <= 0 or args.poll <= 0 or args.warmup < 0:
        p.error("--rounds >= 1, --speed > 0, --poll > 0, --warmup >= 0")
    return asyncio.run(benchmark(args))


if __name__ == "__main__":
    sys.exit(main())
