"""Who holds which role: config roles name Slack users and user groups; group members come from
usergroups.list (through the shared SlackDirectory, one cache for the whole bot) and usergroups.users.list.

An ack never waits on Slack for them (usergroups.* are Slack tier 2, and slow): the members are read once
at start (`warm`), and when the answer is older than the TTL the last good one is used while a fresh one
is read in the background. Only a request arriving before the very first read has finished waits for
that one read (there is no answer to give before it)."""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable

from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.middleware.async_middleware import AsyncMiddleware
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.domain.checklist import Roles
from bot.tasks import TaskGroup
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
        self._read_once = False  # a read has finished (well or not): answer from memory from now on
        self._background = TaskGroup("roles")
        self._refreshing: asyncio.Task[None] | None = None

    async def roles_of(self, user: str) -> frozenset[str]:
        """The roles `user` holds, from memory; stale members are refreshed after, never before."""
        if not self._read_once:
            await self.refresh()
        elif self.roles.handles and time.monotonic() - self._fetched_at >= self.ttl:
            self._refresh_later("roles-refresh")
        return frozenset(self.roles.of(user, self._members))

    def warm(self) -> None:
        """Start the first read now (at start-up, in the background), so the first request finds it done.
        Outside a running event loop it does nothing: the first question reads them."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        if not self._read_once:
            self._refresh_later("roles-warm")

    def _refresh_later(self, name: str) -> None:
        if self._refreshing is None or self._refreshing.done():  # one read in the background at a time
            self._refreshing = self._background.spawn(self.refresh(), name, detached=True)

    async def refresh(self) -> None:
        """Read the group members again if they are older than the TTL (one read at a time)."""
        if not self.roles.handles or time.monotonic() - self._fetched_at < self.ttl:
            self._read_once = True
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
            finally:
                self._read_once = True

    async def settled(self) -> None:
        """Until the reads started in the background are done."""
        await self._background.wait()

    def invalidate(self) -> None:
        """Read the members again at the next question (in the background: the last answer stands until
        then)."""
        self._fetched_at = -math.inf
        self.directory.invalidate_groups()


class RolesMiddleware(AsyncMiddleware):
    """Bolt middleware: the person's roles, resolved once per request into `context["roles"]` (from
    memory: `roles_of` never waits on Slack once the first read is done), for every listener to read.
    A middleware class, not a function: bolt calls a function middleware through its argument injection,
    which builds every argument it knows (about thirty) for each request."""

    def __init__(self, resolver: RoleResolver):
        self.resolver = resolver

    async def async_process(
        self,
        *,
        req: AsyncBoltRequest,
        resp: BoltResponse,
        next: Callable[[], Awaitable[BoltResponse]],  # noqa: A002 - bolt's name
    ) -> BoltResponse:
        context = req.context
        if context.user_id:
            context["roles"] = await self.resolver.roles_of(context.user_id)
        return await next()


def roles_in(context: AsyncBoltContext) -> frozenset[str]:
    """What the middleware resolved; nobody holds a role when there was no user to resolve."""
    roles = context.get("roles")
    return roles if isinstance(roles, frozenset) else frozenset()
