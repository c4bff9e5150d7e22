"""The only loop over tokens: prefill the prompt, then decode one token per step.

`generate` returns a `Stream` of `Step`s, one per new token: its id, its text
delta, its probability and rank under the raw (temperature 1, unpenalised)
distribution, the top alternatives, and how long it took. With the KV cache
("dynamic", or a preallocated "static" one) each step feeds only the newest
token and reuses transformers' cache; with cache "none" it feeds the whole
sequence again at every step, as the book describes.

It stops at `max_new_tokens`, at an end token (the generation config's eos ids,
unless `ignore_eos`), or at a stop string (the text is cut before it; the token
ids keep every token generated). To stop from outside, stop iterating (break) or
let KeyboardInterrupt propagate out of the loop. A sampled run always has a
concrete seed, known from the stream (`stream.seed`) before the first step.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from lookinside.core.decoding.compiled import Compiled
from lookinside.core.decoding.detokenize import IncrementalDecoder, StopStrings
from lookinside.core.decoding.prompting import check_fits
from lookinside.core.decoding.sampling import build_processors, sample
from lookinside.core.decoding.step import TOP_ALTERNATIVES, cache_argument, observation
from lookinside.core.decoding.timing import now
from lookinside.core.finite import check_logits
from lookinside.core.records import Finish, Generation, Step, Stream
from lookinside.core.request import CacheKind, GenerationSettings
from lookinside.core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from transformers import Cache, LogitsProcessorList

    from lookinside.core.model.loading import LM

def generate(
    lm: LM, prompt_ids: list[int], params: SamplingParams, settings: GenerationSettings = GenerationSettings(),
    alternatives: int = TOP_ALTERNATIVES,
) -> Stream:
    """One `Step` per new token until an end token, a stop string or `max_new_tokens`.

    An unseeded sampling `params` gets a fresh seed here, readable as `stream.seed`. Each step keeps
    the `alternatives` most probable tokens (a server asked for logprobs=20 wants more than five).
    """
    check_fits(len(prompt_ids), lm.context_length, settings.max_new_tokens)
    params = with_seed(params)
    return Stream(_steps(lm, list(prompt_ids), params, settings, alternatives), params)


def with_seed(params: SamplingParams) -> SamplingParams:
    """The params a run uses: greedy as they are, sampled with a concrete seed (drawn here when none is given)."""
    return params if params.greedy else params.seeded()


def collect(
    lm: LM,
    prompt_ids: list[int],
    params: SamplingParams,
    settings: GenerationSettings = GenerationSettings(),
    keep_on_interrupt: bool = False,
) -> Generation:
    """Run `generate` to the end and keep every step (with `keep_on_interrupt`, Ctrl-C keeps what came so far)."""
    stream = generate(lm, prompt_ids, params, settings)
    run = Generation(prompt_ids=list(prompt_ids), seed=stream.seed)
    try:
        run.steps.extend(stream)
    except KeyboardInterrupt:
        if not keep_on_interrupt:
            raise
        run.interrupted = True
    return run


def _steps(lm: LM, prompt_ids: list[int], params: SamplingParams, settings: GenerationSettings,
           alternatives: int = TOP_ALTERNATIVES) -> Iterator[Step]:
    n = len(prompt_ids)
    compiled = Compiled.for_model(lm) if settings.compile else None
    if compiled is not None:
        cache = compiled.borrow_cache(n + settings.max_new_tokens)
        try:
            yield from _loop(lm, prompt_ids, params, settings, cache, compiled, alternatives)
        finally:
            compiled.give_back(cache)
        return
    cache = make_cache(lm, settings.cache, n + settings.max_new_tokens)
    yield from _loop(lm, prompt_ids, params, settings, cache, None, alternatives)


def _loop(lm: LM, prompt_ids: list[int], params: SamplingParams, settings: GenerationSettings, cache: Cache | None,
          compiled: Compiled | None, alternatives: int) -> Iterator[Step]:
    sequence = Sequence(lm, prompt_ids, params, settings, alternatives)
    # inference_mode is entered around the tensor work only, never held across a `yield`: the consumer's
    # code between steps (and a stream abandoned half-way) must not run inside it.
    with torch.inference_mode():
        start = now(lm.device)
        logits = prefill(lm, sequence.ids, cache)  # (1, vocab)
        check_logits(lm, logits)  # NaN weights or a bad epsilon: one line, never a table of nan
    packer = (functools.partial(compiled.observation, checked=False)
              if compiled is not None and alternatives == TOP_ALTERNATIVES else None)
    # A greedy run without processors under --compile picks its token inside the compiled step (greedy_step).
    fused = packer is not None and cache is not None and sequence.plain_greedy
    picked: list[float] | None = None  # the fused step's token's observation row, on the host
    while True:
        step = sequence.advance(logits, start, packer) if picked is None else sequence.record(*unpack(picked), start)
        yield step
        if step.finish is not None:
            return
        start = time.perf_counter()  # the consumer's time between steps is not the model's
        with torch.inference_mode():
            if compiled is not None and cache is not None:
                eager = lambda: decode_one_token(lm, sequence.ids, cache)  # called only when compiling failed
                if fused:
                    token, row = compiled.greedy_step(sequence.last.view(1, 1), cache, eager, sequence.index > 1)
                    sequence.keep(token)
                    picked = row.tolist()  # one device -> host copy
                else:
                    packer = functools.partial(compiled.observation, checked=True)
                    logits = compiled.decode(sequence.last.view(1, 1), cache, eager, sequence.index > 1)
            else:
                logits = decode_one_token(lm, sequence.ids, cache)


class Sequence:
    """One sequence's token-by-token state: it picks each token from the logits it is given and names it.

    It holds the ids so far, the sampler (processors and a seeded generator of its own), the text decoder
    and the stop rules; it runs no forward pass, so the single loop above and the batch
    (core/decoding/batch.py) feed it logits the same way and get the same `Step`s.
    """

    def __init__(self, lm: LM, prompt_ids: list[int], params: SamplingParams, settings: GenerationSettings,
                 alternatives: int = TOP_ALTERNATIVES) -> None:
        self.n, self.index, self.settings, self.alternatives = len(prompt_ids), 0, settings, alternatives
        self.processors = build_processors(params)
        self.generator = _generator(params, lm.device)
        self.ends = frozenset() if settings.ignore_eos else frozenset(lm.end_token_ids)
        self.stop_ids = frozenset(settings.stop_token_ids)
        held = bool(settings.min_new_tokens and (self.ends or self.stop_ids))  # end tokens held back for a while
        if held:
            self.processors.insert(0, _min_new_tokens(self.n, settings.min_new_tokens, self.ends | self.stop_ids,
                                                      lm.device))
        # Sequences with one `shared` key run the same processors, which read no ids (a repetition penalty and
        # min_new_tokens read this sequence's own): a batch applies them to all their rows at once.
        reads_ids = params.repetition_penalty != 1 or held
        self.shared: SamplingParams | None = None if reads_ids else replace(params, seed=None)
        self.decoder = IncrementalDecoder(lm.tokenizer, context=prompt_ids, skip_special=settings.skip_special_tokens)
        self.stops = StopStrings(settings.stop_strings, include=settings.include_stop_string)
        with torch.inference_mode():
            # Every id of the run in one preallocated row: no per-step concatenation, and writing a token is not a sync.
            self.buffer = torch.empty((1, self.n + settings.max_new_tokens), dtype=torch.long, device=lm.device)
            self.buffer[0, : self.n] = torch.tensor(prompt_ids, dtype=torch.long)  # (1, seq)
        self.last = self.buffer[0, self.n - 1 : self.n]  # (1,) the newest token, as the next forward pass feeds it

    @property
    def plain_greedy(self) -> bool:
        """True when the next token is the raw logits' argmax: greedy, and no processor (penalty, min length)."""
        return self.generator is None and not self.processors

    @property
    def ids(self) -> torch.Tensor:
        """The prompt and every token picked so far.  # (1, seq)"""
        return self.buffer[:, : self.n + self.index]

    def advance(self, logits: torch.Tensor, start: float,
                packer: Callable[..., torch.Tensor] | None = None) -> Step:
        """Pick the next token from `logits` (1, vocab), name it, and say whether the sequence ends there."""
        with torch.inference_mode():
            token = self.pick(logits)  # (1,) on the device
            token_id, prob, rank, top = _observe(logits[0], token, self.alternatives, packer)  # one device -> host copy
        return self.record(token_id, prob, rank, top, start)

    def pick(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token from `logits` (1, vocab) by this sequence's sampler, kept in its ids; left on the device."""
        return self.keep(pick(logits, self.ids, self.processors, self.generator))  # (1,)

    def keep(self, token: torch.Tensor) -> torch.Tensor:
        """`token` (1,), picked for this sequence (by `pick`, or by a batch for several), as its next id."""
        self.buffer[:, self.n + self.index] = token
        self.last = token
        return token

    def record(self, token_id: int, prob: float, rank: int, top: tuple[tuple[int, float], ...], start: float) -> Step:
        """The step for the token just picked: its text, and whether an end token, a stop or the length ends it."""
        index = self.index
        self.index += 1
        stops, decoder = self.stops, self.decoder
        finish: Finish | None = None
        stop: str | int | None = None
        if token_id in self.ends or token_id in self.stop_ids:
            text = stops.push(decoder.flush()) + stops.flush()
            if token_id in self.ends:
                finish = "eos"
            else:
                finish, stop = "stop", token_id
                text += stops.push(decoder.push(token_id)) + stops.flush() if self.settings.include_stop_string else ""
        else:
            text = stops.push(decoder.push(token_id))
            if stops.stopped:
                finish, stop = "stop", stops.matched
            elif index + 1 == self.settings.max_new_tokens:
                text, finish = text + stops.push(decoder.flush()) + stops.flush(), "length"
                if stops.stopped:
                    finish, stop = "stop", stops.matched
        return Step(index, token_id, text, prob, rank, top, time.perf_counter() - start, finish, stop)


def _min_new_tokens(prompt_length: int, minimum: int, ends: frozenset[int], device: torch.device) -> Any:
    """transformers' processor that keeps the end tokens from being picked before `minimum` new tokens."""
    from transformers import MinNewTokensLengthLogitsProcessor

    return MinNewTokensLengthLogitsProcessor(prompt_length, minimum, sorted(ends), device=str(device))


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


def pick(
    logits: torch.Tensor, ids: torch.Tensor, processors: LogitsProcessorList, generator: torch.Generator | None
) -> torch.Tensor:
    """The next token after `processors`: the top score without `generator`, else one draw; left on the device.

    # (1, vocab) -> (1,)
    """
    scores = logits  # (1, vocab)
    for processor in processors:  # called directly: the list's __call__ inspects each signature at every step
        scores = processor(ids, scores)
    if generator is None:
        return scores.argmax(-1)
    probs = torch.softmax(scores, dim=-1)  # (1, vocab)
    if probs.device != generator.device:
        return sample(probs.to(generator.device), generator).to(probs.device)
    return sample(probs, generator)


def observe_rows(logits: torch.Tensor, tokens: torch.Tensor,
                 alternatives: int) -> list[tuple[int, float, int, tuple[tuple[int, float], ...]]]:
    """`_observe` for every row at once, in one copy to the host.  # (rows, vocab), (rows,)"""
    logits = logits.float()  # (rows, vocab)
    lse = torch.logsumexp(logits, dim=-1, keepdim=True)  # (rows, 1)
    chosen = logits.gather(-1, tokens.view(-1, 1))  # (rows, 1)
    rank = (logits > chosen).sum(-1, keepdim=True) + 1  # (rows, 1)
    top_logits, top_ids = logits.topk(min(alternatives, logits.shape[-1]), dim=-1)  # (rows, k), (rows, k)
    packed = torch.cat([tokens.view(-1, 1).double(), (chosen - lse).double(), rank.double(), top_ids.double(),
                        (top_logits - lse).double()], dim=-1).tolist()  # (rows, 3 + 2k)
    k = top_ids.shape[-1]
    return [(int(row[0]), math.exp(row[1]), int(row[2]),
             tuple((int(i), math.exp(lp)) for i, lp in zip(row[3 : 3 + k], row[3 + k :]))) for row in packed]


def _observe(logits: torch.Tensor, token: torch.Tensor, alternatives: int = TOP_ALTERNATIVES,
             packer: Callable[..., torch.Tensor] | None = None,
             ) -> tuple[int, float, int, tuple[tuple[int, float], ...]]:
    """The token, its raw probability and rank, and the top alternatives, in one copy to the host."""
    # float64 holds every token id exactly; one .tolist() is one device sync instead of a dozen .item()s.
    return unpack((packer(logits, token) if packer else observation(logits, token, alternatives)).tolist())


def unpack(packed: list[float]) -> tuple[int, float, int, tuple[tuple[int, float], ...]]:
    """step.observation's row, on the host: the token, its probability and rank, the top alternatives."""
    k = (len(packed) - 3) // 2
    top = tuple((int(i), math.exp(lp)) for i, lp in zip(packed[3 : 3 + k], packed[3 + k :]))
    return int(packed[0]), math.exp(packed[1]), int(packed[2]), top


def _forward(lm: LM, ids: torch.Tensor, cache: Cache | None) -> torch.Tensor:
    kwargs = {cache_argument(lm.model): cache} if cache is not None else {}
    out = lm.model(input_ids=ids, use_cache=cache is not None, logits_to_keep=1, **kwargs)
    # With an accelerate device map the head may sit on another device than the ids; bring it home.
    return out.logits[:, -1, :].float().to(ids.device)  # (1, vocab)


def _generator(params: SamplingParams, device: torch.device) -> torch.Generator | None:
    """A generator seeded from `params` (None for greedy); on the model's device where torch allows it."""
    if params.greedy:
        return None
    if params.seed is None:
        raise ValueError("a sampling run needs a seed: call params.seeded() first")
    generator = torch.Generator(device=device if device.type in ("cuda", "cpu") else "cpu")
    generator.manual_seed(params.seed)
    return generator

