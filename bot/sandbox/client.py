"""A client for the sandbox's control API over HTTP: act as a user, read messages, inject faults, and wait
for a condition with a deadline. Tests, benchmarks and scripts use it; it knows only the HTTP routes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")


class SandboxClient:
    def __init__(self, slack_url: str):
        self.url = slack_url.rstrip("/")
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> SandboxClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(f"{self.url}{path}", json=body) as resp:
            return await resp.json(content_type=None)

    async def _get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(f"{self.url}{path}", params=params) as resp:
            return await resp.json(content_type=None)

    async def slash(self, user: str, command: str, text: str, channel: str = "deploys", **extra: Any) -> dict:
        return await self._post(
            "/_sandbox/slash", {"user": user, "channel": channel, "command": command, "text": text, **extra}
        )

    async def click(
        self,
        user: str,
        channel: str,
        ts: str,
        *,
        action_id: str | None = None,
        label: str | None = None,
        **extra: Any,
    ) -> dict:
        body = {"user": user, "channel": channel, "ts": ts, **extra}
        if action_id is not None:
            body["action_id"] = action_id
        if label is not None:
            body["label"] = label
        return await self._post("/_sandbox/click", body)

    async def views(self, user: str) -> list[dict[str, Any]]:
        """The modals open for `user` (views.open by the bot), newest last."""
        return (await self._get("/_sandbox/views", user=user))["views"]

    async def submit(self, user: str, view_id: str, values: dict[str, dict[str, str]]) -> dict[str, Any]:
        """Submit a modal as `user` with {block_id: {action_id: text}}: the signed view_submission."""
        return await self._post("/_sandbox/submit", {"user": user, "view_id": view_id, "values": values})

    async def messages(self, channel: str = "deploys") -> list[dict[str, Any]]:
        return (await self._get("/_sandbox/messages", channel=channel))["messages"]

    async def files(self, channel: str = "deploys") -> list[dict[str, Any]]:
        """The files shared in a channel, with their content (base64)."""
        files: Any = await self._get("/_sandbox/files", channel=channel)
        return files

    async def calls(self) -> dict[str, Any]:
        return await self._get("/_sandbox/calls")

    async def inject(self, service: str, version: str | None = None, **behaviour: Any) -> dict:
        return await self._post("/_sandbox/inject", {"service": service, "version": version, **behaviour})

    async def inject_flag(
        self,
        flag: str,
        variant: str | None = None,
        *,
        error_rate: float | None = None,
        latency_ms: float | None = None,
        env: str | None = None,
        clear: bool = False,
    ) -> dict[str, Any]:
        """Make a flag's variant misbehave in the published metrics (every environment, or `env`); with
        `clear`, stop (without a variant: every injection of the flag). The answer is flags()'s, or
        {"ok": false, "error"} for a bad request."""
        body: dict[str, Any] = {"flag": flag}
        extra = {"variant": variant, "error_rate": error_rate, "latency_ms": latency_ms, "env": env}
        body.update({k: v for k, v in extra.items() if v is not None})
        if clear:
            body["clear"] = True
        return await self._post("/_sandbox/inject", body)

    async def flags(self, env: str | None = None) -> dict[str, Any]:
        """Per environment each flag's share of the simulated users per variant ("environments"), the
        active injections ("injections"), and the flag traffic's counts ("stats")."""
        return await self._get("/_sandbox/flags", **({"env": env} if env else {}))

    async def appdb(self, env: str) -> dict[str, Any]:
        """The demo application's database in `env`: {"version": N, "tables": {name: [columns]}}."""
        return await self._get("/_sandbox/appdb", env=env)

    async def ci(self, provider: str, repo: str, version: str, state: str, check: str | None = None) -> dict:
        """Set a CI result in the local GitHub/GitLab/Jenkins/CircleCI (bot.sandbox.ci)."""
        body = {"provider": provider, "repo": repo, "version": version, "state": state}
        return await self._post("/_sandbox/ci", {**body, **({"check": check} if check else {})})

    async def push(self, service: str, version: str) -> dict:
        """A new version of a demo service: commits, its tag, its image in ECR."""
        return await self._post("/_sandbox/push", {"service": service, "version": version})

    async def bot(self, action: str) -> dict:
        return await self._post("/_sandbox/bot", {"action": action})

    async def aws(self) -> dict[str, Any]:
        return await self._get("/_sandbox/aws")

    async def faults(self, service: str | None = None, **rule: Any) -> dict[str, Any]:
        """With a service: add a fault rule (rate, error, seconds, operations, latency_ms, seed); without:
        list the active rules. Either way the answer's "faults" are the active rules."""
        if service is None:
            return await self._get("/_sandbox/faults")
        return await self._post("/_sandbox/faults", {"service": service, **rule})

    async def clear_faults(self) -> dict[str, Any]:
        async with self.session.delete(f"{self.url}/_sandbox/faults") as resp:
            return await resp.json(content_type=None)


async def wait_for(
    probe: Callable[[], Awaitable[T | None]],
    within: float = 30.0,
    interval: float = 0.05,
    what: str = "condition",
) -> T:
    """Poll `probe` until it returns something truthy, or fail after `within` seconds of wall time."""
    deadline = time.monotonic() + within
    last: Any = None
    while True:
        last = await probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within:.0f}s waiting for {what} (last: {last!r})")
        await asyncio.sleep(interval)
