"""Flags over OFREP, read the way an application reads them: the real openfeature-sdk with the real
openfeature-provider-ofrep, against mount_ofrep on an aiohttp server on loopback (port 0), over a real
FlagBook on a real store file. Raw requests check what the SDK does not send (the bulk route and its
ETag, hostile bodies); every answer's shape is checked against the OpenAPI spec's schemas
(open-feature/protocol, service/openapi.yaml). One test starts `deploybot serve` itself."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp import web
from multidict import CIMultiDict
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

from bot.adapters.ofrep import MAX_BODY_BYTES, mount_ofrep
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.flags import FlagBook
from bot.config.load import parse_settings
from bot.domain.flags import Condition, FlagState, Rule, at_percent, turned_on, with_variants

KEYS = {"staging": "stg-0123456789abcdef", "production": "prd-fedcba9876543210"}
CONFIG = {
    "alerts": {"oncall": False},
    "environments": {"staging": {"load_balancer": "lb-s"}, "production": {"load_balancer": "lb-p"}},
    "services": {"web": {}},
    "flags": {
        "checkout-v2": {"type": "boolean", "services": ["web"]},
        "search-ranking": {"type": "string", "variants": {"control": "classic", "treatment": "learned"},
                           "default_variant": "control"},
        "page-size": {"type": "number", "variants": {"small": 10, "large": 50}, "default_variant": "small"},
        "theme": {"type": "object", "variants": {"light": {"bg": "white"}, "dark": {"bg": "black"}},
                  "default_variant": "light"},
    },
}  # fmt: skip
# the spec's enums (the OpenAPI schema's reasons, plus DEFAULT: OpenFeature's reason for "no rule matched",
# which the spec's description points to and which flagd and the SDK's Reason enum use alike)
REASONS = {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN", "DEFAULT"}
FAILURE_CODES = {"PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"}
VALUE_TYPES = {"checkout-v2": bool, "search-ranking": str, "page-size": int, "theme": dict}


def check_success(body: dict[str, Any]) -> None:
    """evaluationSuccess: key and reason required, variant a string, value of the flag's type."""
    assert set(body) <= {"key", "value", "reason", "variant", "metadata"}, body
    assert isinstance(body["key"], str) and body["reason"] in REASONS and isinstance(body["variant"], str)
    assert isinstance(body["value"], VALUE_TYPES[body["key"]]), body


def check_failure(body: dict[str, Any], codes: set[str] = FAILURE_CODES) -> None:
    """evaluationFailure / flagNotFound: key and errorCode required; errorDetails a string (the provider
    reads it without a default, so it is always there)."""
    assert set(body) <= {"key", "errorCode", "errorDetails", "metadata"}, body
    assert (
        isinstance(body["key"], str) and body["errorCode"] in codes and isinstance(body["errorDetails"], str)
    )


class Server:
    """mount_ofrep on a real aiohttp server on 127.0.0.1, port 0, over a FlagBook on a store file."""

    def __init__(self, book: FlagBook, url: str, session: aiohttp.ClientSession):
        self.book, self.url, self.session = book, url, session

    async def post(
        self, path: str, body: bytes | str | None = None, key: str | None = KEYS["staging"], **headers: str
    ) -> tuple[int, CIMultiDict[str], bytes]:
        if key is not None:
            headers.setdefault("Authorization", f"Bearer {key}")
        data = body.encode() if isinstance(body, str) else body
        async with self.session.post(self.url + path, data=data, headers=headers) as resp:
            return resp.status, resp.headers.copy(), await resp.read()  # headers: case-insensitive

    async def bulk(self, context: Any, **headers: str) -> tuple[int, CIMultiDict[str], bytes]:
        return await self.post("/ofrep/v1/evaluate/flags", json.dumps({"context": context}), **headers)

    async def set(self, env: str, key: str, make: Callable[..., FlagState]) -> None:
        await self.book.change(env, key, make, actor="test", action="flag", summary="set by the test")


@pytest.fixture
async def server(tmp_path: Path):
    settings = parse_settings(CONFIG)
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    book = FlagBook(settings, store)
    await book.load()
    app = web.Application()
    mount_ofrep(app, book.snapshot, KEYS)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    async with aiohttp.ClientSession() as session:
        yield Server(book, f"http://127.0.0.1:{port}", session)
    await runner.cleanup()
    store.close()


