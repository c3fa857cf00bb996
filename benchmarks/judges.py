"""Three canary judges on the SAME simulated canaries: the threshold judge (the project's own
bot.domain.analysis, as config/deploybot.toml configures production), a Kayenta-style fixed-horizon
Mann-Whitney classifier (written here after Kayenta's MannWhitneyClassifier: 95% confidence interval of
the Hodges-Lehmann shift of the per-minute values, "High" when its lower end is above a quarter of the
estimate; evaluated at the end of each step's bake), and the sequential judge (bot.domain.judging) twice:
"sequential" pauses for a person when a step's bake ends undecided, "seq+extend" bakes such a step on at
its weight up to --max-bake seconds (max_bake_seconds) first.

Run it by hand from the repository root (a benchmark, not a test; it prints figures):

    .venv/bin/python benchmarks/judges.py [--canaries 1000] [--seed 16] [--workers 2] [--human-minutes 15]
        [--max-bake 1800]

The generator: per canary, service traffic log-uniform 100..5,000 requests a minute (Poisson per 30 s
bucket, split by the canary weight), a base error rate log-uniform 0.1%..2% with minute-to-minute
overdispersion (beta-binomial: a rate per minute shared by both groups, Beta with concentration 100, and
each group's own, concentration 1,000, around it), latency with a long tail (per-request lognormal,
sigma 1; a minute's Average drawn as the mean of its requests, with shared and per-group noise). The
schedule is production's: canary_steps, step_bake_seconds and the analysis interval from the example
config (60 s per step), and the same with 300 s per step, a production-like bake (--step-bakes); a run
ends at a rollback, at a pause for a person (inconclusive), or when the weight reaches 100%. The same (canary, bucket, weight) always draws the same traffic, whichever judge moved there.

Figures per scenario and judge: rollbacks (false rollbacks on healthy canaries and on the shared
outage, detections on regressions), pauses for a person, median minutes to the verdict, median errors
served by the canary before the verdict (a pause adds --human-minutes at its weight: a person decides
then; a bad canary promoted to 100% adds them at 100%: someone notices), median minutes to 100% of the
canaries that got there (and their 90th percentile). Then the feasibility bound
(benchmarks.judges_bound): the share of +2 point canaries an oracle fixed-horizon test at the
false-rollback rate catches on the first step's data, on the first step baked on to --max-bake, and on the
whole fixed schedule's, with its rate on healthy canaries. The last line is the JSON of the same figures.
Exit 0 when the issue's targets are met by seq+extend, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from statistics import NormalDist
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.judges_bound import horizons, oracle_caught, oracle_sprt  # noqa: E402
from bot.config.load import load_settings  # noqa: E402
from bot.domain.analysis import Analysis, AnalysisConfig, GroupMetrics, judge  # noqa: E402
from bot.domain.judging import SequentialAnalysis, sequential_measurement  # noqa: E402
from bot.domain.sequential import Minute  # noqa: E402

BUCKET = 30  # seconds: the simulation's resolution; CloudWatch's minute is two buckets
SCENARIOS = {
    # name: (canary error points added, canary latency factor, shared outage, bad then recovers)
    "healthy": (0.0, 1.0, False, False),
    "errors +0.5pt": (0.005, 1.0, False, False),
    "errors +1pt": (0.01, 1.0, False, False),
    "errors +2pt": (0.02, 1.0, False, False),
    "errors +5pt": (0.05, 1.0, False, False),
    "latency +20%": (0.0, 1.2, False, False),
    "latency +50%": (0.0, 1.5, False, False),
    "shared outage": (0.0, 1.0, True, False),
    "bad, recovers": (0.05, 1.0, False, True),
}
JUDGES = ("thresholds", "kayenta", "sequential", "seq+extend")
TARGETED = ("healthy", "errors +2pt", "shared outage")
ORACLE_SCENARIOS = ("healthy", "errors +2pt")  # the feasibility bound's (healthy: its calibration)
OUTAGE = (2, 12)  # buckets [2, 12): minutes 1..6 of the canary, both groups +10 points and 2x latency


@dataclass(frozen=True)
class Schedule:
    steps: tuple[int, ...]  # weights below 100, in order
    bake: int  # seconds per step
    interval: int
    analysis: AnalysisConfig
    max_bake: int = 1800  # seq+extend: an undecided step bakes on up to this long (max_bake_seconds)


def schedule_from_example() -> Schedule:
    t = load_settings(ROOT / "config" / "deploybot.toml", env={}).target("web", "production")
    steps = tuple(int(w) for w in t.canary_steps if w != "pause" and int(w) < 100)
    return Schedule(steps, int(t.step_bake_seconds), int(t.analysis.interval_seconds), t.analysis)


# ------------------------------------------------------------------------------------------ the world


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 40:
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def _beta(rng: random.Random, mean: float, concentration: float) -> float:
    mean = min(max(mean, 1e-6), 1 - 1e-6)
    return rng.betavariate(mean * concentration, (1 - mean) * concentration)


class Canary:
    """One simulated canary: the service's traffic, error rate and latency, bucket by bucket."""

    def __init__(self, seed: int, scenario: str):
        self.seed = seed
        rng = random.Random(seed)
        self.rpm = math.exp(rng.uniform(math.log(100), math.log(5000)))
        self.base = math.exp(rng.uniform(math.log(0.001), math.log(0.02)))
        self.latency = rng.uniform(50, 300)
        self.effect, self.slower, self.outage, self.recovers = SCENARIOS[scenario]
        self._shared: dict[int, tuple[float, float]] = {}
        self._groups: dict[
            tuple[int, int], tuple[tuple[float, float, float], tuple[float, float, float]]
        ] = {}

    def shared(self, minute: int) -> tuple[float, float]:
        """The minute's service-wide error rate and latency factor (both groups)."""
        if minute not in self._shared:
            rng = random.Random(self.seed * 7919 + minute)
            self._shared[minute] = (_beta(rng, self.base, 100.0), math.exp(rng.gauss(0, 0.1)))
        return self._shared[minute]

    def bucket(self, b: int, weight: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        """(canary, stable) as (requests, errors, Average latency ms) in bucket `b` at `weight`%."""
        key = (b, weight)
        if key not in self._groups:
            rng = random.Random((self.seed * 1_000_003 + b) * 101 + weight)
            rate, lat = self.shared(b // 2)
            outage = self.outage and OUTAGE[0] <= b < OUTAGE[1]
            groups = []
            for canary in (True, False):
                share = weight / 100 if canary else 1 - weight / 100
                n = _poisson(rng, self.rpm * BUCKET / 60 * share)
                p = rate + (0.10 if outage else 0.0)
                factor = lat * (2.0 if outage else 1.0)
                if canary and (not self.recovers or b < 4):
                    p += self.effect
                    factor *= self.slower
                p = _beta(rng, min(p, 0.9), 1000.0)
                errors = float(_poisson(rng, n * p)) if n else 0.0
                mean = self.latency * factor * math.exp(rng.gauss(0, 0.03))
                cv2 = math.e - 1  # lognormal sigma 1
                latency = rng.gammavariate(n / cv2, mean * cv2 / n) if n else 0.0
                groups.append((float(n), min(errors, float(n)), latency))
            self._groups[key] = (groups[0], groups[1])
        return self._groups[key]


# ----------------------------------------------------------------------------------------- the judges


@dataclass
class Outcome:
    verdict: str  # "rollback", "pause", "promoted"
    seconds: float  # to the verdict
    errors: float  # served by the canary before it (see the module docstring)
    to_full: float | None  # seconds to 100%, when it got there


def _group(buckets: list[tuple[float, float, float]]) -> GroupMetrics:
    requests = sum(b[0] for b in buckets)
    errors = sum(b[1] for b in buckets)
    latency = sum(b[0] * b[2] for b in buckets) / requests if requests else None
    return GroupMetrics(requests=requests or None, errors=errors if requests else None, latency_ms=latency)


class Run:
    """Walks one canary through the schedule for one judge, counting the canary's errors."""

    def __init__(self, canary: Canary, schedule: Schedule, human_minutes: float):
        self.c, self.s, self.human = canary, schedule, human_minutes
        self.history: list[int] = []  # the weight in each bucket so far
        self.errors = 0.0

    def advance(self, weight: int) -> None:
        b = len(self.history)
        self.history.append(weight)
        self.errors += self.c.bucket(b, weight)[0][1]

    def data(self, b: int) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
        return self.c.bucket(b, self.history[b])

    def minutes(self, first_bucket: int, end_bucket: int) -> list[Minute]:
        out = []
        for start in range(first_bucket - first_bucket % 2, end_bucket - 1, 2):
            c = _group([self.data(start)[0], self.data(start + 1)[0]])
            s = _group([self.data(start)[1], self.data(start + 1)[1]])
            out.append(
                Minute(
                    c.requests or 0.0,
                    c.errors or 0.0,
                    s.requests or 0.0,
                    s.errors or 0.0,
                    c.latency_ms,
                    s.latency_ms,
                )
            )
        return out

    def end(self, verdict: str, weight: int) -> Outcome:
        seconds = len(self.history) * BUCKET
        errors = self.errors
        if verdict == "pause" or (verdict == "promoted" and (self.c.effect or self.c.slower != 1.0)):
            w = weight if verdict == "pause" else 100
            extra = int(self.human * 60 / BUCKET)
            errors += sum(self.c.bucket(len(self.history) + i, w)[0][1] for i in range(extra))
        return Outcome(verdict, seconds, errors, seconds if verdict == "promoted" else None)


def run_thresholds(run: Run) -> Outcome:
    s = run.s
    for weight in s.steps:
        analysis = Analysis(s.analysis)
        start = len(run.history)
        for _ in range(s.bake // s.interval):
            for _ in range(s.interval // BUCKET):
                run.advance(weight)
            now = len(run.history)
            window = range(max(0, now - s.analysis.window_seconds // BUCKET), now)
            canary = _group([run.data(b)[0] for b in window])
            stable = _group([run.data(b)[1] for b in window])
            analysis.add(judge(s.analysis, canary, stable, [], now * BUCKET, f"canary {weight}%"))
            if analysis.done:
                break
        del start
        status = analysis.finish()
        if status == "failed":
            return run.end("rollback", weight)
        if status == "inconclusive":
            return run.end("pause", weight)
    return run.end("promoted", 100)


def mann_whitney_high(experiment: list[float], control: list[float], confidence: float = 0.95) -> bool:
    """Kayenta's MannWhitneyClassifier, direction Increase: the confidence interval of the
    Hodges-Lehmann shift (experiment - control; normal approximation of the rank-sum distribution)
    lies above a quarter of the estimate's size."""
    n, m = len(experiment), len(control)
    if not n or not m or sorted(experiment) == sorted(control):
        return False
    diffs = sorted(x - y for x in experiment for y in control)
    estimate = statistics.median(diffs)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    k = math.floor(n * m / 2 - z * math.sqrt(n * m * (n + m + 1) / 12))
    if k < 0:
        return False  # too few values for an interval at this confidence: no classification
    lower = diffs[k]
    return lower > 0.25 * abs(estimate)


def run_kayenta(run: Run) -> Outcome:
    s = run.s
    for weight in s.steps:
        start = len(run.history)
        for _ in range(s.bake // BUCKET):
            run.advance(weight)
        minutes = [m for m in run.minutes(start, len(run.history)) if m.canary_requests and m.stable_requests]
        rates_c = [m.canary_errors / m.canary_requests for m in minutes]
        rates_s = [m.stable_errors / m.stable_requests for m in minutes]
        lat_c = [m.canary_latency_ms or 0.0 for m in minutes]
        lat_s = [m.stable_latency_ms or 0.0 for m in minutes]
        if mann_whitney_high(rates_c, rates_s) or mann_whitney_high(lat_c, lat_s):
            return run.end("rollback", weight)
    return run.end("promoted", 100)


def run_sequential(run: Run, max_bake: float = 0.0) -> Outcome:
    s = run.s
    config = replace(s.analysis, judge="sequential", max_bake_seconds=max_bake)
    for weight in s.steps:
        analysis = SequentialAnalysis(config, final=weight == s.steps[-1])
        start = len(run.history)
        while True:
            for _ in range(s.interval // BUCKET):
                run.advance(weight)
            now = len(run.history)
            minutes = run.minutes(0, now)  # every minute since the first step, as Analyze reads them
            analysis.add(sequential_measurement(config, minutes, [], now * BUCKET, f"canary {weight}%"))
            elapsed = (now - start) * BUCKET
            if analysis.done or analysis.ready(elapsed):
                break
            if elapsed >= s.bake and not analysis.measure_on(elapsed):  # as bot.app.measure.run_analysis
                break
        status = analysis.finish()
        if status == "failed":
            return run.end("rollback", weight)
        if status == "inconclusive":
            return run.end("pause", weight)
    return run.end("promoted", 100)


RUNNERS = {
    "thresholds": run_thresholds,
    "kayenta": run_kayenta,
    "sequential": run_sequential,  # max_bake_seconds = 0: pauses at the end of an undecided bake
    "seq+extend": lambda run: run_sequential(run, run.s.max_bake),
}


def _simulate(job: tuple[str, int, int, Schedule, float]) -> tuple[dict[str, list[Outcome]], dict[str, int]]:
    scenario, first, count, schedule, human = job
    out: dict[str, list[Outcome]] = {j: [] for j in JUDGES}
    caught: dict[str, Any] = {**dict.fromkeys(horizons(schedule, BUCKET), 0), "sprt": 0, "sprt_errors": []}
    alpha = schedule.analysis.false_rollback_rate
    for seed in range(first, first + count):
        canary = Canary(seed, scenario)
        for name in JUDGES:
            out[name].append(RUNNERS[name](Run(canary, schedule, human)))
        if scenario in ORACLE_SCENARIOS:
            for horizon, buckets in horizons(schedule, BUCKET).items():
                caught[horizon] += oracle_caught(canary, buckets, alpha)
            hit, errors = oracle_sprt(
                canary,
                horizons(schedule, BUCKET)["first step, max bake"],
                alpha,
                0.02,
                int(human * 60 / BUCKET),
            )
            caught["sprt"] += hit
            caught["sprt_errors"].append(errors)
    return out, caught


# --------------------------------------------------------------------------------------------- report


def figures(outcomes: list[Outcome]) -> dict[str, Any]:
    n = len(outcomes)
    full = [o.to_full / 60 for o in outcomes if o.to_full is not None]
    return {
        "rollback": sum(o.verdict == "rollback" for o in outcomes) / n,
        "pause": sum(o.verdict == "pause" for o in outcomes) / n,
        "stopped": sum(o.verdict != "promoted" for o in outcomes) / n,
        "minutes_to_verdict": statistics.median(o.seconds / 60 for o in outcomes),
        "errors_served": statistics.median(o.errors for o in outcomes),
        "minutes_to_100": statistics.median(full) if full else None,
        "minutes_to_100_p90": _p90(full),
    }


def _p90(values: list[float]) -> float | None:
    """The 90th percentile (nearest rank), None without values."""
    return sorted(values)[math.ceil(0.9 * len(values)) - 1] if values else None


def targets(
    results: dict[str, dict[str, dict[str, Any]]], schedule: Schedule, who: str = "sequential"
) -> list[tuple[str, bool]]:
    """The issue's targets for one of the sequential judges (`who`)."""
    h, r2, out = ({j: results[s][who if j == "sequential" else j] for j in JUDGES} for s in TARGETED)
    fixed = len(schedule.steps) * schedule.bake / 60
    seq_full = h["sequential"]["minutes_to_100"] or math.inf
    return [
        (
            f"healthy false rollbacks {h['sequential']['rollback']:.1%} <= 1% and <= thresholds' "
            f"{h['thresholds']['rollback']:.1%}",
            h["sequential"]["rollback"] <= 0.01
            and h["sequential"]["rollback"] <= h["thresholds"]["rollback"],
        ),
        (
            f"+2pt caught (rolled back) {r2['sequential']['rollback']:.1%} >= 99% "
            f"(stopped short of 100%, rolled back or paused: {r2['sequential']['stopped']:.1%})",
            r2["sequential"]["rollback"] >= 0.99,
        ),
        (
            f"+2pt median errors served {r2['sequential']['errors_served']:.0f} <= half thresholds' "
            f"{r2['thresholds']['errors_served']:.0f} and < kayenta's {r2['kayenta']['errors_served']:.0f}",
            r2["sequential"]["errors_served"] <= r2["thresholds"]["errors_served"] / 2
            and r2["sequential"]["errors_served"] < r2["kayenta"]["errors_served"],
        ),
        (
            f"healthy median minutes to 100% {seq_full:.1f} <= 70% of the fixed schedule's {fixed:.1f}",
            seq_full <= 0.7 * fixed,
        ),
        (
            f"shared outage not blamed on the canary {1 - out['sequential']['rollback']:.1%} >= 99%",
            out["sequential"]["rollback"] <= 0.01,
        ),
    ]


def evaluate(schedule: Schedule, args: argparse.Namespace) -> dict[str, Any]:
    """Every scenario and judge on one schedule: prints the table and the targets, returns the figures."""
    began = time.perf_counter()
    chunk = max(1, args.canaries // (4 * args.workers))
    jobs = [
        (scenario, args.seed * 1_000_000 + i, min(chunk, args.canaries - i), schedule, args.human_minutes)
        for scenario in SCENARIOS
        for i in range(0, args.canaries, chunk)
    ]
    merged: dict[str, dict[str, list[Outcome]]] = {s: {j: [] for j in JUDGES} for s in SCENARIOS}
    caught: dict[str, dict[str, Any]] = {
        s: {**dict.fromkeys(horizons(schedule, BUCKET), 0), "sprt": 0, "sprt_errors": []}
        for s in ORACLE_SCENARIOS
    }
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        for job, (part, hits) in zip(jobs, pool.map(_simulate, jobs), strict=True):
            for name in JUDGES:
                merged[job[0]][name].extend(part[name])
            for horizon, n in hits.items():
                if job[0] in caught:
                    caught[job[0]][horizon] += n
    results = {s: {j: figures(merged[s][j]) for j in JUDGES} for s in SCENARIOS}
    bound = {
        s: {h: statistics.median(n) if h == "sprt_errors" else n / args.canaries for h, n in by.items()}
        for s, by in caught.items()
    }
    print(
        f"\n{args.canaries} canaries per scenario, seed {args.seed}; schedule {list(schedule.steps)}% then "
        f"100%, {schedule.bake}s per step, a look every {schedule.interval}s; seq+extend bakes an undecided "
        f"step on up to {schedule.max_bake}s; {time.perf_counter() - began:.0f}s"
    )
    head = (
        f"{'scenario':<15} {'judge':<11} {'rollback':>8} {'paused':>7} {'min→verdict':>11} "
        f"{'errors':>7} {'min→100%':>9} {'p90':>5}"
    )
    print(head)
    print("-" * len(head))
    for scenario, by_judge in results.items():
        for name, f in by_judge.items():
            full, p90 = (
                "-" if v is None else f"{v:.1f}" for v in (f["minutes_to_100"], f["minutes_to_100_p90"])
            )
            print(
                f"{scenario:<15} {name:<11} {f['rollback']:>8.1%} {f['pause']:>7.1%} "
                f"{f['minutes_to_verdict']:>11.1f} {f['errors_served']:>7.0f} {full:>9} {p90:>5}"
            )
    alpha = schedule.analysis.false_rollback_rate
    print(
        f"Feasibility bound: +2pt canaries an oracle fixed-horizon test at alpha {alpha:g} catches (it knows "
        "the true error rate minute by minute; no valid test catches more), by the data it reads "
        "(healthy canaries it rejects, its calibration):"
    )
    for horizon in horizons(schedule, BUCKET):
        weights = sorted({w for _, w in horizons(schedule, BUCKET)[horizon]})
        seconds = len(horizons(schedule, BUCKET)[horizon]) * BUCKET
        print(
            f"  {horizon:<21} ({seconds}s at {'/'.join(map(str, weights))}%): "
            f"{bound['errors +2pt'][horizon]:.1%} (healthy {bound['healthy'][horizon]:.1%})"
        )
    print(
        f"  errors-served bound: an oracle SPRT knowing the rate and the +2 points, at 5% up to the max bake: "
        f"caught {bound['errors +2pt']['sprt']:.1%} (healthy {bound['healthy']['sprt']:.1%}), median errors "
        f"served {bound['errors +2pt']['sprt_errors']:.0f}"
    )
    checks = {who: targets(results, schedule, who) for who in ("sequential", "seq+extend")}
    for who, judged in checks.items():
        for text, ok in judged:
            print(f"{'PASS' if ok else 'MISS'} {who}: {text}")
    return {
        "step_bake_seconds": schedule.bake,
        "max_bake_seconds": schedule.max_bake,
        "results": results,
        "feasibility_bound": bound,
        "targets": {who: {t: ok for t, ok in judged} for who, judged in checks.items()},
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--canaries", type=int, default=1000)
    p.add_argument("--seed", type=int, default=16)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--human-minutes", type=float, default=15.0)
    p.add_argument("--max-bake", type=int, default=1800, help="seq+extend's max_bake_seconds (default: 1800)")
    p.add_argument(
        "--step-bakes",
        default="example,300",
        help="schedules to run: seconds per step, 'example' for the example config's (default: example,300)",
    )
    args = p.parse_args()
    example = schedule_from_example()
    runs = []
    for bake in args.step_bakes.split(","):
        schedule = example if bake == "example" else replace(example, bake=int(bake))
        schedule = replace(schedule, max_bake=args.max_bake)
        runs.append(evaluate(schedule, args))
    print(json.dumps({"canaries": args.canaries, "seed": args.seed, "schedules": runs}))
    return 0 if all(all(r["targets"]["seq+extend"].values()) for r in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
