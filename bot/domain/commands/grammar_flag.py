"""/flag list [in ENV] · /flag KEY [in ENV] · /flag KEY on|off|PERCENT%|on for WHO|variants V=W,...|
rollout|kill in ENV [--dry-run] [--reason "..."] [--steps ...]: feature flags' grammar.

Reads may leave out the environment (every environment is shown); a change never may, and never takes
the default environment: a flag change says where it applies. "in" is the only connector, because "on" is
an action here. A targeting rule's conditions are written with symbols (`region=a,b`, `region!=a`,
`email^=qa-`, `version>=2.3.0`), so "in" inside a rule is never mistaken for the environment's."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeAlias

from bot.domain.commands import words as w
from bot.domain.commands.grammar_flag_rules import (
    PERCENT,
    looks_like_targeting,
    parse_steps,
    parse_weights,
    targeting,
    word_operator,
)
from bot.domain.commands.lexer import Flags, split_flags, str_flag
from bot.domain.commands.messages import did_not_understand, listing, missing_env, suggestion, unexpected
from bot.domain.commands.suggestions import phrase_hint
from bot.domain.commands.types import (
    FLAG_ACTIONS,
    CommandError,
    FlagChange,
    FlagList,
    FlagShow,
    Help,
    Vocabulary,
)
from bot.domain.commands.usage import FLAGS, clip, example, line, quoted
from bot.domain.flags import Condition
from bot.domain.suggest import closest

KEY = "flag"
Parsed: TypeAlias = FlagList | FlagShow | FlagChange | Help
Suggest: TypeAlias = Callable[[list[str]], str]  # words after the flag key -> the whole corrected command

_CONNECTORS = ("in",)
_VALUE_OPTIONS = tuple(f"--{name}" for name, metavar in FLAGS[KEY].items() if metavar is not None)
_NUMBERISH = re.compile(r"[+-]?(?:[0-9]+(?:[.,][0-9]*)?|[.,][0-9]+)(?:e[+-]?[0-9]+)?%?", re.IGNORECASE)
_NEGATIVE = re.compile(r"[-\u2013\u2014][0-9.,]+%?")


@dataclass(frozen=True)
class _Options:
    dry_run: bool
    reason: str | None
    steps: str | None
    raw: list[str]  # as typed, for suggestions

    @property
    def any(self) -> bool:
        return self.dry_run or self.reason is not None or self.steps is not None


def parse_flag(tokens: list[str], vocab: Vocabulary) -> Parsed:
    """The /flag command of `tokens` (the words after "/flag"), or a CommandError."""
    keys = tuple(vocab.flags)
    if not tokens or (tokens[0].lower() == "help" and not w.lookup("help", keys)):
        return Help()  # "/flag help on" still deserves help, not an error
    _refuse_negative_numbers(tokens)
    words, flags, raw = split_flags(tokens, KEY)
    options = _options(flags, raw)
    if not words:
        raise CommandError(f"Which flag? Start with its key, e.g. `{example('flag-on')}`.", line(KEY))
    head = words[0]
    if head.lower() == "list" and not w.lookup(head, keys):
        return _parse_list(words[1:], options, vocab)
    key = _flag_key(head, vocab)

    def suggest(parts: list[str]) -> str:
        return suggestion("/flag", [key, *parts], options.raw)

    action_words, env = _environment(words[1:], vocab, suggest)
    if not action_words:
        if options.any:
            raise _options_on_read(key, env, options)
        return FlagShow(key, env)

    def suggest_change(parts: list[str]) -> str:
        return suggest([*parts, "in", env] if env else parts)

    change = _action(_Reading(key, env, options, vocab, suggest_change), action_words)
    if env is None:
        shown = vocab.environments[0] if vocab.environments else "ENV"
        raise CommandError(
            f'In which environment? A change names it with "in ENV" (it never falls back to a default), '
            f"e.g. {suggest([*action_words, 'in', shown])}. {listing('Environments', vocab.environments)}",
            line(_FORM.get(change.action, KEY)),
        )
    return FlagChange(
        key=key,
        env=env,
        action=change.action,
        percent=change.percent,
        conditions=change.conditions,
        segment=change.segment,
        weights=change.weights,
        steps=change.steps,
        dry_run=options.dry_run,
        reason=options.reason,
    )


_FORM = {
    "on": "flag-on",
    "off": "flag-on",
    "percent": "flag-percent",
    "target": "flag-target",
    "variants": "flag-variants",
    "rollout": "flag-rollout",
    "kill": "flag-kill",
}


@dataclass(frozen=True)
class _Change:
    """What the words before (or after) `in ENV` ask for."""

    action: str
    percent: float | None = None
    conditions: tuple[Condition, ...] = ()
    segment: str | None = None
    weights: tuple[tuple[str, float], ...] = ()
    steps: tuple[int, ...] | None = None


# ------------------------------------------------------------------------------------------ pieces


def _refuse_negative_numbers(tokens: list[str]) -> None:
    """ "-5%" would otherwise be read as an unknown option; say what a percentage is instead."""
    for i, token in enumerate(tokens):
        after_value_option = i > 0 and tokens[i - 1].lower() in _VALUE_OPTIONS
        if _NEGATIVE.fullmatch(token) and not after_value_option:
            raise CommandError(f"Bad percentage {quoted(token)}: {_PERCENT_RULE}", line("flag-percent"))


_PERCENT_RULE = "a percentage is a number from 0 to 100 with at most two decimals, then %, like 25% or 0.5%."


def _options(flags: Flags, raw: list[str]) -> _Options:
    return _Options(bool(flags.get("dry-run")), str_flag(flags, "reason"), str_flag(flags, "steps"), raw)


def _options_on_read(key: str, env: str | None, options: _Options) -> CommandError:
    given = [o for o in ("--dry-run", "--reason", "--steps") if o in options.raw]
    where = f" in {env}" if env else ""
    return CommandError(
        f"{', '.join(given)} {'goes' if len(given) == 1 else 'go'} with a change (on, off, PERCENT%, on for,"
        f" variants, rollout, kill); `/flag {key}{where}` only shows the flag.",
        line("flag-show"),
    )


def _flag_key(word: str, vocab: Vocabulary) -> str:
    keys = tuple(vocab.flags)
    found = w.lookup(word, keys)
    if found:
        return found
    low = word.lower()
    if low in FLAG_ACTIONS or PERCENT.fullmatch(word) or low == "for":
        shown = keys[0] if keys else "KEY"
        raise CommandError(
            f"Which flag? Start with its key, e.g. `/flag {shown} {clip(word)} in ENV`. {listing('Flags', keys)}",
            line(KEY),
        )
    message = f"Unknown flag {quoted(word)}."
    near = closest(word, keys)
    if near:
        message += f' Did you mean "{near}"?'
    elif closest(word, ("list",)):
        message += " Did you mean `/flag list`?"
    raise CommandError(f"{message} {listing('Flags', keys)}", line(KEY))


def _parse_list(rest: list[str], options: _Options, vocab: Vocabulary) -> FlagList:
    if options.any:
        given = [o for o in ("--dry-run", "--reason", "--steps") if o in options.raw]
        raise CommandError(
            f"`/flag list` takes no options (got {', '.join(given)}): it only shows the flags.",
            line("flag-list"),
        )
    if not rest:
        return FlagList(None)
    if rest[0].lower() == "in":
        if len(rest) == 1:
            raise missing_env("in", vocab, "flag-list")
        env = w.env(rest[1], vocab, "flag-list")
        if len(rest) > 2:
            raise unexpected(rest[2:], rest[1], "flag-list")
        return FlagList(env)
    bare = w.lookup(rest[0], vocab.environments)
    if bare:
        if len(rest) > 1:
            raise unexpected(rest[1:], rest[0], "flag-list")
        return FlagList(bare)
    fix = phrase_hint(rest, vocab, _CONNECTORS) if len(rest) <= 2 else None
    if fix:
        raise did_not_understand(rest, fix, suggestion("/flag list", [fix], []), "flag-list")
    if len(rest) == 1 and closest(rest[0], vocab.environments):
        return FlagList(w.env(rest[0], vocab, "flag-list"))  # raises, with the suggestion
    raise unexpected(rest, "list", "flag-list")


def _environment(rest: list[str], vocab: Vocabulary, suggest: Suggest) -> tuple[list[str], str | None]:
    """(the other words, the environment of `in ENV`, or None). The last "in" is the environment's;
    without one, a bare environment is fine for a read (no action words), and told to take "in" otherwise."""
    at = [i for i, word in enumerate(rest) if word.lower() == "in"]
    if not at:
        return _without_connector(rest, vocab, suggest)
    i = at[-1]
    if i + 1 >= len(rest):
        raise missing_env("in", vocab, KEY)
    env_word, others = rest[i + 1], rest[:i] + rest[i + 2 :]
    env = w.lookup(env_word, vocab.environments)
    if env is None:
        if any(word.lower() == "for" for word in rest[:i]) and not closest(env_word, vocab.environments):
            raise word_operator(rest[:i], rest[i])
        env = w.env(env_word, vocab, KEY)  # raises, naming the nearest
    earlier = [j for j in at[:-1] if j + 1 < len(rest) and w.lookup(rest[j + 1], vocab.environments)]
    if earlier:
        first = w.lookup(rest[earlier[0] + 1], vocab.environments)
        raise CommandError(f'Two environments: "{first}" and "{env}". Give one.', line(KEY))
    return others, env


def _without_connector(rest: list[str], vocab: Vocabulary, suggest: Suggest) -> tuple[list[str], str | None]:
    if not rest:
        return rest, None
    for n in (2, 1):  # a misspelt "in ENV" ("ni staging", "instaging"); an action word is no connector
        if n <= len(rest) and rest[-n].lower() not in FLAG_ACTIONS:
            fix = phrase_hint(rest[-n:], vocab, _CONNECTORS)
            if fix:
                raise did_not_understand(rest[-n:], fix, suggest([*rest[:-n], fix]), KEY)
    bare = [i for i, word in enumerate(rest) if w.lookup(word, vocab.environments)]
    if bare and len(rest) == 1:
        return [], w.lookup(rest[0], vocab.environments)  # a read: /flag KEY production
    if bare:
        i = bare[-1]
        env = str(w.lookup(rest[i], vocab.environments))
        others = rest[:i] + rest[i + 1 :]
        raise CommandError(
            f'A change names its environment with "in": did you mean {suggest([*others, "in", env])}?',
            line(KEY),
        )
    return rest, None


# ----------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class _Reading:
    """One change being read: its flag, environment (if given), options and words."""

    key: str
    env: str | None
    options: _Options
    vocab: Vocabulary
    suggest: Suggest  # the action's words -> the whole corrected command, `in ENV` included


def _action(r: _Reading, words: list[str]) -> _Change:
    words = _join_percent_sign(words)
    first, rest = words[0], words[1:]
    low = first.lower()
    if r.options.steps is not None and low != "rollout":
        raise CommandError(
            f"--steps goes with rollout, e.g. `{example('flag-rollout')}`.", line("flag-rollout")
        )
    read = _ACTIONS.get(low)
    if read is not None:
        return read(r, first, rest)
    if low == "for":
        raise did_not_understand([first], "on for", r.suggest(["on", *words]), "flag-target")
    percent = _percent(first, r.suggest, rest)
    if percent is not None:
        if rest:
            raise unexpected(rest, first, "flag-percent")
        return _Change("percent", percent=percent)
    raise _unknown_action(words, r.vocab, r.suggest)


def _on(r: _Reading, first: str, rest: list[str]) -> _Change:
    if not rest:
        return _Change("on")
    if rest[0].lower() == "for":
        conditions, segment = targeting(rest[1:], r.vocab)
        return _Change("target", conditions=conditions, segment=segment)
    if looks_like_targeting(rest, r.vocab):
        fix = ["on", "for", *rest]
        raise did_not_understand(rest, f"for {' '.join(rest)}", r.suggest(fix), "flag-target")
    raise unexpected(rest, first, "flag-on")


def _off(r: _Reading, first: str, rest: list[str]) -> _Change:
    if rest and rest[0].lower() == "for":
        raise CommandError(
            '"off" is for everyone: to give some contexts the on variant and the others off, write '
            f"{r.suggest(['on', *rest])} (turn it off first if it is on for everyone).",
            line("flag-on"),
        )
    return _alone("off", rest, first)


def _kill(r: _Reading, first: str, rest: list[str]) -> _Change:
    return _alone("kill", rest, first)


def _rollout(r: _Reading, first: str, rest: list[str]) -> _Change:
    if rest and all(re.fullmatch(r"[0-9.,%]+", x) for x in rest):
        steps = ",".join(x.strip(",") for x in rest)
        raise CommandError(
            f"Give the steps with --steps: {r.suggest([first, '--steps', steps])}.", line("flag-rollout")
        )
    _alone("rollout", rest, first)
    steps_given = r.options.steps
    return _Change("rollout", steps=None if steps_given is None else parse_steps(steps_given))


def _variants(r: _Reading, first: str, rest: list[str]) -> _Change:
    return _Change("variants", weights=parse_weights(r.key, rest, r.vocab))


_ACTIONS: dict[str, Callable[[_Reading, str, list[str]], _Change]] = {
    "on": _on,
    "off": _off,
    "kill": _kill,
    "rollout": _rollout,
    "variants": _variants,
}


def _alone(action: str, rest: list[str], first: str) -> _Change:
    if rest:
        raise unexpected(rest, first, _FORM[action])
    return _Change(action)


def _join_percent_sign(words: list[str]) -> list[str]:
    """ "25 %" is "25%"."""
    out: list[str] = []
    for word in words:
        if word == "%" and out and _NUMBERISH.fullmatch(out[-1]):
            out[-1] += "%"
        else:
            out.append(word)
    return out


def _percent(word: str, suggest: Suggest, rest: list[str]) -> float | None:
    """The percentage `word` is, None when it is not number-like; a CommandError when it is, but wrong."""
    m = PERCENT.fullmatch(word)
    if m:
        value = float(word[:-1])
        if value <= 100:
            return value
        raise CommandError(f"Bad percentage {quoted(word)}: {_PERCENT_RULE}", line("flag-percent"))
    if not _NUMBERISH.fullmatch(word):
        return None
    bare = word.strip()
    if not bare.endswith("%") and PERCENT.fullmatch(bare + "%") and float(bare) <= 100:
        raise did_not_understand([word], f"{bare}%", suggest([f"{bare}%", *rest]), "flag-percent")
    raise CommandError(f"Bad percentage {quoted(word)}: {_PERCENT_RULE}", line("flag-percent"))


# Words people use for the actions: answered with "did you mean", never taken silently.
_SYNONYMS = {
    "enable": "on",
    "enabled": "on",
    "true": "on",
    "yes": "on",
    "disable": "off",
    "disabled": "off",
    "false": "off",
    "no": "off",
    "split": "variants",
    "ab": "variants",
    "a/b": "variants",
    "roll-out": "rollout",
    "gradual": "rollout",
    "canary": "rollout",
    "killswitch": "kill",
    "kill-switch": "kill",
    "stop": "kill",
}


def _unknown_action(words: list[str], vocab: Vocabulary, suggest: Suggest) -> CommandError:
    word, rest = words[0], words[1:]
    near = _SYNONYMS.get(word.lower()) or closest(word, FLAG_ACTIONS, cutoff=0.5)
    if near:
        return did_not_understand([word], near, suggest([near, *rest]), _FORM[near])
    if len(words) == 1 and closest(word, vocab.environments):
        w.env(word, vocab, KEY)  # raises: an environment, misspelt (a read, or an "in" forgotten as well)
    if looks_like_targeting(words, vocab):
        return did_not_understand(
            words, f"on for {' '.join(words)}", suggest(["on", "for", *words]), "flag-target"
        )
    return CommandError(
        f"Did not understand {quoted(' '.join(words))}. A change is on, off, PERCENT% (like 25%), "
        "on for WHO (like region=eu-west-1), variants V=W,..., rollout or kill; "
        "with nothing else, `/flag KEY [in ENV]` shows the flag.",
        line(KEY),
    )
