"""What the sdist and wheel carry besides the code: the licence and every shell completion."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

if sys.version_info < (3, 11):
    pytest.skip("tomllib arrived in Python 3.11", allow_module_level=True)

import tomllib  # noqa: E402


def test_every_completion_file_is_installed_with_the_wheel():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    installed = sorted(Path(f).name for files in project["tool"]["setuptools"]["data-files"].values() for f in files)
    assert installed == sorted(p.name for p in (ROOT / "completions").iterdir())


def test_the_licence_file_matches_the_declared_licence():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == "MIT" and project["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License")
    assert "recursive-include completions *" in (ROOT / "MANIFEST.in").read_text()
