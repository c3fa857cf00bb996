"""Slash commands /deploy, /promote, /rollback: parse, call the engine, ack with the answer.

The ack carries the outcome of creating the deployment (a store write, never an AWS call), so the user
learns at once whether it started or who holds the lock; the deployment itself runs in the background."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp

from bot import commands as cmds
from bot import slack_ui
from bot.engine import Engine, Refused
from bot.machine import IllegalTransition
from bot.store import LockInfo
from bot.strategies import duration

log = logging.getLogger(__name__)
NAMES = ("/deploy", "/promote", "/rollback")


def vocabulary(engine: Engine) -> cmds.Vocabulary:
    s = engine.settings
    return cmds.Vocabulary(tuple(s.services), tuple(s.environments), s.default_environment)


def register(app: AsyncApp, engine: Engine) -> None:
    vocab = vocabulary(engine)

    async def on_command(ack: AsyncAck, command: dict[str, Any]) -> None:
        try:
            text = command.get("text", "").replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            parsed = cmds.parse(command["command"], text, vocab)
        except cmds.CommandError as err:
            await ack(slack_ui.usage_error(err.message, err.usage))
            return
        try:
            answer = await dispatch(engine, parsed, command["user_id"], command.get("trigger_id"))
        except Refused as exc:
            answer = slack_ui.refused(str(exc))
        await ack(answer)

    for name in NAMES:
        app.command(name)(on_command)


async def dispatch(engine: Engine, c: cmds.Command, user: str, request_key: str | None) -> dict[str, Any]:
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
        case cmds.Deploy(emergency=str()) | cmds.Deploy(window=True) | cmds.Deploy(at=str()):
            return slack_ui.refused("--emergency, --window and --at are not available yet.")
        case cmds.Deploy() | cmds.Rollback() | cmds.Promote():
            result = await engine.request(c, user, request_key)
            if isinstance(result, LockInfo):
                return slack_ui.locked(result, result.deployment)
            return slack_ui.requested(result, None)
        case cmds.Status(target=None):
            return slack_ui.deployment_list("Active deployments", *(await store.overview()))
        case cmds.Status(target=str(t)) if t.lstrip("#").isdigit():
            d = await store.find(int(t.lstrip("#")))
            if d is None:
                return slack_ui.refused(f"There is no deployment #{t.lstrip('#')}.")
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
            try:
                d = await engine.promote(deployment_id, user, full)
            except IllegalTransition:
                return slack_ui.ephemeral(slack_ui.stale_click(d))
            return slack_ui.ephemeral(
                f"Promoted {d.ref}" + (" straight to 100%." if full else "; it carries on.")
            )
        case cmds.Lock(service=service, env=env, reason=reason):
            held = await store.lock(service, env, user, reason)
            if held is not None:
                return slack_ui.locked(held, held.deployment)
            return slack_ui.ephemeral(f":lock: Locked {service} in {env}: {reason}")
        case cmds.Unlock(service=service, env=env):
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
