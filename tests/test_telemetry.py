"""The bot's own health: /metrics read with prometheus-client's text parser after deployments on the fakes
(engine over a real store file, in-memory Platform and Metrics) matches what the audit trail says
happened; /readyz follows the start; Slack calls and 429s are counted on a real slack_sdk client; JSON log
lines carry the deployment's context; check-config's Heroku warning; the Dockerfile's shape."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client.parser import text_string_to_metric_families
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bot.adapters.health import Readiness, mount_health, serve_health
from bot.adapters.metrics.memory import MemoryMetrics
from bot.adapters.platforms.memory import MemoryPlatform
from bot.adapters.store.aio import AsyncStore
from bot.adapters.store.sqlite import Store
from bot.adapters.telemetry import Telemetry
from bot.app.engine import Engine
from bot.config.hosting import hosting_report
from bot.config.load import parse_settings
from bot.domain.analysis import GroupMetrics
from bot.domain.model import Deployment
from bot.logs import RedactSecrets, bind_deployment, setup_logging
from handlers.slack_outbox import ChannelOutbox, add_retry_handlers
from handlers.slack_telemetry import count_slack_calls
from tests.unit.app.test_engine_on_fakes import CONFIG, HeldTimer, InstantClock, deploy, until_done

ROOT = Path(__file__).parent.parent


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed by prometheus-client: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(figures: dict, name: str, **labels: str) -> float:
    return sum(
        v
        for (n, ls), v in figures.items()
        if n == name and all(dict(ls).get(k) == x for k, x in labels.items())
    )


async def scrape(app: web.Application, path: str) -> tuple[int, str]:
    async with (
        TestServer(app, host="127.0.0.1", port=0) as server,
        aiohttp.ClientSession() as s,
        s.get(server.make_url(path)) as resp,
    ):
        return resp.status, await resp.text()


async def test_metrics_parse_and_count_what_the_audit_trail_shows(tmp_path):
    settings = parse_settings(CONFIG)
    telemetry = Telemetry()
    store = telemetry.observe_store(AsyncStore(Store(tmp_path / "deploybot.db")))
    platform, metrics = MemoryPlatform(rollout_polls=2), MemoryMetrics()
    platform.add_service(settings.target("web", "staging"), "web:v1")
    engine = Engine(settings, store, platform, metrics, InstantClock(), timer=HeldTimer())
    readiness = Readiness()
    app = web.Application()
    mount_health(app, store, telemetry, readiness)
    try:
        assert (await scrape(app, "/readyz"))[0] == 503
        ok = await engine.request(deploy("web v2 to staging"), "alice", roles={"engineers"})
        assert isinstance(ok, Deployment)
        assert (await until_done(engine, ok.id)).state == "succeeded"
        metrics.set("green", GroupMetrics(requests=100, errors=40, latency_ms=80))  # v3 fails its analysis
        metrics.set("blue", GroupMetrics(requests=100, errors=40, latency_ms=80))
        bad = await engine.request(deploy("web v3 to staging"), "alice", roles={"engineers"})
        assert isinstance(bad, Deployment)
        assert (await until_done(engine, bad.id)).state == "rolled_back"
        readiness.set(True, "serving")
        assert (await scrape(app, "/readyz"))[0] == 200
        status, text = await scrape(app, "/metrics")
        assert status == 200
        figures = samples(text)

        audit = [e for d in (ok, bad) for e in await store.events(d.id)]
        measured = [e.details["verdict"] for e in audit if e.action == "measurement"]
        assert "fail" in measured and "pass" in measured
        for verdict in set(measured):
            assert total(figures, "deploybot_analysis_measurements_total", verdict=verdict) == measured.count(
                verdict
            )
        started = [e.details["step"] for e in audit if e.action == "step_started"]
        rollback = [e.details["step"] for e in audit if e.action == "rollback_step_started"]
        assert total(figures, "deploybot_steps_started_total") == len(started) + len(rollback)
        for kind in set(started):
            assert total(figures, "deploybot_steps_started_total", step=kind) == started.count(kind)
            assert total(figures, "deploybot_step_duration_seconds_count", step=kind) == started.count(kind)
        assert (
            total(figures, "deploybot_deployments_finished_total", strategy="canary", outcome="succeeded")
            == 1
        )
        assert total(figures, "deploybot_deployments_finished_total", outcome="rolled_back") == 1
        assert total(figures, "deploybot_deployments_finished_total") == 2
        assert total(figures, "deploybot_deployments_active") == 0
        assert total(figures, "deploybot_leases_held") == 0
        # no notifier runs here: every outbox event these two deployments wrote is undelivered
        pending = len(await store.outbox_after("slack", 1000))
        assert pending > 0 and total(figures, "deploybot_outbox_lag_events") == pending
    finally:
        await engine.shutdown()
        store.close()


async def test_slack_calls_and_429s_are_counted_and_the_retry_still_happens():
    answers = [
        web.json_response({"ok": False, "error": "ratelimited"}, status=429, headers={"Retry-After": "0"})
    ]

    async def post_message(_request: web.Request) -> web.Response:
        return answers.pop(0) if answers else web.json_response({"ok": True, "ts": "1.1", "channel": "C1"})

    async def auth_test(_request: web.Request) -> web.Response:
        return web.json_response({"ok": False, "error": "invalid_auth"})

    slack = web.Application()
    slack.router.add_post("/api/chat.postMessage", post_message)
    slack.router.add_post("/api/auth.test", auth_test)
    telemetry = Telemetry()
    async with TestServer(slack, host="127.0.0.1", port=0) as server:
        client = add_retry_handlers(AsyncWebClient(token="xoxb-test", base_url=str(server.make_url("/api/"))))
        count_slack_calls(client, telemetry)
        assert (await client.chat_postMessage(channel="C1", text="hi"))["ok"]
        # a post sent "once" (rate-limit retries only) through a channel's outbox is counted too
        await ChannelOutbox(client, "C1", post_interval=0).post_message(once=True, text="again")
        try:
            await client.auth_test()
        except SlackApiError:
            pass
    from prometheus_client import generate_latest

    figures = samples(generate_latest(telemetry.registry).decode())
    assert total(figures, "deploybot_slack_calls_total", method="chat.postMessage", status="429") == 1
    assert total(figures, "deploybot_slack_calls_total", method="chat.postMessage", status="200") == 2
    assert total(figures, "deploybot_slack_rate_limited_total", method="chat.postMessage") == 1
    assert total(figures, "deploybot_slack_calls_total", method="auth.test") == 1


def test_json_log_lines_carry_the_deployment_and_mask_secrets():
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging(["xoxb-very-secret"], "INFO", "json")
    out = io.StringIO()
    handler = root.handlers[0]
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(out)
    try:

        async def a_deployment_task() -> None:
            bind_deployment(42, "web", "production")
            logging.getLogger("bot.app.runner").warning("step %s failed with token %s", 3, "xoxb-very-secret")

        asyncio.run(a_deployment_task())
        logging.getLogger("deploybot").info("outside any deployment")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["deployment_id"] == 42 and first["service"] == "web" and first["environment"] == "production"
    assert first["level"] == "WARNING" and first["logger"] == "bot.app.runner"
    assert first["message"] == "step 3 failed with token [redacted]"
    assert "deployment_id" not in second and second["message"] == "outside any deployment"
    assert any(isinstance(f, RedactSecrets) for f in handler.filters)


def test_check_config_warns_of_sqlite_on_a_heroku_dyno():
    assert hosting_report({"DYNO": "web.1"})[0].startswith("warning: running on Heroku (DYNO=web.1)")
    assert hosting_report({"DYNO": "web.1", "DATABASE_URL": "postgres://u@h/db"}) == []
    assert hosting_report({}) == []


def test_the_dockerfile_runs_deploybot_serve_as_a_user_with_a_healthcheck():
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")  # continuation lines joined
    lines = [line.strip() for line in text.splitlines()]
    instructions = [line.split(None, 1) for line in lines if line and not line.startswith("#")]
    last = {k.upper(): v for k, v in instructions}  # the one that counts
    assert instructions[0][0].upper() == "FROM" and instructions[0][1].startswith("python:3.11-slim")
    assert last["USER"] not in ("root", "0") and not last["USER"].startswith("0:")
    check = last["HEALTHCHECK"]
    assert "/healthz" in check and "curl" not in check and "python" in check
    assert json.loads(last["CMD"])[:2] == ["deploybot", "serve"]
    assert ".venv" in (ROOT / ".dockerignore").read_text()


async def test_socket_mode_serves_health_alone_on_its_port(tmp_path):
    store = AsyncStore(Store(tmp_path / "deploybot.db"))
    readiness = Readiness()
    runner, port = await serve_health("127.0.0.1", 0, store, Telemetry(), readiness)
    try:
        async with aiohttp.ClientSession() as s:
            base = f"http://127.0.0.1:{port}"
            async with s.get(base + "/healthz") as health, s.get(base + "/readyz") as ready:
                assert health.status == 200 and (await health.json()) == {"ok": True, "active": 0}
                assert ready.status == 503 and (await ready.json())["why"] == "starting"
            readiness.set(True, "serving")
            async with s.get(base + "/readyz") as ready, s.get(base + "/metrics") as metrics:
                assert ready.status == 200
                assert "deploybot_deployments_active" in await metrics.text()
    finally:
        await runner.cleanup()
        store.close()
