"""Alerts, the domain half: which level each deployment event has, which channels each level goes to (per
environment, with a default), who is on call, and when an unacknowledged critical alert escalates to whom.
Parsed from the config's [alerts] table; pure, no I/O (handlers/notifier.py does the Slack side)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from bot.domain.machine import State

CRITICAL, WARNING, INFO = "critical", "warning", "info"
SEVERITY = {INFO: 0, WARNING: 1, CRITICAL: 2}
PAGERDUTY_EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"

# Every alert event and its level. Each domain event (bot.domain.events) names its alert event and level by
# its type (`alert_event()`, `level()`), never below the level listed here (tests/test_domain_events.py);
# nothing classifies an event by its words.
EVENT_LEVELS: dict[str, str] = {
    "automatic_rollback": CRITICAL,
    "deploy_failed": CRITICAL,
    "rollback_failed": CRITICAL,
    "rollback_stuck": CRITICAL,
    "unhealthy_after_switch": CRITICAL,
    "freeze_override": CRITICAL,
    "emergency_deploy": CRITICAL,
    "snapshot_restoring": CRITICAL,
    "migration_undo_failed": CRITICAL,
    "verification_regressed": CRITICAL,
    "verification_inconclusive": WARNING,
    "verification": INFO,
    "inconclusive_analysis": WARNING,
    "traffic_forced": WARNING,
    "traffic_repaired": WARNING,
    "approval_waiting": WARNING,
    "slow_rollout": WARNING,
    "missed_window": WARNING,
    "aborted": WARNING,
    "flag_killed": WARNING,
    "flag_changed": INFO,
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


def pagerduty_dedup_key(deployment_id: int) -> str:
    """One PagerDuty incident per deployment."""
    return f"deploybot-deployment-{deployment_id}"


# ------------------------------------------------------------------------------------- timer warnings


def approval_overdue(waiting_since: float, now: float, config: AlertConfig) -> bool:
    limit = config.approval_warning_seconds
    return limit is not None and now - waiting_since >= limit


def rollout_overdue(started: float, now: float, minimum_seconds: float, config: AlertConfig) -> bool:
    """Running `slow_rollout_seconds` past the least time its plan can take (`minimum_seconds`)."""
    limit = config.slow_rollout_seconds
    return limit is not None and now - started >= minimum_seconds + limit
