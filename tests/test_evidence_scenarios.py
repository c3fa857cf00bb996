"""Evidence instead of checkboxes, end to end in the sandbox: production's "Tests passing" is the CI's
result for the version's commit, read from the local GitHub (web: check runs), GitLab (api: its latest
pipeline) and Jenkins (api: the api-integration job's build); a missing image is refused before anything
is made in AWS; the message lists the commits between the running and the new version. Users: alice an
engineer, bob a release manager."""

from __future__ import annotations

import json

from bot.sandbox.ci import HOSTILE
from bot.sandbox.client import SandboxClient, wait_for
from bot.sandbox.run import Sandbox
from tests.conftest import bot_log, db_rows, ecs, message_of, request, through_gate, top_level, wait_state


def outcome(sb: Sandbox, d: int) -> str:
    return db_rows(sb, "SELECT outcome FROM deployments WHERE id = ?", (d,))[0]["outcome"] or ""


def item(sb: Sandbox, d: int, item_id: str = "tests") -> dict:
    rows = db_rows(sb, "SELECT * FROM checklist WHERE deployment_id = ? AND item_id = ?", (d, item_id))
    return rows[0] if rows else {}


async def refused(client: SandboxClient, sb: Sandbox, d: int) -> str:
    await wait_state(sb, d, "cancelled")
    return outcome(sb, d)


def run_in_production(sb: Sandbox, service: str, version: str) -> None:
    """As if `version` had been deployed before: the live slot's service runs a revision with its image."""
    client = ecs(sb)
    family = f"{service}-production"
    td = client.describe_task_definition(taskDefinition=family)["taskDefinition"]
    containers = [{**c, "image": f"{service}:{version}"} for c in td["containerDefinitions"]]
    keys = ("family", "networkMode", "requiresCompatibilities", "cpu", "memory")
    arn = client.register_task_definition(**{k: td[k] for k in keys}, containerDefinitions=containers)
    client.update_service(
        cluster="production",
        service=f"{service}-blue",
        taskDefinition=arn["taskDefinition"]["taskDefinitionArn"],
    )


async def ephemeral_to(client: SandboxClient, sb: Sandbox, containing: str, user: str = "alice") -> dict:
    async def probe():
        for m in await client.messages("deploys"):
            if m.get("ephemeral_for") == sb.slack.users[user] and containing in m["text"]:
                return m
        return None

    return await wait_for(probe, 10, what=f"an answer containing {containing!r}")


def revisions(sb: Sandbox, family: str) -> list[str]:
    return ecs(sb).list_task_definitions(familyPrefix=family)["taskDefinitionArns"]


async def test_github_checks_decide_tests_passing_and_the_message_lists_the_commits(sandbox, client):
    run_in_production(sandbox, "web", "v4")
    assert (await client.ci("github", "acme/web", "v3", "failure", check="unit-tests"))["ok"]
    d = await request(client, "alice", "web v3 to production")
    why = await refused(client, sandbox, d)
    assert "CI failed for web v3" in why and "unit-tests (GitHub)" in why, why
    context = json.loads(db_rows(sandbox, "SELECT context FROM deployments WHERE id = ?", (d,))[0]["context"])
    assert context["changes"]["downgrade"] is True  # v3 while v4 runs

    # a typo of an existing tag: refused at once, nothing made in AWS, the nearest tags suggested
    assert (await client.push("web", "v2.3.1"))["ok"]
    before = revisions(sandbox, "web-production")
    typo = await request(client, "alice", "web v2.3.l to production")
    why = await refused(client, sandbox, typo)
    assert "no image web:v2.3.l in ECR; did you mean v2.3.1" in why, why
    assert revisions(sandbox, "web-production") == before
    r = await client.slash("alice", "/deploy", "web v2.3.l to production --dry-run")
    assert "Dry run" in r["body"]["text"], r
    said = await ephemeral_to(client, sandbox, "Would be refused")  # after the ack: ECR is asked then
    assert "did you mean v2.3.1" in said["text"]
    r = await client.slash("alice", "/deploy", "web v6 to production --dry-run")
    said = await ephemeral_to(client, sandbox, "v4 → v6")
    assert "4 commits" in said["text"] and "web: change 2 of v6" in said["text"]

    # pending: the item waits (nobody can tick it), then the deploy proceeds when it turns green
    await client.ci("github", "acme/web", "v5", "pending", check="build")
    d = await request(client, "alice", "web v5 to production")
    m = await message_of(client, d, "What changes", "*Checklist*")
    shown = json.dumps(m["blocks"], ensure_ascii=False)
    assert "v4 → v5" in shown and "2 commits" in shown and "web: change 2 of v5" in shown
    assert "change 2 of v4" not in shown  # only what is between the running and the new version
    assert "<!channel>" not in shown and "&lt;!channel&gt;" in shown  # a commit message is untrusted text
    assert HOSTILE.split()[1] in shown
    await through_gate(client, sandbox, d)
    assert "build (GitHub)" in item(sandbox, d)["evidence"] and not item(sandbox, d)["done"]
    state = db_rows(sandbox, "SELECT state FROM deployments WHERE id = ?", (d,))[0]["state"]
    assert state == "awaiting_approval"
    await client.ci("github", "acme/web", "v5", "success", check="build")
    assert await wait_state(sandbox, d, "running")
    assert item(sandbox, d)["done"] and "passed at" in item(sandbox, d)["evidence"]
    logged = bot_log(sandbox)
    assert all(token not in logged for token in sandbox.ci.tokens.values())


async def test_gitlab_pipeline_and_jenkins_build_decide_tests_passing_for_api(sandbox, client):
    await client.ci("jenkins", "api-integration", "v6", "failure")
    d = await request(client, "alice", "api v6 to production")
    why = await refused(client, sandbox, d)
    assert "CI failed for api v6" in why and "api-integration #" in why and "(Jenkins)" in why, why

    await client.ci("gitlab", "acme/api", "v3", "failure", check="test")
    d = await request(client, "alice", "api v3 to production")
    why = await refused(client, sandbox, d)
    assert "test (GitLab)" in why, why

    await client.ci("jenkins", "api-integration", "v4", "pending")
    d = await request(client, "alice", "api v4 to production")
    await wait_state(sandbox, d, "awaiting_approval")

    async def waiting():
        return "Jenkins" in (item(sandbox, d).get("evidence") or "") and item(sandbox, d)

    assert not (await wait_for(waiting, 20, what="the Jenkins build to be waited for"))["done"]
    await client.ci("jenkins", "api-integration", "v4", "success")

    async def done():
        return item(sandbox, d).get("done")

    await wait_for(done, 20, what="tests passing from GitLab and Jenkins")
    assert "GitLab: test ✓" in item(sandbox, d)["evidence"]
    m = await message_of(client, d, "What changes")  # api's commits come from the image's label + GitLab
    assert "api: change 2 of v4" in json.dumps(m["blocks"], ensure_ascii=False)
    assert [x for x in top_level(await client.messages("deploys")) if f"#{d} " in x["text"]]
