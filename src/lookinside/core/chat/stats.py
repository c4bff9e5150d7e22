"""What a reply cost: tokens, time to first token, decode speed, context used, and the resources it took."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from lookinside.core.records import Generation, Resources, Step


@dataclass(frozen=True)
class ReplyStats:
    """What one reply cost: tokens in and out, time to first token, decode speed, peak memory."""

    prompt_tokens: int | None  # None where the backend does not count them
    generated_tokens: int
    ttft_s: float
    decode_tokens_per_s: float | None
    context_used: int | None
    context_length: int | None
    seed: int | None
    peak_memory_bytes: int | None = None  # CUDA only
    threads: int | None = None  # torch's CPU threads (CPU only)
    quantized: str | None = None  # e.g. "int8 weights 1.8 MiB (from 4.0 MiB)"
    steer: str | None = None  # what /steer adds, while it is on


def reply_stats(steps: Sequence[Step], prompt_tokens: int | None, context_length: int | None, seed: int | None,
                used: Resources | None = None) -> ReplyStats:
    """Stats from a reply's steps, through `Generation`'s timing (step 0 holds the prefill, so it is not decode)."""
    run = Generation(prompt_ids=[], steps=list(steps), seed=seed)
    used = used or Resources()
    return ReplyStats(
        prompt_tokens=prompt_tokens,
        generated_tokens=len(run.steps),
        ttft_s=run.ttft_s or 0.0,
        decode_tokens_per_s=run.decode_tok_s,
        context_used=prompt_tokens + len(run.steps) if prompt_tokens is not None else None,
        context_length=context_length,
        seed=seed,
        peak_memory_bytes=used.peak_memory_bytes,
        threads=used.threads,
        quantized=used.quantized,
    )
