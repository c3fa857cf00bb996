"""Slash commands /deploy, /promote, /rollback: parse, call the engine, ack with the answer.

The ack carries the outcome of creating the deployment (a store write, never an AWS call), so the user
learns at once whether it started or who holds the lock; the deployment itself runs in the background."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.app.access import ACTION_WORDS
from bot.app.engine import Engine
from bot.app.report import delivery_report_of
from bot.app.storage import Storage
from bot.domain import commands as cmds
from bot.domain.durations import duration
from bot.domain.errors import Forbidden
from bot.domain.machine import IllegalTransition
from bot.domain.model import Amendment as Amended
from bot.domain.model import LockInfo
from bot.domain.mrkdwn import code
from bot.tasks import TaskGroup
from handlers.directory import SlackDirectory
from handlers.errors import SOMETHING_WRONG, reply_for
from handlers.listeners.aftercare import AFTERCARE_HANDLERS
from handlers.listeners.evidence_answers import changes_answer
from handlers.listeners.flag_commands import FLAG_HANDLERS
from handlers.roles import roles_in
from handlers.ui import aftercare_blocks, audit_blocks, pipeline_blocks, report_text
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)
NAMES = ("/deploy", "/promote", "/rollback", "/flag")


def vocabulary(engine: Engine) -> cmds.Vocabulary:
    """The words the commands know, from the config: services, environments, flags (with their variants)
    and segments."""
    s = engine.settings
    return cmds.Vocabulary(
        tuple(s.services),
        tuple(s.environments),
        s.default_environment,
        flags={key: tuple(flag.variants) for key, flag in s.flags.items()},
        segments=tuple(s.segments),
    )


def register(app: AsyncApp, engine: Engine, directory: SlackDirectory) -> None:
    vocab = vocabulary(engine)

    async def on_command(
        ack: AsyncAck,
        command: dict[str, Any],
        client: AsyncWebClient,
        respond: AsyncRespond,
        context: AsyncBoltContext,
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
        if isinstance(parsed, cmds.Help) and command["command"] == "/flag":
            await ack(slack_ui.ephemeral(cmds.help_text("/flag")))
            return
        try:
            answer = await dispatch(engine, parsed, user, command.get("trigger_id"), roles_in(context))
        except Exception as exc:
            if isinstance(exc, Forbidden) and exc.env == "production":
                warn_later(
                    client,
                    engine,
                    f":warning: <@{user}> tried to {ACTION_WORDS.get(exc.action, exc.action)}"
                    f" in {exc.env} without the role: {slack_ui.code(command['command'] + ' ' + text)}",
                    directory,
                )
            reply = await reply_for(exc)
            if reply is None:  # a bug: logged with its trace, and the person still gets an answer, not a 500
                log.exception("%s %r failed", command["command"], type(parsed).__name__)
                reply = slack_ui.refused(SOMETHING_WRONG)
            answer = reply
        await ack(answer)
        if isinstance(parsed, cmds.Windows):  # slow (14 days of CloudWatch): answered after the ack
            later(windows_answer(engine, parsed, respond))
        if isinstance(parsed, cmds.Deploy) and parsed.dry_run and parsed.pipeline is None:
            later(changes_answer(engine, parsed, respond))  # the compare API and ECR: after the ack

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


def warn_later(client: AsyncWebClient, engine: Engine, text: str, directory: SlackDirectory) -> None:
    """A warning to the warning channels, after the ack (never before it); channel names resolved through
    the bot's one Slack directory."""

    async def post() -> None:
        for name in engine.settings.alerts.warning:
            try:
                await client.chat_postMessage(channel=await directory.channel_id(name), text=text)
            except LookupError as exc:
                log.warning("could not post a warning: %s", exc)
            except Exception:
                log.exception("could not post a warning")

    _background.spawn(post(), "warning")


@dataclass(frozen=True)
class Call:
    """One command to answer: who asks, with which roles, under which Slack request."""

    engine: Engine
    command: cmds.Command
    user: str
    request_key: str | None
    roles: frozenset[str]

    @property
    def store(self) -> Storage:
        return self.engine.store


Answer = dict[str, Any]
Handler = Callable[[Any], Awaitable[Answer]]  # each takes the Call of its own command type


