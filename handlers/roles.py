"""Who holds which role: config roles name Slack users and user groups; group members come from
usergroups.list (through the shared SlackDirectory, one cache for the whole bot) and usergroups.users.list,
cached for a few minutes so an ack never waits on Slack twice."""

from __future__ import annotations

import asyncio
import logging
import math
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.checklist import Roles
from handlers.directory import SlackDirectory

log = logging.getLogger(__name__)


class RoleResolver:
    def __init__(
        self,
        client: AsyncWebClient,
        roles: Roles,
        ttl_seconds: float = 300.0,
        directory: SlackDirectory | None = None,
    ):
        self.client, self.roles, self.ttl = client, roles, ttl_seconds
        self.directory = directory or SlackDirectory(client, group_ttl=ttl_seconds)
        self._members: dict[str, set[str]] = {}
        # -inf, not 0.0: time.monotonic() counts from boot, so on a machine up for less than `ttl` seconds
        # a 0.0 start looked fresh and nobody had a role until the TTL had passed.
        self._fetched_at = -math.inf
        self._lock = asyncio.Lock()

    async def roles_of(self, user: str) -> frozenset[str]:
        await self._refresh()
        return frozenset(self.roles.of(user, self._members))

    async def _refresh(self) -> None:
        if not self.roles.handles or time.monotonic() - self._fetched_at < self.ttl:
            return
        async with self._lock:
            if time.monotonic() - self._fetched_at < self.ttl:
                return
            try:
                ids = await self.directory.group_ids()
                members: dict[str, set[str]] = {}
                for handle in self.roles.handles:
                    if handle not in ids:
                        log.warning("user group @%s named in [roles] does not exist in Slack", handle)
                        continue
                    members[handle] = await self.directory.group_members(ids[handle])
                self._members, self._fetched_at = members, time.monotonic()
            except SlackApiError as exc:  # keep the last good answer; an empty one denies by default
                log.error("could not read Slack user groups: %s", exc.response.get("error"))

    def invalidate(self) -> None:
        self._fetched_at = -math.inf
        self.directory.invalidate_groups()
