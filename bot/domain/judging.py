"""The sequential judge as a bake sees it: one measurement per look over the minutes since the bake began
(bot.domain.sequential does the statistics), and a run that fails as soon as the evidence is there, may
end early once the canary is shown no worse (down to the configured minimum bake), and at the end of its
time passes only with enough traffic and no leaning toward a regression; too little is inconclusive."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from bot.domain import sequential as seq
from bot.domain.analysis import Analysis, AnalysisConfig, Measurement, Sample, Status, _count, _s

# A wrong early pass only moves the canary on to its next step (judged again there), so "shown no worse"
# is read at a looser level than "shown worse"; the false-rollback rate is the configured one.
PASS_ALPHA = 0.2

JUDGES = ("thresholds", "sequential")


def sequential_measurement(
    config: AnalysisConfig,
    minutes: Sequence[seq.Minute],
    alarms: list[dict[str, str]],
    at: float,
    label: str,
) -> Measurement:
    """Judge one look: an alarm in ALARM or a test shown failed makes it "fail"; shown no worse on every
    test "pass"; otherwise "inconclusive" (not decided yet: the run measures on). Figures in `evidence`."""
    look = seq.look(
        minutes,
        delta=config.error_rate_margin,
        ratio=None if config.latency_margin is None else 1.0 + config.latency_margin,
        alpha=config.false_rollback_rate,
        pass_alpha=PASS_ALPHA,
        min_requests=config.min_requests,
    )
    failed = [
        f'CloudWatch alarm "{a["name"]}" is in ALARM' + (f": {a['reason']}" if a.get("reason") else "")
        for a in alarms
    ]
    tests = [e for e in (look.error_rate, look.latency) if e is not None]
    words = [explain(e, config.latency_statistic) for e in tests]
    if not tests:
        words = ["no whole minute with traffic on both groups yet"]
    elif not look.enough:
        got = sum(m.canary_requests for m in minutes)
        words.append(f"{_count(got)} canary requests so far, at least {config.min_requests} needed to pass")
    if failed or look.decision == "fail":
        verdict = "fail"
        reasons = failed + [explain(e, config.latency_statistic) for e in tests if e.decision == "fail"]
    else:
        verdict = "pass" if look.decision == "pass" else "inconclusive"
        reasons = words
    n = len(minutes)
    return Measurement(
        at=at,
        label=label,
        verdict=verdict,  # type: ignore[arg-type]
        reasons=reasons,
        canary=_sample(minutes, canary=True),
        stable=_sample(minutes, canary=False),
        alarms=[dict(a) for a in alarms],
        notes=[]
        if look.latency is not None or config.latency_margin is None
        else ["no latency data: not judged"],
        window_seconds=60 * max(1, n),
        latency_statistic=config.latency_statistic,
        evidence={
            "judge": "sequential",
            "decision": look.decision,
            "enough": look.enough,
            "minutes": n,
            "tests": [e.to_dict() for e in tests],
        },
    )


def _sample(minutes: Sequence[seq.Minute], canary: bool) -> Sample:
    req = [m.canary_requests if canary else m.stable_requests for m in minutes]
    err = [m.canary_errors if canary else m.stable_errors for m in minutes]
    lat = [m.canary_latency_ms if canary else m.stable_latency_ms for m in minutes]
    requests = sum(req)
    if not requests:
        return Sample(requests=None)
    errors = sum(err)
    timed = [(r, v) for r, v in zip(req, lat, strict=True) if v is not None and r > 0]
    weight = sum(r for r, _ in timed)
    latency = sum(r * v for r, v in timed) / weight if weight else None
    return Sample(requests, errors, min(1.0, errors / requests), latency)


def explain(e: seq.Evidence, statistic: str = "Average") -> str:
    """One test's figures in words, e.g. "error rate 2.4% vs 0.3%: regression of at least 1.1 points with
    99% confidence after 3 minutes, 1,840 canary requests"."""
    after = f"after {e.minutes} minute{_s(e.minutes)}, {e.canary_requests:,.0f} canary requests"
    conf = f"{e.confidence * 100:g}% confidence"
    if e.metric == "error rate":
        head = f"error rate {_rate(e.canary)} vs {_rate(e.stable)}"
        allowed = f"{_pts(e.allowed)} allowed"
        if e.decision == "fail":
            return f"{head}: regression of at least {_pts(e.lower)} points with {conf} {after} ({allowed})"
        if e.decision == "pass":
            return f"{head}: at most {_pts(max(e.upper, 0.0))} points above stable ({allowed}) {after}"
        return (
            f"{head}: {_pts(e.estimate, sign=True)} points, not yet shown beyond or within the "
            f"{_pts(e.allowed)} allowed {after}"
        )
    head = f"latency {e.canary:.0f} ms vs {e.stable:.0f} ms ({statistic})"
    allowed = f"+{_pct_ratio(e.allowed)} allowed"
    if e.decision == "fail":
        return f"{head}: slower by at least {_pct_ratio(e.lower)} with {conf} {after} ({allowed})"
    if e.decision == "pass":
        return f"{head}: at most {_pct_ratio(max(e.upper, 1.0))} slower ({allowed}) {after}"
    return (
        f"{head}: {_pct_ratio(e.estimate, sign=True)}, not yet shown beyond or within the {allowed} {after}"
    )


