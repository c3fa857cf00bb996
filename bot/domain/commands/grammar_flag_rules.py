"""/flag's targeting rules, A/B weights and rollout steps: the parts of a change that are written as
small expressions (`region=eu-west-1,eu-central-1`, `control=50,treatment=50`, `--steps 5,25,50,100`)."""

from __future__ import annotations

import math
import re

from bot.domain.commands import words as w
from bot.domain.commands.messages import listing
from bot.domain.commands.types import CommandError, Vocabulary
from bot.domain.commands.usage import clip, example, line, quoted
from bot.domain.flags import Condition
from bot.domain.suggest import closest
from bot.domain.versions import compare_versions

MAX_STEPS = 20
MAX_CONDITIONS = 10
MAX_VALUES = 50
# A percentage: 0..100, at most two decimals, then "%". Anything number-like that is not is told why.
PERCENT = re.compile(r"([0-9]{1,3})(?:\.([0-9]{1,2}))?%")
_ATTRIBUTE = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
_OPERATOR_CHARS = "=!^<>~*$"
_OPERATORS = {"=": "equals", "==": "equals", "!=": "not_in", "^=": "starts_with", ">=": "semver_gte"}
_OPERATOR_WORDS = (
    "= (equals; with a comma list, is one of), != (is none of), ^= (starts with), >= (a version at least)"
)
_MAX_VALUE = 200


def looks_like_targeting(words: list[str], vocab: Vocabulary) -> bool:
    first = words[0]
    return (
        any(c in first for c in "=!^<>")
        or first.lower() == "segment"
        or w.lookup(first, vocab.segments) is not None
    )


# ------------------------------------------------------------------------------------ on for WHO


def targeting(words: list[str], vocab: Vocabulary) -> tuple[tuple[Condition, ...], str | None]:
    """`on for ...`: the rule's conditions and its segment."""
    parts = [p for p in _join_operators(words) if p.lower() not in ("and", "&", "&&")]
    if not parts:
        raise CommandError(
            f'On for whom? Add conditions or a segment after "for", e.g. `{example("flag-target")}`.',
            line("flag-target"),
        )
    conditions: list[Condition] = []
    segment: str | None = None
    i = 0
    while i < len(parts):
        part, low = parts[i], parts[i].lower()
        named: str | None = None
        if low == "segment":
            if i + 1 >= len(parts):
                raise CommandError(
                    f'Missing the segment after "segment". {listing("Segments", vocab.segments)}',
                    line("flag-target"),
                )
            named, i = _segment(parts[i + 1], vocab), i + 2
        elif low.startswith("segment=") or low.startswith("segment:"):
            named, i = _segment(part[len("segment=") :], vocab), i + 1
        elif low in ("in", "not") or low.replace("_", " ") in ("starts with", "startswith"):
            raise word_operator(parts[:i], part)
        elif any(char in part for char in _OPERATOR_CHARS):
            conditions.append(_condition(part))
            i += 1
        else:
            found = w.lookup(part, vocab.segments)
            if found is None:
                raise _not_a_target(part, parts, i, vocab)
            named, i = found, i + 1
        if named is not None:
            if segment is not None and segment != named:
                raise CommandError(
                    f'Two segments: "{segment}" and "{named}". A rule takes one segment (its conditions '
                    "can narrow it: `segment beta and region=eu-west-1`).",
                    line("flag-target"),
                )
            segment = named
    if len(conditions) > MAX_CONDITIONS:
        raise CommandError(
            f"{len(conditions)} conditions: a rule takes at most {MAX_CONDITIONS} (a segment can hold more).",
            line("flag-target"),
        )
    return tuple(conditions), segment


def _join_operators(words: list[str]) -> list[str]:
    """ "region = eu-west-1", "region= eu", "a, b": one condition each, as if typed without spaces."""
    out: list[str] = []
    joins = _OPERATOR_CHARS + ","
    for word in words:
        if out and (out[-1][-1:] in joins or word[:1] in joins):
            out[-1] += word
        else:
            out.append(word)
    return out


