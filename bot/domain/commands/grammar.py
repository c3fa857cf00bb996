"""parse(): the text Slack sends to a typed Command, or a CommandError that quotes the offending word and
suggests a fix. It picks the form; the forms' parsers live beside it (grammar_deploy, grammar_subcommands,
grammar_promote, grammar_rollback, grammar_flag)."""

from __future__ import annotations

from bot.domain.commands.grammar_deploy import parse_deploy
from bot.domain.commands.grammar_flag import parse_flag
from bot.domain.commands.grammar_promote import parse_promote
from bot.domain.commands.grammar_rollback import parse_rollback
from bot.domain.commands.grammar_subcommands import SUBCOMMAND_PARSERS
from bot.domain.commands.lexer import tokenize
from bot.domain.commands.types import (
    FLAG_ACTIONS,
    MAX_LENGTH,
    READS,
    SUBCOMMANDS,
    Command,
    CommandError,
    Help,
    Vocabulary,
)
from bot.domain.commands.usage import command_name, line
from bot.domain.commands.words import lookup

_KEYS = {"/deploy": "deploy", "/promote": "promote", "/rollback": "rollback", "/flag": "flag"}


def parse(command: str, text: str, vocab: Vocabulary) -> Command:
    """Parse the text of a slash command. Raises CommandError for anything that is not a valid command."""
    name = command_name(command)
    text = text or ""
    key = _KEYS[name]
    if len(text) > MAX_LENGTH:
        raise CommandError(
            f"That command is too long ({len(text)} characters; the limit is {MAX_LENGTH}).", line(key)
        )
    tokens = tokenize(text, key)
    # People paste hubot-style "deploy web/v2 to production" after typing /deploy.
    own_words = tuple(vocab.flags) if name == "/flag" else vocab.services
    if len(tokens) > 0 and tokens[0].lower() == name[1:] and not lookup(tokens[0], own_words):
        tokens = tokens[1:]
    if name == "/flag":
        return parse_flag(tokens, vocab)
    if name == "/deploy":
        return _parse_deploy_text(tokens, vocab)
    if len(tokens) == 1 and tokens[0].lower() == "help" and not lookup("help", vocab.services):
        return Help()
    if name == "/promote":
        return parse_promote(tokens, vocab)
    return parse_rollback(tokens, vocab)


def _parse_deploy_text(tokens: list[str], vocab: Vocabulary) -> Command:
    if not tokens:
        return Help()
    word = tokens[0].lower()
    if word in SUBCOMMANDS:
        return SUBCOMMAND_PARSERS[word](tokens[1:], vocab)
    return parse_deploy(tokens, vocab)


def reads_only(name: str, text: str) -> bool:
    """Whether `/deploy TEXT` or `/flag TEXT` only reads (status, history, help, audit, schedule, windows;
    /flag list, /flag KEY [in ENV], /flag help): answering it twice is harmless, so a replay of it need not
    be remembered."""
    if name == "/flag":
        return _flag_reads_only(text)
    words = text.split(maxsplit=1)
    return name == "/deploy" and (not words or words[0].lower() in READS)


def _flag_reads_only(text: str) -> bool:
    """No word of it could make a change: no action word, no percentage, no option. Read as the parser
    reads it (quotes and all), so a quoted "on" is not missed; what does not tokenize is not a read."""
    text = text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
    if len(text) > MAX_LENGTH:
        return False
    try:
        tokens = tokenize(text, "flag")
    except CommandError:
        return False
    return not any(
        t.lower() in FLAG_ACTIONS or "%" in t or t.startswith(("-", "\u2013", "\u2014")) for t in tokens
    )
