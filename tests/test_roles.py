"""Role resolution from Slack user groups, independent of how long the machine has been up."""

from __future__ import annotations

import asyncio

from bot.domain.checklist import Roles
from handlers import roles as roles_module
from handlers.directory import SlackDirectory
from handlers.roles import RoleResolver


class FakeSlack:
    """The two user-group methods of Slack's Web API, counting calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.member_reads = 0
        self.members = ["U0ALICE"]
        self.answer = asyncio.Event()  # a slow Slack: cleared, usergroups.list waits until it is set
        self.answer.set()

    async def usergroups_list(self) -> dict:
        self.calls += 1
        return {"usergroups": [{"handle": "engineers", "id": "S1"}]}

    async def usergroups_users_list(self, usergroup: str) -> dict:
        self.member_reads += 1
        await self.answer.wait()
        return {"users": list(self.members) if usergroup == "S1" else []}


async def test_roles_are_read_on_a_machine_booted_less_than_a_ttl_ago(monkeypatch):
    # time.monotonic() counts from boot: 10 s after boot a resolver with a 300 s TTL must still fetch.
    monkeypatch.setattr(roles_module.time, "monotonic", lambda: 10.0)
    slack = FakeSlack()
    resolver = RoleResolver(slack, Roles(groups={"engineers": ("engineers",)}), ttl_seconds=300)  # type: ignore[arg-type]
    assert await resolver.roles_of("U0ALICE") == {"engineers"}
    assert await resolver.roles_of("U0DAVE") == frozenset()
    assert slack.calls == 1  # cached within the TTL


async def test_invalidate_forces_a_fresh_read_after_the_answer(monkeypatch):
    monkeypatch.setattr(roles_module.time, "monotonic", lambda: 5.0)
    slack = FakeSlack()
    resolver = RoleResolver(slack, Roles(groups={"engineers": ("engineers",)}))  # type: ignore[arg-type]
    await resolver.roles_of("U0ALICE")
    resolver.invalidate()
    slack.members = []
    assert await resolver.roles_of("U0ALICE") == {"engineers"}  # the last answer, not a wait on Slack
    await resolver.settled()
    assert slack.calls == 2
    assert await resolver.roles_of("U0ALICE") == frozenset()  # the fresh read counts from now on


async def test_stale_roles_never_wait_on_slack_they_are_refreshed_after(monkeypatch):
    now = [10.0]
    monkeypatch.setattr(roles_module.time, "monotonic", lambda: now[0])
    slack = FakeSlack()
    resolver = RoleResolver(slack, Roles(groups={"engineers": ("engineers",)}), ttl_seconds=300)  # type: ignore[arg-type]
    resolver.warm()  # at start: the first read, in the background
    await resolver.settled()
    assert slack.member_reads == 1
    now[0] += 301  # past the TTL, and Slack is slow now
    slack.answer.clear()
    slack.members = []
    async with asyncio.timeout(5):  # would hang if the answer waited for Slack
        assert await resolver.roles_of("U0ALICE") == {"engineers"}
        assert await resolver.roles_of("U0ALICE") == {"engineers"}
    slack.answer.set()
    await resolver.settled()
    assert slack.member_reads == 2  # one refresh after the answers, not one per question
    assert await resolver.roles_of("U0ALICE") == frozenset()


async def test_the_notifier_and_the_roles_read_usergroups_list_once_between_them():
    slack = FakeSlack()
    directory = SlackDirectory(slack)  # type: ignore[arg-type]
    resolver = RoleResolver(slack, Roles(groups={"engineers": ("engineers",)}), directory=directory)  # type: ignore[arg-type]
    assert await resolver.roles_of("U0ALICE") == {"engineers"}
    assert await directory.mention("engineers") == "<!subteam^S1>"  # how the notifier mentions a group
    assert slack.calls == 1


async def test_the_middleware_resolves_roles_once_into_the_context_for_the_listeners():
    from slack_bolt.context.async_context import AsyncBoltContext
    from slack_bolt.request.async_request import AsyncBoltRequest
    from slack_bolt.response import BoltResponse

    from handlers.roles import RolesMiddleware, roles_in

    slack = FakeSlack()
    resolver = RoleResolver(slack, Roles(groups={"engineers": ("engineers",)}))  # type: ignore[arg-type]
    middleware = RolesMiddleware(resolver)
    seen = []

    def request(context: dict) -> AsyncBoltRequest:
        req = AsyncBoltRequest(body="")
        req.context = AsyncBoltContext(context)
        return req

    async def run(req: AsyncBoltRequest) -> BoltResponse:
        async def listener() -> BoltResponse:
            seen.append(roles_in(req.context))
            return BoltResponse(status=200)

        return await middleware.async_process(req=req, resp=BoltResponse(status=404), next=listener)

    assert (await run(request({"user_id": "U0ALICE"}))).status == 200
    await run(request({}))
    assert seen == [frozenset({"engineers"}), frozenset()]
    assert slack.calls == 1
