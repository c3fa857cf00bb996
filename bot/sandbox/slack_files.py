"""The local Slack's files: the three calls slack_sdk's files_upload_v2 makes and the files they keep.

1. `files.getUploadURLExternal` (filename, length) → an upload URL on this server and a file id;
2. the bytes POSTed to that URL (as Slack's files.slack.com takes them: the raw body, or a multipart form);
3. `files.completeUploadExternal` (files=[{"id", "title"}], channel_id, thread_ts, initial_comment) →
   the file is shared: a message in the channel (in the thread) carrying it, as Slack shows one.

A file completed before its bytes arrived, or twice, is refused as Slack refuses it. The control API
lists a channel's files with their content: `GET /_sandbox/files?channel=NAME` → [{"id", "name", "title",
"mimetype", "thread_ts", "ts", "size", "content_b64", "permalink"}]; `GET /_sandbox/files/ID` serves one."""

from __future__ import annotations

import base64
import json
import mimetypes
import secrets
from collections.abc import Callable
from typing import Any

from aiohttp import web

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_FILE_BYTES = 1024 * 1024 * 1024  # Slack's limit: 1 GB


def _mimetype(name: str, content: bytes) -> str:
    if content.startswith(PNG_SIGNATURE):
        return "image/png"
    return mimetypes.guess_type(name)[0] or "application/octet-stream"


class SlackFiles:
    """The files of one LocalSlack (`slack`: its _require, _thread, _append and channel_id; `error`: its
    API error class; `bot_user`: the bot's user id, the author of a shared file's message), and its
    methods and routes for them."""

    def __init__(self, slack: Any, error: Callable[[str], Exception], bot_user: str):
        self.slack, self.error, self.bot_user = slack, error, bot_user
        self.files: dict[str, dict[str, Any]] = {}  # id -> the file (its bytes under "content")

    def methods(self) -> dict[str, Any]:
        return {
            "files.getUploadURLExternal": self._get_upload_url,
            "files.completeUploadExternal": self._complete_upload,
        }

    def routes(self, app: web.Application) -> None:
        app.router.add_post("/_sandbox/upload/{file_id}", self._handle_upload)
        app.router.add_get("/_sandbox/files", self._handle_list)
        app.router.add_get("/_sandbox/files/{file_id}", self._handle_download)

    # ------------------------------------------------------------------------------ Web API methods

    def _get_upload_url(self, args: dict) -> dict:
        filename, length = self.slack._require(args, "filename", "length")
        try:
            size = int(length)
        except (TypeError, ValueError):
            raise self.error("invalid_arguments") from None
        if size <= 0 or size > MAX_FILE_BYTES:
            raise self.error("invalid_length" if size <= 0 else "file_too_large")
        file_id = "F" + secrets.token_hex(5).upper()
        self.files[file_id] = {
            "id": file_id,
            "name": str(filename),
            "title": str(filename),
            "length": size,
            "alt_txt": args.get("alt_txt"),
            "content": None,
            "completed": False,
            "channel": None,
            "thread_ts": None,
            "ts": None,
        }
        return {"ok": True, "upload_url": f"{self.slack.url}/_sandbox/upload/{file_id}", "file_id": file_id}

    def _complete_upload(self, args: dict) -> dict:
        (raw,) = self.slack._require(args, "files")
        try:
            wanted = json.loads(raw) if isinstance(raw, str) else raw
            ids = [(str(f["id"]), f.get("title")) for f in wanted]
        except (ValueError, TypeError, KeyError):
            raise self.error("invalid_arguments") from None
        found = []
        for file_id, title in ids:
            f = self.files.get(file_id)
            if f is None or f["content"] is None:
                raise self.error("file_not_found" if f is None else "file_upload_not_complete")
            if f["completed"]:
                raise self.error("file_already_completed")
            found.append((f, title))
        channel = args.get("channel_id") or args.get("channel")
        cid = self.slack.channel_id(channel) if channel else None
        thread_ts = self.slack._thread(cid, args.get("thread_ts")) if cid else None
        for f, title in found:
            f.update(completed=True, title=str(title or f["name"]), channel=cid, thread_ts=thread_ts)
        if cid is not None:
            m = self.slack._append(
                cid,
                user=self.bot_user,
                text=str(args.get("initial_comment") or ""),
                blocks=None,
                thread_ts=thread_ts,
                via="files.completeUploadExternal",
            )
            m["files"] = [self._wire(f) for f, _ in found]
            for f, _ in found:
                f["ts"] = m["ts"]
        return {"ok": True, "files": [self._wire(f) for f, _ in found]}

    def _wire(self, f: dict[str, Any]) -> dict[str, Any]:
        """A file as the Web API shows it."""
        content = f["content"] or b""
        out = {
            "id": f["id"],
            "name": f["name"],
            "title": f["title"],
            "mimetype": _mimetype(f["name"], content),
            "size": len(content),
            "permalink": f"{self.slack.url}/_sandbox/files/{f['id']}",
            "url_private": f"{self.slack.url}/_sandbox/files/{f['id']}",
        }
        if f["channel"]:
            out["channels"] = [f["channel"]]
        return out

    # ------------------------------------------------------------------------------------ routes

    async def _handle_upload(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None or f["completed"]:
            return web.Response(status=404, text="file not found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part: Any = next(iter(form.values()), None)
            content = part.file.read() if hasattr(part, "file") else str(part or "").encode()
        else:
            content = await request.read()
        if len(content) != f["length"]:
            return web.Response(status=400, text=f"expected {f['length']} bytes, got {len(content)}")
        f["content"] = content
        return web.Response(status=200, text=f"OK - {len(content)}")

    async def _handle_list(self, request: web.Request) -> web.Response:
        try:
            cid = self.slack.channel_id(request.query.get("channel", ""))
        except Exception:
            return web.json_response({"ok": False, "error": "channel_not_found"}, status=404)
        return web.json_response(
            [
                {
                    **self._wire(f),
                    "thread_ts": f["thread_ts"],
                    "ts": f["ts"],
                    "content_b64": base64.b64encode(f["content"] or b"").decode(),
                }
                for f in self.files.values()
                if f["completed"] and f["channel"] == cid
            ]
        )

    async def _handle_download(self, request: web.Request) -> web.Response:
        f = self.files.get(request.match_info["file_id"])
        if f is None or not f["completed"]:
            return web.json_response({"ok": False, "error": "file_not_found"}, status=404)
        content = f["content"] or b""
        return web.Response(body=content, content_type=_mimetype(f["name"], content))
