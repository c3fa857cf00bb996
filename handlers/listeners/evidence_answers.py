"""A dry run's "what changes", answered after its ack (the compare API and ECR are slow calls): the
commits between the running and the asked version, a downgrade, and a missing image."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncRespond

from bot.app.engine import Engine
from bot.domain import commands as cmds
from handlers.ui import blocks as slack_ui
from handlers.ui.change_blocks import changes_lines

log = logging.getLogger(__name__)


async def changes_answer(engine: Engine, c: cmds.Deploy, respond: AsyncRespond) -> None:
    env = c.env or engine.settings.default_environment or next(iter(engine.settings.environments))
    try:
        changes = await engine.what_changes(c.service, env, c.version)
    except Exception:
        log.exception("what changes for a dry run of %s failed", c.service)
        return
    lines = changes_lines(changes)
    if not lines:
        return
    await respond(slack_ui.ephemeral("\n".join(lines)), replace_original=False)
