"""One top-level Slack message per deployment, even across a crash between Slack's answer to the post and
the store keeping its ts: the attempt is stored first, the post carries message metadata naming the
deployment, and the next notifier finds the message in the channel's history and adopts it instead of
posting a second one. Against the sandbox's LocalSlack through a real slack_sdk client, on a store file."""

from __future__ import annotations

import pytest
from slack_sdk.errors import SlackApiError

from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.domain import events as ev
from bot.domain.model import Deployment
from bot.sandbox.slack import _ApiError
from handlers.notifier import FIRST_POST, SlackNotifier
from tests import test_notifier
from tests.test_notifier import World, settled

world = test_notifier.world  # the fixture: a LocalSlack, a client, a ManualClock (and an unused store)


class Crash(Exception):
    """The process died between Slack's answer and the store write."""


class LosesTheTs(AsyncStore):
    """A store whose set_message fails once, after Slack answered the first post (a store write that
    failed); `dies`: the process died there, so nothing it does after reaches the store."""

    def __init__(self, store: Store, *, dies: bool = False):
        super().__init__(store)
        self.lost, self.dies = 0, dies

    async def set_message(self, deployment_id: int, channel: str, ts: str) -> None:
        if not self.lost:
            self.lost += 1
            raise Crash(f"killed before storing ts {ts}")
        await super().set_message(deployment_id, channel, ts)

    async def call(self, fn, *args, **kwargs):  # type: ignore[no-untyped-def]
        if self.dies and self.lost:
            raise Crash("this process is dead")
        return await super().call(fn, *args, **kwargs)


def notifier_on(store: AsyncStore, w: World) -> SlackNotifier:
    n = SlackNotifier(w.client, store, clock=w.clock, post_interval=0.0, update_interval=0.0)
    w.notifiers.append(n)
    return n


async def create(store: AsyncStore):
    d = await store.create_deployment(
        service="web",
        env="production",
        version="v2",
        strategy="canary",
        kind="deploy",
        requested_by="U0ALICE",
        plan=[{"kind": "analyze", "seconds": 60.0, "label": "canary 5%"}],
        channel="deploys",
        events=[ev.Requested()],
    )
    assert isinstance(d, Deployment)
    return d


def mine(w: World, deployment_id: int) -> list[dict]:
    """The top-level messages of #deploys whose metadata names the deployment."""
    meta = {"event_type": FIRST_POST}
    return [
        m
        for m in w.top("deploys")
        if {k: (m.get("metadata") or {}).get(k) for k in meta} == meta
        and m["metadata"]["event_payload"]["deployment_id"] == deployment_id
    ]


async def test_the_first_post_is_recorded_before_it_goes_and_carries_the_deployment(world, tmp_path):
    store = AsyncStore(Store(str(tmp_path / "d.db"), world.clock))
    n = notifier_on(store, world)
    d = await create(store)
    await settled(n)
    (top,) = world.top("deploys")
    assert mine(world, d.id) == [top]
    assert top["metadata"]["event_payload"] == {"deployment_id": d.id, "created_at": d.created_at}
    assert await store.first_post_attempt(d.id) == world.clock.now()
    assert (await store.get(d.id)).message_ts == top["ts"]
    assert world.calls("conversations.history") == []  # a normal post looks nothing up
    assert await store.unconfirmed_first_posts() == []
    await n.drain()
    store.close()


async def test_a_crash_after_slack_answered_is_adopted_by_the_next_process(world, tmp_path):
    db = str(tmp_path / "d.db")
    crashed = LosesTheTs(Store(db, world.clock), dies=True)
    first = notifier_on(crashed, world)
    d = await create(crashed)
    await settled(first)
    assert crashed.lost == 1
    (posted,) = world.top("deploys")  # Slack has it; the store does not know
    await first.drain()
    crashed.close()
    history = len(world.calls("conversations.history"))  # the dead process looked for nothing

    store = AsyncStore(Store(db, world.clock))  # the restarted bot, on the same database
    assert await store.unconfirmed_first_posts() == [d.id]
    n = notifier_on(store, world)
    await n.start()
    await settled(n)
    assert [m["ts"] for m in world.top("deploys")] == [posted["ts"]]  # no second message
    assert (await store.get(d.id)).message_ts == posted["ts"]
    assert len(world.calls("chat.postMessage", "C0DEPLOYS")) == 1
    assert len(world.calls("conversations.history")) == history + 1
    assert await store.unconfirmed_first_posts() == []

    d = await store.transition(d.id, "start", "deploybot", events=[ev.Started()])
    await settled(n)
    (top,) = world.top("deploys")  # later updates edit the adopted message
    assert top["ts"] == posted["ts"] and top["edited"] and ": running" in top["text"]
    assert world.calls("chat.update", "C0DEPLOYS")
    assert len(world.calls("chat.postMessage", "C0DEPLOYS")) == 1
    await n.drain()
    store.close()


async def test_a_ts_the_store_failed_to_keep_is_adopted_by_the_same_process_at_once(world, tmp_path):
    store = LosesTheTs(Store(str(tmp_path / "d.db"), world.clock))
    n = notifier_on(store, world)
    d = await create(store)
    await settled(n)
    (posted,) = world.top("deploys")
    assert store.lost == 1 and (await store.get(d.id)).message_ts == posted["ts"]  # its retry looked first
    assert len(world.calls("chat.postMessage", "C0DEPLOYS")) == 1
    d = await store.transition(d.id, "start", "deploybot", events=[ev.Started()])
    await store.record(d.id, "deploybot", "detail", {"text": "x"}, events=[ev.Detail("Traffic: green 5%")])
    await settled(n)
    (top,) = world.top("deploys")
    assert top["ts"] == posted["ts"] and ": running" in top["text"]
    assert [m["text"] for m in world.thread("deploys", posted["ts"])] == ["Traffic: green 5%"]
    assert len(mine(world, d.id)) == 1
    await n.drain()
    store.close()


