"""The notifier in process, against the sandbox's LocalSlack through a real slack_sdk AsyncWebClient, an
in-memory store and a ManualClock: one message per deployment updated in place, alerts by level, the
Acknowledge compare-and-set, escalation timers across a restart, per-channel pacing and slack_sdk's
retries, Block Kit limits, the Home tab, and PagerDuty against a local recording server."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.pagerduty import PagerDuty, PagerDutyError
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.clock import ManualClock
from bot.domain import events as ev
from bot.domain.alerts import AlertConfig, Routes
from bot.sandbox.client import wait_for
from bot.sandbox.slack import LocalSlack, _ApiError, block_errors
from handlers.listeners import actions, events
from handlers.listeners.events import HomeTab
from handlers.notifier import SlackNotifier, add_retry_handlers
from handlers.ui import alert_blocks
from handlers.ui import blocks as slack_ui
from handlers.ui.home import home_view

SECRET = "notifier-test-signing-secret"
TOKEN = "xoxb-notifier-test-token"
DELAY = 600.0  # escalate_after_seconds in these tests


class World:
    def __init__(self, slack: LocalSlack, client: AsyncWebClient, store: AsyncStore, clock: ManualClock):
        self.slack, self.client, self.store, self.clock = slack, client, store, clock
        self.notifiers: list[SlackNotifier] = []

    def notifier(self, alerts: AlertConfig | None = None, **kw: Any) -> SlackNotifier:
        kw.setdefault("post_interval", 0.0)
        kw.setdefault("update_interval", 0.0)
        alerts = alerts or AlertConfig(
            escalate_after_seconds=DELAY, escalation_rounds=3, escalate_to=("@dave", "release-managers")
        )
        n = SlackNotifier(self.client, self.store, alerts, clock=self.clock, **kw)
        self.notifiers.append(n)
        return n

    async def deployment(self, service: str = "web", env: str = "production", **kw: Any):
        return await self.store.create_deployment(
            service=service,
            env=env,
            version=kw.pop("version", "v2"),
            strategy="canary",
            kind="deploy",
            requested_by="U0ALICE",
            plan=[{"kind": "analyze", "seconds": 60.0, "label": f"canary {w}%"} for w in (5, 25, 50, 100)],
            channel=kw.pop("channel", "deploys"),
            **kw,
        )

    async def move(self, d, action: str, outcome: str | None = None):
        return await self.store.transition(d.id, action, "deploybot", outcome=outcome)

    async def say(self, d, *events: ev.DomainEvent) -> None:
        """Events about `d` in the store's outbox (the notifier is nudged by the store, as in the bot)."""
        await self.store.append_events(d.id, events)

    def messages(self, channel: str) -> list[dict]:
        return [m for m in self.slack.messages(channel) if m["ephemeral_for"] is None]

    def top(self, channel: str) -> list[dict]:
        return [m for m in self.messages(channel) if m["thread_ts"] is None]

    def thread(self, channel: str, ts: str) -> list[dict]:
        return [m for m in self.messages(channel) if m["thread_ts"] == ts]

    def calls(self, method: str, channel: str | None = None) -> list[dict]:
        return [c for c in self.slack.calls if c["method"] == method and channel in (None, c["channel"])]


