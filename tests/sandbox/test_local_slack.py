"""The sandbox's local Slack: Web API round trips through a real slack_sdk client, and slash commands and
clicks delivered, signed, to a real slack_bolt app on loopback."""

from __future__ import annotations

import asyncio
import json
import re
import time

import aiohttp
import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from bot.clock import ManualClock
from bot.sandbox.slack import LocalSlack, LocalSlackError

SECRET = "sandbox-signing-secret"
TOKEN = "xoxb-sandbox-token"
DEADLINE_S = 5


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def button(label: str, action_id: str, value: str | None = None) -> dict:
    b = {"type": "button", "text": {"type": "plain_text", "text": label}, "action_id": action_id}
    return b if value is None else {**b, "value": value}


def option(label: str, value: str) -> dict:
    return {"text": {"type": "plain_text", "text": label}, "value": value}


APPROVAL_BLOCKS = [
    section("*checkout* v42 to production?"),
    {
        "type": "actions",
        "block_id": "decision",
        "elements": [button("Approve", "approve", "dep-1"), button("Reject", "reject", "dep-1")],
    },
    {
        "type": "section",
        "block_id": "checks",
        "text": {"type": "mrkdwn", "text": "Checklist"},
        "accessory": {
            "type": "checkboxes",
            "action_id": "checklist",
            "options": [option("Tests green", "tests"), option("Changelog written", "changelog")],
            "initial_options": [option("Tests green", "tests")],
        },
    },
]


@pytest.fixture
async def slack():
    local = LocalSlack(signing_secret=SECRET, bot_token=TOKEN, clock=ManualClock())
    await local.start()
    yield local
    await local.stop()


@pytest.fixture
def client(slack: LocalSlack) -> AsyncWebClient:
    return AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/")


class Seen:
    """What reached the bolt app, in arrival order."""

    def __init__(self):
        self.commands: asyncio.Queue = asyncio.Queue()
        self.actions: asyncio.Queue = asyncio.Queue()
        self.release = asyncio.Event()

    @staticmethod
    async def next(queue: asyncio.Queue):
        return await asyncio.wait_for(queue.get(), DEADLINE_S)


