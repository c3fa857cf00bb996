"""Errors -> what the person sees, in one place. Every listener (slash commands, buttons, approval controls)
turns a domain error into its reply here; a bug (anything not listed) is the caller's to log, and the
person gets `SOMETHING_WRONG` (a command) or `DID_NOT_WORK` (a click) instead of a trace."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from bot.domain import commands as cmds
from bot.domain.errors import Conflict, NotFound, Refused
from bot.domain.machine import IllegalTransition
from handlers.ui import blocks as slack_ui

SOMETHING_WRONG = "Something went wrong on our side; it was logged."
DID_NOT_WORK = "That did not work; it was logged. Nothing was changed."
CHANGED_MEANWHILE = "It changed while you asked; nothing was changed. Look again and retry."

Reply = dict[str, Any]
# What a click says when the thing it acted on moved on meanwhile (its deployment's current state).
Stale = Callable[[], Awaitable[str]]


async def reply_for(exc: BaseException, stale: Stale | None = None) -> Reply | None:
    """The reply for a domain error, or None for a bug. With `stale` (a click on a message), a transition
    the deployment has gone past, a lost race or an id naming nothing is answered with what it is now.
    NotFound (an id naming no deployment or alert) is said plainly, never a 500."""
    if isinstance(exc, cmds.CommandError):
        return slack_ui.usage_error(exc.message, exc.usage)
    if isinstance(exc, Refused):  # Forbidden included: the missing role is in its words
        return slack_ui.refused(str(exc))
    if stale is not None and isinstance(exc, IllegalTransition | Conflict | KeyError):
        return slack_ui.ephemeral(await stale())
    if isinstance(exc, IllegalTransition):
        return slack_ui.refused(f"Deployment is already {exc.state.word}; nothing was changed.")
    if isinstance(exc, NotFound):
        return slack_ui.refused(str(exc))
    if isinstance(exc, Conflict):
        return slack_ui.refused(CHANGED_MEANWHILE)
    return None
