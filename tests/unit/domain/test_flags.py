"""Flag evaluation, pure: the flagd-compatible bucket, splits that are stable and monotonic, rules and
segments in order, OFREP's reasons and error codes, and the snapshot's ETag."""

from __future__ import annotations

import random
import string
from collections import Counter

import mmh3
import pytest

from bot.domain.flags import (
    Condition,
    FlagDef,
    FlagSnapshot,
    FlagState,
    Rule,
    Segment,
    at_percent,
    bucket,
    evaluate,
    murmur3_32,
    on_for,
    percent_on,
    pick,
    turned_off,
    turned_on,
    with_variants,
)

FLAG = FlagDef("checkout-v2", "boolean", {"on": True, "off": False}, "off", "off", "on")
AB = FlagDef(
    "search-ranking", "string", {"control": "a", "treatment": "b"}, "control", "control", "treatment"
)
BETA = {"beta": Segment("beta", (Condition("plan", "in", ("beta", "staff")),))}


def test_murmur3_is_the_c_librarys_for_any_bytes():
    rng = random.Random(7)
    for n in range(600):
        data = bytes(rng.randrange(256) for _ in range(n % 41))
        assert murmur3_32(data) == mmh3.hash(data, 0, signed=False), data
    assert murmur3_32(b"checkout-v2user-1") == mmh3.hash("checkout-v2user-1", 0, signed=False)
    assert murmur3_32("ü🙂".encode()) == mmh3.hash("ü🙂".encode(), 0, signed=False)


def test_the_bucket_is_flagds_fractional_evaluation():
    # flagd: abs(int32(murmur3(flagKey + targetingKey))) / MaxInt32 * 100
    for key in ("user-1", "user-2", "", "ü"):
        signed = mmh3.hash("checkout-v2" + key, 0, signed=True)
        assert bucket("checkout-v2", key) == pytest.approx(abs(signed) / (2**31 - 1) * 100)
        assert 0 <= bucket("checkout-v2", key) <= 100.0000001
    assert pick([("a", 25), ("b", 75)], 24.99) == "a" and pick([("a", 25), ("b", 75)], 25.0) == "b"
    assert pick([("a", 50), ("b", 50)], 100.0000001) == "b"  # the very top still lands somewhere


def test_a_targeting_key_with_a_lone_surrogate_buckets_as_its_replacement_character():
    # JSON may carry "\ud800" alone; Go's and JavaScript's decoders read it as U+FFFD, and so does the bucket
    assert bucket("checkout-v2", "\ud800user") == bucket("checkout-v2", "\ufffduser")
    assert bucket("checkout-v2", "\ud83d\ude42") == bucket("checkout-v2", "🙂")  # a pair is its character
    state = at_percent(FLAG, FlagState(), 50)
    assert evaluate(FLAG.key, FLAG, state, {"targetingKey": "\udfff"}, {}).reason == "SPLIT"


def test_a_percentage_is_accurate_stable_and_monotonic():
    keys = [f"user-{i}" for i in range(4000)]

    def on(percent: float) -> set[str]:
        state = at_percent(FLAG, FlagState(), percent)
        return {k for k in keys if evaluate(FLAG.key, FLAG, state, {"targetingKey": k}, {}).value is True}

    shares = {p: on(p) for p in (5, 25, 50, 100)}
    for p, users in shares.items():
        assert abs(len(users) / len(keys) - p / 100) < 0.02, p
    assert shares[5] <= shares[25] <= shares[50] <= shares[100] == set(keys)
    assert on(25) == shares[25]
    # another flag's buckets are independent of this one's
    other = FlagDef("other", "boolean", {"on": True, "off": False}, "off", "off", "on")
    state = at_percent(other, FlagState(), 25)
    theirs = {k for k in keys if evaluate("other", other, state, {"targetingKey": k}, {}).value}
    assert 0.15 < len(theirs & shares[25]) / len(shares[25]) < 0.35


def test_reasons_in_order_disabled_rules_split_default():
    ctx = {"targetingKey": "u1", "region": "eu-west-1"}
    assert evaluate(FLAG.key, FLAG, None, ctx, {}).reason == "DISABLED"
    assert evaluate(FLAG.key, FLAG, turned_on(FLAG, FlagState()), ctx, {}).reason == "STATIC"
    rule = Rule("on", (Condition("region", "in", ("eu-west-1", "eu-central-1")),))
    ruled = on_for(FLAG, FlagState(), rule)
    assert (
        evaluate(FLAG.key, FLAG, ruled, ctx, {}).reason,
        evaluate(FLAG.key, FLAG, ruled, ctx, {}).value,
    ) == (
        "TARGETING_MATCH",
        True,
    )
    us = evaluate(FLAG.key, FLAG, ruled, {"targetingKey": "u1", "region": "us-east-1"}, {})
    assert (us.reason, us.value) == ("DEFAULT", False)
    assert evaluate(FLAG.key, FLAG, ruled, {"targetingKey": "u1"}, {}).value is False  # no region: no match
    split = at_percent(FLAG, ruled, 50)
    assert evaluate(FLAG.key, FLAG, split, ctx, {}).reason == "TARGETING_MATCH"  # rules come first
    assert evaluate(FLAG.key, FLAG, split, {"targetingKey": "u9"}, {}).reason == "SPLIT"
    killed = turned_off(FLAG, split, killed=True)
    answer = evaluate(FLAG.key, FLAG, killed, ctx, {})
    assert (answer.reason, answer.value, answer.variant) == ("DISABLED", False, "off")
    assert killed.rules == split.rules  # kept, to be seen; they do not apply


