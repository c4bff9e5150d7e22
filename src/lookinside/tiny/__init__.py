"""The built-in tiny model: a small Phi-3 trained by this project (see train.py)."""

from pathlib import Path

ASSETS = Path(__file__).parent / "assets"
