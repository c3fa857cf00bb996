"""The outbox as the notifier reads it: events written with a transition are delivered by a notifier
started later on the same database (a crash between the two loses nothing), each consumer ("slack",
"alerting") delivers once by its own cursor (a restart repeats nothing), and alerts are raised by event
type, whatever the words say."""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.domain import events as ev
from bot.domain.alerts import AlertConfig
from handlers.notifier import ALERTING, SLACK, SlackNotifier, add_retry_handlers
from tests import test_notifier
from tests.test_notifier import DELAY, TOKEN, World, settled

world = test_notifier.world  # the fixture: a LocalSlack, a client, an in-memory store, a ManualClock
PLAN = [{"kind": "analyze", "seconds": 60.0, "label": "canary 5%"}]


def file_store(path: Path, w: World) -> AsyncStore:
    return AsyncStore(Store(str(path), w.clock))


def notifier_on(store: AsyncStore, w: World) -> SlackNotifier:
    alerts = AlertConfig(escalate_after_seconds=DELAY)
    return SlackNotifier(w.client, store, alerts, clock=w.clock, post_interval=0.0, update_interval=0.0)


async def create(store: AsyncStore, **kw):
    return await store.create_deployment(
        service="web",
        env="production",
        version="v2",
        strategy="canary",
        kind="deploy",
        requested_by="U0ALICE",
        plan=PLAN,
        channel="deploys",
        events=[ev.Requested()],
        **kw,
    )


async def test_events_written_before_a_crash_are_posted_once_by_the_next_process(world, tmp_path):
    db = tmp_path / "deploybot.db"
    before = file_store(db, world)  # the process that crashed: it wrote, nobody told Slack
    d = await create(before)
    await before.transition(d.id, "start", "deploybot", events=[ev.Started()])
    await before.record(d.id, "deploybot", "detail", {"text": "t"}, events=[ev.Detail("Traffic: green 5%")])
    before.close()
    assert world.slack.calls == []

    after = file_store(db, world)
    n = notifier_on(after, world)
    await n.start()  # catch-up at start: no new event is needed to wake it
    await settled(n)
    (top,) = world.top("deploys")
    assert ": running" in top["text"]
    assert [m["text"] for m in world.thread("deploys", top["ts"])] == ["Traffic: green 5%"]
    posts = len(world.calls("chat.postMessage"))
    await n.drain()
    assert await after.delivered(SLACK) == await after.delivered(ALERTING) > 0
    after.close()

    again = file_store(db, world)  # and the next restart repeats nothing
    n2 = notifier_on(again, world)
    await n2.start()
    await settled(n2)
    assert len(world.calls("chat.postMessage")) == posts and len(world.top("deploys")) == 1
    await n2.drain()
    again.close()


async def test_each_consumer_delivers_once_by_its_own_cursor(world, tmp_path):
    db = tmp_path / "deploybot.db"
    store = file_store(db, world)
    d = await create(store)
    await store.transition(d.id, "start", "deploybot", events=[ev.Started()])
    await store.transition(
        d.id, "rollback", "deploybot", outcome="5xx", events=[ev.RollingBack("5xx", automatic=True)]
    )
    last = (await store.outbox_after("nobody"))[-1].id
    await store.mark_delivered(ALERTING, last)  # alerting had delivered it all; slack had not
    n = notifier_on(store, world)
    await n.start()
    await settled(n)
    (top,) = world.top("deploys")
    assert [m["text"] for m in world.thread("deploys", top["ts"])] == ["Rolling back: 5xx"]
    assert world.top("incidents") == [] and await store.open_alerts() == []  # not raised twice: never
    assert (await store.delivered(SLACK), await store.delivered(ALERTING)) == (last, last)

    await store.transition(
        d.id, "fail", "deploybot", outcome="rollback failed", events=[ev.RollbackFailed("ECS said no")]
    )
    await settled(n)  # woken by the store's nudge
    (alert,) = world.top("incidents")  # one alert, raised by the alerting consumer
    assert alert["text"].startswith("CRITICAL · Rollback failed · Deployment #1 · web v2 → production")
    assert len(world.thread("deploys", top["ts"])) == 2
    await n.drain()

    restarted = notifier_on(store, world)
    await restarted.start()
    await settled(restarted)
    assert len(world.top("incidents")) == 1 and len(world.thread("deploys", top["ts"])) == 2
    await restarted.drain()
    store.close()


async def test_alerts_follow_the_event_type_not_its_words(world):
    n = world.notifier()
    quiet = await create(world.store)  # an override whose words say nothing about freezes
    await world.say(quiet, ev.FreezeOverridden("U0ALICE", "", reason="checkout hotfix, ticket 123"))
    await settled(n)
    (alert,) = await world.store.open_alerts(deployment_id=quiet.id)
    assert (alert.event, alert.level) == ("freeze_override", "critical")
    assert "Freeze override by <@U0ALICE>: checkout hotfix, ticket 123" in alert.text

    store = world.store
    await store.transition(quiet.id, "cancel", "U0ALICE", events=[ev.Cancelled("U0ALICE")])
    loud = await store.create_deployment(
        service="api",
        env="production",
        version="v9",
        strategy="canary",
        kind="deploy",
        requested_by="U0BOB",
        reason="freeze overridden last week; this is the normal release",
        plan=PLAN,
        channel="deploys",
        events=[ev.Requested()],
    )
    await store.transition(loud.id, "start", "deploybot", events=[ev.Started()])
    await store.record(loud.id, "deploybot", "detail", events=[ev.Detail("Freeze overridden? no")])
    await store.transition(loud.id, "succeed", "deploybot", events=[ev.Succeeded("v9")])
    await settled(n)
    assert await store.open_alerts(deployment_id=loud.id) == []
    assert len(world.top("incidents")) == 1  # the override's, nothing for the deploy that talks of one


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_a_shutdown_with_slack_unreachable_ends_within_its_bound(world, tmp_path):
    """SIGTERM while Slack is unreachable: the drain gives up after `within` (each deployment's first
    post is retried for about ten seconds: unbounded, a backlog kept a stopped bot up for good), and the
    next start posts each deployment's message as it stands, once."""
    db = tmp_path / "deploybot.db"
    store = file_store(db, world)
    down = add_retry_handlers(AsyncWebClient(token=TOKEN, base_url=f"http://127.0.0.1:{closed_port()}/api/"))
    n = SlackNotifier(
        down, store, AlertConfig(escalate_after_seconds=DELAY), clock=world.clock, post_interval=0.0,
        update_interval=0.0,
    )  # fmt: skip
    await n.start()
    for _ in range(3):
        d = await create(store)
        await store.transition(d.id, "start", "deploybot", events=[ev.Started()])
        await store.transition(d.id, "succeed", "deploybot", events=[ev.Succeeded("v2")])
    async with asyncio.timeout(15):  # the bound is 0.5 s; unbounded, three deployments took ~30 s
        await n.drain(within=0.5)
    assert world.slack.calls == []
    store.close()

    again = file_store(db, world)  # the next start, Slack back
    n2 = notifier_on(again, world)
    await n2.start()
    await settled(n2)
    tops = world.top("deploys")
    assert len(tops) == 3 and all(": succeeded" in m["text"] for m in tops), [m["text"] for m in tops]
    await n2.drain()
    again.close()
