"""Issue 9 ("Trust"), items 4 and 5: no 5xx and no traceback for a bad request, replays change nothing,
every answer is true (amendments under concurrency), refusals recorded with what they were about.
Driven against the real bot process in the sandbox, with raw signed (and unsigned) HTTP requests."""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from urllib.parse import quote

from bot.sandbox.client import wait_for
from tests.conftest import (
    bot_log,
    db_rows,
    message_of,
    raw_post,
    request,
    service_image,
    signed_post,
    slash_form,
    top_level,
    wait_state,
    wait_terminal,
)

FORM = "application/x-www-form-urlencoded"
JSON = "application/json"

# Bodies Slack never sends; bolt parsed each before checking the signature and answered 500.
MALFORMED = {
    "an empty payload": (b"payload=", FORM),
    "a payload that is not JSON": (b"payload=" + quote("{not json").encode(), FORM),
    "a payload that is a JSON list": (b"payload=" + quote("[1, 2]").encode(), FORM),
    "a body that is not UTF-8": (b"payload=\xff\xfe" + quote("{}").encode(), FORM),
    "JSON that is not JSON": (b"{not json", JSON),
    "JSON that is not an object": (b"[1, 2]", JSON),
}


def assert_clean_log(sb) -> None:
    log = bot_log(sb)
    assert "Traceback" not in log, log[-3000:]
    assert " ERROR " not in log, log[-3000:]


async def test_malformed_bodies_get_400_when_signed_401_when_not_and_no_traceback(sandbox, client):
    for name, (body, content_type) in MALFORMED.items():
        signed = await raw_post(sandbox, body, content_type)
        assert signed[0] == 400, (name, signed)
        unsigned = await raw_post(sandbox, body, content_type, signed=False)
        assert unsigned[0] == 401, (name, unsigned)
        wrong = await raw_post(sandbox, body, content_type, secret="not-the-secret")
        assert wrong[0] == 401, (name, wrong)
    form = json.dumps(slash_form(sandbox, "alice", "web v2 to staging", "t-ts")).encode()  # any body
    for ts in ("not-a-number", "1e9", " 12", "-5", "", "9" * 40, str(int(time.time()) - 600)):
        status, _ = await raw_post(sandbox, form, JSON, timestamp=ts)  # signed over that very timestamp
        assert status == 401, ts
    assert db_rows(sandbox, "SELECT * FROM deployments") == []
    assert_clean_log(sandbox)
    # and a request Slack does send still works
    r = await client.slash("alice", "/deploy", "status")
    assert r["status"] == 200 and "Active deployments" in r["body"]["text"], r


async def test_unknown_deployment_ids_get_a_plain_answer_never_a_500(sandbox, client):
    cases = {
        ("/deploy", "approve 424242"): 424242,
        ("/deploy", "reject #0 x"): 0,
        ("/deploy", "audit 0"): 0,
        ("/deploy", "status #007"): 7,
        ("/promote", "999999999999999999"): 999999999999999999,
        ("/promote", "#00042 --full"): 42,
    }
    for (command, text), n in cases.items():
        r = await client.slash("bob", command, text)
        assert r["status"] == 200, (text, r)
        assert r["body"]["response_type"] == "ephemeral", (text, r)
        assert f"There is no deployment #{n}." in r["body"]["text"], (text, r)

    # buttons naming deployments that do not exist (a stale or hand-made click)
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    m = await message_of(client, d, "Approve", within=10)
    bob = sandbox.slack.users["bob"]
    for label, value, shown in (
        ("Cancel", "424242", "424242"),
        ("Cancel", "-1", "-1"),
        ("Approve", "99999999999999999999999", "99999999999999999999999"),
        ("Approve", "0", "0"),
    ):
        r = await client.click("bob", "deploys", m["ts"], label=label, value=value)
        assert r["status"] == 200, r

        async def told(shown=shown):
            return [
                x
                for x in await client.messages("deploys")
                if x.get("ephemeral_for") == bob and f"There is no deployment #{shown}." in x["text"]
            ]

        await wait_for(told, 10, what=f"bob to be told there is no deployment #{shown}")
    assert db_rows(sandbox, "SELECT state FROM deployments WHERE id = ?", (d,)) == [
        {"state": "awaiting_approval"}
    ]
    assert_clean_log(sandbox)


