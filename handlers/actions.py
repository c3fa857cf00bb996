"""Buttons on a deployment's message: ack at once, apply the action through the engine.

A click on a stale button (the deployment moved on, or someone else clicked first) changes nothing and
answers the clicker alone with the deployment's current state."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond

from bot import slack_ui
from bot.engine import Engine, Refused
from bot.machine import IllegalTransition
from bot.store import Conflict

log = logging.getLogger(__name__)


_background: set[asyncio.Task] = set()  # referenced until done, so the loop cannot drop them


def register(app: AsyncApp, engine: Engine) -> None:
    @app.action(re.compile("^" + re.escape(slack_ui.ACTION_PREFIX)))
    async def on_deployment_action(
        ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond
    ) -> None:
        await ack()  # Slack hears back at once; the state change happens after
        task = asyncio.get_running_loop().create_task(apply(engine, body, action, respond))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def apply(engine: Engine, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond) -> None:
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
    try:
        await engine.act(deployment_id, verb, body["user"]["id"])
    except Refused as exc:
        await respond(slack_ui.refused(str(exc)), replace_original=False)
    except (IllegalTransition, Conflict):
        d = await engine.store.get(deployment_id)
        await respond(slack_ui.ephemeral(slack_ui.stale_click(d)), replace_original=False)
    except Exception:
        log.exception("button %s on deployment #%s failed", verb, deployment_id)
        await respond(
            slack_ui.refused("That did not work; it was logged. Nothing was changed."), replace_original=False
        )