@pytest.fixture
def sdk(server: Server):
    """An OpenFeature client per API key, each its own domain. The provider is synchronous (requests):
    its calls run on a thread, so this loop goes on serving them."""
    made: list[str] = []

    def client(key: str = KEYS["staging"]) -> Callable[..., Any]:
        domain = f"ofrep-test-{len(made)}"
        api.set_provider_and_wait(
            OFREPProvider(server.url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}), domain
        )
        made.append(domain)
        of = api.get_client(domain)

        async def call(method: str, flag: str, default: Any, targeting: str | None = None, **attrs: Any):
            context = EvaluationContext(targeting, attrs)
            return await asyncio.to_thread(getattr(of, method), flag, default, context)

        return call

    yield client
    api.clear_providers()


def ctx(targeting: str | None = None, **attrs: Any) -> dict[str, Any]:
    return {**({"targetingKey": targeting} if targeting else {}), **attrs}


# ------------------------------------------------------------------------------------ the SDK's view


async def test_the_sdk_reads_boolean_string_number_and_object_flags_with_their_variant(server, sdk):
    of = sdk()
    off: FlagEvaluationDetails = await of("get_boolean_details", "checkout-v2", True, "user-1")
    assert (off.value, off.variant, off.reason, off.error_code) == (False, "off", Reason.DISABLED, None)
    await server.set("staging", "checkout-v2", turned_on)
    on = await of("get_boolean_details", "checkout-v2", False, "user-1")
    assert (on.value, on.variant, on.reason) == (True, "on", Reason.STATIC)  # a change is served at once

    ranking = await of("get_string_details", "search-ranking", "x", "user-1")
    assert (ranking.value, ranking.variant, ranking.reason) == ("classic", "control", Reason.DISABLED)
    await server.set("staging", "search-ranking", lambda f, s: with_variants(f, s, [("control", 50), ("treatment", 50)]))  # fmt: skip
    seen = {}
    for i in range(40):
        d = await of("get_string_details", "search-ranking", "x", f"user-{i}")
        assert (
            d.reason == Reason.SPLIT and d.value == {"control": "classic", "treatment": "learned"}[d.variant]
        )
        seen[f"user-{i}"] = d.variant
    assert set(seen.values()) == {"control", "treatment"}  # 40 keys: both halves reached (p = 2^-39 not)
    again = await of("get_string_details", "search-ranking", "x", "user-7")
    assert again.variant == seen["user-7"]  # stable for a user

    await server.set("staging", "page-size", turned_on)
    size = await of("get_integer_details", "page-size", 0, "user-1")
    assert (size.value, size.variant) == (50, "large")
    theme = await of("get_object_details", "theme", {}, "user-1")
    assert (theme.value, theme.variant, theme.reason) == ({"bg": "white"}, "light", Reason.DISABLED)


async def test_the_api_key_picks_the_environment(server, sdk):
    await server.set("staging", "checkout-v2", turned_on)
    assert (await sdk(KEYS["staging"])("get_boolean_value", "checkout-v2", False, "u")) is True
    assert (await sdk(KEYS["production"])("get_boolean_value", "checkout-v2", True, "u")) is False
    # the spec's other header, X-API-Key, picks it too
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/checkout-v2", "{}", key=None, **{"X-API-Key": KEYS["production"]})  # fmt: skip
    assert status == 200 and json.loads(raw)["value"] is False


async def test_a_rule_answers_targeting_match_and_default_when_it_does_not_match(server, sdk):
    rule = Rule("on", (Condition("region", "in", ("eu-west-1",)),))
    await server.set("staging", "checkout-v2", lambda f, s: FlagState(enabled=True, default_variant="off", rules=(rule,)))  # fmt: skip
    of = sdk()
    eu = await of("get_boolean_details", "checkout-v2", False, "u1", region="eu-west-1")
    us = await of("get_boolean_details", "checkout-v2", True, "u1", region="us-east-1")
    assert (eu.value, eu.reason, us.value, us.reason) == (True, Reason.TARGETING_MATCH, False, Reason.DEFAULT)


