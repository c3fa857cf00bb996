"""Counting the bot's Slack Web API traffic: a retry handler placed first in the client's list sees every
HTTP answer slack_sdk gets (each attempt, retries included) and never asks for a retry itself, so the
rate-limit, 5xx and connection handlers behind it decide as before. Calls by method and status, and 429s
by method, go to the bot's Telemetry (bot/adapters/telemetry.py)."""

from __future__ import annotations

from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.telemetry import Telemetry


class SlackCallCounter(AsyncRetryHandler):
    observes_only = True  # never retries: kept where only rate-limit retries are (handlers/slack_outbox.py)

    def __init__(self, telemetry: Telemetry):
        super().__init__(max_retry_count=0)
        self.telemetry = telemetry

    async def can_retry_async(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        method = request.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or "unknown"
        status = str(response.status_code) if response is not None else "error"
        self.telemetry.slack_calls.labels(method, status).inc()
        if response is not None and response.status_code == 429:
            self.telemetry.slack_rate_limited.labels(method).inc()
        return False


def count_slack_calls(client: AsyncWebClient, telemetry: Telemetry) -> AsyncWebClient:
    """Put the counter first among the client's retry handlers; returns the client."""
    client.retry_handlers.insert(0, SlackCallCounter(telemetry))
    return client
