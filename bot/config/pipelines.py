"""Loading `[pipelines.NAME]`: the ordered environments a version goes through (`/deploy web v2
--pipeline NAME`), the services it is for, and whether a later environment waits for its window. A
pipeline says no more: each environment deploys with its own strategy through its own gate, and the
service's integration tests (`[services.NAME.integration_tests]`, per environment) run after every
environment but the last, where the service has them. Errors name the file, the key and what is expected."""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.config.tables import ConfigError, _show, _Table

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,39}")  # one word of a command: `--pipeline NAME`


@dataclass(frozen=True)
class PipelineSpec:
    """`environments`: in order, at least two, each once; `services`: the services it takes (all when
    the config names none); `windows`: an environment after the first is requested with --window (it
    runs in its next low-traffic window; at once where it has none)."""

    name: str
    environments: tuple[str, ...]
    services: tuple[str, ...]
    windows: bool = False

    def covers(self, service: str) -> bool:
        return service in self.services


def _known(path: str, key: str, word: Any, known: Mapping[str, Any], what: str) -> str:
    if not isinstance(word, str) or not word:
        raise ConfigError(path, key, f"expected the name of {what}, got {_show(word)}")
    if word not in known:
        near = difflib.get_close_matches(word, list(known), n=1, cutoff=0.5)
        hint = f' (did you mean "{near[0]}"?)' if near else f" ({what}s: {', '.join(known)})"
        raise ConfigError(path, key, f"no {what} {word!r}{hint}")
    return word


def parse_pipelines(
    raw: Any, path: str, environments: Mapping[str, Any], services: Mapping[str, Any]
) -> dict[str, PipelineSpec]:
    """Every `[pipelines.NAME]` table (none: no pipelines)."""
    if raw is None:
        return {}
    tables = _Table(path, "pipelines", raw)
    found = {}
    for name in tables.data:
        if not NAME.fullmatch(name):
            raise ConfigError(
                path, tables.key(name), "a pipeline's name is one word: letters, digits, - and _ (at most 40)"
            )
        t = tables.table(name, default_empty=False)
        envs = t.get(
            "environments",
            list,
            ...,
            lambda v: len(v) >= 2,
            'at least two environments, in order, e.g. ["staging", "production"]',
        )
        for i, env in enumerate(envs):
            _known(path, f"{t.key('environments')}[{i}]", env, environments, "environment")
            if env in envs[:i]:
                raise ConfigError(path, f"{t.key('environments')}[{i}]", f"{env!r} is named twice")
        names = t.get("services", list, list(services), bool, "a non-empty list of services")
        for i, service in enumerate(names):
            _known(path, f"{t.key('services')}[{i}]", service, services, "service")
        found[name] = PipelineSpec(
            name=name,
            environments=tuple(envs),
            services=tuple(dict.fromkeys(names)),
            windows=t.get("windows", bool, False),
        )
        t.finish()
    return found
