"""The only loop over tokens: prefill the prompt, then decode one token per step.

`generate` yields a `Step` per new token (its id, text delta, probability and rank
under the raw distribution, the top alternatives, and how long it took). With the
KV cache it feeds only the newest token and reuses transformers' cache; without
it, it feeds the whole sequence again at every step, as the book describes.
Stop iterating (or raise KeyboardInterrupt) to stop early.
"""

from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from lookinside.core.detokenize import IncrementalDecoder
from lookinside.core.prompting import check_fits
from lookinside.core.sampling import SamplingParams, build_processors, logits_to_probs, sample, top_candidates
from lookinside.core.timing import now

if TYPE_CHECKING:
    from transformers import Cache

    from lookinside.core.loading import LM

CacheKind = Literal["dynamic", "static", "none"]
Finish = Literal["eos", "length", "stop"]
TOP_ALTERNATIVES = 5


@dataclass(frozen=True)
class GenerationConfig:
    """What to generate: how many tokens, when to stop, and which cache to use."""

    max_new_tokens: int = 128
    cache: CacheKind = "dynamic"
    stop_strings: tuple[str, ...] = ()
    ignore_eos: bool = False


@dataclass(frozen=True)
class Step:
    """One generated token and what the model thought of it."""

    index: int
    token_id: int
    text: str
    prob: float  # under the raw (temperature 1) distribution
    rank: int  # 1 = the most probable token
    top: tuple[tuple[int, float], ...]  # the raw distribution's best (id, prob) pairs
    seconds: float  # the step's wall time, device synchronised; step 0 includes the prefill
    finish: Finish | None = None

    @property
    def logprob(self) -> float:
        """Natural log of `prob`."""
        return math.log(self.prob) if self.prob > 0 else float("-inf")


@dataclass
class Generation:
    """A finished (or interrupted) run: the steps and why it ended."""

    prompt_ids: list[int]
    steps: list[Step] = field(default_factory=list)
    seed: int | None = None
    interrupted: bool = False

    @property
    def token_ids(self) -> list[int]:
        """The generated ids, end token included."""
        return [s.token_id for s in self.steps]

    @property
    def text(self) -> str:
        """The generated text."""
        return "".join(s.text for s in self.steps)

    @property
    def finish(self) -> Finish | Literal["interrupted"] | None:
        """Why generation ended."""
        return "interrupted" if self.interrupted else self.steps[-1].finish if self.steps else None

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability per generated token."""
        return sum(s.logprob for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def perplexity(self) -> float:
        """exp(-mean log-probability)."""
        return math.exp(-self.mean_logprob)


def generate(
    lm: LM, prompt_ids: list[int], params: SamplingParams, config: GenerationConfig = GenerationConfig()
) -> Iterator[Step]:
    """Yield one `Step` per new token until an end token, a stop string or `max_new_tokens`."""
    check_fits(len(prompt_ids), lm.context_length, config.max_new_tokens)
    processors = build_processors(params)
    generator = _generator(params, lm.device)
    ends = set() if config.ignore_eos else set(lm.end_token_ids)
    decoder = IncrementalDecoder(lm.tokenizer, context=prompt_ids)
    ids = torch.tensor([prompt_ids], device=lm.device)  # (1, seq)
    cache = make_cache(lm, config.cache, len(prompt_ids) + config.max_new_tokens)
    text = ""
    with torch.inference_mode():
        start = now(lm.device)
        logits = prefill(lm, ids, cache)
        for index in range(config.max_new_tokens):
            token, raw = choose(logits, ids, processors, generator)
            step = _record(index, token, raw, decoder, time.perf_counter() - start)
            text += step.text
            finish = _finish(step, index, config, ends, text)
            yield step if finish is None else _with_finish(step, finish, decoder)
            if finish is not None:
                return
            start = time.perf_counter()
            ids = torch.cat([ids, ids.new_tensor([[token]])], dim=1)
            logits = decode_one_token(lm, ids, cache)


def collect(
    lm: LM, prompt_ids: list[int], params: SamplingParams, config: GenerationConfig = GenerationConfig()
) -> Generation:
    """Run `generate` to the end and keep every step."""
    params = params if params.greedy else params.seeded()
    run = Generation(prompt_ids=prompt_ids, seed=None if params.greedy else params.seed)
    run.steps.extend(generate(lm, prompt_ids, params, config))
    return run


def make_cache(lm: LM, kind: CacheKind, max_len: int) -> Cache | None:
    """A transformers cache for the run: dynamic (grows), static (preallocated) or none."""
    from transformers import DynamicCache, StaticCache

    if kind == "none":
        return None
    if kind == "static":
        return StaticCache(config=lm.config, max_cache_len=max_len)
    return DynamicCache(config=lm.config)


def prefill(lm: LM, ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    """Run the whole prompt once; the last position's logits.  # (1, vocab)"""
    return _forward(lm, ids, cache)


def decode_one_token(lm: LM, ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    """Logits for the next position: only the newest token with a cache, everything without."""
    return _forward(lm, ids[:, -1:] if cache is not None else ids, cache)


def choose(
    logits: torch.Tensor, ids: torch.Tensor, processors: object, generator: torch.Generator | None
) -> tuple[int, torch.Tensor]:
    """The next token (greedy if no warper is set) and the raw distribution it came from."""
    raw = logits_to_probs(logits[0])  # (vocab,)
    scores = processors(ids, logits)  # (1, vocab)
    if generator is None:
        token = scores.argmax(-1)
    else:
        token = sample(torch.softmax(scores, dim=-1), generator)
    return int(token.item()), raw


def _forward(lm: LM, ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    kwargs = {cache_argument(lm.model): cache} if cache is not None else {}
    out = lm.model(input_ids=ids, use_cache=cache is not None, logits_to_keep=1, **kwargs)
    return out.logits[:, -1, :].float()  # (1, vocab)


@functools.cache
def _forward_parameters(forward_type: type) -> frozenset[str]:
    return frozenset(inspect.signature(forward_type.forward).parameters)


def cache_argument(model: torch.nn.Module) -> str:
    """`cache` in newer transformers 5 releases, `past_key_values` before them and in remote code."""
    return "cache" if "cache" in _forward_parameters(type(model)) else "past_key_values"


def _generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    if params.greedy:
        return None
    seeded = params.seeded()
    generator = torch.Generator(device=device if device.type in ("cuda", "cpu") else "cpu")
    generator.manual_seed(int(seeded.seed or 0))
    return generator


def _record(index: int, token: int, raw: torch.Tensor, decoder: IncrementalDecoder, seconds: float) -> Step:
    prob = raw[token]
    rank = int((raw > prob).sum().item()) + 1
    top_ids, top_probs = top_candidates(raw, TOP_ALTERNATIVES)
    return Step(
        index=index,
        token_id=token,
        text=decoder.push(token),
        prob=float(prob.item()),
        rank=rank,
        top=tuple(zip(top_ids, top_probs)),
        seconds=seconds,
    )


def _finish(step: Step, index: int, config: GenerationConfig, ends: set[int], text: str) -> Finish | None:
    if step.token_id in ends:
        return "eos"
    if any(stop in text for stop in config.stop_strings):
        return "stop"
    if index + 1 >= config.max_new_tokens:
        return "length"
    return None


def _with_finish(step: Step, finish: Finish, decoder: IncrementalDecoder) -> Step:
    from dataclasses import replace

    text = "" if finish == "eos" else step.text + decoder.flush()
    return replace(step, finish=finish, text=text)
