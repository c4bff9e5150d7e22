"""What a change does to the predictions: two models (or one loaded two ways) read the same token ids.

Teacher forcing: both models see the same text, in chunks of the context length, and at every
position give a next-token distribution. Per position: KL(A || B) in nats, whether the top-1
tokens agree, how many of the top-k they share, and the log-probability of the token that
actually comes next under each. The summary is llama.cpp's `perplexity --kl-divergence`
report: mean, median, p99 and max KL, same-top-1 %, and each model's perplexity. The models
are used one after the other (`side`), so the two need never be in memory together.
"""

from __future__ import annotations

import functools
import gc
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.detokenize import token_text
from lookinside.core.generate import collect
from lookinside.core.prompting import check_fits, check_prompt
from lookinside.core.records import first_difference
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling import SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lookinside.core.loading import LM
    from lookinside.core.spec import LoadSpec

GREEDY = SamplingParams(temperature=0.0)
WORST = 10  # positions listed where the two differ most


@dataclass(frozen=True)
class Side:
    """What one model made of the text: per-position log-probabilities and its greedy continuation."""

    name: str
    how: str  # dtype, attention, quantization: what tells the two apart
    ids: list[int]
    logprobs: torch.Tensor  # (positions, vocab) float32 on the CPU: position t predicts ids[t + 1]
    continuation: list[int]
    continuation_text: str
    tokenizer: PreTrainedTokenizerBase  # kept when the model is let go: it names the tokens
    context_length: int


@dataclass(frozen=True)
class Position:
    """One position of the text: the token read, the one that came next, and how the two models differ there."""

    index: int
    token: str  # the token at this position
    next_token: str  # the token that actually follows
    kl: float  # KL(A || B) in nats
    same_top1: bool
    top_overlap: float  # |top-k(A) ∩ top-k(B)| / k
    logprob_a: float  # of the actual next token
    logprob_b: float
    top_a: tuple[tuple[str, float], ...]  # (piece, prob), best first
    top_b: tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class Diff:
    """The whole comparison: both sides' names, every position, the summary figures and the continuations."""

    model_a: str
    how_a: str
    model_b: str
    how_b: str
    tokens: int
    chunk: int
    top_k: int
    positions: tuple[Position, ...]
    continuation_a: str
    continuation_b: str
    parts_at: int | None  # index of the first generated token where the greedy continuations differ

    @property
    def kls(self) -> list[float]:
        """KL(A || B) at every position."""
        return [p.kl for p in self.positions]

    @property
    def mean_kl(self) -> float:
        """Mean KL over the positions."""
        return statistics.fmean(self.kls)

    @property
    def median_kl(self) -> float:
        """Median KL."""
        return statistics.median(self.kls)

    @property
    def p99_kl(self) -> float:
        """99th percentile of KL (the largest value when there are few positions)."""
        kls = self.kls
        return statistics.quantiles(kls, n=100, method="inclusive")[98] if len(kls) > 1 else kls[0]

    @property
    def max_kl(self) -> float:
        """Largest KL."""
        return max(self.kls)

    @property
    def same_top1(self) -> float:
        """Share of positions where both models rank the same token first."""
        return statistics.fmean(p.same_top1 for p in self.positions)

    @property
    def perplexity_a(self) -> float:
        """exp(-mean log-probability of the actual next tokens) under A."""
        return math.exp(-statistics.fmean(p.logprob_a for p in self.positions))

    @property
    def perplexity_b(self) -> float:
        """The same under B."""
        return math.exp(-statistics.fmean(p.logprob_b for p in self.positions))

    def worst(self, n: int = WORST) -> list[Position]:
        """The `n` positions where the models differ most, largest KL first."""
        return sorted(self.positions, key=lambda p: p.kl, reverse=True)[:n]


def read_side(lm: LM, text: str, how: str, continuation_tokens: int = 20, chunked: bool = False) -> Side:
    """Run `lm` over `text` (teacher forcing) and greedily on from the text's end.

    A text over the context is refused, as by every command, unless `chunked`: then it is read in
    chunks of the context length, each starting cold.
    """
    check_prompt(text)
    ids = list(lm.tokenizer(text).input_ids)
    if not chunked:
        check_fits(len(ids), lm.context_length)
    if len(ids) < 2:
        raise errors.BadInput("the text is one token long: a diff needs at least two tokens to predict one")
    logprobs = teacher_forced_logprobs(lm, ids)
    room = max(1, min(continuation_tokens, lm.context_length - min(len(ids), lm.context_length - 1)))
    start = ids[-(lm.context_length - room):]
    run = collect(lm, start, GREEDY, GenerationSettings(max_new_tokens=room))
    return Side(lm.name, how, ids, logprobs, run.token_ids, run.text, lm.tokenizer, lm.context_length)