@pytest.fixture
async def world():
    clock = ManualClock()
    slack = LocalSlack(signing_secret=SECRET, bot_token=TOKEN, clock=clock)
    await slack.start()
    client = add_retry_handlers(AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"))
    store = AsyncStore(Store(":memory:", clock))
    w = World(slack, client, store, clock)
    yield w
    for n in w.notifiers:
        await n.drain(within=5)
    store.close()
    await slack.stop()


async def settled(n: SlackNotifier, within: float = 20.0) -> None:
    async with asyncio.timeout(within):
        await n.settle()


def buttons(message: dict) -> list[dict]:
    return [e for b in message["blocks"] or [] if b["type"] == "actions" for e in b["elements"]]


def everything(message: dict) -> str:
    return message["text"] + json.dumps(message["blocks"], ensure_ascii=False)


async def rolled_back_alert(w: World, n: SlackNotifier):
    """A canary that rolls back on its own: the deployment's message, then a critical alert."""
    d = await w.deployment()
    await w.say(d, ev.Requested())
    d = await w.move(d, "start")
    await w.say(d, ev.Started())
    await settled(n)  # the canary ran a while: its message is there before anything goes wrong
    d = await w.move(d, "rollback", outcome="analysis failed at canary 5%: error rate 20.0% > 5.0%")
    await w.say(d, ev.RollingBack(d.outcome, automatic=True))
    await settled(n)
    (alert,) = w.top("incidents")
    return d, alert


# ------------------------------------------------------------------------------ deployment message


async def test_one_message_per_deployment_updated_in_place_with_details_in_its_thread(world):
    n = world.notifier()
    d = await world.deployment()
    await world.say(d, ev.Requested())
    d = await world.move(d, "start")
    await world.say(d, ev.Started())
    await world.say(d, ev.StepStarted(0, "Shift traffic: 5% to the new version"))
    await world.say(d, ev.Detail("Traffic: green 5% / blue 95%"))
    await settled(n)
    (top,) = world.top("deploys")
    assert "Shift traffic: 5%" in everything(top) and ": running" in top["text"]
    d = await world.move(d, "succeed", outcome="web v2 is live in production")
    await world.say(d, ev.Succeeded("v2"))
    await settled(n)
    (top,) = world.top("deploys")
    assert top["text"].endswith(": succeeded — web v2 is live in production") and top["edited"]
    assert [m["text"] for m in world.thread("deploys", top["ts"])] == [
        "Traffic: green 5% / blue 95%",
        "web v2 is live in production",
    ]
    assert len(world.calls("chat.postMessage", "C0DEPLOYS")) == 3  # the message and its two thread lines
    assert world.calls("chat.update", "C0DEPLOYS")
    assert world.top("incidents") == []  # nothing critical happened
    assert world.slack.rejected == 0


async def test_a_finished_deployment_shows_so_only_once_its_thread_is_out(world):
    n = world.notifier(post_interval=0.2)
    d = await world.move(await world.deployment(), "start")
    await world.say(d, ev.Started())
    await settled(n)
    for i in range(5):
        await world.say(d, ev.Detail(f"line {i}"))
    d = await world.move(d, "succeed", outcome="web v2 is live in production")
    await world.say(d, ev.Succeeded("v2"))

    async def finished():
        tops = world.top("deploys")
        return tops and ": succeeded" in tops[0]["text"] and tops[0]

    top = await wait_for(finished, 20, what="the message to say succeeded")
    # lines that waited together for the channel's next second go out joined in one message
    assert [line for m in world.thread("deploys", top["ts"]) for line in m["text"].split("\n")] == [
        *(f"line {i}" for i in range(5)),
        "web v2 is live in production",
    ]


# ------------------------------------------------------------------------------------- critical alerts


async def test_a_critical_alert_mentions_oncall_links_the_deployment_and_can_be_acknowledged(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    assert alert["text"].startswith("CRITICAL · Automatic rollback · Deployment #1 · web v2 → production")
    assert "<!subteam^S0ONCALL>" in alert["text"]  # the group is notified
    (deployment_message,) = world.top("deploys")
    link = f"/archives/C0DEPLOYS/p{deployment_message['ts'].replace('.', '')}"
    assert link in everything(alert)
    (button,) = buttons(alert)
    a = (await world.store.open_alerts(deployment_id=d.id))[0]
    assert (button["action_id"], button["value"], button["text"]["text"]) == (
        alert_blocks.ACK_ALERT,
        str(a.id),
        "Acknowledge",
    )
    assert "escalates to <@U0DAVE>" in everything(alert)
    # the deployment's own thread has the text too, and #deploys still has one message for it
    assert [m["text"] for m in world.thread("deploys", deployment_message["ts"])] == [
        f"Rolling back: {d.outcome}"
    ]

    await world.clock.advance(125)  # acknowledged 2m05s after it was raised
    first = await n.acknowledge(a.id, "U0CAROL")
    assert first.now and first.alert.acked_by == "U0CAROL"
    await settled(n)
    (alert,) = world.top("incidents")
    stamp = slack_ui.hhmm(world.clock.now())
    assert f"acknowledged by <@U0CAROL> at {stamp} UTC" in alert["text"] and alert["edited"]
    assert (
        f"Acknowledged by <@U0CAROL> at <!date^{int(world.clock.now())}^{{time}}|{stamp} UTC>"
        in everything(alert)
    )
    assert buttons(alert) == []

    again = await n.acknowledge(a.id, "U0CAROL")
    other = await n.acknowledge(a.id, "U0DAVE")
    assert not again.now and not other.now and other.alert.acked_by == "U0CAROL"
    assert other.alert.acked_at == first.alert.acked_at
    assert "already; nothing was changed" in alert_blocks.already_acknowledged(other.alert, "U0DAVE")["text"]
    assert alert_blocks.already_acknowledged(again.alert, "U0CAROL")["text"].startswith("You acknowledged")
    assert world.slack.rejected == 0


async def test_the_acknowledge_handler_acks_first_and_tells_a_late_clicker_who_was_first(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    a = (await world.store.open_alerts(deployment_id=d.id))[0]
    answers: list[tuple[str, dict]] = []

    def clicker(user: str):
        async def respond(message: dict, replace_original: bool = False) -> None:
            answers.append((user, message))

        body = {"user": {"id": user}, "response_url": "http://slack.invalid/response"}
        return actions.acknowledge(n, body, {"value": str(a.id)}, respond)

    await asyncio.gather(clicker("U0CAROL"), clicker("U0DAVE"))
    winner = (await world.store.alert(a.id)).acked_by
    assert winner in ("U0CAROL", "U0DAVE")
    ((loser, answer),) = answers  # the winner hears nothing: the alert itself changes
    assert loser != winner and f"<@{winner}> acknowledged this alert at" in answer["text"]
    await clicker(winner)  # the same person again
    assert answers[-1] == (winner, answers[-1][1]) and answers[-1][1]["text"].startswith("You acknowledged")
    await actions.acknowledge(
        n, {"user": {"id": "U0BOB"}, "response_url": "x"}, {"value": "999"}, respond_to(answers)
    )
    assert "There is no alert" in answers[-1][1]["text"]
    home_click = {"user": {"id": "U0BOB"}}  # a click on the Home tab: no response_url, no answer
    await actions.acknowledge(n, home_click, {"value": str(a.id)}, respond_to(answers))
    assert len(answers) == 3


def respond_to(answers: list):
    async def respond(message: dict, replace_original: bool = False) -> None:
        answers.append(("?", message))

    return respond


async def test_a_second_critical_on_the_same_deployment_goes_to_the_standing_alert_s_thread(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    d = await world.move(d, "fail", outcome="rollback failed: ECS said no (after: analysis failed)")
    await world.say(d, ev.RollbackFailed("ECS said no", after="analysis failed"))
    await settled(n)
    assert len(world.top("incidents")) == 1
    (line,) = world.thread("incidents", alert["ts"])
    assert line["text"].startswith("Rollback failed: rollback failed: ECS said no")


async def test_an_alert_in_the_deployment_s_own_channel_goes_in_its_thread(world):
    n = world.notifier(AlertConfig(critical=("deploys",), escalate_after_seconds=DELAY))
    d = await world.move(await world.deployment(), "start")
    await world.say(d, ev.Started())
    d = await world.move(d, "fail", outcome="internal error")
    await world.say(d, ev.DeployFailed("internal error"))
    await settled(n)
    (top,) = world.top("deploys")  # still one message for the deployment
    thread = world.thread("deploys", top["ts"])
    assert [m["text"] for m in thread][0] == "internal error"
    assert any(buttons(m) for m in thread)  # the alert, acknowledgeable, under the deployment


# ------------------------------------------------------------------------------------------ escalation


async def test_unacknowledged_alert_escalates_in_its_thread_until_someone_acknowledges(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    a = (await world.store.open_alerts(deployment_id=d.id))[0]
    await world.clock.advance(DELAY - 1)
    await settled(n)
    assert world.thread("incidents", alert["ts"]) == []  # not yet

    await world.clock.advance(1)

    async def escalations():
        return world.thread("incidents", alert["ts"])

    (first,) = await wait_for(escalations, 10, what="the first escalation")
    assert first["text"].startswith(
        ":rotating_light: Escalation 1/3: Automatic rollback — web v2 → production"
    )
    assert "not acknowledged after 10m" in first["text"] and "<@U0DAVE> please take a look" in first["text"]
    assert first["blocks"][0]["block_id"] == alert_blocks.escalation_block_id(a.id, 1)

    async def marked():
        (alert_now,) = world.top("incidents")
        return "escalated 1/3" in everything(alert_now) and "escalates to <!subteam^S0RELEASE>" in everything(
            alert_now
        )

    await wait_for(marked, 10, what="the alert to show its escalation")

    await world.clock.advance(DELAY)
    await wait_for(lambda: _count(escalations, 2), 10, what="the second escalation")
    assert "<!subteam^S0RELEASE>" in world.thread("incidents", alert["ts"])[1]["text"]

    assert (await n.acknowledge(a.id, "U0CAROL")).now
    await settled(n)
    for _ in range(3):
        await world.clock.advance(DELAY)
    await settled(n)
    assert len(world.thread("incidents", alert["ts"])) == 2  # no further escalation
    assert await world.store.next_escalation_due() is None
    rounds = [e.details["round"] for e in await world.store.events(d.id) if e.action == "alert_escalated"]
    assert rounds == [1, 2]


async def _count(probe, n: int):
    return len(await probe()) >= n


class TickingClock(ManualClock):
    """Moves on at every reading, as the sandbox's 60x clock does between two reads a millisecond apart."""

    def now(self) -> float:
        self._now += 0.5
        return self._now


async def test_an_escalation_is_due_a_whole_delay_after_the_alert_was_raised(world):
    # Two readings of a moving clock (one for the escalation, one for raised_ts) let the escalation fall
    # due before a whole delay had passed since the recorded raise: 0.05 s early was seen at speed 60.
    world.clock = TickingClock()
    world.store = AsyncStore(Store(":memory:", world.clock))
    n = world.notifier()
    await rolled_back_alert(world, n)
    (a,) = await world.store.open_alerts()
    assert a.next_escalation_at - a.raised_ts == DELAY


async def test_escalation_stops_after_n_rounds(world):
    n = world.notifier(AlertConfig(escalate_after_seconds=60, escalation_rounds=2))
    d, alert = await rolled_back_alert(world, n)
    for k in (1, 2):
        await world.clock.advance(60)
        await wait_for(lambda k=k: _count(lambda: _thread(world, alert), k), 10, what=f"escalation {k}")
    for _ in range(3):
        await world.clock.advance(60)
    await settled(n)
    texts = [m["text"] for m in world.thread("incidents", alert["ts"])]
    assert [t.split(":")[2].strip() for t in texts] == ["Escalation 1/2", "Escalation 2/2"]
    assert all("<!subteam^S0ONCALL> please" in t for t in texts)  # no escalate_to: on-call again


async def _thread(world: World, alert: dict) -> list[dict]:
    return world.thread("incidents", alert["ts"])


async def test_a_restart_between_alert_and_escalation_escalates_exactly_once_on_time(world):
    first = world.notifier()
    d, alert = await rolled_back_alert(world, first)
    raised = (await world.store.open_alerts(deployment_id=d.id))[0].raised_ts
    await first.drain()  # the bot goes away; only the store remembers the timer

    await world.clock.advance(DELAY / 2)
    second = world.notifier()  # a new process: timers rebuilt from the store
    await second.start()
    await world.clock.advance(DELAY / 2 - 1)
    await settled(second)
    assert world.thread("incidents", alert["ts"]) == []
    await world.clock.advance(1)
    (escalation,) = await wait_for(lambda: _thread(world, alert), 10, what="the escalation")
    assert float(escalation["ts"]) == pytest.approx(raised + DELAY, abs=1)  # at the right time
    await settled(second)
    await second.drain()
    third = world.notifier()  # and another restart does not send it again
    await third.start()
    await settled(third)
    assert len(world.thread("incidents", alert["ts"])) == 1


async def test_a_round_claimed_when_the_bot_died_is_posted_once_or_recognised_as_posted(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    a = (await world.store.open_alerts(deployment_id=d.id))[0]
    await n.drain()
    # died after claiming round 1, before posting it
    assert await world.store.claim_escalation(a.id, 1, next_at=world.clock.now() + 2 * DELAY)
    again = world.notifier()
    await again.start()
    (posted,) = await wait_for(lambda: _thread(world, alert), 10, what="the in-doubt round")
    assert "Escalation 1/3" in posted["text"]
    await wait_for(lambda: _sent(world, a.id, 1), 10, what="the round to be confirmed")
    await again.drain()
    # died after posting round 2, before recording it: found in the thread, not posted again
    assert await world.store.claim_escalation(a.id, 2, next_at=None)
    text, blocks = alert_blocks.escalation(d, a, 2, 3, "@x", DELAY, None)
    await world.client.chat_postMessage(
        channel="C0INCIDENTS", thread_ts=alert["ts"], text=text, blocks=blocks
    )
    last = world.notifier()
    await last.start()
    await wait_for(lambda: _sent(world, a.id, 2), 10, what="round 2 to be recognised")
    await settled(last)
    assert len(world.thread("incidents", alert["ts"])) == 2


async def _sent(world: World, alert_id: int, rounds: int) -> bool:
    return (await world.store.alert(alert_id)).rounds_sent == rounds


async def test_recovery_resolves_the_alert_and_escalation_goes_on_until_acknowledged(world):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    d = await world.move(d, "finish_rollback", outcome="analysis failed; back on v1")
    await world.say(d, ev.RolledBack("analysis failed", back_on="v1"))
    await settled(n)
    (alert,) = world.top("incidents")
    assert "Resolved at" in everything(
        alert
    ) and "#1 rolled back — analysis failed; back on v1" in everything(alert)
    assert buttons(alert)  # still to be acknowledged: a person looks at every automatic rollback
    await world.clock.advance(DELAY)
    await wait_for(lambda: _thread(world, alert), 10, what="an escalation of the resolved alert")


async def test_recovery_can_stop_escalation_when_configured(world):
    n = world.notifier(AlertConfig(escalate_after_seconds=DELAY, escalate_resolved=False))
    d, alert = await rolled_back_alert(world, n)
    d = await world.move(d, "finish_rollback", outcome="back on v1")
    await world.say(d, ev.RolledBack("analysis failed", back_on="v1"))
    await settled(n)
    assert await world.store.next_escalation_due() is None
    await world.clock.advance(2 * DELAY)
    await settled(n)
    assert world.thread("incidents", alert["ts"]) == []


async def test_a_later_successful_deploy_of_the_service_resolves_an_earlier_failure(world):
    n = world.notifier()
    d = await world.move(await world.deployment(), "start")
    await world.say(d, ev.Started())
    d = await world.move(d, "fail", outcome="rollback failed: boom")
    await world.say(d, ev.RollbackFailed("boom", after="analysis failed"))
    fixed = await world.move(await world.move(await world.deployment(version="v1"), "start"), "succeed")
    await world.say(fixed, ev.Succeeded("v1"))
    await settled(n)
    assert await world.store.open_alerts(service="web", env="production") == []
    (alert,) = world.top("incidents")
    assert "Resolved at" in everything(alert) and "#2 succeeded" in everything(alert)


# ------------------------------------------------------------------------------ warnings and info


async def test_warnings_and_info_go_to_the_channels_of_their_level(world):
    routes = AlertConfig(
        warning=("deploys",),
        info=(),
        environments={"production": Routes(warning=("incidents",), info=("deploys-log",))},
    )
    n = world.notifier(routes)
    d = await world.deployment()
    await world.say(d, ev.Requested())
    d = await world.move(d, "start")
    await world.say(d, ev.Started())
    d = await world.move(d, "pause")
    await world.say(d, ev.Paused("analysis inconclusive at canary 5%", inconclusive=True))
    staging = await world.deployment(env="staging")
    await world.say(staging, ev.Aborted("bob"))
    await settled(n)
    (warning,) = world.top("incidents")  # production's warnings go to #incidents; staging's stay put
    assert warning["text"].startswith("WARNING: Deployment #1") and "inconclusive" in warning["text"]
    assert "Analysis inconclusive" in everything(warning) and not buttons(warning)
    info = [m["text"] for m in world.top("deploys-log")]
    assert info == [
        "INFO: Deployment #1 · web v2 → production: requested",
        "INFO: Deployment #1 · web v2 → production: running",
    ]


async def test_an_approval_waiting_too_long_raises_one_warning(world):
    n = world.notifier(
        AlertConfig(approval_warning_seconds=1800, slow_rollout_seconds=None), watch_interval=60
    )
    d = await world.move(await world.deployment(), "await_approval")
    await world.say(d, ev.GateChanged())
    await settled(n)
    await world.clock.advance(1799)
    await settled(n)
    (top,) = world.top("deploys")
    assert world.thread("deploys", top["ts"]) == []
    for _ in range(3):
        await world.clock.advance(60)

    async def warned():
        return world.thread("deploys", top["ts"])

    (line,) = await wait_for(warned, 10, what="the approval warning")
    assert "has been waiting 3" in line["text"] and "for approval" in line["text"]
    await world.clock.advance(600)
    await settled(n)
    assert len(world.thread("deploys", top["ts"])) == 1  # raised once


# ------------------------------------------------------------------------------ message discipline


async def test_30_status_changes_in_5_seconds_make_at_most_one_new_message_per_second(world):
    world.slack.rate_limit_per_channel_per_s = 1.0  # Slack's limit: it answers 429 to anything faster
    n = world.notifier(post_interval=1.0, update_interval=1.0)
    d = await world.move(await world.deployment(), "start")
    started = time.monotonic()
    for i in range(30):
        d = await world.store.save_progress(d.id, step_index=i % 4)
        await world.say(d, ev.Detail(f"Status change {i + 1}"), ev.Progress(f"step {i + 1}"))
        await asyncio.sleep(5 / 30)  # the scenario: 30 changes spread over 5 seconds
    assert time.monotonic() - started < 6.5
    await settled(n, within=40)

    posts = world.calls("chat.postMessage", "C0DEPLOYS")
    assert [c for c in world.slack.calls if c["error"] == "ratelimited"] == []
    gaps = [b["wall"] - a["wall"] for a, b in zip(posts, posts[1:], strict=False)]
    assert min(gaps) >= 0.99, gaps
    (top,) = world.top("deploys")  # still one top-level message
    lines = "\n".join(m["text"] for m in world.thread("deploys", top["ts"])).split("\n")
    assert lines == [f"Status change {i + 1}" for i in range(30)]  # all of them, in order
    assert len(posts) < 31  # a flood is sent joined, not one line per second for half a minute
    assert len(world.calls("chat.update", "C0DEPLOYS")) < 30  # coalesced
    assert "step 30" in everything(top)  # the message shows the latest state


async def test_slack_s_429_and_500_answers_are_retried_by_slack_sdk(world):
    world.slack.rate_limit_per_channel_per_s = 1.0
    # no pacing or joining of our own: two quick posts, so Slack's 429 and Retry-After take over
    n = world.notifier(post_interval=0.0, merge_backlog=20)
    d = await world.move(await world.deployment(), "start")
    await world.say(d, ev.Started())
    await settled(n)
    await world.say(d, ev.Detail("one"))
    await world.say(d, ev.Detail("two"))
    update = world.slack._methods["chat.update"]
    failures = iter([_ApiError("internal_error", status=500)])

    def flaky_update(args: dict) -> dict:
        err = next(failures, None)
        if err is not None:
            raise err
        return update(args)

    world.slack._methods["chat.update"] = flaky_update
    d = await world.move(d, "succeed", outcome="live")
    await world.say(d, ev.GateChanged())  # an event that only re-renders the message
    await settled(n, within=30)
    errors = [c["error"] for c in world.slack.calls]
    assert "ratelimited" in errors and "internal_error" in errors  # Slack refused...
    (top,) = world.top("deploys")  # ...and slack_sdk tried again, honouring Retry-After
    assert ": succeeded" in top["text"]
    assert [m["text"] for m in world.thread("deploys", top["ts"])] == ["one", "two"]


async def test_huge_texts_are_cut_to_slack_s_limits_with_a_pointer_to_the_audit(world):
    n = world.notifier()
    d = await world.deployment(reason="why " * 2000)
    await world.say(d, ev.Requested())
    d = await world.move(await world.move(d, "start"), "rollback", outcome="analysis: " + "x" * 9000)
    await world.say(d, ev.Detail("measurements: " + "m" * 9000))
    await world.say(d, ev.RollingBack("y" * 9000, automatic=True))
    await settled(n)
    assert world.slack.rejected == 0  # every message passed the local Slack's Block Kit validation
    (top,) = world.top("deploys")
    detail = world.thread("deploys", top["ts"])[0]["text"]
    assert len(detail) <= 3000 and detail.endswith(f"(full record: /deploy audit {d.id})")
    (alert,) = world.top("incidents")
    assert f"(full record: /deploy audit {d.id})" in alert["blocks"][0]["text"]["text"]


def test_fit_keeps_any_message_within_block_kit_limits():
    def text(t: str) -> dict:
        return {"type": "mrkdwn", "text": t}

    many = [{"type": "section", "text": text("s" * 5000)} for _ in range(60)]
    many.append({"type": "section", "fields": [text("f" * 2500) for _ in range(12)]})
    many.append({"type": "context", "elements": [text("c") for _ in range(12)]})
    fitted = slack_ui.fit(many, "(full record: /deploy audit 1)")
    assert len(fitted) == 50 and block_errors(fitted) == []
    assert fitted[0]["text"]["text"].endswith("(full record: /deploy audit 1)")
    assert "13 more blocks not shown" in fitted[-1]["elements"][0]["text"]
    assert block_errors(slack_ui.fit(many[-2:])) == []
    assert len(many[0]["text"]["text"]) == 5000  # the input is left alone


# -------------------------------------------------------------------------------------- Home tab


async def test_home_view_shows_deployments_locks_schedules_and_alerts_within_limits(world):
    store = world.store
    running = await world.move(await world.deployment(), "start")
    scheduled = await world.move(
        await world.deployment(service="api", context={"run_at": 1_767_240_000.0}), "schedule"
    )
    await store.lock("db", "production", "U0BOB", "migrating")
    a = await store.raise_alert(
        running.id, "automatic_rollback", "critical", "error rate 20%", escalate_at=None
    )
    active, locks = await store.overview()
    view = home_view(active, locks, [(a, running)], world.clock.now(), [], {running.id: "Shift traffic: 5%"})
    assert view["type"] == "home" and block_errors(view["blocks"], max_blocks=100) == []
    text = json.dumps(view, ensure_ascii=False)
    for expected in ("Automatic rollback", "error rate 20%", "web v2 → production", "Shift traffic: 5%",
                     "api v2 → production", "<!date^1767240000^", "*db* in *production*", "migrating"):  # fmt: skip
        assert expected in text, expected
    assert scheduled.state.value == "scheduled"
    ack = [
        b["accessory"]
        for b in view["blocks"]
        if b.get("accessory", {}).get("action_id") == alert_blocks.ACK_ALERT
    ]
    assert [x["value"] for x in ack] == [str(a.id)]
    crowded = home_view([running] * 200, locks * 200, [(a, running)] * 200, world.clock.now(), [running] * 9)
    assert block_errors(crowded["blocks"], max_blocks=100) == []


async def test_app_home_opened_publishes_the_tab_and_it_refreshes_on_change(world):
    n = world.notifier()
    home = HomeTab(world.client, world.store, world.clock, live=n.live, min_interval=0.05)
    n.on_change = home.changed
    app = AsyncApp(client=world.client, signing_secret=SECRET)
    events.register(app, home)
    runner = web.AppRunner(app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    try:
        body = json.dumps(
            {
                "type": "event_callback",
                "team_id": "T0SANDBOX",
                "api_app_id": "A0DEPLOYBOT",
                "event": {"type": "app_home_opened", "user": "U0CAROL", "channel": "D0CAROL", "tab": "home"},
                "event_id": "Ev1",
                "event_time": int(time.time()),
            }
        )
        ts = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body),
        }
        async with aiohttp.ClientSession() as s, s.post(url, data=body, headers=headers) as r:
            assert r.status == 200

        async def view():
            v = world.slack._views.get("U0CAROL")
            return v and v["blocks"]

        assert "None — all quiet." in json.dumps(
            await wait_for(view, 10, what="the Home tab"), ensure_ascii=False
        )
        d, alert = await rolled_back_alert(world, n)

        async def shows_alert():
            return "Automatic rollback" in json.dumps(world.slack._views["U0CAROL"]["blocks"])

        await wait_for(shows_alert, 10, what="the Home tab to show the alert")
        a = (await world.store.open_alerts(deployment_id=d.id))[0]
        await n.acknowledge(a.id, "U0CAROL")

        async def quiet():
            return "None — all quiet." in json.dumps(
                world.slack._views["U0CAROL"]["blocks"], ensure_ascii=False
            )

        await wait_for(quiet, 10, what="the Home tab to drop the acknowledged alert")
        assert world.slack.rejected == 0
    finally:
        await home.close()
        await runner.cleanup()


# ------------------------------------------------------------------------------------- PagerDuty


class PagerDutyServer:
    """A local Events API v2: records every event; answers with the scripted statuses first, then 202."""

    def __init__(self, statuses: list[int] | None = None):
        self.events: list[dict] = []
        self.statuses = list(statuses or [])
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.events.append(body)
        status = self.statuses.pop(0) if self.statuses else 202
        if status == 202:
            return web.json_response(
                {"status": "success", "message": "Event processed", "dedup_key": body["dedup_key"]},
                status=202,
            )
        return web.json_response(
            {"status": "invalid event", "message": "Event object is invalid"}, status=status
        )

    async def __aenter__(self) -> PagerDutyServer:
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v2/enqueue"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


ROUTING_KEY = "R0UTINGKEY0123456789abcdef012345"


async def test_pagerduty_client_sends_events_v2_and_retries_only_what_may_succeed(caplog):
    async with PagerDutyServer([429, 500]) as server:
        pd = PagerDuty(ROUTING_KEY, server.url, backoff_seconds=0.01)
        try:
            with caplog.at_level(logging.DEBUG):
                out = await pd.trigger(
                    "deploybot-deployment-7", "x" * 2000, component="web", group="production"
                )
            assert out["status"] == "success" and len(server.events) == 3  # 429, 500, then accepted
            event = server.events[-1]
            assert event["routing_key"] == ROUTING_KEY and event["event_action"] == "trigger"
            assert event["dedup_key"] == "deploybot-deployment-7"
            assert event["payload"]["severity"] == "critical" and len(event["payload"]["summary"]) == 1024
            assert event["payload"]["component"] == "web" and event["payload"]["source"] == "deploybot"
            await pd.acknowledge("deploybot-deployment-7")
            await pd.resolve("deploybot-deployment-7")
            assert [e["event_action"] for e in server.events[-2:]] == ["acknowledge", "resolve"]
            server.statuses = [400]
            with pytest.raises(PagerDutyError, match="refused acknowledge") as err:
                await pd.acknowledge("deploybot-deployment-7")
            assert len(server.events) == 6  # a malformed event is not retried
            assert ROUTING_KEY not in repr(pd) + str(err.value) + caplog.text
        finally:
            await pd.close()


async def test_critical_alerts_trigger_acknowledge_and_resolve_one_pagerduty_incident(world):
    async with PagerDutyServer() as server:
        pd = PagerDuty(ROUTING_KEY, server.url, backoff_seconds=0.01)
        n = world.notifier(pagerduty=pd)
        d, alert = await rolled_back_alert(world, n)
        a = (await world.store.open_alerts(deployment_id=d.id))[0]
        await n.acknowledge(a.id, "U0CAROL")
        d = await world.move(d, "finish_rollback", outcome="back on v1")
        await world.say(d, ev.RolledBack("analysis failed", back_on="v1"))
        await wait_for(lambda: _events(server, 3), 10, what="three PagerDuty events")
        assert [e["event_action"] for e in server.events] == ["trigger", "acknowledge", "resolve"]
        assert {e["dedup_key"] for e in server.events} == {f"deploybot-deployment-{d.id}"}
        trigger = server.events[0]
        assert trigger["payload"]["summary"].startswith(
            "Automatic rollback: Deployment #1 · web v2 → production"
        )
        assert (
            trigger["payload"]["group"] == "production"
            and trigger["payload"]["class"] == "automatic_rollback"
        )
        assert f"/archives/C0DEPLOYS/p{d.message_ts.replace('.', '')}" in trigger["links"][0]["href"]
        await n.drain()
        await pd.close()


async def test_a_pagerduty_summary_is_plain_text_that_carries_no_slack_markup_back(world):
    """PD's own Slack integration posts the summary into Slack: the bot's mentions read "@U…", and what
    a person typed (escaped in the alert) comes out as ‹!channel›, never as markup."""
    async with PagerDutyServer() as server:
        pd = PagerDuty(ROUTING_KEY, server.url, backoff_seconds=0.01)
        n = world.notifier(pagerduty=pd)
        d = await world.deployment(context={"emergency": "<!channel> hotfix"})
        # the event carries what the person typed; handlers/ui/event_text escapes it
        await world.say(
            d, ev.EmergencyRequested("U0ALICE", "<!channel> hotfix <http://evil.example|docs> &lt;!here&gt;")
        )
        await wait_for(lambda: _events(server, 1), 10, what="the PagerDuty trigger")
        summary = server.events[0]["payload"]["summary"]
        assert "<" not in summary and ">" not in summary, summary
        assert summary.endswith(
            "by @U0ALICE: ‹!channel› hotfix ‹http://evil.example|docs› &lt;!here&gt;. "
            "Manual items and approvals are skipped."
        ), summary
        await n.drain()
        await pd.close()


async def _events(server: PagerDutyServer, count: int) -> bool:
    return len(server.events) >= count


async def test_a_page_pagerduty_never_confirmed_is_sent_at_the_next_start_and_only_once(world):
    """The bot raised a critical alert but PagerDuty refused the trigger (or the bot stopped first): the
    next start sends it; a start after that sends nothing."""
    async with PagerDutyServer([400]) as server:  # the first trigger is refused (and not retried)
        pd = PagerDuty(ROUTING_KEY, server.url, backoff_seconds=0.01)
        n = world.notifier(pagerduty=pd)
        d, _ = await rolled_back_alert(world, n)
        await wait_for(lambda: _events(server, 1), 10, what="the refused trigger")
        await n.drain()
        (a,) = await world.store.open_alerts(deployment_id=d.id)
        assert a.paged is None and a.pages_due() == ["trigger"]

        again = world.notifier(pagerduty=pd)  # the next start, on the same store
        await again.start()
        await wait_for(lambda: _events(server, 2), 10, what="the trigger sent at start")
        await again.drain()
        assert [e["event_action"] for e in server.events] == ["trigger", "trigger"]
        (a,) = await world.store.open_alerts(deployment_id=d.id)
        assert a.paged == "trigger" and a.pages_due() == []

        third = world.notifier(pagerduty=pd)
        await third.start()
        await third.drain()
        assert len(server.events) == 2  # nothing owed, nothing sent
        await pd.close()
