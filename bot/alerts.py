"""Alerts, the domain half: which level each deployment event has, which channels each level goes to (per
environment, with a default), who is on call, and when an unacknowledged critical alert escalates to whom.
Parsed from the config's [alerts] table; pure, no I/O (handlers/notifier.py does the Slack side)."""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bot.configfile import ConfigError, _Table
from bot.machine import BEFORE_START, State

if TYPE_CHECKING:
    from bot.store import Deployment

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY = {INFO: 0, WARNING: 1, CRITICAL: 2}
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

# Every deployment event and its level. The engine's Notices carry a level too; the higher one wins, so an
# event listed here is never reported below its level whoever emits it.
EVENT_LEVELS: dict[str, str] = {
    "automatic_rollback": CRITICAL,
    "deploy_failed": CRITICAL,
    "rollback_failed": CRITICAL,
    "unhealthy_after_switch": CRITICAL,
    "freeze_override": CRITICAL,
    "emergency_deploy": CRITICAL,
    "inconclusive_analysis": WARNING,
    "approval_waiting": WARNING,
    "slow_rollout": WARNING,
    "missed_window": WARNING,
    "aborted": WARNING,
    "requested": INFO,
    "started": INFO,
    "step_reached": INFO,
    "succeeded": INFO,
    "rolled_back": INFO,
    "paused": INFO,
    "cancelled": INFO,
    "detail": INFO,
}

# A state the deployment recovers in: its open alerts are resolved.
RECOVERED = frozenset({State.ROLLED_BACK, State.SUCCEEDED})


def classify(d: Deployment, kind: str, level: str = INFO, text: str = "") -> tuple[str, str]:
    """(event, level) of a Notice about deployment `d` (its state when the notice was emitted)."""
    event = _event(d, kind, level, text)
    return event, higher(level, EVENT_LEVELS.get(event, INFO))


def _event(d: Deployment, kind: str, level: str, text: str) -> str:
    words = text.lower()
    if kind == "progress":
        return "step_reached"
    if kind == "detail":
        return "detail"
    if "freeze" in words and "overrid" in words:
        return "freeze_override"
    if "window" in words and ("missed" in words or "skipped" in words):
        return "missed_window"  # a scheduled deploy whose window passed (moved on, or cancelled)
    if d.state in BEFORE_START:
        emergency = d.context.get("emergency") and (level == CRITICAL or "emergency" in words)
        return "emergency_deploy" if emergency else "requested"
    if d.state == State.ROLLING_BACK:
        if level != CRITICAL:
            return "aborted"
        return "unhealthy_after_switch" if "unhealthy" in words else "automatic_rollback"
    if d.state == State.FAILED:
        outcome = (d.outcome or words).lower()
        return "rollback_failed" if outcome.startswith("rollback failed") else "deploy_failed"
    if d.state == State.PAUSED:
        return "inconclusive_analysis" if level == WARNING else "paused"
    return {
        State.RUNNING: "started",
        State.SUCCEEDED: "succeeded",
        State.ROLLED_BACK: "rolled_back",
        State.CANCELLED: "cancelled",
    }.get(d.state, "detail")


def higher(a: str, b: str) -> str:
    return a if SEVERITY.get(a, 0) >= SEVERITY.get(b, 0) else b


# ------------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class Routes:
    """Channels per level for one environment (None: the default's)."""

    critical: tuple[str, ...] | None = None
    warning: tuple[str, ...] | None = None
    info: tuple[str, ...] | None = None


@dataclass(frozen=True)
class PagerDutyConfig:
    enabled: bool = False
    url: str = PAGERDUTY_EVENTS_URL
    routing_key_env: str = "PAGERDUTY_ROUTING_KEY"  # the integration key is a secret: environment only
    timeout_seconds: float = 10.0


