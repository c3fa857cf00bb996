"""What does making AWS calls in a worker process (`[aws] processes`, the default) cost per call, and what
does it give back to the event loop? Both ways measured in the same run, against the same moto server.

Run it by hand from the repository root (a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/aws_processes.py [--calls 300] [--concurrency 8]

What it does: starts the sandbox's AwsWorld (moto's server on 127.0.0.1, the demo world) in a child process
(benchmarks/canary_world.py), then, for Aws in threads (processes = 0) and Aws in one worker process (processes = 1), each
warmed up by 20 calls first:
  1. `--calls` ECS DescribeServices of web in production (the call a rollout polls), one at a time:
     the median and p99 wall time of a call, as the bot awaits it;
  2. the same calls `--concurrency` at a time, while a ticker on the event loop measures how late its
     1 ms sleeps wake up (the event loop's lag: what a Slack request arriving then would wait for): the
     median and p99 lag, and this process's CPU time per call (the boto3 work the worker takes away).
Prints a line per way and the ratios (processes / threads).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

from bot.adapters.aws import Aws
from bot.config.model import AwsSettings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from canary_world import RemoteWorld  # noqa: E402

WARMUP = 20


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def measure(aws: Aws, calls: int, concurrency: int) -> dict[str, float]:
    params = {"cluster": "production", "services": ["web-blue", "web-green"]}
    for _ in range(WARMUP):
        await aws.call("ecs", "describe_services", **params)
    one = []
    for _ in range(calls):
        began = time.perf_counter()
        await aws.call("ecs", "describe_services", **params)
        one.append(time.perf_counter() - began)

    lags: list[float] = []
    stop = asyncio.Event()

    async def ticker() -> None:
        while not stop.is_set():
            began = time.perf_counter()
            await asyncio.sleep(0.001)
            lags.append(time.perf_counter() - began - 0.001)

    async def worker(n: int) -> None:
        for _ in range(n):
            await aws.call("ecs", "describe_services", **params)

    tick = asyncio.ensure_future(ticker())
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker(calls // concurrency) for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    stop.set()
    await tick
    done = (calls // concurrency) * concurrency
    return {
        "p50_ms": statistics.median(one) * 1000,
        "p99_ms": quantile(one, 0.99) * 1000,
        "calls_per_s": done / wall,
        "cpu_ms_per_call": cpu / done * 1000,
        "lag_p50_ms": statistics.median(lags) * 1000,
        "lag_p99_ms": quantile(lags, 0.99) * 1000,
    }


async def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=300)
    p.add_argument("--concurrency", type=int, default=8)
    args = p.parse_args()
    world = RemoteWorld(1.0, "web", "production")
    try:
        await world.fresh()
        results = {}
        for name, processes in (("threads", 0), ("processes", 1)):
            aws = Aws(AwsSettings(endpoint_url=world.endpoint, max_attempts=1, processes=processes))
            aws.start()
            try:
                results[name] = await measure(aws, args.calls, args.concurrency)
            finally:
                aws.close()
        print(f"{args.calls} DescribeServices against moto, then {args.concurrency} at a time")
        print(
            f"{'':10} {'p50 ms':>7} {'p99 ms':>7} {'calls/s':>8} {'loop cpu ms/call':>17} {'lag p50 ms':>11} {'lag p99 ms':>11}"
        )
        for name, r in results.items():
            print(
                f"{name:10} {r['p50_ms']:7.2f} {r['p99_ms']:7.2f} {r['calls_per_s']:8.0f} "
                f"{r['cpu_ms_per_call']:17.2f} {r['lag_p50_ms']:11.2f} {r['lag_p99_ms']:11.2f}"
            )
        t, w = results["threads"], results["processes"]
        print(
            f"processes / threads: call p50 {w['p50_ms'] / t['p50_ms']:.2f}x, this process's CPU per call "
            f"{w['cpu_ms_per_call'] / t['cpu_ms_per_call']:.2f}x, event loop lag p99 "
            f"{w['lag_p99_ms'] / max(t['lag_p99_ms'], 1e-9):.2f}x"
        )
    finally:
        await world.stop()


if __name__ == "__main__":
    import os

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    asyncio.run(main())
