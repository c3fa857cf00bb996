"""The unit tests stand alone: importing every one of them (and so everything they import) loads no
moto, no boto3 and no Slack client, and opening a connection inside one fails."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parent
ROOT = UNIT.parents[1]
HEAVY = ("moto", "boto3", "botocore", "slack_bolt", "slack_sdk")


def test_importing_every_unit_test_loads_no_moto_boto3_or_slack():
    modules = sorted(
        ".".join(p.relative_to(ROOT).with_suffix("").parts)
        for p in UNIT.rglob("test_*.py")
        if p.name != Path(__file__).name
    )
    assert len(modules) >= 4
    script = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in modules)
    script += f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))\n"
    out = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_a_connection_from_a_unit_test_is_refused():
    with pytest.raises(RuntimeError, match="network"):
        socket.create_connection(("127.0.0.1", 9))
