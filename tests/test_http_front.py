"""The HTTP front of the bot (handlers.app): which bodies are what Slack sends, and a request's identity."""

import json
from urllib.parse import quote

import pytest

from handlers.app import BadRequest, _signed, parse_slack_body, request_key

FORM = "application/x-www-form-urlencoded"


@pytest.mark.parametrize(
    ("raw", "content_type"),
    [
        (b"", FORM),
        (b"payload=", FORM),
        (b"payload=" + quote("{not json").encode(), FORM),
        (b"payload=" + quote('"a string"').encode(), FORM),
        (b"payload=\xff" + quote("{}").encode(), FORM),
        (b"token=x&team_id=T1", FORM),  # neither a command nor a payload
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"null", "application/json"),
        (b"{broken", "text/plain"),  # bolt reads any body starting with { as JSON
    ],
)
def test_bodies_slack_never_sends_are_bad_requests(raw, content_type):
    with pytest.raises(BadRequest):
        parse_slack_body(raw, content_type)


def test_bodies_slack_sends_parse_as_bolt_reads_them():
    assert parse_slack_body(b"command=%2Fdeploy&text=status&trigger_id=t1", FORM)["command"] == "/deploy"
    payload = {"type": "block_actions", "trigger_id": "t2"}
    assert parse_slack_body(b"payload=" + quote(json.dumps(payload)).encode(), FORM) == payload
    assert parse_slack_body(b'{"type": "url_verification"}', "application/json")["type"] == "url_verification"
    assert parse_slack_body(b"ssl_check=1&token=x", FORM)["ssl_check"] == "1"


def test_a_request_is_known_by_its_trigger_id_else_by_its_signed_timestamp_and_body():
    assert request_key({"trigger_id": "t1"}, "100", b"a") == request_key({"trigger_id": "t1"}, "101", b"b")
    assert request_key({}, "100", b"a") == request_key({}, "100", b"a")
    assert request_key({}, "100", b"a") != request_key({}, "101", b"a")
    assert request_key({}, "100", b"a") != request_key({}, "100", b"b")


def test_the_signature_is_checked_over_the_raw_bytes_even_when_they_are_not_utf8():
    from slack_sdk.signature import SignatureVerifier

    good = SignatureVerifier("s3cret-value").generate_signature(timestamp="100", body="a=b")
    assert _signed("s3cret-value", "100", b"a=b", good)
    assert not _signed("s3cret-value", "100", b"a=c", good)
    assert not _signed("s3cret-value", "100", b"a=\xff", good)
    assert not _signed("other-secret", "100", b"a=b", good)


def test_an_event_is_known_by_its_event_id():
    a = request_key({"event_id": "Ev1", "event": {}}, "100", b"x")
    assert a == request_key({"event_id": "Ev1", "event": {}}, "160", b"y") != request_key({}, "100", b"x")


def test_only_reading_commands_skip_the_replay_claim():
    from handlers.app import reads_only

    for text in (
        "",
        "status",
        "status web",
        "HISTORY web in staging",
        "help",
        "audit 3",
        "schedule",
        "windows web",
    ):
        assert reads_only({"command": "/deploy", "text": text}), text
    for text in (
        "web v2 to staging",
        "freeze staging until +1h x",
        "lock web staging x",
        "approve 3",
        "reject 3 no",
        "unfreeze staging",
        "statusx",
    ):
        assert not reads_only({"command": "/deploy", "text": text}), text
    assert not reads_only({"command": "/rollback", "text": "web"})
    assert not reads_only({"command": "/promote", "text": "help"})  # /promote help reads, but is kept simple
    assert not reads_only({"payload": "{}"})  # clicks are always claimed


async def test_the_bot_app_gives_a_request_every_context_key_bolt_does_with_the_apps_one_client():
    """BotApp replaces bolt's per-request Web API client with the app's one: a bolt upgrade that sets
    another key in a request's context must not go missing here."""
    from slack_bolt.async_app import AsyncApp
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_sdk.web.async_client import AsyncWebClient

    from handlers.app import BotApp

    client = AsyncWebClient(token="xoxb-test", base_url="http://127.0.0.1:9/api/")
    body = "command=%2Fdeploy&text=web+v2+to+staging&user_id=U1&team_id=T1&channel_id=C1"
    contexts = []
    for cls in (AsyncApp, BotApp):
        app = cls(client=client, signing_secret="s", request_verification_enabled=False)
        req = AsyncBoltRequest(body=body, headers={"content-type": ["application/x-www-form-urlencoded"]})
        app._init_context(req)
        contexts.append(req.context)
    bolt, ours = contexts
    assert set(ours) == set(bolt), set(ours) ^ set(bolt)
    assert ours.client is client and ours.token == bolt.token == "xoxb-test"
    assert bolt.client is not client  # bolt's own builds one per request: what BotApp saves
