"""Limits that can bite: a bake whose failure_limit (or inconclusive_limit) is not smaller than the number
of measurements it takes can never fail (its failing measurements end it inconclusive, or passed, instead
of rolled back). Argo Rollouts refuses such a metric (count must be >= failureLimit); so does the loader.
Likewise a sequential max_bake_seconds shorter than the bake, which could never bake a step on."""

from __future__ import annotations

from collections.abc import Iterator

from bot.config.model import Settings
from bot.config.tables import ConfigError
from bot.domain.analysis import AnalysisConfig
from bot.domain.analysis import planned_measurements as measurements


def _bakes(s: Settings) -> Iterator[tuple[str, str, float, AnalysisConfig]]:
    """(where the analysis is set, which bake, its seconds, its analysis) for every bake the config runs."""
    for env_name, env in s.environments.items():
        where = f"environments.{env_name}.analysis"
        for service in s.services:
            t = s._target(service, env_name)  # not target(): its cache would be copied with the Settings
            overridden = env_name in s.services[service].overrides
            who = f" (services.{service}.environments.{env_name})" if overridden else ""
            if t.strategy == "canary":
                yield (
                    where,
                    f"step_bake_seconds = {t.step_bake_seconds:g}{who}",
                    t.step_bake_seconds,
                    t.analysis,
                )
            elif t.strategy == "blue-green":
                yield where, f"bake_seconds = {t.bake_seconds:g}{who}", t.bake_seconds, t.analysis
        flags = env.flags
        if s.flags:
            yield (
                f"environments.{env_name}.flags.analysis",
                f"flags step_bake_seconds = {flags.step_bake_seconds:g}",
                flags.step_bake_seconds,
                flags.analysis,
            )


def check_limits(s: Settings) -> None:
    """Raise ConfigError naming the limit that can never be exceeded and the measurements its bake takes."""
    for where, bake, seconds, analysis in _bakes(s):
        n = measurements(seconds, analysis.interval_seconds)
        limits = [("failure_limit", analysis.failure_limit)]
        if analysis.judge != "sequential":  # the sequential judge measures on instead of counting these
            limits.append(("inconclusive_limit", analysis.inconclusive_limit))
        if analysis.judge == "sequential" and 0 < analysis.max_bake_seconds < seconds:
            raise ConfigError(
                s.path,
                f"{where}.max_bake_seconds",
                f"{analysis.max_bake_seconds:g} is shorter than the bake ({bake}): it could never bake an "
                f"undecided step on; use 0 (off) or at least {seconds:g}",
            )
        for key, limit in limits:
            if limit >= n:
                raise ConfigError(
                    s.path,
                    f"{where}.{key}",
                    f"{limit} can never be exceeded: the bake ({bake}, interval_seconds = "
                    f"{analysis.interval_seconds:g}) takes {n} measurement{'s' if n != 1 else ''}, so it could "
                    f"never end {'failed' if key == 'failure_limit' else 'inconclusive'}; "
                    f"use at most {n - 1} or a longer bake",
                )
