"""Shared fixtures: the built-in tiny model, small random models, the Phi-3 tokenizer if present."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from lookinside.tiny import ASSETS

PHI3_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "phi3-tokenizer"
TINY_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja")


# What the user's shell may set that changes what the suite sees: colours and widths (Rich reads these),
# and every setting of lookinside or of the OpenAI client. LOOKINSIDE_TEST_* are the suite's own inputs
# (tests/test_remote.py's real server, whose key is LOOKINSIDE_API_KEY when one is named).
USERS_ENVIRONMENT = ("NO_COLOR", "FORCE_COLOR", "COLUMNS", "LINES", "TERM", "LOOKINSIDE_", "OPENAI_")
_DATA_DIR: list[str] = []


def hermetic_environment(environ=os.environ) -> None:
    """Clear what the user's environment says (USERS_ENVIRONMENT) and give the run its own data directory.

    Run at configure time, before any test module is imported, so a module that copies
    `os.environ` for its child processes copies this clean one, never the user's data directory.
    """
    keep_key = "LOOKINSIDE_TEST_ENDPOINT" in environ
    for name in list(environ):
        if name.startswith("LOOKINSIDE_TEST_") or (keep_key and name == "LOOKINSIDE_API_KEY"):
            continue
        if any(name == prefix or (prefix.endswith("_") and name.startswith(prefix)) for prefix in USERS_ENVIRONMENT):
            del environ[name]
    if not _DATA_DIR:
        _DATA_DIR.append(tempfile.mkdtemp(prefix="lookinside-test-data-"))
    environ["LOOKINSIDE_DATA_DIR"] = _DATA_DIR[0]  # histories, chats, the measured bandwidth: the run's own


def pytest_configure(config) -> None:
    hermetic_environment()


def pytest_unconfigure(config) -> None:
    for path in _DATA_DIR:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session", autouse=True)
def test_client_on_loopback():
    """starlette's TestClient calls its app `testserver`, a Host `llm serve` refuses (a page on a name rebound to this
    machine sends its own); the suite's clients call it 127.0.0.1, as a local client does."""
    try:
        from starlette import testclient
    except ImportError:
        yield
        return
    original = testclient.TestClient.__init__

    def on_loopback(self, app, base_url: str = "http://127.0.0.1", *args, **kwargs):
        original(self, app, base_url, *args, **kwargs)

    testclient.TestClient.__init__ = on_loopback
    yield
    testclient.TestClient.__init__ = original


@pytest.fixture(scope="session")
def tiny():
    """The built-in tiny model, loaded once on the CPU."""
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    return load(LoadSpec(model="tiny", device="cpu"))


_CLI_MODELS: dict = {}


@pytest.fixture(autouse=True)
def no_server_of_the_users(monkeypatch):
    """A `llm serve` the user left running must not answer the suite's commands; tests of the lookup unset this."""
    monkeypatch.setenv("LOOKINSIDE_NO_SERVER", "1")


@pytest.fixture(autouse=True)
def tiny_loaded_once(monkeypatch):
    """Commands run in-process (CliRunner) load each spec of the built-in tiny model once per session.

    Only the commands' way in (`cli.loading.load_here`) is cached: a second command with the
    same LoadSpec gets the same LM, with torch's thread count set as `load` would set it. Tests that
    call `core.model.loading.load` themselves still load for real.
    """
    from lookinside.cli import loading as way_in
    from lookinside.core.model import loading

    real, real_load = way_in.load_here, loading.load

    def load_here(spec):
        patched = loading.load is not real_load  # a test watching for loads must see every one
        if patched or spec.model != "tiny" or spec.random_weights or spec.max_memory is not None:
            return real(spec)
        if spec not in _CLI_MODELS:
            _CLI_MODELS[spec] = real(spec)
        loading.set_threads(spec.threads)
        return _CLI_MODELS[spec]

    monkeypatch.setattr(way_in, "load_here", load_here)


@pytest.fixture(scope="session")
def phi3_tokenizer_dir() -> Path:
    """../shared/phi3-tokenizer, or skip where this checkout has no shared/ beside it."""
    if not (PHI3_TOKENIZER / "tokenizer.json").exists():
        pytest.skip("../shared/phi3-tokenizer is not here")
    return PHI3_TOKENIZER


def random_model_dir(path: Path, config, tokenizer_dir: Path = ASSETS, files=TINY_TOKENIZER_FILES) -> Path:
    """A local model directory: `config` with random weights, and a copy of a tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(path)
    for name in files:
        if (tokenizer_dir / name).exists():
            shutil.copy(tokenizer_dir / name, path / name)
    return path


def small_config(kind: str, vocab_size: int = 1024):
    """Small configs of three families: Phi-3 with GQA, Phi-3 with MHA, Llama with GQA."""
    from transformers import LlamaConfig, Phi3Config

    common = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                  num_attention_heads=4, max_position_embeddings=256, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if kind == "phi3-gqa":
        return Phi3Config(**common, num_key_value_heads=2)
    if kind == "phi3-mha":
        return Phi3Config(**common, num_key_value_heads=4)
    if kind == "llama":
        return LlamaConfig(**common, num_key_value_heads=2)
    raise ValueError(kind)
