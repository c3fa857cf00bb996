"""Slash commands /deploy, /promote, /rollback: parse, call the engine, ack with the answer.

The ack carries the outcome of creating the deployment (a store write, never an AWS call), so the user
learns at once whether it started or who holds the lock; the deployment itself runs in the background."""

from __future__ import annotations

import logging
from collections.abc import Coroutine
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.access import ACTION_WORDS
from bot.app.engine import Engine
from bot.domain import commands as cmds
from bot.domain.durations import duration
from bot.domain.errors import Forbidden
from bot.domain.machine import IllegalTransition
from bot.domain.model import Amendment as Amended
from bot.domain.model import LockInfo
from bot.tasks import TaskGroup
from handlers.errors import SOMETHING_WRONG, reply_for
from handlers.roles import RoleResolver
from handlers.ui import audit_blocks
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
NAMES = ("/deploy", "/promote", "/rollback")


def vocabulary(engine: Engine) -> cmds.Vocabulary:
    s = engine.settings
    return cmds.Vocabulary(tuple(s.services), tuple(s.environments), s.default_environment)


def register(app: AsyncApp, engine: Engine, resolver: RoleResolver) -> None:
    vocab = vocabulary(engine)

    async def on_command(
        ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond
    ) -> None:
        try:
            # Slack escapes & < > in the text; the parser reads what was typed (--reason "a<b"). Whatever
            # of it goes back into a message passes through slack_ui.text/code again.
            text = command.get("text", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            parsed = cmds.parse(command["command"], text, vocab)
        except cmds.CommandError as err:
            await ack(await reply_for(err) or slack_ui.refused(SOMETHING_WRONG))
            return
        user = command["user_id"]
        try:
            roles = await resolver.roles_of(user)
            answer = await dispatch(engine, parsed, user, command.get("trigger_id"), roles)
        except Exception as exc:
            if isinstance(exc, Forbidden) and exc.env == "production":
                warn_later(
                    client,
                    engine,
                    f":warning: <@{user}> tried to {ACTION_WORDS.get(exc.action, exc.action)}"
                    f" in {exc.env} without the role: {slack_ui.code(command['command'] + ' ' + text)}",
                )
            reply = await reply_for(exc)
            if reply is None:  # a bug: logged with its trace, and the person still gets an answer, not a 500
                log.exception("%s %r failed", command["command"], type(parsed).__name__)
                reply = slack_ui.refused(SOMETHING_WRONG)
            answer = reply
        await ack(answer)
        if isinstance(parsed, cmds.Windows):  # slow (14 days of CloudWatch): answered after the ack
            later(windows_answer(engine, parsed, respond))

    for name in NAMES:
        app.command(name)(on_command)


_background = TaskGroup("slack-commands")


def later(coro: Coroutine[Any, Any, None]) -> None:
    _background.spawn(coro, "command-answer")


async def windows_answer(engine: Engine, c: cmds.Windows, respond: AsyncRespond) -> None:
    env = c.env or engine.settings.default_environment or next(iter(engine.settings.environments))
    try:
        text = await engine.windows_report(c.service, env)
    except Exception as exc:
        log.exception("windows report failed")
        text = f"Could not read the traffic data: {type(exc).__name__}: {exc}"[:500]
    await respond(slack_ui.ephemeral(text), replace_original=False)


_channel_ids: dict[str, str] = {}


def warn_later(client: AsyncWebClient, engine: Engine, text: str) -> None:
    """A warning to the warning channels, after the ack (never before it)."""

    async def post() -> None:
        try:
            for name in engine.settings.alerts.warning:
                if name not in _channel_ids:
                    page = await client.conversations_list(limit=1000, types="public_channel,private_channel")
                    channels: list[dict[str, Any]] = page.get("channels") or []
                    _channel_ids.update({c["name"]: c["id"] for c in channels})
                if name in _channel_ids:
                    await client.chat_postMessage(channel=_channel_ids[name], text=text)
        except Exception:
            log.exception("could not post a warning")

    _background.spawn(post(), "warning")


async def dispatch(
    engine: Engine, c: cmds.Command, user: str, request_key: str | None, roles: frozenset[str] = frozenset()
) -> dict[str, Any]:
    store = engine.store
    match c:
        case cmds.Help():
            return slack_ui.ephemeral(cmds.help_text("/deploy"))
        case cmds.Deploy(dry_run=True):
            p = engine.dry_run(c)
            return slack_ui.dry_run(
                p.service,
                p.env,
                p.version,
                p.strategy,
                [s.describe() for s in p.steps],
                duration(p.eta_seconds),
            )
        case cmds.Deploy() | cmds.Rollback() | cmds.Promote():
            result = await engine.request(c, user, request_key, roles)
            if isinstance(result, LockInfo):
                if result.deployment is not None and result.deployment.requested_by == user:
                    return slack_ui.own_lock(result.deployment, getattr(c, "version", None))
                return slack_ui.locked(result, result.deployment)
            if isinstance(result, Amended):
                if not result.changed:
                    return slack_ui.already_requested(result.deployment)
                d = result.deployment
                was = [result.from_version or "(current version)"] if result.from_version != d.version else []
                was += [f"with {result.from_strategy}"] if result.from_strategy != d.strategy else []
                return slack_ui.amended(d, was=" ".join(was))
            return slack_ui.requested(result, None)
        case cmds.Status(target=None):
            return slack_ui.deployment_list("Active deployments", *(await store.overview()))
        case cmds.Status(target=str(t)) if t.lstrip("#").isdigit():
            d = await store.find(int(t.lstrip("#")))
            if d is None:
                return slack_ui.refused(f"There is no deployment #{int(t.lstrip('#'))}.")
            return slack_ui.deployment_list(f"Deployment {d.ref}", [d])
        case cmds.Status(target=str(t)):
            return slack_ui.deployment_list(f"Latest deployments of {t}", await store.latest(t, 5))
        case cmds.History(service=service, env=env):
            where = f" in {env}" if env else ""
            return slack_ui.deployment_list(f"History of {service}{where}", await store.history(service, env))
        case cmds.PromoteDeployment(deployment_id=deployment_id, full=full):
            d = await store.find(deployment_id)
            if d is None:
                return slack_ui.refused(f"There is no deployment #{deployment_id}.")
            await engine.check_access("promote", d.env, user, roles, deployment=d)
            try:
                d = await engine.promote(deployment_id, user, full)
            except IllegalTransition:
                return slack_ui.ephemeral(slack_ui.stale_click(d))
            return slack_ui.ephemeral(
                f"Promoted {d.ref}" + (" straight to 100%." if full else "; it carries on.")
            )
        case cmds.Approve(deployment_id=deployment_id):
            d = await engine.approve(deployment_id, user, roles)
            return slack_ui.ephemeral(
                f"You approved {d.ref}."
                + (
                    f" It still waits for {d.context['gate']['waiting_for']}."
                    if d.state.value == "awaiting_approval" and d.context.get("gate", {}).get("waiting_for")
                    else ""
                )
            )
        case cmds.Reject(deployment_id=deployment_id, reason=reason):
            d = await engine.reject(deployment_id, user, roles, reason)
            return slack_ui.ephemeral(f"You rejected {d.ref}; it is cancelled.")
        case cmds.Audit(deployment_id=deployment_id):
            d = await store.find(deployment_id)
            if d is None:
                return slack_ui.refused(f"There is no deployment #{deployment_id}.")
            return audit_blocks.audit(d, await store.events(deployment_id))
        case cmds.Schedule():
            return slack_ui.schedule_list(await store.scheduled())
        case cmds.Freeze(env=env, until=until, reason=reason):
            await engine.check_access("freeze", env, user, roles)
            freeze = await engine.freeze(env, until, reason, user)
            return slack_ui.in_channel(f":snowflake: <@{user}> froze {env}: {freeze.describe()}")
        case cmds.Unfreeze(env=env):
            await engine.check_access("freeze", env, user, roles)
            lifted, remaining = await engine.unfreeze(env, user)
            text = f":sunny: <@{user}> lifted {lifted} freeze{'s' if lifted != 1 else ''} of {env}."
            if remaining:
                text += f" Still in force (from the config file): {remaining}."
            return slack_ui.in_channel(text)
        case cmds.Windows():
            return slack_ui.ephemeral("Reading 14 days of traffic from CloudWatch…")
        case cmds.Lock(service=service, env=env, reason=reason):
            await engine.check_access("lock", env, user, roles, service=service)
            held = await store.lock(service, env, user, reason)
            if held is not None:
                return slack_ui.locked(held, held.deployment)
            return slack_ui.ephemeral(f":lock: Locked {service} in {env}: {slack_ui.text(reason)}")
        case cmds.Unlock(service=service, env=env):
            await engine.check_access("lock", env, user, roles, service=service)
            removed = await store.unlock(service, env, user)
            if removed is None:
                held = await store.lock_info(service, env)
                if held is not None:
                    return slack_ui.refused(
                        f"{service} in {env} is held by deployment #{held.deployment_id}; "
                        "it is released when that deployment finishes."
                    )
                return slack_ui.ephemeral(f"{service} in {env} was not locked.")
            return slack_ui.ephemeral(f":unlock: Unlocked {service} in {env}.")
        case _:
            return slack_ui.refused(f"`{type(c).__name__.lower()}` is not available yet.")
