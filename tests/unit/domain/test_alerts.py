"""bot.alerts (levels, routing, escalation schedule, the [alerts] table) and the store's alert records:
acknowledgement as a compare-and-set, escalation rounds claimed and confirmed exactly once."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from bot.adapters.store.sqlite import Store
from bot.app.plan_time import plan_minimum_seconds
from bot.clock import ManualClock
from bot.config.load import parse_settings
from bot.config.policy import parse_alerts
from bot.config.tables import ConfigError
from bot.domain import events as ev
from bot.domain.alerts import (
    CRITICAL,
    EVENT_LEVELS,
    INFO,
    SEVERITY,
    WARNING,
    AlertConfig,
    approval_overdue,
    pagerduty_dedup_key,
    rollout_overdue,
)
from bot.domain.machine import State
from bot.domain.model import Alert

EXAMPLE = Path(__file__).parents[3] / "config" / "deploybot.toml"


# ------------------------------------------------------------------------------------------ levels


@pytest.mark.parametrize(
    "event",
    ["automatic_rollback", "deploy_failed", "rollback_failed", "unhealthy_after_switch", "freeze_override",
     "emergency_deploy"],
)  # fmt: skip
def test_the_issue_s_critical_events_are_critical(event):
    assert EVENT_LEVELS[event] == CRITICAL


@pytest.mark.parametrize(
    "event", ["inconclusive_analysis", "approval_waiting", "slow_rollout", "missed_window"]
)
def test_the_issue_s_warning_events_are_warnings(event):
    assert EVENT_LEVELS[event] == WARNING


@pytest.mark.parametrize("event", ["requested", "started", "step_reached", "succeeded"])
def test_the_issue_s_info_events_are_info(event):
    assert EVENT_LEVELS[event] == INFO


@pytest.fixture
def store(store_url):
    s = Store(store_url, ManualClock())
    yield s
    s.close()


def deployment(store: Store, **kw):
    return store.create_deployment(
        service=kw.pop("service", "web"),
        env=kw.pop("env", "production"),
        version="v2",
        strategy="canary",
        kind="deploy",
        requested_by="U0ALICE",
        plan=[{"kind": "x"}] * 3,
        **kw,
    )


def moved(store: Store, d, *actions: str, outcome: str | None = None):
    for action in actions:
        d = store.transition(d.id, action, "deploybot", outcome=outcome)
    return d


def classify(event: ev.DomainEvent) -> tuple[str, str]:
    """(alert event, level) of a domain event: by its type and fields, never by any text."""
    return event.alert_event(), event.level()


def test_the_alert_event_comes_from_the_event_s_type():
    assert classify(ev.Requested()) == ("requested", INFO)
    assert classify(ev.StepStarted(0, "Shift traffic: 5%")) == ("step_reached", INFO)
    assert classify(ev.Detail("Traffic: green 5%")) == ("detail", INFO)
    assert classify(ev.RollingBack("analysis failed", automatic=True)) == ("automatic_rollback", CRITICAL)
    unhealthy = ev.RollingBack(
        "after the switch: 2 of 2 targets unhealthy", True, unhealthy_after_switch=True
    )
    assert classify(unhealthy)[0] == "unhealthy_after_switch"
    # the same words without the fact are not that event
    assert classify(ev.RollingBack("after the switch: 2 of 2 targets unhealthy", True))[0] == (
        "automatic_rollback"
    )
    assert classify(ev.Aborted("bob")) == ("aborted", WARNING)
    assert classify(ev.RollingBack("by hand", automatic=False)) == ("aborted", WARNING)
    assert classify(ev.RollbackFailed("boom", after="x")) == ("rollback_failed", CRITICAL)


def test_an_event_is_never_reported_below_its_level():
    assert classify(ev.Paused("analysis inconclusive", inconclusive=True)) == (
        "inconclusive_analysis",
        WARNING,
    )
    assert classify(ev.DeployFailed("no capacity")) == ("deploy_failed", CRITICAL)
    # a failure whose words mention a freeze is a failure; an override whose words do not is an override
    assert classify(ev.DeployFailed("Freeze overridden by bob"))[0] == "deploy_failed"
    assert classify(ev.FreezeOverridden("bob", "", reason="hotfix")) == ("freeze_override", CRITICAL)
    skipped = ev.WindowMissed("2026-12-01T02:00:00+00:00", "the window opened with approvals missing")
    assert classify(skipped) == ("missed_window", WARNING)
    assert classify(ev.EmergencyRequested("U1", "prod down")) == ("emergency_deploy", CRITICAL)
    for event in (ev.Requested(), ev.DeployFailed("x"), ev.Aborted("b"), ev.WindowMissed(None)):
        assert SEVERITY[event.level()] >= SEVERITY[EVENT_LEVELS[event.alert_event()]]


# ------------------------------------------------------------------------------------------ config


def test_example_config_s_alerts_section_parses():
    settings = parse_settings(tomllib.loads(EXAMPLE.read_text()), str(EXAMPLE))
    alerts = settings.alerts
    assert isinstance(alerts, AlertConfig)
    assert alerts.channels(CRITICAL, "production") == ("incidents",)
    assert alerts.channels(INFO, "staging") == ()
    assert alerts.oncall == "oncall" and alerts.escalation_rounds >= 1
    assert alerts.pagerduty.enabled is False
    assert alerts.warning == ("deploys",)  # the default channels stay readable as before


def test_per_environment_routes_override_only_their_levels():
    alerts = parse_alerts(
        {
            "critical": ["#incidents"],
            "warning": ["deploys"],
            "environments": {"staging": {"critical": ["staging-alerts"], "info": ["deploys-log"]}},
        },
        "conf.toml",
        environments=["staging", "production"],
    )
    assert alerts.channels(CRITICAL, "production") == ("incidents",)
    assert alerts.channels(CRITICAL, "staging") == ("staging-alerts",)
    assert alerts.channels(WARNING, "staging") == ("deploys",)  # not overridden: the default
    assert alerts.channels(INFO, "staging") == ("deploys-log",)
    assert alerts.channels(INFO, "production") == ()


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"critical": "incidents"}, "alerts.critical: expected a list of channel names, got 'incidents'"),
        ({"environments": {"prod": {}}}, 'alerts.environments.prod: no such environment (did you mean "production"?)'),
        ({"environments": {"production": {"critcal": []}}}, 'alerts.environments.production.critcal: unknown key (did you mean "critical"?)'),
        ({"escalate_after_seconds": 0}, "alerts.escalate_after_seconds: expected a number of seconds > 0, got 0"),
        ({"escalation_rounds": -1}, "alerts.escalation_rounds: expected an integer 0..20, got -1"),
        ({"escalate_to": ["oncall", ""]}, "alerts.escalate_to: expected a list of user groups or users"),
        ({"oncall": True}, "alerts.oncall: expected a group handle, or false, got True"),
        ({"pagerduty": {"enabled": "yes"}}, "alerts.pagerduty.enabled: expected true or false, got 'yes'"),
        ({"pagerduty": {"url": "events.pagerduty.com"}}, "alerts.pagerduty.url: expected an http(s) URL"),
        ({"pagerduty": {"routing_key_env": "my key"}}, "alerts.pagerduty.routing_key_env: expected an environment"),
        ({"escalation_round": 2}, 'alerts.escalation_round: unknown key (did you mean "escalation_rounds"?)'),
    ],
)  # fmt: skip
def test_bad_alerts_config_names_the_key_and_the_value(raw, expected):
    with pytest.raises(ConfigError) as err:
        parse_alerts(raw, "conf.toml", environments=["staging", "production"])
    assert str(err.value).startswith("conf.toml: ") and expected in str(err.value), str(err.value)


def test_bad_alerts_config_is_caught_by_the_whole_settings_parse():
    data = tomllib.loads(EXAMPLE.read_text())
    data["alerts"]["environments"] = {"qa": {"critical": ["x"]}}
    with pytest.raises(ConfigError, match=r"alerts\.environments\.qa: no such environment"):
        parse_settings(data, "conf.toml")


def test_oncall_false_means_no_mention_and_escalations_mention_the_configured_targets():
    assert parse_alerts({"oncall": False}).oncall is None
    assert parse_alerts({"oncall": "@carol"}).oncall == "carol"
    targets = parse_alerts({"escalate_to": ["@dave", "release-managers"]})
    assert [targets.escalation_target(r) for r in (1, 2, 3)] == [
        "@dave",
        "release-managers",
        "release-managers",
    ]
    assert parse_alerts({}).escalation_target(1) == "oncall"  # none configured: on-call again
    assert parse_alerts({"oncall": False}).escalation_target(1) is None


# ---------------------------------------------------------------------------------------- schedule


def test_escalation_schedule_keeps_its_cadence_and_stops_after_n_rounds():
    c = AlertConfig(escalate_after_seconds=300, escalation_rounds=3)
    assert c.first_escalation(1000.0) == 1300.0
    assert c.following_escalation(1, due=1300.0, now=1300.5) == 1600.0  # from when it was due, not sent
    assert c.following_escalation(2, due=1600.0, now=1601.0) == 1900.0
    assert c.following_escalation(3, due=1900.0, now=1900.0) is None  # that was the last round
    assert AlertConfig(escalation_rounds=0).first_escalation(1000.0) is None


def test_a_round_sent_late_does_not_pull_the_next_into_a_burst():
    c = AlertConfig(escalate_after_seconds=300, escalation_rounds=3)
    # the bot was down from 1300 to 2000: round 1 goes at 2000, round 2 a full delay later
    assert c.following_escalation(1, due=1300.0, now=2000.0) == 2300.0


def test_timer_warnings_thresholds():
    c = AlertConfig(approval_warning_seconds=600, slow_rollout_seconds=900)
    assert not approval_overdue(1000.0, 1599.0, c) and approval_overdue(1000.0, 1600.0, c)
    assert not approval_overdue(0.0, 10**9, AlertConfig(approval_warning_seconds=None))
    plan = [{"kind": "analyze", "seconds": 300.0, "label": "canary 5%"}]
    assert not rollout_overdue(0.0, 1199.0, plan_minimum_seconds(plan), c)  # the plan's 300 s plus 900 s
    assert rollout_overdue(0.0, 1200.0, plan_minimum_seconds(plan), c)


def test_pagerduty_dedup_key_is_one_per_deployment():
    assert pagerduty_dedup_key(7) == pagerduty_dedup_key(7) != pagerduty_dedup_key(8)


# ------------------------------------------------------------------------------------------- store


def test_acknowledge_is_a_compare_and_set_recorded_in_the_audit(store):
    d = deployment(store)
    a = store.raise_alert(d.id, "automatic_rollback", CRITICAL, "rolling back", escalate_at=2000.0)
    won, acked = store.acknowledge_alert(a.id, "U0CAROL")
    assert won and acked.acked_by == "U0CAROL" and acked.acked_ts == store.clock.now()
    assert acked.next_escalation_at is None  # escalation stops
    again, same = store.acknowledge_alert(a.id, "U0DAVE")
    assert not again and same.acked_by == "U0CAROL" and same.acked_at == acked.acked_at
    actions = [(e.actor, e.action) for e in store.events(d.id)]
    assert ("deploybot", "alert_raised") in actions and ("U0CAROL", "alert_acknowledged") in actions
    assert ("U0DAVE", "alert_acknowledged") not in actions
    with pytest.raises(KeyError):
        store.acknowledge_alert(999, "U0CAROL")


def test_an_escalation_round_is_claimed_once_and_confirmed_once(store):
    d = deployment(store)
    a = store.raise_alert(d.id, "deploy_failed", CRITICAL, "failed", escalate_at=100.0)
    assert store.next_escalation_due() == 100.0
    assert store.due_escalations(99.0) == []
    assert [x.id for x in store.due_escalations(100.0)] == [a.id]
    assert store.claim_escalation(a.id, 1, next_at=400.0)
    assert not store.claim_escalation(a.id, 1, next_at=400.0)  # a second claimer loses
    assert store.due_escalations(10_000.0) == []  # claimed, not yet sent: nobody else picks it up
    assert [x.id for x in store.in_doubt_escalations()] == [a.id]
    assert store.confirm_escalation(a.id, 1, {"target": "oncall"})
    assert not store.confirm_escalation(a.id, 1)
    assert store.in_doubt_escalations() == []
    assert [x.id for x in store.due_escalations(400.0)] == [a.id]
    store.acknowledge_alert(a.id, "U0CAROL")
    assert not store.claim_escalation(a.id, 2, next_at=None)  # acknowledged: no more rounds
    assert store.next_escalation_due() is None
    escalated = [e.details for e in store.events(d.id) if e.action == "alert_escalated"]
    assert escalated == [{"alert": a.id, "round": 1, "target": "oncall"}]


def test_resolve_once_and_keyed_alerts_are_raised_once(store):
    d = deployment(store)
    a = store.raise_alert(d.id, "automatic_rollback", CRITICAL, "x", escalate_at=50.0)
    assert [x.id for x in store.open_alerts(service="web", env="production")] == [a.id]
    (resolved,) = store.resolve_alerts([a.id], "#1 rolled back", stop_escalation=False)
    assert resolved.resolution == "#1 rolled back" and resolved.next_escalation_at == 50.0
    assert store.resolve_alerts([a.id], "again", stop_escalation=True) == []
    assert store.open_alerts(deployment_id=d.id) == []
    assert [x.id for x in store.unacknowledged_alerts()] == [a.id]  # resolved, still not acknowledged
    assert store.raise_alert(d.id, "approval_waiting", WARNING, "w", key="approval_waiting:1") is not None
    assert store.raise_alert(d.id, "approval_waiting", WARNING, "w", key="approval_waiting:1") is None


def test_alerts_survive_a_reopen_of_the_database(store_url):
    path = store_url
    first = Store(path, ManualClock())
    d = deployment(first)
    a = first.raise_alert(d.id, "automatic_rollback", CRITICAL, "x", escalate_at=123.0)
    first.add_alert_message(a.id, "C0INCIDENTS", "1.000100")
    first.add_alert_message(a.id, "C0INCIDENTS", "1.000100")  # idempotent
    first.close()
    again = Store(path, ManualClock())
    kept = again.alert(a.id)
    assert kept.next_escalation_at == 123.0 and kept.messages == [
        {"channel": "C0INCIDENTS", "ts": "1.000100"}
    ]
    assert kept.thread == {"channel": "C0INCIDENTS", "ts": "1.000100"}
    assert "m002_alerts" in again.applied_migrations()
    assert again.get(d.id).state == State.REQUESTED
    again.close()


@pytest.mark.parametrize(
    ("paged", "acked", "resolved", "due"),
    [
        (None, False, False, ["trigger"]),
        (None, True, False, ["trigger", "acknowledge"]),
        (None, True, True, []),  # resolved before it was ever paged: nothing to page about
        ("trigger", False, False, []),
        ("trigger", True, False, ["acknowledge"]),
        ("trigger", False, True, ["resolve"]),
        ("acknowledge", True, True, ["resolve"]),
        ("resolve", True, True, []),
    ],
)
def test_an_alert_knows_the_pagerduty_actions_its_incident_still_needs(paged, acked, resolved, due):
    a = Alert(
        id=1,
        deployment_id=1,
        event="automatic_rollback",
        level="critical",
        text="x",
        key=None,
        raised_at="t",
        raised_ts=0.0,
        messages=[],
        acked_by="U1" if acked else None,
        acked_at=None,
        acked_ts=None,
        resolved_at="t" if resolved else None,
        resolved_ts=None,
        resolution=None,
        rounds_claimed=0,
        rounds_sent=0,
        next_escalation_at=None,
        paged=paged,
    )
    assert a.pages_due() == due
    assert dataclasses.replace(a, level="warning").pages_due() == []
