"""The store's two backends for its contract tests: `store_url` is a fresh store location — a SQLite file,
or a schema of its own on the session's throwaway PostgreSQL server (bot.adapters.store.pg_server) — that
a test may open, close and open again. The server starts once per test session (per xdist worker), only
when a test asks for it, and is reached through its unix socket. DEPLOYBOT_TEST_POSTGRES_URL: use that
server instead (a schema per test is made in it)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from urllib.parse import quote

import pytest

BACKENDS = ["sqlite", "postgres"]
_schemas = itertools.count(1)


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    """A PostgreSQL server for this session: the throwaway one, or DEPLOYBOT_TEST_POSTGRES_URL's."""
    given = os.environ.get("DEPLOYBOT_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    from bot.adapters.store.pg_server import PgServer

    server = PgServer().start()
    try:
        yield f"postgresql://postgres@/postgres?host={quote(str(server.dir))}&port={server.port}"
    finally:
        server.stop()


def fresh_schema(pg_url: str) -> str:
    """A new empty schema on the server; the URL whose connections use it (search_path)."""
    import psycopg

    name = f"t{os.getpid()}_{next(_schemas)}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{name}"')
    return f"{pg_url}{'&' if '?' in pg_url else '?'}options={quote(f'-csearch_path={name}')}"


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh store location on each backend: a SQLite file, or a PostgreSQL schema of its own."""
    if request.param == "sqlite":
        return str(tmp_path_factory.mktemp("store") / "deploybot.db")
    return fresh_schema(request.getfixturevalue("pg_url"))
