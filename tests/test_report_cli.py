"""`deploybot report`: its formats, its chart, and its errors (one line, exit 2), over a database written
through the store's API at chosen instants (tests/unit/app/test_report.py's History)."""

from __future__ import annotations

import csv
import io
import json
import sys

import pytest

from bot.__main__ import main
from tests.unit.app.test_report import ERRORS, T0, History


@pytest.fixture
def db(tmp_path):
    h = History(str(tmp_path / "deploybot.db"))
    h.deploy("web", "production", "canary", "succeeded", T0, 600)
    h.deploy("web", "production", "canary", "rolled_back", T0 + 1000, 300, reasons=(ERRORS,))
    h.deploy("web", "production", "canary", "succeeded", T0 + 2000, 500)
    h.store.close()
    return str(tmp_path / "deploybot.db")


def run(capsys, *args: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["report", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_cli_prints_json_text_and_csv_and_draws_the_chart(db, capsys, tmp_path):
    code, out, _ = run(capsys, "--db", db, "--format", "json", "--service", "web", "--env", "production")
    report = json.loads(out)
    assert code == 0 and report["deployments"] == 3 and report["change_failure_rate"] == round(1 / 3, 4)
    assert report["restores"][0]["seconds"] == 2500 - 1300
    code, out, _ = run(capsys, "--db", db)
    assert code == 0 and "Change failure rate: 33.3% (1 of 3" in out
    assert "Lead time for changes: unknown" in out and "Time to restore: median 20m" in out
    code, out, _ = run(capsys, "--db", db, "--format", "csv")
    figures = dict(csv.reader(io.StringIO(out)))
    assert code == 0 and figures["deployments"] == "3" and figures["median_lead_time_seconds"] == "unknown"
    chart = tmp_path / "weeks.png"
    code, _, _ = run(capsys, "--db", db, "--chart", str(chart))
    assert code == 0 and chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (["--since", "last tuesday"], "--since 'last tuesday' is not a date like 2026-11-01"),
        (["--service", "wbe"], "no deployment of service 'wbe' in"),
        (["--env", "prod"], "no deployment in environment 'prod'"),
        (["--chart", "weeks.jpg"], "must name a .png file"),
        (["--format", "xml"], "invalid choice: 'xml'"),
    ],
)
def test_bad_arguments_are_one_clear_line_and_exit_2(db, capsys, args, said):
    code, out, err = run(capsys, "--db", db, *args)
    assert code == 2 and said in err and out == "" and len(err.strip().splitlines()) == 1


def test_no_database_and_no_matplotlib_are_clear_too(db, capsys, tmp_path, monkeypatch):
    code, _, err = run(capsys, "--db", str(tmp_path / "nowhere.db"))
    assert code == 2 and "no database at" in err
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    code, _, err = run(capsys, "--db", db, "--chart", str(tmp_path / "w.png"))
    assert code == 2 and "--chart needs matplotlib" in err and not (tmp_path / "w.png").exists()
