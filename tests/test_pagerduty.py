"""PagerDuty's delivery in process: the notifier (real slack_sdk client against the sandbox's LocalSlack), an
in-memory store, a ManualClock stepped one backoff at a time, and the sandbox's local Events API v2
(bot/sandbox/pagerduty.py) on 127.0.0.1, told to fail for a while in clock time. No real waiting: the
clock jumps to the next retry as soon as every delivery worker is waiting for it.

What it shows: an outage of 10 minutes, then every page delivered once, in order per incident; one
"paging is failing" warning after 5 minutes and one "paging works again" line; a restart mid-outage carries
on without duplicates or a second warning; a 400 is not retried; one incident's trouble does not hold
another's; the client's answers to a text error body, a 429's Retry-After and no answer at all."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty, PagerDutyError
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.clock import ManualClock
from bot.domain import events as ev
from bot.domain.alerts import AlertConfig, pagerduty_dedup_key
from bot.sandbox.client import wait_for
from bot.sandbox.pagerduty import LocalPagerDuty
from bot.sandbox.slack import LocalSlack
from handlers.notifier import SlackNotifier, add_retry_handlers
from handlers.paging import WARN_AFTER, Backoff

SECRET = "pager-test-signing-secret"
TOKEN = "xoxb-pager-test-token"
FAILING = "PagerDuty paging is failing"
WORKS = "PagerDuty paging works again"
ALERTS = AlertConfig(
    escalate_after_seconds=3600.0, escalation_rounds=1, warning=("deploys", "deploys-log"), oncall=None
)


class World:
    def __init__(self, slack: LocalSlack, store: AsyncStore, clock: ManualClock, pd: LocalPagerDuty):
        self.slack, self.store, self.clock, self.pd = slack, store, clock, pd
        self.client = add_retry_handlers(AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"))
        self.pagers: list[PagerDuty] = []
        self.notifiers: list[SlackNotifier] = []

    def notifier(self, **kw: Any) -> SlackNotifier:
        """A notifier with PagerDuty — a new one on the same store is what a restart looks like."""
        pd = PagerDuty(
            self.pd.routing_key, self.pd.url, max_attempts=1, timeout_seconds=kw.pop("timeout", 5.0)
        )
        self.pagers.append(pd)
        n = SlackNotifier(
            self.client, self.store, ALERTS, clock=self.clock, pagerduty=pd, post_interval=0.0,
            update_interval=0.0, **kw,
        )  # fmt: skip
        self.notifiers.append(n)
        return n

    async def critical(self, n: SlackNotifier, service: str = "web") -> tuple[Any, Any]:
        """A canary of `service` that rolls back on its own: its message, then a critical alert."""
        d = await self.store.create_deployment(
            service=service, env="production", version="v2", strategy="canary", kind="deploy",
            requested_by="U0ALICE", plan=[{"kind": "analyze", "seconds": 60.0, "label": "canary 5%"}],
            channel="deploys",
        )  # fmt: skip
        await self.store.append_events(d.id, [ev.Requested()])
        d = await self.store.transition(d.id, "start", "deploybot")
        await self.store.append_events(d.id, [ev.Started()])
        await settled(n)
        d = await self.store.transition(d.id, "rollback", "deploybot", outcome="error rate 20% > 5%")
        await self.store.append_events(d.id, [ev.RollingBack(d.outcome, automatic=True)])
        await settled(n)
        (a,) = await self.store.open_alerts(deployment_id=d.id)
        return await self.store.get(d.id), a

    async def recover(self, d: Any) -> Any:
        d = await self.store.transition(d.id, "finish_rollback", "deploybot", outcome="back on v1")
        await self.store.append_events(d.id, [ev.RolledBack("analysis failed", back_on="v1")])
        return d

    def thread(self, d_ts: str) -> list[str]:
        return [m["text"] for m in self.slack.messages("deploys") if m["thread_ts"] == d_ts]

    def top(self, channel: str) -> list[dict]:
        return [m for m in self.slack.messages(channel) if m["thread_ts"] is None]

    def actions(self, d: Any) -> list[str]:
        key = pagerduty_dedup_key(d.id)
        return [e["event_action"] for e in self.pd.events if e["dedup_key"] == key]


@pytest.fixture
async def world():
    clock = ManualClock()
    slack = LocalSlack(signing_secret=SECRET, bot_token=TOKEN, clock=clock)
    await slack.start()
    pd = LocalPagerDuty(clock)
    await pd.start()
    store = AsyncStore(Store(":memory:", clock))
    w = World(slack, store, clock, pd)
    yield w
    for n in w.notifiers:
        await n.drain(within=5)
    for p in w.pagers:
        await p.close()
    store.close()
    await pd.stop()
    await slack.stop()


async def settled(n: SlackNotifier, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        await n.settle()


async def run_clock(w: World, n: SlackNotifier, until: float) -> None:
    """Move the clock to `until`, jumping from one retry to the next: each jump waits (with a deadline)
    until every delivery worker has made its attempt and waits on the clock again, and the outbox is
    delivered."""

    async def quiet() -> bool:
        return n.paging is not None and n.paging.quiet()

    while True:
        await wait_for(quiet, 20, what="the PagerDuty workers to wait on the clock")
        await settled(n)  # and what they said is in Slack, at this instant of the clock
        now = w.clock.now()
        if now >= until:
            break
        assert n.paging is not None
        waits = [t for t in n.paging.waiting.values() if t > now]
        await w.clock.advance(min([*waits, until]) - now)
    await settled(n)


def failing_lines(texts: list[str]) -> list[str]:
    return [t for t in texts if FAILING in t]


def works_lines(texts: list[str]) -> list[str]:
    return [t for t in texts if WORKS in t]


async def test_ten_minutes_of_outage_then_every_page_once_in_order_one_warning_one_recovery(world, caplog):
    w = world
    t0 = w.clock.now()
    w.pd.set_failure("500", 600)  # a 500 with an HTML body, for 10 minutes of clock time
    n = w.notifier()
    with caplog.at_level(logging.INFO):
        d, a = await w.critical(n)
        await run_clock(w, n, t0 + 60)
        await n.acknowledge(a.id, "U0CAROL")  # acknowledged and resolved while PagerDuty is down
        d = await w.recover(d)
        await settled(n)
        await run_clock(w, n, t0 + 240)
        assert failing_lines(w.thread(d.message_ts)) == []  # not before 5 minutes of failing
        await run_clock(w, n, t0 + 900)
    assert w.actions(d) == ["trigger", "acknowledge", "resolve"]  # each once, in order
    assert all(e["at"] >= t0 + 600 for e in w.pd.events)
    assert len(w.pd.failures) >= 6 and all(f["at"] < t0 + 600 for f in w.pd.failures)  # kept trying
    first_failure = w.pd.failures[0]["at"]
    gaps = [b["at"] - a["at"] for a, b in zip(w.pd.failures, w.pd.failures[1:], strict=False)]
    assert max(gaps) <= 300 and gaps[0] <= 2.0  # backoff from 2 s, capped at 5 minutes

    thread = w.thread(d.message_ts)
    (warning,) = failing_lines(thread)
    assert "trigger has not been delivered for 5m" in warning and "HTTP 500: &lt;html&gt;" in warning
    (back,) = works_lines(thread)
    assert "delivered trigger, acknowledgement, resolution" in back
    warned_at = next(float(m["ts"]) for m in w.slack.messages("deploys") if FAILING in m["text"])
    assert first_failure + WARN_AFTER <= warned_at < first_failure + WARN_AFTER + 5
    # the warning channel (not the deployment's own) gets both, as a warning
    elsewhere = [m["text"] for m in w.top("deploys-log")]
    assert len(failing_lines(elsewhere)) == 1 and len(works_lines(elsewhere)) == 1
    assert "HTTP 500: <html>" in caplog.text and "JSONDecodeError" not in caplog.text
    everything = caplog.text + repr(w.slack.messages("deploys")) + repr(w.slack.messages("deploys-log"))
    assert w.pd.routing_key not in everything
    assert await w.store.pages_owed() == [] and await w.store.page_trouble(a.id) is None


async def test_a_restart_mid_outage_carries_on_without_duplicates_or_a_second_warning(world):
    w = world
    t0 = w.clock.now()
    w.pd.set_failure("503", 600)
    first = w.notifier()
    d, a = await w.critical(first)
    await run_clock(w, first, t0 + 200)
    await first.drain()  # stopped before the 5 minutes

    second = w.notifier()
    await second.start()
    await run_clock(w, second, t0 + 420)  # the 5 minutes count from the first failure, across the restart
    (warning,) = failing_lines(w.thread(d.message_ts))
    assert "HTTP 503: Service Unavailable" in warning
    warned_at = next(float(m["ts"]) for m in w.slack.messages("deploys") if FAILING in m["text"])
    assert warned_at < w.pd.failures[0]["at"] + WARN_AFTER + 5
    await n_acknowledge(second, a.id)
    await second.drain()

    third = w.notifier()
    await third.start()
    await run_clock(w, third, t0 + 1000)
    assert w.actions(d) == ["trigger", "acknowledge"]
    thread = w.thread(d.message_ts)
    assert len(failing_lines(thread)) == 1 and len(works_lines(thread)) == 1
    assert "delivered trigger, acknowledgement" in works_lines(thread)[0]


async def n_acknowledge(n: SlackNotifier, alert_id: int) -> None:
    assert (await n.acknowledge(alert_id, "U0CAROL")).now


async def test_a_page_pagerduty_rejects_is_recorded_and_warned_at_once_and_not_retried(world):
    w = world
    t0 = w.clock.now()
    w.pd.set_failure("400")  # until told otherwise
    n = w.notifier()
    d, a = await w.critical(n)
    await run_clock(w, n, t0 + 3600)
    assert len(w.pd.failures) == 1 and w.pd.events == []  # one attempt in an hour
    (warning,) = failing_lines(w.thread(d.message_ts))
    assert "rejected this incident's trigger" in warning and "It is not retried" in warning
    trouble = await w.store.page_trouble(a.id)
    assert trouble is not None and trouble.refused == "trigger" and trouble.warned

    w.pd.set_failure(None)  # fixed: the next start tries once more, and says paging works again
    await n.drain()
    again = w.notifier()
    await again.start()
    await run_clock(w, again, t0 + 3700)
    assert w.actions(d) == ["trigger"]
    thread = w.thread(d.message_ts)
    assert len(failing_lines(thread)) == 1 and "delivered trigger" in works_lines(thread)[0]


async def test_one_incident_failing_does_not_hold_the_pages_of_another(world):
    w = world
    t0 = w.clock.now()
    n = w.notifier()
    w.pd.set_failure("500", 600, dedup_key=pagerduty_dedup_key(1))  # the first deployment's incident
    bad, _ = await w.critical(n, "web")
    assert bad.id == 1
    await run_clock(w, n, t0 + 10)
    good, _ = await w.critical(n, "api")
    await run_clock(w, n, t0 + 30)
    assert w.actions(good) == ["trigger"] and w.actions(bad) == []  # delivered while the other retries
    good = await w.recover(good)
    await run_clock(w, n, t0 + 60)
    assert w.actions(good) == ["trigger", "resolve"]
    await run_clock(w, n, t0 + 900)
    assert w.actions(bad) == ["trigger"]
    assert failing_lines(w.thread(good.message_ts)) == []
    assert len(failing_lines(w.thread(bad.message_ts))) == 1


async def test_a_429_is_waited_out_for_at_least_its_retry_after(world):
    w = world
    t0 = w.clock.now()
    w.pd.retry_after = 120
    w.pd.set_failure("429", 100)
    n = w.notifier()
    d, _ = await w.critical(n)
    await run_clock(w, n, t0 + 1)
    assert len(w.pd.failures) == 1  # the client does not wait two minutes itself
    assert n.paging is not None and n.paging.waiting[d.id] >= w.pd.failures[0]["at"] + 120
    await run_clock(w, n, t0 + 200)
    assert len(w.pd.failures) == 1 and w.actions(d) == ["trigger"]


# ------------------------------------------------------------------------------------ the client


async def test_the_client_reports_a_text_error_body_as_its_status_and_first_200_characters(world):
    w = world
    pd = PagerDuty(w.pd.routing_key, w.pd.url, max_attempts=1)
    w.pagers.append(pd)
    w.pd.set_failure("500", 60)
    with pytest.raises(PagerDutyError) as err:
        await pd.trigger("deploybot-deployment-1", "x")
    problem = err.value.problem
    assert problem.startswith("HTTP 500: <html><head><title>500 Internal Server Error")
    assert len(problem) == len("HTTP 500: ") + 200 and err.value.retryable and err.value.status == 500
    w.pd.set_failure("400", 60)
    with pytest.raises(PagerDutyError) as err:
        await pd.acknowledge("deploybot-deployment-1")
    assert not err.value.retryable and "Event object is invalid; rehearsed 400" in err.value.problem


async def test_the_client_retries_a_blip_quickly_but_leaves_a_long_retry_after_to_the_queue(world):
    w = world
    pd = PagerDuty(w.pd.routing_key, w.pd.url, max_attempts=3, backoff_seconds=0.0)
    w.pagers.append(pd)
    w.pd.set_failure("503", times=2)  # a blip: two failures
    assert (await pd.resolve("deploybot-deployment-2"))["status"] == "success"
    assert [f["fail"] for f in w.pd.failures] == ["503", "503"] and len(w.pd.events) == 1
    w.pd.retry_after = 60
    w.pd.set_failure("429", 60)
    with pytest.raises(PagerDutyError) as err:
        await pd.resolve("deploybot-deployment-2")
    assert err.value.retry_after == 60 and err.value.retryable and w.pd.failures[-1]["fail"] == "429"
    assert [f["fail"] for f in w.pd.failures].count("429") == 1  # not waited here


async def test_no_answer_is_reported_as_such_without_the_url_or_the_key(world):
    w = world
    pd = PagerDuty(w.pd.routing_key, w.pd.url, max_attempts=3, timeout_seconds=0.3)
    w.pagers.append(pd)
    w.pd.set_failure("timeout", 5)
    with pytest.raises(PagerDutyError) as err:
        await pd.acknowledge("deploybot-deployment-3")
    assert err.value.problem == "no answer within 0.3s" and err.value.retryable
    assert len(w.pd.failures) == 1  # a timeout is not retried quickly: it waited already
    closed = LocalPagerDuty(w.clock)  # a port where nothing listens any more
    url = await closed.start()
    await closed.stop()
    nobody = PagerDuty(w.pd.routing_key, url, max_attempts=2, backoff_seconds=0.0)
    with pytest.raises(PagerDutyError) as err:
        await nobody.resolve("deploybot-deployment-3")
    await nobody.close()
    assert err.value.problem.startswith("no answer: ") and url not in str(err.value)
    assert w.pd.routing_key not in str(err.value)


def test_backoff_doubles_from_two_seconds_to_five_minutes_with_jitter():
    low, high = Backoff(jitter=lambda: 0.0), Backoff(jitter=lambda: 1.0)
    assert [high.next() for _ in range(10)] == [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert [low.next() for _ in range(3)] == [1, 2, 4]
    assert high.next(at_least=400) == 400
    high.reset()
    assert high.next() == 2


async def test_the_local_pagerduty_checks_the_routing_key_and_the_event(world):
    w = world
    async with aiohttp.ClientSession() as s:
        async with s.post(w.pd.url, json={"routing_key": "wrong", "event_action": "trigger"}) as r:
            assert r.status == 400 and "Invalid routing key" in (await r.json())["errors"]
        event = {"routing_key": w.pd.routing_key, "event_action": "acknowledge"}
        async with s.post(w.pd.url, json=event) as r:
            assert r.status == 400 and "'dedup_key' is required" in (await r.json())["errors"]
    assert w.pd.events == [] and len(w.pd.rejected) == 2
    with pytest.raises(ValueError, match="fail must be one of"):
        w.pd.set_failure("418")


# ------------------------------------------------------------------------------------- the store


def test_the_store_keeps_what_an_alert_owes_and_says_failing_and_restored_once(store_url):
    clock = ManualClock()
    store = Store(store_url, clock)  # on SQLite and on PostgreSQL
    try:
        d = store.create_deployment(
            service="web", env="production", version="v2", strategy="canary", kind="deploy",
            requested_by="U0ALICE",
        )  # fmt: skip
        quiet = store.raise_alert(d.id, "deploy_failed", "critical", "quiet")
        a = store.raise_alert(d.id, "deploy_failed", "critical", "boom")
        assert quiet is not None and a is not None
        store.resolve_alerts([quiet.id], "fixed", stop_escalation=True)  # resolved, never tried: owes nothing
        store.page_attempt(a.id, "trigger")
        store.resolve_alerts([a.id], "fixed", stop_escalation=True)
        # tried before it was resolved: the whole incident is owed, late
        assert [(x.id, due) for x, due in store.pages_owed()] == [(a.id, ["trigger", "resolve"])]
        assert store.warn_paging(a.id) is False  # nothing has failed yet
        store.page_failed(a.id, "trigger", "HTTP 500: down")
        clock._now += 300
        trouble = store.page_failed(a.id, "trigger", "HTTP 503: still down")
        assert trouble.attempts == 2 and trouble.failing_since == clock.now() - 300
        assert store.warn_paging(a.id) is True and store.warn_paging(a.id) is False  # said once
        assert store.mark_paged(a.id, "trigger") is False  # the resolve is still owed
        trouble = store.page_trouble(a.id)
        assert trouble is not None and trouble.failing_since is None and trouble.delivered == ("trigger",)
        assert store.mark_paged(a.id, "resolve") is True  # owes nothing: "works again", and the row goes
        assert store.page_trouble(a.id) is None and store.pages_owed() == []
        said = [e.event for e in store.outbox_after("nobody") if e.event.kind.startswith("paging")]
        assert said == [
            ev.PagingFailing("trigger", "HTTP 503: still down", 300),
            ev.PagingRestored("trigger resolve", 300),
        ]
    finally:
        store.close()
