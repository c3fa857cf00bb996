"""A local Slack for the sandbox: the Web API the bot calls, the message store behind it, and a control API
that acts as users by signing slash commands and button clicks and POSTing them to the bot as Slack would."""

from __future__ import annotations

import base64
import copy
import json
import math
import secrets
import string
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

import aiohttp
from aiohttp import web
from slack_sdk.models.blocks import Block
from slack_sdk.signature import SignatureVerifier

from bot.clock import Clock
from bot.sandbox.slack_files import SlackFiles
from bot.sandbox.slack_views import Modals

TEAM_NAME = "Deploybot Sandbox"
TEAM_DOMAIN = "deploybot-sandbox"
APP_ID = "A0DEPLOYBOT"
BOT_USER_ID = "U0DEPLOYBOT"
BOT_ID = "B0DEPLOYBOT"
VERIFICATION_TOKEN = "sandboxverificationtoken0"

# Slack's limits (docs.slack.dev): blocks per message / per Home view, Block Kit id and element limits,
# message text, response_url uses and lifetime, and the 3 s a slash command or click has to be acked.
MAX_BLOCKS = 50
MAX_VIEW_BLOCKS = 100
MAX_ID_CHARS = 255
MAX_ACTIONS_ELEMENTS = 25
MAX_CHECKBOX_OPTIONS = 10
MAX_TEXT_CHARS = 40_000
RESPONSE_URL_USES = 5
RESPONSE_URL_TTL_S = 30 * 60
ACK_TIMEOUT_S = 3.0

_USERS = [
    # name, id, real name, tz
    ("alice", "U0ALICE", "Alice Adler", "Europe/Berlin"),
    ("bob", "U0BOB", "Bob Brandt", "Europe/Berlin"),
    ("carol", "U0CAROL", "Carol Castell", "Europe/Berlin"),
    ("dave", "U0DAVE", "Dave Dorn", "Europe/Berlin"),
    ("deploybot", BOT_USER_ID, "Deploybot", "Europe/Berlin"),
]
_CHANNELS = [
    ("deploys", "C0DEPLOYS", "Deploy requests, approvals and progress"),
    ("incidents", "C0INCIDENTS", "Alerts and incident response"),
    ("deploys-log", "C0DEPLOYSLOG", "One line per finished deployment"),
]
_USERGROUPS = [
    ("release-managers", "S0RELEASE", "Release managers", ["bob"]),
    ("oncall", "S0ONCALL", "On-call", ["carol"]),
    ("engineers", "S0ENG", "Engineers", ["alice", "bob", "carol"]),
]
_TZ_LABELS = {"CET": "Central European Time", "CEST": "Central European Summer Time"}


class LocalSlackError(Exception):
    """A control-API request the local Slack cannot carry out; `status` and `body` are its HTTP answer."""

    def __init__(self, status: int, error: str, **extra: Any):
        super().__init__(error)
        self.status = status
        self.body = {"ok": False, "error": error, **extra}


class _ApiError(Exception):
    """A Web API call that fails the way Slack's does: `{"ok": false, "error": ...}`."""

    def __init__(self, error: str, *, status: int = 200, headers: dict | None = None, **extra: Any):
        super().__init__(error)
        self.error = error
        self.status = status
        self.headers = headers or {}
        self.extra = extra


# ---------------------------------------------------------------- Block Kit validation


