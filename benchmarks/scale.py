"""200 canaries at once in one bot process: what does the bot need, and does every analysis tick read the
metrics of all deployments due in as few GetMetricData calls as the 500-query limit allows?

Run it by hand from the repository root (it is a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/scale.py [--services 100] [--speed 10] [--timeout 1200]

What it does:
  1. Writes a config of `--services` services (svc000 ...) x 2 environments (staging, qa), every
     one a canary with analysis: steps 10/50/100 %, 60 s of analysis at each (a measurement every 30 s of
     a 60 s window, 6 GetMetricData queries each), no keep-warm, no access tables, no checklist.
  2. Starts the sandbox (bot.sandbox.run.Sandbox) on it: moto's server with a world of those services
     (AwsWorld), the local Slack, and the real bot (`deploybot serve`) as a child process, on a clock
     `--speed` times faster than the wall.
  3. Baseline, in the same run: ONE deployment (svc000 v2 to staging) from its /deploy to its end.
     Then the load: `/deploy svcNNN v3 to ENV` for every service and environment at once (200 slash
     commands sent concurrently), until all have ended.
  4. For each phase, from the bot's own /metrics (parsed with prometheus-client's text parser) and its
     /proc status: RSS (peak over the phase, sampled every 0.5 s, and VmHWM), event-loop lag p50/p99
     (from the bot's 0.1 s lag histogram, deltas over the phase, interpolated within buckets), AWS calls
     per wall minute by operation, deployments ended per wall minute (and their outcomes), and
     GetMetricData: calls, queries, batches (ticks), and the calls made beyond ceil(queries / 500) per
     tick (the bot counts it: deploybot_metric_batch_excess_calls_total).
  5. Checks the targets: RSS < 250 MB, loop lag p99 < 50 ms, 0 excess GetMetricData calls per tick.
     A deployment that pauses for a person (an inconclusive analysis: the sandbox's traffic emulator,
     in this process, fell behind and published no canary datapoint for a whole window) counts as
     ended: it is shown among the outcomes as "paused".

The sandbox's moto server runs in THIS process and answers every call; with 200 services it is slower
than AWS (it scans every stored datapoint per query), which lengthens the AWS latencies printed here, not
the bot's loop lag or memory. Exit code 0 when every deployment ended and the targets hold, else 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

for _key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
    os.environ.pop(_key, None)
os.environ.update(
    AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing", AWS_DEFAULT_REGION="us-east-1"
)

from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from bot.sandbox.aws import AwsWorld  # noqa: E402
from bot.sandbox.client import SandboxClient  # noqa: E402
from bot.sandbox.run import Sandbox  # noqa: E402

ENVS = ("staging", "qa")  # not "production": its guards would ask for a monitoring checklist item
TERMINAL = ("succeeded", "rolled_back", "failed", "cancelled")
# a paused deployment waits for a person (an inconclusive analysis): the run does not wait for it
ENDED = (*TERMINAL, "paused")
RSS_TARGET_MB, LAG_TARGET_S = 250.0, 0.050
# The machine's own floor: an idle asyncio process sampling its loop lag the same way (0.1 s timers) in the
# same seconds, so a loaded machine's scheduling delay is told from the bot's own.
CONTROL = """
import asyncio, json, sys, threading
lags, done = [], threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
async def main():
    loop = asyncio.get_running_loop()
    while not done.is_set():
        t = loop.time()
        await asyncio.sleep(0.1)
        lags.append(max(0.0, loop.time() - t - 0.1))
