"""What an environment's history says: the versions known to be good there (a rollback to one skips the
manual gate), the version to roll back to, and whether a promotion would lower what runs. From the store
only, so an ack never waits for AWS."""

from __future__ import annotations

from typing import Any

from bot.app.storage import Storage
from bot.domain.errors import Refused
from bot.domain.machine import State
from bot.domain.model import Deployment
from bot.domain.versions import compare_versions


async def known_good_versions(store: Storage, service: str, env: str) -> dict[str, tuple[str, str]]:
    """The versions a rollback may return to without the gate, newest first: version -> (why, short
    why). A version is known-good when it succeeded in `env`, or when it is the version the latest
    success there replaced (its warm slot, when the strategy keeps one)."""
    known: dict[str, tuple[str, str]] = {}
    latest: Deployment | None = None
    for d in await store.history(service, env, limit=200):
        if d.state != State.SUCCEEDED or not d.version:
            continue
        latest = latest or d
        known.setdefault(d.version, (f"succeeded in {env} as #{d.id}", f"#{d.id}"))
    if latest is not None and latest.previous_version:
        known.setdefault(
            latest.previous_version,
            (f"ran in {env} until #{latest.id} replaced it", f"replaced by #{latest.id}"),
        )
    return known


def not_known_good(service: str, env: str, version: str, known: dict[str, tuple[str, str]]) -> str:
    listed = ", ".join(f"{v} ({short})" for v, (_, short) in known.items()) or "none yet"
    return (
        f"{version} never succeeded in {env}; known-good: {listed}. Roll back to one of those, or deploy "
        f"{version} through the whole gate (/deploy {service} {version} to {env}), or add "
        '--emergency "reason".'
    )


async def downgrade(store: Storage, service: str, env: str, source: Deployment) -> dict[str, Any] | None:
    """Whether promoting `source`'s version would lower what `env` runs: the versions compare lower
    (v4 < v5, v2.3.9 < v2.3.10), or, when they cannot be ordered, the version succeeded in `env` before
    the one running now. None: not a downgrade (or nothing to compare with)."""
    current = await store.last_succeeded(service, env)
    if current is None or not current.version or not source.version or current.version == source.version:
        return None
    order = compare_versions(source.version, current.version)
    if order is None:  # cannot be ordered: the environment's own history says which came first
        older = await store.last_succeeded(service, env, before=current.id)
        while older is not None and older.version != source.version:
            older = await store.last_succeeded(service, env, before=older.id)
        order = -1 if older is not None else 1
    if order >= 0:
        return None
    how = ", a rollback" if source.kind == "rollback" else ""
    return {
        "from": current.version,
        "to": source.version,
        "message": (
            f"{env} runs {current.version}; {source.env}'s last success is {source.version} "
            f"(#{source.id}{how}). Promoting would lower {env} to {source.version}. "
            "Add --allow-downgrade to do it."
        ),
    }


async def rollback_version(store: Storage, service: str, env: str) -> str:
    """Where a /rollback goes: the last version that succeeded here, whole, when something changed the
    service after it and did not end where it started (a failed deployment may have left traffic split:
    the rollback repairs it onto that version); otherwise the version before the current one."""
    current = await store.last_succeeded(service, env)
    recent = await store.history(service, env, limit=200)
    latest = next((d for d in recent if d.state in (State.SUCCEEDED, State.FAILED, State.ROLLED_BACK)), None)
    if (
        current is not None
        and current.version
        and latest is not None
        and latest.state == State.FAILED
        and latest.context.get("changed")
    ):
        return current.version
    for d in recent:
        if d.state == State.SUCCEEDED and current is not None and d.version != current.version:
            return str(d.version)
    if current is not None and current.previous_version and current.previous_version != current.version:
        return current.previous_version
    raise Refused(
        f"No known-good version of {service} in {env} to roll back to. "
        f"Name one: /rollback {service} in {env} to VERSION"
    )
