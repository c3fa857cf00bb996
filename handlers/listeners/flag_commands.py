"""/flag: list, show, and change feature flags (on, off, a percentage, a targeting rule, an A/B split, a
gradual rollout, the kill switch). A change is answered in the channel, so the people there see who
changed what; reads are answered to the person alone. The words are built here and in handlers/ui/flags."""

from __future__ import annotations

from typing import Any

from bot.app.flags import FlagAnswer
from bot.domain import commands as cmds
from handlers.ui import blocks as slack_ui
from handlers.ui import flags as flag_ui

Answer = dict[str, Any]


async def flag_list(call: Any) -> Answer:
    c = call.command
    assert isinstance(c, cmds.FlagList)
    return flag_ui.flag_list(c.env, call.engine.flags.rows(c.env))


async def flag_show(call: Any) -> Answer:
    c, engine = call.command, call.engine
    assert isinstance(c, cmds.FlagShow)
    envs = [c.env] if c.env else list(engine.settings.environments)
    answers = []
    for env in envs:
        v = await engine.flags.view(c.key, env)
        answers.append(
            flag_ui.flag_show(
                env,
                v.flag,
                v.record.state,
                v.record.revision,
                v.record.updated_by,
                v.record.updated_at,
                v.changes,
                v.rollout.ref if v.rollout else None,
            )
        )
    if len(answers) == 1:
        return answers[0]
    blocks = [b for a in answers for b in a.get("blocks", [])]
    return slack_ui.ephemeral("\n".join(a["text"] for a in answers), blocks)


async def flag_change(call: Any) -> Answer:
    c = call.command
    assert isinstance(c, cmds.FlagChange)
    answer = await call.engine.flags.change(c, call.user, call.roles, call.request_key)
    return changed(answer, call.user)


def changed(a: FlagAnswer, user: str) -> Answer:
    """The answer to a change: what the flag answers now and before, who did it, what else happened."""
    key, env = slack_ui.text(a.key), slack_ui.text(a.env)
    now, before = slack_ui.text(a.summary, 600), slack_ui.text(a.before, 600)
    notes = "".join(f"\n• {slack_ui.text(n, 300)}" for n in a.notes)
    if a.dry_run:
        return slack_ui.ephemeral(
            f"*Dry run* — `/flag {key}` in {env}: nothing was changed.\nNow: {before}\nWould be: {now}{notes}"
        )
    if a.deployment is not None:
        d = a.deployment
        waits = " It waits for approval on its message." if a.needs_approval else ""
        what = "Rollout" if d.kind == "flag" else "Change"
        return slack_ui.in_channel(
            f":triangular_flag_on_post: <@{user}> asked for {what.lower()} {d.ref} of {key} in {env}: {now}.{waits}"
            f" Follow it on its message in #{slack_ui.text(d.channel or '')}."
        )
    if not a.changed:
        return slack_ui.ephemeral(f"{key} in {env} already answers that: {now}. Nothing was changed.")
    stopped = f" Rollout {a.stopped.ref} was stopped." if a.stopped is not None else ""
    icon = ":octagonal_sign:" if a.summary.startswith("killed") else ":triangular_flag_on_post:"
    return slack_ui.in_channel(
        f"{icon} <@{user}> changed {key} in {env}: {now} (was: {before}).{stopped}{notes}"
    )


FLAG_HANDLERS: dict[type, Any] = {
    cmds.FlagList: flag_list,
    cmds.FlagShow: flag_show,
    cmds.FlagChange: flag_change,
}
