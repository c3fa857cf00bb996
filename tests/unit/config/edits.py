"""Config tests' shared moves: a copy of a config dict with one key set, and the error a bad one gets."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from bot.config.load import parse_settings
from bot.config.tables import ConfigError


def changed(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """`base` with the key at `path` ("services/api/migrations/up") set to `value` (tables made as needed)."""
    data = copy.deepcopy(base)
    where = data
    *parents, last = path.split("/")
    for p in parents:
        where = where.setdefault(p, {})
    where[last] = value
    return data


def config_error(data: dict[str, Any]) -> str:
    """The message parse_settings refuses `data` with (as if read from deploybot.toml)."""
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, "deploybot.toml")
    return str(caught.value)
