"""The bot's own HTTP endpoints for whoever runs it: /healthz (the process answers and reads its store),
/readyz (it has finished starting: flags loaded, in-flight deployments resumed, Slack connected in Socket
Mode; 503 until then and again while shutting down) and /metrics (Prometheus text, bot/adapters/telemetry.py).
Mounted on the Slack HTTP app, or served alone on --health-port in Socket Mode."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from bot.adapters.telemetry import CONTENT_TYPE, Telemetry


class Readiness:
    def __init__(self) -> None:
        self.ready = False
        self.why = "starting"

    def set(self, ready: bool, why: str = "") -> None:
        self.ready, self.why = ready, why


def mount_health(app: web.Application, store: Any, telemetry: Telemetry, readiness: Readiness) -> None:
    async def healthz(_request: web.Request) -> web.Response:
        try:
            active = len(await store.active())
        except Exception as exc:  # the store does not answer: not healthy, and say why (no secrets in it)
            return web.json_response({"ok": False, "error": type(exc).__name__}, status=503)
        return web.json_response({"ok": True, "active": active})

    async def readyz(_request: web.Request) -> web.Response:
        status = 200 if readiness.ready else 503
        return web.json_response({"ready": readiness.ready, "why": readiness.why}, status=status)

    async def metrics(_request: web.Request) -> web.Response:
        body = await telemetry.render(store)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)


async def serve_health(
    host: str, port: int, store: Any, telemetry: Telemetry, readiness: Readiness
) -> tuple[web.AppRunner, int]:
    """The endpoints alone on host:port (port 0: a free one); returns the runner and the port."""
    app = web.Application()
    mount_health(app, store, telemetry, readiness)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    return runner, (sockets[0].getsockname()[1] if sockets else port)
