"""The feasibility bound of benchmarks/judges.py: how many canaries of a scenario ANY valid test at the
configured false-rollback rate could catch with the data a schedule gives it. The oracle below knows what
no judge can (the service's true error rate, minute by minute), reads a fixed horizon, and tests once:
a judge that must estimate the rate from the stable group and may be read at every look catches fewer."""

from __future__ import annotations

import math
from typing import Any, Protocol


class World(Protocol):
    """What the oracle reads of a simulated canary (benchmarks.judges.Canary)."""

    def shared(self, minute: int) -> tuple[float, float]: ...

    def bucket(
        self, b: int, weight: int
    ) -> tuple[tuple[float, float, float], tuple[float, float, float]]: ...


def poisson_sf(x: float, mu: float) -> float:
    """P(X >= x) for X ~ Poisson(mu)."""
    if x <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    below = sum(math.exp(k * math.log(mu) - mu - math.lgamma(k + 1)) for k in range(math.ceil(x)))
    return max(0.0, 1.0 - below)


def horizons(s: Any, bucket_seconds: int) -> dict[str, list[tuple[int, int]]]:
    """The (bucket, weight) each oracle reads on schedule `s` (benchmarks.judges.Schedule): the first
    step's bake, the first step baked on to s.max_bake, every step below 100% of the fixed schedule."""
    per = s.bake // bucket_seconds
    return {
        "first step": [(b, s.steps[0]) for b in range(per)],
        "first step, max bake": [(b, s.steps[0]) for b in range(max(per, s.max_bake // bucket_seconds))],
        "whole schedule": [(i * per + b, w) for i, w in enumerate(s.steps) for b in range(per)],
    }


def oracle_caught(c: World, buckets: list[tuple[int, int]], alpha: float) -> bool:
    """A fixed-horizon test no judge can beat at level alpha: it knows the service's true error rate
    minute by minute (the rate both groups draw around, what a stable group of infinite traffic would
    measure) and tests the canary's errors over `buckets` against what that rate predicts, one-sided
    (exact Poisson), with no margin. It is right about the null up to the canary's own per-group noise
    (Beta, concentration 1,000): its rejection rate on healthy canaries is printed beside it."""
    errors = sum(c.bucket(b, w)[0][1] for b, w in buckets)
    expected = sum(c.bucket(b, w)[0][0] * c.shared(b // 2)[0] for b, w in buckets)
    return poisson_sf(errors, expected) <= alpha


def oracle_sprt(
    c: World, buckets: list[tuple[int, int]], alpha: float, effect: float, human_buckets: int
) -> tuple[bool, float]:
    """The errors-served bound: Wald's sequential probability ratio test knowing both the true rate,
    minute by minute, and the regression's size (`effect` rate points), read every bucket, rejecting at
    likelihood ratio 1/alpha (false rejections <= alpha). Returns (caught, errors served by the canary):
    up to the rejection, or over all `buckets` and then `human_buckets` more at the last weight (a pause
    for a person, as the judges are charged). No test at alpha serves fewer errors on average."""
    llr, errors = 0.0, 0.0
    for b, w in buckets:
        (n, x, _), _ = c.bucket(b, w)
        p0 = max(c.shared(b // 2)[0], 1e-6)
        errors += x
        llr += x * math.log((p0 + effect) / p0) - n * effect  # Poisson likelihood ratio of the bucket
        if llr >= math.log(1 / alpha):
            return True, errors
    end, weight = len(buckets), buckets[-1][1]
    return False, errors + sum(c.bucket(end + i, weight)[0][1] for i in range(human_buckets))
