"""PagerDuty Events API v2 over aiohttp: trigger, acknowledge and resolve one incident per deployment
(dedup_key from bot.alerts.pagerduty_dedup_key). Optional, off by default ([alerts.pagerduty]); the
routing key is a secret read from the environment, never shown in a repr, a log line or an error.

Two kinds of retrying, split on purpose: this client retries a blip (a 429 or 5xx answer, a dropped
connection) a few times within about a second, then raises PagerDutyError saying whether the event may
succeed later (`retryable`, with any Retry-After). The long retrying — with backoff on the injected clock,
for hours, in order per incident, persisted across restarts — is the caller's (handlers/paging.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.domain.alerts import PAGERDUTY_EVENTS_URL

log = logging.getLogger(__name__)
MAX_SUMMARY = 1024  # PagerDuty's limit on payload.summary
RETRY_STATUSES = {429, 500, 502, 503, 504}
BODY_SHOWN = 200  # characters of an error body that go into the message
QUICK_WAIT_MAX = 2.0  # a Retry-After longer than this is not waited here: the caller's queue waits it


class PagerDutyError(Exception):
    """PagerDuty refused an event, or could not be reached after the quick retries. `problem` is the short
    reason ("HTTP 500: …", "no answer: …"), free of the routing key; `retryable` False means the event
    itself is wrong (a 400) and sending it again cannot help; `retry_after` is PagerDuty's Retry-After."""

    def __init__(
        self,
        message: str,
        *,
        problem: str = "",
        status: int | None = None,
        retryable: bool = True,
        retry_after: float | None = None,
    ):
        super().__init__(message)
        self.problem = problem or message
        self.status, self.retryable, self.retry_after = status, retryable, retry_after


class PagerDuty:
    """A small Events API v2 client. Retries 429 and 5xx answers and refused or dropped connections a few
    times, quickly (`max_attempts`, `backoff_seconds` doubling); not a timeout (it has waited already), not a
    Retry-After longer than QUICK_WAIT_MAX, never a 400 (a malformed event)."""

    def __init__(
        self,
        routing_key: str,
        url: str = PAGERDUTY_EVENTS_URL,
        *,
        source: str = "deploybot",
        timeout_seconds: float = 10.0,
        max_attempts: int = 3,
        backoff_seconds: float = 0.25,
    ):
        if not routing_key:
            raise ValueError("a PagerDuty routing key is required")
        self._routing_key = routing_key
        self.url, self.source = url, source
        self.timeout_seconds = timeout_seconds
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.max_attempts, self.backoff_seconds = max(1, max_attempts), backoff_seconds
        self._session: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"PagerDuty(url={self.url!r}, routing_key=[redacted])"

    @property
    def secret(self) -> str:
        """The routing key, for the log filter's list of values to mask."""
        return self._routing_key

    async def trigger(
        self,
        dedup_key: str,
        summary: str,
        *,
        severity: str = "critical",
        component: str | None = None,
        group: str | None = None,
        event_class: str | None = None,
        custom_details: dict[str, Any] | None = None,
        links: list[dict[str, str]] | None = None,
        timestamp: str | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """`timestamp`: when it happened (ISO 8601; default now) — a page delivered late keeps its time."""
        payload: dict[str, Any] = {
            "summary": summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…",
            "source": self.source,
            "severity": severity,
            "timestamp": timestamp or datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for key, value in (("component", component), ("group", group), ("class", event_class)):
            if value:
                payload[key] = value
        if custom_details:
            payload["custom_details"] = custom_details
        body: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key, "payload": payload}
        if links:
            body["links"] = links
        return await self.send(body, attempts)

    async def acknowledge(self, dedup_key: str, attempts: int | None = None) -> dict[str, Any]:
        return await self.send({"event_action": "acknowledge", "dedup_key": dedup_key}, attempts)

    async def resolve(self, dedup_key: str, attempts: int | None = None) -> dict[str, Any]:
        return await self.send({"event_action": "resolve", "dedup_key": dedup_key}, attempts)

    async def send(self, event: dict[str, Any], attempts: int | None = None) -> dict[str, Any]:
        """Send one event: up to `attempts` tries (default max_attempts; 1: the caller does the retrying)."""
        body = {"routing_key": self._routing_key, "client": self.source, **event}
        what = f"{event['event_action']} {event['dedup_key']}"
        failure = PagerDutyError("not sent")
        tries = max(1, attempts or self.max_attempts)
        for attempt in range(1, tries + 1):
            try:
                async with self.session.post(self.url, json=body) as resp:
                    answer = _parse(await resp.text())
                    if resp.status in (200, 201, 202):
                        return answer if isinstance(answer, dict) else {}
                    problem = self._clean(f"HTTP {resp.status}: {_message(answer)}")
                    failure = PagerDutyError(
                        f"PagerDuty refused {what}: {problem}",
                        problem=problem,
                        status=resp.status,
                        retryable=resp.status in RETRY_STATUSES,
                        retry_after=_retry_after(resp.headers.get("Retry-After")),
                    )
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = self._clean(_no_answer(exc, self.timeout_seconds))
                failure = PagerDutyError(f"PagerDuty {what}: {problem}", problem=problem)
                if isinstance(exc, TimeoutError):
                    break  # it already waited its whole timeout: no quick retry
            if not failure.retryable:
                raise failure
            wait = self.backoff_seconds * 2 ** (attempt - 1)
            if failure.retry_after is not None:
                if failure.retry_after > QUICK_WAIT_MAX:
                    break  # a long wait is the caller's to keep
                wait = failure.retry_after
            if attempt < tries:
                log.info(
                    "PagerDuty %s failed (%s); quick retry %d in %.2fs", what, failure.problem, attempt, wait
                )
                await asyncio.sleep(wait)
        raise failure

    def _clean(self, text: str) -> str:
        """Never the routing key, whatever a server echoes back."""
        return text.replace(self._routing_key, "[redacted]")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _parse(text: str) -> Any:
    """The answer's JSON, or its text when it is not JSON (a proxy's HTML error page, say)."""
    if not text.strip():
        return {}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        parts = [str(answer.get("message") or answer.get("status") or "")]
        parts += [str(e) for e in answer.get("errors") or []]
        return "; ".join(p for p in parts if p)[:BODY_SHOWN] or "no message"
    return " ".join(str(answer).split())[:BODY_SHOWN] or "no message"


def _no_answer(exc: BaseException, timeout: float) -> str:
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return f"no answer within {timeout:g}s"
    os_error = getattr(exc, "os_error", None)
    reason = getattr(os_error, "strerror", None) or type(exc).__name__
    return f"no answer: {reason}"


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
