"""The delivery report (bot.app.report) on records written through the store's API at chosen instants
(a ManualClock). Every expected figure is worked out by hand from the instants below (`deploybot
report` itself: tests/test_report_cli.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from bot.adapters.store.report_rows import report_records
from bot.adapters.store.sqlite import Store
from bot.app.report import delivery_report
from bot.clock import ManualClock
from bot.domain.analysis import reason_kind
from bot.domain.model import BOT

DAY = 86400.0
T0 = datetime(2026, 11, 2, 9, 0, tzinfo=UTC).timestamp()  # a Monday


class History:
    def __init__(self, path: str = ":memory:"):
        self.clock = ManualClock(T0)
        self.store = Store(path, self.clock)

    def at(self, ts: float) -> None:
        self.clock._now = ts

    def deploy(
        self,
        service: str,
        env: str,
        strategy: str,
        outcome: str,
        start: float,
        took: float,
        *,
        context: dict | None = None,
        reasons: tuple[str, ...] = (),
        regressed_after: float | None = None,
    ) -> int:
        s = self.store
        self.at(start - 60)  # requested a minute before it started (waiting for approval does not count)
        d = s.create_deployment(
            service=service, env=env, version="v", strategy=strategy, kind="deploy", requested_by="U1",
            context=context,
        )  # fmt: skip
        self.at(start)
        s.transition(d.id, "start", BOT)
        if reasons:
            s.record(d.id, BOT, "measurement", {"at": start + 30, "verdict": "pass", "reasons": []})
            s.record(
                d.id, BOT, "measurement", {"at": start + 60, "verdict": "fail", "reasons": list(reasons)}
            )
        self.at(start + took)
        if outcome == "succeeded":
            s.transition(d.id, "succeed", BOT)
        elif outcome == "rolled_back":
            s.transition(d.id, "rollback", BOT)
            s.transition(d.id, "finish_rollback", BOT)
        else:
            s.transition(d.id, "fail", BOT)
        if regressed_after is not None:  # the verify helper's audit action; written here through the store
            self.at(start + took + regressed_after)
            s.record(d.id, BOT, "verify_regressed", {"metric": "error rate"})
        return d.id

    def report(self, **kw):
        deployments, events = report_records(self.store, kw.get("service"), kw.get("env"))
        return delivery_report(deployments, events, now=kw.pop("now", T0 + 14 * DAY), **kw)


ERRORS = "error rate 30.0% on the canary > 5.0% threshold (stable: 0.2%)"
DELTA = "error rate 30.0% on the canary is 29.8 points above the stable 0.2% (more than 2.0 allowed)"
SLOW = "latency 1500 ms (Average) on the canary > 1000 ms threshold (stable: 80 ms)"


@pytest.fixture
def history():
    h = History()
    # web in production: ok, rolled back (errors), failed, ok (restores both), regressed, ok (restores)
    h.a = h.deploy("web", "production", "canary", "succeeded", T0, 600, context={"commit_time": T0 - 3600})
    h.b = h.deploy("web", "production", "canary", "rolled_back", T0 + DAY, 300, reasons=(ERRORS, DELTA))
    h.c = h.deploy("web", "production", "canary", "failed", T0 + DAY + 1000, 100)
    h.d = h.deploy("web", "production", "canary", "succeeded", T0 + DAY + 5000, 800)
    h.e = h.deploy("web", "production", "blue-green", "succeeded", T0 + 8 * DAY, 400, regressed_after=120)
    h.f = h.deploy("web", "production", "blue-green", "succeeded", T0 + 8 * DAY + 3000, 200)
    # api in staging: rolled back (latency), never restored; a cancelled request is not a deployment
    h.g = h.deploy("api", "staging", "rolling", "rolled_back", T0 + 9 * DAY, 50, reasons=(SLOW,))
    h.at(T0 + 10 * DAY)
    h.store.create_deployment(
        service="api", env="staging", version="v9", strategy="rolling", kind="deploy", requested_by="U1"
    )
    yield h
    h.store.close()


def test_the_figures_over_a_history(history):
    h = history
    r = h.report()
    assert r.deployments == 7
    assert r.by_outcome == {"succeeded": 3, "rolled_back": 2, "failed": 1, "regressed": 1}
    assert (r.change_failures, r.change_failure_rate) == (4, round(4 / 7, 4))
    assert r.period_days == 14.0  # from the first start to now
    assert r.per_week == 3.5
    # b (T0+1d+300) to d (T0+1d+5800): one incident, b and c in it; e regressed 120 s after its end
    assert r.restores == [
        {"service": "web", "env": "production", "failed_id": h.b, "restored_id": h.d, "seconds": 5500.0},
        {"service": "web", "env": "production", "failed_id": h.e, "restored_id": h.f, "seconds": 2680.0},
    ]
    assert r.median_time_to_restore_seconds == (5500 + 2680) / 2
    assert r.unrestored == [{"service": "api", "env": "staging", "failed_id": h.g}]
    assert (r.lead_times_known, r.median_lead_time_seconds) == (1, 3600 + 600.0)  # a's commit to its end
    assert r.median_duration_seconds == {"blue-green": 300.0, "canary": 450.0, "rolling": 50.0}
    assert r.durations_counted == {"blue-green": 2, "canary": 4, "rolling": 1}
    assert r.rollback_reasons == [
        ("error rate above the stable baseline", 1),
        ("error rate above the threshold", 1),
        ("latency above the threshold", 1),
    ]
    assert [(w.start, w.counts, w.change_failure_rate) for w in r.weeks] == [
        ("2026-11-02", {"succeeded": 2, "rolled_back": 1, "failed": 1, "regressed": 0}, 0.5),
        ("2026-11-09", {"succeeded": 1, "rolled_back": 1, "failed": 0, "regressed": 1}, round(2 / 3, 4)),
    ]


def test_scope_since_service_and_env(history):
    h = history
    r = h.report(service="web", env="production", since=datetime.fromtimestamp(T0 + 7 * DAY, UTC))
    assert (r.deployments, r.change_failures) == (2, 1)
    assert r.period_days == 7.0 and r.per_week == 2.0
    assert r.restores == [
        {"service": "web", "env": "production", "failed_id": h.e, "restored_id": h.f, "seconds": 2680.0}
    ]
    assert r.rollback_reasons == [] and r.median_lead_time_seconds is None
    api = h.report(service="api")
    assert (api.deployments, api.change_failure_rate, api.median_time_to_restore_seconds) == (1, 1.0, None)
    empty = h.report(since=datetime.fromtimestamp(T0 + 100 * DAY, UTC), now=T0 + 101 * DAY)
    assert (empty.deployments, empty.change_failure_rate, empty.weeks) == (0, None, [])


def test_a_rollback_without_a_failed_measurement_says_so_and_reasons_lose_their_numbers():
    h = History()
    h.deploy("web", "production", "canary", "rolled_back", T0, 100)
    assert h.report().rollback_reasons == [("not the analysis (a rollout, health check or person)", 1)]
    assert (
        reason_kind('CloudWatch alarm "web-5xx" is in ALARM: Threshold Crossed')
        == "a CloudWatch alarm in ALARM"
    )
    assert reason_kind("latency 900 ms (Average) on the canary is 2.10x the stable 400 ms") == (
        "latency above the stable baseline"
    )
    assert reason_kind("not enough traffic: no requests in 60s on the canary") == "not enough traffic"
    h.store.close()


def test_a_commit_time_only_where_recorded():
    h = History()
    h.deploy(
        "web",
        "staging",
        "rolling",
        "succeeded",
        T0,
        60,
        context={"metadata": {"commit_time": "2026-11-02T08:00:00Z"}},
    )
    h.deploy("web", "staging", "rolling", "succeeded", T0 + 100, 60, context={"commit_time": "not a time"})
    r = h.report()
    assert (r.lead_times_known, r.median_lead_time_seconds) == (1, 3600 + 60.0)
    h.store.close()


def test_a_week_without_deployments_is_in_the_weeks():
    h = History()
    h.deploy("web", "staging", "rolling", "succeeded", T0, 60)
    h.deploy("web", "staging", "rolling", "failed", T0 + 15 * DAY, 60)
    weeks = h.report(now=T0 + 16 * DAY).weeks
    assert [(w.start, sum(w.counts.values()), w.change_failure_rate) for w in weeks] == [
        ("2026-11-02", 1, 0.0),
        ("2026-11-09", 0, None),
        ("2026-11-16", 1, 1.0),
    ]
    h.store.close()
