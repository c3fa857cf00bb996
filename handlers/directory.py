"""The Slack directory: channel names -> ids, user and user-group mentions, user-group members. One cache
for each Slack list (conversations.list, users.list, usergroups.list), shared by the notifier and the role
resolver, so `usergroups.list` (Slack tier 2) is read once per `group_ttl` seconds, not once per reader."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

log = logging.getLogger(__name__)
CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,}$")
USER_ID = re.compile(r"^[UW][A-Z0-9]{6,}$")
GROUP_ID = re.compile(r"^S[A-Z0-9]{6,}$")


class SlackDirectory:
    def __init__(self, client: AsyncWebClient, group_ttl: float = 300.0):
        self.client, self.group_ttl = client, group_ttl
        self._channels: dict[str, str] = {}
        self._people: dict[str, str] = {}
        self._groups: dict[str, str] = {}
        # -inf, not 0.0: time.monotonic() counts from boot, so on a machine up for less than `ttl` seconds
        # a 0.0 start looked fresh and nothing was ever read until the TTL had passed.
        self._groups_at = -math.inf
        self._groups_lock = asyncio.Lock()

    async def channel_id(self, name: str) -> str:
        """Config names channels ("deploys"); Slack wants ids. Resolved once through conversations.list."""
        name = name.lstrip("#")
        if CHANNEL_ID.match(name):
            return name
        if name not in self._channels:
            cursor = None
            while True:
                page = await self.client.conversations_list(
                    limit=200, cursor=cursor, types="public_channel,private_channel"
                )
                channels: list[dict[str, Any]] = page.get("channels") or []
                for ch in channels:
                    self._channels[ch["name"]] = ch["id"]
                cursor = _next_cursor(page.get("response_metadata"))
                if not cursor or name in self._channels:
                    break
        if name not in self._channels:
            raise LookupError(
                f"no Slack channel named #{name} visible to the bot (invite it, or fix the config)"
            )
        return self._channels[name]

    async def mention(self, ref: str | None) -> str | None:
        """How to mention a configured user or group: a group handle ("oncall") or id, "@name" or a user
        id. Unknown names are shown as plain text (and logged), never dropped."""
        if not ref:
            return None
        ref = ref.strip()
        if ref.startswith("<"):
            return ref
        if USER_ID.match(ref):
            return f"<@{ref}>"
        if GROUP_ID.match(ref):
            return f"<!subteam^{ref}>"
        name = ref.lstrip("@")
        try:
            found = await self._lookup(name, groups_first=not ref.startswith("@"))
            if found:
                return found
        except SlackApiError as exc:
            log.warning("cannot look up %s to mention: %s", ref, exc.response.get("error"))
        log.warning("no Slack user or user group %r to mention; check [alerts] in the config", ref)
        return f"@{name}"

    async def _lookup(self, name: str, groups_first: bool) -> str | None:
        if groups_first and (group := await self.group_id(name)):
            return f"<!subteam^{group}>"
        if person := await self.user_id(name):
            return f"<@{person}>"
        if group := await self.group_id(name):
            return f"<!subteam^{group}>"
        return None

    async def group_ids(self) -> dict[str, str]:
        """handle -> id of every user group (usergroups.list, cached `group_ttl` seconds). SlackApiError
        propagates; the last good answer stays cached."""
        if time.monotonic() - self._groups_at < self.group_ttl:
            return self._groups
        async with self._groups_lock:
            if time.monotonic() - self._groups_at >= self.group_ttl:
                out = await self.client.usergroups_list()
                groups: list[dict[str, Any]] = out.get("usergroups") or []
                self._groups = {g["handle"]: g["id"] for g in groups}
                self._groups_at = time.monotonic()
        return self._groups

    async def group_id(self, handle: str) -> str | None:
        return (await self.group_ids()).get(handle)

    async def group_members(self, group_id: str) -> set[str]:
        out = await self.client.usergroups_users_list(usergroup=group_id)
        users: list[str] = out.get("users") or []
        return set(users)

    def invalidate_groups(self) -> None:
        self._groups_at = -math.inf

    async def user_id(self, name: str) -> str | None:
        if not self._people:
            cursor = None
            while True:
                page = await self.client.users_list(limit=200, cursor=cursor)
                members: list[dict[str, Any]] = page.get("members") or []
                for u in members:
                    self._people[u["name"]] = u["id"]
                cursor = _next_cursor(page.get("response_metadata"))
                if not cursor:
                    break
        return self._people.get(name)


def _next_cursor(meta: dict[str, Any] | None) -> str | None:
    cursor = (meta or {}).get("next_cursor")
    return str(cursor) if cursor else None
