"""A critical alert raised but never shown — the bot, or the replica delivering the outbox, killed
between raising it in the store and posting it — is posted by the next notifier to start; one posted
whose message was not recorded is found in Slack by its block id and adopted, never posted twice."""

from __future__ import annotations

from tests import test_notifier
from tests.test_notifier import World, rolled_back_alert, settled

world = test_notifier.world  # the notifier tests' fixture: a local Slack, a store, a manual clock


async def test_an_alert_raised_but_never_posted_is_posted_once_by_the_next_notifier(world: World):
    n = world.notifier()
    d, _alert = await rolled_back_alert(world, n)
    await settled(n)
    before = len(world.top("incidents"))
    # raised in the store, and then the process died: no message
    a = await world.store.raise_alert(
        d.id, "rollback", "critical", "web v3 failed", raised_ts=world.clock.now()
    )
    assert a is not None
    again = world.notifier()
    await again.start()
    await settled(again)
    shown = [
        m
        for m in world.top("incidents")
        if any(b.get("block_id") == f"alert-{a.id}" for b in m["blocks"] or [])
    ]
    assert len(shown) == 1 and len(world.top("incidents")) == before + 1
    assert (await world.store.alert(a.id)).messages
    third = world.notifier()
    await third.start()
    await settled(third)
    assert len(world.top("incidents")) == before + 1  # recorded now: not again


async def test_an_alert_posted_but_not_recorded_is_adopted_not_posted_again(world: World):
    n = world.notifier()
    d, alert = await rolled_back_alert(world, n)
    await settled(n)
    (a,) = await world.store.open_alerts(deployment_id=d.id)
    posted = len(world.top("incidents"))
    world.store.sync.db.execute("UPDATE alerts SET messages = '[]' WHERE id = ?", [a.id])  # died before
    again = world.notifier()
    await again.start()
    await settled(again)
    assert len(world.top("incidents")) == posted
    recorded = (await world.store.alert(a.id)).messages
    assert {"channel": alert["channel"], "ts": alert["ts"]}.items() <= recorded[0].items()