# ------------------------------------------------------------------------------------------ replays


async def test_a_replayed_freeze_lock_and_approve_change_nothing_and_get_the_first_answer(sandbox, client):
    ts = int(time.time())
    freeze = slash_form(sandbox, "bob", 'freeze staging until +2h "release party"', "replay-freeze")
    first = await signed_post(sandbox, freeze, timestamp=ts)
    again = await signed_post(sandbox, freeze, timestamp=ts)  # byte for byte: same body, same signature
    assert first[0] == again[0] == 200
    assert "froze staging" in first[1] and again[1] == first[1]
    assert len(db_rows(sandbox, "SELECT * FROM freezes")) == 1
    assert len(db_rows(sandbox, "SELECT * FROM events WHERE action = 'freeze'")) == 1

    lock = slash_form(sandbox, "bob", "lock api production database migration", "replay-lock")
    first = await signed_post(sandbox, lock, timestamp=ts)
    again = await signed_post(sandbox, lock, timestamp=ts)
    assert "Locked api in production" in first[1] and again == first
    assert len(db_rows(sandbox, "SELECT * FROM events WHERE action = 'lock'")) == 1
    # a Slack retry of it (same trigger_id, new timestamp and signature) is the same request too
    retry = await signed_post(sandbox, lock, timestamp=ts + 1, headers={"X-Slack-Retry-Num": "1"})
    assert retry == first

    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    approve = slash_form(sandbox, "bob", f"approve {d}", "replay-approve")
    first = await signed_post(sandbox, approve, timestamp=ts)
    again = await signed_post(sandbox, approve, timestamp=ts)
    assert f"You approved #{d}" in first[1] and again == first
    assert len(db_rows(sandbox, "SELECT * FROM approvals WHERE deployment_id = ?", (d,))) == 1
    assert len(db_rows(sandbox, "SELECT * FROM events WHERE action = 'approve'")) == 1
    assert_clean_log(sandbox)


async def test_a_replayed_button_click_changes_nothing_and_says_nothing(sandbox, client):
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    m = await message_of(client, d, "Approve", within=10)
    bob = sandbox.slack.users["bob"]

    def click(trigger_id: str) -> dict:
        return {
            "payload": {
                "type": "block_actions",
                "user": {"id": bob, "username": "bob", "team_id": "T0SANDBOX"},
                "api_app_id": "A0DEPLOYBOT",
                "token": "x",
                "team": {"id": "T0SANDBOX", "domain": "d"},
                "container": {"type": "message", "message_ts": m["ts"], "channel_id": m["channel"]},
                "channel": {"id": m["channel"], "name": "deploys"},
                "trigger_id": trigger_id,
                "response_url": sandbox.slack._new_response_url("block_actions", bob, m["channel"], m["ts"]),
                "actions": [
                    {
                        "action_id": "deployment:cancel",
                        "block_id": f"deployment-{d}",
                        "value": str(d),
                        "type": "button",
                        "action_ts": "1",
                    }
                ],
            }
        }

    ts = int(time.time())
    form = click("replay-click")
    first = await signed_post(sandbox, form, timestamp=ts)
    assert first[0] == 200
    await wait_state(sandbox, d, "cancelled")
    again = await signed_post(sandbox, form, timestamp=ts)
    assert again == first
    # a fresh click (another request) after the replay is told it is stale: once that answer is there, the
    # replay (earlier) would have been answered too, had it been acted on
    assert (await signed_post(sandbox, click("fresh-click")))[0] == 200

    def stale(ms):
        return [x for x in ms if x.get("ephemeral_for") == bob and "already cancelled" in x["text"]]

    await wait_for(
        lambda: _async(stale, client), 10, what="the fresh click to be told the deployment is cancelled"
    )
    assert len(stale(await client.messages("deploys"))) == 1
    assert len(db_rows(sandbox, "SELECT * FROM events WHERE action = 'cancel'")) == 1
    assert_clean_log(sandbox)