@pytest.fixture
async def bot(slack: LocalSlack):
    """A real bolt AsyncApp served over HTTP, its Web API pointed at the local Slack."""
    app = AsyncApp(signing_secret=SECRET, client=AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"))
    seen = Seen()

    @app.command("/deploy")
    async def deploy(ack, command, request):
        await ack(f"Deploy of {command['text']} requested")
        await seen.commands.put((command, request.headers))

    @app.command("/announce")
    async def announce(ack, command):
        await ack(response_type="in_channel", text=f"<@{command['user_id']}> announces {command['text']}")

    @app.command("/broken")
    async def broken(ack):
        await ack(blocks=[{"type": "no-such-block"}])

    @app.command("/slow")
    async def slow(ack):
        await seen.release.wait()  # a bot that misses Slack's ack deadline
        await ack()

    @app.action("approve")
    async def approve(ack, body, respond):
        await ack()
        await respond(replace_original=True, text=f"Approved by <@{body['user']['id']}>")
        await seen.actions.put(body)

    @app.action("reject")
    async def reject(ack, body):
        await ack()
        await seen.actions.put(body)

    @app.action("checklist")
    async def checklist(ack, body):
        await ack()
        await seen.actions.put(body)

    runner = web.AppRunner(app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    slack.bot_events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    yield seen
    seen.release.set()
    await runner.cleanup()


async def control(slack: LocalSlack, verb: str, path: str, **kwargs) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as session, session.request(verb, slack.url + path, **kwargs) as resp:
        return resp.status, await resp.json()


# ---------------------------------------------------------------- Web API


async def test_auth_test_describes_the_bot(client):
    r = await client.auth_test()
    assert (r["user"], r["user_id"], r["bot_id"], r["team_id"]) == (
        "deploybot",
        "U0DEPLOYBOT",
        "B0DEPLOYBOT",
        "T0SANDBOX",
    )
    assert r["is_enterprise_install"] is False


async def test_post_by_name_or_id_then_update(slack, client):
    first = await client.chat_postMessage(channel="#deploys", text="one")
    second = await client.chat_postMessage(channel="deploys", text="two", blocks=[section("*two*")])
    third = await client.chat_postMessage(channel="C0DEPLOYS", text="three")
    assert {first["channel"], second["channel"], third["channel"]} == {"C0DEPLOYS"}
    assert float(first["ts"]) < float(second["ts"]) < float(third["ts"])  # unique even on a frozen clock
    assert re.fullmatch(r"\d{10}\.\d{6}", first["ts"])
    assert second["message"]["bot_id"] == "B0DEPLOYBOT" and second["message"]["blocks"][0]["block_id"]

    updated = await client.chat_update(
        channel="C0DEPLOYS", ts=second["ts"], text="two!", blocks=[section("2")]
    )
    assert updated["message"]["edited"]["ts"]

    stored = slack.messages("deploys")
    assert [m["text"] for m in stored] == ["one", "two!", "three"]
    assert [m["edited"] for m in stored] == [False, True, False]
    assert stored[1]["blocks"][0]["text"]["text"] == "2" and stored[1]["user"] == "U0DEPLOYBOT"
    history = await client.conversations_history(channel="C0DEPLOYS")
    assert [m["text"] for m in history["messages"]] == ["three", "two!", "one"]  # newest first, like Slack


async def test_update_refuses_missing_and_foreign_messages(slack, client):
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C0DEPLOYS", ts="1.000001", text="x")
    assert e.value.response["error"] == "message_not_found"
    human = slack.say("alice", "deploys", "hello bot")
    with pytest.raises(SlackApiError) as e:
        await client.chat_update(channel="C0DEPLOYS", ts=human["ts"], text="x")
    assert e.value.response["error"] == "cant_update_message"


async def test_threads_and_replies(slack, client):
    parent = await client.chat_postMessage(channel="deploys", text="deploying")
    reply = await client.chat_postMessage(channel="deploys", text="10%", thread_ts=parent["ts"])
    await client.chat_postMessage(channel="deploys", text="50%", thread_ts=reply["ts"])  # lands in the thread

    replies = await client.conversations_replies(channel="C0DEPLOYS", ts=parent["ts"])
    assert [m["text"] for m in replies["messages"]] == ["deploying", "10%", "50%"]
    assert replies["messages"][0]["reply_count"] == 2
    history = await client.conversations_history(channel="C0DEPLOYS")
    assert [m["text"] for m in history["messages"]] == ["deploying"]
    assert [m["thread_ts"] for m in slack.messages("deploys")] == [None, parent["ts"], parent["ts"]]
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="deploys", text="x", thread_ts="1.000009")
    assert e.value.response["error"] == "thread_not_found"


async def test_ephemeral_is_stored_for_one_user_and_hidden_from_history(slack, client):
    r = await client.chat_postEphemeral(channel="deploys", user="U0BOB", text="only bob")
    stored = slack.messages("C0DEPLOYS")
    assert [(m["ts"], m["ephemeral_for"]) for m in stored] == [(r["message_ts"], "U0BOB")]
    assert (await client.conversations_history(channel="C0DEPLOYS"))["messages"] == []


async def test_dm_by_user_id(slack, client):
    r = await client.chat_postMessage(channel="U0BOB", text="please approve")
    assert r["channel"] == "D0BOB"
    assert [m["text"] for m in slack.messages("@bob")] == ["please approve"]


async def test_form_encoded_calls_parse_json_fields(slack, client):
    blocks = json.dumps([section("from a form")])
    r = await client.api_call("chat.postMessage", data={"channel": "deploys", "text": "t", "blocks": blocks})
    assert r["message"]["blocks"][0]["text"]["text"] == "from a form"
    with pytest.raises(SlackApiError) as e:
        await client.api_call("chat.postMessage", data={"channel": "deploys", "blocks": json.dumps([{}])})
    assert e.value.response["error"] == "invalid_blocks"


INVALID_BLOCKS = {
    "unknown type": [{"type": "no-such-block"}],
    "section over 3000": [section("x" * 3001)],
    "51 blocks": [section("x")] * 51,
    "long action_id": [{"type": "actions", "elements": [button("Go", "a" * 256)]}],
    "long block_id": [{**section("x"), "block_id": "b" * 256}],
    "26 actions": [{"type": "actions", "elements": [button(f"b{i}", f"b{i}") for i in range(26)]}],
    "11 checkboxes": [
        {
            "type": "actions",
            "elements": [{"type": "checkboxes", "options": [option(str(i), str(i)) for i in range(11)]}],
        }
    ],
    "not a list": {"type": "section"},
}


@pytest.mark.parametrize("blocks", INVALID_BLOCKS.values(), ids=INVALID_BLOCKS.keys())
async def test_invalid_blocks_are_refused_and_nothing_stored(slack, client, blocks):
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="deploys", text="fallback", blocks=blocks)
    assert e.value.response.status_code == 200
    assert e.value.response["error"] == "invalid_blocks" and e.value.response["errors"]
    assert slack.messages("deploys") == []
    assert slack.rejected == 1
    assert slack.calls[-1] | {"at": 0, "wall": 0} == {
        "method": "chat.postMessage",
        "channel": "C0DEPLOYS",
        "ok": False,
        "error": "invalid_blocks",
        "at": 0,
        "wall": 0,
    }


