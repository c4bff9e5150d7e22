"""The suite is hermetic: the user's colours, widths and lookinside or OpenAI settings change nothing it sees,
and nothing is written to the user's data directory (conftest.py's `hermetic_environment`)."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

from .conftest import USERS_ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
ODD = {"NO_COLOR": "1", "FORCE_COLOR": "1", "COLUMNS": "33", "LINES": "5", "TERM": "dumb",
       "LOOKINSIDE_MODEL": "nonexistent", "LOOKINSIDE_ENDPOINT": "http://127.0.0.1:9/v1", "LOOKINSIDE_TIMEOUT": "x",
       "OPENAI_API_KEY": "sk-users-own", "OPENAI_BASE_URL": "http://127.0.0.1:9/v1"}


def test_the_users_environment_is_cleared_and_the_data_directory_is_the_runs():
    left = [name for name in os.environ if any(name == p or (p.endswith("_") and name.startswith(p))
                                               for p in USERS_ENVIRONMENT)]
    assert set(left) == {"LOOKINSIDE_DATA_DIR", "LOOKINSIDE_NO_SERVER"}, left  # both set by the suite itself
    assert Path(os.environ["LOOKINSIDE_DATA_DIR"]).is_relative_to(tempfile.gettempdir())


def test_odd_user_settings_change_no_result_and_the_users_data_directory_stays_empty(tmp_path):
    users = tmp_path / "users-data"
    home = tmp_path / "home"
    env = {**os.environ, **ODD, "LOOKINSIDE_DATA_DIR": str(users), "HOME": str(home),
           "PYTHONPATH": str(ROOT / "src")}
    tests = ["tests/test_chat.py::test_probs_colours_each_token_by_its_probability",
             "tests/test_chat.py::test_save_load_round_trip_through_the_repl",
             "tests/test_hermetic.py::test_the_users_environment_is_cleared_and_the_data_directory_is_the_runs"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=600, check=False)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "3 passed" in out.stdout
    assert not users.exists() and not (home / ".local" / "share" / "lookinside").exists()