def _rate(rate: float) -> str:
    pct = rate * 100
    return f"{pct:.2f}%" if 0 < pct < 0.1 else f"{pct:.1f}%"


def _pts(rate: float, sign: bool = False) -> str:
    points = round(rate * 100, 1) + 0.0  # no "-0.0"
    return f"{points:+.1f}" if sign and points else f"{points:.1f}"


def _pct_ratio(ratio: float, sign: bool = False) -> str:
    return f"{(ratio - 1) * 100:+.0f}%" if sign else f"{(ratio - 1) * 100:.0f}%"


class SequentialAnalysis(Analysis):
    """A sequential bake. Fails once failed looks > failure_limit (a look fails only on evidence, which
    stays), errors out like Analysis on API errors in a row; an undecided look does not count against the
    inconclusive limit (measuring on is the point). `ready(elapsed)`: the last look passed and the bake
    has lasted min_bake_seconds: the step may move on. `measure_on(elapsed)`: at the end of the bake time
    the run would end inconclusive, and max_bake_seconds allow it to bake on at its weight instead.

    finish() at the end of the bake time, the last look undecided: with fewer than min_requests canary
    requests it is inconclusive (never a pass). Otherwise, read as fixed-horizon tests at the pass level:
    on the `final` bake (the last before 100%) it is successful only when every test bounds the canary
    within its margin; on an earlier one it carries on (its evidence goes on into the next step's, which
    reads the minutes since the first) unless a test finds the canary likely worse. Else inconclusive."""

    def __init__(
        self, config: AnalysisConfig, measurements: Iterable[Measurement] = (), *, final: bool = True
    ):
        self.final = final
        super().__init__(config, measurements)

    def add(self, m: Measurement) -> None:
        if m.verdict not in ("pass", "fail", "inconclusive", "error"):
            raise ValueError(f"unknown verdict {m.verdict!r}")
        self.measurements.append(m)
        if self.done:
            return
        c = self.config
        if (failed := self.count("fail")) > c.failure_limit:
            self._status = "failed"
            self.reason = m.reasons[-1] if m.verdict == "fail" and m.reasons else f"{failed} failed looks"
        elif (errors := self.consecutive_errors) > c.consecutive_error_limit:
            self._status, self.errored = "failed", True
            self.reason = (
                f"{errors} measurement errors in a row > consecutive error limit {c.consecutive_error_limit}"
            )

    def _last_look(self) -> Measurement | None:
        return next((m for m in reversed(self.measurements) if m.verdict != "error"), None)

    def ready(self, elapsed_seconds: float) -> bool:
        """The step may move on: min_bake_seconds have passed and the last look passed, or (before the
        final bake) had enough traffic and nothing leaning toward a regression."""
        last = self._last_look()
        if self.done or last is None or elapsed_seconds < self.config.min_bake_seconds:
            return False
        if last.verdict == "pass":
            return True
        evidence = last.evidence or {}
        tests = [seq.Evidence.from_dict(t) for t in evidence.get("tests", [])]
        return (
            not self.final
            and bool(evidence.get("enough"))
            and bool(tests)
            and all(t.horizon_lower <= t.allowed for t in tests)
        )

    def measure_on(self, elapsed_seconds: float) -> bool:
        """At (or past) the end of the bake time: the bake goes on at this weight, because the run would
        end inconclusive now and it has lasted less than max_bake_seconds. The looks stay valid however
        long it goes on (a confidence sequence may be read at every look: the false-rollback rate stays
        the configured one), so waiting for traffic is not fishing for a failure; past
        max_bake_seconds it ends inconclusive as before."""
        if self.done or elapsed_seconds >= self.config.max_bake_seconds:
            return False
        return self._conclusion()[0] == "inconclusive"

    def finish(self) -> str:
        if not self.done:
            self._status, self.reason = self._conclusion()
        return self._status

    def _conclusion(self) -> tuple[Status, str]:
        """What finish() would make of the run now (not done yet)."""
        last = self._last_look()
        evidence = (last.evidence or {}) if last is not None else {}
        said = "; ".join(last.reasons) if last is not None and last.reasons else "no look was taken"
        tests = [seq.Evidence.from_dict(t) for t in evidence.get("tests", [])]
        if last is not None and last.verdict == "pass":
            return "successful", f"shown no worse than the stable version: {said}"
        if not evidence.get("enough") or not tests:
            return "inconclusive", f"too little traffic to judge: {said}"
        if self.final and all(t.horizon_upper < t.allowed for t in tests):
            return "successful", f"no regression found in the bake: {said}"
        if not self.final and all(t.horizon_lower <= t.allowed for t in tests):
            return "successful", f"no regression found so far, judged on at the next step: {said}"
        return "inconclusive", f"the bake ended undecided: {said}"


def with_judge(config: AnalysisConfig, judge: str | None) -> AnalysisConfig:
    """The config with another judge (a service's override), or as it is."""
    return config if judge is None or judge == config.judge else replace(config, judge=judge)
