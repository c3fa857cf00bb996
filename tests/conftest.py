"""Shared fixtures: the sandbox (moto world + local Slack + the real bot process), its control-API
client, and readers of the bot's database and AWS world for assertions."""

from __future__ import annotations

import hmac
import json
import re
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
import boto3
import pytest

from bot.adapters.store.urls import is_postgres_url
from bot.config.load import load_settings
from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.store_backends import pg_url, store_url  # noqa: F401 - the store's two backends, as fixtures

CONFIG = Path(__file__).parent.parent / "config" / "deploybot.toml"
TERMINAL_WORDS = ("succeeded", "rolled back", "failed", "cancelled")


@pytest.fixture
def aws_env(monkeypatch, tmp_path):
    """boto3 in the test process talks to moto only, with dummy credentials."""
    for key in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")


@pytest.fixture
async def sandbox(tmp_path, aws_env):
    async with Sandbox(config=CONFIG, speed=60, workdir=tmp_path) as sb:
        yield sb


@pytest.fixture
async def client(sandbox):
    async with SandboxClient(sandbox.slack_url) as c:
        yield c


def db_rows(sb: Sandbox, sql: str, args: tuple = ()) -> list[dict]:
    """Rows of the sandbox bot's store, SQLite or PostgreSQL (the same SQL, as the store writes it)."""
    if is_postgres_url(sb.db):
        import psycopg
        from psycopg.rows import dict_row

        from bot.adapters.store.pg import translate

        with psycopg.connect(sb.db, autocommit=True, row_factory=dict_row) as pg:
            return list(pg.execute(translate(sql), args).fetchall())
    conn = sqlite3.connect(sb.db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute(sql, args)]
    finally:
        conn.close()


def ecs(sb: Sandbox):
    return boto3.client("ecs", endpoint_url=sb.aws_url, region_name="us-east-1")


def service_image(sb: Sandbox, cluster: str, service: str) -> tuple[str, str]:
    """(task definition ARN, image of its first container) the ECS service runs."""
    client = ecs(sb)
    arn = client.describe_services(cluster=cluster, services=[service])["services"][0]["taskDefinition"]
    td = client.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return arn, td["containerDefinitions"][0]["image"]


def top_level(messages: list[dict]) -> list[dict]:
    """The channel's own messages: no thread replies, nothing only one user sees."""
    return [m for m in messages if not m.get("thread_ts") and not m.get("ephemeral_for")]


async def wait_terminal(client: SandboxClient, deployment_id: int, within: float = 60.0) -> dict:
    """Wait until deployment #id's message shows a terminal state word; return that message."""

    async def probe():
        for m in top_level(await client.messages("deploys")):
            if f"#{deployment_id} " in m["text"] and any(f": {w}" in m["text"] for w in TERMINAL_WORDS):
                return m
        return None

    return await wait_for(probe, within, what=f"deployment #{deployment_id} to finish")


async def signed_post(
    sb: Sandbox,
    form: dict,
    headers: dict | None = None,
    secret: str | None = None,
    timestamp: int | None = None,
) -> tuple[int, str]:
    """POST a Slack-shaped, signed form to the bot exactly as Slack would (for replays and raw payloads)."""
    body = urlencode({k: json.dumps(v) if isinstance(v, dict) else v for k, v in form.items()})
    return await raw_post(sb, body.encode(), headers=headers, secret=secret, timestamp=timestamp)


async def raw_post(
    sb: Sandbox,
    body: bytes,
    content_type: str = "application/x-www-form-urlencoded",
    *,
    headers: dict | None = None,
    secret: str | None = None,
    timestamp: int | str | None = None,
    signed: bool = True,
) -> tuple[int, str]:
    """POST raw bytes to the bot's /slack/events, signed over those exact bytes (a timestamp may be any
    string, even one Slack never sends), or unsigned with `signed=False`."""
    ts = str(timestamp if timestamp is not None else int(time.time()))
    hdrs = {"Content-Type": content_type, "X-Slack-Request-Timestamp": ts}
    if signed:
        digest = hmac.new(
            (secret or sb.signing_secret).encode(), b"v0:" + ts.encode() + b":" + body, "sha256"
        )
        hdrs["X-Slack-Signature"] = "v0=" + digest.hexdigest()
    hdrs.update(headers or {})
    async with (
        aiohttp.ClientSession() as s,
        s.post(sb.bot.url + "/slack/events", data=body, headers=hdrs) as r,
    ):
        return r.status, await r.text()


