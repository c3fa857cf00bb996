"""The `deploybot` command: serve | sandbox | audit | report | check-config. Errors are one clear line and a non-zero exit."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from bot.config.hosting import hosting_report
from bot.config.load import load_settings
from bot.config.report import access_report, evidence_report, flags_report, pipeline_report
from bot.config.tables import ConfigError
from bot.usage import UsageError, db_default

log = logging.getLogger("deploybot")


LAYOUT = """\
where things are (README: Architecture):
  handlers/app.py, handlers/listeners/   Slack in: signatures, replays, slash commands, buttons
  handlers/ui/, handlers/errors.py       every word the bot posts
  bot/domain/                            pure: records, events, state machine, grammar, analysis, windows
  bot/app/                               use cases: intake, access, gate, scheduling, runner, plans
  bot/adapters/                          the outside world: store (SQLite), ECS+ALB, CloudWatch, HTTP
  bot/config/                            the TOML config and its errors
  bot/wiring.py                          builds and runs every piece (deploybot serve)
  bot/sandbox/                           the local world (deploybot sandbox)
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # raise, never exit from inside the parser
        raise UsageError(f"{self.prog}: {message}")


def _instant(text: str):
    """An ISO 8601 instant for --clock-start; a time without an offset is UTC."""
    from datetime import UTC, datetime

    try:
        at = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date and time like 2026-12-04T12:00Z") from None
    return at if at.tzinfo else at.replace(tzinfo=UTC)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="deploybot",
        description="Slack ChatOps deployment bot.",
        epilog=LAYOUT,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)

    serve = sub.add_parser("serve", help="run the bot (HTTP on --port, or --socket-mode)")
    serve.add_argument("--config", help="config file (default $DEPLOYBOT_CONFIG or config/deploybot.toml)")
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite database path or postgresql:// URL (default $DEPLOYBOT_DB, else $DATABASE_URL "
        "when it is a postgresql:// URL, else deploybot.db)",
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
    serve.add_argument(
        "--replica",
        default=os.environ.get("DEPLOYBOT_REPLICA") or None,
        metavar="NAME",
        help="one of several bots sharing the store: a name of its own, or 'auto' (host and pid); "
        "runs are leased and fenced (default $DEPLOYBOT_REPLICA; none: the only bot)",
    )
    serve.add_argument(
        "--health-port",
        type=int,
        default=int(os.environ["DEPLOYBOT_HEALTH_PORT"]) if os.environ.get("DEPLOYBOT_HEALTH_PORT") else None,
        help="Socket Mode: serve /healthz, /readyz and /metrics on this port (default $DEPLOYBOT_HEALTH_PORT; "
        "HTTP mode serves them on --port)",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=os.environ.get("DEPLOYBOT_LOG_FORMAT", "text"),
        help="log lines as text, or one JSON object a line with the deployment, service and environment "
        "(default $DEPLOYBOT_LOG_FORMAT or text)",
    )

    sandbox = sub.add_parser(
        "sandbox", help="run the bot in a local world: no Slack workspace, no AWS account"
    )
    sandbox.add_argument("--config", help="config file (default config/deploybot.toml)")
    sandbox.add_argument(
        "--db", default=None, help="keep the database at PATH (default: a fresh temporary one)"
    )
    sandbox.add_argument(
        "--store",
        choices=("sqlite", "postgres"),
        default="sqlite",
        help="the bot's store: sqlite (default), or postgres: a throwaway PostgreSQL server the sandbox "
        "starts (initdb + pg_ctl; Debian package `postgresql`) and removes at exit; --db postgresql://URL "
        "uses that server instead",
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
        "--replicas",
        type=int,
        default=1,
        metavar="N",
        help="run N bots on the one store, requests spread over them (default 1)",
    )
    sandbox.add_argument(
        "--headless",
        action="store_true",
        help="no console: print one JSON 'ready' line, run until SIGTERM/SIGINT",
    )

    audit = sub.add_parser("audit", help="export the audit trail (every event, with who and when)")
    audit.add_argument(
        "--db",
        default=None,
        help="SQLite database path or postgresql:// URL (default $DEPLOYBOT_DB, else $DATABASE_URL "
        "when it is a postgresql:// URL, else deploybot.db)",
    )
    audit.add_argument("--service", help="only this service's deployments (and its locks)")
    audit.add_argument(
        "--since", help="only events at or after this date/time (ISO 8601, UTC), e.g. 2026-11-01"
    )
    audit.add_argument(
        "--format", choices=("json", "csv"), default="json", help="output format (default json)"
    )

    report = sub.add_parser(
        "report", help="the delivery report: frequency, change failures, restore, lead time"
    )
    report.add_argument(
        "--db", default=None, help="SQLite database path (default $DEPLOYBOT_DB or deploybot.db)"
    )
    report.add_argument("--service", help="only this service")
    report.add_argument("--env", help="only this environment")
    report.add_argument("--since", help="only deployments that ended at or after this date (ISO 8601, UTC)")
    report.add_argument("--format", choices=("text", "json", "csv"), default="text", help="default text")
    report.add_argument("--chart", metavar="PATH.png", help="also draw deployments per week to a PNG")

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
            hosting = hosting_report(os.environ)
            report = [*access_report(s), *flags_report(s), *pipeline_report(s), *hosting]
            for line in [*report, *evidence_report(s, os.environ)]:
                print(line)
            return 0
        if args.cmd == "audit":
            return export_audit(args)
        if args.cmd == "report":
            from bot import wiring

            return wiring.report(args)
        if args.cmd == "serve":
            from bot import wiring

            return asyncio.run(wiring.serve(args))
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


def export_audit(args: argparse.Namespace) -> int:
    import csv
    from datetime import datetime

    from bot.adapters.store.audit import audit_rows
    from bot.adapters.store.sqlite import Store
    from bot.adapters.store.urls import is_postgres_url

    path = args.db or db_default()
    if not is_postgres_url(path) and not Path(path).exists():
        raise UsageError(f"deploybot audit: no database at {path} (give --db PATH or set DEPLOYBOT_DB)")
    since = None
    if args.since:
        try:
            since = datetime.fromisoformat(args.since).isoformat()
        except ValueError:
            raise UsageError(
                f"deploybot audit: --since {args.since!r} is not a date like 2026-11-01 or 2026-11-01T09:00"
            ) from None
    try:
        store = Store(path)
    except ConnectionError as exc:  # PostgreSQL unreachable (the URL's password redacted)
        raise UsageError(f"deploybot audit: {exc}") from None
    try:
        rows = audit_rows(store, since, args.service)
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


if __name__ == "__main__":
    sys.exit(main())