async def dispatch(
    engine: Engine, c: cmds.Command, user: str, request_key: str | None, roles: frozenset[str] = frozenset()
) -> Answer:
    handler = HANDLERS.get(type(c))
    if handler is None:
        return slack_ui.refused(f"`{type(c).__name__.lower()}` is not available yet.")
    return await handler(Call(engine, c, user, request_key, roles))


async def _help(call: Call) -> Answer:
    return slack_ui.ephemeral(cmds.help_text("/deploy"))


async def _deploy(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Deploy)
    if c.pipeline is not None:
        return await _pipeline(call, c)
    if not c.dry_run:
        return await _request(call)
    p = call.engine.dry_run(c)
    steps = [s.describe() for s in p.steps]
    steps += aftercare_blocks.after_success(call.engine.settings.target(p.service, p.env).env)
    return slack_ui.dry_run(p.service, p.env, p.version, p.strategy, steps, duration(p.eta_seconds))


async def _pipeline(call: Call, c: cmds.Deploy) -> Answer:
    """/deploy SERVICE VERSION --pipeline [NAME]: the pipeline and its first deployment (or who holds
    the lock: the pipeline has stopped already)."""
    started = await call.engine.pipelines.request(c, call.user, call.request_key, call.roles)
    first = started.first
    if isinstance(first, LockInfo):
        return slack_ui.locked(first, first.deployment)
    return pipeline_blocks.requested(started.pipeline, first)


async def _request(call: Call) -> Answer:
    """/deploy, /rollback, /promote: the store's one decision (created, amended, or who holds the lock)."""
    c, user = call.command, call.user
    assert isinstance(c, cmds.Deploy | cmds.Rollback | cmds.Promote)
    result = await call.engine.request(c, user, call.request_key, call.roles)
    if isinstance(result, LockInfo):
        if result.deployment is not None and result.deployment.requested_by == user:
            return slack_ui.own_lock(result.deployment, getattr(c, "version", None))
        return slack_ui.locked(result, result.deployment)
    if isinstance(result, Amended):
        return _amended(result)
    return slack_ui.requested(result, None)


def _amended(result: Amended) -> Answer:
    if not result.changed:
        return slack_ui.already_requested(result.deployment)
    d = result.deployment
    was = [result.from_version or "(current version)"] if result.from_version != d.version else []
    was += [f"with {result.from_strategy}"] if result.from_strategy != d.strategy else []
    return slack_ui.amended(d, was=" ".join(was))


async def _status(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Status)
    t = c.target
    if t is None:
        deployments, locks = await call.store.overview()
        answer = slack_ui.deployment_list("Active deployments", deployments, locks)
        pipelines = await call.store.running_pipelines()
        if not pipelines:
            return answer
        lines = pipeline_blocks.pipeline_lines(pipelines, {d.id: d for d in deployments})
        more = slack_ui.clip("*Running pipelines*\n" + "\n".join(lines))
        return slack_ui.ephemeral(
            f"{answer['text']}\n{more}", [*answer.get("blocks", []), slack_ui.section(more)]
        )
    if t.lstrip("#").isdigit():
        d = await call.store.find(int(t.lstrip("#")))
        if d is None:
            return slack_ui.refused(f"There is no deployment #{int(t.lstrip('#'))}.")
        return slack_ui.deployment_list(f"Deployment {d.ref}", [d])
    return slack_ui.deployment_list(f"Latest deployments of {t}", await call.store.latest(t, 5))


async def _history(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.History)
    where = f" in {c.env}" if c.env else ""
    found = await call.store.history(c.service, c.env)
    after = call.engine.aftercare
    sums = await after.summaries([d.id for d in found]) if after is not None and found else {}
    marks = {i: aftercare_blocks.summary(*s) for i, s in sums.items()}
    return slack_ui.deployment_list(f"History of {c.service}{where}", found, suffixes=marks)


async def _promote_deployment(call: Call) -> Answer:
    c, engine = call.command, call.engine
    assert isinstance(c, cmds.PromoteDeployment)
    d = await call.store.find(c.deployment_id)
    if d is None:
        return slack_ui.refused(f"There is no deployment #{c.deployment_id}.")
    await engine.check_access("promote", d.env, call.user, call.roles, deployment=d)
    try:
        d = await engine.promote(c.deployment_id, call.user, c.full)
    except IllegalTransition:
        return slack_ui.ephemeral(slack_ui.stale_click(d))
    return slack_ui.ephemeral(f"Promoted {d.ref}" + (" straight to 100%." if c.full else "; it carries on."))