@dataclass(frozen=True)
class AlertConfig:
    """The [alerts] table. `critical`/`warning`/`info` are the default channels per level."""

    critical: tuple[str, ...] = ("incidents",)
    warning: tuple[str, ...] = ("deploys",)
    info: tuple[str, ...] = ()
    environments: Mapping[str, Routes] = field(default_factory=dict)
    oncall: str | None = "oncall"  # user group handle (or @user) mentioned on critical alerts
    escalate_after_seconds: float = 600.0
    escalation_rounds: int = 3
    escalate_to: tuple[str, ...] = ()  # round k mentions escalate_to[k-1] (the last repeats); () = on-call
    escalate_resolved: bool = True  # a recovered alert still escalates until a person acknowledges it
    approval_warning_seconds: float | None = 1800.0  # None: never warn about waiting approvals
    slow_rollout_seconds: float | None = 1800.0  # running this long past the plan's minimum: a warning
    pagerduty: PagerDutyConfig = PagerDutyConfig()

    def channels(self, level: str, env: str | None = None) -> tuple[str, ...]:
        """The channels for `level` in `env`: the environment's own list when it has one, else the default."""
        routes = self.environments.get(env or "")
        own = getattr(routes, level, None) if routes is not None else None
        return own if own is not None else getattr(self, level, ())

    def escalation_target(self, round_: int) -> str | None:
        """Whom escalation round `round_` (1-based) mentions."""
        targets = self.escalate_to or ((self.oncall,) if self.oncall else ())
        return targets[min(round_, len(targets)) - 1] if targets else None

    def first_escalation(self, raised_at: float) -> float | None:
        """When a critical alert raised at `raised_at` escalates first (None: never)."""
        return raised_at + self.escalate_after_seconds if self.escalation_rounds > 0 else None

    def following_escalation(self, round_: int, due: float, now: float) -> float | None:
        """After round `round_`, due at `due` and sent at `now`, when the next one is due (None: that was
        the last). A round sent late (the bot was down when it fell due) does not pull the next one into a
        burst: it comes a full delay after this one."""
        if round_ >= self.escalation_rounds:
            return None
        following = due + self.escalate_after_seconds
        return following if following > now else now + self.escalate_after_seconds

    @classmethod
    def parse(
        cls,
        raw: Mapping[str, Any],
        path: str = "<config>",
        deploy_channel: str = "deploys",
        environments: Collection[str] = (),
        prefix: str = "alerts",
    ) -> AlertConfig:
        t = _Table(path, prefix, dict(raw))
        config = cls.from_table(t, deploy_channel, environments)
        t.finish()
        return config

    @classmethod
    def from_table(
        cls, t: _Table, deploy_channel: str = "deploys", environments: Collection[str] = ()
    ) -> AlertConfig:
        """Read [alerts] from a config table (marking its keys; the caller calls t.finish())."""
        envs_t = t.table("environments")
        routes = {}
        for name in envs_t.data:
            if environments and name not in environments:
                near = difflib.get_close_matches(name, list(environments), n=1, cutoff=0.5)
                hint = f' (did you mean "{near[0]}"?)' if near else ""
                raise ConfigError(t.path, envs_t.key(name), f"no such environment{hint}")
            e = envs_t.table(name, default_empty=False)
            routes[name] = Routes(
                critical=_channels(e, CRITICAL, None),
                warning=_channels(e, WARNING, None),
                info=_channels(e, INFO, None),
            )
            e.finish()
        envs_t.finish()
        pd_t = t.table("pagerduty")
        pagerduty = PagerDutyConfig(
            enabled=pd_t.get("enabled", bool, False),
            url=pd_t.get("url", str, PAGERDUTY_EVENTS_URL, _is_url, "an http(s) URL"),
            routing_key_env=pd_t.get(
                "routing_key_env",
                str,
                "PAGERDUTY_ROUTING_KEY",
                _ENV_NAME.match,
                "an environment variable name",
            ),
            timeout_seconds=float(pd_t.get("timeout_seconds", _NUMBER, 10, lambda v: v > 0, "seconds > 0")),
        )
        pd_t.finish()
        oncall = t.get("oncall", (str, bool), "oncall", lambda v: v is not True, "a group handle, or false")
        return cls(
            critical=_channels(t, CRITICAL, ("incidents",)) or (),
            warning=_channels(t, WARNING, (deploy_channel,)) or (),
            info=_channels(t, INFO, ()) or (),
            environments=routes,
            oncall=(oncall.strip().lstrip("@") or None) if isinstance(oncall, str) else None,
            escalate_after_seconds=float(
                t.get("escalate_after_seconds", _NUMBER, 600, lambda v: v > 0, "a number of seconds > 0")
            ),
            escalation_rounds=t.get("escalation_rounds", int, 3, lambda v: 0 <= v <= 20, "an integer 0..20"),
            escalate_to=tuple(
                t.get(
                    "escalate_to",
                    list,
                    [],
                    lambda v: all(isinstance(x, str) and x.strip() for x in v),
                    'a list of user groups or users, e.g. ["oncall-secondary", "@dave"]',
                )
            ),
            escalate_resolved=t.get("escalate_resolved", bool, True),
            approval_warning_seconds=_optional_seconds(t, "approval_warning_seconds", 1800),
            slow_rollout_seconds=_optional_seconds(t, "slow_rollout_seconds", 1800),
            pagerduty=pagerduty,
        )


