"""The `deploybot` command: serve | sandbox | check-config. Errors are one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

from bot.settings import ConfigError, Settings, load_settings

log = logging.getLogger("deploybot")


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise, never exit from inside the parser
        raise UsageError(f"{self.prog}: {message}")


def _db_default() -> str:
    return os.environ.get("DEPLOYBOT_DB", "deploybot.db")


def _instant(text: str):
    """An ISO 8601 instant for --clock-start; a time without an offset is UTC."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date and time like 2026-12-04T12:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="deploybot", description="Slack ChatOps deployment bot.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the bot (HTTP on --port, or --socket-mode)")
    serve.add_argument("--config", help="config file (default $DEPLOYBOT_CONFIG or config/deploybot.toml)")
    serve.add_argument(
        "--db", default=None, help="SQLite database path (default $DEPLOYBOT_DB or deploybot.db)"
    )
    serve.add_argument("--host", default="0.0.0.0", help="HTTP bind address (default 0.0.0.0)")
    serve.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get("PORT", "3000")),
        help="HTTP port (default $PORT or 3000; 0 picks a free one)",
    )
    serve.add_argument(
        "--socket-mode", action="store_true", help="connect over Socket Mode (SLACK_APP_TOKEN)"
    )

    sandbox = sub.add_parser(
        "sandbox", help="run the bot in a local world: no Slack workspace, no AWS account"
    )
    sandbox.add_argument("--config", help="config file (default config/deploybot.toml)")
    sandbox.add_argument(
        "--db", default=None, help="keep the database at PATH (default: a fresh temporary one)"
    )
    sandbox.add_argument("--speed", type=float, default=10.0, help="how much faster time runs (default 10)")
    sandbox.add_argument(
        "--clock-start",
        type=_instant,
        default=None,
        metavar="WHEN",
        help="the sandbox clock starts at this instant, e.g. 2026-12-04T12:00Z (default: now); "
        "it stands still until the bot is ready",
    )
    sandbox.add_argument(
        "--headless",
        action="store_true",
        help="no console: print one JSON 'ready' line, run until SIGTERM/SIGINT",
    )

    audit = sub.add_parser("audit", help="export the audit trail (every event, with who and when)")
    audit.add_argument(
        "--db", default=None, help="SQLite database path (default $DEPLOYBOT_DB or deploybot.db)"
    )
    audit.add_argument("--service", help="only this service's deployments (and its locks)")
    audit.add_argument(
        "--since", help="only events at or after this date/time (ISO 8601, UTC), e.g. 2026-11-01"
    )
    audit.add_argument(
        "--format", choices=("json", "csv"), default="json", help="output format (default json)"
    )

    check = sub.add_parser("check-config", help="validate a config file; non-zero exit naming what is wrong")
    check.add_argument("--config", help="config file (default $DEPLOYBOT_CONFIG or config/deploybot.toml)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        if args.cmd == "check-config":
            s = load_settings(args.config)
            print(
                f"{s.path}: OK — {len(s.services)} services ({', '.join(s.services)}), "
                f"{len(s.environments)} environments ({', '.join(s.environments)})"
            )
            for line in access_report(s):
                print(line)
            return 0
        if args.cmd == "audit":
            return export_audit(args)
        if args.cmd == "serve":
            return asyncio.run(serve(args))
        if args.cmd == "sandbox":
            from bot.sandbox.run import run_sandbox

            return asyncio.run(run_sandbox(args))
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`deploybot audit | head`): not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return 2


def access_report(s: Settings) -> list[str]:
    """What check-config says about access, per environment: the actions its access table does not list
    (they need the roles of deploy), and warnings for an environment open to anyone or closed to all."""
    lines = []
    for name, environment in s.environments.items():
        policy = environment.policy
        if policy.access is None:
            lines.append(
                f"warning: environments.{name} has no access table: anyone may do anything there "
                f"(add [environments.{name}.access] to restrict it)"
            )
            continue
        implicit = policy.implicit_actions()
        if "deploy" not in policy.access:
            lines.append(
                f"warning: environments.{name}.access lists no deploy roles: nobody may deploy there, nor "
                f"{', '.join(implicit) or 'anything else'} (unlisted actions need deploy's roles)"
            )
        elif implicit:
            roles = " or ".join(policy.access["deploy"]) or "nobody"
            lines.append(
                f"environments.{name}.access: {', '.join(implicit)} not listed: covered by deploy ({roles})"
            )
        else:
            lines.append(f"environments.{name}.access: every action listed")
    return lines


def _exit_with_parent() -> None:
    """A sandbox's bot dies with the sandbox: when the process that started it names itself in
    DEPLOYBOT_PARENT_PID, the kernel sends SIGTERM here if that parent dies, even by SIGKILL (Linux)."""
    parent = os.environ.get("DEPLOYBOT_PARENT_PID", "")
    if not parent.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != int(parent):  # the parent died before the request was made
        os.kill(os.getpid(), signal.SIGTERM)