async def test_a_wrong_or_missing_key_gets_401_and_the_sdk_answers_its_default(server, sdk, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = await sdk("stg-0123456789abcdeX")("get_boolean_details", "checkout-v2", True, "u")
    assert (wrong.value, wrong.reason, wrong.error_code) == (True, Reason.ERROR, ErrorCode.GENERAL)
    assert wrong.error_message == "unauthorized"  # what the provider makes of a 401
    path = "/ofrep/v1/evaluate/flags/checkout-v2"
    for headers in (
        {},
        {"Authorization": "Bearer "},
        {"Authorization": "Basic " + KEYS["staging"]},
        {"Authorization": KEYS["staging"]},  # no scheme
        {"X-API-Key": KEYS["staging"] + " x"},
        {"X-API-Key": "ü" * 40},
        {"Authorization": "Bearer " + KEYS["staging"][:-1]},
    ):
        for route in (path, "/ofrep/v1/evaluate/flags"):
            status, got, raw = await server.post(route, "{}", key=None, **headers)
            assert status == 401 and got["WWW-Authenticate"].startswith("Bearer"), headers
            assert (
                "staging" not in raw.decode() and "production" not in raw.decode()
            )  # no hint of which exist
    # a refused key is checked before the body is read: no hint either that the body was wrong
    assert (await server.post(path, "not json", key="nope"))[0] == 401
    logged = caplog.text
    assert "refused an OFREP request" in logged
    assert not any(k in logged or k[:-1] in logged for k in KEYS.values())


async def test_an_unknown_flag_is_flag_not_found_with_404(server, sdk):
    missing = await sdk()("get_boolean_details", "no-such-flag", True, "u")
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/no-such-flag", '{"context": {}}')
    assert status == 404
    body = json.loads(raw)
    check_failure(body, {"FLAG_NOT_FOUND"})
    assert body["key"] == "no-such-flag"


async def test_a_split_without_a_targeting_key_is_targeting_key_missing_with_400(server, sdk):
    await server.set("staging", "checkout-v2", lambda f, s: at_percent(f, s, 25))
    missing = await sdk()("get_boolean_details", "checkout-v2", True, None, region="eu-west-1")
    assert (missing.value, missing.error_code) == (True, ErrorCode.TARGETING_KEY_MISSING)
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/checkout-v2", '{"context": {"region": "x"}}')
    assert status == 400 and json.loads(raw)["errorCode"] == "TARGETING_KEY_MISSING"
    check_failure(json.loads(raw))
    # a targetingKey that is not a string is an invalid context
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/checkout-v2", '{"context": {"targetingKey": 7}}')  # fmt: skip
    assert status == 400 and json.loads(raw)["errorCode"] == "INVALID_CONTEXT"


async def test_type_mismatch_is_the_sdks_to_find(server, sdk):
    """The protocol carries no type (ADR 0003): the server answers the boolean, the client finds that a
    string was asked for and answers the application's default with TYPE_MISMATCH."""
    await server.set("staging", "checkout-v2", turned_on)
    of = sdk()
    assert await of("get_string_value", "checkout-v2", "fallback", "u") == "fallback"
    details = await of("get_string_details", "checkout-v2", "fallback", "u")
    assert details.error_code == ErrorCode.TYPE_MISMATCH
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/checkout-v2", '{"context": {"targetingKey": "u"}}')  # fmt: skip
    assert status == 200 and json.loads(raw)["value"] is True


# ------------------------------------------------------------------------------------ bulk and ETag


async def test_bulk_answers_every_flag_and_an_unchanged_etag_gets_304(server):
    await server.set("staging", "checkout-v2", lambda f, s: at_percent(f, s, 25))
    status, headers, raw = await server.bulk(ctx("user-1", region="eu-west-1"))
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    etag = headers["ETag"]
    assert etag.startswith('"') and etag.endswith('"')
    flags = json.loads(raw)["flags"]
    assert sorted(f["key"] for f in flags) == sorted(CONFIG["flags"])  # type: ignore[arg-type]
    for f in flags:
        check_success(f)

    # the same flags and the same context: 304, no body (the context's key order does not matter)
    status, headers, raw = await server.bulk(ctx("user-1", region="eu-west-1"), **{"If-None-Match": etag})
    assert (status, raw, headers["ETag"]) == (304, b"", etag)
    same = {"region": "eu-west-1", "targetingKey": "user-1"}
    assert (await server.bulk(same, **{"If-None-Match": f'W/{etag}, "other"'}))[0] == 304
    # another context: its own ETag, a full answer
    status, headers, _ = await server.bulk(ctx("user-2", region="eu-west-1"), **{"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag

    # a changed flag: a new ETag and the new answer, though the client still sends the old one
    await server.set("staging", "checkout-v2", turned_on)
    status, headers, raw = await server.bulk(ctx("user-1", region="eu-west-1"), **{"If-None-Match": etag})
    assert status == 200 and headers["ETag"] != etag
    answer = {f["key"]: f for f in json.loads(raw)["flags"]}["checkout-v2"]
    assert (answer["value"], answer["variant"], answer["reason"]) == (True, "on", "STATIC")
    fresh = headers["ETag"]
    assert (await server.bulk(ctx("user-1", region="eu-west-1"), **{"If-None-Match": fresh}))[0] == 304
    # and each environment has its own flags and so its own ETag
    _, prod, _ = await server.bulk(ctx("user-1", region="eu-west-1"), key=KEYS["production"])
    assert prod["ETag"] != fresh


async def test_bulk_reports_a_flag_that_cannot_answer_as_an_item_and_a_bad_context_as_a_whole(server):
    await server.set("staging", "checkout-v2", lambda f, s: at_percent(f, s, 25))
    status, _, raw = await server.bulk({"region": "eu-west-1"})  # no targetingKey: only the split fails
    items = {f["key"]: f for f in json.loads(raw)["flags"]}
    assert status == 200 and items["checkout-v2"]["errorCode"] == "TARGETING_KEY_MISSING"
    check_failure(items["checkout-v2"])
    check_success(items["search-ranking"])
    for bad in ([1, 2], "user-1", {"targetingKey": ["a"]}):
        status, _, raw = await server.bulk(bad)
        body = json.loads(raw)
        assert (
            status == 400 and body["errorCode"] == "INVALID_CONTEXT" and body["errorDetails"]
        )  # bulkEvaluationFailure


# ------------------------------------------------------------------------------------ hostile input

HOSTILE = [
    (b"not json", "PARSE_ERROR"),
    (b"", "PARSE_ERROR"),
    (b"\xff\xfe{}", "PARSE_ERROR"),  # not UTF-8
    (b"[1, 2]", "PARSE_ERROR"),
    (b"null", "PARSE_ERROR"),
    (b'"context"', "PARSE_ERROR"),
    (b'{"context": [1, 2]}', "INVALID_CONTEXT"),
    (b'{"context": "user-1"}', "INVALID_CONTEXT"),
    (b'{"context": 7}', "INVALID_CONTEXT"),
    (b'{"context": {"targetingKey": {"a": 1}}}', "INVALID_CONTEXT"),
    (b'{"context": {"targetingKey": ' + b"9" * 5000 + b"}}", "PARSE_ERROR"),  # past int's digit limit
    (b'{"context": ' + b"[" * 10_000 + b"]" * 10_000 + b"}", "PARSE_ERROR"),  # nested too deep to parse
]


@pytest.mark.parametrize("route", ["/ofrep/v1/evaluate/flags/checkout-v2", "/ofrep/v1/evaluate/flags"])
@pytest.mark.parametrize(("body", "code"), HOSTILE, ids=[f"hostile-{i}" for i in range(len(HOSTILE))])
async def test_a_hostile_body_gets_a_4xx_saying_why_never_a_500(server, route, body, code):
    status, headers, raw = await server.post(route, body, **{"Content-Type": "application/json"})
    answer = json.loads(raw)
    assert status == 400 and answer["errorCode"] == code and answer["errorDetails"], answer


async def test_hostile_contexts_that_parse_are_evaluated_without_harm(server):
    rule = Rule("on", (Condition("region", "in", ("eu",)),))
    await server.set("staging", "checkout-v2", lambda f, s: at_percent(f, FlagState(rules=(rule,)), 25))
    for context in (
        {"targetingKey": "u", "region": {"nested": [1, {"x": None}]}},
        {"targetingKey": "\ud800 lone surrogate", "region": "\u0000"},
        {"targetingKey": "u", "region": float("inf")},
        {"targetingKey": "ü" * 1000, **{f"a{i}": i for i in range(500)}},
    ):
        body = json.dumps({"context": context})
        status, _, raw = await server.post("/ofrep/v1/evaluate/flags/checkout-v2", body)
        assert status == 200, raw
        check_success(json.loads(raw))
        assert (await server.post("/ofrep/v1/evaluate/flags", body))[0] == 200


async def test_a_body_over_the_cap_gets_413_with_or_without_a_length(server):
    huge = json.dumps({"context": {"targetingKey": "u", "pad": "x" * MAX_BODY_BYTES}})
    for route in ("/ofrep/v1/evaluate/flags/checkout-v2", "/ofrep/v1/evaluate/flags"):
        status, _, raw = await server.post(route, huge)
        assert status == 413 and json.loads(raw)["errorCode"] == "PARSE_ERROR"

    async def chunks():  # chunked transfer: no Content-Length to refuse it by
        for _ in range(MAX_BODY_BYTES // 1024 + 2):
            yield b" " * 1024

    url = server.url + "/ofrep/v1/evaluate/flags"
    headers = {"Authorization": f"Bearer {KEYS['staging']}"}
    async with server.session.post(url, data=chunks(), headers=headers) as resp:
        assert resp.status == 413 and resp.headers.get("Content-Length") is not None


@pytest.mark.parametrize(
    "key",
    [
        "../../etc/passwd",
        "a/b",
        "ü-flag",
        "checkout-v2 ",
        "x" * 4000,
        "%00",
        "\x00",
        "checkout-v2/..",
        "'\"<>",
    ],
)
async def test_hostile_flag_keys_are_flag_not_found(server, key):
    status, _, raw = await server.post("/ofrep/v1/evaluate/flags/" + quote(key, safe=""), "{}")
    body = json.loads(raw)
    assert status == 404 and body["errorCode"] == "FLAG_NOT_FOUND" and body["key"] == key


async def test_an_environment_without_a_snapshot_yet_gets_503(tmp_path):
    app = web.Application()
    mount_ofrep(app, lambda env: None, {"staging": "k-1"})
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"  # type: ignore[union-attr]
    try:
        async with aiohttp.ClientSession(headers={"Authorization": "Bearer k-1"}) as s:
            for route in ("/ofrep/v1/evaluate/flags/checkout-v2", "/ofrep/v1/evaluate/flags"):
                async with s.post(url + route, data=b"{}") as resp:
                    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
                    assert "errorDetails" in await resp.json()  # the spec's generalErrorResponse
    finally:
        await runner.cleanup()


# ------------------------------------------------------------------------------------ deploybot serve


async def test_deploybot_serve_serves_the_shipped_flags_over_ofrep(tmp_path):
    """The composition root mounts OFREP beside /healthz, with each environment's key from the
    environment (DEPLOYBOT_OFREP_KEY_<ENV>), and never logs the key."""
    from bot.sandbox.run import BotProcess

    config = Path(__file__).resolve().parent.parent / "config" / "deploybot.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "DEPLOYBOT_"))}
    env.update(
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_SIGNING_SECRET="signing-secret-test",
        SLACK_API_URL="http://127.0.0.1:9/api/",  # nothing listens: the bot's Slack calls fail fast
        DEPLOYBOT_OFREP_KEY_STAGING=KEYS["staging"],
        AWS_ACCESS_KEY_ID="x",
        AWS_SECRET_ACCESS_KEY="x",
        AWS_DEFAULT_REGION="us-east-1",
        DEPLOYBOT_PARENT_PID=str(os.getpid()),
    )
    args = ["--host", "127.0.0.1", "--port", "0", "--config", str(config), "--db", str(tmp_path / "db")]
    bot = BotProcess(env, args, tmp_path / "bot.log")
    url = await bot.start()
    try:
        domain = "ofrep-serve"
        api.set_provider_and_wait(
            OFREPProvider(url, headers_factory=lambda: {"Authorization": f"Bearer {KEYS['staging']}"}), domain
        )
        of = api.get_client(domain)
        details = await asyncio.to_thread(
            of.get_string_details, "search-ranking", "x", EvaluationContext("user-1")
        )
        assert (details.value, details.variant, details.reason) == ("classic", "control", Reason.DISABLED)
        async with aiohttp.ClientSession() as s:
            async with s.post(url + "/ofrep/v1/evaluate/flags", data=b"{}") as resp:
                assert resp.status == 401
            async with s.get(url + "/healthz") as resp:
                assert resp.status == 200
    finally:
        api.clear_providers()
        await bot.stop()
    log = (tmp_path / "bot.log").read_text()
    assert "OFREP: serving the flags of staging" in log and KEYS["staging"] not in log