def bot_log(sb: Sandbox) -> str:
    """What the bot process has logged so far (its stderr, kept by the sandbox)."""
    return (sb.workdir / "bot.log").read_text(errors="replace")


def slash_form(sb: Sandbox, user: str, text: str, trigger_id: str, command: str = "/deploy") -> dict:
    return {
        "token": "x",
        "team_id": "T0SANDBOX",
        "team_domain": "deploybot-sandbox",
        "channel_id": sb.slack.channels["deploys"],
        "channel_name": "deploys",
        "user_id": sb.slack.users[user],
        "user_name": user,
        "command": command,
        "text": text,
        "api_app_id": "A0DEPLOYBOT",
        "response_url": sb.slack_url + "/_sandbox/response/none",
        "trigger_id": trigger_id,
    }


def recorder(sb: Sandbox, what: str) -> str:
    """moto's request recorder: 'start-recording', 'reset-recording' or 'download-recording'."""
    import urllib.request

    method = "GET" if what == "download-recording" else "POST"
    with urllib.request.urlopen(
        urllib.request.Request(f"{sb.aws_url}/moto-api/recorder/{what}", method=method)
    ) as r:
        return r.read().decode()


def recorded(sb: Sandbox) -> list[dict]:
    """Every request moto's recorder kept, in order. moto's threaded server writes an entry and its newline
    in two writes, so two requests at once can leave two entries on one line (seen with two replicas):
    the recording is read as a sequence of JSON documents, not as one per line."""
    text, decoder, entries = recorder(sb, "download-recording"), json.JSONDecoder(), []
    at = _SPACE.match(text).end()  # type: ignore[union-attr]
    while at < len(text):
        entry, at = decoder.raw_decode(text, at)
        entries.append(entry)
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]
    return entries


_SPACE = re.compile(r"\s*")


def recorded_actions(sb: Sandbox) -> list[str]:
    """The AWS actions of every request recorded since start-recording, in order."""
    import base64
    from urllib.parse import parse_qs

    actions = []
    for r in recorded(sb):
        target = r.get("headers", {}).get("X-Amz-Target")
        if target:
            actions.append(target.rsplit(".", 1)[-1])
            continue
        body = r.get("body") or ""
        if r.get("body_encoded"):
            body = base64.b64decode(body).decode(errors="replace")
        actions.append(parse_qs(body).get("Action", ["?"])[0])
    return actions


def listener_weights(sb: Sandbox, service: str, env: str) -> dict[str, int]:
    """The weights the ALB rule for service+env forwards with, read through the real ELBv2 API."""
    elb = boto3.client("elbv2", endpoint_url=sb.aws_url, region_name="us-east-1")
    lb = elb.describe_load_balancers(Names=[f"deploybot-{env}"])["LoadBalancers"][0]["LoadBalancerArn"]
    listener = elb.describe_listeners(LoadBalancerArn=lb)["Listeners"][0]["ListenerArn"]
    names = {}
    for slot in ("blue", "green"):
        tg = elb.describe_target_groups(Names=[f"{service}-{env}-{slot}"])["TargetGroups"][0]
        names[tg["TargetGroupArn"]] = slot
    for rule in elb.describe_rules(ListenerArn=listener)["Rules"]:
        for action in rule["Actions"]:
            groups = action.get("ForwardConfig", {}).get("TargetGroups", [])
            if any(g["TargetGroupArn"] in names for g in groups):
                return {names[g["TargetGroupArn"]]: g["Weight"] for g in groups}
    raise AssertionError(f"no rule forwards to {service} in {env}")


def desired_count(sb: Sandbox, cluster: str, service: str) -> int:
    return ecs(sb).describe_services(cluster=cluster, services=[service])["services"][0]["desiredCount"]


