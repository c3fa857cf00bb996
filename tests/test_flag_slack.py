"""/flag end to end through real slack-bolt: signed slash commands from the local Slack (which validates
every answer's Block Kit the way Slack does) to the bot's HTTP front, its grammar, FlagControl on a real
store file, and back; evaluations read from the snapshot the change replaced. In-process, no AWS."""

from __future__ import annotations

import json
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import pytest
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.app.engine import Engine
from bot.config.load import parse_settings
from bot.sandbox.slack import LocalSlack
from handlers.app import build_app, web_app
from tests.unit.app.test_engine_on_fakes import HeldTimer, InstantClock
from tests.unit.app.test_flags import CONFIG, HEALTHY

SECRET = "flag-slack-test-signing-secret"
TOKEN = "xoxb-flag-slack-test-token"
LIVE = re.compile(r"<(!|@|#|http|mailto)[^>]*>")
OWN = re.compile(r"<@U0[A-Z]+>|<!date\^\d+\^[^|<>]*\|[^<>]*>")


class Bot:
    def __init__(self, slack: LocalSlack, engine: Engine, db: Path, url: str):
        self.slack, self.engine, self.db, self.url = slack, engine, db, url

    async def slash(self, user: str, text: str) -> dict:
        r = await self.slack.slash(user, "deploys", "/flag", text)
        assert r["status"] == 200, r
        assert "error" not in r, r  # the local Slack accepted the answer's blocks
        return r["body"]

    def rows(self, sql: str) -> list[tuple]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(sql).fetchall()

    def share_on(self, env: str, n: int = 2000) -> float:
        snap = self.engine.flag_book.snapshot(env)
        assert snap is not None
        return (
            sum(snap.evaluate("checkout-v2", {"targetingKey": f"user-{i}"}).value is True for i in range(n))
            / n
        )


@pytest.fixture
async def bot(tmp_path: Path):
    slack = LocalSlack(signing_secret=SECRET, bot_token=TOKEN)
    await slack.start()
    client = AsyncWebClient(token=TOKEN, base_url=slack.url + "/api/")
    db = tmp_path / "deploybot.db"
    store = AsyncStore(Store(db))
    engine = Engine(
        parse_settings(CONFIG),
        store,
        MemoryPlatform(),
        MemoryMetrics(HEALTHY),
        InstantClock(),
        timer=HeldTimer(),
    )
    await engine.flag_book.load()
    runner = web.AppRunner(web_app(build_app(engine, client, SECRET), store, SECRET))
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    slack.bot_events_url = url
    yield Bot(slack, engine, db, url)
    await runner.cleanup()
    await engine.shutdown()
    store.close()
    await slack.stop()


def live(answer: dict) -> list[str]:
    text = json.dumps(answer, ensure_ascii=False)
    return [m.group(0) for m in LIVE.finditer(text) if not OWN.fullmatch(m.group(0))]


async def test_a_person_reads_changes_and_mistypes_flags_through_slack(bot: Bot):
    help_ = await bot.slash("alice", "help")
    assert help_["response_type"] == "ephemeral" and "/flag KEY on for" in help_["text"]

    changed = await bot.slash("alice", "checkout-v2 25% in staging")
    assert changed["response_type"] == "in_channel", changed
    assert changed["text"].startswith(
        ":triangular_flag_on_post: <@U0ALICE> changed checkout-v2 in staging: on: split on 25%, off 75%"
    )
    assert 0.22 <= bot.share_on("staging") <= 0.28 and bot.share_on("production") == 0.0

    typo = await bot.slash("alice", "chekout-v2 on in staging")
    assert typo["response_type"] == "ephemeral"
    assert 'Unknown flag "chekout-v2". Did you mean "checkout-v2"?' in typo["text"]
    missing = await bot.slash("alice", "checkout-v2 on")
    assert 'A change names it with "in ENV"' in missing["text"]

    # Slack sends & < > escaped; the rule keeps what was typed, and no answer turns it into markup
    rule = await bot.slash(
        "alice", "checkout-v2 on for 'region=x<!channel>' in staging --reason '<!here> test'"
    )
    assert rule["response_type"] == "in_channel" and live(rule) == [], rule
    snap = bot.engine.flag_book.snapshot("staging")
    assert snap is not None and snap.evaluate("checkout-v2", {"region": "x<!channel>"}).value is True

    shown = await bot.slash("bob", "checkout-v2 in staging")
    assert shown["response_type"] == "ephemeral" and live(shown) == [], shown
    for part in ("*checkout-v2* in *staging*", "rule region=x&lt;!channel&gt; → on", "split on 25%, off 75%",
                 "<@U0ALICE> set a rule", "<@U0ALICE> set a percentage", "_&lt;!here&gt; test_"):  # fmt: skip
        assert part in shown["text"], part
    both = await bot.slash("bob", "checkout-v2")  # every environment, one message
    assert "*checkout-v2* in *staging*" in both["text"] and "*checkout-v2* in *production*" in both["text"]

    listed = await bot.slash("carol", "list in staging")
    assert listed["text"].startswith("*Flags in staging*") and "`search-ranking` off" in listed["text"]

    refused = await bot.slash("dave", "checkout-v2 kill in production")
    assert refused["text"].startswith(":no_entry:"), refused
    killed = await bot.slash("carol", "checkout-v2 kill in staging --reason 'errors'")  # oncall may kill
    assert killed["text"].startswith(":octagonal_sign: <@U0CAROL> changed checkout-v2 in staging: killed")
    assert bot.share_on("staging") == 0.0


async def test_a_replayed_flag_change_is_answered_as_the_first_and_changes_nothing(bot: Bot):
    async def post(text: str, trigger: str, ts: str) -> tuple[int, str]:
        body = urlencode({"command": "/flag", "text": text, "user_id": "U0ALICE", "user_name": "alice",
                          "channel_id": "C0DEPLOYS", "team_id": "T0SANDBOX", "trigger_id": trigger,
                          "response_url": bot.slack.url + "/response/none", "api_app_id": "A0DEPLOYBOT"})  # fmt: skip
        headers = {
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body),
        }
        async with aiohttp.ClientSession() as s, s.post(bot.url, data=body.encode(), headers=headers) as r:
            return r.status, await r.text()

    ts = str(int(time.time()))  # Slack signs the wall time of sending; bolt refuses one 5 minutes off
    first = await post("checkout-v2 on in staging", "t-change", ts)
    again = await post("checkout-v2 on in staging", "t-change", ts)
    assert first[0] == again[0] == 200 and again[1] == first[1] and "changed checkout-v2" in first[1]
    assert bot.rows("SELECT revision FROM flag_states WHERE key = 'checkout-v2' AND env = 'staging'") == [
        (1,)
    ]
    assert bot.rows("SELECT count(*) FROM events WHERE action = 'flag_on'") == [(1,)]
    assert bot.rows("SELECT count(*) FROM requests WHERE key = 'trigger:t-change'") == [(1,)]
    read = await post("checkout-v2 in staging", "t-read", ts)
    assert read[0] == 200 and "*checkout-v2* in *staging*" in read[1]
    assert bot.rows("SELECT count(*) FROM requests WHERE key = 'trigger:t-read'") == [
        (0,)
    ]  # a read: not claimed
