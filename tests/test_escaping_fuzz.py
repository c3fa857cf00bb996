"""Issue 9 item 3: nothing a user types becomes Slack markup. The fuzz corpus goes through the real bot
process in the sandbox, as Slack sends it (signed, with & < > escaped), and every message of every channel
(thread replies, ephemeral answers and acks included) and the Home tab is read back: no live mention or link
the bot did not generate itself, every answer a 200, no traceback in the bot's log."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Iterator
from typing import Any

import aiohttp
from slack_sdk.signature import SignatureVerifier

from bot.sandbox.client import wait_for
from tests.conftest import db_rows, wait_state

HOSTILE = [
    "<!channel>",
    "<!here>",
    "<!everyone>",
    "<@U123>",
    "<#C123>",
    "<!subteam^S1>",
    "<!subteam^S1|@all-hands>",
    "<http://x|y>",
    "<http://evil.example/login|docs>",
    "<mailto:boss@evil.example|mail>",
    "&lt;!channel&gt;",
    "&amp;lt;!here&amp;gt;",
    "<<!channel>>",
    "<!date^1^{time}|x>",
    "`",
    "```<!here>```",
    "`<@U123>`",
    "\x00",
    "\x07",
    "\x1b[31m",
    "\n",
    "\r\n• fake bullet <!channel>",
    "\t",
    "\u202e",
    '"',
    "'",
    "\u201c",
    "&",
    "<",
    ">",
    "--reason",
    "--emergency",
    "--dry-run --dry-run",
]
WORDS = [
    "fix",
    "login",
    "rollout",
    "web",
    "api",
    "v2",
    "to",
    "staging",
    "production",
    "now",
    "*bold*",
    "#42",
    "424242",
]
LIVE = re.compile(r"<(!|@|#|http|mailto)[^>]*>")


DEEP = [h for h in HOSTILE if not h.startswith("--") and h not in ('"', "'", "\u201c")]  # they parse


def hostile(rng: random.Random, long: bool = False, deep: bool = False) -> str:
    pool = DEEP if deep else HOSTILE
    parts = (
        [rng.choice(pool) for _ in range(rng.randint(1, 4))]
        + [rng.choice(HOSTILE[:14])]
        + rng.sample(WORDS, rng.randint(0, 3))
    )
    rng.shuffle(parts)
    text = " ".join(parts)
    if long:
        text += " " + "A<!here>" * rng.randint(1, 1300)  # up to ~10 kB
    return text


def quoted(s: str) -> str:
    return '"' + s.replace('"', "'") + '"'


def parse_level_texts(rng: random.Random, n: int) -> Iterator[tuple[str, str, str]]:
    """(user, command, text) that the parser refuses: a hostile bare word where a version, service, ID or
    environment must be, unbalanced quotes, repeated flags, 10 kB texts, typos answered with "did you
    mean" (which quotes the options back)."""
    users = ["alice", "bob", "carol", "dave"]
    deploy_heads = [
        "",
        "web",
        "web v2",
        "api v2 to",
        "status",
        "approve",
        "audit",
        "history",
        "lock web",
        "unlock",
        "freeze staging",
        "unfreeze",
        "schedule",
        "reject",
        "approve 424242",
        "reject #0",
        "audit 424242",
        "status #424242",
    ]
    for i in range(n):
        user = rng.choice(users)
        form = i % 6
        if form == 0:
            yield user, "/deploy", f"{rng.choice(deploy_heads)} {hostile(rng, long=i % 50 == 0)}"
        elif form == 1:  # a typo: the answer suggests the fix and repeats the options
            yield user, "/deploy", f"web v2 tos taging --reason {quoted(hostile(rng))}"
        elif form == 2:  # repeated flags, unbalanced quotes
            yield user, "/deploy", f'web v2 to staging --reason "{hostile(rng)} --reason "{hostile(rng)}'
        elif form == 3:
            yield (
                user,
                "/promote",
                f"{rng.choice(['', 'web from', 'web from staging to', '7'])} {hostile(rng)}",
            )
        elif form == 4:
            yield user, "/rollback", f"{rng.choice(['', 'web', 'web in', 'web to'])} {hostile(rng)}"
        else:
            yield (
                user,
                "/deploy",
                f"web v2 to stagin --emergency {quoted(hostile(rng))} --reason {hostile(rng)}",
            )


def strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for v in node.values():
            yield from strings(v)
    elif isinstance(node, list):
        for v in node:
            yield from strings(v)


