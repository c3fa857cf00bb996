"""Buttons on a deployment's message: ack at once, apply the action through the engine.

A click on a stale button (the deployment moved on, or someone else clicked first) changes nothing and
answers the clicker alone with the deployment's current state."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext

from bot.app.engine import Engine
from bot.tasks import TaskGroup
from handlers.errors import DID_NOT_WORK, reply_for
from handlers.notifier import SlackNotifier
from handlers.roles import roles_in
from handlers.ui import alert_blocks
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)


_background = TaskGroup("slack-actions")


def register(app: AsyncApp, engine: Engine, alerts: SlackNotifier | None = None) -> None:
    @app.action(re.compile("^" + re.escape(slack_ui.ACTION_PREFIX)))
    async def on_deployment_action(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()  # Slack hears back at once; the state change happens after
        _background.spawn(apply(engine, body, action, respond, roles_in(context)), "deployment-action")

    if alerts is not None:

        @app.action(alert_blocks.ACK_ALERT)
        async def on_acknowledge(
            ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
        ) -> None:
            await ack()  # the acknowledgement is recorded after; the alert updates in place
            _background.spawn(acknowledge(alerts, body, action, respond), "acknowledge-alert")


async def apply(
    engine: Engine,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    roles: frozenset[str] | None = None,
) -> None:
    verb = action["action_id"].removeprefix(slack_ui.ACTION_PREFIX)
    try:
        deployment_id = int(action.get("value", ""))
    except ValueError:
        await respond(slack_ui.refused("That button does not name a deployment."), replace_original=False)
        return
    d = await engine.store.find(deployment_id)
    if d is None:
        await respond(slack_ui.refused(f"There is no deployment #{deployment_id}."), replace_original=False)
        return
    if not await from_its_message(engine, body, deployment_id, verb):
        if body.get("response_url"):
            await respond(slack_ui.refused(NOT_ITS_MESSAGE), replace_original=False)
        return
    try:
        user = body["user"]["id"]
        await engine.act(deployment_id, verb, user, roles)
    except Exception as exc:
        reply = await reply_for(exc, stale=lambda: now_is(engine, deployment_id))
        if reply is None:
            log.exception("button %s on deployment #%s failed", verb, deployment_id)
            reply = slack_ui.refused(DID_NOT_WORK)
        await respond(reply, replace_original=False)


async def now_is(engine: Engine, deployment_id: int) -> str:
    """What a click on a deployment that moved on meanwhile is told."""
    d = await engine.store.find(deployment_id)
    return slack_ui.stale_click(d) if d else f"There is no deployment #{deployment_id}."


NOT_ITS_MESSAGE = "That button belongs to another deployment's message; nothing was changed."


async def from_its_message(engine: Engine, body: dict[str, Any], deployment_id: int, what: str) -> bool:
    """Whether a click naming `deployment_id` came from that deployment's own message. Its controls exist
    nowhere else: a click from another message (a button value that names another deployment), from a view
    (the Home tab shows no deployment controls) or from an ephemeral message changes nothing, and the
    attempt is recorded in the named deployment's audit."""
    container = body.get("container") or {}
    ts = container.get("message_ts") or (body.get("message") or {}).get("ts")
    channel = container.get("channel_id") or (body.get("channel") or {}).get("id")
    message_ts = (body.get("message") or {}).get("ts")
    d = await engine.store.get(deployment_id)
    deadline = time.monotonic() + 3.0
    while d.message_ts is None and container.get("type") == "message" and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # its first message is out, its ts not stored yet: a moment's race
        d = await engine.store.get(deployment_id)
    if (
        container.get("type") == "message"
        and ts is not None
        and ts == d.message_ts
        and message_ts in (None, ts)
        and (channel is None or d.channel is None or channel == d.channel)
    ):
        return True
    where = container.get("type") or "unknown"
    await engine.store.record(
        deployment_id,
        (body.get("user") or {}).get("id") or "unknown",
        "refused",
        {
            "action": what,
            "reason": "the control was not on this deployment's message",
            "container": where,
            "message_ts": ts,
            "channel": channel,
        },
    )
    log.warning(
        "refused %s on deployment #%s: the click came from %s %s, not its message %s",
        what,
        deployment_id,
        where,
        ts,
        d.message_ts,
    )
    return False


async def acknowledge(
    alerts: SlackNotifier, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
) -> None:
    """Acknowledge a critical alert: the first click records who and when and stops its escalation; any
    later click (a second one, or someone else's) changes nothing and is told who acknowledged it."""
    user = body["user"]["id"]
    answer = None
    try:
        result = await alerts.acknowledge(int(action.get("value", "")), user)
        if not result.now:
            answer = alert_blocks.already_acknowledged(result.alert, user)
    except (ValueError, KeyError):
        answer = slack_ui.refused(
            f"There is no alert {slack_ui.code(action.get('value', ''), 40)}; nothing was changed."
        )
    except Exception:
        log.exception("acknowledging alert %r failed", action.get("value"))
        answer = slack_ui.refused(DID_NOT_WORK)
    if answer is not None and body.get("response_url"):  # a click on the Home tab has no response_url
        await respond(answer, replace_original=False)