_NUMBER = (int, float)
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _is_url(value: str) -> bool:
    return value.startswith(("http://", "https://"))


def _channels(t: _Table, name: str, default: tuple[str, ...] | None) -> tuple[str, ...] | None:
    value = t.get(
        name,
        list,
        None if default is None else list(default),
        lambda v: all(isinstance(c, str) and c.strip("# ") for c in v),
        "a list of channel names",
    )
    return None if value is None else tuple(c.strip().lstrip("#") for c in value)


def _optional_seconds(t: _Table, name: str, default: float) -> float | None:
    value = t.get(
        name, (int, float, bool), default, lambda v: v is not True and v >= 0, "seconds >= 0, or false"
    )
    return None if value is False or value == 0 else float(value)


# ------------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True)
class Alert:
    """An alert raised about a deployment, as the store keeps it. Only critical alerts are acknowledged
    and escalate; warnings raised by a timer (approval waiting, slow rollout) are kept so they are raised
    once. `messages` are the Slack messages showing it ({channel, ts}); the first one's thread gets the
    escalations."""

    id: int
    deployment_id: int
    event: str
    level: str
    text: str
    key: str | None
    raised_at: str
    raised_ts: float
    messages: list[dict[str, str]]
    acked_by: str | None
    acked_at: str | None
    acked_ts: float | None
    resolved_at: str | None
    resolved_ts: float | None
    resolution: str | None
    rounds_claimed: int
    rounds_sent: int
    next_escalation_at: float | None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Alert:
        return cls(
            **{
                **row,
                "messages": json.loads(row["messages"] or "[]"),
                "rounds_claimed": row["rounds_claimed"] or 0,
                "rounds_sent": row["rounds_sent"] or 0,
            }
        )

    @property
    def acknowledged(self) -> bool:
        return self.acked_by is not None

    @property
    def resolved(self) -> bool:
        return self.resolved_at is not None

    @property
    def thread(self) -> dict[str, str] | None:
        return self.messages[0] if self.messages else None


def pagerduty_dedup_key(deployment_id: int) -> str:
    """One PagerDuty incident per deployment."""
    return f"deploybot-deployment-{deployment_id}"


# ------------------------------------------------------------------------------------- timer warnings


def plan_minimum_seconds(plan: list[dict[str, Any]]) -> float:
    """The least time a plan can take (its bakes and waits), for telling a slow rollout."""
    from bot.app.plans import step_from_dict  # the strategies import settings, which import this module

    total = 0.0
    for raw in plan:
        try:
            total += step_from_dict(raw).min_seconds()
        except Exception:  # a step this version does not know: count it as instant
            continue
    return total


def approval_overdue(waiting_since: float, now: float, config: AlertConfig) -> bool:
    limit = config.approval_warning_seconds
    return limit is not None and now - waiting_since >= limit


def rollout_overdue(started: float, now: float, plan: list[dict[str, Any]], config: AlertConfig) -> bool:
    limit = config.slow_rollout_seconds
    return limit is not None and now - started >= plan_minimum_seconds(plan) + limit
