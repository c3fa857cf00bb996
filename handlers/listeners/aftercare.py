"""What follows a success, from Slack: the "How did it go?" buttons (only the requester answers; Had
issues opens a modal for a note — views.open while the click's trigger is fresh), the modal's
submission, the Roll back now button of a regression alert (/rollback's own path and role), and
`/deploy note ID TEXT`. Ack first; the store is written after. A double click or a retry records
nothing twice (the first answer wins; a modal's note is kept once per view)."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.engine import Engine
from bot.domain import commands as cmds
from bot.domain.errors import NotFound, Refused
from bot.domain.model import LockInfo
from bot.domain.verification import NOTE_MAX
from bot.tasks import TaskGroup
from handlers.errors import DID_NOT_WORK, reply_for
from handlers.roles import roles_in
from handlers.ui import aftercare_blocks as ui
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
_background = TaskGroup("slack-aftercare")


def register(app: AsyncApp, engine: Engine) -> None:
    if engine.aftercare is None:
        return

    @app.action(ui.SMOOTH)
    @app.action(ui.HAD_ISSUES)
    async def on_feedback(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        client: AsyncWebClient,
    ) -> None:
        await ack()
        answer = "smooth" if action["action_id"] == ui.SMOOTH else "had_issues"
        if answer == "had_issues":
            await open_note(engine, client, body, action)  # within the trigger's 3 seconds
        _background.spawn(feedback(engine, body, action, respond, answer), "feedback")

    @app.action(ui.ROLLBACK_NOW)
    async def on_rollback_now(
        ack: AsyncAck,
        body: dict[str, Any],
        action: dict[str, Any],
        respond: AsyncRespond,
        context: AsyncBoltContext,
    ) -> None:
        await ack()
        _background.spawn(rollback_now(engine, body, action, respond, roles_in(context)), "rollback-now")

    @app.view(ui.NOTE_VIEW)
    async def on_note(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        values = (view.get("state") or {}).get("values") or {}
        words = str(((values.get(ui.NOTE_BLOCK) or {}).get(ui.NOTE_INPUT) or {}).get("value") or "").strip()
        problem = "Write what happened." if not words else None
        if len(words) > NOTE_MAX:
            problem = f"At most {NOTE_MAX} characters, please."
        if problem is not None:
            await ack(response_action="errors", errors={ui.NOTE_BLOCK: problem})
            return
        await ack()  # the modal closes; the note follows in the deployment's thread
        user = body["user"]["id"]
        _background.spawn(note_from_modal(engine, view, user, words), "note-from-modal")


def _deployment_id(action: dict[str, Any]) -> int | None:
    try:
        return int(action.get("value", ""))
    except ValueError:
        return None


async def open_note(
    engine: Engine, client: AsyncWebClient, body: dict[str, Any], action: dict[str, Any]
) -> None:
    """The Had issues modal, for the requester only (anyone else is told so by `feedback`)."""
    deployment_id = _deployment_id(action)
    d = await engine.store.find(deployment_id) if deployment_id is not None else None
    if d is None or d.requested_by != body["user"]["id"] or not body.get("trigger_id"):
        return
    try:
        await client.views_open(trigger_id=body["trigger_id"], view=ui.note_modal(d))
    except Exception:
        log.exception("the note modal of deployment #%s did not open", d.id)


async def feedback(
    engine: Engine, body: dict[str, Any], action: dict[str, Any], respond: AsyncRespond, answer: str
) -> None:
    assert engine.aftercare is not None
    deployment_id = _deployment_id(action)
    user = body["user"]["id"]
    try:
        if deployment_id is None:
            raise Refused("That button does not name a deployment.")
        won, record = await engine.aftercare.answer(deployment_id, user, answer)
        if won:
            reply = ui.answered(await engine.store.get(deployment_id), user, answer)
        else:
            reply = ui.already_answered(record.feedback_by, record.feedback)
    except Exception as exc:
        reply = await reply_for(exc) or _bug(f"feedback on deployment {deployment_id!r}")
    if body.get("response_url"):
        await respond(reply, replace_original=bool(reply.get("replace_original")))


async def note_from_modal(engine: Engine, view: dict[str, Any], user: str, words: str) -> None:
    assert engine.aftercare is not None
    try:
        deployment_id = int(view.get("private_metadata") or "")
        await engine.aftercare.note(deployment_id, user, words, key=f"view:{view.get('id')}")
    except Exception:
        log.exception("the note from modal %s was not recorded", view.get("id"))


async def rollback_now(
    engine: Engine,
    body: dict[str, Any],
    action: dict[str, Any],
    respond: AsyncRespond,
    roles: frozenset[str] | None,
) -> None:
    """Roll back now: only from the deployment's own regression alert, and only for someone who may
    /rollback there (the same access check, guards and freezes); a second click finds the same rollback."""
    assert engine.aftercare is not None
    deployment_id = _deployment_id(action)
    user = body["user"]["id"]
    try:
        if deployment_id is None or not await _from_its_alert(engine, body, deployment_id):
            raise Refused("That button is not on this deployment's regression alert; nothing was changed.")
        result = await engine.aftercare.rollback_now(deployment_id, user, roles or frozenset())
        if isinstance(result, LockInfo):
            reply = slack_ui.locked(result, result.deployment)
        else:
            reply = ui.rolling_back(result)
    except Exception as exc:
        reply = await reply_for(exc) or _bug(f"Roll back now on deployment {deployment_id!r}")
    if body.get("response_url"):
        await respond(reply, replace_original=False)


def _bug(what: str) -> dict[str, Any]:
    log.exception("%s failed", what)
    return slack_ui.refused(DID_NOT_WORK)


async def _from_its_alert(engine: Engine, body: dict[str, Any], deployment_id: int) -> bool:
    container = body.get("container") or {}
    where = {"channel": container.get("channel_id"), "ts": container.get("message_ts")}
    for a in await engine.store.open_alerts(deployment_id=deployment_id):
        if a.event == ui.REGRESSION_ALERT and any(
            m.get("channel") == where["channel"] and m.get("ts") == where["ts"] for m in a.messages
        ):
            return True
    await engine.store.record(
        deployment_id,
        body["user"]["id"],
        "refused",
        {"action": "rollback_now", "reason": "the button was not on this deployment's regression alert"},
    )
    return False


# ----------------------------------------------------------------------------------- /deploy note


async def note_command(call: Any) -> dict[str, Any]:
    """/deploy note ID TEXT: anyone may note anything on any deployment (it documents, changes nothing)."""
    c = call.command
    assert isinstance(c, cmds.Note)
    engine: Engine = call.engine
    if engine.aftercare is None:
        return slack_ui.refused("Notes are not available here.")
    try:
        await engine.aftercare.note(c.deployment_id, call.user, c.text, key=call.request_key)
    except NotFound:
        return slack_ui.refused(f"There is no deployment #{c.deployment_id}; nothing was noted.")
    return ui.noted(await engine.store.get(c.deployment_id))


AFTERCARE_HANDLERS: dict[type, Any] = {cmds.Note: note_command}
