"""Metric analysis for canary and blue-green bakes: each measurement (error rate, latency, alarms; absolute
and relative to the stable baseline) is judged pass / fail / inconclusive / error, and a run of them is
assessed with Argo Rollouts' semantics. No data is inconclusive, never a pass."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any, Literal, get_args

Verdict = Literal["pass", "fail", "inconclusive", "error"]  # one measurement
Status = Literal["running", "successful", "failed", "inconclusive"]  # a whole run (Argo's phases)
VERDICTS: tuple[Verdict, ...] = get_args(Verdict)
STATUSES: tuple[Status, ...] = get_args(Status)
LATENCY_STATISTIC = re.compile(r"^(Average|Minimum|Maximum|p(100|\d{1,2}(\.\d{1,2})?))$")


# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class AnalysisConfig:
    """How a bake is judged. The limits follow Argo Rollouts (docs/features/analysis.md, analysis.go):
    the run FAILS once failed measurements > failure_limit, is INCONCLUSIVE (pause, ask a human) once
    inconclusive measurements > inconclusive_limit, and errors out, which aborts like a failure, once API
    errors in a row > consecutive_error_limit (Argo's default 4)."""

    interval_seconds: float = 30.0
    window_seconds: int = 60  # look-back of each measurement; CloudWatch's ALB metrics come per minute
    min_requests: int = 50  # in the canary group within the window; fewer is inconclusive
    max_error_rate: float = 0.05
    max_error_rate_delta: float | None = 0.02  # canary minus stable, in rate points (0.02 = 2 points)
    max_latency_ms: float = 1000.0
    max_latency_ratio: float | None = 1.5  # canary / stable
    latency_statistic: str = "Average"
    alarms: tuple[str, ...] = ()
    failure_limit: int = 0
    consecutive_error_limit: int = 4
    inconclusive_limit: int = 0
    # The judge: "thresholds" (each measurement against the limits above) or "sequential" (bot.domain.
    # sequential: canary against stable, minute by minute, valid at every look; thresholds still judge
    # where there is no stable group, e.g. blue-green after the switch).
    judge: str = "thresholds"
    false_rollback_rate: float = 0.01  # sequential: the chance a healthy canary is rolled back
    error_rate_margin: float = 0.005  # sequential: canary may exceed stable by this (0.005 = half a point)
    latency_margin: float | None = 0.1  # sequential: canary latency may exceed stable's by 10%
    min_bake_seconds: float = 60.0  # sequential: a step shown healthy moves on after this much of its bake
    # sequential: a step still undecided at the end of its bake bakes on at its weight, up to this long in
    # all, before it pauses for a person (0: it pauses at the end of its bake). The test stays valid.
    max_bake_seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "alarms": list(self.alarms)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AnalysisConfig:
        """The inverse of to_dict (and of dataclasses.asdict, as a stored plan holds it)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        if "alarms" in values:
            values["alarms"] = tuple(values["alarms"])
        return cls(**values)


# ------------------------------------------------------------------------------------------ measurements


@dataclass(frozen=True)
class GroupMetrics:
    """One slot's traffic over one window, as a Metrics adapter reads it (bot.app.ports.Metrics). None
    means the backend returned no datapoint: no data, not zero.

    An ALB publishes HTTPCode_Target_5XX_Count only when there were 5XX responses, so `errors` is None
    with `requests` set on a healthy group; the judgement reads that as zero errors. A percentile
    statistic (p99) gives `latency_ms` None under moto, which never computes ExtendedStatistics."""

    requests: float | None = None
    errors: float | None = None
    latency_ms: float | None = None


@dataclass(frozen=True)
class Sample:
    """One target group's numbers in one window; None where CloudWatch had no data."""

    requests: float | None = None
    errors: float | None = None
    error_rate: float | None = None
    latency_ms: float | None = None

    @classmethod
    def of(cls, metrics: GroupMetrics) -> Sample:
        rate = None
        if metrics.requests:  # an ALB publishes no 5XX datapoint when there was no 5XX: zero errors
            rate = min(1.0, (metrics.errors or 0.0) / metrics.requests)
        return cls(metrics.requests, metrics.errors, rate, metrics.latency_ms)

    def describe(self) -> str:
        if not self.requests:
            return "no requests"
        parts = [f"{_count(self.requests)} requests", f"{_pct(self.error_rate)} errors"]
        parts.append("no latency data" if self.latency_ms is None else _ms(self.latency_ms))
        return ", ".join(parts)


def planned_measurements(bake_seconds: float, interval_seconds: float) -> int:
    """How many measurements a bake takes (bot.app.measure.run_analysis): one every interval, the last at
    the end of the bake, at least one, however slow a read (the loader's limits count the same)."""
    return max(1, math.ceil(max(0.0, bake_seconds) / interval_seconds - 1e-9))


@dataclass(frozen=True)
class Measurement:
    """One judged measurement, stored with the deployment (to_dict) and posted to its thread (line)."""

    at: float  # epoch seconds: the end of the window
    label: str  # the phase, e.g. "canary 25%"
    verdict: Verdict
    reasons: list[str] = field(default_factory=list)  # why it is not a pass, one sentence each
    canary: Sample | None = None  # None when the measurement could not be taken (error)
    stable: Sample | None = None  # None without a stable group (blue-green after the switch)
    alarms: list[dict[str, str]] = field(default_factory=list)  # [{"name", "reason"}] in ALARM
    notes: list[str] = field(default_factory=list)  # what was not judged, and why
    window_seconds: int = 60
    latency_statistic: str = "Average"
    evidence: dict[str, Any] | None = None  # the sequential judge's figures (bot.domain.judging)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Measurement:
        values = dict(data)
        for key in ("canary", "stable"):
            if values.get(key) is not None:
                values[key] = Sample(**values[key])
        return cls(**values)

    def line(self) -> str:
        """One line for Slack: phase, verdict, the numbers, and the reasons."""
        head = f"{self.label} at {_hms(self.at)}: {self.verdict}"
        if self.canary is not None:
            head += f": {subject(self.label)} {self.canary.describe()}"
            if self.stable is not None:
                head += f"; stable {self.stable.describe()}"
            if self.canary.latency_ms is not None or (self.stable and self.stable.latency_ms is not None):
                head += f" (latency {self.latency_statistic}, {self.window_seconds}s window)"
        return "; ".join([head, *self.reasons])


def subject(label: str) -> str:
    """What the new version's group is called in a phase's lines: the canary, or on blue-green (whose
    phase is "100% after the switch") the new version."""
    return "canary" if label.startswith("canary") else "new version"


def passed_text(passed: int, total: int) -> str:
    """'the only measurement passed', 'all 3 measurements passed', '2 of 3 measurements passed'."""
    if total == 1 and passed == 1:
        return "the only measurement passed"
    if passed == total:
        return f"all {total} measurements passed"
    return f"{passed} of {total} measurement{_s(total)} passed"


@dataclass
class _Judging:
    """One measurement being judged: the samples, the words for them, and what was found so far."""

    config: AnalysisConfig
    canary: Sample
    stable: Sample | None
    new: str  # "canary", or "new version" on blue-green (there is no canary)
    failed: list[str] = field(default_factory=list)
    unsure: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def baseline(self) -> Sample | None:
        """The stable group, when it had enough traffic in the window to compare with."""
        s = self.stable
        ok = s is not None and s.requests is not None and s.requests >= self.config.min_requests
        return s if ok else None


def judge(
    config: AnalysisConfig,
    canary: GroupMetrics,
    stable: GroupMetrics | None,
    alarms: list[dict[str, str]],
    at: float,
    label: str,
) -> Measurement:
    """Judge one measurement. Any alarm in ALARM fails it; without enough canary traffic it is
    inconclusive (never a pass); otherwise a breached threshold fails it, missing latency data makes it
    inconclusive. The stable group is a baseline only with at least min_requests in the window."""
    j = _Judging(config, Sample.of(canary), Sample.of(stable) if stable is not None else None, subject(label))
    for alarm in alarms:
        reason = f": {alarm['reason']}" if alarm.get("reason") else ""
        j.failed.append(f'CloudWatch alarm "{alarm["name"]}" is in ALARM{reason}')
    c, window = j.canary, config.window_seconds
    if c.requests is None or c.requests < config.min_requests:
        got = "no requests" if not c.requests else f"{_count(c.requests)} requests"
        j.unsure.append(
            f"not enough traffic: {got} in {window}s on the {j.new}, at least {config.min_requests} needed"
        )
    else:
        stable_rate, stable_latency = _baseline_words(j)
        _judge_error_rate(j, stable_rate)
        _judge_latency(j, stable_latency)
    verdict: Verdict = "fail" if j.failed else "inconclusive" if j.unsure else "pass"
    return Measurement(
        at=at,
        label=label,
        verdict=verdict,
        reasons=j.failed + j.unsure,
        canary=c,
        stable=j.stable,
        alarms=[dict(a) for a in alarms],
        notes=j.notes,
        window_seconds=window,
        latency_statistic=config.latency_statistic,
    )


def _baseline_words(j: _Judging) -> tuple[str, str]:
    """How the stable group reads beside the canary's error rate and latency (and a note when the
    relative thresholds cannot be judged)."""
    config, s = j.config, j.stable
    relative = config.max_error_rate_delta is not None or config.max_latency_ratio is not None
    if s is None:
        if relative:
            j.notes.append("no stable group to compare with: judged on absolute thresholds only")
        return "no stable baseline", "no stable baseline"
    if j.baseline is None:
        if relative:
            got = "no requests" if not s.requests else f"{_count(s.requests)} requests"
            j.notes.append(
                f"stable baseline unavailable ({got} in {config.window_seconds}s, at least "
                f"{config.min_requests} needed): judged on absolute thresholds only"
            )
        return "stable baseline unavailable", "stable baseline unavailable"
    latency = "stable: no data" if s.latency_ms is None else f"stable: {_ms(s.latency_ms)}"
    return f"stable: {_pct(s.error_rate)}", latency


def _judge_error_rate(j: _Judging, stable_rate: str) -> None:
    config, new = j.config, j.new
    rate = j.canary.error_rate or 0.0
    if rate > config.max_error_rate:
        j.failed.append(
            f"error rate {_pct(rate)} on the {new} > {_pct(config.max_error_rate)} threshold ({stable_rate})"
        )
    base = j.baseline
    if base is not None and config.max_error_rate_delta is not None:
        base_rate = base.error_rate or 0.0
        if rate - base_rate > config.max_error_rate_delta + 1e-12:
            j.failed.append(
                f"error rate {_pct(rate)} on the {new} is {_points(rate - base_rate)} points above the "
                f"stable {_pct(base_rate)} (more than {_points(config.max_error_rate_delta)} allowed)"
            )


def _judge_latency(j: _Judging, stable_latency: str) -> None:
    config, new, stat = j.config, j.new, j.config.latency_statistic
    latency = j.canary.latency_ms
    if latency is None:
        j.unsure.append(
            f"no latency data ({stat} TargetResponseTime) for the {new} in {config.window_seconds}s: "
            "latency not judged"
        )
        return
    if latency > config.max_latency_ms:
        j.failed.append(
            f"latency {_ms(latency)} ({stat}) on the {new} > {_ms(config.max_latency_ms)} "
            f"threshold ({stable_latency})"
        )
    base = j.baseline
    if base is None or config.max_latency_ratio is None:
        return
    base_latency = base.latency_ms
    if not base_latency:
        j.notes.append(f"no {stat} latency for the stable group: latency ratio not judged")
    elif latency / base_latency > config.max_latency_ratio + 1e-12:
        j.failed.append(
            f"latency {_ms(latency)} ({stat}) on the {new} is "
            f"{latency / base_latency:.2f}x the stable {_ms(base_latency)} "
            f"(more than {config.max_latency_ratio:.2f}x allowed)"
        )


def error_measurement(config: AnalysisConfig, error: Exception, at: float, label: str) -> Measurement:
    """A measurement that could not be taken (an AWS API error): it counts toward consecutive errors."""
    return Measurement(
        at=at,
        label=label,
        verdict="error",
        reasons=[_plain(str(error))],
        window_seconds=config.window_seconds,
        latency_statistic=config.latency_statistic,
    )


# -------------------------------------------------------------------------------------------------- a run


class Analysis:
    """The measurements of one run (one bake) and its status, assessed the way Argo Rollouts assesses a
    metric: failed > failure_limit -> "failed"; inconclusive > inconclusive_limit -> "inconclusive";
    errors in a row > consecutive_error_limit -> "failed" (Argo's Error phase, which aborts the rollout
    like Failed; `errored` tells them apart). A status once reached sticks. finish() ends a run that is
    still running: "successful" with at least one pass, else "inconclusive" (Argo would say Successful;
    a bake that never saw a passing measurement proved nothing)."""

    def __init__(self, config: AnalysisConfig, measurements: Iterable[Measurement] = ()):
        self.config = config
        self.measurements: list[Measurement] = []
        self._status = "running"
        self.errored = False
        self.reason = ""
        for m in measurements:
            self.add(m)

    def count(self, verdict: Verdict) -> int:
        return sum(1 for m in self.measurements if m.verdict == verdict)

    @property
    def consecutive_errors(self) -> int:
        n = 0
        for m in reversed(self.measurements):
            if m.verdict != "error":
                break
            n += 1
        return n

    @property
    def status(self) -> str:
        return self._status

    @property
    def done(self) -> bool:
        return self._status != "running"

    def add(self, m: Measurement) -> None:
        if m.verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {m.verdict!r}; expected one of {', '.join(VERDICTS)}")
        self.measurements.append(m)
        if self.done:
            return
        c = self.config
        if (failed := self.count("fail")) > c.failure_limit:
            self._status = "failed"
            self.reason = f"{failed} failed measurement{_s(failed)} > failure limit {c.failure_limit}"
        elif (unsure := self.count("inconclusive")) > c.inconclusive_limit:
            self._status = "inconclusive"
            self.reason = (
                f"{unsure} inconclusive measurement{_s(unsure)} > inconclusive limit {c.inconclusive_limit}"
            )
        elif (errors := self.consecutive_errors) > c.consecutive_error_limit:
            self._status, self.errored = "failed", True
            self.reason = (
                f"{errors} measurement errors in a row > consecutive error limit {c.consecutive_error_limit}"
            )

    def finish(self) -> str:
        """The bake time is over: settle a running status (see the class docstring); returns it."""
        if not self.done:
            if self.count("pass"):
                self._status = "successful"
                self.reason = passed_text(self.count("pass"), len(self.measurements))
            else:
                self._status = "inconclusive"
                self.reason = "no measurement passed: the bake proved nothing"
        return self._status

    def summary(self) -> str:
        """Short text for the deployment's thread: status and why, counts, the last measurement."""
        head = {
            "running": "Analysis running",
            "successful": "Analysis successful",
            "failed": "Analysis errored" if self.errored else "Analysis failed",
            "inconclusive": "Analysis inconclusive (a person decides)",
        }[self._status]
        lines = [f"{head}{': ' + self.reason if self.reason else ''}."]
        counts = ", ".join(f"{self.count(v)} {v}" for v in VERDICTS if self.count(v))
        lines.append(f"{len(self.measurements)} measurement{_s(len(self.measurements))}: {counts or 'none'}.")
        if self.measurements:
            last = self.measurements[-1]
            lines.append(f"Last: {last.line()}")
            lines.extend(f"Note: {n}" for n in last.notes)
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self._status,
            "reason": self.reason,
            "errored": self.errored,
            "measurements": [m.to_dict() for m in self.measurements],
        }


