"""The sequential judge's statistics (bot.domain.sequential, bot.domain.judging): known values of the
mixture boundary, validity under a look every minute by simulation (fixed seeds, small N), power, the
stable group as the control, too little data never a pass, and the words."""

from __future__ import annotations

import math
import random
from dataclasses import replace
from statistics import NormalDist

import pytest

from bot.domain import sequential as seq
from bot.domain.analysis import AnalysisConfig
from bot.domain.judging import SequentialAnalysis, explain, sequential_measurement

CONFIG = AnalysisConfig(judge="sequential", error_rate_margin=0.005, min_requests=50, min_bake_seconds=60)


def test_mixture_radius_known_values():
    # sqrt((1 + t²V)(2 ln(1/a) + ln(1 + t²V))) / (t V) with V = 10,000, a = 0.01, t = 0.02: t²V = 4
    expected = math.sqrt(5 * (2 * math.log(100) + math.log(5))) / 200
    assert seq.mixture_radius(10_000, 0.01, 0.02) == pytest.approx(expected)
    assert seq.mixture_radius(10_000, 0.01, 0.02) == pytest.approx(0.0368, abs=1e-4)
    assert seq.mixture_radius(0, 0.01, 0.02) == math.inf
    # always wider than the fixed-sample interval at the same level, narrower with more information
    for info in (1e2, 1e4, 1e6):
        fixed = NormalDist().inv_cdf(1 - 0.01) / math.sqrt(info)
        assert seq.mixture_radius(info, 0.01, 0.02) > fixed
        assert seq.mixture_radius(info * 4, 0.01, 0.02) < seq.mixture_radius(info, 0.01, 0.02)


def _minute(
    rng: random.Random, rpm: float, weight: float, base: float, effect: float, shared: float
) -> seq.Minute:
    """One overdispersed minute: a rate shared by both groups (Beta, concentration 100) plus each group's
    own (concentration 1,000); `shared` added to both groups (an outage), `effect` to the canary."""
    rate = rng.betavariate(base * 100, (1 - base) * 100) + shared
    counts = []
    for canary in (True, False):
        n = max(1, round(rng.gauss(rpm * (weight if canary else 1 - weight), 3)))
        p = min(0.9, rate + (effect if canary else 0.0))
        p = rng.betavariate(p * 1000, (1 - p) * 1000)
        counts.append((n, sum(rng.random() < p for _ in range(n))))
    (n, x), (m, y) = counts
    return seq.Minute(n, x, m, y, 100.0, 100.0)


def _first_fail(rng: random.Random, minutes: int, **kw: float) -> int | None:
    seen: list[seq.Minute] = []
    for i in range(minutes):
        seen.append(_minute(rng, **kw))
        e = seq.error_rate_test(seen, 0.005, 0.01, 0.2)
        if e is not None and e.decision == "fail":
            return i
    return None


def test_healthy_overdispersed_canaries_looked_at_every_minute_rarely_fail():
    """40 canaries x 20 looks each at alpha 1%: a fixed-horizon test read at every look would fail
    several of them; the confidence sequence fails at most one (expected: well under one)."""
    rng = random.Random(16)
    fails = sum(
        _first_fail(rng, 20, rpm=400, weight=0.25, base=0.01, effect=0.0, shared=0.0) is not None
        for _ in range(40)
    )
    assert fails <= 1


def test_the_naive_test_read_at_every_look_would_fail_healthy_canaries():
    """The same kind of traffic, judged each minute by a one-sided 99% z-test on the minute's own
    difference (no margin, no dispersion): that is what a confidence sequence is for."""
    rng = random.Random(16)
    naive = 0
    for _ in range(40):
        for _ in range(20):
            m = _minute(rng, rpm=400, weight=0.25, base=0.01, effect=0.0, shared=0.0)
            pc, ps = m.canary_errors / m.canary_requests, m.stable_errors / m.stable_requests
            p = (m.canary_errors + m.stable_errors) / (m.canary_requests + m.stable_requests)
            se = math.sqrt(max(p * (1 - p), 1e-9) * (1 / m.canary_requests + 1 / m.stable_requests))
            if (pc - ps) / se > 2.326:
                naive += 1
                break
    assert naive >= 4