def _segment(word: str, vocab: Vocabulary) -> str:
    if not word:
        raise CommandError(
            f'Missing the segment after "segment=". {listing("Segments", vocab.segments)}',
            line("flag-target"),
        )
    return w.pick(word, vocab.segments, "segment", "Segments", "flag-target")


def _condition(part: str) -> Condition:
    rule = f"Conditions are ATTRIBUTE OPERATOR VALUE with no spaces: {_OPERATOR_WORDS}."
    at = next(j for j, char in enumerate(part) if char in _OPERATOR_CHARS)
    attribute = part[:at]
    if not attribute:
        raise CommandError(
            f"Bad condition {quoted(part)}: it names no attribute. {rule}", line("flag-target")
        )
    if not _ATTRIBUTE.fullmatch(attribute):
        raise CommandError(
            f"Bad attribute {quoted(attribute)} in {quoted(part)}: an attribute is letters, digits, _ . : -"
            " (starting with a letter or _), up to 64 characters.",
            line("flag-target"),
        )
    two = part[at : at + 2]
    symbol = two if two in _OPERATORS else part[at]
    typed = two if len(two) == 2 and two[1] in _OPERATOR_CHARS else part[at]  # what to quote if unknown
    op = _OPERATORS.get(symbol)
    if op is None or (symbol == "=" and typed in ("=>", "=<")):  # "=>": a slip for ">=", not "equals >..."
        raise CommandError(f"Unknown operator {quoted(typed)} in {quoted(part)}. {rule}", line("flag-target"))
    values = _values(part[at + len(symbol) :], part)
    if op == "equals" and len(values) > 1:
        op = "in"
    if op == "semver_gte":
        if len(values) != 1:
            raise CommandError(
                f"{quoted(part)}: >= takes one version, like version>=2.3.0.", line("flag-target")
            )
        if compare_versions(values[0], values[0]) is None:
            raise CommandError(
                f"Bad version {quoted(values[0])} after >=: a version here is dotted numbers, like 2.3.0"
                " or v2.3.",
                line("flag-target"),
            )
    return Condition(attribute, op, values)


def _values(raw: str, part: str) -> tuple[str, ...]:
    if not raw.strip():
        raise CommandError(
            f"Missing the value in {quoted(part)}, e.g. region=eu-west-1 (several: region=eu-west-1,eu-central-1).",
            line("flag-target"),
        )
    values = [v.strip() for v in raw.split(",")]
    if any(not v for v in values):
        raise CommandError(
            f"An empty value in {quoted(part)}: separate values with single commas.", line("flag-target")
        )
    long = next((v for v in values if len(v) > _MAX_VALUE), None)
    if long is not None:
        raise CommandError(
            f"The value {quoted(long)} is too long ({len(long)} characters; at most {_MAX_VALUE}).",
            line("flag-target"),
        )
    if len(values) > MAX_VALUES:
        raise CommandError(
            f"{len(values)} values in one condition: at most {MAX_VALUES} (a segment can hold a longer list).",
            line("flag-target"),
        )
    return tuple(dict.fromkeys(values))  # in the order typed, each once


def word_operator(before: list[str], word: str) -> CommandError:
    """ "region in a,b": the conditions are written with symbols, so "in" stays the environment's."""
    attribute = next(
        (p for p in reversed(before) if _ATTRIBUTE.fullmatch(p) and p.lower() != "for"), "region"
    )
    return CommandError(
        f"Did not understand {quoted(word)} in the rule: write conditions with symbols, without spaces — "
        f"{attribute}=a,b (is one of), {attribute}!=a,b (is none of), {attribute}^=a (starts with), "
        f'{attribute}>=2.3.0 (a version at least). "in ENV" is the environment.',
        line("flag-target"),
    )


def _not_a_target(part: str, parts: list[str], i: int, vocab: Vocabulary) -> CommandError:
    near = closest(part, vocab.segments)
    if near:
        return CommandError(
            f'Unknown segment {quoted(part)}. Did you mean "{near}"? {listing("Segments", vocab.segments)}',
            line("flag-target"),
        )
    if i + 1 < len(parts) and parts[i + 1].lower() in ("in", "not", "is", "starts", "starts_with"):
        return word_operator(parts[: i + 1], parts[i + 1])
    return CommandError(
        f'Did not understand {quoted(part)} after "for": give a condition like region=eu-west-1 '
        f"({_OPERATOR_WORDS}) or a segment. {listing('Segments', vocab.segments)}",
        line("flag-target"),
    )


