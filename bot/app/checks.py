"""The checklist's automatic items: each looks at AWS, an HTTP endpoint or the store and answers
(done, evidence) — the evidence is what people see on the deployment's message and in the audit."""

from __future__ import annotations

from bot.app.plans.reads import image_tag
from bot.app.ports import Http, HttpError, Metrics, Platform, PlatformError
from bot.app.storage import Storage
from bot.config.model import Target
from bot.domain.checklist import Item
from bot.domain.model import Deployment


async def run_check(
    item: Item,
    d: Deployment,
    target: Target,
    platform: Platform,
    metrics: Metrics,
    store: Storage,
    http: Http | None = None,
) -> tuple[bool, str]:
    """Never raises: an AWS or HTTP failure is a failed check whose evidence says what happened."""
    try:
        if item.check == "rollback_target":
            return await _rollback_target(target, platform)
        if item.check == "no_alarms":
            return await _no_alarms(item, target, metrics)
        if item.check == "promoted_from":
            return await _promoted_from(item, d, store)
        if item.check == "targets_healthy":
            return await _targets_healthy(target, platform)
        if item.check == "http_status":
            return await _http_status(item, d, http)
        if item.check == "migrations_rehearsed":
            return await _migrations_rehearsed(item, d, target, store)
    except PlatformError as exc:
        return False, str(exc)
    return False, f"unknown check {item.check!r}"


async def _rollback_target(target: Target, platform: Platform) -> tuple[bool, str]:
    now = await platform.running(target)
    if not now.revision or now.desired == 0:
        return False, f"{target.ecs_service(now.slot)} runs nothing: there is no version to roll back to"
    if now.image is None:
        return False, f"{now.revision} has no container {target.service.container!r}"
    return True, f"{image_tag(now.image)} runs now on {target.ecs_service(now.slot)}: rollback returns to it"


async def _no_alarms(item: Item, target: Target, metrics: Metrics) -> tuple[bool, str]:
    names = [
        a.format(service=target.service.name, env=target.env.name) for a in item.params.get("alarms", [])
    ]
    if not names:
        return False, "no CloudWatch alarms are configured for this item: monitoring is not in place"
    found = {a.name: a for a in await metrics.alarms(target.env.aws_role_arn, names)}
    missing = [n for n in names if n not in found]
    if missing:
        return (
            False,
            f"alarm{'s' if len(missing) > 1 else ''} {', '.join(missing)} not found: create them first",
        )
    firing = [f"{n} ({found[n].reason[:120]})" for n in names if found[n].state == "ALARM"]
    if firing:
        return False, "in ALARM: " + "; ".join(firing)
    return (
        True,
        f"{len(names)} alarm{'s' if len(names) > 1 else ''} watching, none in ALARM: {', '.join(names)}",
    )


async def _promoted_from(item: Item, d: Deployment, store: Storage) -> tuple[bool, str]:
    source = item.params.get("source_env", "staging")
    last = await store.last_succeeded(d.service, source)
    if last is None:
        return False, f"{d.service} has never succeeded in {source}"
    if d.version and last.version != d.version:
        return False, f"{source} last succeeded with {last.version} (#{last.id}), not {d.version}"
    return True, f"{last.version} succeeded in {source} (#{last.id})"


async def _targets_healthy(target: Target, platform: Platform) -> tuple[bool, str]:
    slot = await platform.live_slot(target)
    health = await platform.target_health(target, slot)
    bad = [t for t in health if t.state != "healthy"]
    if not health:
        return False, f"no targets registered in {target.target_group(slot)}"
    if bad:
        return False, f"{len(bad)} of {len(health)} targets not healthy in {target.target_group(slot)}"
    return True, f"{len(health)} targets healthy in {target.target_group(slot)}"


async def _http_status(item: Item, d: Deployment, http: Http | None) -> tuple[bool, str]:
    url = str(item.params.get("url", "")).format(service=d.service, env=d.env, version=d.version or "")
    want = int(item.params.get("expect_status", 200))
    expect_body = item.params.get("expect_body")
    if http is None:
        return False, "this bot has no HTTP client to check with"
    try:
        status, body = await http.get(url)
    except HttpError as exc:
        return False, f"GET {url}: {str(exc).split(':')[0]}"
    if status != want or (expect_body and str(expect_body) not in body):
        return False, f"GET {url} → {status} {body[:100]!r} (wanted {want})"
    return True, f"GET {url} → {status}"


async def _migrations_rehearsed(
    item: Item, d: Deployment, target: Target, store: Storage
) -> tuple[bool, str]:
    """This exact version's migration ran up, down and up again in the source environment."""
    if target.migrations is None:
        return True, f"{d.service} has no migrations in {target.env.name}: there is nothing to test"
    if d.kind == "rollback":
        return True, "a rollback runs no migration: the schema stays as the newer version left it"
    source = item.params.get("source_env", "staging")
    if not d.version:
        return False, "no version to look up"
    found = await store.rehearsal(d.service, source, d.version)
    if found is None:
        return False, (
            f"the migration of {d.version} was never rehearsed in {source}: deploy it there first "
            f"(it runs up, down, up)"
        )
    if found.details.get("reversible", True):
        return (
            True,
            f"rehearsed in {source} by #{found.deployment_id} at {found.at}: up, down, up all exited 0",
        )
    return (
        True,
        f"ran in {source} by #{found.deployment_id} at {found.at}: up exited 0 (it is not reversible)",
    )