async def test_text_limits(slack, client):
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="deploys", text="x" * 40_001)
    assert e.value.response["error"] == "msg_too_long"
    with pytest.raises(SlackApiError) as e:
        await client.api_call("chat.postMessage", json={"channel": "deploys"})
    assert e.value.response["error"] == "no_text"
    assert slack.messages("deploys") == [] and slack.rejected == 2


async def test_auth_and_argument_errors(slack):
    errors = {}
    cases = {
        "invalid_auth": (AsyncWebClient(token="xoxb-wrong", base_url=slack.url + "/api/"), "auth.test", {}),
        "not_authed": (AsyncWebClient(base_url=slack.url + "/api/"), "auth.test", {}),
        "unknown_method": (AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"), "chat.nope", {}),
        "channel_not_found": (
            AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"),
            "chat.postMessage",
            {"channel": "#nope", "text": "x"},
        ),
        "invalid_arguments": (
            AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"),
            "chat.postMessage",
            {"text": "x"},
        ),
    }
    for expected, (c, method, body) in cases.items():
        with pytest.raises(SlackApiError) as e:
            await c.api_call(method, json=body)
        errors[expected] = e.value.response["error"]
    assert errors == {k: k for k in cases}
    assert [c["ok"] for c in slack.calls] == [False] * 5


async def test_world_lookups(client):
    users = await client.users_list()
    assert {u["name"]: u["id"] for u in users["members"]} == {
        "alice": "U0ALICE",
        "bob": "U0BOB",
        "carol": "U0CAROL",
        "dave": "U0DAVE",
        "deploybot": "U0DEPLOYBOT",
    }
    alice = (await client.users_info(user="U0ALICE"))["user"]
    assert (alice["real_name"], alice["tz"], alice["tz_offset"], alice["is_bot"]) == (
        "Alice Adler",
        "Europe/Berlin",
        3600,  # ManualClock starts on 2026-01-01: winter time
        False,
    )
    channels = await client.conversations_list()
    assert {c["name"]: c["id"] for c in channels["channels"]} == {
        "deploys": "C0DEPLOYS",
        "incidents": "C0INCIDENTS",
        "deploys-log": "C0DEPLOYSLOG",
    }
    assert (await client.conversations_info(channel="C0INCIDENTS"))["channel"]["name"] == "incidents"

    groups = await client.usergroups_list(include_users=True)
    assert {g["handle"]: (g["id"], g["users"]) for g in groups["usergroups"]} == {
        "release-managers": ("S0RELEASE", ["U0BOB"]),
        "oncall": ("S0ONCALL", ["U0CAROL"]),
        "engineers": ("S0ENG", ["U0ALICE", "U0BOB", "U0CAROL"]),
    }
    assert (await client.usergroups_users_list(usergroup="S0RELEASE"))["users"] == ["U0BOB"]
    with pytest.raises(SlackApiError) as e:
        await client.usergroups_users_list(usergroup="S0NOPE")
    assert e.value.response["error"] == "no_such_subteam"


async def test_views_publish_stores_the_home_tab(slack, client):
    r = await client.views_publish(
        user_id="U0CAROL", view={"type": "home", "blocks": [section("On call: you")]}
    )
    assert r["view"]["type"] == "home"
    status, body = await control(slack, "GET", "/_sandbox/home", params={"user": "carol"})
    assert status == 200 and body["view"]["blocks"][0]["text"]["text"] == "On call: you"
    with pytest.raises(SlackApiError) as e:
        await client.views_publish(user_id="U0CAROL", view={"type": "home", "blocks": [section("x" * 3001)]})
    assert e.value.response["error"] == "invalid_blocks"
    assert (await control(slack, "GET", "/_sandbox/home", params={"user": "bob"}))[1]["view"] is None


async def test_permalink(slack, client):
    r = await client.chat_postMessage(channel="deploys", text="x")
    link = (await client.chat_getPermalink(channel="C0DEPLOYS", message_ts=r["ts"]))["permalink"]
    assert link == f"{slack.url}/archives/C0DEPLOYS/p{r['ts'].replace('.', '')}"
    async with aiohttp.ClientSession() as session, session.get(link) as resp:
        assert (await resp.json())["message"]["ts"] == r["ts"]


async def test_rate_limit_answers_429_and_slack_sdk_retries(slack, client):
    slack.rate_limit_per_channel_per_s = 1.0
    await client.chat_postMessage(channel="deploys", text="1")
    with pytest.raises(SlackApiError) as e:
        await client.chat_postMessage(channel="deploys", text="2")
    assert e.value.response.status_code == 429 and e.value.response["error"] == "ratelimited"
    assert e.value.response.headers["Retry-After"] == "1"
    await client.chat_postMessage(channel="incidents", text="other channel is fine")

    retrying = AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/")
    retrying.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=1))
    await retrying.chat_postMessage(channel="deploys", text="3")  # waits out Retry-After, then succeeds
    assert [m["text"] for m in slack.messages("deploys")] == ["1", "3"]
    errors = [c["error"] for c in slack.calls if c["channel"] == "C0DEPLOYS"]
    assert errors[:2] == [None, "ratelimited"] and errors[-1] is None