def test_a_five_point_regression_fails_within_minutes():
    rng = random.Random(7)
    firsts = [
        _first_fail(rng, 10, rpm=1000, weight=0.25, base=0.01, effect=0.05, shared=0.0) for _ in range(10)
    ]
    assert all(f is not None and f <= 3 for f in firsts), firsts


def test_an_outage_on_both_groups_is_not_the_canarys_fault():
    rng = random.Random(3)
    assert all(
        _first_fail(rng, 10, rpm=1000, weight=0.25, base=0.01, effect=0.0, shared=0.10) is None
        for _ in range(10)
    )


def test_a_clearly_healthy_canary_with_traffic_is_shown_no_worse():
    minutes = [seq.Minute(2000, 2, 6000, 6, 100.0, 100.0) for _ in range(3)]
    e = seq.error_rate_test(minutes, 0.005, 0.01, 0.2)
    assert e is not None and e.decision == "pass" and e.upper < 0.005
    assert e.canary == pytest.approx(0.001) and e.stable == pytest.approx(0.001)


def test_no_errors_yet_on_few_requests_is_not_shown_no_worse():
    e = seq.error_rate_test([seq.Minute(20, 0, 400, 0)], 0.005, 0.01, 0.2)
    assert e is not None and e.decision == "continue"
    assert seq.error_rate_test([seq.Minute(0, 0, 400, 0)], 0.005, 0.01, 0.2) is None


def test_latency_ratio_known_value_and_decisions():
    same = [seq.Minute(500, 0, 1500, 0, 100.0, 100.0) for _ in range(4)]
    slow = [seq.Minute(500, 0, 1500, 0, 160.0, 100.0) for _ in range(4)]
    e = seq.latency_test(same, 1.1, 0.01, 0.2)
    assert e is not None and e.estimate == pytest.approx(1.0) and e.decision == "pass"
    e = seq.latency_test(slow, 1.1, 0.01, 0.2)
    assert e is not None and e.estimate == pytest.approx(1.6) and e.decision == "fail" and e.lower > 1.1
    assert seq.latency_test([seq.Minute(500, 0, 1500, 0, None, 100.0)], 1.1, 0.01, 0.2) is None


def test_the_verdict_in_words():
    e = seq.Evidence(
        metric="error rate",
        decision="fail",
        canary=0.024,
        stable=0.003,
        estimate=0.021,
        lower=0.011,
        upper=0.03,
        allowed=0.005,
        horizon_lower=0.015,
        horizon_upper=0.027,
        confidence=0.99,
        minutes=3,
        canary_requests=1840,
    )
    assert explain(e) == (
        "error rate 2.4% vs 0.3%: regression of at least 1.1 points with 99% confidence after 3 minutes, "
        "1,840 canary requests (0.5 allowed)"
    )
    lat = seq.Evidence(
        metric="latency",
        decision="fail",
        canary=160,
        stable=100,
        estimate=1.6,
        lower=1.32,
        upper=1.9,
        allowed=1.1,
        horizon_lower=1.5,
        horizon_upper=1.7,
        confidence=0.99,
        minutes=1,
        canary_requests=500,
    )
    assert explain(lat, "p99") == (
        "latency 160 ms vs 100 ms (p99): slower by at least 32% with 99% confidence after 1 minute, "
        "500 canary requests (+10% allowed)"
    )