# -------------------------------------------------------------------------------------- variants


def parse_weights(key: str, words: list[str], vocab: Vocabulary) -> tuple[tuple[str, float], ...]:
    variants = vocab.flags.get(key, ())
    shown = f"/flag {key} variants {_even(variants)} in ENV"
    if not words:
        theirs = f" (its variants: {', '.join(variants)})" if variants else ""
        raise CommandError(
            f"Which variants, with which weights? e.g. `{shown}`{theirs}.", line("flag-variants")
        )
    pairs = [p.strip() for p in ",".join(_join_operators(words)).split(",") if p.strip()]
    weights: list[tuple[str, float]] = []
    for pair in pairs:
        m = re.fullmatch(r"([^=:]*)[=:](.*)", pair)
        if m is None:
            raise CommandError(f"Give {quoted(pair)} a weight, e.g. `{shown}`.", line("flag-variants"))
        variant = m.group(1).strip()
        if not variant:
            raise CommandError(
                f"Missing the variant before the weight in {quoted(pair)}.", line("flag-variants")
            )
        if variants:
            variant = w.pick(variant, variants, f"variant of {key}", "Its variants", "flag-variants")
        if any(v == variant for v, _ in weights):
            raise CommandError(f"The variant {quoted(variant)} is given twice.", line("flag-variants"))
        weights.append((variant, _weight(m.group(2).strip(), pair)))
    total = sum(x for _, x in weights)
    if not math.isclose(total, 100.0, abs_tol=1e-6):
        given = ",".join(f"{v}={x:g}" for v, x in weights)
        raise CommandError(
            f"The weights add up to {round(total, 2):g}, not 100 ({clip(given, 80)}).", line("flag-variants")
        )
    return tuple(weights)


def _even(variants: tuple[str, ...]) -> str:
    """An example split of `variants` that adds up to 100."""
    names = list(variants) or ["control", "treatment"]
    share = 100 // len(names)
    weights = [share] * (len(names) - 1) + [100 - share * (len(names) - 1)]
    return ",".join(f"{v}={x}" for v, x in zip(names, weights, strict=True))


def _weight(word: str, pair: str) -> float:
    bare = word.removesuffix("%")
    if PERCENT.fullmatch(bare + "%") and float(bare) <= 100:
        return float(bare)
    raise CommandError(
        f"Bad weight {quoted(word)} in {quoted(pair)}: a weight is a number from 0 to 100 with at most two"
        " decimals, like 50 or 12.5.",
        line("flag-variants"),
    )


# ----------------------------------------------------------------------------------------- steps


def parse_steps(raw: str) -> tuple[int, ...]:
    parts = [p for p in re.split(r"[,\s]+", raw.strip()) if p]
    if not parts:
        raise CommandError("--steps needs percentages, e.g. --steps 5,25,50,100.", line("flag-rollout"))
    steps: list[int] = []
    for part in parts:
        bare = part.removesuffix("%")
        if not (bare.isascii() and bare.isdigit() and len(bare) <= 3 and 1 <= int(bare) <= 100):
            raise CommandError(
                f"Bad step {quoted(part)}: steps are whole percentages from 1 to 100, like --steps 5,25,50,100.",
                line("flag-rollout"),
            )
        value = int(bare)
        if steps and value <= steps[-1]:
            raise CommandError(
                f"The steps must rise: {value} comes after {steps[-1]} in {quoted(raw)}.",
                line("flag-rollout"),
            )
        steps.append(value)
    if len(steps) > MAX_STEPS:
        raise CommandError(f"{len(steps)} steps: at most {MAX_STEPS}.", line("flag-rollout"))
    if steps[-1] != 100:
        raise CommandError(
            f"The last step must be 100 (a rollout ends with everyone on), got {steps[-1]}: "
            f"--steps {','.join(str(s) for s in steps)},100.",
            line("flag-rollout"),
        )
    return tuple(steps)
