"""HTTP GETs over aiohttp for smoke checks and the http_status checklist item (bot.app.ports.Http)."""

from __future__ import annotations

import aiohttp

from bot.app.ports import HttpError


class AiohttpClient:
    async def get(self, url: str, timeout_seconds: float = 10.0) -> tuple[int, str]:
        try:
            timeout = aiohttp.ClientTimeout(total=timeout_seconds)
            async with aiohttp.ClientSession(timeout=timeout) as session, session.get(url) as resp:
                return resp.status, await resp.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise HttpError(f"{type(exc).__name__}: {exc}"[:200]) from None