def teacher_forced_logprobs(lm: LM, ids: list[int]) -> torch.Tensor:
    """Log-probabilities of every next token, chunk by chunk of the context length.  # (len(ids) - 1, vocab)"""
    chunk = lm.context_length
    rows = []
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, chunk):
            piece = torch.tensor([ids[start : start + chunk]], device=lm.device)  # (1, n)
            logits = lm.model(input_ids=piece, use_cache=False).logits[0].float()  # (n, vocab)
            rows.append(torch.log_softmax(logits, dim=-1).cpu())
    return torch.cat(rows)[: len(ids) - 1]  # (positions, vocab)


def run_diff(load: Callable[[LoadSpec], LM], a: LoadSpec, b: LoadSpec, text: str, top_k: int = 10,
             chunked: bool = False) -> Diff:
    """Load A, read the text, let A go; the same for B; then compare them position by position."""
    sides = []
    for spec in (a, b):
        lm = load(spec)
        sides.append(read_side(lm, text, describe_load(lm, spec), chunked=chunked))
        del lm
        gc.collect()
    return compare_sides(sides[0], sides[1], top_k)


def describe_load(lm: LM, spec: LoadSpec) -> str:
    """What tells one side from the other: dtype, attention, quantization."""
    parts = [str(lm.dtype).removeprefix("torch."), lm.attn_implementation]
    parts += [f"quantized {spec.quantize}"] if spec.quantize else []
    return ", ".join(parts)


def check_same_vocabulary(a: Side, b: Side) -> None:
    """Refuse two models that do not share a vocabulary: their distributions cannot be compared id by id."""
    va, vb = a.logprobs.shape[-1], b.logprobs.shape[-1]
    if va != vb or a.tokenizer.get_vocab() != b.tokenizer.get_vocab():
        raise errors.BadInput(
            f"{a.name} and {b.name} have different vocabularies ({va:,} and {vb:,} outputs"
            f"{', different tokenizers' if va == vb else ''}): a per-token diff needs the same token ids")


def compare_sides(a: Side, b: Side, top_k: int = 10) -> Diff:
    """Position by position, A against B (same vocabulary, so A's tokenizer names the tokens of both)."""
    check_same_vocabulary(a, b)
    k = min(top_k, a.logprobs.shape[-1])
    pa, pb = a.logprobs.exp(), b.logprobs.exp()  # (positions, vocab)
    kl = (pa * (a.logprobs - b.logprobs)).sum(-1).clamp_min(0)  # (positions,)
    top_a, top_b = a.logprobs.topk(k, dim=-1).indices, b.logprobs.topk(k, dim=-1).indices  # (positions, k)
    overlap = (top_a.unsqueeze(-1) == top_b.unsqueeze(-2)).any(-1).float().mean(-1)  # (positions,)
    actual = torch.tensor(a.ids[1:]).unsqueeze(-1)  # (positions, 1)
    lp_a, lp_b = a.logprobs.gather(-1, actual)[:, 0], b.logprobs.gather(-1, actual)[:, 0]  # (positions,)
    name = _namer(a.tokenizer)
    positions = tuple(
        Position(
            index=t, token=name(a.ids[t]), next_token=name(a.ids[t + 1]), kl=float(kl[t]),
            same_top1=bool(top_a[t, 0] == top_b[t, 0]), top_overlap=float(overlap[t]),
            logprob_a=float(lp_a[t]), logprob_b=float(lp_b[t]),
            top_a=tuple((name(int(i)), float(pa[t, i])) for i in top_a[t, :3]),
            top_b=tuple((name(int(i)), float(pb[t, i])) for i in top_b[t, :3]),
        )
        for t in range(len(a.ids) - 1)
    )
    return Diff(a.name, a.how, b.name, b.how, len(a.ids), min(a.context_length, b.context_length), k, positions,
                a.continuation_text, b.continuation_text, first_difference(a.continuation, b.continuation))


def _namer(tokenizer: PreTrainedTokenizerBase) -> Callable[[int], str]:
    """token_text for this tokenizer, each id looked up once."""
    return functools.cache(functools.partial(token_text, tokenizer))