def _walk(node: Any, path: str) -> Iterator[tuple[str, dict]]:
    if isinstance(node, dict):
        yield path, node
        for key, value in node.items():
            yield from _walk(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _walk(value, f"{path}/{i}")


def block_errors(blocks: Any, *, max_blocks: int = MAX_BLOCKS) -> list[str]:
    """Slack-style error strings for a list of blocks; empty when Slack would accept them."""
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors = []
    if len(blocks) > max_blocks:
        errors.append(f"no more than {max_blocks} items allowed [json-pointer:/blocks]")
    for i, raw in enumerate(blocks):
        where = f"/blocks/{i}"
        if not isinstance(raw, dict):
            errors.append(f"must be an object [json-pointer:{where}]")
            continue
        try:
            block = Block.parse(raw)
            if block is None:
                errors.append(f"unsupported type: {raw.get('type')!r} [json-pointer:{where}/type]")
                continue
            block.validate_json()
        except Exception as e:  # any model failure is a block Slack would refuse
            errors.append(f"{e} [json-pointer:{where}]")
            continue
        if raw.get("type") == "actions" and len(raw.get("elements") or []) > MAX_ACTIONS_ELEMENTS:
            errors.append(
                f"no more than {MAX_ACTIONS_ELEMENTS} items allowed [json-pointer:{where}/elements]"
            )
        for path, node in _walk(raw, where):
            for key in ("action_id", "block_id"):
                if isinstance(node.get(key), str) and len(node[key]) > MAX_ID_CHARS:
                    errors.append(
                        f"must be less than {MAX_ID_CHARS + 1} characters [json-pointer:{path}/{key}]"
                    )
            if node.get("type") == "checkboxes" and len(node.get("options") or []) > MAX_CHECKBOX_OPTIONS:
                errors.append(
                    f"no more than {MAX_CHECKBOX_OPTIONS} items allowed [json-pointer:{path}/options]"
                )
    return errors


def _parse_json_arg(value: Any) -> Any:
    """Form-encoded calls carry blocks and views as JSON strings; JSON calls carry them as-is."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise _ApiError("invalid_blocks", errors=["not valid JSON"]) from None
    return value


def _metadata(value: Any) -> dict | None:
    """chat.postMessage's `metadata` ({event_type, event_payload}; a JSON string in a form-encoded call),
    refused the way Slack refuses it."""
    if value in (None, ""):
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise _ApiError("invalid_metadata_format") from None
    if (
        not isinstance(value, dict)
        or not isinstance(value.get("event_type"), str)
        or not value["event_type"]
        or not isinstance(value.get("event_payload"), dict)
    ):
        raise _ApiError("invalid_metadata_schema")
    return {"event_type": value["event_type"], "event_payload": copy.deepcopy(value["event_payload"])}


def _ts_key(ts: str) -> int:
    return int(ts.replace(".", ""))


def _cursor(ts: str) -> str:
    """Slack's history cursors are base64 of "next_ts:<ts without the dot>"."""
    return base64.b64encode(f"next_ts:{_ts_key(ts)}".encode()).decode()


def _from_cursor(cursor: str) -> int:
    try:
        kind, _, value = base64.b64decode(cursor.encode(), validate=True).decode().partition(":")
        if kind == "next_ts" and value.isdigit():
            return int(value)
    except ValueError:
        pass
    raise _ApiError("invalid_cursor")


def _truthy(value: Any) -> bool:
    return value is True or value == 1 or (isinstance(value, str) and value.lower() in ("true", "1"))


def _label(text_obj: Any) -> str:
    return text_obj.get("text", "") if isinstance(text_obj, dict) else str(text_obj or "")


def _same_label(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def _ack_message(result: dict) -> dict | None:
    """The message a slash command's ack shows: a JSON body with text or blocks, or plain text (bolt's
    `ack("...")` answers text/plain)."""
    body = result["body"]
    if result["status"] != 200:
        return None
    if isinstance(body, dict) and ("text" in body or "blocks" in body):
        return body
    if isinstance(body, str) and body.strip():
        return {"text": body}
    return None


def slack_escape(text: str) -> str:
    """What Slack does to a slash command's text before it sends it: & < > as entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _random_id(length: int = 5) -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits) for _ in range(length))


class LocalSlack:
    """One workspace on loopback: users, channels, usergroups, messages, Home views and response_urls."""

    def __init__(
        self, *, signing_secret: str, bot_token: str, team_id: str = "T0SANDBOX", clock: Clock | None = None
    ):
        self.signing_secret = signing_secret
        self.bot_token = bot_token
        self.team_id = team_id
        self.clock = clock or Clock()
        self.bot_events_url: str | None = None
        self.bot_events_urls: list[str] = []  # several bots (replicas): requests go round robin
        self._next_bot = 0
        self.url: str | None = None
        self.rate_limit_per_channel_per_s: float | None = None
        self.ack_timeout_s: float | None = ACK_TIMEOUT_S
        self.calls: list[dict] = []
        self.rejected = 0  # calls refused for their content: invalid_blocks, msg_too_long, no_text

        self.users: dict[str, str] = {name: uid for name, uid, _, _ in _USERS}
        self.channels: dict[str, str] = {name: cid for name, cid, _ in _CHANNELS}
        self.usergroups: dict[str, dict] = {
            handle: {"id": gid, "name": name, "users": [self.users[u] for u in members]}
            for handle, gid, name, members in _USERGROUPS
        }
        self._people = {uid: {"name": n, "real_name": rn, "tz": tz} for n, uid, rn, tz in _USERS}
        self._conversations: dict[str, dict] = {
            cid: {"name": name, "purpose": purpose, "is_im": False, "user": None}
            for name, cid, purpose in _CHANNELS
        }
        self._created = int(self.clock.now())
        self._messages: dict[str, list[dict]] = {cid: [] for cid in self._conversations}
        self._views: dict[str, dict] = {}
        self._response_urls: dict[str, dict] = {}
        self._client_state: dict[tuple[str, str], dict[tuple, list]] = {}  # checkbox state the client keeps
        self._last_post: dict[str, float] = {}
        self._last_micros = 0
        self._app: web.Application | None = None
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._methods: dict[str, Callable[[dict], dict]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "conversations.list": self._conversations_list,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "conversations.open": self._conversations_open,
            "users.info": self._users_info,
            "users.list": self._users_list,
            "usergroups.list": self._usergroups_list,
            "usergroups.users.list": self._usergroups_users_list,
            "views.publish": self._views_publish,
        }
        self.modals = Modals(  # views.open and view_submission (bot/sandbox/slack_views.py)
            self, api_error=_ApiError, local_error=LocalSlackError, block_errors=block_errors,
            parse_json=_parse_json_arg,
        )  # fmt: skip
        self._methods["views.open"] = self.modals.views_open
        self.files = SlackFiles(self, _ApiError, BOT_USER_ID)  # files_upload_v2's methods, and the files
        self._methods.update(self.files.methods())

    # ------------------------------------------------------------ serving

    def make_app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/_sandbox/messages", self._handle_messages)
        app.router.add_get("/_sandbox/home", self._handle_home)
        app.router.add_get("/_sandbox/calls", self._handle_calls)
        app.router.add_get("/_sandbox/world", self._handle_world)
        app.router.add_post("/_sandbox/slash", self._handle_slash)
        app.router.add_post("/_sandbox/click", self._handle_click)
        app.router.add_post("/_sandbox/say", self._handle_say)
        app.router.add_post("/_sandbox/response/{token}", self._handle_response_url)
        app.router.add_get("/archives/{channel}/{pts}", self._handle_permalink)
        self.modals.routes(app)
        self.files.routes(app)
        self._app = app
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._runner = web.AppRunner(self._app or self.make_app())
        await self._runner.setup()
        await web.TCPSite(self._runner, host, port).start()
        bound_port = self._runner.addresses[0][1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------ world lookups

    def user_id(self, ref: str) -> str:
        """A user by id or name (with or without '@')."""
        ref = str(ref).strip()
        if ref in self._people:
            return ref
        uid = self.users.get(ref.removeprefix("@"))
        if uid is None:
            raise _ApiError("user_not_found")
        return uid

    def channel_id(self, ref: str) -> str:
        """A conversation by id or name (with or without "#"); a user id or "@name" means a DM with it."""
        ref = str(ref).strip()
        if ref in self._conversations:
            return ref
        cid = self.channels.get(ref.removeprefix("#"))
        if cid is not None:
            return cid
        if ref.startswith("@") or ref in self._people:
            try:
                return self._dm(self.user_id(ref))
            except _ApiError:
                pass
        raise _ApiError("channel_not_found")

    def _dm(self, uid: str) -> str:
        if uid == BOT_USER_ID:
            raise _ApiError("cannot_dm_bot")
        cid = "D" + uid[1:]
        if cid not in self._conversations:
            self._conversations[cid] = {"name": None, "purpose": "", "is_im": True, "user": uid}
            self._messages[cid] = []
        return cid

    def _channel_name(self, cid: str) -> str:
        return self._conversations[cid]["name"] or "directmessage"

    # ------------------------------------------------------------ message store

    def messages(self, channel: str) -> list[dict]:
        """All messages of a conversation in post order, thread replies and ephemeral ones included."""
        try:
            cid = self.channel_id(channel)
        except _ApiError:
            raise LocalSlackError(404, "channel_not_found", channel=channel) from None
        return copy.deepcopy(self._messages[cid])

    def _next_ts(self) -> str:
        micros = int(self.clock.now() * 1_000_000)
        self._last_micros = max(micros, self._last_micros + 1)
        return f"{self._last_micros // 1_000_000}.{self._last_micros % 1_000_000:06d}"

    def _find(self, cid: str, ts: str, *, ephemeral: bool = False) -> dict | None:
        for m in self._messages[cid]:
            if m["ts"] == ts and (ephemeral or m["ephemeral_for"] is None):
                return m
        return None

    def _append(
        self,
        cid: str,
        *,
        user: str,
        text: str,
        blocks: list | None,
        thread_ts: str | None = None,
        ephemeral_for: str | None = None,
        attachments: list | None = None,
        via: str,
    ) -> dict:
        message = {
            "channel": cid,
            "ts": self._next_ts(),
            "thread_ts": thread_ts,
            "user": user,
            "bot_id": BOT_ID if user == BOT_USER_ID else None,
            "text": text,
            "blocks": self._with_ids(blocks),
            "edited": False,
            "edited_ts": None,
            "ephemeral_for": ephemeral_for,
            "via": via,
        }
        if attachments:
            message["attachments"] = copy.deepcopy(attachments)
        self._messages[cid].append(message)
        return message

    def _replace(self, message: dict, text: str, blocks: list | None) -> None:
        message.update(text=text, blocks=self._with_ids(blocks), edited=True, edited_ts=self._next_ts())
        # the Slack client re-renders an updated message from its blocks, dropping local checkbox state
        self._client_state.pop((message["channel"], message["ts"]), None)

    @staticmethod
    def _with_ids(blocks: list | None) -> list | None:
        """Slack fills in the block_id and action_id a block or element was posted without."""
        if blocks is None:
            return None
        blocks = copy.deepcopy(blocks)
        for block in blocks:
            block.setdefault("block_id", _random_id())
            for element in [*(block.get("elements") or []), block.get("accessory")]:
                if isinstance(element, dict) and element.get("type") not in (
                    None,
                    "image",
                    "mrkdwn",
                    "plain_text",
                ):
                    element.setdefault("action_id", _random_id())
        return blocks

    def _wire_message(self, m: dict, *, metadata: bool = False) -> dict:
        """A stored message as the Web API and interaction payloads show it; its message metadata
        ({event_type, event_payload}) with `metadata` (history and replies show it on
        include_all_metadata)."""
        out: dict[str, Any] = {"type": "message", "user": m["user"], "text": m["text"], "ts": m["ts"]}
        if metadata and m.get("metadata") is not None:
            out["metadata"] = copy.deepcopy(m["metadata"])
        if m["bot_id"]:
            out.update(bot_id=m["bot_id"], app_id=APP_ID)
            out["bot_profile"] = {
                "id": BOT_ID,
                "app_id": APP_ID,
                "name": "deploybot",
                "team_id": self.team_id,
            }
        out["team"] = self.team_id
        if m["blocks"] is not None:
            out["blocks"] = copy.deepcopy(m["blocks"])
        if "attachments" in m:
            out["attachments"] = copy.deepcopy(m["attachments"])
        if "files" in m:
            out["files"] = copy.deepcopy(m["files"])
        if m["edited"]:
            out["edited"] = {"user": m["user"], "ts": m["edited_ts"]}
        if m["thread_ts"]:
            out["thread_ts"] = m["thread_ts"]
            parent = self._find(m["channel"], m["thread_ts"])
            if parent is not None:
                out["parent_user_id"] = parent["user"]
        replies = self._replies(m["channel"], m["ts"]) if m["thread_ts"] is None else []
        if replies:
            users = list(dict.fromkeys(r["user"] for r in replies))
            out.update(thread_ts=m["ts"], reply_count=len(replies), reply_users=users)
            out.update(reply_users_count=len(users), latest_reply=replies[-1]["ts"])
        return out

    def _replies(self, cid: str, parent_ts: str) -> list[dict]:
        return [m for m in self._messages[cid] if m["thread_ts"] == parent_ts and m["ephemeral_for"] is None]

    def _content(self, args: dict, *, current: dict | None = None) -> tuple[str, list | None, list | None]:
        """The text and blocks of a message, refused the way Slack refuses them (then nothing is stored)."""
        text = args["text"] if "text" in args else (current or {}).get("text", "")
        text = "" if text is None else str(text)
        if "blocks" in args:
            blocks = _parse_json_arg(args["blocks"]) if args["blocks"] not in (None, "") else None
        else:
            blocks = (current or {}).get("blocks")
        attachments = _parse_json_arg(args["attachments"]) if args.get("attachments") else None
        if blocks is not None:
            errors = block_errors(blocks)
            if errors:
                raise _ApiError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
        if len(text) > MAX_TEXT_CHARS:
            raise _ApiError(
                "msg_too_long", errors=[f"text is {len(text)} characters; at most {MAX_TEXT_CHARS}"]
            )
        if not text.strip() and not blocks and not attachments:
            raise _ApiError("no_text", errors=["a message needs text or blocks"])
        return text, blocks, attachments

    def _check_rate(self, cid: str) -> None:
        per_s = self.rate_limit_per_channel_per_s
        if not per_s:
            return
        now, last = time.monotonic(), self._last_post.get(cid)
        if last is not None and now - last < 1.0 / per_s:
            retry_after = max(1, math.ceil(1.0 / per_s - (now - last)))
            raise _ApiError("ratelimited", status=429, headers={"Retry-After": str(retry_after)})
        self._last_post[cid] = now

    # ------------------------------------------------------------ Web API

    def _learn_url(self, request: web.Request) -> None:
        """If make_app() is served elsewhere, links and response_urls use the address it is reached on."""
        if self.url is None:
            self.url = str(request.url.origin())

    async def _handle_api(self, request: web.Request) -> web.Response:
        self._learn_url(request)
        method = request.match_info["method"]
        args: dict[str, Any] = dict(request.query)
        if request.body_exists:
            if request.content_type == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    body = None
                if not isinstance(body, dict):
                    return self._api_answer(method, args, _ApiError("invalid_json"))
                args.update(body)
            else:
                args.update((await request.post()).items())
        auth = request.headers.get("Authorization", "")
        token = (
            auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else args.pop("token", None)
        )
        args.pop("token", None)
        handler = self._methods.get(method)
        try:
            if handler is None:
                raise _ApiError("unknown_method")
            if not token:
                raise _ApiError("not_authed")
            if token != self.bot_token:
                raise _ApiError("invalid_auth")
            return self._api_answer(method, args, handler(args))
        except _ApiError as e:
            return self._api_answer(method, args, e)

    def _api_answer(self, method: str, args: dict, result: dict | _ApiError) -> web.Response:
        channel = args.get("channel")
        try:
            channel = self.channel_id(channel) if channel else None
        except _ApiError:
            pass
        if isinstance(result, _ApiError):
            self._record(method, channel, result.error)
            body = {"ok": False, "error": result.error, **result.extra}
            return web.json_response(body, status=result.status, headers=result.headers)
        self._record(method, channel or result.get("channel"), None)
        return web.json_response(result)

    def _record(self, method: str, channel: str | None, error: str | None) -> None:
        if error in ("invalid_blocks", "msg_too_long", "no_text"):
            self.rejected += 1
        self.calls.append(
            {
                "method": method,
                "channel": channel,
                "ok": error is None,
                "error": error,
                "at": self.clock.now(),
                "wall": time.time(),
            }
        )

    @staticmethod
    def _require(args: dict, *names: str) -> list[Any]:
        missing = [n for n in names if args.get(n) in (None, "")]
        if missing:
            raise _ApiError(
                "invalid_arguments", response_metadata={"messages": [f"missing required: {missing}"]}
            )
        return [args[n] for n in names]

    def _thread(self, cid: str, thread_ts: Any) -> str | None:
        if not thread_ts:
            return None
        parent = self._find(cid, str(thread_ts))
        if parent is None:
            raise _ApiError("thread_not_found")
        return parent["thread_ts"] or parent["ts"]  # a reply to a reply lands in the parent's thread

    def _auth_test(self, args: dict) -> dict:
        return {
            "ok": True,
            "url": f"{self.url}/",
            "team": TEAM_NAME,
            "user": "deploybot",
            "team_id": self.team_id,
            "user_id": BOT_USER_ID,
            "bot_id": BOT_ID,
            "is_enterprise_install": False,
        }

    def _chat_post_message(self, args: dict) -> dict:
        (channel,) = self._require(args, "channel")
        cid = self.channel_id(channel)
        self._check_rate(cid)
        text, blocks, attachments = self._content(args)
        thread_ts = self._thread(cid, args.get("thread_ts"))
        metadata = _metadata(args.get("metadata"))
        m = self._append(
            cid,
            user=BOT_USER_ID,
            text=text,
            blocks=blocks,
            attachments=attachments,
            thread_ts=thread_ts,
            via="chat.postMessage",
        )
        if metadata is not None:
            m["metadata"] = metadata
        return {"ok": True, "channel": cid, "ts": m["ts"], "message": self._wire_message(m, metadata=True)}

    def _chat_update(self, args: dict) -> dict:
        channel, ts = self._require(args, "channel", "ts")
        cid = self.channel_id(channel)
        m = self._find(cid, str(ts))
        if m is None:
            raise _ApiError("message_not_found")
        if m["bot_id"] != BOT_ID:
            raise _ApiError("cant_update_message")
        text, blocks, attachments = self._content(args, current=m)
        self._replace(m, text, blocks)
        if attachments is not None:
            m["attachments"] = attachments
        return {
            "ok": True,
            "channel": cid,
            "ts": m["ts"],
            "text": m["text"],
            "message": self._wire_message(m),
        }

    def _chat_post_ephemeral(self, args: dict) -> dict:
        channel, user = self._require(args, "channel", "user")
        cid = self.channel_id(channel)
        uid = self.user_id(user)
        text, blocks, attachments = self._content(args)
        thread_ts = self._thread(cid, args.get("thread_ts"))
        m = self._append(
            cid,
            user=BOT_USER_ID,
            text=text,
            blocks=blocks,
            attachments=attachments,
            thread_ts=thread_ts,
            ephemeral_for=uid,
            via="chat.postEphemeral",
        )
        return {"ok": True, "message_ts": m["ts"]}

    def _chat_get_permalink(self, args: dict) -> dict:
        channel, ts = self._require(args, "channel", "message_ts")
        cid = self.channel_id(channel)
        m = self._find(cid, str(ts))
        if m is None:
            raise _ApiError("message_not_found")
        link = f"{self.url}/archives/{cid}/p{m['ts'].replace('.', '')}"
        if m["thread_ts"]:
            link += f"?thread_ts={m['thread_ts']}&cid={cid}"
        return {"ok": True, "channel": cid, "permalink": link}

    def _conversation(self, cid: str) -> dict:
        conv = self._conversations[cid]
        if conv["is_im"]:
            return {
                "id": cid,
                "created": self._created,
                "is_im": True,
                "is_org_shared": False,
                "user": conv["user"],
                "is_user_deleted": False,
                "priority": 0,
            }
        members = [uid for uid in self._people]
        topic = {"value": "", "creator": "", "last_set": 0}
        return {
            "id": cid,
            "name": conv["name"],
            "name_normalized": conv["name"],
            "is_channel": True,
            "is_group": False,
            "is_im": False,
            "is_mpim": False,
            "is_private": False,
            "is_archived": False,
            "is_general": False,
            "is_shared": False,
            "is_org_shared": False,
            "is_ext_shared": False,
            "is_member": True,
            "created": self._created,
            "creator": self.users["alice"],
            "context_team_id": self.team_id,
            "num_members": len(members),
            "topic": topic,
            "purpose": {**topic, "value": conv["purpose"]},
        }

    def _conversations_list(self, args: dict) -> dict:
        types = str(args.get("types") or "public_channel").split(",")
        cids = [
            cid
            for cid, c in self._conversations.items()
            if ("im" if c["is_im"] else "public_channel") in types
        ]
        return {
            "ok": True,
            "channels": [self._conversation(c) for c in cids],
            "response_metadata": {"next_cursor": ""},
        }

    def _conversations_info(self, args: dict) -> dict:
        (channel,) = self._require(args, "channel")
        return {"ok": True, "channel": self._conversation(self.channel_id(channel))}

    def _conversations_open(self, args: dict) -> dict:
        (users,) = self._require(args, "users")
        ids = [self.user_id(u) for u in str(users).split(",")]
        if len(ids) != 1:
            raise _ApiError("not_supported", response_metadata={"messages": ["the sandbox has no group DMs"]})
        return {"ok": True, "channel": {"id": self._dm(ids[0])}}

    def _conversations_history(self, args: dict) -> dict:
        """Top-level messages, newest first, `limit` a page; the next page from `cursor` (Slack's shape:
        `has_more`, `response_metadata.next_cursor`, "" on the last page)."""
        (channel,) = self._require(args, "channel")
        cid = self.channel_id(channel)
        inclusive = _truthy(args.get("inclusive"))
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or math.inf)
        limit = max(1, min(int(args.get("limit") or 100), 999))
        top = [
            m
            for m in reversed(self._messages[cid])
            if m["thread_ts"] is None
            and m["ephemeral_for"] is None
            and (oldest <= float(m["ts"]) <= latest if inclusive else oldest < float(m["ts"]) < latest)
        ]
        if args.get("cursor"):
            start = _from_cursor(str(args["cursor"]))
            top = [m for m in top if _ts_key(m["ts"]) <= start]
        page, rest = top[:limit], top[limit:]
        metadata = _truthy(args.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [self._wire_message(m, metadata=metadata) for m in page],
            "has_more": bool(rest),
            "pin_count": 0,
            "response_metadata": {"next_cursor": _cursor(rest[0]["ts"]) if rest else ""},
        }

    def _conversations_replies(self, args: dict) -> dict:
        channel, ts = self._require(args, "channel", "ts")
        cid = self.channel_id(channel)
        m = self._find(cid, str(ts))
        if m is None:
            raise _ApiError("thread_not_found")
        parent = self._find(cid, m["thread_ts"]) if m["thread_ts"] else m
        if parent is None:
            raise _ApiError("thread_not_found")
        thread = [parent, *self._replies(cid, parent["ts"])]
        metadata = _truthy(args.get("include_all_metadata"))
        return {
            "ok": True,
            "messages": [self._wire_message(x, metadata=metadata) for x in thread],
            "has_more": False,
            "response_metadata": {"next_cursor": ""},
        }

    def _user(self, uid: str) -> dict:
        person = self._people[uid]
        zone = ZoneInfo(person["tz"])
        at = datetime.fromtimestamp(self.clock.now(), UTC).astimezone(zone)
        is_bot = uid == BOT_USER_ID
        profile: dict[str, Any] = {
            "real_name": person["real_name"],
            "real_name_normalized": person["real_name"],
            "display_name": person["name"],
            "display_name_normalized": person["name"],
            "first_name": person["real_name"].split()[0],
            "team": self.team_id,
            "image_48": f"https://avatars.invalid/{person['name']}_48.png",
        }
        if is_bot:
            profile.update(bot_id=BOT_ID, api_app_id=APP_ID, always_active=True)
        else:
            profile["email"] = f"{person['name']}@example.com"
        return {
            "id": uid,
            "team_id": self.team_id,
            "name": person["name"],
            "deleted": False,
            "real_name": person["real_name"],
            "tz": person["tz"],
            "tz_label": _TZ_LABELS.get(at.tzname() or "", at.tzname()),
            "tz_offset": int((at.utcoffset() or timedelta()).total_seconds()),
            "is_admin": False,
            "is_owner": False,
            "is_primary_owner": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_bot": is_bot,
            "is_app_user": False,
            "updated": self._created,
            "profile": profile,
        }

    def _users_info(self, args: dict) -> dict:
        (user,) = self._require(args, "user")
        return {"ok": True, "user": self._user(self.user_id(user))}

    def _users_list(self, args: dict) -> dict:
        members = [self._user(uid) for uid in self._people]
        return {
            "ok": True,
            "members": members,
            "cache_ts": self._created,
            "response_metadata": {"next_cursor": ""},
        }

    def _usergroups_list(self, args: dict) -> dict:
        groups = []
        for handle, g in self.usergroups.items():
            group = {
                "id": g["id"],
                "team_id": self.team_id,
                "is_usergroup": True,
                "is_subteam": True,
                "name": g.get("name", handle),
                "description": "",
                "handle": handle,
                "is_external": False,
                "date_create": self._created,
                "date_update": self._created,
                "date_delete": 0,
                "auto_type": None,
                "created_by": self.users["alice"],
                "updated_by": self.users["alice"],
                "deleted_by": None,
                "prefs": {"channels": [], "groups": []},
                "user_count": len(g["users"]),
            }
            if _truthy(args.get("include_users")):
                group["users"] = list(g["users"])
            groups.append(group)
        return {"ok": True, "usergroups": groups}

    def _usergroups_users_list(self, args: dict) -> dict:
        (gid,) = self._require(args, "usergroup")
        for g in self.usergroups.values():
            if g["id"] == gid:
                return {"ok": True, "users": list(g["users"])}
        raise _ApiError("no_such_subteam")

    def _views_publish(self, args: dict) -> dict:
        user, view = self._require(args, "user_id", "view")
        uid = self.user_id(user)
        view = _parse_json_arg(view)
        if not isinstance(view, dict) or view.get("type") != "home":
            raise _ApiError("invalid_arguments", response_metadata={"messages": ["view.type must be 'home'"]})
        errors = block_errors(view.get("blocks", []), max_blocks=MAX_VIEW_BLOCKS)
        if errors:
            raise _ApiError("invalid_blocks", errors=errors, response_metadata={"messages": errors})
        current = self._views.get(uid)
        if args.get("hash") and current is not None and args["hash"] != current["hash"]:
            raise _ApiError("hash_conflict")
        stored = {
            "id": "V0HOME" + uid[2:],
            "team_id": self.team_id,
            "type": "home",
            "blocks": self._with_ids(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "external_id": view.get("external_id", ""),
            "state": {"values": {}},
            "hash": f"{self._next_ts()}.{_random_id(8)}",
            "app_id": APP_ID,
            "bot_id": BOT_ID,
        }
        self._views[uid] = stored
        return {"ok": True, "view": copy.deepcopy(stored)}

    # ------------------------------------------------------------ acting as users

    async def slash(
        self,
        user: str,
        channel: str,
        command: str,
        text: str = "",
        headers: dict | None = None,
        *,
        timestamp: int | None = None,
        forge: bool = False,
    ) -> dict:
        """Run a slash command as `user` in `channel`: POST the signed form Slack sends, return the bot's
        answer. An ack carrying text or blocks is stored as the message the user sees (ephemeral unless
        in_channel)."""
        self._require_bot()
        uid, cid = self._actor(user, channel)
        command = "/" + command.lstrip("/")
        form = {
            "token": VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": TEAM_DOMAIN,
            "channel_id": cid,
            "channel_name": self._channel_name(cid),
            "user_id": uid,
            "user_name": self._people[uid]["name"],
            "command": command,
            "text": slack_escape(text),  # Slack sends what was typed with & < > escaped
            "api_app_id": APP_ID,
            "is_enterprise_install": "false",
            "response_url": self._new_response_url("slash", uid, cid),
            "trigger_id": self._trigger_id(uid),
        }
        result = await self._deliver(urlencode(form), headers, timestamp, forge)
        reply = _ack_message(result)
        if reply is not None:
            try:
                text_, blocks, attachments = self._content(reply)
            except _ApiError as e:
                self._record("slash.ack", cid, e.error)
                result["error"] = {"ok": False, "error": e.error, **e.extra}
                return result
            in_channel = reply.get("response_type") == "in_channel"
            m = self._append(
                cid,
                user=BOT_USER_ID,
                text=text_,
                blocks=blocks,
                attachments=attachments,
                ephemeral_for=None if in_channel else uid,
                via="slash.ack",
            )
            self._record("slash.ack", cid, None)
            result["message_ts"] = m["ts"]
        return result

    async def click(
        self,
        user: str,
        channel: str,
        ts: str,
        action_id: str | None = None,
        label: str | None = None,
        headers: dict | None = None,
        *,
        value: str | None = None,
        timestamp: int | None = None,
        forge: bool = False,
    ) -> dict:
        """Click a button (by action_id or label) or toggle a checkbox option (by label) on a message as
        `user`, POSTing the signed block_actions payload Slack sends; return the bot's answer."""
        if action_id is None and label is None:
            raise LocalSlackError(400, "give action_id or label")
        self._require_bot()
        uid, cid = self._actor(user, channel)
        message = self._find(cid, str(ts), ephemeral=True)
        if message is None or message["ephemeral_for"] not in (None, uid):
            raise LocalSlackError(404, "message_not_found", channel=cid, ts=ts)
        block, element, option = self._target(message, action_id, label)
        state = self._client_state.setdefault((cid, message["ts"]), {})
        action: dict[str, Any] = {"action_id": element["action_id"], "block_id": block["block_id"]}
        if option is None:
            action.update(text=element["text"], type="button")
            if element.get("value") is not None or value is not None:
                action["value"] = value if value is not None else element["value"]
            if element.get("style"):
                action["style"] = element["style"]
        else:
            key = (uid, block["block_id"], element["action_id"])
            values = {o.get("value") for o in state.get(key, element.get("initial_options") or [])}
            values ^= {option.get("value")}
            selected = [o for o in element["options"] if o.get("value") in values]
            state[key] = selected
            action.update(type="checkboxes", selected_options=copy.deepcopy(selected))
        action["action_ts"] = f"{self.clock.now():.6f}"
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message["ts"],
            "channel_id": cid,
            "is_ephemeral": message["ephemeral_for"] is not None,
        }
        if message["thread_ts"]:
            container["thread_ts"] = message["thread_ts"]
        name = self._people[uid]["name"]
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": uid, "username": name, "name": name, "team_id": self.team_id},
            "api_app_id": APP_ID,
            "token": VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": self._trigger_id(uid),
            "team": {"id": self.team_id, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": cid, "name": self._channel_name(cid)},
        }
        if message["ephemeral_for"] is None:  # Slack sends no `message` for a click on an ephemeral message
            payload["message"] = self._wire_message(message)
        payload["state"] = {"values": self._state_values(message, uid)}
        payload["response_url"] = self._new_response_url("block_actions", uid, cid, message["ts"])
        payload["actions"] = [action]
        return await self._deliver(urlencode({"payload": json.dumps(payload)}), headers, timestamp, forge)

    def say(self, user: str, channel: str, text: str, thread_ts: str | None = None) -> dict:
        """Store a plain message from `user` (no event is sent to the bot: the sandbox has no Events API)."""
        uid, cid = self._actor(user, channel)
        try:
            m = self._append(
                cid, user=uid, text=text, blocks=None, thread_ts=self._thread(cid, thread_ts), via="say"
            )
        except _ApiError as e:
            raise LocalSlackError(404, e.error) from None
        return copy.deepcopy(m)

    def _actor(self, user: str, channel: str) -> tuple[str, str]:
        try:
            uid = self.user_id(user)
        except _ApiError:
            raise LocalSlackError(404, "user_not_found", user=user, users=sorted(self.users)) from None
        try:
            cid = self.channel_id(channel)
        except _ApiError:
            raise LocalSlackError(
                404, "channel_not_found", channel=channel, channels=sorted(self.channels)
            ) from None
        return uid, cid

    @staticmethod
    def _clickables(message: dict) -> Iterator[tuple[dict, dict, dict | None, str]]:
        """Every (block, element, checkbox option or None, label) a user can click on a message."""
        for block in message["blocks"] or []:
            elements = block.get("elements") if block.get("type") == "actions" else [block.get("accessory")]
            for element in elements or []:
                if not isinstance(element, dict):
                    continue
                if element.get("type") == "button":
                    yield block, element, None, _label(element.get("text"))
                elif element.get("type") == "checkboxes":
                    for option in element.get("options") or []:
                        yield block, element, option, _label(option.get("text"))

    def _target(
        self, message: dict, action_id: str | None, label: str | None
    ) -> tuple[dict, dict, dict | None]:
        """The block, interactive element and (for checkboxes) option a click means."""
        clickables = list(self._clickables(message))
        for block, element, option, text in clickables:
            if action_id is not None and element.get("action_id") != action_id:
                continue
            # by label: any button or checkbox option; by action_id alone: only a button is unambiguous
            wanted = _same_label(text, label) if label is not None else option is None
            if wanted:
                return block, element, option
        buttons = [text for _, _, _, text in clickables]
        raise LocalSlackError(404, "no such button", action_id=action_id, label=label, buttons=buttons)

    def _state_values(self, message: dict, uid: str) -> dict:
        """What the Slack client reports for the stateful elements of a message: its checkboxes as shown."""
        state = self._client_state.get((message["channel"], message["ts"]), {})
        values: dict[str, dict] = {}
        for block in message["blocks"] or []:
            elements = block.get("elements") if block.get("type") == "actions" else [block.get("accessory")]
            for element in elements or []:
                if isinstance(element, dict) and element.get("type") == "checkboxes":
                    key = (uid, block["block_id"], element["action_id"])
                    selected = state.get(key, element.get("initial_options") or [])
                    values.setdefault(block["block_id"], {})[element["action_id"]] = {
                        "type": "checkboxes",
                        "selected_options": copy.deepcopy(selected),
                    }
        return values

    def _trigger_id(self, uid: str = "") -> str:
        trigger = f"{int(self.clock.now())}.{secrets.randbelow(10**12)}.{secrets.token_hex(16)}"
        self.modals.issued(trigger, uid)  # views.open takes it for 3 s, once
        return trigger

    def _new_response_url(self, kind: str, uid: str, cid: str, message_ts: str | None = None) -> str:
        token = secrets.token_urlsafe(18)
        self._response_urls[token] = {
            "kind": kind,
            "user": uid,
            "channel": cid,
            "message_ts": message_ts,
            "uses": 0,
            "created": self.clock.now(),
        }
        return f"{self.url or 'http://127.0.0.1'}/_sandbox/response/{token}"

    def _pick_bot(self) -> str | None:
        """The bot the next request goes to: each of several in turn (bot.sandbox.replicas), else the one."""
        if self.bot_events_urls:
            self._next_bot = (self._next_bot + 1) % len(self.bot_events_urls)
            self.bot_events_url = self.bot_events_urls[self._next_bot]
        return self.bot_events_url

    def _require_bot(self) -> None:
        if not (self.bot_events_urls or self.bot_events_url):
            raise LocalSlackError(
                503, "bot_events_url is not set: point LocalSlack.bot_events_url at the bot's /slack/events"
            )

    async def _deliver(self, body: str, headers: dict | None, timestamp: int | None, forge: bool) -> dict:
        self._require_bot()
        # wall time, not the sandbox clock: bolt checks the timestamp against its own time.time()
        ts = str(int(time.time() if timestamp is None else timestamp))
        secret = "forged-" + self.signing_secret if forge else self.signing_secret
        send_headers: dict[str, str] = {
            "Content-Type": "application/x-www-form-urlencoded",
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(SignatureVerifier(secret).generate_signature(timestamp=ts, body=body)),
            **{str(k): str(v) for k, v in (headers or {}).items()},
        }
        if self._session is None:
            self._session = aiohttp.ClientSession()
        timeout = aiohttp.ClientTimeout(total=self.ack_timeout_s)
        try:
            url = self._pick_bot()
            assert url is not None  # _require_bot() said so
            async with self._session.post(
                url, data=body.encode(), headers=send_headers, timeout=timeout
            ) as resp:
                raw = await resp.text()
                status, content_type = resp.status, resp.content_type
        except TimeoutError:
            return {"status": 504, "body": {"ok": False, "error": "operation_timeout"}}
        except aiohttp.ClientError as e:
            raise LocalSlackError(502, f"bot unreachable at {self.bot_events_url}: {e}") from None
        parsed: Any = raw
        if content_type == "application/json" or raw.lstrip().startswith("{"):
            try:
                parsed = json.loads(raw)
            except ValueError:
                pass
        return {"status": status, "body": parsed}

    # ------------------------------------------------------------ response_url

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        entry = self._response_urls.get(request.match_info["token"])
        if entry is None:
            return web.json_response({"ok": False, "error": "invalid_url"}, status=404)
        if self.clock.now() - entry["created"] > RESPONSE_URL_TTL_S:
            return web.json_response({"ok": False, "error": "expired_url"}, status=404)
        if entry["uses"] >= RESPONSE_URL_USES:
            return web.json_response({"ok": False, "error": "used_url"}, status=404)
        try:
            if request.content_type == "application/json":
                body = await request.json()
            else:
                payload = (await request.post()).get("payload", "")
                body = json.loads(payload if isinstance(payload, str | bytes) else "")
        except ValueError:
            body = None
        if not isinstance(body, dict):
            return web.json_response({"ok": False, "error": "invalid_payload"}, status=400)
        cid, uid = entry["channel"], entry["user"]
        original = self._find(cid, entry["message_ts"], ephemeral=True) if entry["message_ts"] else None
        if _truthy(body.get("delete_original")):
            if original is not None:
                self._messages[cid].remove(original)
            entry["uses"] += 1
            self._record("response_url", cid, None)
            return web.json_response({"ok": True})
        try:
            text, blocks, attachments = self._content(body)
            thread_ts = self._thread(cid, body.get("thread_ts") or (original or {}).get("thread_ts"))
        except _ApiError as e:
            self._record("response_url", cid, e.error)
            return web.json_response({"ok": False, "error": e.error, **e.extra}, status=400)
        entry["uses"] += 1
        if original is not None and _truthy(body.get("replace_original")):
            self._replace(original, text, blocks)
        else:
            in_channel = body.get("response_type") == "in_channel"
            self._append(
                cid,
                user=BOT_USER_ID,
                text=text,
                blocks=blocks,
                attachments=attachments,
                thread_ts=thread_ts,
                ephemeral_for=None if in_channel else uid,
                via="response_url",
            )
        self._record("response_url", cid, None)
        return web.json_response({"ok": True})

    # ------------------------------------------------------------ control API

    async def _handle_messages(self, request: web.Request) -> web.Response:
        try:
            return web.json_response(
                {"ok": True, "messages": self.messages(request.query.get("channel", ""))}
            )
        except LocalSlackError as e:
            return web.json_response(e.body, status=e.status)

    async def _handle_home(self, request: web.Request) -> web.Response:
        try:
            uid = self.user_id(request.query.get("user", ""))
        except _ApiError:
            return web.json_response({"ok": False, "error": "user_not_found"}, status=404)
        return web.json_response({"ok": True, "user": uid, "view": copy.deepcopy(self._views.get(uid))})

    async def _handle_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True, "calls": self.calls, "rejected": self.rejected})

    async def _handle_world(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "ok": True,
                "team": {"id": self.team_id, "name": TEAM_NAME, "domain": TEAM_DOMAIN},
                "bot": {"user_id": BOT_USER_ID, "bot_id": BOT_ID, "app_id": APP_ID},
                "users": self.users,
                "channels": self.channels,
                "usergroups": self.usergroups,
            }
        )

    async def _handle_permalink(self, request: web.Request) -> web.Response:
        cid, pts = request.match_info["channel"], request.match_info["pts"].removeprefix("p")
        m = self._find(cid, f"{pts[:-6]}.{pts[-6:]}") if cid in self._messages and len(pts) > 6 else None
        if m is None:
            return web.json_response({"ok": False, "error": "message_not_found"}, status=404)
        return web.json_response({"ok": True, "message": copy.deepcopy(m)})

    async def _control_body(self, request: web.Request, *required: str) -> dict:
        self._learn_url(request)
        try:
            body = await request.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise LocalSlackError(400, "send a JSON object")
        missing = [k for k in required if not body.get(k)]
        if missing:
            raise LocalSlackError(400, f"missing fields: {', '.join(missing)}")
        return body

    async def _handle_slash(self, request: web.Request) -> web.Response:
        try:
            b = await self._control_body(request, "user", "channel", "command")
            result = await self.slash(
                b["user"],
                b["channel"],
                b["command"],
                b.get("text", ""),
                b.get("headers"),
                timestamp=b.get("timestamp"),
                forge=bool(b.get("forge")),
            )
        except LocalSlackError as e:
            return web.json_response(e.body, status=e.status)
        return web.json_response(result)

    async def _handle_click(self, request: web.Request) -> web.Response:
        try:
            b = await self._control_body(request, "user", "channel", "ts")
            result = await self.click(
                b["user"],
                b["channel"],
                b["ts"],
                b.get("action_id"),
                b.get("label"),
                b.get("headers"),
                value=b.get("value"),
                timestamp=b.get("timestamp"),
                forge=bool(b.get("forge")),
            )
        except LocalSlackError as e:
            return web.json_response(e.body, status=e.status)
        return web.json_response(result)

    async def _handle_say(self, request: web.Request) -> web.Response:
        try:
            b = await self._control_body(request, "user", "channel", "text")
            message = self.say(b["user"], b["channel"], b["text"], b.get("thread_ts"))
        except LocalSlackError as e:
            return web.json_response(e.body, status=e.status)
        return web.json_response({"ok": True, "message": message})
