"""/rollback SERVICE [in ENV] [to VERSION] [--options]: the words after the service are read left to right;
"to" takes a version, or an environment when the word after it is one."""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain.commands import words as w
from bot.domain.commands.lexer import split_flags, str_flag
from bot.domain.commands.messages import did_not_understand, listing, suggestion, unexpected
from bot.domain.commands.suggestions import phrase_hint
from bot.domain.commands.types import CommandError, Rollback, Vocabulary
from bot.domain.commands.usage import example, line, quoted

KEY = "rollback"


@dataclass
class _Reading:
    """The words after the service, and what has been read from them so far."""

    head: str  # the first word as typed
    shown: str  # SERVICE or SERVICE/VERSION, for suggestions
    rest: list[str]
    raw_flags: list[str]
    vocab: Vocabulary
    version: str | None
    env: str | None = None


def parse_rollback(tokens: list[str], vocab: Vocabulary) -> Rollback:
    if not tokens:
        raise CommandError(f"Roll back what? e.g. `{example(KEY)}`.", line(KEY))
    words, flags, raw_flags = split_flags(tokens, KEY)
    if not words:
        raise CommandError(f"Which service? e.g. `{example(KEY)}`.", line(KEY))
    head = words[0]
    service_word, slash, slash_version = head.partition("/")
    service = w.service(service_word, vocab, KEY)
    version = None
    if slash:
        if not slash_version:
            raise CommandError(f'Missing the version after "{service}/".', line(KEY))
        version = w.version(slash_version, KEY)
    shown = f"{service}/{slash_version}" if slash else service
    reading = _Reading(head, shown, words[1:], raw_flags, vocab, version)
    i = 0
    while i < len(reading.rest):
        i = _read_word(reading, i)
    return Rollback(
        service,
        _environment(reading.env, vocab),
        reading.version,
        bool(flags.get("gradual")),
        str_flag(flags, "reason"),
        str_flag(flags, "emergency"),
    )


def _read_word(reading: _Reading, i: int) -> int:
    """Read the word at `i` (and its argument); the index of the next unread word."""
    word = reading.rest[i]
    if word.lower() in ("in", "on", "to"):
        _read_connector(reading, i)
        return i + 2
    bare_env = w.lookup(word, reading.vocab.environments)
    if bare_env and reading.env is None:
        reading.env = bare_env
        return i + 1
    raise _not_understood(reading, i)


def _read_connector(reading: _Reading, i: int) -> None:
    word, rest = reading.rest[i], reading.rest
    low = word.lower()
    if i + 1 >= len(rest):
        what = "version" if low == "to" else "environment"
        raise CommandError(f'Missing the {what} after "{word}".', line(KEY))
    arg = rest[i + 1]
    arg_env = w.lookup(arg, reading.vocab.environments)
    if low == "to" and arg_env and reading.env is not None:
        raise CommandError(
            f'"{arg_env}" is an environment, and the environment is already "{reading.env}". '
            'To roll back to a version, write "to VERSION".',
            line(KEY),
        )
    if low == "to" and not arg_env:
        if reading.version is not None:
            raise CommandError(f'Two versions: "{reading.version}" and {quoted(arg)}. Give one.', line(KEY))
        reading.version = w.version(arg, KEY)
    else:  # "in ENV", "on ENV", and "to production" meaning the environment
        if reading.env is not None:
            raise CommandError(f'Two environments: "{reading.env}" and {quoted(arg)}. Give one.', line(KEY))
        reading.env = w.env(arg, reading.vocab, KEY)


def _not_understood(reading: _Reading, i: int) -> CommandError:
    """rest[i] fits nowhere: a misspelt "in ENV", a version without "to", or just unexpected."""
    rest = reading.rest
    for n in (2, 1):
        fix = phrase_hint(rest[i : i + n], reading.vocab, ("in", "on")) if i + n <= len(rest) else None
        if fix:
            return did_not_understand(rest[i : i + n], fix, _suggest(reading, i, n, fix), KEY)
    if reading.version is None and w.VERSION.fullmatch(rest[i]):
        fix = f"to {rest[i]}"
        return did_not_understand([rest[i]], fix, _suggest(reading, i, 1, fix), KEY)
    return unexpected(rest[i:], rest[i - 1] if i else reading.head, KEY)


def _suggest(reading: _Reading, i: int, n: int, fix: str) -> str:
    """The command with rest[i : i + n] replaced by `fix`."""
    rest = reading.rest
    return suggestion("/rollback", [reading.shown, *rest[:i], fix, *rest[i + n :]], reading.raw_flags)


def _environment(env: str | None, vocab: Vocabulary) -> str:
    if env is not None:
        return env
    if vocab.default_environment is None:
        raise CommandError(
            f'Which environment? Add it with "in", e.g. `{example(KEY)}`. '
            f"{listing('Environments', vocab.environments)}",
            line(KEY),
        )
    return vocab.default_environment
