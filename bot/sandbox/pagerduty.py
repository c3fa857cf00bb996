"""A local PagerDuty Events API v2 (POST /v2/enqueue) on loopback: it checks the routing key and the event,
records what it accepts, and can be told to fail for a while — a 500 with an HTML body, a 503, a 429 with
Retry-After, a 400, or no answer at all — so the bot's paging can be rehearsed against an outage.

Its time is the sandbox's clock: "fail for 600 seconds" at speed 60 lasts 10 s on the wall, and a 429's
Retry-After is given in sandbox seconds. Controlled through the sandbox's control API:
  POST /_sandbox/pagerduty {"fail": "500"|"503"|"429"|"400"|"timeout"|null, "seconds": S, "times": N,
      "dedup_key": K}  (for S sandbox seconds and/or the next N events — neither: until told otherwise;
      dedup_key: only that incident's events fail; "fail": null stops failing)
  GET /_sandbox/pagerduty   -> {"events": [...accepted...], "failures": [...served...], "failing": {...}}"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

from aiohttp import web

from bot.clock import Clock

FAILURES = ("500", "503", "429", "400", "timeout")
ACTIONS = ("trigger", "acknowledge", "resolve")
RETRY_AFTER = 30  # sandbox seconds, in a 429's Retry-After
HOLD_MAX = 60.0  # wall seconds a "timeout" failure holds a request at most
ERROR_PAGE = (
    "<html><head><title>500 Internal Server Error</title></head><body><h1>Internal Server Error</h1>"
    "<p>The server encountered an unexpected condition that prevented it from fulfilling the request."
    "</p></body></html>"
)


class LocalPagerDuty:
    def __init__(self, clock: Clock, routing_key: str | None = None):
        self.clock = clock
        self.routing_key = routing_key or "sandbox" + secrets.token_hex(12)
        self.events: list[dict[str, Any]] = []  # accepted, in the order they came
        self.failures: list[dict[str, Any]] = []  # the failures served
        self.rejected: list[dict[str, Any]] = []  # malformed events or a wrong routing key
        self.fail: str | None = None
        self.fail_until: float | None = None  # clock instant the failure ends (None: until cleared)
        self.fail_key: str | None = None  # only this dedup_key's events fail
        self.fail_times: int | None = None  # failures left to serve (None: no count)
        self.retry_after = RETRY_AFTER  # sandbox seconds, in a 429's Retry-After
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    async def start(self) -> str:
        """Listen on 127.0.0.1 (a free port); returns the events URL."""
        app = web.Application()
        app.router.add_post("/v2/enqueue", self.enqueue)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}/v2/enqueue"
        return self.url

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------------- failing

    def set_failure(
        self,
        fail: str | None,
        seconds: float | None = None,
        dedup_key: str | None = None,
        times: int | None = None,
    ) -> None:
        """Fail with `fail` for `seconds` of clock time and/or the next `times` events (neither: until
        told otherwise), only `dedup_key`'s events if given; None: stop failing."""
        if fail is not None and fail not in FAILURES:
            raise ValueError(f"fail must be one of {', '.join(FAILURES)} or null, not {fail!r}")
        if seconds is not None and (not isinstance(seconds, int | float) or seconds <= 0):
            raise ValueError(f"seconds must be a number > 0, not {seconds!r}")
        if times is not None and (not isinstance(times, int) or times <= 0):
            raise ValueError(f"times must be a whole number > 0, not {times!r}")
        self.fail, self.fail_key, self.fail_times = fail, dedup_key, times
        self.fail_until = None if fail is None or seconds is None else self.clock.now() + seconds

    def failing(self, dedup_key: str | None = None) -> str | None:
        """The failure to serve now (to an event of `dedup_key`), if any."""
        if self.fail is None:
            return None
        over = self.fail_until is not None and self.clock.now() >= self.fail_until
        if over or self.fail_times == 0:
            self.fail = self.fail_until = self.fail_key = self.fail_times = None
            return None
        if self.fail_key is not None and dedup_key != self.fail_key:
            return None
        return self.fail

    def state(self) -> dict[str, Any]:
        failing = self.failing()
        left = None if failing is None or self.fail_until is None else self.fail_until - self.clock.now()
        return {
            "events": self.events,
            "failures": self.failures,
            "rejected": self.rejected,
            "failing": {
                "fail": failing,
                "seconds_left": left,
                "dedup_key": self.fail_key if failing else None,
            },
        }

    # ----------------------------------------------------------------------------------- Events API

    async def enqueue(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return self._invalid({}, "Event object is invalid", "body is not JSON")
        if not isinstance(body, dict):
            return self._invalid({}, "Event object is invalid", "body is not a JSON object")
        action, key = body.get("event_action"), body.get("dedup_key")
        fail = self.failing(key if isinstance(key, str) else None)
        if fail is not None:
            return await self._serve_failure(fail, action, key)
        if body.get("routing_key") != self.routing_key:
            return self._invalid(body, "Event object is invalid", "Invalid routing key")
        if action not in ACTIONS:
            return self._invalid(body, "Event object is invalid", "'event_action' is invalid")
        if action != "trigger" and not key:
            return self._invalid(body, "Event object is invalid", "'dedup_key' is required")
        payload = body.get("payload")
        if action == "trigger" and not (
            isinstance(payload, dict)
            and payload.get("summary")
            and payload.get("source")
            and payload.get("severity")
        ):
            return self._invalid(
                body, "Event object is invalid", "'payload' needs summary, source and severity"
            )
        key = key or secrets.token_hex(16)
        self.events.append(
            {
                "at": self.clock.now(),
                "dedup_key": key,
                "event_action": action,
                "payload": payload,
                "links": body.get("links"),
                "client": body.get("client"),
            }
        )
        return web.json_response(
            {"status": "success", "message": "Event processed", "dedup_key": key}, status=202
        )

    def _invalid(self, body: dict[str, Any], message: str, error: str) -> web.Response:
        self.rejected.append(
            {"at": self.clock.now(), "event_action": body.get("event_action"), "dedup_key": body.get("dedup_key"),
             "error": error}
        )  # fmt: skip
        return web.json_response(
            {"status": "invalid event", "message": message, "errors": [error]}, status=400
        )

    async def _serve_failure(self, fail: str, action: Any, key: Any) -> web.Response:
        if self.fail_times is not None:
            self.fail_times -= 1
        self.failures.append({"at": self.clock.now(), "fail": fail, "event_action": action, "dedup_key": key})
        if fail == "500":
            return web.Response(status=500, text=ERROR_PAGE, content_type="text/html")
        if fail == "503":
            return web.Response(status=503, text="Service Unavailable", content_type="text/plain")
        if fail == "429":
            return web.json_response(
                {
                    "status": "throttle event",
                    "message": "Requests for this service are arriving too quickly.",
                },
                status=429,
                headers={"Retry-After": f"{self.retry_after:g}"},
            )
        if fail == "400":
            return web.json_response(
                {
                    "status": "invalid event",
                    "message": "Event object is invalid",
                    "errors": ["rehearsed 400"],
                },
                status=400,
            )
        # "timeout": no answer while the failure lasts (the client gives up first); then a 503 nobody reads
        left = (
            HOLD_MAX
            if self.fail_until is None
            else self.clock.real_seconds(self.fail_until - self.clock.now())
        )
        try:
            await asyncio.wait_for(self._stopping.wait(), max(0.0, min(HOLD_MAX, left)))
        except TimeoutError:
            pass
        return web.Response(status=503, text="no answer")

    # -------------------------------------------------------------------------- the control routes

    async def control_get(self, _request: web.Request) -> web.Response:
        return web.json_response(self.state())

    async def control_post(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("expected a JSON object")
            self.set_failure(body.get("fail"), body.get("seconds"), body.get("dedup_key"), body.get("times"))
        except ValueError as exc:
            return web.json_response({"ok": False, "error": f"bad pagerduty request: {exc}"}, status=400)
        return web.json_response({"ok": True, **self.state()["failing"]})


def write_config(source: str, dest: str, url: str) -> str:
    """Write `source`'s config with PagerDuty enabled against `url` to `dest`; returns `dest`."""
    Path(dest).write_text(config_with_pagerduty(Path(source).read_text(), url))
    return dest


def config_with_pagerduty(text: str, url: str, timeout_seconds: float = 1.0) -> str:
    """The config `text` with its [alerts.pagerduty] table replaced by one enabled against `url` (the
    routing key from PAGERDUTY_ROUTING_KEY; a short timeout, as the sandbox's time runs fast)."""
    kept, skipping = [], False
    for line in text.splitlines():
        header = line.strip()
        if header.startswith("["):
            skipping = header.split("#", 1)[0].strip() == "[alerts.pagerduty]"
        if not skipping:
            kept.append(line)
    table = (
        "[alerts.pagerduty]\nenabled = true\n"
        f'url = "{url}"\nrouting_key_env = "PAGERDUTY_ROUTING_KEY"\ntimeout_seconds = {timeout_seconds}\n'
    )
    return "\n".join(kept).rstrip() + "\n\n" + table
