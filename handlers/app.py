"""Wires the Slack app: one AsyncApp, the roles middleware (context["roles"], resolved once per request,
never waiting on Slack), every handler module's register(app, engine), one error handler;
and the HTTP front of it (`web_app`): signature first, then the body's shape, then replays, then bolt."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger import get_bolt_app_logger
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.store.aio import AsyncStore
from bot.app.engine import Engine
from bot.app.foreground import FOREGROUND
from bot.domain import commands as cmds
from handlers.errors import SOMETHING_WRONG
from handlers.listeners import actions, aftercare, approvals, commands, events, reasons
from handlers.listeners.events import HomeTab
from handlers.notifier import SlackNotifier
from handlers.request_claims import RequestClaims
from handlers.roles import RoleResolver, RolesMiddleware
from handlers.ui import blocks as slack_ui

log = logging.getLogger(__name__)


class BotApp(AsyncApp):
    """Bolt's AsyncApp, with one change on the ack path: every request's context carries the app's one Web
    API client. Bolt (since 1.15) builds a new AsyncWebClient for each request, in case a listener swaps
    the token on it; that build reads the proxy environment variables and formats the User-Agent again,
    about a twentieth of a `/deploy` ack's CPU. Here one token serves the one workspace (the manifest has
    org_deploy_enabled: false, so the request's team_id bolt's client would add to every call is not
    needed) and no listener changes the client (tests/test_http_front.py checks the context gets every
    key bolt's own gives it)."""

    def _init_context(self, req: AsyncBoltRequest) -> None:
        req.context["logger"] = get_bolt_app_logger(app_name=self.name, base_logger=self._base_logger)
        req.context["token"] = self._token
        req.context["client"] = self._async_client
        req.context["listener_runner"] = self.listener_runner


def build_app(
    engine: Engine,
    client: AsyncWebClient,
    signing_secret: str,
    notifier: SlackNotifier | None = None,
    home: HomeTab | None = None,
) -> AsyncApp:
    app = BotApp(
        client=client,
        signing_secret=signing_secret,
        # The HTTP front (web_app) checks every request's signature before bolt sees it, over the raw
        # bytes; bolt checking the same HMAC again added nothing (Socket Mode carries no signature).
        request_verification_enabled=False,
        raise_error_for_unhandled_request=False,
        # Answer each request as soon as the listener returns, instead of bolt polling for the ack every
        # 10 ms: listeners ack with what they know and leave slow work to background tasks.
        process_before_response=True,
    )
    directory = notifier.directory if notifier is not None else None
    resolver = RoleResolver(client, engine.settings.roles, directory=directory)
    resolver.warm()  # read the user groups now, so no ack ever waits on usergroups.* (Slack tier 2)
    app.use(RolesMiddleware(resolver))  # context["roles"], for every listener
    commands.register(app, engine, resolver.directory)
    actions.register(app, engine, notifier)
    if home is not None:
        events.register(app, home)
    approvals.register(app, engine)
    aftercare.register(app, engine)  # How did it go?, its modal, Roll back now
    reasons.register(app, engine)  # Reject's reason from a modal

    @app.error
    async def on_error(error: Exception, body: dict[str, Any], respond: Any = None) -> None:
        # Never a stack trace to the user: log it, and say something went wrong, with no internals.
        log.exception("handler failed: %s", type(error).__name__, exc_info=error)
        if respond is not None and body.get("response_url"):
            try:
                await respond(
                    slack_ui.refused(f"{SOMETHING_WRONG} Nothing was changed by this request."),
                    replace_original=False,
                )
            except Exception:
                log.exception("could not report the error to the user")

    return app


# ----------------------------------------------------------------------------------------- HTTP front

SIGNATURE_WINDOW_SECONDS = 300  # Slack's: a signed request older (or newer) than 5 minutes is refused
REPLAY_WAIT_SECONDS = 2.0  # a retry arriving while the first copy is still handled waits this long for it


class BadRequest(Exception):
    """A correctly signed body Slack never sends: answered 400, logged as a warning, never a traceback."""


def request_key(fields: dict[str, Any], timestamp: str, raw: bytes) -> str:
    """Slack's identity of a request: its trigger_id (a slash command's or a click's; a retry carries the
    same one), or an event's event_id, else the signed timestamp and body (what a replay repeats byte for
    byte)."""
    trigger = fields.get("trigger_id")
    if isinstance(trigger, str) and trigger:
        return "trigger:" + trigger
    event_id = fields.get("event_id")  # an Events API delivery: its retries carry the same event_id
    if isinstance(event_id, str) and event_id:
        return "event:" + event_id
    return "signed:" + hashlib.sha256(timestamp.encode() + b":" + raw).hexdigest()


def parse_slack_body(raw: bytes, content_type: str) -> dict[str, Any]:
    """The fields of a signed body, checked here and handed to bolt as they are (bolt_request); bolt would
    raise on these and answer 500: UTF-8; JSON (by content type, or a body starting with "{") must be an
    object; a form must carry a `payload` that is a JSON object, or a `command`, or be Slack's ssl_check."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest("the body is not UTF-8") from None
    if not text:
        raise BadRequest("the body is empty")
    if content_type == "application/json" or text.startswith("{"):
        try:
            body = json.loads(text)
        except ValueError:
            raise BadRequest("the JSON body does not parse") from None
        if not isinstance(body, dict):
            raise BadRequest("the JSON body is not an object")
        return body
    form = dict(parse_qsl(text, keep_blank_values=True))
    if "payload" in text:  # bolt reads the payload whenever the word appears in the body
        payload = form.get("payload")
        if payload is None and "command" not in form:
            raise BadRequest("the form has no payload")
        if payload is not None:
            try:
                body = json.loads(payload)
            except ValueError:
                raise BadRequest("the payload is not JSON") from None
            if not isinstance(body, dict):
                raise BadRequest("the payload is not a JSON object")
            return body
    if "command" in form or "ssl_check" in form:
        return form
    raise BadRequest("the form is neither a command nor a payload")


def web_app(
    app: AsyncApp, store: AsyncStore, signing_secret: str, path: str = "/slack/events"
) -> web.Application:
    """The aiohttp app in front of bolt. Bolt parses the body before it checks the signature, so a body
    Slack never sends answers 500 there; here the raw body is read once and:
    1. the signature is checked first (a timestamp that is not a number, is more than 5 minutes off, or a
       signature that does not match: 401);
    2. a signed body that is not what Slack sends gets 400 with a short reason (logged, no traceback);
    3. the request is claimed by Slack's identity for it (`request_key`): a replay or a retry of one
       already handled gets the first answer back, and nothing is done again (claims and answers of
       concurrent requests share one hop to the store's thread: `RequestClaims`);
    4. only then bolt handles it, and its answer is kept for replays."""

    claims = RequestClaims(store)

    async def slack_events(request: web.Request) -> web.Response:
        FOREGROUND.begin()
        try:
            return await answer(request)
        finally:
            FOREGROUND.end()

    async def answer(request: web.Request) -> web.Response:
        raw = await request.read()
        timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
        signature = request.headers.get("X-Slack-Signature", "")
        if not (
            timestamp.isascii()
            and timestamp.isdigit()
            and len(timestamp) <= 12
            and abs(time.time() - int(timestamp)) <= SIGNATURE_WINDOW_SECONDS
            and _signed(signing_secret, timestamp, raw, signature)
        ):
            log.warning("refused a request to %s: missing, stale or wrong signature", path)
            return web.Response(status=401, text="invalid signature")
        try:
            fields = parse_slack_body(raw, request.content_type)
        except BadRequest as exc:
            log.warning("refused a signed request to %s: %s", path, exc)
            return web.Response(status=400, text=f"bad request: {exc}")
        if reads_only(fields):  # nothing to repeat: no claim, no thread hop before the answer
            return await to_aiohttp_response(await app.async_dispatch(bolt_request(raw, request, fields)))
        key = request_key(fields, timestamp, raw)
        seen = await claims.claim(key, time.time())
        if seen is not None:
            log.info("request %s seen before (retry %s): answered as the first time",
                     key[:24], request.headers.get("X-Slack-Retry-Num", "-"))  # fmt: skip
            return await _replayed(store, key, seen)
        bolt_response = await app.async_dispatch(bolt_request(raw, request, fields))
        response = await to_aiohttp_response(bolt_response)
        # Kept for replays without holding up this answer: claims and answers reach the store in the order
        # they are asked for, so a replay's claim (always asked after this) finds it.
        claims.answer(key, response.status, response.content_type, bolt_response.body or "")
        return response

    app_ = web.Application()
    app_.router.add_post(path, slack_events)
    return app_


def bolt_request(raw: bytes, request: web.Request, fields: dict[str, Any]) -> AsyncBoltRequest:
    """Bolt's request, carrying the fields the front parsed (parse_slack_body) instead of parsing the body
    again: bolt's own parse reads any form whose text says "payload" as an interaction's `payload=`, so a
    slash command with that word in it (--reason "payload fix") reached no listener and was answered 404.
    The raw body stays what bolt's signature check reads."""
    headers = request.headers  # a multidict: bolt reads any mapping of str to str or str lists
    req = AsyncBoltRequest(body="", query=request.query_string, headers=headers)  # type: ignore[arg-type]
    req.raw_body = raw.decode("utf-8")
    req.body = fields
    req.context = build_async_context(AsyncBoltContext({}), fields)
    return req


def reads_only(fields: dict[str, Any]) -> bool:
    """A slash command that only reads: a replay of it changes nothing, so it is not claimed."""
    command, text = fields.get("command"), fields.get("text", "")
    return isinstance(command, str) and isinstance(text, str) and cmds.reads_only(command, text)


def _signed(secret: str, timestamp: str, raw: bytes, signature: str) -> bool:
    """Slack's v0 signature over the raw bytes (slack_sdk's SignatureVerifier decodes the body as UTF-8
    first, which raises on a body that is not: the bytes are what was signed)."""
    expected = (
        "v0="
        + hmac.new(secret.encode(), b"v0:" + timestamp.encode() + b":" + raw, hashlib.sha256).hexdigest()
    )
    return hmac.compare_digest(expected.encode(), signature.encode("utf-8", "replace"))


async def _replayed(store: AsyncStore, key: str, seen: Any) -> web.Response:
    deadline = time.monotonic() + REPLAY_WAIT_SECONDS
    while seen is not None and seen.status is None and time.monotonic() < deadline:
        await asyncio.sleep(0.05)  # the first copy is still being handled: its answer is moments away
        seen = await store.answered(key)
    if seen is None or seen.status is None:
        return web.Response(status=200, text="")  # still being handled: the first copy will answer
    return web.Response(status=seen.status, text=seen.body or "", content_type=seen.content_type)