async def serve(args: argparse.Namespace) -> int:
    from aiohttp import web
    from slack_sdk.web.async_client import AsyncWebClient

    from bot.adapters.aws import Aws
    from bot.adapters.metrics.cloudwatch import CloudWatchMetrics
    from bot.adapters.platforms.ecs import EcsPlatform
    from bot.clock import ScaledClock
    from bot.engine import Engine
    from bot.logs import setup_logging
    from bot.pagerduty import PagerDuty
    from bot.store import AsyncStore, Store
    from handlers.app import build_app, web_app
    from handlers.events import HomeTab
    from handlers.notifier import SlackNotifier, add_retry_handlers

    _exit_with_parent()
    # The store and boto3 each run on a thread of their own; under a burst of requests the event loop holds
    # the GIL and a thread waits out the whole switch interval (5 ms) at each hop. 1 ms keeps hops short.
    sys.setswitchinterval(0.001)
    settings = load_settings(args.config)
    paging = settings.alerts.pagerduty
    pagerduty_key = os.environ.get(paging.routing_key_env, "") if paging.enabled else ""
    setup_logging([*settings.secrets.values(), pagerduty_key], os.environ.get("DEPLOYBOT_LOG_LEVEL", "INFO"))
    if paging.enabled and not pagerduty_key:
        raise UsageError(
            f"deploybot serve: [alerts.pagerduty] is enabled: set {paging.routing_key_env} in the environment"
        )
    _require_secrets(settings, args.socket_mode)
    clock = ScaledClock.from_spec(os.environ.get("DEPLOYBOT_CLOCK", "1"))
    db_path = args.db or _db_default()
    store = AsyncStore(Store(db_path, clock))
    aws = Aws(settings.aws)
    engine = Engine(settings, store, EcsPlatform(aws), CloudWatchMetrics(aws), clock)
    base_url = os.environ.get("SLACK_API_URL", "https://slack.com/api/")
    client = add_retry_handlers(AsyncWebClient(token=settings.secrets.bot_token, base_url=base_url))
    pagerduty = (
        PagerDuty(pagerduty_key, paging.url, timeout_seconds=paging.timeout_seconds)
        if paging.enabled
        else None
    )
    notifier = SlackNotifier(client, store, settings.alerts, clock=clock, pagerduty=pagerduty)
    home = HomeTab(client, store, clock, live=notifier.live)
    notifier.on_change = home.changed
    engine.subscribe(notifier)
    app = build_app(engine, client, settings.secrets.signing_secret, notifier, home)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    runner = None
    socket_handler = None
    if args.socket_mode:
        from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

        socket_handler = AsyncSocketModeHandler(app, settings.secrets.app_token)
        await socket_handler.connect_async()
        _ready({"socket_mode": True, "db": db_path}, clock)
    else:
        http_app = web_app(app, store, settings.secrets.signing_secret, path="/slack/events")

        async def healthz(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True, "active": len(await store.active())})

        http_app.router.add_get("/healthz", healthz)
        runner = web.AppRunner(http_app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, args.host, args.port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # the real port when --port 0
        host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
        _ready({"listening": f"http://{host}:{port}", "db": db_path}, clock)
    log.info(
        "deploybot serving (%s) with config %s, database %s",
        "socket mode" if args.socket_mode else "HTTP",
        settings.path,
        db_path,
    )
    await notifier.start()  # alert timers rebuilt from the store before anything else is said
    engine.start_scheduler()
    await engine.resume_in_flight()
    await stop.wait()
    log.info("shutting down: in-flight deployments stay recorded and resume at the next start")
    if runner is not None:
        await runner.cleanup()
    if socket_handler is not None:
        await socket_handler.close_async()
    await engine.shutdown()
    await notifier.drain()
    await home.close()
    if pagerduty is not None:
        await pagerduty.close()
    store.close()
    return 0


def export_audit(args: argparse.Namespace) -> int:
    """Every event, joined with its deployment, oldest first; an emergency deploy's events are flagged."""
    import csv
    from datetime import datetime

    from bot.store import Store

    path = args.db or _db_default()
    if not Path(path).exists():
        raise UsageError(f"deploybot audit: no database at {path} (give --db PATH or set DEPLOYBOT_DB)")
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since).isoformat()
        except ValueError:
            raise UsageError(
                f"deploybot audit: --since {args.since!r} is not a date like 2026-11-01 or 2026-11-01T09:00"
            ) from None
    store = Store(path)
    try:
        deployments = {}
        rows = []
        for e in store.events(since=since, service=args.service):
            d = deployments.get(e.deployment_id)
            if d is None and e.deployment_id is not None:
                d = deployments[e.deployment_id] = store.find(e.deployment_id)
            rows.append(
                {
                    "event_id": e.id,
                    "at": e.at,
                    "deployment_id": e.deployment_id,
                    "service": d.service if d else e.details.get("service"),
                    "env": d.env if d else e.details.get("env"),
                    "version": d.version if d else None,
                    "actor": e.actor,
                    "action": e.action,
                    "from_state": e.from_state,
                    "to_state": e.to_state,
                    "emergency": bool(d and d.context.get("emergency")) or e.action == "emergency",
                    "details": e.details,
                }
            )
    finally:
        store.close()
    if args.format == "json":
        json.dump(rows, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]) if rows else ["event_id"])
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "details": json.dumps(row["details"], sort_keys=True, default=str)})
    return 0


def _require_secrets(settings: Settings, socket_mode: bool) -> None:
    missing = [
        name
        for name, value in (
            ("SLACK_BOT_TOKEN", settings.secrets.bot_token),
            ("SLACK_SIGNING_SECRET", settings.secrets.signing_secret),
            ("SLACK_APP_TOKEN", settings.secrets.app_token if socket_mode else "x"),
        )
        if not value
    ]
    if missing:
        raise UsageError(
            f"deploybot serve: set {', '.join(missing)} in the environment "
            f"(see README: connecting a real Slack workspace)"
        )


def _ready(info: dict, clock=None) -> None:
    """The one line a parent process waits for. A clock held at its start (the sandbox pins it so the
    boot eats no virtual time) begins now, and the line tells the parent from which wall instant."""
    from bot.clock import ScaledClock

    if isinstance(clock, ScaledClock):
        if clock.held:
            clock.begin()
        info = {**info, "clock": clock.spec()}
    print(json.dumps({"ready": True, **info}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
