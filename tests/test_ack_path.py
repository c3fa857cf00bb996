"""Issue 10: the role lookup (usergroups.*, Slack tier 2) never happens before an ack. The bot reads the
user groups at start; a /deploy (a mutating command, access checked against roles) is answered from that."""

from __future__ import annotations

from bot.sandbox.client import wait_for

USERGROUPS = ("usergroups.list", "usergroups.users.list")


async def _group_reads(client) -> list[dict]:
    return [c for c in (await client.calls())["calls"] if c["method"] in USERGROUPS]


async def test_the_user_groups_are_read_at_start_and_no_deploy_waits_on_them(sandbox, client):
    async def read_at_start():
        return bool(await _group_reads(client))

    assert await wait_for(read_at_start, 20, what="the bot to read the user groups at start")
    before = len(await _group_reads(client))
    r = await client.slash("alice", "/deploy", "web v2 to staging")  # alice has deploy's role via a group
    assert r["status"] == 200 and "requested" in r["body"]["text"], r
    denied = await client.slash("dave", "/deploy", "web v3 to production")  # no role: refused from memory
    assert "You need the" in denied["body"]["text"], denied
    assert len(await _group_reads(client)) == before  # nothing read from Slack for either answer


async def test_a_command_whose_text_says_payload_is_handled_like_any_other(sandbox, client):
    """Bolt reads any form body containing the word "payload" as an interaction's `payload=` field: a slash
    command whose text says it (a reason about a payload) reached no listener. The front parses the body
    once and hands bolt what it parsed."""
    r = await client.slash("alice", "/deploy", 'web v2 to staging --reason "payload schema fix"')
    assert r["status"] == 200 and "requested" in r["body"]["text"], r
