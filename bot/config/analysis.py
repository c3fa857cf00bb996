"""Loading an `[... .analysis]` table into the domain's AnalysisConfig, with errors naming the file,
the key and what is expected."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from bot.config.tables import _Table
from bot.domain.analysis import LATENCY_STATISTIC, AnalysisConfig
from bot.domain.judging import JUDGES


def from_toml(
    table: Mapping[str, Any],
    where: str,
    prefix: str = "analysis",
    defaults: AnalysisConfig | None = None,
) -> AnalysisConfig:
    """Read an `[... .analysis]` table. `where` is the config file and `prefix` the table's key (as in
    "environments.production.analysis"); keys left out come from `defaults`. Bad values and unknown
    keys raise ConfigError naming the file, the key and what is expected."""
    base = defaults or AnalysisConfig()
    t = _Table(where, prefix, dict(table) if isinstance(table, Mapping) else table)
    number = (int, float)

    def optional(name: str, check: Callable[[float], bool], expect: str) -> float | None:
        value = t.get(
            name,
            (int, float, bool),
            getattr(base, name) if getattr(base, name) is not None else False,
            lambda v: v is False or (not isinstance(v, bool) and check(v)),
            f"{expect}, or false to switch it off",
        )
        return None if value is False else float(value)

    alarms = t.get(
        "alarms",
        list,
        list(base.alarms),
        lambda v: all(isinstance(a, str) and a.strip() for a in v),
        "a list of CloudWatch alarm names",
    )
    config = AnalysisConfig(
        interval_seconds=float(
            t.get("interval_seconds", number, base.interval_seconds, lambda v: v > 0, "seconds > 0")
        ),
        window_seconds=t.get(
            "window_seconds",
            int,
            base.window_seconds,
            lambda v: v >= 60 and v % 60 == 0,
            "whole minutes in seconds (60, 120, ...): ALB metrics come per minute",
        ),
        min_requests=t.get("min_requests", int, base.min_requests, lambda v: v >= 1, "an integer >= 1"),
        max_error_rate=float(
            t.get(
                "max_error_rate",
                number,
                base.max_error_rate,
                lambda v: 0 <= v <= 1,
                "a rate within 0..1 (0.05 = 5%)",
            )
        ),
        max_error_rate_delta=optional(
            "max_error_rate_delta", lambda v: 0 <= v <= 1, "a rate within 0..1 (0.02 = 2 points)"
        ),
        max_latency_ms=float(
            t.get("max_latency_ms", number, base.max_latency_ms, lambda v: v > 0, "milliseconds > 0")
        ),
        max_latency_ratio=optional("max_latency_ratio", lambda v: v >= 1, "a ratio >= 1 (1.5 = +50%)"),
        latency_statistic=t.get(
            "latency_statistic",
            str,
            base.latency_statistic,
            lambda v: bool(LATENCY_STATISTIC.match(v)),
            'a CloudWatch statistic: "Average", "Maximum", "Minimum" or a percentile like "p99"',
        ),
        alarms=tuple(a.strip() for a in alarms),
        failure_limit=t.get("failure_limit", int, base.failure_limit, lambda v: v >= 0, "an integer >= 0"),
        consecutive_error_limit=t.get(
            "consecutive_error_limit",
            int,
            base.consecutive_error_limit,
            lambda v: v >= 0,
            "an integer >= 0",
        ),
        inconclusive_limit=t.get(
            "inconclusive_limit", int, base.inconclusive_limit, lambda v: v >= 0, "an integer >= 0"
        ),
        judge=t.get("judge", str, base.judge, lambda v: v in JUDGES, 'one of "thresholds", "sequential"'),
        false_rollback_rate=float(
            t.get(
                "false_rollback_rate",
                number,
                base.false_rollback_rate,
                lambda v: 0 < v < 0.5,
                "a rate within 0..0.5 (0.01 = 1%)",
            )
        ),
        error_rate_margin=float(
            t.get(
                "error_rate_margin",
                number,
                base.error_rate_margin,
                lambda v: 0 < v <= 1,
                "a rate within 0..1 (0.01 = 1 point)",
            )
        ),
        latency_margin=optional("latency_margin", lambda v: v > 0, "a fraction > 0 (0.1 = 10% slower)"),
        min_bake_seconds=float(
            t.get("min_bake_seconds", number, base.min_bake_seconds, lambda v: v >= 0, "seconds >= 0")
        ),
        max_bake_seconds=float(
            t.get(
                "max_bake_seconds",
                number,
                base.max_bake_seconds,
                lambda v: v >= 0,
                "seconds >= 0 (0: no longer than the bake)",
            )
        ),
    )
    t.finish()
    return config
