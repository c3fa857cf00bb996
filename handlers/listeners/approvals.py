"""The checklist and approval controls on a deployment's message: Approve, Reject, the manual items'
checkboxes and Re-check. Ack at once; the engine decides (four eyes, roles, expiry) and the message
is re-rendered from the store. Refusals are answered to the clicker alone."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext

from bot.app.engine import Engine
from bot.tasks import TaskGroup
from handlers.errors import DID_NOT_WORK, reply_for
from handlers.listeners.actions import NOT_ITS_MESSAGE, from_its_message, now_is
from handlers.roles import roles_in
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
_background = TaskGroup("slack-approvals")


def register(app: AsyncApp, engine: Engine) -> None:
    def on(
        action_id: str, work: Callable[[int, str, frozenset[str], dict[str, Any]], Awaitable[Any]]
    ) -> None:
        @app.action(action_id)
        async def handler(
            ack: AsyncAck,
            body: dict[str, Any],
            action: dict[str, Any],
            respond: AsyncRespond,
            context: AsyncBoltContext,
        ) -> None:
            await ack()
            _background.spawn(run(engine, roles_in(context), body, action, respond, work), action_id)

    async def approve(deployment_id: int, user: str, roles: frozenset[str], action: dict) -> None:
        await engine.approve(deployment_id, user, roles)

    async def tick(deployment_id: int, user: str, roles: frozenset[str], action: dict) -> None:
        selected = {o["value"] for o in action.get("selected_options") or []}
        await engine.tick(deployment_id, user, roles, selected)

    async def recheck(deployment_id: int, user: str, roles: frozenset[str], action: dict) -> None:
        await engine.recheck(deployment_id, user)

    on(slack_ui.APPROVE, approve)
    # Reject asks why in a modal (handlers/listeners/reasons.py)
    on(slack_ui.TICK, tick)
    on(slack_ui.RECHECK, recheck)


async def run(
    engine: Engine,
    roles: frozenset[str],
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    work: Callable[[int, str, frozenset[str], dict[str, Any]], Awaitable[Any]],
) -> None:
    """An approval control's work, after the ack: every answer goes through handlers.errors."""
    user = body["user"]["id"]
    try:
        deployment_id = int(action.get("value") or action.get("block_id", "").rsplit("-", 1)[-1])
    except ValueError:
        await respond(slack_ui.refused("That control does not name a deployment."), replace_original=False)
        return
    if await engine.store.find(deployment_id) is not None and not await from_its_message(
        engine, body, deployment_id, action.get("action_id", "").rsplit(":", 1)[-1]
    ):
        if body.get("response_url"):
            await respond(slack_ui.refused(NOT_ITS_MESSAGE), replace_original=False)
        return
    try:
        await work(deployment_id, user, roles, action)
    except Exception as exc:
        reply = await reply_for(exc, stale=lambda: now_is(engine, deployment_id))
        if reply is None:
            log.exception("%s on deployment #%s failed", action.get("action_id"), deployment_id)
            reply = slack_ui.refused(DID_NOT_WORK)
        await respond(reply, replace_original=False)