def test_a_look_fails_on_an_alarm_and_is_inconclusive_without_traffic():
    alarm = [{"name": "web-5xx", "reason": "threshold crossed"}]
    m = sequential_measurement(CONFIG, [seq.Minute(2000, 2, 6000, 6, 100.0, 100.0)], alarm, 0.0, "canary 5%")
    assert m.verdict == "fail" and 'CloudWatch alarm "web-5xx" is in ALARM' in m.reasons[0]
    m = sequential_measurement(CONFIG, [], [], 0.0, "canary 5%")
    assert m.verdict == "inconclusive" and m.reasons == ["no whole minute with traffic on both groups yet"]
    run = SequentialAnalysis(CONFIG)
    run.add(m)
    assert not run.done and run.finish() == "inconclusive"  # no data is never a pass


def _run(minutes: list[seq.Minute], final: bool, config: AnalysisConfig = CONFIG) -> SequentialAnalysis:
    run = SequentialAnalysis(config, final=final)
    for i in range(1, len(minutes) + 1):
        run.add(sequential_measurement(config, minutes[:i], [], 60.0 * i, "canary 25%"))
    return run


def test_early_promotion_waits_for_the_minimum_bake():
    run = _run([seq.Minute(2000, 2, 6000, 6, 100.0, 100.0)] * 3, final=True)
    assert run.measurements[-1].verdict == "pass"
    assert not run.ready(30.0) and run.ready(60.0)
    assert run.finish() == "successful" and run.reason.startswith("shown no worse")


def test_an_undecided_bake_passes_on_to_the_next_step_but_not_past_the_last():
    # a little worse than stable, within the noise: undecided
    minutes = [seq.Minute(150, 2, 450, 3, 100.0, 100.0)] * 3
    run = _run(minutes, final=False)
    assert run.measurements[-1].verdict == "inconclusive"
    assert run.finish() == "successful" and "judged on at the next step" in run.reason
    assert _run(minutes, final=True).finish() == "inconclusive"


def test_too_few_requests_end_inconclusive_at_any_step():
    minutes = [seq.Minute(10, 0, 200, 0, 100.0, 100.0)] * 3  # 30 canary requests < min_requests 50
    for final in (True, False):
        run = _run(minutes, final=final)
        assert run.finish() == "inconclusive" and run.reason.startswith("too little traffic")


def test_an_undecided_run_measures_on_until_max_bake_seconds():
    few = [seq.Minute(10, 0, 200, 0, 100.0, 100.0)] * 3  # too few requests: would end inconclusive
    assert not _run(few, final=False).measure_on(60.0)  # max_bake_seconds = 0: no baking on
    longer = replace(CONFIG, max_bake_seconds=300)
    run = _run(few, final=False, config=longer)
    assert run.measure_on(60.0) and run.measure_on(299.0) and not run.measure_on(300.0)
    assert not run.done  # asking does not end the run
    assert run.finish() == "inconclusive" and not run.measure_on(60.0)  # finished: nothing to bake on
    # a run that would pass, or carry on to its next step, is not held back
    healthy = _run([seq.Minute(2000, 2, 6000, 6, 100.0, 100.0)] * 3, final=True, config=longer)
    assert not healthy.measure_on(60.0)
    undecided = _run([seq.Minute(150, 2, 450, 3, 100.0, 100.0)] * 3, final=False, config=longer)
    assert not undecided.measure_on(60.0) and undecided.finish() == "successful"
    # the same on the last step before 100% is not shown within its margin: it measures on
    assert _run([seq.Minute(150, 2, 450, 3, 100.0, 100.0)] * 3, final=True, config=longer).measure_on(60.0)


def test_a_failed_look_ends_the_run_at_once_with_its_words():
    run = SequentialAnalysis(CONFIG, final=False)
    run.add(
        sequential_measurement(CONFIG, [seq.Minute(1000, 80, 3000, 30, 100.0, 100.0)], [], 60.0, "canary 25%")
    )
    assert run.status == "failed" and run.finish() == "failed"
    assert run.reason.startswith("error rate 8.0% vs 1.0%: regression of at least")
