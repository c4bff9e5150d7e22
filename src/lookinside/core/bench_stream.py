"""`llm bench` over any backend's token stream: what a server's user can time from this side of the network.

The bench prompt is streamed `warmup` + `repeat` times (greedy, exactly N tokens where the backend
can ignore end tokens), each step timed as it arrives; then a long prompt the server has not seen
is sent cold and again, one token each, to show what its prefix cache saves. Everything goes
through the backend's primitives (`generate`, `prompt_tokens`), so it runs against vLLM,
llama.cpp, Ollama or `llm serve` alike. Nothing here imports torch.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lookinside.core.bench_report import PrefixCache, RemoteBenchReport
from lookinside.core.records import gather
from lookinside.core.request import DEFAULT_PROMPT, BenchSettings, GenerationSettings
from lookinside.core.sampling import SamplingParams

if TYPE_CHECKING:
    from lookinside.core.backend import Backend

ProgressFn = Callable[[str], None]
GREEDY = SamplingParams(temperature=0.0)
NO_CACHE_SWITCH = ("a server keeps its own KV cache for every request; it cannot be turned off from here "
                   "(run the model here for --no-cache and --modes)")


def stream_bench(backend: Backend, settings: BenchSettings, progress: ProgressFn | None = None) -> RemoteBenchReport:
    """Stream the bench prompt `warmup` + `repeat` times, then time a long prompt cold and again (the prefix cache)."""
    tell = progress or (lambda _: None)
    prompt = settings.prompt or DEFAULT_PROMPT
    run = GenerationSettings(max_new_tokens=settings.new_tokens, ignore_eos=backend.capabilities.ignore_eos)
    tell(f"streaming {settings.new_tokens} tokens from {backend.name}: {settings.warmup} warm-up + "
         f"{settings.repeat} timed runs")
    for _ in range(settings.warmup):
        gather(backend.generate(prompt, GREEDY, run))
    rows = tuple(tuple(step.seconds for step in gather(backend.generate(prompt, GREEDY, run)).steps)
                 for _ in range(settings.repeat))
    tell("timing a long prompt cold, then again (the server's prefix cache)")
    unavailable = {"kv_cache_switch": NO_CACHE_SWITCH, "memory": "the server's memory is not visible from here",
                   "speed_of_light": "the server's weights and bandwidth are not visible from here"}
    if not backend.capabilities.ignore_eos:
        unavailable["exact_length"] = "only vLLM can be told to ignore end tokens; runs may stop early"
    return RemoteBenchReport(backend.name, backend.endpoint, backend.capabilities.kind, settings.new_tokens,  # type: ignore[attr-defined]
                             rows, prefix_cache(backend, settings.repeat), unavailable)


def prefix_cache(backend: Backend, repeat: int) -> PrefixCache:
    """One-token requests with long prompts the server has not seen (each starts with a fresh nonce), then again."""
    cold: list[float] = []
    warm: list[float] = []
    prompt = long_prompt(backend)
    for _ in range(max(repeat, 2)):
        prompt = long_prompt(backend)
        cold.append(one_token(backend, prompt))
        warm.append(one_token(backend, prompt))
    return PrefixCache(backend.prompt_tokens(prompt), tuple(cold), tuple(warm))


def long_prompt(backend: Backend) -> str:
    """A prompt of about three quarters of the context (or 2,000 words), unseen: it starts with random words."""
    words = DEFAULT_PROMPT.split()
    budget = int((backend.context_length or 2048) * 0.75) // 2  # about two tokens per word in small vocabularies
    nonce = " ".join(secrets.token_hex(2) for _ in range(4))
    return nonce + " " + " ".join(words[i % len(words)] for i in range(max(budget - 8, 8)))


def one_token(backend: Backend, prompt: str) -> float:
    """Seconds until the first token of `prompt` arrives (the prefill, and the network)."""
    start = time.perf_counter()
    stream = backend.generate(prompt, GREEDY, GenerationSettings(max_new_tokens=1))
    try:
        next(stream, None)
    finally:
        stream.close()
    return time.perf_counter() - start