async def _approve(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Approve)
    d = await call.engine.approve(c.deployment_id, call.user, call.roles)
    waiting = d.context.get("gate", {}).get("waiting_for")
    still = f" It still waits for {waiting}." if d.state.value == "awaiting_approval" and waiting else ""
    return slack_ui.ephemeral(f"You approved {d.ref}.{still}")


async def _reject(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Reject)
    d = await call.engine.reject(c.deployment_id, call.user, call.roles, c.reason)
    return slack_ui.ephemeral(f"You rejected {d.ref}; it is cancelled.")


async def _restore(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Restore)
    r = await call.engine.restore(c.deployment_id, call.user, call.roles, c.reason)
    return slack_ui.in_channel(
        f":rotating_light: <@{call.user}> is restoring snapshot {code(r.snapshot)} of #{r.deployment_id} to a "
        f"new database instance {code(r.instance)}: {slack_ui.text(c.reason, 300)}. The old instance is "
        f"untouched. How it went, and how to cut over, follows in #{r.deployment_id}'s thread."
    )


async def _audit(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Audit)
    d = await call.store.find(c.deployment_id)
    if d is None:
        return slack_ui.refused(f"There is no deployment #{c.deployment_id}.")
    return audit_blocks.audit(d, await call.store.events(c.deployment_id))


async def _schedule(call: Call) -> Answer:
    return slack_ui.schedule_list(await call.store.scheduled())


async def _freeze(call: Call) -> Answer:
    c, engine, user = call.command, call.engine, call.user
    assert isinstance(c, cmds.Freeze)
    await engine.check_access("freeze", c.env, user, call.roles)
    freeze = await engine.freeze(c.env, c.until, c.reason, user)
    return slack_ui.in_channel(f":snowflake: <@{user}> froze {c.env}: {freeze.describe()}")


async def _unfreeze(call: Call) -> Answer:
    c, engine, user = call.command, call.engine, call.user
    assert isinstance(c, cmds.Unfreeze)
    await engine.check_access("freeze", c.env, user, call.roles)
    lifted, remaining = await engine.unfreeze(c.env, user)
    text = f":sunny: <@{user}> lifted {lifted} freeze{'s' if lifted != 1 else ''} of {c.env}."
    if remaining:
        text += f" Still in force (from the config file): {remaining}."
    return slack_ui.in_channel(text)


async def _windows(call: Call) -> Answer:
    return slack_ui.ephemeral("Reading 14 days of traffic from CloudWatch…")  # the report follows the ack


async def _lock(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Lock)
    held = await call.engine.lock(c.service, c.env, call.user, call.roles, c.reason)
    if held is not None:
        return slack_ui.locked(held, held.deployment)
    return slack_ui.ephemeral(f":lock: Locked {c.service} in {c.env}: {slack_ui.text(c.reason)}")


async def _unlock(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Unlock)
    service, env = c.service, c.env
    outcome = await call.engine.unlock(service, env, call.user, call.roles)
    if outcome.removed is not None:
        return slack_ui.ephemeral(f":unlock: Unlocked {service} in {env}.")
    held = outcome.held_by
    if held is not None:
        return slack_ui.refused(
            f"{service} in {env} is held by deployment #{held.deployment_id}; "
            "it is released when that deployment finishes."
        )
    return slack_ui.ephemeral(f"{service} in {env} was not locked.")


async def _report(call: Call) -> Answer:
    c = call.command
    assert isinstance(c, cmds.Report)
    report = await delivery_report_of(call.store, call.engine.clock.now(), c.service, c.env)
    return report_text.slack_answer(report)


# One handler per command type: where each slash command is answered.
HANDLERS: dict[type[cmds.Command], Handler] = {
    cmds.Help: _help,
    cmds.Deploy: _deploy,
    cmds.Rollback: _request,
    cmds.Promote: _request,
    cmds.Status: _status,
    cmds.History: _history,
    cmds.PromoteDeployment: _promote_deployment,
    cmds.Approve: _approve,
    cmds.Reject: _reject,
    cmds.Restore: _restore,
    cmds.Audit: _audit,
    cmds.Schedule: _schedule,
    cmds.Freeze: _freeze,
    cmds.Unfreeze: _unfreeze,
    cmds.Windows: _windows,
    cmds.Lock: _lock,
    cmds.Unlock: _unlock,
    cmds.Report: _report,
    **FLAG_HANDLERS,
    **AFTERCARE_HANDLERS,
}
