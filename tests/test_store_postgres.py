"""The store on PostgreSQL as a user meets it: the sandbox's `store="postgres"` runs a deploy end to end
on a throwaway server; a URL's password never shows in what the bot says; an unreachable server is one
clear error; the throwaway server names the Debian package when PostgreSQL is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.adapters.store import pg_server, urls
from bot.adapters.store.sqlite import Store
from bot.sandbox.client import SandboxClient
from bot.sandbox.run import Sandbox
from tests.conftest import CONFIG, bot_log, service_image, top_level, wait_terminal


def test_a_url_s_password_is_redacted_and_a_path_is_left_alone():
    url = "postgresql://deploybot:s3cr%40t@db.internal:5432/deploybot?sslmode=require"
    assert urls.redact(url) == "postgresql://deploybot:***@db.internal:5432/deploybot?sslmode=require"
    assert urls.password(url) == "s3cr@t" and urls.secrets(url) == ["s3cr%40t", "s3cr@t"]
    assert urls.redact("postgres://u@h/d") == "postgres://u@h/d" and urls.password("postgres://u@h/d") is None
    assert urls.redact("/var/lib/deploybot.db") == "/var/lib/deploybot.db"
    assert urls.scrub("failed for s3cr@t", url) == "failed for ***"


def test_an_unreachable_server_is_one_error_without_the_password():
    with pytest.raises(ConnectionError) as caught:
        Store("postgresql://deploybot:hunter2@127.0.0.1:1/deploybot")  # port 1: nothing listens
    assert "hunter2" not in str(caught.value) and "deploybot:***@127.0.0.1:1" in str(caught.value)


@pytest.mark.parametrize(
    ("argv", "env"),
    [
        (["serve", "--port", "0", "--db", "postgresql://deploybot:hunter2@127.0.0.1:1/x"], {}),
        (["audit"], {"DATABASE_URL": "postgres://deploybot:hunter2@127.0.0.1:1/x"}),  # as Heroku sets it
    ],
)
def test_the_cli_says_an_unreachable_store_in_one_line_without_its_password(argv, env):
    clean = {k: v for k, v in os.environ.items() if k not in ("DEPLOYBOT_DB", "DATABASE_URL")}
    done = subprocess.run(
        [sys.executable, "-m", "bot", *argv],
        env={**clean, **env, "SLACK_BOT_TOKEN": "xoxb-test", "SLACK_SIGNING_SECRET": "s"},
        capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    said = done.stderr.strip()
    assert "\n" not in said and "hunter2" not in said and "deploybot:***@127.0.0.1:1/x" in said, said


def test_missing_postgresql_binaries_name_the_debian_package(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(pg_server.shutil, "which", lambda name: None)
    monkeypatch.setattr(pg_server.glob, "glob", lambda pattern: [str(tmp_path / "nothing" / "bin")])
    with pytest.raises(pg_server.PgServerError, match="Debian package `postgresql`"):
        pg_server.bindir()


async def test_a_deploy_runs_end_to_end_on_a_throwaway_postgresql(tmp_path, aws_env):
    async with Sandbox(config=CONFIG, speed=60, workdir=tmp_path, store="postgres") as sb:
        info = sb.info()
        assert info["store"] == "postgres" and info["db"].startswith("postgresql://")
        async with SandboxClient(sb.slack_url) as client:
            r = await client.slash("alice", "/deploy", "web v2 to staging")
            assert r["status"] == 200 and "#1 " in r["body"]["text"], r
            final = await wait_terminal(client, 1)
            assert "succeeded" in final["text"]
            assert len([m for m in top_level(await client.messages("deploys")) if "#1 " in m["text"]]) == 1
        assert service_image(sb, "staging", "web-blue")[1] == "web:v2"
        store = Store(sb.db)  # the bot's records are in PostgreSQL, and only there
        try:
            events = store.events(1)
            moves = [(e.from_state, e.to_state) for e in events if e.from_state != e.to_state]
            assert moves == [(None, "requested"), ("requested", "running"), ("running", "succeeded")]
            assert store.get(1).state.value == "succeeded" and store.lock_info("web", "staging") is None
            assert "m001_initial" in store.applied_migrations()
            assert [
                json.loads(json.dumps(e.details)).get("step") for e in events if e.action == "step_started"
            ]
        finally:
            store.close()
        assert not (tmp_path / "deploybot.db").exists()
        assert "Traceback" not in bot_log(sb)
    assert sb.pg_server is not None and not sb.pg_server.dir.exists()  # the server and its folder are gone
