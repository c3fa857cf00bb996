"""The docs stay true: the README's test command is what CI runs, every path the README's architecture
section names exists, and `deploybot --help` shows the layout."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def _section(title: str) -> str:
    start = README.index(f"## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_ci_runs_exactly_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci.startswith("pip install -e '.[dev]'") and "pytest" in ci
    assert f"&& {ci}\n" in README  # the README's command: a fresh venv, then exactly this


def test_every_path_the_architecture_section_names_exists():
    section = _section("Architecture")
    named = set(re.findall(r"`((?:bot|handlers|tests|benchmarks)/[A-Za-z0-9_/.]+)`", section))
    assert len(named) > 20
    missing = sorted(p for p in named if not (ROOT / p.rstrip("/")).exists())
    assert missing == []


def test_the_table_names_where_commands_words_and_aws_calls_live():
    section = _section("Architecture")
    for place in ("handlers/listeners/commands.py", "handlers/ui/", "bot/adapters/platforms/ecs.py"):
        assert f"`{place}`" in section


def test_help_shows_the_layout():
    out = subprocess.run([sys.executable, "-m", "bot", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0
    for part in ("bot/domain/", "bot/app/", "bot/adapters/", "handlers/listeners/", "bot/wiring.py"):
        assert part in out.stdout
        assert (ROOT / part).exists()
