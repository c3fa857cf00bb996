"""`deploybot report`: read the store, compute the delivery report (bot.app.report), print it as text, JSON
or CSV, and draw its chart (--chart PATH.png). Bad input is a UsageError (one line, exit 2)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from bot.adapters.store.report_rows import known_envs, known_services, report_records
from bot.adapters.store.sqlite import Store
from bot.app.report import delivery_report, parse_instant
from bot.usage import UsageError, db_default
from handlers.ui import report_text
from handlers.ui.chart_render import ChartsUnavailable, report_chart


def run(args: argparse.Namespace, now: float | None = None) -> int:
    path = args.db or db_default()
    if not Path(path).exists():
        raise UsageError(f"deploybot report: no database at {path} (give --db PATH or set DEPLOYBOT_DB)")
    since = None
    if args.since:
        try:
            since = parse_instant(args.since)
        except ValueError:
            raise UsageError(
                f"deploybot report: --since {args.since!r} is not a date like 2026-11-01 or 2026-11-01T09:00"
            ) from None
    if args.chart and not str(args.chart).lower().endswith(".png"):
        raise UsageError(f"deploybot report: --chart {args.chart!r} must name a .png file")
    store = Store(path)
    try:
        services = known_services(store)
        if args.service is not None and args.service not in services:
            raise UsageError(
                f"deploybot report: no deployment of service {args.service!r} in {path} "
                f"(services: {', '.join(sorted(services)) or 'none yet'})"
            )
        envs = known_envs(store)
        if args.env is not None and args.env not in envs:
            raise UsageError(
                f"deploybot report: no deployment in environment {args.env!r} in {path} "
                f"(environments: {', '.join(sorted(envs)) or 'none yet'})"
            )
        deployments, events = report_records(store, args.service, args.env)
    finally:
        store.close()
    r = delivery_report(
        deployments,
        events,
        now=time.time() if now is None else now,
        since=since,
        service=args.service,
        env=args.env,
    )
    if args.chart:
        try:
            Path(args.chart).write_bytes(report_chart(r))
        except ChartsUnavailable as exc:
            raise UsageError(f"deploybot report: --chart needs matplotlib: {exc}") from None
    if args.format == "json":
        json.dump(r.to_dict(), sys.stdout, indent=1)
        sys.stdout.write("\n")
    elif args.format == "csv":
        sys.stdout.write(report_text.csv_text(r))
    else:
        sys.stdout.write(report_text.text(r))
    return 0