def test_errors_are_ofreps_codes():
    assert evaluate("nope", None, None, {}, {}).to_ofrep()["errorCode"] == "FLAG_NOT_FOUND"
    split = at_percent(FLAG, FlagState(), 10)
    missing = evaluate(FLAG.key, FLAG, split, {"region": "x"}, {})
    assert missing.error_code == "TARGETING_KEY_MISSING" and "value" not in missing.to_ofrep()
    assert evaluate(FLAG.key, FLAG, split, {"targetingKey": 7}, {}).error_code == "INVALID_CONTEXT"
    assert evaluate(FLAG.key, FLAG, split, ["not", "a", "map"], {}).error_code == "INVALID_CONTEXT"  # type: ignore[arg-type]
    # a static answer needs no targeting key
    assert evaluate(FLAG.key, FLAG, turned_on(FLAG, FlagState()), {}, {}).value is True


def test_operators_and_segments():
    ctx = {"targetingKey": "u", "plan": "beta", "version": "2.10.0", "email": "a@corp.example", "n": 3}
    assert Condition("plan", "equals", ("beta",)).matches(ctx)
    assert Condition("plan", "not_in", ("free",)).matches(ctx) and not Condition(
        "plan", "not_in", ("beta",)
    ).matches(ctx)
    assert not Condition("missing", "not_in", ("x",)).matches(ctx)  # unknown is not "outside"
    assert Condition("email", "starts_with", ("b@", "a@")).matches(ctx)
    assert Condition("version", "semver_gte", ("2.3.0",)).matches(ctx)  # 2.10 > 2.3: numeric, not text
    assert not Condition("version", "semver_gte", ("2.11",)).matches(ctx)
    assert Condition("n", "in", ("3",)).matches(ctx)  # numbers compare as their text
    rule = Rule("treatment", segment="beta")
    state = on_for(AB, FlagState(), rule)
    assert evaluate(AB.key, AB, state, ctx, BETA).variant == "treatment"
    assert evaluate(AB.key, AB, state, {**ctx, "plan": "free"}, BETA).variant == "control"
    assert evaluate(AB.key, AB, state, ctx, {}).variant == "control"  # a segment not declared matches none
    # a rule on the same attribute replaces the earlier one; others stay, in order
    r1 = Rule("on", (Condition("region", "in", ("eu-west-1",)),))
    r2 = Rule("on", (Condition("region", "in", ("us-east-1",)),))
    r3 = Rule("on", (Condition("plan", "in", ("beta",)),))
    s = on_for(FLAG, on_for(FLAG, on_for(FLAG, FlagState(), r1), r3), r2)
    assert s.rules == (r3, r2)


def test_an_ab_split_reports_its_variants():
    state = with_variants(AB, FlagState(), [("control", 50), ("treatment", 50)])
    got = Counter(evaluate(AB.key, AB, state, {"targetingKey": f"k{i}"}, {}).variant for i in range(4000))
    assert abs(got["control"] - 2000) < 120 and abs(got["treatment"] - 2000) < 120
    assert percent_on(AB, state) == 50 and percent_on(AB, FlagState()) is None


def test_state_round_trips_and_the_etag_follows_answers():
    rule = Rule("on", (Condition("region", "in", ("eu-west-1",)),), None)
    state = at_percent(FLAG, on_for(FLAG, FlagState(), rule), 25)
    assert FlagState.from_dict(state.to_dict()) == state
    a = FlagSnapshot.build("staging", {FLAG.key: FLAG}, {FLAG.key: state}, {}, "d1")
    b = FlagSnapshot.build("staging", {FLAG.key: FLAG}, {FLAG.key: state}, {}, "d1")
    c = FlagSnapshot.build("staging", {FLAG.key: FLAG}, {FLAG.key: at_percent(FLAG, state, 26)}, {}, "d1")
    d = FlagSnapshot.build("staging", {FLAG.key: FLAG}, {FLAG.key: state}, {}, "d2")  # a config change
    assert a.etag == b.etag and len({a.etag, c.etag, d.etag}) == 3
    assert [e.key for e in a.evaluate_all({"targetingKey": "u"})] == ["checkout-v2"]


@pytest.mark.parametrize("seed", range(3))
def test_hostile_contexts_never_raise(seed):
    rng = random.Random(seed)
    state = at_percent(FLAG, on_for(FLAG, FlagState(), Rule("on", segment="beta")), 30)
    for _ in range(300):
        ctx = {
            "".join(rng.choices(string.printable, k=rng.randrange(8))): rng.choice(
                [None, 1, 1.5, True, "x" * rng.randrange(300), [1, 2], {"a": {"b": 1}}, "\u202e\x00"]
            )
            for _ in range(rng.randrange(6))
        }
        if rng.random() < 0.5:
            ctx["targetingKey"] = rng.choice(["", "u", "\x00" * 5, "🙂" * 40, "\ud800"])
        answer = evaluate(FLAG.key, FLAG, state, ctx, BETA)
        assert answer.reason in ("TARGETING_MATCH", "SPLIT", "ERROR") and answer.to_ofrep()["key"] == FLAG.key