async def test_copies_of_a_deploy_sent_at_once_start_one_deployment_and_get_the_first_answer(sandbox, client):
    """Copies of a deploy that arrive together (a replay, Slack's retries, each signed when it is sent)
    are claimed in one batch: one is handled, and the others write nothing, post nothing and answer only
    what the first copy answered."""
    form = slash_form(sandbox, "alice", "web v2 to staging", "replay-inflight")
    answers = await asyncio.gather(
        *(signed_post(sandbox, form, headers={"X-Slack-Retry-Num": str(i)} if i else None) for i in range(8))
    )
    assert [status for status, _ in answers] == [200] * 8
    said = {body for _, body in answers if body}  # a copy answered while the first is handled gets ""
    assert len(said) == 1 and "#1" in next(iter(said)), answers
    assert len(db_rows(sandbox, "SELECT * FROM deployments")) == 1
    assert len(db_rows(sandbox, "SELECT * FROM events WHERE action = 'request'")) == 1
    await wait_terminal(client, 1)
    mine = [m for m in top_level(await client.messages("deploys")) if "#1 " in m["text"]]
    assert len(mine) == 1, mine

    # a refused production deploy warns the warning channel once, however many copies of it arrive
    refused = slash_form(sandbox, "dave", "web v2 to production", "replay-refused")
    answers = await asyncio.gather(*(signed_post(sandbox, refused) for _ in range(6)))
    assert [status for status, _ in answers] == [200] * 6
    said = {body for _, body in answers if body}
    assert len(said) == 1 and "production" in next(iter(said)), answers

    def warnings(ms):
        return [m for m in ms if "without the role" in m["text"] and "web v2 to production" in m["text"]]

    await wait_for(lambda: _async(warnings, client), 10, what="the refused deploy's warning")
    # a later, different refused request is warned about after it: the copies' warnings would be there
    await client.slash("dave", "/deploy", "api v2 to production")
    await wait_for(
        lambda: _async(lambda ms: [m for m in ms if "api v2 to production" in m["text"]], client),
        10,
        what="the second warning",
    )
    assert len(warnings(await client.messages("deploys"))) == 1
    assert len(db_rows(sandbox, "SELECT * FROM deployments")) == 1
    assert_clean_log(sandbox)


async def _started(sb, d: int) -> bool:
    rows = db_rows(sb, "SELECT state FROM deployments WHERE id = ?", (d,))
    return rows[0]["state"] not in ("requested", "awaiting_approval", "scheduled")


async def _async(select, client):
    return select(await client.messages("deploys"))


# --------------------------------------------------------------------------- amendments, concurrently


