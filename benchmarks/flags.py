"""How fast does `deploybot serve` answer OFREP flag evaluations? Compared with the bot's own /healthz
measured in the same run, as the floor.

Run it by hand from the repository root (it is a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/flags.py [--concurrency 200] [--rounds 10] [--sequential 500]

What it does:
  1. Writes a temporary config: the shipped config/deploybot.toml with 98 more boolean flags (100 in
     all), and sets their states in staging in a fresh store file, as /flag would (FlagBook.change):
     checkout-v2 at 25% with a region rule, search-ranking split 50/50, a third of the others on, a
     third at a percentage behind a rule, the rest off. So evaluations walk rules, splits and hashes.
  2. Starts the real bot, `deploybot serve` on 127.0.0.1 port 0 (bot.sandbox.run.BotProcess, as the
     sandbox starts it), with a staging API key in DEPLOYBOT_OFREP_KEY_STAGING and its Slack calls
     answered by the sandbox's local Slack in this process. No AWS is needed: nothing is deployed.
  3. Starts a load driver as a child process, so this process's work does not delay the clocks. It
     sends one unmeasured warm-up round per scenario, then `--rounds` rounds of `--concurrency`
     concurrent requests, alternating the order of the floor and the scenario measured against it,
     and times every request (time.perf_counter) and every round's wall time. Scenarios:
       healthz     GET /healthz (the bot's own route: one read of the store's active deployments)
       single      POST /ofrep/v1/evaluate/flags/checkout-v2, a different targetingKey and region each
       bulk        POST /ofrep/v1/evaluate/flags (100 flags), a different context each
       recheck     the bulk request again with If-None-Match: the ETag each context got (304 expected)
     and `--sequential` bulk requests one at a time (the latency of one bulk evaluation, no queueing).
  4. Prints p50/p99/max, requests/s and the median round per scenario, the server's own cost of a
     bulk evaluation measured in this process (evaluate_all + JSON), and the targets from the issue:
       single p99 <= 2x the floor's p99 at 200 concurrent;
       one bulk evaluation of 100 flags p99 <= 10 ms;
       every re-check answered 304 with no body, its p99 <= 2x the floor's.
     At 200 concurrent a request's latency is mostly queueing behind its round, so p99 is about the
     slowest round's wall time: run it two or three times, on a quiet machine, before reading much
     into one verdict.

Exit code: 0 when every target passed, 1 when a request failed or a target was missed. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCRIPT = Path(__file__).resolve()
ROOT = SCRIPT.parent.parent
sys.path.insert(0, str(ROOT))  # run as a script: the bot's packages import from the repository

FLAGS = 100
SINGLE_RATIO = 2.0  # the issue: single evaluations' p99 within 2x the floor's
BULK_P99_MS = 10.0  # the issue: a bulk evaluation of 100 flags within 10 ms at p99
REGIONS = ("eu-west-1", "us-east-1", "ap-south-1")
PLANS = ("free", "pro", "beta")


# ---------------------------------------------------------------------------------- the setup


def write_config(workdir: Path) -> Path:
    text = (ROOT / "config" / "deploybot.toml").read_text()
    extra = [
        f'\n[flags.bench-{i:03}]\ntype = "boolean"\ndescription = "benchmark flag {i}"\nservices = ["web"]\n'
        for i in range(FLAGS - 2)
    ]
    path = workdir / "deploybot.toml"
    path.write_text(text + "".join(extra))
    return path


async def prepare_flags(config: Path, db: Path) -> dict[str, float]:
    """Set the flags' states in staging as /flag would; return the in-process cost of one bulk
    evaluation (evaluate_all + the JSON body) in microseconds, p50 and p99."""
    from bot.adapters.store.aio import AsyncStore
    from bot.adapters.store.sqlite import Store
    from bot.app.flags import FlagBook
    from bot.config.load import load_settings
    from bot.domain.flags import Condition, Rule, at_percent, on_for, turned_on, with_variants

    settings = load_settings(config, env={})
    store = AsyncStore(Store(db))
    try:
        book = FlagBook(settings, store)
        await book.load()
        assert len(settings.flags) == FLAGS, len(settings.flags)
        eu = Rule("on", (Condition("region", "in", ("eu-west-1",)),))
        beta = Rule("on", segment="beta")

        async def change(key: str, make: Any) -> None:
            await book.change("staging", key, make, actor="bench", action="flag", summary="benchmark")

        await change("checkout-v2", lambda f, s: at_percent(f, on_for(f, s, eu), 25))
        await change("search-ranking", lambda f, s: with_variants(f, s, [("control", 50), ("treatment", 50)]))
        for i in range(FLAGS - 2):
            key = f"bench-{i:03}"
            if i % 3 == 0:
                await change(key, turned_on)
            elif i % 3 == 1:
                await change(key, lambda f, s, p=(i % 10) * 10: at_percent(f, on_for(f, s, beta), p))
        snap = book.snapshot("staging")
        assert snap is not None
        times = []
        for n in range(2000):
            context = {"targetingKey": f"user-{n}", "region": REGIONS[n % 3], "plan": PLANS[n % 3]}
            start = time.perf_counter()
            json.dumps({"flags": [e.to_ofrep() for e in snap.evaluate_all(context)]}).encode()
            times.append((time.perf_counter() - start) * 1e6)
        pct = statistics.quantiles(times, n=100, method="inclusive")
        return {"p50": pct[49], "p99": pct[98]}
    finally:
        store.close()


def context(n: int) -> dict[str, Any]:
    return {"targetingKey": f"user-{n}", "region": REGIONS[n % 3], "plan": PLANS[n % 3]}


# ---------------------------------------------------------------------------------- load driver


Request = tuple[str, str, bytes | None, dict[str, str]]  # method, url, body, headers


class Driver:
    """Child mode: every scenario against the bot; raw latencies, statuses and body checks."""

    def __init__(self, plan: dict[str, Any]):
        self.base, self.n, self.rounds = plan["url"], plan["concurrency"], plan["rounds"]
        self.sequential = plan["sequential"]
        self.auth = {"Authorization": f"Bearer {plan['key']}", "Content-Type": "application/json"}
        self.single_url = self.base + "/ofrep/v1/evaluate/flags/checkout-v2"
        self.bulk_url = self.base + "/ofrep/v1/evaluate/flags"
        self.bodies = [json.dumps({"context": context(i)}).encode() for i in range(self.n)]
        self.etags: dict[int, str] = {}

    async def one(self, session: Any, method: str, url: str, body: bytes | None, headers: dict[str, str]):
        import aiohttp

        start = time.perf_counter()
        try:
            async with session.request(method, url, data=body, headers=headers) as resp:
                raw = await resp.read()
                return time.perf_counter() - start, resp.status, raw, resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError) as exc:
            return time.perf_counter() - start, 0, type(exc).__name__.encode(), None

    def requests_of(self, scenario: str, round_no: int) -> list[Request]:
        n, auth = self.n, self.auth
        if scenario == "healthz":
            return [("GET", self.base + "/healthz", None, {})] * n
        if scenario == "single":  # a new targeting key each request, each round
            return [
                ("POST", self.single_url, json.dumps({"context": context(round_no * n + i)}).encode(), auth)
                for i in range(n)
            ]
        if scenario == "bulk":
            return [("POST", self.bulk_url, self.bodies[i], auth) for i in range(n)]
        return [
            ("POST", self.bulk_url, self.bodies[i], {**auth, "If-None-Match": self.etags[i]})
            for i in range(n)
        ]

    @staticmethod
    def check(scenario: str, status: int, raw: bytes) -> str:
        if scenario == "recheck":
            return "304" if status == 304 and raw == b"" else f"http {status} ({len(raw)} bytes)"
        if status != 200:
            return f"http {status}"
        if scenario == "bulk":
            flags = json.loads(raw)["flags"]
            return "100 flags" if len(flags) == FLAGS and all("value" in f for f in flags) else "wrong body"
        if scenario == "single":
            return "evaluated" if json.loads(raw).get("variant") in ("on", "off") else "wrong body"
        return "200"

    async def run(self) -> dict[str, Any]:
        import aiohttp

        results: dict[str, Any] = {}
        timeout = aiohttp.ClientTimeout(total=30)
        connector = aiohttp.TCPConnector(limit=0)  # every request of a round in flight at once
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            for i, body in enumerate(self.bodies):  # the ETag each context gets, for the re-check
                _, status, _, etag = await self.one(session, "POST", self.bulk_url, body, self.auth)
                assert status == 200 and etag, (status, etag)
                self.etags[i] = etag
            for pair in (("healthz", "single"), ("healthz", "bulk"), ("healthz", "recheck")):
                for round_no in range(self.rounds + 1):  # round 0 is the warm-up: not measured
                    for scenario in pair if round_no % 2 else reversed(pair):
                        await self.round(session, scenario, round_no, results)
            results["bulk, one at a time"] = await self.one_at_a_time(session)
        return results

    async def round(self, session: Any, scenario: str, round_no: int, results: dict[str, Any]) -> None:
        reqs = self.requests_of(scenario, round_no)
        start = time.perf_counter()
        got = await asyncio.gather(*(self.one(session, *r) for r in reqs))
        wall = time.perf_counter() - start
        if round_no == 0:
            return
        acc = results.setdefault(scenario, {"latencies": [], "kinds": [], "walls": []})
        acc["latencies"] += [lat for lat, *_ in got]
        acc["kinds"] += [self.check(scenario, status, raw) for _, status, raw, _ in got]
        acc["walls"].append(wall)

    async def one_at_a_time(self, session: Any) -> dict[str, Any]:
        """One bulk evaluation at a time: its own latency, no queue (the first 20: warm-up)."""
        seq: dict[str, Any] = {"latencies": [], "kinds": [], "walls": []}
        for i in range(self.sequential + 20):
            lat, status, raw, _ = await self.one(
                session, "POST", self.bulk_url, self.bodies[i % self.n], self.auth
            )
            if i >= 20:
                seq["latencies"].append(lat)
                seq["kinds"].append(self.check("bulk", status, raw))
                seq["walls"].append(lat)
        return seq


# ---------------------------------------------------------------------------------- orchestrator


def stats(latencies: list[float], walls: list[float]) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    pct = statistics.quantiles(ms, n=100, method="inclusive") if len(ms) > 1 else ms * 99
    return {
        "p50": pct[49],
        "p99": pct[98],
        "max": ms[-1],
        "rps": len(ms) / sum(walls),
        "round": statistics.median(walls) * 1000,
    }


def report(results: dict[str, Any], micro: dict[str, float], args: argparse.Namespace) -> int:
    from collections import Counter

    figures = {name: stats(r["latencies"], r["walls"]) for name, r in results.items()}
    good = {"healthz": "200", "single": "evaluated", "bulk": "100 flags", "recheck": "304"}
    good["bulk, one at a time"] = "100 flags"
    failures = 0
    print(f"\n{'scenario':<20} {'requests':>8} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'req/s':>8} "
          f"{'round ms':>8} {'failed':>6}  answers")  # fmt: skip
    for name, r in results.items():
        s = figures[name]
        bad = sum(1 for k in r["kinds"] if k != good[name])
        failures += bad
        kinds = ", ".join(f"{k} {c}" for k, c in sorted(Counter(r["kinds"]).items()))
        rnd = f"{s['round']:>8.1f}" if name != "bulk, one at a time" else f"{'-':>8}"
        print(
            f"{name:<20} {len(r['latencies']):>8} {s['p50']:>8.2f} {s['p99']:>8.2f} {s['max']:>8.2f} "
            f"{s['rps']:>8.0f} {rnd} {bad:>6}  {kinds}"
        )
    print(f"(round ms: the median round's wall time; {args.concurrency} requests in flight per round)")
    print(
        f"server's own cost of one bulk evaluation of {FLAGS} flags (evaluate_all + JSON, in process): "
        f"p50 {micro['p50']:.0f} µs, p99 {micro['p99']:.0f} µs"
    )

    floor = figures["healthz"]["p99"]
    verdicts = []
    print(f"\ntargets (floor: the bot's own /healthz p99 {floor:.1f} ms at {args.concurrency} concurrent)")
    single = figures["single"]["p99"]
    verdicts.append(single <= SINGLE_RATIO * floor)
    print(f"  single evaluation p99 {single:.1f} ms = {single / floor:.2f}x the floor "
          f"(target <= {SINGLE_RATIO:g}x)  {'PASS' if verdicts[-1] else 'FAIL'}")  # fmt: skip
    one = figures["bulk, one at a time"]["p99"]
    verdicts.append(one <= BULK_P99_MS)
    print(f"  bulk evaluation of {FLAGS} flags, one at a time: p99 {one:.2f} ms (target <= {BULK_P99_MS:g} ms)  "
          f"{'PASS' if verdicts[-1] else 'FAIL'}")  # fmt: skip
    recheck = figures["recheck"]["p99"]
    all_304 = all(k == "304" for k in results["recheck"]["kinds"])
    verdicts.append(all_304 and recheck <= SINGLE_RATIO * floor)
    print(f"  re-check with the ETag: {'every answer 304, no body' if all_304 else 'NOT every answer 304'}; "
          f"p99 {recheck:.1f} ms = {recheck / floor:.2f}x the floor (target <= {SINGLE_RATIO:g}x)  "
          f"{'PASS' if verdicts[-1] else 'FAIL'}")  # fmt: skip
    bulk = figures["bulk"]["p99"]
    print(
        f"  (bulk at {args.concurrency} concurrent, no target: p99 {bulk:.1f} ms = {bulk / floor:.2f}x the floor)"
    )
    if failures:
        print(f"\n{failures} requests failed (a wrong status or body, or no answer)")
    return 0 if not failures and all(verdicts) else 1


async def orchestrate(args: argparse.Namespace) -> int:
    from bot.sandbox.run import BotProcess
    from bot.sandbox.slack import LocalSlack

    print(
        f"flags over OFREP: {args.concurrency} concurrent requests x {args.rounds} rounds per scenario, "
        f"{args.sequential} bulk requests one at a time; {FLAGS} flags; Python {platform.python_version()}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="deploybot-bench-flags-") as tmp:
        workdir = Path(tmp)
        config, db = write_config(workdir), workdir / "deploybot.db"
        micro = await prepare_flags(config, db)
        signing, token, key = (
            secrets.token_hex(16),
            "xoxb-bench-" + secrets.token_hex(8),
            secrets.token_hex(16),
        )
        slack = LocalSlack(signing_secret=signing, bot_token=token)
        slack_url = await slack.start()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SLACK_", "DEPLOYBOT_"))}
        env.update(
            {
                "SLACK_BOT_TOKEN": token,
                "SLACK_SIGNING_SECRET": signing,
                "SLACK_API_URL": slack_url + "/api/",
                "DEPLOYBOT_OFREP_KEY_STAGING": key,
                "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench",
                "AWS_DEFAULT_REGION": "us-east-1",
                "PYTHONUNBUFFERED": "1",
                "DEPLOYBOT_PARENT_PID": str(os.getpid()),
            }
        )
        bot = BotProcess(
            env,
            ["--host", "127.0.0.1", "--port", "0", "--config", str(config), "--db", str(db)],
            workdir / "bot.log",
        )
        try:
            url = await bot.start()
            print(f"deploybot serve up in {time.monotonic() - started:.1f}s at {url}; measuring", flush=True)
            plan = {
                "url": url,
                "key": key,
                "concurrency": args.concurrency,
                "rounds": args.rounds,
                "sequential": args.sequential,
            }
            driver = await asyncio.create_subprocess_exec(
                sys.executable,
                str(SCRIPT),
                "--drive",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            out, _ = await driver.communicate(json.dumps(plan).encode())
            if driver.returncode != 0:
                print(f"the load driver failed (exit {driver.returncode})", file=sys.stderr)
                return 1
        finally:
            await bot.stop()
            await slack.stop()
        code = report(json.loads(out), micro, args)
        log = (workdir / "bot.log").read_text(errors="replace")
        if key in log:
            print("FAIL: the API key appears in the bot's log", file=sys.stderr)
            code = 1
        if code:
            print(f"\nthe bot's log ends with:\n{log[-2000:]}", file=sys.stderr)
    print(f"\ntotal {time.monotonic() - started:.1f}s")
    return code


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--concurrency", type=int, default=200, help="concurrent requests per round (default 200)")
    p.add_argument("--rounds", type=int, default=10, help="measured rounds per scenario (default 10)")
    p.add_argument("--sequential", type=int, default=500, help="bulk requests one at a time (default 500)")
    p.add_argument("--drive", action="store_true", help=argparse.SUPPRESS)  # child: the load driver
    args = p.parse_args()
    if args.drive:
        print(json.dumps(asyncio.run(Driver(json.load(sys.stdin)).run())))
        return 0
    if args.concurrency < 1 or args.rounds < 1 or args.sequential < 2:
        p.error("--concurrency and --rounds must be at least 1, --sequential at least 2")
    try:
        return asyncio.run(orchestrate(args))
    except (RuntimeError, TimeoutError) as exc:  # the bot did not start
        print(f"flags benchmark: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
