"""`llm bench` over any backend's token stream: what a server's user can time from this side of the network.

The bench prompt is streamed `warmup` + `repeat` times (greedy, exactly N tokens where the backend
can ignore end tokens), each step timed as it arrives; then a long prompt the server has not seen
is sent cold and again, one token each, to show what its prefix cache saves. Everything goes
through the backend's primitives (`generate`, `prompt_tokens`), so it runs against vLLM,
llama.cpp, Ollama or `llm serve` alike. Nothing here imports torch.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from lookinside.core.bench.report import PrefixCache, RemoteBenchReport
from lookinside.core.errors import BadInput
from lookinside.core.records import gather
from lookinside.core.request import DEFAULT_PROMPT, BenchSettings, GenerationSettings
from lookinside.core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from lookinside.core.backends.seam import Backend

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
        unavailable["exact_length"] = (f"{backend.capabilities.kind} cannot be told to ignore end tokens (vLLM and "
                                       "llama.cpp can); runs may stop early")
    unavailable |= short_streams(rows, settings.new_tokens)
    prefix = prefix_cache(backend, settings.repeat, unavailable)
    return RemoteBenchReport(backend.name, backend.endpoint or "here", backend.capabilities.kind, settings.new_tokens,
                             rows, prefix, unavailable)


def short_streams(rows: tuple[tuple[float, ...], ...], asked: int) -> dict[str, str]:
    """Say plainly when the streams gave no token, or only one: the rates below are then not measured."""
    longest = max((len(row) for row in rows), default=0)
    if longest == 0:
        return {"tokens": "no token came back: the server ended every reply before its first token (the model's "
                          "first token ends it); give a --prompt the model goes on from"}
    if longest == 1 < asked:
        return {"decode_rate": "only one token came back per stream (the model ended its reply at once, e.g. with "
                               "an end token): nothing was decoded after it; give a --prompt the model goes on from"}
    return {}


def prefix_cache(backend: Backend, repeat: int, notes: dict[str, str] | None = None) -> PrefixCache:
    """One-token requests with long prompts the server has not seen (each starts with a fresh nonce), then again.

    The long prompt is fitted to the context the server tells (`fitted_words`). Where it does not tell it and
    refuses the prompt as too long (llama-cpp-python, 2,048 tokens assumed), the prompt is fitted once more to the
    context its refusal names (or made half as long), tried once, and `notes` says so; a second refusal, or a
    failure of another kind, is the error it is.
    """
    cold: list[float] = []
    warm: list[float] = []
    words = fitted_words(backend, backend.context_length)
    prompt = long_prompt(words)
    try:
        cold.append(one_token(backend, prompt))
    except BadInput as exc:
        if not too_long(str(exc)):
            raise
        refused, said = backend.prompt_tokens(prompt), said_context(str(exc))
        words = fitted_words(backend, said) if said else words // 2
        prompt = long_prompt(words)
        cold.append(one_token(backend, prompt))
        if notes is not None:
            notes["context_length"] = refit_note(backend, refused, said, backend.prompt_tokens(prompt), words)
    warm.append(one_token(backend, prompt))
    for _ in range(max(repeat, 2) - 1):
        prompt = long_prompt(words)
        cold.append(one_token(backend, prompt))
        warm.append(one_token(backend, prompt))
    return PrefixCache(backend.prompt_tokens(prompt), tuple(cold), tuple(warm))


def refit_note(backend: Backend, refused: int | None, said: int | None, tokens: int | None, words: int) -> str:
    """What the bench did when the long prompt did not fit, in one sentence."""
    kind = backend.capabilities.kind
    told = (f"{kind} said its context is {backend.context_length:,} tokens, but" if backend.context_length
            else f"{kind} does not say its context, and")
    size = f"{refused:,}-token" if refused else "long"
    why = f" (a context of {said:,} tokens, its refusal said)" if said else ""
    fitted = f"{tokens:,} tokens" if tokens else f"{words:,} words"
    return f"{told} it refused the {size} prompt as too long{why}: the prompt was fitted to {fitted} and tried again"


def fitted_words(backend: Backend, context: int | None) -> int:
    """Words of the long prompt for about three quarters of `context` (2,048 tokens when unknown): ~2 tokens a word,
    scaled by what the server's tokenizer makes of them where it has a tokenize route."""
    target = int((context or 2048) * 0.75)
    words = max(target // 2 - 8, 8)  # ~2 tokens a word in small vocabularies
    tokens = backend.prompt_tokens(long_prompt(words))
    return max(int(words * target / tokens) - 2, 8) if tokens else words


def said_context(message: str) -> int | None:
    """The context a refusal names ("maximum context length is 512 tokens", "context window of 512"), or None."""
    found = re.search(r"context (?:length|window|size)(?: is| of)? (\d+)", message, re.IGNORECASE)
    return int(found.group(1)) if found else None


def long_prompt(words: int) -> str:
    """`words` words of the bench prompt, unseen: they start with random ones."""
    text = DEFAULT_PROMPT.split()
    nonce = " ".join(secrets.token_hex(2) for _ in range(4))
    return nonce + " " + " ".join(text[i % len(text)] for i in range(words))


def too_long(message: str) -> bool:
    """A refusal that says the prompt does not fit (vLLM, llama.cpp and llama-cpp-python word it differently)."""
    return any(word in message.lower() for word in ("context", "too long", "exceed", "maximum"))


def one_token(backend: Backend, prompt: str) -> float:
    """Seconds until the first token of `prompt` arrives (the prefill, and the network)."""
    start = time.perf_counter()
    stream = backend.generate(prompt, GREEDY, GenerationSettings(max_new_tokens=1))
    try:
        next(stream, None)
    finally:
        stream.close()
    return time.perf_counter() - start
