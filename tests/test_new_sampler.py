"""The new-sampler recipe (docs/architecture.md), tried for real: a copy of lookinside with one more sampler
in core/sampling_params.py and nothing else. It works through `llm serve`, and a server without it (this
checkout's) refuses it in one line, read from what the server says it takes (`Capabilities.samplers`)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .test_serve import start_server, stop_server

SRC = Path(__file__).resolve().parents[1] / "src"
PROMPT = "The capital of France is"


def _with_typical_p(tmp_path: Path) -> Path:
    """A copy of the package whose sampling_params.py has typical-p: its field (naming its processor) and its
    SamplingParams entry."""
    copy = tmp_path / "src"
    shutil.copytree(SRC / "lookinside", copy / "lookinside", ignore=shutil.ignore_patterns("__pycache__"))
    path = copy / "lookinside" / "core" / "sampling_params.py"
    text = path.read_text()
    edits = [
        ('                  "> 0 (1 turns it off)", lambda v: v > 0, off=1.0, sampling_only=False),\n)',
         '                  "> 0 (1 turns it off)", lambda v: v > 0, off=1.0, sampling_only=False),\n'
         '    SamplingField("typical_p", float, 1.0, "--typical-p", "Keep the locally typical tokens (1: off).",\n'
         '                  "in (0, 1] (1 turns it off)", lambda v: 0 < v <= 1, off=1.0, processor="TypicalLogitsWarper"),\n)'),
        ("    repetition_penalty: float = 1.0\n\n", "    repetition_penalty: float = 1.0\n    typical_p: float = 1.0\n\n"),
    ]
    for old, new in edits:
        assert text.count(old) == 1, f"the recipe's anchor moved: {old!r}"
        text = text.replace(old, new)
    path.write_text(text)
    return copy


def _llm(src: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(src), "HF_HUB_OFFLINE": "1", "HOME": str(src.parent)}
    return subprocess.run([sys.executable, "-m", "lookinside", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


@pytest.mark.slow
def test_a_sampler_added_by_the_recipe_works_through_llm_serve_and_one_without_it_refuses_in_one_line(
        tmp_path, monkeypatch):
    copy = _with_typical_p(tmp_path)
    asked = ("generate", PROMPT, "--typical-p", "0.5", "--temperature", "1", "--seed", "3", "-n", "4", "--json")
    monkeypatch.setenv("PYTHONPATH", str(copy))
    process, url = start_server(tmp_path / "new", "--device", "cpu")
    try:
        through = _llm(copy, *asked, "--endpoint", url)
        assert through.returncode == 0, through.stderr
    finally:
        stop_server(process)
    monkeypatch.setenv("PYTHONPATH", str(SRC))
    process, url = start_server(tmp_path / "old", "--device", "cpu")
    try:
        refused = _llm(copy, *asked, "--endpoint", url)
        plain = _llm(copy, *asked[:2], "-n", "2", "--endpoint", url)
    finally:
        stop_server(process)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert "--typical-p need a server that takes it (this one is lookinside)" in refused.stderr
    assert plain.returncode == 0, plain.stderr  # without the new sampler the old server answers as before