def foreign_markup(node: Any, own: re.Pattern[str]) -> list[str]:
    """Every live mention or link in the texts of `node` that is not one the bot makes itself."""
    return [m.group(0) for s in strings(node) for m in LIVE.finditer(s) if not own.fullmatch(m.group(0))]


async def post_event(sb: Any, event: dict) -> int:
    """An Events API callback, signed as Slack signs it."""
    body, ts = json.dumps(event), str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Slack-Request-Timestamp": ts,
        "X-Slack-Signature": SignatureVerifier(sb.signing_secret).generate_signature(timestamp=ts, body=body),
    }
    async with (
        aiohttp.ClientSession() as s,
        s.post(sb.bot.url + "/slack/events", data=body, headers=headers) as r,
    ):
        return r.status


def own_markup(sb: Any) -> re.Pattern[str]:
    users = "|".join(sb.slack.users.values())
    groups = "|".join(g["id"] for g in sb.slack.usergroups.values())
    channels = "|".join(sb.slack.channels.values())
    return re.compile(
        rf"<@({users})>|<!subteam\^({groups})(\|[^<>]*)?>|<!date\^\d+\^[^|<>]*\|[^<>]*>|<#({channels})>"
        rf"|<{re.escape(sb.slack_url)}/archives/[^|<>]+\|[^<>]*>"
    )


