"""The grammar of /deploy, /promote and /rollback (moved from bot/commands.py; split next)."""

from bot.domain.commands.grammar import *  # noqa: F403