@pytest.mark.parametrize("landed", [True, False], ids=["stored-then-500", "500-before-storing"])
async def test_a_first_post_answered_with_a_500_is_not_posted_twice(world, tmp_path, landed):
    post = world.slack._methods["chat.postMessage"]
    failures = iter([_ApiError("internal_error", status=500)])

    def flaky(args: dict) -> dict:  # Slack stores the message (or not), then answers 500
        err = next(failures, None)
        if err is None:
            return post(args)
        if landed:
            post(args)
        raise err

    world.slack._methods["chat.postMessage"] = flaky
    store = AsyncStore(Store(str(tmp_path / "d.db"), world.clock))
    n = notifier_on(store, world)
    d = await create(store)
    await settled(n)
    (top,) = world.top("deploys")
    assert (await store.get(d.id)).message_ts == top["ts"]
    assert [c["error"] for c in world.calls("chat.postMessage")][0] == "internal_error"
    assert len(world.calls("chat.postMessage")) == (1 if landed else 2)  # looked first, then posted
    assert len(world.calls("conversations.history")) == 1
    await n.drain()
    store.close()


async def test_an_attempt_that_never_reached_slack_is_posted_once(world, tmp_path):
    db = str(tmp_path / "d.db")
    before = AsyncStore(Store(db, world.clock))
    d = await create(before)
    other = await before.create_deployment(
        service="api", env="staging", version="v9", strategy="rolling", kind="deploy", requested_by="U0BOB"
    )
    await before.record_first_post_attempt(d.id, world.clock.now())  # then the process died
    before.close()
    # another deployment's message, and a stranger's message about deployment d.id from another bot
    # (another database: its deployment with that id was created at another instant)
    for payload in ({"deployment_id": other.id}, {"deployment_id": d.id, "created_at": "1999-01-01"}):
        await world.client.chat_postMessage(
            channel="deploys", text="elsewhere", metadata={"event_type": FIRST_POST, "event_payload": payload}
        )
    await world.clock.advance(60.0)

    store = AsyncStore(Store(db, world.clock))
    n = notifier_on(store, world)
    await n.start()
    await settled(n)
    (top,) = [m for m in world.top("deploys") if m["text"] != "elsewhere"]
    assert (await store.get(d.id)).message_ts == top["ts"]
    assert top["metadata"]["event_payload"] == {"deployment_id": d.id, "created_at": d.created_at}
    assert len(world.calls("conversations.history")) == 1
    await n.drain()
    store.close()


async def test_the_message_is_found_past_the_first_page_of_history(world, tmp_path):
    db = str(tmp_path / "d.db")
    crashed = LosesTheTs(Store(db, world.clock), dies=True)
    first = notifier_on(crashed, world)
    d = await create(crashed)
    await settled(first)
    (posted,) = world.top("deploys")
    await first.drain()
    crashed.close()
    history = len(world.calls("conversations.history"))
    for i in range(130):  # a busy channel while the bot was down
        await world.clock.advance(1.0)
        await world.client.chat_postMessage(channel="deploys", text=f"chatter {i}")

    store = AsyncStore(Store(db, world.clock))
    n = notifier_on(store, world)
    await n.start()
    await settled(n)
    assert (await store.get(d.id)).message_ts == posted["ts"]
    assert len(world.calls("conversations.history")) == history + 2  # 100 a page, newest first
    assert len(mine(world, d.id)) == 1 and len(world.top("deploys")) == 131
    await n.drain()
    store.close()


async def test_local_slack_keeps_metadata_and_pages_history_like_slack(world):
    client = world.client
    meta = {"event_type": "thing_happened", "event_payload": {"n": 1, "who": "alice"}}
    posted = await client.chat_postMessage(channel="deploys", text="one", metadata=meta)
    assert posted["message"]["metadata"] == meta
    for text in ("two", "three"):
        await world.clock.advance(1.0)
        await client.chat_postMessage(channel="deploys", text=text)
    with pytest.raises(SlackApiError) as refused:
        await client.chat_postMessage(channel="deploys", text="x", metadata={"event_type": "no_payload"})
    assert refused.value.response["error"] == "invalid_metadata_schema"

    plain = await client.conversations_history(channel="deploys")
    assert [m["text"] for m in plain["messages"]] == ["three", "two", "one"]
    assert all("metadata" not in m for m in plain["messages"])  # only with include_all_metadata

    page = await client.conversations_history(channel="deploys", limit=2, include_all_metadata=True)
    assert [m["text"] for m in page["messages"]] == ["three", "two"] and page["has_more"] is True
    cursor = page["response_metadata"]["next_cursor"]
    rest = await client.conversations_history(
        channel="deploys", limit=2, cursor=cursor, include_all_metadata=True
    )
    assert [m["text"] for m in rest["messages"]] == ["one"] and rest["messages"][0]["metadata"] == meta
    assert rest["has_more"] is False and rest["response_metadata"]["next_cursor"] == ""
