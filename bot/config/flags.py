"""Loading feature flags: `[flags.KEY]` declarations, `[segments.NAME]` groups and each environment's
`[environments.NAME.flags]` table (approvals, rollout steps, metrics, the API key's variable), with errors
naming the file, the key and what is expected."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.config.analysis import from_toml as analysis_from_toml
from bot.config.tables import ConfigError, _show, _Table
from bot.domain.analysis import AnalysisConfig
from bot.domain.flags import FLAG_TYPES, OPERATORS, Condition, FlagDef, Segment

KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")
_NUMBER = (int, float)


@dataclass(frozen=True)
class FlagMetrics:
    """Where applications publish per-variant metrics (CloudWatch's embedded metric format gives them from
    a log line): the namespace, the dimension names and the metric names."""

    namespace: str = "DeployBot/Flags"
    flag_dimension: str = "Flag"
    variant_dimension: str = "Variant"
    environment_dimension: str = "Environment"
    requests: str = "Requests"
    errors: str = "Errors"
    latency: str = "Latency"  # milliseconds


@dataclass(frozen=True)
class EnvFlags:
    """An environment's `[environments.NAME.flags]`."""

    api_key_env: str  # the environment variable holding this environment's OFREP API key
    approvals: int = 0  # distinct approvers (the environment's approver roles, never the requester)
    approve_above_percent: float | None = None  # a change giving more than this to the on variant needs them
    rollout_steps: tuple[int, ...] = (5, 25, 50, 100)
    step_bake_seconds: float = 60.0
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    metrics: FlagMetrics = FlagMetrics()


def default_key_env(env_name: str) -> str:
    return "DEPLOYBOT_OFREP_KEY_" + re.sub(r"[^A-Z0-9]", "_", env_name.upper())


def parse_env_flags(raw: Any, path: str, prefix: str, env_name: str, analysis: AnalysisConfig) -> EnvFlags:
    t = _Table(path, prefix, {} if raw is None else raw)
    steps = t.get(
        "rollout_steps",
        list,
        [5, 25, 50, 100],
        lambda v: (
            bool(v)
            and all(isinstance(s, int) and not isinstance(s, bool) and 0 < s <= 100 for s in v)
            and v == sorted(set(v))
            and v[-1] == 100
        ),
        "a rising list of percentages 1..100 ending at 100",
    )
    above = t.get(
        "approve_above_percent",
        (int, float, bool),
        False,
        lambda v: v is False or (not isinstance(v, bool) and 0 <= v < 100),
        "a percentage 0..99, or false (only rollouts need approval)",
    )
    m = t.table("metrics")
    metrics = FlagMetrics(
        namespace=m.get("namespace", str, FlagMetrics.namespace, lambda v: bool(v.strip()), "a namespace"),
        flag_dimension=m.get("flag_dimension", str, FlagMetrics.flag_dimension),
        variant_dimension=m.get("variant_dimension", str, FlagMetrics.variant_dimension),
        environment_dimension=m.get("environment_dimension", str, FlagMetrics.environment_dimension),
        requests=m.get("requests", str, FlagMetrics.requests),
        errors=m.get("errors", str, FlagMetrics.errors),
        latency=m.get("latency", str, FlagMetrics.latency),
    )
    m.finish()
    result = EnvFlags(
        api_key_env=t.get(
            "api_key_env",
            str,
            default_key_env(env_name),
            lambda v: re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", v) is not None,
            "an environment variable's name (the key itself never goes in this file)",
        ),
        approvals=t.get("approvals", int, 0, lambda v: 0 <= v <= 5, "an integer 0..5"),
        approve_above_percent=None if above is False else float(above),
        rollout_steps=tuple(steps),
        step_bake_seconds=float(
            t.get("step_bake_seconds", _NUMBER, 60, lambda v: v >= 0, "a number of seconds >= 0")
        ),
        analysis=analysis_from_toml(t.table("analysis").data, path, t.key("analysis"), defaults=analysis),
        metrics=metrics,
    )
    t.finish()
    return result


