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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from lookinside.core import errors
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.generate import collect
from lookinside.core.decoding.prompting import check_fits
from lookinside.core.inside.hooks import head_rows
from lookinside.core.records import WORST, Diff, Position, first_difference  # noqa: F401  (the records live there)
from lookinside.core.request import GenerationSettings
from lookinside.core.rules import check_prompt
from lookinside.core.sampling_params import SamplingParams

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lookinside.core.model.loading import LM
    from lookinside.core.model.spec import LoadSpec

GREEDY = SamplingParams(temperature=0.0)


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


def read_side(lm: LM, text: str, how: str, continuation_tokens: int = 20, ids: list[int] | None = None,
              chunked: bool = False) -> Side:
    """Run `lm` over `text` (teacher forcing, in chunks of its context) and greedily on from the text's end.

    `ids`: read these token ids instead of the ones `lm`'s tokenizer makes of `text` (B reads A's). A text over
    the context is refused, as by every command, unless `chunked`: then it is read in chunks of the context
    length, each starting cold.
    """
    check_prompt(text)
    ids = list(lm.tokenizer(text).input_ids) if ids is None else list(ids)
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
    sides: list[Side] = []
    for spec in (a, b):
        lm = load(spec)
        if sides:  # B reads A's ids, so a tokenizer that splits some text otherwise (a GGUF's) changes nothing
            _refuse_other_vocabulary(sides[0].name, sides[0].tokenizer, sides[0].logprobs.shape[-1],
                                     lm.name, lm.tokenizer, head_rows(lm.model))
        sides.append(read_side(lm, text, describe(lm, spec.quantize), ids=sides[0].ids if sides else None,
                               chunked=chunked))
        del lm
        gc.collect()
    return compare_sides(sides[0], sides[1], top_k)


def describe(lm: LM, quantize: str | None = None) -> str:
    """What tells one side from the other: dtype, attention, quantization."""
    parts = [str(lm.dtype).removeprefix("torch."), lm.attn_implementation]
    parts += ["dequantized" if quantize == "float" else f"quantized {quantize}"] if quantize else []
    parts += [f"from {lm.origin.kind}"] if getattr(lm, "origin", None) else []
    return ", ".join(parts)


def check_same_vocabulary(a: Side, b: Side) -> None:
    """Refuse two models that do not share a vocabulary: their distributions cannot be compared id by id."""
    _refuse_other_vocabulary(a.name, a.tokenizer, a.logprobs.shape[-1], b.name, b.tokenizer, b.logprobs.shape[-1])


def _refuse_other_vocabulary(name_a: str, tokenizer_a: PreTrainedTokenizerBase, va: int,
                             name_b: str, tokenizer_b: PreTrainedTokenizerBase, vb: int) -> None:
    """The check itself. Ids that only one tokenizer names are allowed: llama.cpp's converter names the padding
    rows of the embedding ([PAD980]...) that a Hugging Face tokenizer leaves without a token."""
    tokens_a = {i: t for t, i in tokenizer_a.get_vocab().items()}
    tokens_b = {i: t for t, i in tokenizer_b.get_vocab().items()}
    if va != vb or any(tokens_a[i] != tokens_b[i] for i in tokens_a.keys() & tokens_b.keys()):
        raise errors.BadInput(
            f"{name_a} and {name_b} have different vocabularies ({va:,} and {vb:,} outputs"
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