async def wait_state(sb: Sandbox, deployment_id: int, state: str, within: float = 60.0) -> bool:
    async def probe():
        rows = db_rows(sb, "SELECT state FROM deployments WHERE id = ?", (deployment_id,))
        return bool(rows) and rows[0]["state"] == state

    try:
        return await wait_for(probe, within, what=f"deployment #{deployment_id} to be {state}")
    except TimeoutError as exc:  # say where it stands and how it got there: a flake names its cause
        rows = db_rows(sb, "SELECT state FROM deployments WHERE id = ?", (deployment_id,))
        trail = db_rows(
            sb, "SELECT action, details FROM events WHERE deployment_id = ? ORDER BY id", (deployment_id,)
        )
        last = "; ".join(f"{e['action']} {(e['details'] or '')[:300]}" for e in trail[-6:])
        raise TimeoutError(f"{exc}; it is {rows[0]['state'] if rows else 'missing'}; last: {last}") from None


# production's manual items ("Tests passing" is automatic: the CI evidence, green in the sandbox by default)
MANUAL_ITEMS = ("Code review approved", "Team notified")


async def through_gate(
    client: SandboxClient, sb: Sandbox, deployment_id: int, approver: str = "bob", ticker: str = "alice"
) -> None:
    """Walk a production deployment through its checklist and approval the way people do: tick the manual
    items on its message, and approve it as someone other than the requester."""
    await wait_state(sb, deployment_id, "awaiting_approval")

    async def message():  # rendered with its checklist (the message follows the state a moment later)
        for m in top_level(await client.messages("deploys")):
            if f"#{deployment_id} " in m["text"] and MANUAL_ITEMS[0] in json.dumps(m.get("blocks")):
                return m
        return None

    m = await wait_for(message, 10, what="the deployment's message with its checklist")
    for label in MANUAL_ITEMS:
        r = await client.click(ticker, "deploys", m["ts"], label=label)
        assert r["status"] == 200, r

        async def ticked(label=label):
            items = db_rows(
                sb,
                "SELECT c.done FROM checklist c WHERE c.deployment_id = ? AND c.item_id IN "
                "(SELECT item_id FROM checklist WHERE deployment_id = ?) AND c.by != 'deploybot'",
                (deployment_id, deployment_id),
            )
            return len([i for i in items if i["done"]]) >= MANUAL_ITEMS.index(label) + 1

        await wait_for(ticked, 10, what=f"{label} to be ticked")
    r = await client.slash(approver, "/deploy", f"approve {deployment_id}")
    assert "You approved" in r["body"]["text"], r


async def rehearsed(
    client: SandboxClient, sb: Sandbox, service: str, version: str, user: str = "alice"
) -> None:
    """A version of a service with migrations goes to production only once its migration was rehearsed
    in staging (production's "Database migrations tested" evidence): deploy it there first, as people do.
    Nothing for a service without migrations."""
    if load_settings(sb.config).target(service, "production").migrations is None:
        return
    d = await request(client, user, f"{service} {version} to staging")
    assert "succeeded" in (await wait_terminal(client, d, within=90))["text"]


async def request(client: SandboxClient, user: str, text: str) -> int:
    """`/deploy TEXT` as `user`; the id of the deployment it created (the answer must say it did)."""
    r = await client.slash(user, "/deploy", text)
    assert r["status"] == 200 and r["body"]["text"].startswith("Deployment #"), r
    return int(r["body"]["text"].split("#", 1)[1].split()[0])


async def stops_answering(url: str) -> bool:
    """True once nothing answers at `url` any more (the process behind it has gone)."""
    try:
        async with aiohttp.ClientSession() as s, s.get(url):
            return False
    except aiohttp.ClientError:
        return True


async def message_of(client: SandboxClient, d: int, *marks: str, within: float = 30.0) -> dict:
    """Deployment #d's top-level message once its blocks show every one of `marks` (its checklist, a
    button's label): the message follows the deployment's state a moment later."""

    async def probe():
        for m in top_level(await client.messages("deploys")):
            blocks = json.dumps(m.get("blocks"))
            if f"#{d} " in m["text"] and all(mark in blocks for mark in marks):
                return m
        return None

    return await wait_for(probe, within, what=f"deployment #{d}'s message showing {marks}")


def button_label(text: str) -> str:
    """A button's label as it stands in a message's blocks (a mark for message_of)."""
    return f'"text": "{text}"'
