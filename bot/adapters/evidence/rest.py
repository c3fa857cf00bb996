"""One JSON GET with the provider's timeout and retries: transient answers (5xx, 429, no answer) are
asked again, then raised as transient; 401/403/404 say which provider and what to fix. The token goes in
a header and never into a message or a log line."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import aiohttp
from yarl import URL

from bot.app.evidence import PROVIDER_NAMES, EvidenceError
from bot.config.evidence import Provider

FIX = {
    401: "the token was refused: set {token_env} in the bot's environment to a valid token",
    403: "the token may not read this: give the token in {token_env} read access to {what}",
    404: "not found: check {what} in the config (and that the token in {token_env} can see it)",
}


class Rest:
    def __init__(self, provider: Provider, headers: Mapping[str, str]):
        self.provider, self._headers = provider, dict(headers)
        self.backoff_seconds = 0.25
        self._session: aiohttp.ClientSession | None = None  # one per client, made on first use

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.provider.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def name(self) -> str:
        return PROVIDER_NAMES.get(self.provider.name, self.provider.name)

    async def get(
        self, path: str, params: Mapping[str, str] | None = None, *, what: str = "", missing_ok: bool = False
    ) -> Any:
        """The decoded JSON of GET base+path (`path` already percent-encoded). None for a 404 when
        `missing_ok`."""
        url = URL(self.provider.url + path, encoded=True)
        if params:
            url = url.update_query(params)
        last = ""
        for attempt in range(self.provider.retries + 1):
            if attempt:
                await asyncio.sleep(self.backoff_seconds * attempt)
            try:
                async with self._open().get(url, allow_redirects=False) as r:
                    if r.status == 429 or r.status >= 500:
                        last = f"answered {r.status}"
                        continue
                    if r.status == 404 and missing_ok:
                        return None
                    if r.status in FIX:
                        fix = FIX[r.status].format(token_env=self.provider.token_env, what=what or path)
                        raise EvidenceError(self.provider.name, f"{r.status} for {url.path}: {fix}")
                    if r.status >= 300:
                        raise EvidenceError(self.provider.name, f"{r.status} for {url.path}")
                    try:
                        return await r.json(content_type=None)
                    except ValueError:
                        raise EvidenceError(self.provider.name, f"not JSON from {url.path}") from None
            except (aiohttp.ClientError, TimeoutError) as exc:
                last = f"no answer ({type(exc).__name__})"
        raise EvidenceError(self.provider.name, f"{last} at {self.provider.url}", transient=True)
