"""Reasons typed into a modal, for controls that need words: the Reject button opens one asking why (the
same check as /deploy reject: the approve role, a deployment not started yet), and its submission
rejects with that reason. views.open happens while the click's trigger is fresh (3 s), right after the
ack; the rejection itself after the modal's ack."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.engine import Engine
from bot.domain.machine import BEFORE_START, IllegalTransition
from bot.tasks import TaskGroup
from handlers.errors import DID_NOT_WORK, reply_for
from handlers.listeners.actions import NOT_ITS_MESSAGE, from_its_message, now_is
from handlers.roles import roles_in
from handlers.ui import aftercare_blocks as ui
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
_background = TaskGroup("slack-reasons")
REASON_MAX = 500


def register(app: AsyncApp, engine: Engine) -> None:
    @app.action(slack_ui.REJECT)
    async def on_reject(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
        client: AsyncWebClient,
    ) -> None:
        await ack()
        await open_reject(engine, client, body, action, respond, roles_in(context))

    @app.view(ui.REJECT_VIEW)
    async def on_reject_reason(
        ack: AsyncAck, body: dict[str, Any], view: dict[str, Any], context: AsyncBoltContext
    ) -> None:
        values = (view.get("state") or {}).get("values") or {}
        reason = str(
            ((values.get(ui.REASON_BLOCK) or {}).get(ui.REASON_INPUT) or {}).get("value") or ""
        ).strip()
        if not reason or len(reason) > REASON_MAX:
            problem = "Say why you reject it." if not reason else f"At most {REASON_MAX} characters, please."
            await ack(response_action="errors", errors={ui.REASON_BLOCK: problem})
            return
        await ack()
        user, roles = body["user"]["id"], roles_in(context)
        _background.spawn(reject(engine, view, user, roles, reason), "reject-from-modal")


async def open_reject(
    engine: Engine,
    client: AsyncWebClient,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    roles: frozenset[str],
) -> None:
    """The Reject button: the reason's modal, for someone who may reject this deployment now."""
    user = body["user"]["id"]
    try:
        deployment_id = int(action.get("value") or "")
    except ValueError:
        await respond(slack_ui.refused("That control does not name a deployment."), replace_original=False)
        return
    try:
        d = await engine.store.get(deployment_id)
        if not await from_its_message(engine, body, deployment_id, "reject"):
            await respond(slack_ui.refused(NOT_ITS_MESSAGE), replace_original=False)
            return
        await engine.check_access("approve", d.env, user, roles, deployment=d)
        if d.state not in BEFORE_START:
            raise IllegalTransition("reject", d.state)
        await client.views_open(trigger_id=body["trigger_id"], view=ui.reason_modal(d))
    except Exception as exc:
        reply = await reply_for(exc, stale=lambda: now_is(engine, deployment_id))
        if reply is None:
            log.exception("the reject modal of deployment #%s did not open", deployment_id)
            reply = slack_ui.refused(DID_NOT_WORK)
        await respond(reply, replace_original=False)


async def reject(engine: Engine, view: dict[str, Any], user: str, roles: frozenset[str], reason: str) -> None:
    """The modal's reason: rejected as /deploy reject would (its own checks again: time has passed)."""
    try:
        await engine.reject(int(view.get("private_metadata") or ""), user, roles, reason)
    except Exception:
        log.warning("the rejection from modal %s was not applied", view.get("id"), exc_info=True)
