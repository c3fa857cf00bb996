"""The grammar of /deploy, /promote and /rollback, pure (no I/O, no Slack): `parse()` turns the text
Slack sends into a typed Command or raises CommandError; USAGE and help_text() are the words people see.

types (what a command parses to) · lexer (words, quotes, --options) · grammar and grammar_* (the forms)
· words (vocabulary, versions, IDs) · suggestions (reading slips) · messages (shared errors) · usage."""

from bot.domain.commands.grammar import parse, reads_only
from bot.domain.commands.types import (
    COMMANDS,
    DEPLOY_CONNECTORS,
    ENV_CONNECTORS,
    MAX_LENGTH,
    READS,
    SUBCOMMANDS,
    Approve,
    Audit,
    Command,
    CommandError,
    Deploy,
    Freeze,
    Help,
    History,
    Lock,
    Promote,
    PromoteDeployment,
    Reject,
    Rollback,
    Schedule,
    Status,
    Unfreeze,
    Unlock,
    Vocabulary,
    Windows,
)
from bot.domain.commands.usage import USAGE, help_text
from bot.domain.strategies import STRATEGIES, Strategy

__all__ = [
    "COMMANDS",
    "DEPLOY_CONNECTORS",
    "ENV_CONNECTORS",
    "MAX_LENGTH",
    "READS",
    "STRATEGIES",
    "SUBCOMMANDS",
    "USAGE",
    "Approve",
    "Audit",
    "Command",
    "CommandError",
    "Deploy",
    "Freeze",
    "Help",
    "History",
    "Lock",
    "Promote",
    "PromoteDeployment",
    "Reject",
    "Rollback",
    "Schedule",
    "Status",
    "Strategy",
    "Unfreeze",
    "Unlock",
    "Vocabulary",
    "Windows",
    "help_text",
    "parse",
    "reads_only",
]
