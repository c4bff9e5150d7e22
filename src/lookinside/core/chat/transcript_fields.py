"""A transcript's JSON checked field by field, so a bad file is one line naming the file and the field.

`core/chat/transcripts.read_transcript` parses the file and hands the object here; `checked` returns
the parts of a `Conversation`, or raises BadInput("FILE: FIELD ..."). A transcript written by
`write_transcript` always passes; so does one written before tokens kept their rank and
runners-up, or before they kept the token itself and a reply's steer (version 1). Nothing here imports
torch.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from lookinside.core import errors
from lookinside.core.rules import new_tokens
from lookinside.core.sampling_params import FIELD

ROLES = ("user", "assistant")


def checked(data: Any, path: Path) -> tuple[str | None, list[dict[str, Any]], int, dict[str, Any], str | None]:
    """(system, messages, window, settings object, model) from a transcript's JSON, each field checked."""

    def bad(field: str, why: str) -> errors.BadInput:
        return errors.BadInput(f"{path}: {field} {why}; it is not a transcript lookinside can go on with")

    if not isinstance(data, dict):
        raise errors.BadInput(f"{path} is not a lookinside transcript (a JSON object with \"messages\")")
    model, system = data.get("model"), data.get("system")
    if model is not None and not isinstance(model, str):
        raise bad("model", f"must be a model's name (text), not {model!r}")
    if system is not None and not isinstance(system, str):
        raise bad("system", f"must be text or null, not {_short(system)}")
    messages = data.get("messages")
    if not isinstance(messages, list):
        raise errors.BadInput(f"{path} is not a lookinside transcript (no list of messages)")
    for i, message in enumerate(messages):
        _check_message(message, f"messages[{i}]", bad)
    window = data.get("window", 0)
    if isinstance(window, bool) or not isinstance(window, int) or window < 0:
        raise bad("window", f"must be a whole number >= 0, not {window!r}")
    settings = data.get("settings")
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        raise bad("settings", f"must be an object, not {_short(settings)}")
    _check_settings(settings, bad)
    return system or None, [dict(m) for m in messages], min(window, len(messages)), settings, model


def _check_message(message: Any, where: str, bad: Any) -> None:
    if not isinstance(message, dict):
        raise bad(where, f"must be an object with a role and content, not {_short(message)}")
    if message.get("role") not in ROLES:
        raise bad(f"{where}.role", f"must be \"user\" or \"assistant\", not {_short(message.get('role'))}")
    if not isinstance(message.get("content"), str):
        raise bad(f"{where}.content", f"must be text, not {_short(message.get('content'))}")
    if "cut" in message and not isinstance(message["cut"], bool):
        raise bad(f"{where}.cut", f"must be true or false, not {_short(message['cut'])}")
    if "steer" in message and not isinstance(message["steer"], str):
        raise bad(f"{where}.steer", f"must be text saying how the reply was steered, not {_short(message['steer'])}")
    tokens = message.get("tokens")
    if tokens is None:
        return
    if not isinstance(tokens, list):
        raise bad(f"{where}.tokens", f"must be a list, not {_short(tokens)}")
    for j, token in enumerate(tokens):
        _check_token(token, f"{where}.tokens[{j}]", bad)


def _check_token(token: Any, where: str, bad: Any) -> None:
    """[text, probability], [text, probability, rank, [[runner-up, probability], ...]], or those and the token."""
    if not isinstance(token, list) or len(token) not in (2, 4, 5) or not isinstance(token[0], str):
        raise bad(where, f"must be [text, probability] or [text, probability, rank, runners-up, token], "
                  f"not {_short(token)}")
    if len(token) == 5 and not isinstance(token[4], str):
        raise bad(f"{where}[4]", f"must be the token's text, not {_short(token[4])}")
    if not _probability(token[1], none_ok=True):
        raise bad(f"{where}[1]", f"must be a probability between 0 and 1 (or null), not {token[1]!r}")
    if len(token) == 2:
        return
    rank, alternatives = token[2], token[3]
    if rank is not None and (isinstance(rank, bool) or not isinstance(rank, int) or rank < 1):
        raise bad(f"{where}[2]", f"must be a rank (a whole number >= 1), not {rank!r}")
    if not isinstance(alternatives, list) or not all(
            isinstance(a, list) and len(a) == 2 and isinstance(a[0], str) and _probability(a[1]) for a in alternatives):
        raise bad(f"{where}[3]", f"must be a list of [text, probability], not {_short(alternatives)}")


def _check_settings(settings: dict[str, Any], bad: Any) -> None:
    params = settings.get("params", {})
    if not isinstance(params, dict):
        raise bad("settings.params", f"must be an object, not {_short(params)}")
    for name, value in params.items():
        if name in FIELD:
            try:
                FIELD[name].check(value)
            except errors.BadInput as exc:
                raise bad(f"settings.params.{name}", f"is wrong: {exc}") from None
    try:
        new_tokens(settings.get("max_new_tokens", 1))
    except errors.BadInput:
        raise bad("settings.max_new_tokens", f"must be a whole number >= 1, not {settings['max_new_tokens']!r}") from None
    if "trim" in settings and not isinstance(settings["trim"], bool):
        raise bad("settings.trim", f"must be true or false, not {settings['trim']!r}")


def _probability(value: Any, none_ok: bool = False) -> bool:
    if value is None:
        return none_ok
    return (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            and 0 <= value <= 1)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
