"""What two runs of the same JSON record may differ in: the clock readings of generated steps and runs.

Every record's JSON is core/wire.py's `to_wire`; a view that generates (compare, generate) keeps
each step's time, which no two runs share, so tests compare the rest.
"""

from __future__ import annotations

from typing import Any

TIMES = ("seconds", "ttft_s", "decode_tok_s", "total_s")  # Step.seconds, and what Generation works out from them


def untimed(data: Any) -> Any:
    """`data` (JSON values) without the clock readings of its steps and runs."""
    if isinstance(data, dict):
        return {k: untimed(v) for k, v in data.items() if k not in TIMES}
    return [untimed(v) for v in data] if isinstance(data, list) else data
