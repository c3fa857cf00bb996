"""The sandbox's replica pause stops a bot between its transactions on the SQLite file, never inside one
(stopped inside one, it holds the file's write lock and every other bot's write waits: seen as a replica
scenario whose takeover never came)."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from bot.sandbox.replicas import Replicas

# a writer that holds the write lock about half of the time, as a bot busy writing could
WRITER = """
import sqlite3, sys, time
conn = sqlite3.connect(sys.argv[1], timeout=10, isolation_level=None)
print("ready", flush=True)
while True:
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("UPDATE t SET n = n + 1")
    time.sleep(0.002)
    conn.execute("COMMIT")
    time.sleep(0.002)
"""


def test_a_pause_never_leaves_the_write_lock_held(tmp_path: Path):
    db = tmp_path / "deploybot.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (n INTEGER)")
    conn.execute("INSERT INTO t VALUES (0)")
    conn.close()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout is not None and writer.stdout.readline().strip() == "ready"
        replicas = Replicas(SimpleNamespace(db=str(db)), 1, make_bot=lambda *a: None)
        plain = 0  # the check itself sees the lock: a plain SIGSTOP lands inside a transaction half the time
        for _ in range(20):
            os.kill(writer.pid, signal.SIGSTOP)
            plain += replicas._write_lock_held(writer.pid)
            os.kill(writer.pid, signal.SIGCONT)
            time.sleep(0.001)  # the writer's own pace: a stop lands at another point of its loop
        assert plain > 0
        held = 0
        for _ in range(20):
            asyncio.run(replicas._pause(writer.pid))
            held += replicas._write_lock_held(writer.pid)
            os.kill(writer.pid, signal.SIGCONT)
            time.sleep(0.001)
        assert held == 0
    finally:
        os.kill(writer.pid, signal.SIGCONT)
        writer.kill()
        writer.wait()
