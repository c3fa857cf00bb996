"""The sequential judge's statistics: always-valid tests of the canary against the stable group, minute by
minute, that may be read at every look without inflating the false-rollback rate.

Error rate: per minute, the difference of the two groups' rates (the stable group in the SAME minute is the
control, so an outage that hits both cancels out), weighted by each minute's binomial information, its
variance inflated by the dispersion estimated from how the minutes scatter (beta-binomial traffic is
overdispersed), and judged with a normal-mixture confidence sequence (Robbins 1970; Howard et al. 2021):
"fail" once the lower bound of canary − stable exceeds the allowed delta with 1 − alpha confidence, "pass"
once the upper bound is below it (with the looser `pass_alpha`: a wrong early pass only moves a canary on
to its next step, where it is judged again), else "continue". Latency: the same on the per-minute log ratio
canary / stable of the latency statistic, its scale estimated from the minutes (a sequential stand-in for
Kayenta's Mann-Whitney with a Hodges-Lehmann bound, which needs a fixed horizon). Figures only, no words."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

Decision = Literal["fail", "pass", "continue"]

# Prior pseudo-observations: the dispersion starts at 1 (plain binomial) worth DISPERSION_PRIOR_DF minutes,
# the latency scale (squared coefficient of variation per request) at LATENCY_CV2 worth LATENCY_PRIOR_DF.
DISPERSION_PRIOR_DF = 1.0
LATENCY_CV2 = 2.0
LATENCY_PRIOR_DF = 2.0
# The mixtures' scales: the effect each boundary is tightest for (2 rate points; a 20% slower canary).
ERROR_SCALE = 0.02
LATENCY_SCALE = math.log(1.2)
# At the end of a bake, undecided: a pass needs the fixed-horizon upper bound at 80% within the margin.
HORIZON_Z = 0.8416


@dataclass(frozen=True)
class Minute:
    """One minute of both groups, as CloudWatch gives it per target group (latency: the configured
    statistic, in ms; None without data)."""

    canary_requests: float
    canary_errors: float
    stable_requests: float
    stable_errors: float
    canary_latency_ms: float | None = None
    stable_latency_ms: float | None = None


@dataclass(frozen=True)
class Evidence:
    """What one test saw. Error rate: `canary`/`stable` are pooled rates and `estimate`, `lower`, `upper`,
    `allowed` differences in rate (0.011 = 1.1 points). Latency: mean latencies in ms, and ratios."""

    metric: Literal["error rate", "latency"]
    decision: Decision
    canary: float
    stable: float
    estimate: float
    lower: float
    upper: float
    allowed: float
    horizon_lower: float  # the bounds at the pass level as a fixed-horizon test reads them (end of a bake)
    horizon_upper: float
    confidence: float
    minutes: int
    canary_requests: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Evidence:
        return cls(**data)


def mixture_radius(information: float, alpha: float, scale: float) -> float:
    """Half-width of the two-sided normal-mixture confidence sequence for a mean after `information`
    (1 / variance of the estimate), valid at every look simultaneously with error <= alpha. `scale` is the
    standard deviation of the mixing distribution, in the estimate's units (the effect size the
    boundary is tightest for)."""
    if information <= 0:
        return math.inf
    t2v = scale * scale * information
    return math.sqrt((1.0 + t2v) * (2.0 * math.log(1.0 / alpha) + math.log(1.0 + t2v))) / (
        scale * information
    )


def _decide(estimate: float, fail_radius: float, pass_radius: float, allowed: float) -> Decision:
    if estimate - fail_radius > allowed:
        return "fail"
    if estimate + pass_radius < allowed:
        return "pass"
    return "continue"


def error_rate_test(
    minutes: Sequence[Minute], delta: float, alpha: float, pass_alpha: float
) -> Evidence | None:
    """Canary rate − stable rate against `delta`; None without a minute where both groups had traffic.

    The variance of each minute's difference is taken at a canary rate of stable + delta, the boundary
    both decisions test against (a score test), so a canary with no errors yet is not "shown" no worse on
    too few requests, and a canary with many is judged against the variance the boundary would have."""
    used = [m for m in minutes if m.canary_requests > 0 and m.stable_requests > 0]
    if not used:
        return None
    n = sum(m.canary_requests for m in used)
    x = sum(min(m.canary_errors, m.canary_requests) for m in used)
    s = sum(m.stable_requests for m in used)
    y = sum(min(m.stable_errors, m.stable_requests) for m in used)
    p_s = (y + 0.5) / (s + 1.0)
    p_c = min(0.999, p_s + delta)  # the rate at the boundary tested, as a score test takes it
    # The dispersion: how much more the minutes scatter than binomial counts at the rates seen would.
    p_seen = min(0.999, max((x + 0.5) / (n + 1.0), p_c))
    weights, diffs, chi2 = [], [], 0.0
    for m in used:
        variance = p_c * (1 - p_c) / m.canary_requests + p_s * (1 - p_s) / m.stable_requests
        weights.append(1.0 / variance)
        rate = min(m.canary_errors, m.canary_requests) / m.canary_requests
        diffs.append(rate - m.stable_errors / m.stable_requests)
    information = sum(weights)
    estimate = sum(w * d for w, d in zip(weights, diffs, strict=True)) / information
    for m, d in zip(used, diffs, strict=True):
        seen = p_seen * (1 - p_seen) / m.canary_requests + p_s * (1 - p_s) / m.stable_requests
        chi2 += (d - estimate) ** 2 / seen
    dispersion = max(1.0, (chi2 + DISPERSION_PRIOR_DF) / (len(used) - 1 + DISPERSION_PRIOR_DF))
    info = information / dispersion
    scale = ERROR_SCALE
    fail_r, pass_r = mixture_radius(info, alpha, scale), mixture_radius(info, pass_alpha, scale)
    return Evidence(
        metric="error rate",
        decision=_decide(estimate, fail_r, pass_r, delta),
        canary=x / n,
        stable=y / s,
        estimate=estimate,
        lower=estimate - fail_r,
        upper=estimate + pass_r,
        allowed=delta,
        horizon_lower=estimate - HORIZON_Z * math.sqrt(1.0 / info),
        horizon_upper=estimate + HORIZON_Z * math.sqrt(1.0 / info),
        confidence=1 - alpha,
        minutes=len(used),
        canary_requests=n,
    )


def latency_test(minutes: Sequence[Minute], ratio: float, alpha: float, pass_alpha: float) -> Evidence | None:
    """Canary latency / stable latency against `ratio` (1.1 = 10% slower allowed), on the per-minute log
    ratios weighted by the minutes' requests; None without a minute where both groups have latency."""
    used = [
        (m.canary_requests, m.stable_requests, m.canary_latency_ms, m.stable_latency_ms)
        for m in minutes
        if m.canary_latency_ms and m.stable_latency_ms and m.canary_requests > 0 and m.stable_requests > 0
    ]
    if not used:
        return None
    weights = [1.0 / (1.0 / n + 1.0 / s) for n, s, _, _ in used]
    logs = [math.log(c / b) for _, _, c, b in used]
    total = sum(weights)
    estimate = sum(w * r for w, r in zip(weights, logs, strict=True)) / total
    spread = sum(w * (r - estimate) ** 2 for w, r in zip(weights, logs, strict=True))
    cv2 = (spread + LATENCY_CV2 * LATENCY_PRIOR_DF) / (len(used) - 1 + LATENCY_PRIOR_DF)
    info = total / cv2
    allowed = math.log(ratio)
    scale = LATENCY_SCALE
    fail_r, pass_r = mixture_radius(info, alpha, scale), mixture_radius(info, pass_alpha, scale)
    n = sum(u[0] for u in used)
    canary = sum(u[2] * u[0] for u in used) / n
    s = sum(u[1] for u in used)
    stable = sum(u[3] * u[1] for u in used) / s
    return Evidence(
        metric="latency",
        decision=_decide(estimate, fail_r, pass_r, allowed),
        canary=canary,
        stable=stable,
        estimate=math.exp(estimate),
        lower=math.exp(estimate - fail_r),
        upper=math.exp(estimate + pass_r),
        allowed=ratio,
        horizon_lower=math.exp(estimate - HORIZON_Z * math.sqrt(1.0 / info)),
        horizon_upper=math.exp(estimate + HORIZON_Z * math.sqrt(1.0 / info)),
        confidence=1 - alpha,
        minutes=len(used),
        canary_requests=n,
    )


