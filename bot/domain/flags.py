"""Feature flags, pure: what the config declares (FlagDef, Segment), what an environment has set for a flag
(FlagState, kept in the store, changed only by audited transitions), and evaluate(): an evaluation context
to a variant, with the reason or error code of the OpenFeature Remote Evaluation Protocol (OFREP).

Evaluation order: a killed or disabled flag answers its off variant (DISABLED); else the rules, in order,
the first that matches (TARGETING_MATCH); else the split, by bucket (SPLIT; it needs a targetingKey); else
the default variant (STATIC when nothing could have answered otherwise, DEFAULT when rules did not match).

The bucket is flagd's fractional evaluation: murmur3 (32-bit, seed 0) of flag key + targetingKey, its
absolute signed value over 2^31-1, times 100; the split's variants take consecutive ranges in their order.
A user's bucket never changes, so with the on variant first a user in at 5% is in at 25%, 50%, 100%."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from bot.domain.versions import compare_versions

FLAG_TYPES = ("boolean", "string", "number", "object")
OPERATORS = ("equals", "in", "not_in", "starts_with", "semver_gte")

# OFREP's reasons and error codes (open-feature/protocol, service/openapi.yaml)
STATIC, DEFAULT, TARGETING_MATCH, SPLIT, DISABLED, ERROR = (
    "STATIC",
    "DEFAULT",
    "TARGETING_MATCH",
    "SPLIT",
    "DISABLED",
    "ERROR",
)
FLAG_NOT_FOUND, TARGETING_KEY_MISSING, INVALID_CONTEXT, TYPE_MISMATCH, PARSE_ERROR, GENERAL = (
    "FLAG_NOT_FOUND",
    "TARGETING_KEY_MISSING",
    "INVALID_CONTEXT",
    "TYPE_MISMATCH",
    "PARSE_ERROR",
    "GENERAL",
)
TARGETING_KEY = "targetingKey"
_MAX_INT32 = 2**31 - 1


@dataclass(frozen=True)
class Condition:
    """One test on an attribute of the evaluation context. A missing attribute matches nothing, not even
    `not_in` (a context that does not say its region is not "outside eu-west-1": it is unknown)."""

    attribute: str
    op: str  # one of OPERATORS
    values: tuple[str, ...]

    def matches(self, context: Mapping[str, Any]) -> bool:
        if self.attribute not in context or context[self.attribute] is None:
            return False
        got = _text(context[self.attribute])
        if self.op == "equals":
            return got == self.values[0]
        if self.op == "in":
            return got in self.values
        if self.op == "not_in":
            return got not in self.values
        if self.op == "starts_with":
            return any(got.startswith(v) for v in self.values)
        if self.op == "semver_gte":
            order = compare_versions(got, self.values[0])
            return order is not None and order >= 0
        return False

    def describe(self) -> str:
        if self.op == "equals":
            return f"{self.attribute}={self.values[0]}"
        if self.op == "in":
            return f"{self.attribute}={','.join(self.values)}"
        if self.op == "not_in":
            return f"{self.attribute}!={','.join(self.values)}"
        if self.op == "starts_with":
            return f"{self.attribute}^={','.join(self.values)}"
        return f"{self.attribute}>={self.values[0]}"

    def to_dict(self) -> dict[str, Any]:
        return {"attribute": self.attribute, "op": self.op, "values": list(self.values)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Condition:
        return cls(str(data["attribute"]), str(data["op"]), tuple(str(v) for v in data["values"]))


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclass(frozen=True)
class Segment:
    """A named group of contexts (`[segments.beta]`): every condition must match."""

    name: str
    conditions: tuple[Condition, ...]
    description: str = ""

    def matches(self, context: Mapping[str, Any]) -> bool:
        return all(c.matches(context) for c in self.conditions)


@dataclass(frozen=True)
class Rule:
    """Contexts in the segment (if any) that match every condition get the variant."""

    variant: str
    conditions: tuple[Condition, ...] = ()
    segment: str | None = None

    def matches(self, context: Mapping[str, Any], segments: Mapping[str, Segment]) -> bool:
        if self.segment is not None:
            seg = segments.get(self.segment)
            if seg is None or not seg.matches(context):
                return False
        return all(c.matches(context) for c in self.conditions)

    def describe(self) -> str:
        who = [f"segment {self.segment}"] if self.segment else []
        who += [c.describe() for c in self.conditions]
        return f"{' and '.join(who) or 'everyone'} → {self.variant}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "variant": self.variant,
            "conditions": [c.to_dict() for c in self.conditions],
            "segment": self.segment,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Rule:
        return cls(
            str(data["variant"]),
            tuple(Condition.from_dict(c) for c in data.get("conditions", ())),
            data.get("segment"),
        )


@dataclass(frozen=True)
class FlagDef:
    """A flag as the config declares it (`[flags.KEY]`)."""

    key: str
    type: str  # one of FLAG_TYPES
    variants: Mapping[str, Any]
    default_variant: str  # what an enabled flag answers when nothing else decides
    off_variant: str  # what a disabled or killed flag answers
    on_variant: str  # what `on`, a percentage and a rollout turn on
    description: str = ""
    owner: str = ""
    services: tuple[str, ...] = ()

    def value(self, variant: str) -> Any:
        return self.variants[variant]


@dataclass(frozen=True)
class FlagState:
    """What one environment has set for a flag. `split`: (variant, weight) in order, weights summing to
    100; empty: no split. `killed`: turned off by the kill switch (shown until it is turned on again)."""

    enabled: bool = False
    default_variant: str | None = None  # None: the flag's own
    rules: tuple[Rule, ...] = ()
    split: tuple[tuple[str, float], ...] = ()
    killed: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "default_variant": self.default_variant,
            "rules": [r.to_dict() for r in self.rules],
            "split": [[v, w] for v, w in self.split],
            "killed": self.killed,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FlagState:
        return cls(
            enabled=bool(data.get("enabled", False)),
            default_variant=data.get("default_variant"),
            rules=tuple(Rule.from_dict(r) for r in data.get("rules", ())),
            split=tuple((str(v), float(w)) for v, w in data.get("split", ())),
            killed=bool(data.get("killed", False)),
        )


# What each change makes of a state (the app layer checks who may, records it, and stores the result).


def turned_on(flag: FlagDef, state: FlagState) -> FlagState:
    """Everyone gets the on variant; rules and a split are cleared."""
    return FlagState(enabled=True, default_variant=flag.on_variant)


def turned_off(flag: FlagDef, state: FlagState, *, killed: bool = False) -> FlagState:
    """Everyone gets the off variant (the rules and split are kept, to be seen; they do not apply)."""
    return replace(state, enabled=False, killed=killed)


def at_percent(flag: FlagDef, state: FlagState, percent: float) -> FlagState:
    """The on variant for `percent` of targeting keys (the on variant's range comes first: monotonic);
    the rest get the off variant. Rules are kept and still come first."""
    split = ((flag.on_variant, float(percent)), (flag.off_variant, 100.0 - float(percent)))
    return FlagState(enabled=True, default_variant=flag.off_variant, rules=state.rules, split=split)


def on_for(flag: FlagDef, state: FlagState, rule: Rule) -> FlagState:
    """The rule's contexts get its variant; a rule on the same attributes and segment is replaced. Those
    it does not match keep what they had (off, when the flag was off)."""
    same = [r for r in state.rules if _subject(r) != _subject(rule)]
    default = state.default_variant if state.enabled else flag.off_variant
    split = state.split if state.enabled else ()
    return FlagState(enabled=True, default_variant=default, rules=(*same, rule), split=split)


def with_variants(flag: FlagDef, state: FlagState, weights: Sequence[tuple[str, float]]) -> FlagState:
    """An A/B split: each variant its weight of targeting keys (weights sum to 100)."""
    return FlagState(
        enabled=True,
        default_variant=state.default_variant if state.enabled else flag.default_variant,
        rules=state.rules,
        split=tuple((v, float(w)) for v, w in weights),
    )


def _subject(rule: Rule) -> tuple[str | None, tuple[str, ...]]:
    return rule.segment, tuple(sorted(c.attribute for c in rule.conditions))


def percent_on(flag: FlagDef, state: FlagState) -> float | None:
    """How much of the split the on variant has (None: no split, or the flag is off)."""
    if not state.enabled or not state.split:
        return None
    return sum(w for v, w in state.split if v == flag.on_variant)


def describe(flag: FlagDef, state: FlagState) -> str:
    """One line for people: what the flag answers in this environment."""
    if state.killed:
        return f"killed: everyone gets {flag.off_variant}"
    if not state.enabled:
        return f"off: everyone gets {flag.off_variant}"
    parts = [f"rule {r.describe()}" for r in state.rules]
    if state.split:
        parts.append("split " + ", ".join(f"{v} {_num(w)}%" for v, w in state.split))
    else:
        parts.append(
            f"{'others' if state.rules else 'everyone'} get {state.default_variant or flag.default_variant}"
        )
    return "on: " + "; ".join(parts)


def _num(weight: float) -> str:
    return f"{weight:g}"


# Evaluation


@dataclass(frozen=True)
class Evaluation:
    """One flag's answer to one context, as OFREP reports it."""

    key: str
    value: Any = None
    variant: str | None = None
    reason: str = ERROR
    error_code: str | None = None
    error_details: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error_code is None

    def to_ofrep(self) -> dict[str, Any]:
        if self.error_code is not None:
            return {"key": self.key, "errorCode": self.error_code, "errorDetails": self.error_details or ""}
        body: dict[str, Any] = {"key": self.key, "value": self.value, "reason": self.reason}
        if self.variant is not None:
            body["variant"] = self.variant
        if self.metadata:
            body["metadata"] = dict(self.metadata)
        return body


def bucket(flag_key: str, targeting_key: str) -> float:
    """Where a targeting key falls for a flag, in [0, 100] (flagd's fractional evaluation)."""
    value = murmur3_32(_utf8(flag_key + targeting_key))
    signed = value - 2**32 if value >= 2**31 else value
    return abs(signed) / _MAX_INT32 * 100


def _utf8(text: str) -> bytes:
    """UTF-8, with a lone surrogate (JSON can carry "\\ud800") as U+FFFD, as Go's and JavaScript's
    decoders make it: the same key hashes alike everywhere, and no key is an error."""
    try:
        return text.encode()
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (unsigned), standard library only; tests check it against mmh3."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def pick(split: Sequence[tuple[str, float]], at: float) -> str:
    """The variant whose range holds the bucket; ranges follow the split's order."""
    total = sum(w for _, w in split) or 1.0
    end = 0.0
    for variant, weight in split:
        end += weight * 100 / total
        if at < end:
            return variant
    return split[-1][0]


def context_error(context: Any) -> str | None:
    """Why a context cannot be evaluated (INVALID_CONTEXT), or None."""
    if not isinstance(context, Mapping):
        return "the context must be a JSON object"
    key = context.get(TARGETING_KEY)
    if key is not None and not isinstance(key, str):
        return "targetingKey must be a string"
    return None


def evaluate(
    key: str,
    flag: FlagDef | None,
    state: FlagState | None,
    context: Mapping[str, Any],
    segments: Mapping[str, Segment],
) -> Evaluation:
    """The answer of one flag to one context (the context is checked first: context_error)."""
    if flag is None:
        return Evaluation(key, error_code=FLAG_NOT_FOUND, error_details=f"flag {key!r} is not declared")
    problem = context_error(context)
    if problem is not None:
        return Evaluation(key, error_code=INVALID_CONTEXT, error_details=problem)
    state = state or FlagState()
    if state.killed or not state.enabled:
        return _answer(flag, flag.off_variant, DISABLED)
    for rule in state.rules:
        if rule.matches(context, segments):
            return _answer(flag, rule.variant, TARGETING_MATCH)
    if state.split:
        targeting = context.get(TARGETING_KEY)
        if not targeting:
            return Evaluation(
                key,
                error_code=TARGETING_KEY_MISSING,
                error_details=f"{key} is split by targetingKey; the context has none",
            )
        return _answer(flag, pick(state.split, bucket(key, targeting)), SPLIT)
    return _answer(flag, state.default_variant or flag.default_variant, DEFAULT if state.rules else STATIC)


def _answer(flag: FlagDef, variant: str, reason: str) -> Evaluation:
    return Evaluation(flag.key, flag.value(variant), variant, reason)


@dataclass(frozen=True)
class FlagSnapshot:
    """Every flag of one environment as it is now: what the OFREP server evaluates against, replaced whole
    on a change (never read from the database per request). `etag` changes exactly when an answer may."""

    env: str
    flags: Mapping[str, FlagDef]
    states: Mapping[str, FlagState]
    segments: Mapping[str, Segment]
    etag: str

    @classmethod
    def build(
        cls,
        env: str,
        flags: Mapping[str, FlagDef],
        states: Mapping[str, FlagState],
        segments: Mapping[str, Segment],
        config_digest: str = "",
    ) -> FlagSnapshot:
        body = json.dumps(
            [config_digest, {k: states[k].to_dict() for k in sorted(states) if k in flags}], sort_keys=True
        )
        etag = '"' + hashlib.sha256(body.encode()).hexdigest()[:32] + '"'
        return cls(env, dict(flags), dict(states), dict(segments), etag)

    def evaluate(self, key: str, context: Mapping[str, Any]) -> Evaluation:
        return evaluate(key, self.flags.get(key), self.states.get(key), context, self.segments)

    def evaluate_all(self, context: Mapping[str, Any]) -> list[Evaluation]:
        return [self.evaluate(key, context) for key in sorted(self.flags)]


def config_digest(flags: Iterable[FlagDef], segments: Iterable[Segment]) -> str:
    """A digest of the declarations: a config reload that changes a variant's value changes the ETag."""
    data = [
        [
            f.key,
            f.type,
            sorted((k, json.dumps(v, sort_keys=True)) for k, v in f.variants.items()),
            f.default_variant,
            f.off_variant,
            f.on_variant,
        ]
        for f in sorted(flags, key=lambda f: f.key)
    ] + [[s.name, [c.to_dict() for c in s.conditions]] for s in sorted(segments, key=lambda s: s.name)]
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FlagRecord:
    """A flag's stored state in one environment: `revision` counts its changes (0: never changed, the
    declared default: off), so a change is a compare-and-set on it."""

    env: str
    key: str
    state: FlagState
    revision: int = 0
    updated_by: str | None = None
    updated_at: str | None = None


FLAG_SERVICE_PREFIX = "flag:"  # a flag rollout is a deployment of "service" flag:KEY (its own lock)


def flag_service(key: str) -> str:
    return FLAG_SERVICE_PREFIX + key


def flag_key(service: str) -> str | None:
    """The flag a deployment's service names, or None for a service."""
    return service[len(FLAG_SERVICE_PREFIX) :] if service.startswith(FLAG_SERVICE_PREFIX) else None