asyncio.run(main())
lags.sort()
print(json.dumps({"p50": lags[len(lags) // 2], "p99": lags[int(len(lags) * 0.99)]} if lags else {}))
"""


def write_config(path: Path, services: list[str]) -> None:
    env_block = """
[environments.{env}]
cluster = "{env}"
load_balancer = "deploybot-{env}"
listener_port = 80
strategy = "canary"
canary_steps = [10, 50, 100]
step_bake_seconds = 60
keep_warm_seconds = 0
bake_seconds = 0
rollout_timeout_seconds = 900
poll_seconds = 5

[environments.{env}.analysis]
interval_seconds = 30
window_seconds = 60
min_requests = 20
"""
    text = [
        '[bot]\ndefault_environment = "staging"\ndeploy_channel = "deploys"\n',
        '[aws]\nregion = "us-east-1"\nmax_attempts = 5\nconnect_timeout_seconds = 5\nread_timeout_seconds = 30\n',
        '[alerts]\ncritical = ["incidents"]\nwarning = ["deploys"]\ninfo = []\noncall = "oncall"\n',
        *(env_block.format(env=env) for env in ENVS),
        *(f'\n[services.{s}]\ncontainer = "{s}"\nimage = "{s}"\n' for s in services),
    ]
    path.write_text("".join(text))


# ------------------------------------------------------------------------------------------- figures


async def scrape(session: aiohttp.ClientSession, bot_url: str) -> dict[tuple[str, tuple], float]:
    async with session.get(bot_url + "/metrics") as resp:
        text = await resp.text()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def delta(after: dict, before: dict, name: str, **labels: str) -> float:
    def pick(figures: dict) -> float:
        return sum(
            v
            for (n, ls), v in figures.items()
            if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
        )

    return pick(after) - pick(before)


def by_label(after: dict, before: dict, name: str, label: str) -> dict[str, float]:
    values = {dict(ls).get(label, "") for (n, ls) in after if n == name}
    return {v: delta(after, before, name, **{label: v}) for v in sorted(values)}


def lag_quantile(after: dict, before: dict, q: float) -> float:
    """histogram_quantile over the phase's deltas of deploybot_event_loop_lag_seconds."""
    buckets = sorted(
        (float(dict(ls)["le"]), delta(after, before, n, le=dict(ls)["le"]))
        for (n, ls) in after
        if n == "deploybot_event_loop_lag_seconds_bucket"
    )
    total = buckets[-1][1] if buckets else 0
    if total <= 0:
        return 0.0
    rank, lower, below = q * total, 0.0, 0.0
    for upper, count in buckets:
        if count >= rank:
            if math.isinf(upper):
                return lower
            return lower + (upper - lower) * ((rank - below) / max(count - below, 1e-9))
        lower, below = upper, count
    return lower


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of the process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = int(value.split()[0]) / 1024
    return fields.get("VmRSS", 0.0), fields.get("VmHWM", 0.0)


def ended(db: str, ids: set[int]) -> dict[int, str]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        marks = ",".join("?" * len(ids))
        rows = conn.execute(f"SELECT id, state FROM deployments WHERE id IN ({marks})", tuple(ids)).fetchall()
    finally:
        conn.close()
    return {i: s for i, s in rows if s in ENDED}


def new_ids(db: str, after: int) -> set[int]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        return {r[0] for r in conn.execute("SELECT id FROM deployments WHERE id > ?", (after,))}
    finally:
        conn.close()


async def phase(
    sb: Sandbox,
    client: SandboxClient,
    session: aiohttp.ClientSession,
    requests: list[tuple[str, str, str]],
    within: float,
) -> dict[str, Any]:
    """Send every /deploy at once, wait until all the deployments they made have ended; the figures."""
    assert sb.bot is not None and sb.bot.proc is not None and sb.bot.url
    pid, url = sb.bot.proc.pid, sb.bot.url
    last = max(new_ids(sb.db, 0) or {0})
    control = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CONTROL, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    posted_before = len(await client.messages("deploys"))
    before = await scrape(session, url)
    peak = rss_mb(pid)[0]
    began = time.monotonic()
    await asyncio.gather(*(client.slash("alice", "/deploy", f"{s} {v} to {e}") for s, v, e in requests))
    ids: set[int] = set()
    outcomes: dict[int, str] = {}
    while time.monotonic() - began < within:
        peak = max(peak, rss_mb(pid)[0])
        ids = new_ids(sb.db, last)
        outcomes = ended(sb.db, ids) if ids else {}
        if len(ids) >= len(requests) and len(outcomes) == len(ids):
            break
        await asyncio.sleep(0.5)
    wall = time.monotonic() - began
    after = await scrape(session, url)
    floor = json.loads((await control.communicate(b""))[0] or b"{}")
    posted = len(await client.messages("deploys")) - posted_before
    rss, hwm = rss_mb(pid)
    gmd = delta(after, before, "deploybot_aws_calls_total", operation="CLOUDWATCH GetMetricData")
    queries = delta(after, before, "deploybot_metric_queries_total")
    ticks = delta(after, before, "deploybot_metric_batches_total")
    counts: dict[str, int] = {}
    for state in outcomes.values():
        counts[state] = counts.get(state, 0) + 1
    return {
        "deployments": len(ids),
        "ended": len(outcomes),
        "outcomes": counts,
        "wall_s": wall,
        "rss_peak_mb": max(peak, rss),
        "rss_hwm_mb": hwm,
        "lag_p50_ms": 1000 * lag_quantile(after, before, 0.50),
        "lag_p99_ms": 1000 * lag_quantile(after, before, 0.99),
        "lag_samples": delta(after, before, "deploybot_event_loop_lag_seconds_count"),
        "aws_per_min": {
            op: n * 60 / wall
            for op, n in by_label(after, before, "deploybot_aws_calls_total", "operation").items()
            if n
        },
        "aws_errors": {
            op: n for op, n in by_label(after, before, "deploybot_aws_errors_total", "operation").items() if n
        },
        "deployments_per_min": len(outcomes) * 60 / wall,
        "gmd_calls": gmd,
        "gmd_queries": queries,
        "gmd_ticks": ticks,
        "gmd_reads": delta(after, before, "deploybot_metric_reads_total"),
        "gmd_excess": delta(after, before, "deploybot_metric_batch_excess_calls_total"),
        "slack_calls": delta(after, before, "deploybot_slack_calls_total"),
        "slack_429": delta(after, before, "deploybot_slack_rate_limited_total"),
        "outbox_lag_end": delta(after, {}, "deploybot_outbox_lag_events"),
        "posted": posted,
        "floor_p50_ms": 1000 * floor.get("p50", 0.0),
        "floor_p99_ms": 1000 * floor.get("p99", 0.0),
    }


def report(one: dict[str, Any], many: dict[str, Any], services: int) -> bool:
    rows = [
        ("deployments (ended or paused / made)", lambda p: f"{p['ended']} / {p['deployments']}"),
        ("outcomes", lambda p: ", ".join(f"{k} {v}" for k, v in sorted(p["outcomes"].items()))),
        ("wall seconds", lambda p: f"{p['wall_s']:.1f}"),
        ("RSS peak MB (VmHWM)", lambda p: f"{p['rss_peak_mb']:.0f} ({p['rss_hwm_mb']:.0f})"),
        (
            "loop lag p50 / p99 ms",
            lambda p: f"{p['lag_p50_ms']:.1f} / {p['lag_p99_ms']:.1f} ({p['lag_samples']:.0f} samples)",
        ),
        (
            "  idle asyncio process, same seconds",
            lambda p: f"{p['floor_p50_ms']:.1f} / {p['floor_p99_ms']:.1f}",
        ),
        ("deployments ended per minute", lambda p: f"{p['deployments_per_min']:.1f}"),
        ("GetMetricData calls", lambda p: f"{p['gmd_calls']:.0f}"),
        ("  measurements (reads) / queries", lambda p: f"{p['gmd_reads']:.0f} / {p['gmd_queries']:.0f}"),
        ("  ticks (batches)", lambda p: f"{p['gmd_ticks']:.0f}"),
        ("  calls per tick (mean)", lambda p: f"{p['gmd_calls'] / max(p['gmd_ticks'], 1):.2f}"),
        ("  queries per tick (mean)", lambda p: f"{p['gmd_queries'] / max(p['gmd_ticks'], 1):.1f}"),
        ("  calls beyond ceil(q/500) per tick", lambda p: f"{p['gmd_excess']:.0f}"),
        ("Slack calls (429s)", lambda p: f"{p['slack_calls']:.0f} ({p['slack_429']:.0f})"),
        ("messages in #deploys (posted)", lambda p: f"{p['posted']}"),
        ("outbox lag at the end (events)", lambda p: f"{p['outbox_lag_end']:.0f}"),
    ]
    print(f"\n{'':38}{'1 deployment':>22}{f'{2 * services} deployments':>26}")
    for name, show in rows:
        print(f"{name:38}{show(one):>22}{show(many):>26}")
    print("\nAWS calls per wall minute, by operation:")
    for op in sorted(set(one["aws_per_min"]) | set(many["aws_per_min"])):
        print(f"  {op:36}{one['aws_per_min'].get(op, 0):>22.1f}{many['aws_per_min'].get(op, 0):>26.1f}")
    if one["aws_errors"] or many["aws_errors"]:
        print(f"AWS errors: 1: {one['aws_errors']}  many: {many['aws_errors']}")
    checks = [
        (f"RSS < {RSS_TARGET_MB:.0f} MB", many["rss_peak_mb"] < RSS_TARGET_MB),
        (f"loop lag p99 < {LAG_TARGET_S * 1000:.0f} ms", many["lag_p99_ms"] < LAG_TARGET_S * 1000),
        (
            "GetMetricData calls per tick <= ceil(queries / 500)",
            many["gmd_excess"] == 0 and many["gmd_calls"] > 0,
        ),
        (
            "every deployment ended (or waits for a person)",
            many["ended"] == many["deployments"] == 2 * services,
        ),
    ]
    print()
    for name, ok in checks:
        print(f"{'PASS' if ok else 'MISS'}  {name}")
    return all(ok for _, ok in checks)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--services", type=int, default=100)
    parser.add_argument("--speed", type=float, default=10.0)
    parser.add_argument("--timeout", type=float, default=1200.0, help="wall seconds per phase")
    args = parser.parse_args()
    services = [f"svc{i:03d}" for i in range(args.services)]
    workdir = Path(tempfile.mkdtemp(prefix="deploybot-scale-"))
    config = workdir / "scale.toml"
    write_config(config, services)
    sb = Sandbox(config=config, speed=args.speed, workdir=workdir, flag_users=0)
    timeout = sb.world.faults.timeout_seconds
    sb.world = AwsWorld(sb.clock, services=tuple(services), environments=ENVS, workdir=workdir)
    sb.world.faults.timeout_seconds = timeout
    print(
        f"config {config}: {len(services)} services x {len(ENVS)} environments; sandbox speed {args.speed}x"
    )
    started = time.monotonic()
    async with sb, SandboxClient(sb.slack_url) as client, aiohttp.ClientSession() as session:
        print(f"sandbox up in {time.monotonic() - started:.1f}s; bot log {workdir / 'bot.log'}")
        one = await phase(sb, client, session, [(services[0], "v2", "staging")], args.timeout)
        print(f"baseline: 1 deployment ended in {one['wall_s']:.1f}s wall ({one['outcomes']})")
        many = await phase(sb, client, session, [(s, "v3", e) for s in services for e in ENVS], args.timeout)
        ok = report(one, many, len(services))
    print(
        f"\n(the machine is shared: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end)"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