# -------------------------------------------------------------------------------------------- formatting


def _plain(text: str, limit: int = 300) -> str:
    """An error message fit for a Slack line: an HTML error page (moto's 500s) loses its tags, and the
    whole is kept short."""
    text = " ".join(re.sub(r"<[^>]*>", " ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _pct(rate: float | None) -> str:
    if rate is None:
        return "n/a"
    pct = rate * 100
    return f"{pct:.2f}%" if 0 < pct < 0.1 else f"{pct:.1f}%"


def _points(rate: float) -> str:
    return f"{rate * 100:.1f}"


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value >= 10 else f"{value:.1f} ms"


def _count(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def _hms(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%H:%M:%S UTC")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


# ------------------------------------------------------------------------------------- reasons' kinds

_REASON_KINDS: tuple[tuple[str, str], ...] = (  # (how judge() begins a reason, its kind), first match wins
    ("CloudWatch alarm", "a CloudWatch alarm in ALARM"),
    ("not enough traffic", "not enough traffic"),
    ("no latency data", "no latency data"),
)


def reason_kind(reason: str) -> str:
    """What kind of breach one of judge()'s reasons is, without its numbers (for counting rollbacks by
    cause): "error rate above the threshold", "latency above the stable baseline", an alarm ... Kept
    beside the words it reads so the two change together."""
    for start, kind in _REASON_KINDS:
        if reason.startswith(start):
            return kind
    for metric in ("error rate", "latency"):
        if reason.startswith(metric):
            return f"{metric} above the " + ("threshold" if "threshold" in reason else "stable baseline")
    return "the metrics could not be read" if reason else "?"