def parse_segments(raw: Any, path: str) -> dict[str, Segment]:
    if raw is None:
        return {}
    root = _Table(path, "segments", raw)
    found: dict[str, Segment] = {}
    for name in list(root.data):
        if not KEY_RE.match(name):
            raise ConfigError(path, root.key(name), "a segment name is lower-case letters, digits, . _ -")
        t = root.table(name, default_empty=False)
        rules = t.get("rules", list, ..., lambda v: bool(v), "a non-empty list of rules")
        conditions = tuple(_condition(path, f"{t.key('rules')}[{i}]", r) for i, r in enumerate(rules))
        found[name] = Segment(name, conditions, t.get("description", str, ""))
        t.finish()
    return found


def _condition(path: str, key: str, raw: Any) -> Condition:
    t = _Table(path, key, raw)
    attribute = t.get("attribute", str, ..., lambda v: bool(v.strip()), "a context attribute's name")
    op = t.get("op", str, "in", lambda v: v in OPERATORS, f"one of {', '.join(OPERATORS)}")
    values = t.get(
        "values",
        list,
        ...,
        lambda v: bool(v) and all(isinstance(x, str | int | float) and not isinstance(x, bool) for x in v),
        "a non-empty list of strings or numbers",
    )
    if op in ("equals", "semver_gte") and len(values) != 1:
        raise ConfigError(path, t.key("values"), f"{op} takes exactly one value, got {_show(values)}")
    t.finish()
    return Condition(attribute, op, tuple(str(v) for v in values))


def parse_flags(raw: Any, path: str, services: Mapping[str, Any]) -> dict[str, FlagDef]:
    if raw is None:
        return {}
    root = _Table(path, "flags", raw)
    found: dict[str, FlagDef] = {}
    for key in list(root.data):
        if not KEY_RE.match(key):
            raise ConfigError(
                path, root.key(key), "a flag key is lower-case letters, digits, . _ - (at most 63)"
            )
        found[key] = _flag(path, key, root.table(key, default_empty=False), services)
    return found


def _flag(path: str, key: str, t: _Table, services: Mapping[str, Any]) -> FlagDef:
    kind = t.get("type", str, "boolean", lambda v: v in FLAG_TYPES, f"one of {', '.join(FLAG_TYPES)}")
    if kind == "boolean":
        variants: dict[str, Any] = t.get(
            "variants",
            dict,
            {"on": True, "off": False},
            lambda v: (
                len(v) == 2
                and all(isinstance(x, bool) for x in v.values())
                and set(v.values()) == {True, False}
            ),
            "two variants, one true and one false",
        )
    else:
        variants = t.get("variants", dict, ..., lambda v: len(v) >= 2, "a table of at least two variants")
    for name, value in variants.items():
        if not KEY_RE.match(name):
            raise ConfigError(
                path, t.key(f"variants.{name}"), "a variant name is lower-case letters, digits, . _ -"
            )
        if not _of_type(kind, value):
            raise ConfigError(path, t.key(f"variants.{name}"), f"expected a {kind} value, got {_show(value)}")
    names = list(variants)
    off_default = (
        next((n for n, v in variants.items() if v is False), names[0]) if kind == "boolean" else None
    )
    default = t.get(
        "default_variant",
        str,
        off_default if off_default is not None else ...,
        lambda v: v in variants,
        f"one of the variants ({', '.join(names)})",
    )
    off = t.get(
        "off_variant", str, default, lambda v: v in variants, f"one of the variants ({', '.join(names)})"
    )
    others = [n for n in names if n != off]
    on_default = (
        next(n for n, v in variants.items() if v is True)
        if kind == "boolean"
        else others[0]
        if len(others) == 1
        else ...
    )
    on = t.get(
        "on_variant",
        str,
        on_default,
        lambda v: v in variants and v != off,
        f"a variant other than the off variant {off!r}",
    )
    owner = t.get("owner", str, "")
    declared = t.get(
        "services", list, [], lambda v: all(isinstance(s, str) for s in v), "a list of service names"
    )
    for s in declared:
        if s not in services:
            raise ConfigError(path, t.key("services"), f"{s!r} is not a service ({', '.join(services)})")
    flag = FlagDef(
        key=key,
        type=kind,
        variants=dict(variants),
        default_variant=default,
        off_variant=off,
        on_variant=on,
        description=t.get("description", str, ""),
        owner=owner,
        services=tuple(declared),
    )
    t.finish()
    return flag


def _of_type(kind: str, value: Any) -> bool:
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "string":
        return isinstance(value, str)
    if kind == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, dict)
