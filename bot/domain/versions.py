"""Versions and the gate's shortcuts, pure: ordering dotted versions, and which deployments skip the
manual part of the gate."""

from __future__ import annotations

import re

from bot.domain.model import Deployment

_VERSION_PART = re.compile(r"[0-9]+")


def compare_versions(a: str, b: str) -> int | None:
    """-1, 0 or 1 when `a` is lower, equal or higher than `b` as dotted numbers with an optional "v"
    (v5 > v4, v2.3.10 > v2.3.9, v2.3 < v2.3.1); None when either is not such a version (a git sha, a
    "-rc1" suffix): they cannot be ordered."""
    parts = []
    for v in (a, b):
        fields = v[1:].split(".") if v[:1] in ("v", "V") else v.split(".")
        if not all(_VERSION_PART.fullmatch(f) for f in fields):
            return None
        numbers = [int(f) for f in fields]
        while len(numbers) > 1 and numbers[-1] == 0:  # v2.3.0 is v2.3
            numbers.pop()
        parts.append(tuple(numbers))
    return (parts[0] > parts[1]) - (parts[0] < parts[1])


def skips_gate(d: Deployment) -> bool:
    """Break glass (--emergency), or a rollback to a version known to be good in its environment (it
    succeeded there, or ran there until the latest success replaced it): these do not wait for manual items
    or approvals (the rollback role is their control); automatic checks still run and show. Any other
    rollback goes through the whole gate."""
    return bool(d.context.get("emergency")) or (d.kind == "rollback" and bool(d.context.get("known_good")))