async def test_control_reads(slack, client):
    await client.chat_postMessage(channel="deploys-log", text="done")
    status, body = await control(slack, "GET", "/_sandbox/messages", params={"channel": "deploys-log"})
    assert status == 200 and [m["text"] for m in body["messages"]] == ["done"]
    assert (await control(slack, "GET", "/_sandbox/messages", params={"channel": "nope"}))[0] == 404
    status, body = await control(slack, "GET", "/_sandbox/calls")
    assert [c["method"] for c in body["calls"]] == ["chat.postMessage"]
    status, world = await control(slack, "GET", "/_sandbox/world")
    assert (
        world["channels"]["deploys-log"] == "C0DEPLOYSLOG"
        and world["usergroups"]["oncall"]["id"] == "S0ONCALL"
    )


# ---------------------------------------------------------------- slash commands and clicks through bolt


async def test_slash_without_bot_is_503(slack):
    with pytest.raises(LocalSlackError) as e:
        await slack.slash("alice", "deploys", "/deploy", "checkout")
    assert e.value.status == 503
    status, body = await control(
        slack, "POST", "/_sandbox/slash", json={"user": "alice", "channel": "deploys", "command": "/deploy"}
    )
    assert status == 503 and "bot_events_url" in body["error"]


async def test_slash_reaches_bolt_and_ack_is_shown_to_the_user(slack, bot):
    result = await slack.slash("alice", "#deploys", "/deploy", "checkout v42")
    assert result == {
        "status": 200,
        "body": "Deploy of checkout v42 requested",
        "message_ts": result["message_ts"],
    }
    command, _ = await bot.next(bot.commands)
    assert (command["user_id"], command["user_name"], command["channel_id"], command["channel_name"]) == (
        "U0ALICE",
        "alice",
        "C0DEPLOYS",
        "deploys",
    )
    assert (command["command"], command["text"], command["team_id"]) == (
        "/deploy",
        "checkout v42",
        "T0SANDBOX",
    )
    assert command["response_url"].startswith(slack.url + "/_sandbox/response/")
    [shown] = slack.messages("deploys")
    assert (shown["text"], shown["ephemeral_for"], shown["ts"]) == (
        "Deploy of checkout v42 requested",
        "U0ALICE",
        result["message_ts"],
    )
    assert [c["method"] for c in slack.calls] == ["auth.test", "slash.ack"]  # bolt's first request


