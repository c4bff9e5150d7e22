"""The CLI shell: help and completion stay light, the version, the completion scripts."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from lookinside import __version__
from lookinside.cli.app import app
from lookinside.cli.completions import completion_files

ROOT = Path(__file__).resolve().parents[1]
HEAVY = re.compile(r"\|\s+(torch|transformers|accelerate)$", re.MULTILINE)


def imports_of(*args: str, env: dict[str, str] | None = None) -> str:
    """What `python -X importtime -m lookinside ARGS` imported (its stderr)."""
    run = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "lookinside", *args],
        capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=600,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stderr


def test_help_does_not_import_torch():
    imported = imports_of("--help")
    assert "lookinside.cli.app" in imported
    assert not HEAVY.search(imported), HEAVY.findall(imported)


def test_shell_completion_does_not_import_torch():
    env = {"_LOOKINSIDE_COMPLETE": "complete_bash", "COMP_WORDS": "lookinside next-token --mo", "COMP_CWORD": "2"}
    run = subprocess.run([sys.executable, "-X", "importtime", "-m", "lookinside"], capture_output=True, text=True,
                         env={**os.environ, **env}, timeout=600)
    assert "--model" in run.stdout
    assert not HEAVY.search(run.stderr)


def test_no_arguments_shows_help_and_version_works():
    runner = CliRunner()
    assert "next-token" in runner.invoke(app, []).output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.stdout.strip() == f"lookinside {__version__}"


def test_completion_scripts_are_up_to_date():
    for name, script in completion_files().items():
        shipped = ROOT / "completions" / name
        assert shipped.exists(), f"completions/{name} is missing: run python -m lookinside.cli.completions"
        assert shipped.read_text().strip() == script.strip(), (
            f"completions/{name} is out of date: run python -m lookinside.cli.completions"
        )