@dataclass(frozen=True)
class Look:
    """One look of the sequential judge: both tests (None: no data for it) and the overall decision.
    "fail" if either test fails; "pass" once the error rate passes with at least `min_requests` canary
    requests and latency passes too (or has no data at all, as under a percentile moto cannot compute);
    otherwise "continue". `enough`: the canary had at least `min_requests` requests so far (the bar a
    run that ends undecided must clear to count as successful)."""

    decision: Decision
    error_rate: Evidence | None
    latency: Evidence | None
    enough: bool


def look(
    minutes: Sequence[Minute],
    *,
    delta: float,
    ratio: float | None,
    alpha: float,
    pass_alpha: float,
    min_requests: int,
) -> Look:
    errors = error_rate_test(minutes, delta, alpha, pass_alpha)
    latency = latency_test(minutes, ratio, alpha, pass_alpha) if ratio is not None else None
    requests = sum(m.canary_requests for m in minutes if m.stable_requests > 0)
    enough = requests >= min_requests
    decisions = [e.decision for e in (errors, latency) if e is not None]
    if "fail" in decisions:
        decision: Decision = "fail"
    elif (
        errors is not None
        and errors.decision == "pass"
        and enough
        and (latency is None or latency.decision == "pass")
    ):
        decision = "pass"
    else:
        decision = "continue"
    return Look(decision, errors, latency, enough)
