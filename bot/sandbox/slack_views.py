"""Modals in the local Slack (bot/sandbox/slack.py): `views.open` as Slack answers it — a trigger_id the
local Slack issued to that user for a slash command or a click, used once, within 3 seconds; a modal
with a title of at most 24 characters and valid blocks — and the control API to read a user's open
modals and submit one, which POSTs the signed `view_submission` payload Slack sends and keeps the modal
open when the bot answers `response_action: errors`.

    GET  /_sandbox/views?user=NAME       -> {"views": [view, ...]} (the user's open modals, newest last)
    POST /_sandbox/submit {"user", "view_id", "values": {block_id: {action_id: "text"}}}
                                         -> {"status", "body", "closed": bool, "errors": {...}}"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

TRIGGER_TTL_S = 3.0  # Slack: a trigger_id expires 3 seconds after it was issued
MAX_TITLE_CHARS = 24
MAX_MODAL_BLOCKS = 100


class Modals:
    """Given by the LocalSlack (which imports this module, so nothing of it is imported here): itself,
    its API error and control error types, its Block Kit check and its JSON-argument parser."""

    def __init__(
        self,
        slack: Any,
        *,
        api_error: Any,
        local_error: Any,
        block_errors: Callable[..., list[str]],
        parse_json: Callable[[Any], Any],
    ):
        self.slack = slack
        self._api_error, self._local_error = api_error, local_error
        self._api_error_type = api_error
        self._block_errors, self._parse_json = block_errors, parse_json
        self._triggers: dict[str, dict[str, Any]] = {}  # trigger_id -> {"user", "at" (wall), "used"}
        self._views: dict[str, dict[str, Any]] = {}  # view id -> the view as Slack holds it, with "user"
        self._count = 0

    def issued(self, trigger_id: str, uid: str) -> None:
        self._triggers[trigger_id] = {"user": uid, "at": time.time(), "used": False}

    def routes(self, app: web.Application) -> None:
        app.router.add_get("/_sandbox/views", self._handle_views)
        app.router.add_post("/_sandbox/submit", self._handle_submit)

    # ---------------------------------------------------------------------------- the Web API

    def views_open(self, args: dict[str, Any]) -> dict[str, Any]:
        trigger_id, view = self.slack._require(args, "trigger_id", "view")
        issued = self._triggers.get(str(trigger_id))
        if issued is None:
            raise self._api_error("invalid_trigger_id")
        if issued["used"] or time.time() - issued["at"] > TRIGGER_TTL_S:
            raise self._api_error("expired_trigger_id")
        view = self._parse_json(view)
        if not isinstance(view, dict) or view.get("type") != "modal":
            raise self._api_error(
                "invalid_arguments", response_metadata={"messages": ["view.type must be 'modal'"]}
            )
        title = (view.get("title") or {}).get("text") if isinstance(view.get("title"), dict) else None
        if not title or len(title) > MAX_TITLE_CHARS:
            message = f"view.title must be plain_text of 1..{MAX_TITLE_CHARS} characters"
            raise self._api_error("invalid_arguments", response_metadata={"messages": [message]})
        errors = self._block_errors(view.get("blocks", []), max_blocks=MAX_MODAL_BLOCKS)
        if any(b.get("type") == "input" for b in view.get("blocks", [])) and not view.get("submit"):
            errors.append("a view with input blocks needs a submit button [json-pointer:/view/submit]")
        if errors:
            raise self._api_error("invalid_blocks", errors=errors, response_metadata={"messages": errors})
        issued["used"] = True
        self._count += 1
        stored = {
            "id": f"V0MODAL{self._count:05d}",
            "team_id": self.slack.team_id,
            "type": "modal",
            "title": view["title"],
            "submit": view.get("submit"),
            "close": view.get("close"),
            "blocks": self.slack._with_ids(view.get("blocks", [])),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{self.slack._next_ts()}.modal",
            "app_id": "A0DEPLOYBOT",
            "bot_id": "B0DEPLOYBOT",
            "user": issued["user"],
            "open": True,
        }
        self._views[stored["id"]] = stored
        return {"ok": True, "view": _wire(stored)}

    def open_views(self, uid: str) -> list[dict[str, Any]]:
        return [_wire(v) for v in self._views.values() if v["user"] == uid and v["open"]]

    # ------------------------------------------------------------------------- acting as a user

    async def submit(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> dict[str, Any]:
        """Press the modal's submit button as `user` with `values` typed into its inputs."""
        try:
            uid = self.slack.user_id(user)
        except self._api_error_type:
            raise self._local_error(404, "user_not_found", user=user) from None
        view = self._views.get(view_id)
        if view is None or view["user"] != uid or not view["open"]:
            raise self._local_error(404, "view_not_found", view_id=view_id)
        state = {
            block: {action: {"type": "plain_text_input", "value": text} for action, text in fields.items()}
            for block, fields in (values or {}).items()
        }
        name = self.slack._people[uid]["name"]
        wire = {**_wire(view), "state": {"values": state}}
        trigger = self.slack._trigger_id(uid)
        payload = {
            "type": "view_submission",
            "team": {"id": self.slack.team_id, "domain": "deploybot-sandbox"},
            "user": {"id": uid, "username": name, "name": name, "team_id": self.slack.team_id},
            "api_app_id": "A0DEPLOYBOT",
            "token": "sandboxverificationtoken0",
            "trigger_id": trigger,
            "view": wire,
            "response_urls": [],
            "is_enterprise_install": False,
        }
        result = await self.slack._deliver(urlencode({"payload": json.dumps(payload)}), None, None, False)
        body = result.get("body")
        errors = (
            body.get("errors") if isinstance(body, dict) and body.get("response_action") == "errors" else None
        )
        if result.get("status") == 200 and not errors:
            view["open"] = False
        return {**result, "closed": not view["open"], "errors": errors or {}}

    async def _handle_views(self, request: web.Request) -> web.Response:
        try:
            uid = self.slack.user_id(request.query.get("user", ""))
        except self._api_error_type:
            return web.json_response(self._local_error(404, "user_not_found").body, status=404)
        return web.json_response({"views": self.open_views(uid)})

    async def _handle_submit(self, request: web.Request) -> web.Response:
        try:
            b = await self.slack._control_body(request, "user", "view_id")
            result = await self.submit(b["user"], b["view_id"], b.get("values") or {})
        except self._local_error as e:
            return web.json_response(getattr(e, "body", {}), status=getattr(e, "status", 400))
        return web.json_response(result)


def _wire(view: dict[str, Any]) -> dict[str, Any]:
    """The view as Slack shows it to the app (without the local Slack's own bookkeeping)."""
    return {k: copy.deepcopy(v) for k, v in view.items() if k not in ("user", "open")}
