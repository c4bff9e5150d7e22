"""Rules that settings of several layers share, each written once: a prompt is not empty, `--threads` is a whole
number >= 1, `--quantize` is one of its kinds, a run generates at least one token. Plain data and checks (no
torch), read by the requests (core/request.py), the load settings (core/model/spec.py), the chat's settings and
transcripts, the server's routes and the core functions alike."""

from __future__ import annotations

from lookinside.core.errors import BadInput, EmptyPrompt

QUANTIZE = ("int8", "int8-weight", "int8-dynamic", "int4", "8bit", "4bit", "float")  # core/model/quantize.py says each


def check_prompt(prompt: str) -> None:
    """Refuse an empty prompt (callers do this before loading a model, too)."""
    if not prompt.strip():
        raise EmptyPrompt('the prompt is empty: give some text, e.g. "The capital of France is"')


def check_threads(requested: object) -> None:
    """The one rule for --threads (LoadSpec, BenchSettings, here): None, or a whole number >= 1."""
    if requested is not None and (isinstance(requested, bool) or not isinstance(requested, int) or requested < 1):
        raise BadInput(f"--threads must be a whole number >= 1, not {requested!r}")


def check_quantize(kind: str | None) -> None:
    """The one rule for --quantize (LoadSpec, `inspect`'s request): None, or one of QUANTIZE."""
    if kind is not None and kind not in QUANTIZE:
        raise BadInput(f"--quantize must be one of {', '.join(QUANTIZE)}, not {kind!r}")


def new_tokens(value: object, name: str = "max_new_tokens") -> int:
    """The one rule for how many tokens to generate: a whole number, at least 1 (every command, /set, the API)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise BadInput(f"{name} must be a whole number >= 1, not {value!r}")
    return value