async def test_concurrent_requests_amend_atomically_and_every_answer_is_true(sandbox, client):
    versions = {"alice": [20, 22, 24, 24, 26], "bob": [21, 23, 25, 25, 27]}  # repeats: "already deploys"
    order = [(user, v) for pair in zip(versions["alice"], versions["bob"], strict=True) for user, v in
             zip(("alice", "bob"), pair, strict=True)]  # fmt: skip
    replies = list(
        await asyncio.gather(*(client.slash(user, "/deploy", f"web v{v} to staging") for user, v in order))
    )
    rows = db_rows(sandbox, "SELECT id, requested_by FROM deployments")
    assert len(rows) == 1, rows
    d, holder_id = rows[0]["id"], rows[0]["requested_by"]
    holder = next(u for u, uid in sandbox.slack.users.items() if uid == holder_id)
    other = "bob" if holder == "alice" else "alice"
    created, answered_amends = [], []
    for (user, v), r in zip(order, replies, strict=True):
        assert r["status"] == 200, r
        text = r["body"]["text"]
        if user == other:  # told who holds it, by name
            assert f"locked by deployment #{d}" in text and f"started by <@{holder_id}>" in text, text
            continue
        assert "locked by" not in text, text  # never locked out by himself
        if text.startswith(f"Deployment #{d} · web v{v} → staging requested"):
            created.append(v)
        elif "now deploys" in text:
            assert f"Your request #{d} now deploys web v{v} to staging" in text, text
            answered_amends.append((re.search(r"\(it was (v\d+)\)", text).group(1), f"v{v}"))
        elif "already deploys" in text:
            assert f"Your request #{d} already deploys web v{v} to staging" in text, text
        else:
            assert f"Your deployment #{d} already started with web v" in text, text
            running = re.search(r"already started with web (v\d+) ", text).group(1)
            # it started during the burst: a request for another version is not applied; one for the
            # version it runs changes nothing — each said truthfully
            said = "nothing was changed" if running == f"v{v}" else f"v{v} was not applied"
            assert said in text, text
    assert len(created) == 1, replies

    # once it has started, the holder's next request is told so, truthfully, and changes nothing
    await wait_for(lambda: _started(sandbox, d), 30, what=f"deployment #{d} to start")
    late_ask = await client.slash(holder, "/deploy", "web v99 to staging")
    text = late_ask["body"]["text"]
    assert f"Your deployment #{d} already started with web v" in text and "v99 was not applied" in text, text
    order.append((holder, 99))
    replies.append(late_ask)
    other_ask = await client.slash(other, "/deploy", "web v98 to staging")
    assert f"locked by deployment #{d}" in other_ask["body"]["text"], other_ask

    await wait_terminal(client, d, within=90)
    final = db_rows(sandbox, "SELECT version, state FROM deployments WHERE id = ?", (d,))[0]
    assert final["state"] == "succeeded", final
    amends = [
        json.loads(e["details"])
        for e in db_rows(sandbox, "SELECT details FROM events WHERE action = 'amend' ORDER BY id")
    ]
    chain = [f"v{created[0]}"]
    for a in amends:  # each amendment starts from what the previous one left
        assert a["from"]["version"] == chain[-1], (a, chain)
        chain.append(a["to"]["version"])
    # every accepted amendment was answered once, naming exactly what it changed
    assert sorted(answered_amends) == sorted((a["from"]["version"], a["to"]["version"]) for a in amends)
    assert final["version"] == chain[-1]  # the last accepted amendment is what ran...
    started = db_rows(sandbox, "SELECT id FROM events WHERE deployment_id = ? AND action = 'start'", (d,))[0][
        "id"
    ]
    late = db_rows(sandbox, "SELECT id FROM events WHERE action = 'amend' AND id > ?", (started,))
    assert late == []  # ...and nothing was amended after the start
    _, image = service_image(sandbox, "staging", "web-blue")
    assert image == f"web:{chain[-1]}"  # ...and what ECS ends with
    for (user, _), r in zip(order, replies, strict=True):
        if user == holder and "already started with" in r["body"]["text"]:
            assert f"already started with web {chain[-1]}" in r["body"]["text"]
    assert_clean_log(sandbox)


# ----------------------------------------------------------------------------------------- refusals


async def test_refusals_are_recorded_with_deployment_service_and_environment(sandbox, client):
    forbidden = await client.slash("dave", "/deploy", "web v2 to staging")
    assert "You need the" in forbidden["body"]["text"], forbidden
    d = await request(client, "alice", "web v2 to production")
    await wait_state(sandbox, d, "awaiting_approval")
    own = await client.slash("alice", "/deploy", f"approve {d}")
    assert "four eyes" in own["body"]["text"], own
    m = await message_of(client, d, "Approve", within=10)
    r = await client.click("dave", "deploys", m["ts"], label="Cancel")
    assert r["status"] == 200

    async def refusals():
        rows = db_rows(sandbox, "SELECT * FROM events WHERE action = 'refused' ORDER BY id")
        return rows if len(rows) >= 3 else None

    rows = await wait_for(refusals, 10, what="three refusals on the record")
    details = [json.loads(r["details"]) for r in rows]
    assert [
        (r["deployment_id"], x["service"], x["env"], x["action"]) for r, x in zip(rows, details, strict=True)
    ] == [
        (None, "web", "staging", "deploy"),
        (d, "web", "production", "approve"),
        (d, "web", "production", "deploy"),
    ]
    assert [r["actor"] for r in rows] == [sandbox.slack.users[u] for u in ("dave", "alice", "dave")]

    export = subprocess.run(
        [sys.executable, "-m", "bot", "audit", "--db", sandbox.db, "--service", "web"],
        capture_output=True,
        text=True,
        check=True,
    )
    exported = [e for e in json.loads(export.stdout) if e["action"] == "refused"]
    assert [(e["deployment_id"], e["service"], e["env"]) for e in exported] == [
        (None, "web", "staging"),
        (d, "web", "production"),
        (d, "web", "production"),
    ]
    audit = (await client.slash("bob", "/deploy", f"audit {d}"))["body"]["text"]
    assert len(re.findall(r"\*refused\*", audit)) == 2, audit
