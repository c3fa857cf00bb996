"""/deploy SERVICE[/VERSION] [VERSION] [to ENV] [--options]: the deploy form itself, and the diagnosis of
its commonest slip, an environment typed without (or with a misspelt) "to". With --pipeline [NAME] the
form names no environment: the pipeline's own come in order."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from bot.domain.commands import words as w
from bot.domain.commands.lexer import split_flags, str_flag
from bot.domain.commands.messages import did_not_understand, listing, missing_env, suggestion, unexpected
from bot.domain.commands.suggestions import phrase_hint
from bot.domain.commands.types import DEPLOY_CONNECTORS, SUBCOMMANDS, CommandError, Deploy, Vocabulary
from bot.domain.commands.usage import clip, example, line, quoted
from bot.domain.suggest import closest

KEY = "deploy"
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # as [pipelines.NAME] allows
NOT_WITH_PIPELINE = ("strategy", "dry-run", "emergency", "window", "at")
Suggest: TypeAlias = Callable[[list[str]], str]  # words after the service -> the whole corrected command


@dataclass(frozen=True)
class _Head:
    """SERVICE or SERVICE/VERSION, the first word of the form."""

    service: str
    version: str | None
    slash_version: str | None  # what followed the "/", when there was one

    @property
    def shown(self) -> str:
        return self.service if self.slash_version is None else f"{self.service}/{self.slash_version}"


def parse_deploy(tokens: list[str], vocab: Vocabulary) -> Deploy:
    tokens, pipeline = _pipeline_option(tokens)
    words, flags, raw_flags = split_flags(tokens, KEY)
    if not words:
        raise CommandError(f"Which service? Start with its name, e.g. `{example(KEY)}`.", line(KEY))
    head, rest = _head(words[0], vocab), words[1:]

    def suggest(parts: list[str]) -> str:
        return suggestion("/deploy", [head.shown, *parts], raw_flags)

    before, env_word, trailing = _split_at_connector(rest, head, vocab, suggest)
    version = _version_slot(head, before)
    if pipeline is not None:
        return _through_pipeline(head, version, env_word, flags, pipeline)
    env = _environment(env_word, rest, vocab, suggest)
    if trailing:
        raise _trailing(trailing, version, env_word or env, env, suggest)
    strategy = str_flag(flags, "strategy")
    return Deploy(
        service=head.service,
        version=version,
        env=env,
        strategy=None if strategy is None else w.strategy(strategy, KEY),
        dry_run=bool(flags.get("dry-run")),
        reason=str_flag(flags, "reason"),
        emergency=str_flag(flags, "emergency"),
        window=bool(flags.get("window")),
        at=str_flag(flags, "at"),
    )


def _pipeline_option(tokens: list[str]) -> tuple[list[str], str | None]:
    """`--pipeline [NAME]` (or `--pipeline=NAME`) taken out of the tokens: the others, and the name (""
    for none: the service's one pipeline; None: no --pipeline). The word after it is its name unless it
    is an option or a connector."""
    rest: list[str] = []
    found: str | None = None
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        dashed = "--" + token[1:] if token.startswith(("\u2014", "\u2013")) else token
        spelled, equals, value = dashed.partition("=")
        if spelled.lower() != "--pipeline":
            rest.append(token)
            continue
        if found is not None:
            raise CommandError('The option "--pipeline" is given twice.', line(KEY))
        name = value if equals else ""
        named = i < len(tokens) and not tokens[i].startswith(("-", "\u2014", "\u2013"))
        if not equals and named and tokens[i].lower() not in DEPLOY_CONNECTORS:
            name, i = tokens[i], i + 1
        if name and not PIPELINE_NAME.fullmatch(name):
            raise CommandError(
                f"Bad pipeline name {quoted(name)}: one word of letters, digits, - and _.", line(KEY)
            )
        found = name
    return rest, found


def _through_pipeline(
    head: _Head, version: str | None, env_word: str | None, flags: dict[str, str | bool], name: str
) -> Deploy:
    if env_word is not None:
        raise CommandError(
            f"A pipeline goes through its own environments in order: leave out {quoted('to ' + env_word)}.",
            line(KEY),
        )
    clashing = [f"--{n}" for n in NOT_WITH_PIPELINE if n in flags]
    if clashing:
        raise CommandError(
            f"{', '.join(clashing)} cannot go with --pipeline: each of its environments deploys with its "
            "own strategy through its own gate.",
            line(KEY),
        )
    if version is None:
        named = f' (the word after --pipeline is its name: "{name}")' if name else ""
        raise CommandError(
            f"A pipeline takes one version: `/deploy {head.service} VERSION --pipeline`{named}.", line(KEY)
        )
    return Deploy(
        service=head.service,
        version=version,
        env="",
        strategy=None,
        dry_run=False,
        reason=str_flag(flags, "reason"),
        emergency=None,
        window=False,
        at=None,
        pipeline=name,
    )


def _head(word: str, vocab: Vocabulary) -> _Head:
    if word.lower() in SUBCOMMANDS:
        raise CommandError(
            f'"{word.lower()}" is a command of its own; put it first: `{line(word.lower())}`.', line(KEY)
        )
    service_word, slash, slash_version = word.partition("/")
    service = w.service(service_word, vocab, KEY)
    if not slash:
        return _Head(service, None, None)
    if not slash_version:
        raise CommandError(
            f'Missing the version after "{service}/": write `/deploy {service}/v2.3.1 ...`,'
            ' or leave out the "/" to redeploy the current version.',
            line(KEY),
        )
    return _Head(service, w.version(slash_version, KEY), slash_version)


def _split_at_connector(
    rest: list[str], head: _Head, vocab: Vocabulary, suggest: Suggest
) -> tuple[list[str], str | None, list[str]]:
    """(the words before to/in/on, the environment word after it, the words after that)."""
    connector_at = next((i for i, word in enumerate(rest) if word.lower() in DEPLOY_CONNECTORS), None)
    if connector_at is None:
        diagnose_missing_connector(rest, 0 if head.slash_version is not None else 1, vocab, suggest)
        return rest, None, []
    before, connector, after = rest[:connector_at], rest[connector_at], rest[connector_at + 1 :]
    if not after:
        raise missing_env(connector, vocab, KEY)
    return before, after[0], after[1:]


def _version_slot(head: _Head, before: list[str]) -> str | None:
    """The version: after the "/", or the one word between the service and "to"."""
    version, last = head.version, head.shown
    if version is None and before:
        version = w.version(before[0], KEY)
        last, before = before[0], before[1:]
    if not before:
        return version
    if head.slash_version is not None and len(before) == 1 and w.VERSION.fullmatch(before[0]):
        raise CommandError(
            f'Two versions: "{head.slash_version}" (after the "/") and {quoted(before[0])}. Give one.',
            line(KEY),
        )
    raise unexpected(before, last, KEY)


def _environment(env_word: str | None, rest: list[str], vocab: Vocabulary, suggest: Suggest) -> str:
    if env_word is not None:
        return w.env(env_word, vocab, KEY)
    if vocab.default_environment is not None:
        return vocab.default_environment
    shown = vocab.environments[0] if vocab.environments else "ENV"
    raise CommandError(
        f'Which environment? Add it with "to", e.g. {suggest([*rest, "to", shown])}. '
        f"{listing('Environments', vocab.environments)}",
        line(KEY),
    )


def _trailing(
    trailing: list[str], version: str | None, after: str, env: str, suggest: Suggest
) -> CommandError:
    """Words after the environment: a version put last, or a reason without --reason."""
    if version is None and len(trailing) == 1 and w.VERSION.fullmatch(trailing[0]):
        hint = f' Put the version before "to": {suggest([trailing[0], "to", env])}.'
    else:
        hint = f' To give a reason, use --reason "{clip(" ".join(trailing))}".'
    return unexpected(trailing, after, KEY, hint)


def diagnose_missing_connector(
    rest: list[str], versions_allowed: int, vocab: Vocabulary, suggest: Suggest
) -> None:
    """No to/in/on was typed. Raise if the words look like an environment that lost or misspelt it."""
    if not rest:
        return
    _bare_environment(rest, versions_allowed, vocab, suggest)
    for n in (2, 1):
        if n <= len(rest) and len(rest) - n <= versions_allowed:
            fix = phrase_hint(rest[-n:], vocab, DEPLOY_CONNECTORS)
            if fix:
                raise did_not_understand(rest[-n:], fix, suggest([*rest[:-n], fix]), KEY)
    # The last word is past the version slot, so it can only have been meant as an environment.
    if len(rest) == versions_allowed + 1:
        env = closest(rest[-1], vocab.environments)
        if env:
            fix = f"to {env}"
            raise did_not_understand(rest[-1:], fix, suggest([*rest[:-1], fix]), KEY)


def _bare_environment(rest: list[str], versions_allowed: int, vocab: Vocabulary, suggest: Suggest) -> None:
    """An environment where a version goes ("/deploy web production"): it needs "to" before it."""
    env_at = [i for i, word in enumerate(rest) if w.lookup(word, vocab.environments)]
    if len(env_at) != 1 or len(rest) - 1 > versions_allowed:
        return
    i = env_at[0]
    env = w.lookup(rest[i], vocab.environments)
    others = rest[:i] + rest[i + 1 :]
    raise CommandError(
        f'{quoted(rest[i])} needs "to" before it (a bare word after the service is read as a version). '
        f"Did you mean {suggest([*others, 'to', str(env)])}?",
        line(KEY),
    )