async def test_in_channel_ack_is_public_and_invalid_ack_is_refused(slack, bot):
    await slack.slash("bob", "incidents", "announce", "freeze")
    assert [(m["text"], m["ephemeral_for"]) for m in slack.messages("incidents")] == [
        ("<@U0BOB> announces freeze", None)
    ]
    result = await slack.slash("bob", "incidents", "/broken", "")
    assert result["error"]["error"] == "invalid_blocks" and len(slack.messages("incidents")) == 1


async def test_forged_and_stale_signatures_get_401(slack, bot):
    forged = await slack.slash("alice", "deploys", "/deploy", "x", forge=True)
    stale = await slack.slash("alice", "deploys", "/deploy", "x", timestamp=int(time.time()) - 600)
    assert (forged["status"], stale["status"]) == (401, 401)
    assert bot.commands.empty() and slack.messages("deploys") == []


async def test_retry_headers_pass_through_the_control_api(slack, bot):
    retry = {"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
    status, result = await control(
        slack,
        "POST",
        "/_sandbox/slash",
        json={"user": "U0CAROL", "channel": "C0DEPLOYS", "command": "/deploy", "text": "a", "headers": retry},
    )
    assert status == 200 and result["status"] == 200
    command, headers = await bot.next(bot.commands)
    assert command["user_id"] == "U0CAROL"
    assert (headers["x-slack-retry-num"], headers["x-slack-retry-reason"]) == (["1"], ["http_timeout"])


async def test_click_by_label_reaches_the_action_and_respond_replaces_the_message(slack, client, bot):
    posted = await client.chat_postMessage(channel="deploys", text="approve?", blocks=APPROVAL_BLOCKS)
    result = await slack.click("bob", "deploys", posted["ts"], label="  approve ")
    assert result["status"] == 200
    body = await bot.next(bot.actions)
    assert body["type"] == "block_actions"
    assert (body["user"]["id"], body["channel"]["id"], body["container"]["message_ts"]) == (
        "U0BOB",
        "C0DEPLOYS",
        posted["ts"],
    )
    assert body["container"]["is_ephemeral"] is False
    assert body["message"]["ts"] == posted["ts"] and body["message"]["bot_id"] == "B0DEPLOYBOT"
    [action] = body["actions"]
    assert (action["action_id"], action["block_id"], action["value"], action["type"]) == (
        "approve",
        "decision",
        "dep-1",
        "button",
    )
    assert body["state"]["values"]["checks"]["checklist"]["selected_options"][0]["value"] == "tests"
    [message] = slack.messages("deploys")  # respond(replace_original=True) went through the response_url
    assert (message["text"], message["blocks"], message["edited"]) == ("Approved by <@U0BOB>", None, True)


async def test_click_by_action_id_with_retry_headers(slack, client, bot):
    posted = await client.chat_postMessage(channel="deploys", text="approve?", blocks=APPROVAL_BLOCKS)
    retry = {"X-Slack-Retry-Num": "2", "X-Slack-Retry-Reason": "http_error"}
    status, result = await control(
        slack,
        "POST",
        "/_sandbox/click",
        json={
            "user": "alice",
            "channel": "deploys",
            "ts": posted["ts"],
            "action_id": "reject",
            "headers": retry,
        },
    )
    assert (status, result["status"]) == (200, 200)
    body = await bot.next(bot.actions)
    assert (body["actions"][0]["action_id"], body["user"]["id"]) == ("reject", "U0ALICE")


async def test_checkbox_click_sends_the_toggled_selection(slack, client, bot):
    posted = await client.chat_postMessage(channel="deploys", text="checklist", blocks=APPROVAL_BLOCKS)
    await slack.click("alice", "deploys", posted["ts"], label="Changelog written")
    first = await bot.next(bot.actions)
    await slack.click("alice", "deploys", posted["ts"], action_id="checklist", label="tests green")
    second = await bot.next(bot.actions)
    assert first["actions"][0]["type"] == "checkboxes"
    assert [o["value"] for o in first["actions"][0]["selected_options"]] == ["tests", "changelog"]
    assert [o["value"] for o in second["actions"][0]["selected_options"]] == [
        "changelog"
    ]  # the client keeps state
    assert [o["value"] for o in second["state"]["values"]["checks"]["checklist"]["selected_options"]] == [
        "changelog"
    ]


async def test_click_on_an_ephemeral_message(slack, client, bot):
    r = await client.chat_postEphemeral(
        channel="deploys",
        user="U0ALICE",
        text="confirm?",
        blocks=[{"type": "actions", "elements": [button("Reject", "reject")]}],
    )
    await slack.click("alice", "deploys", r["message_ts"], label="Reject")
    body = await bot.next(bot.actions)
    assert body["container"]["is_ephemeral"] is True and "message" not in body
    with pytest.raises(LocalSlackError) as e:
        await slack.click("bob", "deploys", r["message_ts"], label="Reject")  # bob never saw it
    assert e.value.status == 404


async def test_click_errors_list_the_buttons(slack, client, bot):
    posted = await client.chat_postMessage(channel="deploys", text="approve?", blocks=APPROVAL_BLOCKS)
    with pytest.raises(LocalSlackError) as e:
        await slack.click("bob", "deploys", posted["ts"], label="Ship it")
    assert (e.value.status, e.value.body["error"]) == (404, "no such button")
    assert e.value.body["buttons"] == ["Approve", "Reject", "Tests green", "Changelog written"]
    status, body = await control(
        slack,
        "POST",
        "/_sandbox/click",
        json={"user": "bob", "channel": "deploys", "ts": "1.000001", "label": "x"},
    )
    assert status == 404 and body["error"] == "message_not_found"


async def test_response_url_allows_five_uses(slack, bot):
    await slack.slash("dave", "deploys", "/deploy", "x")
    command, _ = await bot.next(bot.commands)
    async with aiohttp.ClientSession() as session:
        statuses = []
        for i in range(6):
            async with session.post(command["response_url"], json={"text": f"step {i}"}) as resp:
                statuses.append((resp.status, (await resp.json())["ok"]))
        async with session.post(command["response_url"], json={"blocks": [{"type": "bogus"}]}) as resp:
            assert resp.status == 404  # used up before it is even validated
    assert statuses == [(200, True)] * 5 + [(404, False)]
    texts = [(m["text"], m["ephemeral_for"]) for m in slack.messages("deploys")]
    assert texts == [("Deploy of x requested", "U0DAVE")] + [(f"step {i}", "U0DAVE") for i in range(5)]


async def test_a_late_ack_times_out_like_slack(slack, bot):
    slack.ack_timeout_s = 0.2
    result = await slack.slash("alice", "deploys", "/slow", "")
    assert result == {"status": 504, "body": {"ok": False, "error": "operation_timeout"}}
    assert slack.messages("deploys") == []


async def test_response_url_can_delete_the_clicked_message(slack, client, bot):
    posted = await client.chat_postMessage(channel="deploys", text="approve?", blocks=APPROVAL_BLOCKS)
    await slack.click("carol", "deploys", posted["ts"], label="Reject")
    body = await bot.next(bot.actions)
    status, _ = await control(
        slack, "POST", body["response_url"].removeprefix(slack.url), json={"delete_original": True}
    )
    assert status == 200
    assert slack.messages("deploys") == []
