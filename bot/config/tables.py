"""Reading a config file's tables: typed getters whose errors name the file, the key and the value, and
unknown keys reported with the nearest known one. Shared by bot.settings and bot.analysis."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A config file that cannot be used: `str()` says file, key, value and what is expected."""

    def __init__(self, path: str | Path, key: str, problem: str):
        self.path, self.key, self.problem = str(path), key, problem
        super().__init__(f"{path}: {key}: {problem}" if key else f"{path}: {problem}")


class _Table:
    """A TOML table being read: every key read is marked, so leftovers are reported as unknown keys."""

    def __init__(self, path: str, prefix: str, data: Any):
        self.path, self.prefix = path, prefix
        if not isinstance(data, dict):
            raise ConfigError(path, prefix, f"expected a table, got {_show(data)}")
        self.data = data
        self.seen: set[str] = set()

    def key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def get(
        self,
        name: str,
        kind: type | tuple[type, ...],
        default: Any = ...,
        check: Callable | None = None,
        expect: str = "",
    ) -> Any:
        self.seen.add(name)
        if name not in self.data:
            if default is ...:
                raise ConfigError(self.path, self.key(name), "is required but missing")
            return default
        value = self.data[name]
        ok = isinstance(value, kind) and not (isinstance(value, bool) and bool not in _as_tuple(kind))
        if not ok or (check is not None and not check(value)):
            raise ConfigError(
                self.path, self.key(name), f"expected {expect or _kind_name(kind)}, got {_show(value)}"
            )
        return value

    def table(self, name: str, default_empty: bool = True) -> _Table:
        self.seen.add(name)
        if name not in self.data and default_empty:
            return _Table(self.path, self.key(name), {})
        return _Table(self.path, self.key(name), self.data.get(name))

    def finish(self) -> None:
        for extra in self.data.keys() - self.seen:
            near = difflib.get_close_matches(extra, sorted(self.seen), n=1, cutoff=0.5)
            hint = (
                f' (did you mean "{near[0]}"?)' if near else f" (known keys: {', '.join(sorted(self.seen))})"
            )
            raise ConfigError(self.path, self.key(extra), f"unknown key{hint}")


def _as_tuple(kind: type | tuple[type, ...]) -> tuple[type, ...]:
    return kind if isinstance(kind, tuple) else (kind,)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "true or false", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in _as_tuple(kind))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
