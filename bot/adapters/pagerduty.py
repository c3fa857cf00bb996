"""PagerDuty Events API v2 over aiohttp: trigger, acknowledge and resolve one incident per deployment
(dedup_key from bot.alerts.pagerduty_dedup_key). Optional, off by default ([alerts.pagerduty]); the
routing key is a secret read from the environment, never shown in a repr, a log line or an error."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import aiohttp

from bot.domain.alerts import PAGERDUTY_EVENTS_URL

log = logging.getLogger(__name__)
MAX_SUMMARY = 1024  # PagerDuty's limit on payload.summary
RETRY_STATUSES = {429, 500, 502, 503, 504}


class PagerDutyError(Exception):
    """PagerDuty refused an event, or could not be reached after the retries."""


class PagerDuty:
    """A small Events API v2 client. Retries 429 and 5xx answers and connection errors with backoff; a 400
    (a malformed event) is not retried."""

    def __init__(
        self,
        routing_key: str,
        url: str = PAGERDUTY_EVENTS_URL,
        *,
        source: str = "deploybot",
        timeout_seconds: float = 10.0,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
    ):
        if not routing_key:
            raise ValueError("a PagerDuty routing key is required")
        self._routing_key = routing_key
        self.url, self.source = url, source
        self.timeout = aiohttp.ClientTimeout(total=timeout_seconds)
        self.max_attempts, self.backoff_seconds = max_attempts, backoff_seconds
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
    ) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "summary": summary if len(summary) <= MAX_SUMMARY else summary[: MAX_SUMMARY - 1] + "…",
            "source": self.source,
            "severity": severity,
            "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        for key, value in (("component", component), ("group", group), ("class", event_class)):
            if value:
                payload[key] = value
        if custom_details:
            payload["custom_details"] = custom_details
        body: dict[str, Any] = {"event_action": "trigger", "dedup_key": dedup_key, "payload": payload}
        if links:
            body["links"] = links
        return await self.send(body)

    async def acknowledge(self, dedup_key: str) -> dict[str, Any]:
        return await self.send({"event_action": "acknowledge", "dedup_key": dedup_key})

    async def resolve(self, dedup_key: str) -> dict[str, Any]:
        return await self.send({"event_action": "resolve", "dedup_key": dedup_key})

    async def send(self, event: dict[str, Any]) -> dict[str, Any]:
        body = {"routing_key": self._routing_key, "client": self.source, **event}
        what = f"{event['event_action']} {event['dedup_key']}"
        problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                async with self.session.post(self.url, json=body) as resp:
                    answer = await resp.json(content_type=None) if resp.content_length != 0 else {}
                    if resp.status in (200, 201, 202):
                        return answer or {}
                    problem = f"HTTP {resp.status}: {_message(answer)}"
                    if resp.status not in RETRY_STATUSES:
                        raise PagerDutyError(f"PagerDuty refused {what}: {problem}")
                    delay = _retry_after(resp.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                problem, delay = f"{type(exc).__name__}: {exc}", None
            if attempt < self.max_attempts:
                wait = delay if delay is not None else self.backoff_seconds * 2 ** (attempt - 1)
                log.warning("PagerDuty %s failed (%s); retry %d in %.1fs", what, problem, attempt, wait)
                await asyncio.sleep(wait)
        raise PagerDutyError(f"PagerDuty {what} failed after {self.max_attempts} attempts: {problem}")

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self.timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(answer: Any) -> str:
    if isinstance(answer, dict):
        parts = [str(answer.get("message") or answer.get("status") or "")]
        parts += [str(e) for e in answer.get("errors") or []]
        return "; ".join(p for p in parts if p) or "no message"
    return str(answer)[:200]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
