"""Placeholder for /flag's read-only views (the list and one flag), replaced by the real builders."""

from __future__ import annotations

from typing import Any

from handlers.ui.blocks import ephemeral


def flag_list(env: str | None, rows: Any) -> dict[str, Any]:
    return ephemeral("\n".join(f"{e} {f.key}" for e, f, _ in rows) or "No flags.")


def flag_show(env: str, flag: Any, *rest: Any) -> dict[str, Any]:
    return ephemeral(f"{flag.key} in {env}")
