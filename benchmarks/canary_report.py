"""The canary benchmark's report: medians, the per-step table, the issue's targets and whether the
baseline makes the bot's calls. See canary_overhead.py."""

from __future__ import annotations

import argparse
import difflib
import math
import re
import statistics
from collections import Counter
from datetime import datetime
from typing import Any

from canary_parts import CALLS_PER_SHIFT, MAX_GET_METRIC_DATA, MAX_STORE_OPS, TARGET_RATIO, Call, Run

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


def med(runs: list[Run], attr: str) -> float:
    return float(statistics.median(getattr(r, attr) for r in runs))


def medians(rounds: list[tuple[Run, Run]]) -> None:
    bots, bases = [b for b, _ in rounds], [p for _, p in rounds]
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
    print(
        f"  per-round wall ratios: {', '.join(f'{r:.2f}' for r in per_round)} (median "
        f"{statistics.median(per_round):.2f}); AWS call time ratios: {', '.join(f'{r:.2f}' for r in per_round_aws)}"
    )


def per_step(bot: Run, base: Run) -> None:
    """The per-step table of the median bot round and the baseline of the same round."""
    print(f"\nper step (median bot round: bot {bot.wall * 1000:.0f} ms, baseline {base.wall * 1000:.0f} ms)")
    print(f" {'#':>2} {'kind':<25}{'bot ms':>7}{'base ms':>8}  bot calls | baseline calls (if different)")
    for i, s in enumerate(bot.plan):
        b_calls, p_calls = by_action(bot.recorder.calls, i), by_action(base.recorder.calls, i)
        print(
            f" {i:>2} {s['kind']:<25}{bot.step_wall(i) * 1000:7.1f}{base.step_wall(i) * 1000:8.1f}  {b_calls}"
            + ("" if p_calls == b_calls else f" | {p_calls}")
        )
        print(f"    {describe_step(s)}")


def targets(bots: list[Run]) -> None:
    """GetMetricData per analysis measurement, AWS calls per weight shift and store round trips per
    canary, over every bot round."""
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


def sequences(rounds: list[tuple[Run, Run]], bot: Run, base: Run) -> None:
    bots = [b for b, _ in rounds]
    attributed = all(sorted(i for i in b.marks if i < len(b.plan)) == b.started for b in bots)
    print(
        "calls attributed to steps by the engine's outbox writes; the steps they saw match the store's step_started "
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
        for line in difflib.unified_diff(
            [str(c) for c in p_seq], [str(c) for c in b_seq], "baseline", "bot", n=1, lineterm=""
        ):
            print("   ", line[:200])


def details(bot: Run, base: Run) -> None:
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


def report(rounds: list[tuple[Run, Run]], args: argparse.Namespace) -> int:
    bots = [b for b, _ in rounds]
    bases = [p for _, p in rounds]
    if not all(b.ok for b in bots) or not all(p.ok for p in bases):
        for run in (r for pair in rounds for r in pair if not r.ok):
            print(f"{run.who} did not succeed: {run.outcome}")
        return 1
    medians(rounds)
    order = sorted(range(len(rounds)), key=lambda i: bots[i].wall)
    bot, base = rounds[order[len(order) // 2]]
    per_step(bot, base)
    targets(bots)
    sequences(rounds, bot, base)
    details(bot, base)
    wall_ratio = med(bots, "wall") / med(bases, "wall")
    print(
        f"\nbot {med(bots, 'wall') * 1000:.0f} ms, baseline {med(bases, 'wall') * 1000:.0f} ms, ratio "
        f"{wall_ratio:.2f} -- target <= {TARGET_RATIO}: {'PASS' if wall_ratio <= TARGET_RATIO else 'MISS'}"
        f" (AWS call time ratio {med(bots, 'aws') / med(bases, 'aws'):.2f})"
    )
    unstored = statistics.median(b.wall - b.store_seconds for b in bots)
    print(
        f"bot without its store calls {unstored * 1000:.0f} ms, ratio {unstored / med(bases, 'wall'):.2f} "
        "(what the engine and the platform seam cost beside the store's round trips)"
    )
    return 0
