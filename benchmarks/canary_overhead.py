"""What does the bot's machinery cost on top of the AWS calls a canary needs? A 4-step canary with zero bake,
run by the real Engine against the sandbox's moto server, versus a plain boto3 script making the same API
calls against the same emulator, in the same run.

Run it by hand from the repository root (it is a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/canary_overhead.py [--speed 1000] [--rounds 5] [--warmup 1] [--poll 1]

What it does:
  1. Starts an AwsWorld (moto's ThreadedMotoServer on 127.0.0.1, the demo world, its emulator loop
     `world.run()` as a task on a ScaledClock running `--speed` times faster than the wall) in a child
     process, as the sandbox keeps it apart from the bot (canary_world.py says why: in one process every
     thread hop of the measured side waited on moto's threads for the GIL).
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
     outbox writes (each write with events returns the deployment; its step_index is the running step),
     checked against the store's
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
the rest (the engine's own work: asyncio thread hops, events, plan bookkeeping). Then a per-step table
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
import os
import sys
import time
from collections import Counter
from collections.abc import Callable
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

from canary_baseline import run_baseline  # noqa: E402
from canary_parts import (  # noqa: E402
    APIS,
    CANARY_STEPS,
    ENV,
    GC,
    SERVICE,
    VERSION,
    Recorder,
    Run,
    TimedClock,
    TimedStore,
)
from canary_report import ratio, report  # noqa: E402
from canary_world import RemoteWorld  # noqa: E402

from bot.adapters.aws import Aws  # noqa: E402
from bot.adapters.metrics.cloudwatch import CloudWatchMetrics  # noqa: E402
from bot.adapters.platforms.ecs import EcsPlatform  # noqa: E402
from bot.adapters.scheduler import Scheduler  # noqa: E402
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.config.load import load_settings
from bot.config.model import Settings
from bot.domain import commands as cmds  # noqa: E402
from bot.domain.machine import State
from bot.domain.model import Deployment

CONFIG = ROOT / "config" / "deploybot.toml"
RUN_TIMEOUT = 60.0
USER = "U0BENCH"


# ------------------------------------------------------------------------------------------ the world


def benchmark_settings(endpoint: str, poll: float) -> Settings:
    """config/deploybot.toml with production made a zero-bake canary (environment and web's overrides)."""
    settings = load_settings(CONFIG, env={"DEPLOYBOT_AWS_ENDPOINT": endpoint})
    zero: dict[str, Any] = {
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
        # one measurement per step, against the thresholds: the sequential judge reads whole minutes of
        # both groups and would bake an undecided zero-bake step on (its figures: benchmarks/judges.py)
        analysis=dataclasses.replace(prod.analysis, interval_seconds=poll, judge="thresholds"),
    )
    services = dict(settings.services)
    web = services[SERVICE]
    overrides = {k: dict(v) for k, v in web.overrides.items()}
    overrides[ENV] = {k: v for k, v in overrides.get(ENV, {}).items() if k not in zero}
    services[SERVICE] = dataclasses.replace(web, overrides=overrides)
    # the calls are recorded on this process's clients, so they are made here, in threads; what the
    # worker process (`[aws] processes`, the default) adds per call is benchmarks/aws_processes.py's
    aws = dataclasses.replace(settings.aws, processes=0)
    settings = dataclasses.replace(settings, environments=envs, services=services, aws=aws)
    target = settings.target(SERVICE, ENV)
    assert (target.strategy, target.canary_steps) == ("canary", CANARY_STEPS), target
    assert target.step_bake_seconds == target.keep_warm_seconds == target.bake_seconds == 0, target
    assert target.poll_seconds == poll and not target.smoke_checks, target
    return settings


# ---------------------------------------------------------------------------------------------- the bot


class ObservedStore(TimedStore):
    """The timed store, telling the benchmark of every write that appended outbox events (the writes
    that announce something) with the deployment the write returned: where the run is, at no extra
    store call."""

    observe: Callable[[Deployment], None] | None = None

    async def _write(self, appended, fn, /, *args, **kwargs):  # type: ignore[override]
        result = await super()._write(appended, fn, *args, **kwargs)
        if appended and isinstance(result, Deployment) and self.observe is not None:
            self.observe(result)
        return result


async def run_bot(world: RemoteWorld, settings: Settings) -> Run:
    loop = asyncio.get_running_loop()
    recorder = Recorder(world.tick)
    aws = Aws(settings.aws)
    for api in APIS:  # created before the clock starts, as a running bot has them
        recorder.attach(aws.client(api))
    store = ObservedStore(Store(":memory:"))
    clock = TimedClock(world.clock)
    engine = Engine(settings, store, EcsPlatform(aws), CloudWatchMetrics(aws), clock, timer=Scheduler(clock))
    marks: dict[int, float] = {}
    aborts: list[asyncio.Task] = []
    ends: list[float] = []
    at_end: dict[str, Any] = {}
    finished = asyncio.Event()

    def on_write(d: Deployment) -> None:
        index = d.step_index  # the running step: step_index counts the finished ones
        if index != recorder.step:
            recorder.step = index
            marks.setdefault(index, time.perf_counter())
        if d.state.terminal and not finished.is_set():  # the clock stops at the terminal transition
            ends.append(time.perf_counter())
            # the store's figures stop there too: the reads below are the benchmark's, not the bot's
            at_end.update(seconds=store.seconds, inside=store.inside, ops=store.ops)
            at_end["by_method"] = Counter(store.by_method)
            finished.set()
        elif d.state == State.PAUSED and not aborts:  # an inconclusive analysis: nobody will answer it
            aborts.append(loop.create_task(engine.act(d.id, "abort", USER)))

    store.observe = on_write
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
            store_seconds=at_end.get("seconds", store.seconds),
            store_inside=at_end.get("inside", store.inside),
            store_ops=at_end.get("ops", store.ops),
            store_methods=at_end.get("by_method", store.by_method),
            plan=d.plan,
            measurements=measurements,
            started=started,
            gc_seconds=gc_seconds,
            gc_full=gc_full,
        )
    finally:
        await engine.shutdown()
        store.close()


# -------------------------------------------------------------------------------------------------- main


async def benchmark(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    world = RemoteWorld(args.speed, SERVICE, ENV)
    settings = benchmark_settings(world.endpoint, args.poll)
    print(
        f"canary overhead: {SERVICE} {VERSION} to {ENV}, canary {CANARY_STEPS}, zero bake; clock "
        f"{args.speed:g}x (emulator tick {world.tick_seconds:g}s virtual = "
        f"{world.tick_seconds / args.speed * 1000:.1f} ms), poll {args.poll:g}s virtual; "
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
                    run_bot(world, settings)
                    if who == "bot"
                    else run_baseline(world, world.endpoint, args.poll)
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
