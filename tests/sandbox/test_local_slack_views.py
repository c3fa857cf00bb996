"""The local Slack's modals (bot/sandbox/slack_views.py) against a real bolt app over HTTP: views.open takes
only a trigger the local Slack issued, once; a bad modal is refused as Slack refuses it; a submission is
the signed view_submission bolt routes by callback_id, and `response_action: errors` keeps it open."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.clock import ManualClock
from bot.sandbox.slack import LocalSlack, LocalSlackError

SECRET, TOKEN = "sandbox-signing-secret", "xoxb-sandbox-token"
MODAL = {
    "type": "modal",
    "callback_id": "why",
    "title": {"type": "plain_text", "text": "Why?"},
    "submit": {"type": "plain_text", "text": "Send"},
    "blocks": [
        {
            "type": "input",
            "block_id": "b",
            "label": {"type": "plain_text", "text": "Why"},
            "element": {"type": "plain_text_input", "action_id": "a"},
        }
    ],
}


@pytest.fixture
async def world():
    slack = LocalSlack(signing_secret=SECRET, bot_token=TOKEN, clock=ManualClock())
    await slack.start()
    app = AsyncApp(signing_secret=SECRET, client=AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/"))
    opened: asyncio.Queue = asyncio.Queue()
    submitted: asyncio.Queue = asyncio.Queue()

    @app.action("ask")
    async def ask(ack, body, client):
        await ack()
        trigger = body["trigger_id"]
        first = await client.views_open(trigger_id=trigger, view=MODAL)
        try:
            await client.views_open(trigger_id=trigger, view=MODAL)  # a trigger is good once
            again = None
        except SlackApiError as e:
            again = e.response["error"]
        await opened.put((first["view"], again))

    @app.view("why")
    async def why(ack, body, view):
        text = view["state"]["values"]["b"]["a"]["value"]
        if not text:
            await ack(response_action="errors", errors={"b": "say why"})
            return
        await ack()
        await submitted.put((body["user"]["id"], text, view["id"]))

    runner = web.AppRunner(app.web_app())
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    slack.bot_events_url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    yield slack, opened, submitted
    await runner.cleanup()
    await slack.stop()


async def test_a_click_opens_a_modal_and_its_submission_reaches_the_app_signed(world):
    slack, opened, submitted = world
    client = AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/")
    posted = await client.chat_postMessage(
        channel="deploys",
        text="?",
        blocks=[
            {
                "type": "actions",
                "elements": [
                    {"type": "button", "action_id": "ask", "text": {"type": "plain_text", "text": "Ask"}}
                ],
            }
        ],
    )
    await slack.click("alice", "deploys", posted["ts"], label="Ask")
    view, again = await asyncio.wait_for(opened.get(), 5)
    assert again == "expired_trigger_id"
    assert [v["id"] for v in slack.modals.open_views("U0ALICE")] == [view["id"]]
    assert slack.modals.open_views("U0BOB") == []
    with pytest.raises(LocalSlackError):
        await slack.modals.submit("bob", view["id"], {"b": {"a": "mine"}})  # not bob's modal

    kept = await slack.modals.submit("alice", view["id"], {"b": {"a": ""}})
    assert kept["closed"] is False and kept["errors"] == {"b": "say why"}
    done = await slack.modals.submit("alice", view["id"], {"b": {"a": "tests were red"}})
    assert done["closed"] is True and slack.modals.open_views("U0ALICE") == []
    assert await asyncio.wait_for(submitted.get(), 5) == ("U0ALICE", "tests were red", view["id"])


async def test_views_open_refuses_a_trigger_it_never_issued_and_a_bad_modal(world):
    slack, _, _ = world
    client = AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/")
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id="1.2.made-up", view=MODAL)
    assert e.value.response["error"] == "invalid_trigger_id"
    slack.modals.issued("t-1", "U0ALICE")
    with pytest.raises(SlackApiError) as e:
        await client.views_open(
            trigger_id="t-1", view={**MODAL, "title": {"type": "plain_text", "text": "x" * 25}}
        )
    assert e.value.response["error"] == "invalid_arguments"
    with pytest.raises(SlackApiError) as e:
        await client.views_open(trigger_id="t-1", view={**MODAL, "blocks": [{"type": "bogus"}]})
    assert e.value.response["error"] == "invalid_blocks"