async def test_fuzz_corpus_never_becomes_markup_in_any_posted_message(sandbox):
    """10,000 texts, seeded, through /deploy, /promote and /rollback: 263 "deep" texts that reach the engine
    and are posted publicly — 180 production requests by a user with no role (each posts a warning quoting
    the command: --reason, --emergency, freeze, lock, /rollback --reason, /promote), 10 freezes with
    hostile reasons (posted in the channel) and 10 deploys refused quoting them, a freeze override (a
    critical alert with its reason), 10 locks with status listings and unlocks, an emergency deploy (a
    critical alert), 5 hostile --at times, 10 production requests (7 with a hostile --reason, 3
    promotions) rejected with hostile reasons, 5 rollbacks with a hostile --reason — then 9,737
    parse-level texts (usage errors, "did you mean", unclosed quotes, repeated flags, 10 kB texts) sent 8
    at a time. Every answer, every message of every channel (threads and ephemeral ones included) and
    the Home tab are read back. About 40 s on 2 cores."""
    sb = sandbox
    slack = sb.slack
    rng = random.Random(9)
    answers: list[dict] = []
    sent = 0

    async def send(user: str, command: str, text: str) -> dict:
        nonlocal sent
        sent += 1
        r = await slack.slash(user, "deploys", command, text)
        answers.append(r)
        return r

    # ---- deep: a user without any role, in production: refused, and a warning quotes the command
    forms = [
        "web v2 to production --reason {q}",
        "api v3 to production --emergency {q}",
        "freeze production until +1h {h}",
        "lock web production {h}",
    ]
    dave = []
    for i in range(150):
        dave.append(
            (
                "/deploy",
                forms[i % len(forms)].format(
                    q=quoted(hostile(rng, deep=True)), h=quoted(hostile(rng, deep=True))
                ),
            )
        )
    dave += [
        ("/rollback", f"web in production --reason {quoted(hostile(rng, deep=True))}") for _ in range(20)
    ]
    dave += [("/promote", "web from staging to production") for _ in range(10)]
    gate = asyncio.Semaphore(8)

    async def limited(user: str, command: str, text: str) -> dict:
        async with gate:
            return await send(user, command, text)

    refusals = await asyncio.gather(*(limited("dave", c, t) for c, t in dave))
    assert [r for r in refusals if "You need the" not in r["body"]["text"]] == []
    assert any("role to freeze or unfreeze in production" in r["body"]["text"] for r in refusals)

    # ---- deep: freezes with hostile reasons; deploys refused with them; one override with an alert
    for _ in range(10):
        r = await send("bob", "/deploy", f"freeze staging until +2h {quoted(hostile(rng, deep=True))}")
        assert "froze staging" in r["body"]["text"], r
        await send("alice", "/deploy", f"web v2 to staging --reason {quoted(hostile(rng, deep=True))}")
    r = await send("bob", "/deploy", f"web v3 to staging --reason {quoted(hostile(rng, deep=True))}")
    overridden = int(re.search(r"#(\d+)", r["body"]["text"]).group(1))
    await send("bob", "/deploy", "unfreeze staging")

    # ---- deep: locks with hostile reasons, listed by status
    for _ in range(10):
        await send("alice", "/deploy", f"lock api staging {quoted(hostile(rng, deep=True))}")
        await send("alice", "/deploy", "status")
        await send("alice", "/deploy", "unlock api staging")

    # ---- deep: an emergency deploy (critical alert quoting the reason), --at texts refused
    r = await send("bob", "/deploy", f"api v2 to staging --emergency {quoted(hostile(rng, deep=True))}")
    emergency = int(re.search(r"#(\d+)", r["body"]["text"]).group(1))
    for _ in range(5):
        await send("alice", "/deploy", f"web v2 to production --at {quoted(hostile(rng, deep=True))}")
    await wait_state(sb, overridden, "succeeded", within=90)

    # ---- deep: requests with a hostile --reason, rejected with a hostile reason (shown on the message)
    requested = []
    for i in range(10):
        if i % 3 == 2:
            r = await send("alice", "/promote", "web from staging to production")
        else:
            r = await send(
                "alice", "/deploy", f"web v{i + 4} to production --reason {quoted(hostile(rng, deep=True))}"
            )
        d = int(re.search(r"#(\d+)", r["body"]["text"]).group(1))
        await wait_state(sb, d, "awaiting_approval")
        r = await send("bob", "/deploy", f"reject {d} {quoted(hostile(rng, deep=True))}")
        assert "rejected" in r["body"]["text"], r
        requested.append(d)
        await wait_state(sb, d, "cancelled")
    await wait_state(sb, emergency, "succeeded", within=90)
    for _ in range(5):
        await send("carol", "/rollback", f"web in staging to v2 --reason {quoted(hostile(rng, deep=True))}")
    deep = sent

    # ---- parse level: the rest of the 10,000
    await asyncio.gather(
        *(limited(u, c, t) for u, c, t in parse_level_texts(rng, 10_000 - deep)),
    )
    assert (deep, sent) == (263, 10_000)

    # settle: every deployment finished, every refusal's warning posted, every message shown as it ends
    async def settled():
        rows = db_rows(sb, "SELECT id, state FROM deployments")
        if any(r["state"] not in ("succeeded", "cancelled", "failed", "rolled_back") for r in rows):
            return None
        warnings = [m for m in slack.messages("deploys") if "without the role" in m["text"]]
        return len(warnings) >= len(dave) and rows

    await wait_for(settled, 90, interval=0.2, what="the deployments to finish and the warnings to be posted")

    assert [r for r in answers if r["status"] != 200] == []
    own = own_markup(sb)
    leaks = [(a["body"], m) for a in answers for m in foreign_markup(a["body"], own)]
    assert leaks == [], sorted({str(body.get("text"))[:60] for body, _ in leaks})
    seen = 0
    for name in slack.channels:
        for message in slack.messages(name):
            seen += 1
            bad = foreign_markup({k: message.get(k) for k in ("text", "blocks", "attachments")}, own)
            assert bad == [], (name, message["text"][:300], bad)
    assert seen > 10_000  # the acks, the warnings, the deployments' messages and their threads

    # the texts that reached public messages were the hostile ones, shown literally
    warning = next(m for m in slack.messages("deploys") if "without the role" in m["text"])
    assert "&lt;" in warning["text"] or "&amp;" in warning["text"] or "ˋ" in warning["text"], warning
    assert any("froze staging" in m["text"] and "&lt;" in m["text"] for m in slack.messages("deploys"))
    incidents = slack.messages("incidents")
    assert any("Freeze override" in json.dumps(m["blocks"]) for m in incidents), incidents[:2]

    for user in ("alice", "bob"):  # the Home tab: deployments, locks and alerts with their reasons
        event = {
            "token": "x",
            "team_id": slack.team_id,
            "api_app_id": "A0DEPLOYBOT",
            "type": "event_callback",
            "event_id": f"Ev{user}",
            "event_time": int(time.time()),
            "event": {"type": "app_home_opened", "user": slack.users[user], "tab": "home"},
        }
        assert await post_event(sb, event) == 200

        async def view(user=user):
            async with aiohttp.ClientSession() as s, s.get(f"{sb.slack_url}/_sandbox/home?user={user}") as r:
                return (await r.json())["view"]

        shown = await wait_for(view, 10, what=f"{user}'s Home tab")
        assert foreign_markup(shown, own) == []

    log = (sb.workdir / "bot.log").read_text(errors="replace")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
