"""Many sequences decoded together: one forward pass per step for all of them (continuous batching).

`Batch` holds the sequences that decode now. `join` prefills a prompt alone (one forward pass
for one or several sequences that share it; `join_many` one pass per prompt length) and adds its
sequences; `step` runs ONE forward pass over every sequence that goes on and gives each its next
`Step`; a sequence that finished, or that `leave` was called for, is out of the next step.
Sequences join and leave between any two steps.

Each sequence is a `generate.Sequence`, the single loop's own per-token state: its processors,
its own seeded `torch.Generator`, its stops and its decoder; so a sequence's tokens are the ones it
gets alone (greedy identical, a seeded sample drawn from its own generator). Rows that share a
sampler go through its processors together and draw in one division (`pick_rows`, `draw`).

The batch keeps one transformers `DynamicCache` whose rows are the sequences, left-padded to the
longest, and gives each row its own position ids. On the CPU each row is computed as it is alone
(core/decoding/rows.py: its own matrix products, attention over its own keys), so its
log-probabilities are bit for bit the ones alone; elsewhere the padding is masked out, equal to
float error (tests/test_batch.py holds both to 1e-5). A joining sequence's prefilled cache is
padded in; a leaving row is cut out and columns of padding no row needs are dropped. Models whose
cache is not a plain one (sliding windows, remote code without masks or position ids) decode one at
a time: `capacity` says how many may share a step.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence as Seq
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from lookinside.core.decoding import rows
from lookinside.core.decoding.generate import (
    TOP_ALTERNATIVES,
    Sequence,
    cache_argument,
    observe_rows,
    prefill,
    with_seed,
)
from lookinside.core.decoding.prompting import check_fits
from lookinside.core.decoding.timing import now
from lookinside.core.finite import check_logits
from lookinside.core.records import Generation, Step

if TYPE_CHECKING:
    from transformers import DynamicCache

    from lookinside.core.model.loading import LM
    from lookinside.core.request import GenerationSettings
    from lookinside.core.sampling_params import SamplingParams


@dataclass(frozen=True)
class Prompt:
    """One prompt to prefill, and the sequences to decode from it (one per params)."""

    ids: list[int]
    params: Seq[SamplingParams]
    settings: GenerationSettings
    alternatives: int = TOP_ALTERNATIVES
    tags: Seq[Any] | None = None


@dataclass(eq=False)
class Member:
    """One sequence in a batch: its token state, and where its next logits come from."""

    sequence: Sequence
    params: SamplingParams  # with the seed in effect
    cache: DynamicCache | None  # its prefill's cache until its row is padded into the batch's
    logits: torch.Tensor | None  # (1, vocab) the next token's logits, when known
    started: float  # when the work for its next step began
    left: bool = False
    tag: Any = None  # the caller's: what the member belongs to
    row: int = 0  # its row in `cache` (a prefill of several prompts of one length)

    @property
    def seed(self) -> int | None:
        """The seed its sampler uses (None when greedy)."""
        return None if self.params.greedy else self.params.seed


class Batch:
    """The sequences decoding together on one model; `step` advances each by one token."""

    def __init__(self, lm: LM) -> None:
        self.lm = lm
        self.members: list[Member] = []  # in the order they joined
        self._rows: list[Member] = []  # the members whose keys and values are rows of `_cache`, in row order
        self._cache: DynamicCache | None = None
        self._starts: list[int] = []  # each row's left padding: the column of `_cache` where its own tokens start
        self._width = 0  # the columns of `_cache`
        self._alone = rows.applies(lm)  # each row computed as alone (core/decoding/rows.py), else a masked step

    def __len__(self) -> int:
        return sum(not m.left for m in self.members)

    def join(self, prompt_ids: list[int], params: Seq[SamplingParams], settings: GenerationSettings,
             alternatives: int = TOP_ALTERNATIVES, tags: Seq[Any] | None = None) -> list[Member]:
        """Prefill `prompt_ids` once and add one sequence per `params`; they decode from the next `step`."""
        return self.join_many([Prompt(prompt_ids, params, settings, alternatives, tags)])

    def join_many(self, prompts: Seq[Prompt]) -> list[Member]:
        """Prefill several prompts (one forward pass for those of one length) and add their sequences."""
        for prompt in prompts:
            check_fits(len(prompt.ids), self.lm.context_length, prompt.settings.max_new_tokens)
        lengths: dict[int, list[int]] = {}  # prompt length -> the prompts of that length, in order
        for k, prompt in enumerate(prompts):
            lengths.setdefault(len(prompt.ids), []).append(k)
        prefilled: dict[int, tuple[DynamicCache, torch.Tensor, int, float]] = {}  # prompt -> cache, logits, row, start
        for group in lengths.values():
            cache, logits, start = self._prefill([prompts[k].ids for k in group])
            for row, k in enumerate(group):
                prefilled[k] = (cache, logits, row, start)
        joined = []
        for k, prompt in enumerate(prompts):
            cache, logits, row, start = prefilled[k]
            for i, p in enumerate(prompt.params):
                p = with_seed(p)
                sequence = Sequence(self.lm, prompt.ids, p, settings=prompt.settings, alternatives=prompt.alternatives)
                # The members of one prefill share its cache: padding a row into the batch copies it.
                joined.append(Member(sequence, p, cache, logits[row : row + 1], start,
                                     tag=prompt.tags[i] if prompt.tags else None, row=row))
        self.members.extend(joined)
        return joined

    def _prefill(self, prompts: list[list[int]]) -> tuple[DynamicCache, torch.Tensor, float]:
        """One forward pass over prompts of one length, each row as alone where `rows` applies: cache, logits, start."""
        from transformers import DynamicCache

        with torch.inference_mode():
            start = now(self.lm.device)
            cache = DynamicCache(config=self.lm.config)
            ids = torch.tensor(prompts, dtype=torch.long, device=self.lm.device)  # (prompts, seq)
            with rows.alone(self.lm, [0] * len(prompts)) if self._alone and len(prompts) > 1 else nullcontext():
                logits = prefill(self.lm, ids, cache)  # (prompts, vocab)
            check_logits(self.lm, logits)
        return cache, logits, start

    def leave(self, member: Member) -> None:
        """Take `member` out: it is in no forward pass after this."""
        member.left = True

    def step(self) -> list[tuple[Member, Step]]:
        """One forward pass for every sequence that goes on, then each one's next token."""
        self._settle()
        logits = self._forward() if self._rows else None  # (rows, vocab)
        fresh = [m for m in self.members if not m.left and m.cache is not None]  # joined since the last step
        members = [*self._rows, *fresh]
        if not members:
            return []
        with torch.inference_mode():
            parts = ([logits] if logits is not None else []) + [m.logits for m in fresh if m.logits is not None]
            logits = parts[0] if len(parts) == 1 else torch.cat(parts)  # (members, vocab)
            tokens = pick_rows([m.sequence for m in members], logits)  # (members,)
            seen = observe_rows(logits, tokens, max(m.sequence.alternatives for m in members))  # one copy to the host
        out = []
        for member, (token_id, prob, rank, top) in zip(members, seen):
            step = member.sequence.record(token_id, prob, rank, top[: member.sequence.alternatives], member.started)
            member.logits = None
            if step.finish is not None:
                member.left = True
            out.append((member, step))
        return out

    def _settle(self) -> None:
        """Drop the rows of members that left; pad in the caches of members that have taken their first token."""
        kept = [i for i, m in enumerate(self._rows) if not m.left]
        if len(kept) < len(self._rows):
            self._select(kept)
        self.members = [m for m in self.members if not m.left]
        for member in self.members:
            if member.cache is not None and member.logits is None:
                self._pad_in(member)

    def _select(self, kept: list[int]) -> None:
        self._rows = [self._rows[i] for i in kept]
        if not kept or self._cache is None:
            self._rows, self._cache, self._starts, self._width = [], None, [], 0
            return
        starts = [self._starts[i] for i in kept]
        first = min(starts)  # padding that every row has on its left is dropped
        self._starts, self._width = [s - first for s in starts], self._width - first
        index = torch.tensor(kept, device=self.lm.device)
        for layer in self._cache.layers:
            layer.keys = layer.keys.index_select(0, index.to(layer.keys.device))[:, :, first:]  # (rows, heads, seq, dim)
            layer.values = layer.values.index_select(0, index.to(layer.values.device))[:, :, first:]

    def _pad_in(self, member: Member) -> None:
        cache, member.cache = member.cache, None
        assert cache is not None
        row = member.row
        length = cache.get_seq_length()
        if self._cache is None:
            from transformers import DynamicCache

            self._cache = DynamicCache(config=self.lm.config)
            for mine, theirs in zip(self._cache.layers, cache.layers):  # a cache of its own: a prefill's members share
                mine.lazy_initialization(theirs.keys, theirs.values)
                mine.keys = theirs.keys[row : row + 1]  # (1, heads, seq, dim)
                mine.values = theirs.values[row : row + 1]
            self._rows, self._starts, self._width = [member], [0], length
            return
        grow, pad = max(0, length - self._width), max(0, self._width - length)
        for mine, theirs in zip(self._cache.layers, cache.layers):
            keys, values = theirs.keys[row : row + 1], theirs.values[row : row + 1]
            mine.keys = torch.cat([_left_pad(mine.keys, grow, -2), _left_pad(keys, pad, -2)])
            mine.values = torch.cat([_left_pad(mine.values, grow, -2), _left_pad(values, pad, -2)])
        self._starts = [s + grow for s in self._starts] + [pad]
        self._width = max(self._width, length)
        self._rows.append(member)

    def _forward(self) -> torch.Tensor:
        """One token for every row: the next token's logits of each.  # (rows, vocab)"""
        assert self._cache is not None
        rows_now = self._rows
        with torch.inference_mode():
            start = now(self.lm.device)
            ids = torch.stack([m.sequence.last.reshape(1) for m in rows_now])  # (rows, 1)
            positions = torch.tensor([[m.sequence.n + m.sequence.index - 1] for m in rows_now],
                                     device=ids.device)  # (rows, 1)
            self._width += 1
            step = {"input_ids": ids, "position_ids": positions, "use_cache": True, "logits_to_keep": 1,
                    cache_argument(self.lm.model): self._cache}
            if self._alone:
                with rows.alone(self.lm, self._starts):
                    out = self.lm.model(**step)
            elif any(self._starts):  # the masked step: rows of one length need no mask, as the single loop has none
                columns = torch.arange(self._width, device=ids.device)  # (width,)
                starts = torch.tensor(self._starts, device=ids.device).unsqueeze(-1)  # (rows, 1)
                out = self.lm.model(**step, attention_mask=(columns >= starts).long())  # mask: (rows, width)
            else:
                out = self.lm.model(**step)
            logits = out.logits[:, -1, :].float().to(ids.device)  # (rows, vocab)
        for member in rows_now:
            member.started = start
        return logits


def pick_rows(sequences: Seq[Sequence], logits: torch.Tensor) -> torch.Tensor:
    """Each sequence's next token from its row of `logits`, as its own `pick` would give it; kept in its ids.

    Rows with one `shared` sampler go through its processors together, and a sampled row draws from its own
    generator what `torch.multinomial` draws from it (`draw`); a row whose processors read its ids picks alone.
    # (rows, vocab) -> (rows,)
    """
    tokens = torch.empty(len(sequences), dtype=torch.long, device=logits.device)  # (rows,)
    groups: dict[SamplingParams, list[int]] = {}
    for i, sequence in enumerate(sequences):
        if sequence.shared is None:
            tokens[i : i + 1] = sequence.pick(logits[i : i + 1])
        else:
            groups.setdefault(sequence.shared, []).append(i)
    for shared, index in groups.items():
        first = sequences[index[0]]
        whole = len(index) == len(sequences)
        scores = logits if whole else logits[torch.tensor(index, device=logits.device)]  # (group, vocab)
        for processor in first.processors:  # they read no ids (`shared`), so one call serves every row
            scores = processor(first.ids, scores)
        if shared.greedy:
            chosen = scores.argmax(-1)  # (group,)
        else:
            chosen = draw(torch.softmax(scores, dim=-1), [sequences[i].generator for i in index])  # (group,)
        if whole:
            tokens = chosen
        else:
            tokens[torch.tensor(index, device=logits.device)] = chosen
    for i, sequence in enumerate(sequences):
        if sequence.shared is not None:
            sequence.keep(tokens[i : i + 1])
    return tokens


def draw(probs: torch.Tensor, generators: Seq[torch.Generator | None]) -> torch.Tensor:
    """One token per row, row i drawn from `generators[i]`: what `torch.multinomial(probs[i:i+1], 1, generator=...)`
    draws, and the generator left in the same state.

    torch.multinomial draws one sample as argmax(p / q) with q ~ Exp(1) filled from the generator over the row
    (its fast path for one sample); so can a batch, with one fill per generator and one division and argmax for
    all (tests/test_batch.py holds it to torch.multinomial). # (rows, vocab) -> (rows,)
    """
    devices = {g.device for g in generators if g is not None}
    home = devices.pop() if len(devices) == 1 else probs.device  # an mps model's generators are on the CPU
    noise = torch.empty(probs.shape, dtype=probs.dtype, device=home)  # (rows, vocab)
    for row, generator in zip(noise, generators):
        row.exponential_(1, generator=generator)
    return (probs / noise.to(probs.device)).argmax(-1)


def _left_pad(tensor: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    """`tensor` with `width` zeros before it along `dim`."""
    if width == 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = width
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def capacity(lm: LM, wanted: int) -> int:
    """How many sequences may share a step on `lm`: `wanted`, or 1 where its cache cannot be padded row by row."""
    return wanted if _batchable(lm) else 1


def _batchable(lm: LM) -> bool:
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    from lookinside.core.decoding.step import forward_parameters  # deferred: torch

    takes = forward_parameters(type(lm.model))
    if not {"attention_mask", "position_ids"} <= takes:
        return False
    try:
        layers = DynamicCache(config=lm.config).layers
    except Exception:  # noqa: BLE001 (a config transformers cannot make a cache for decodes alone)
        return False
    return all(type(layer) is DynamicLayer for layer in layers)


def decode_together(lm: LM, prompt_ids: list[int], params: Seq[SamplingParams], settings: GenerationSettings,
                    alternatives: int = TOP_ALTERNATIVES) -> list[Generation]:
    """Several runs of one prompt after one prefill, decoded as one batch; each run as `collect` gives it alone."""
    if capacity(lm, len(params)) < len(params):
        from lookinside.core.decoding.generate import collect  # deferred: torch

        return [collect(lm, prompt_ids, p, settings) for p in params]
    batch = Batch(lm)
    members = batch.join(prompt_ids, params, settings, alternatives)
    runs = {id(m): Generation(prompt_ids=list(prompt_ids), seed=m.seed) for m in members}
    while len(batch):
        for member, step in batch.step():
            runs[id(member)].steps.append(step)
    return [runs[id(m)] for m in members]


# ---- the server's side: sequences with somewhere to send their steps


@dataclass(eq=False)
class Work:
    """Sequences a caller hands to a `Batcher`: each step goes to `on_step` (False: leave), `on_done` at the end."""

    prompts: list[tuple[list[int], list[SamplingParams], GenerationSettings, int]]  # ids, params, settings, alternatives
    on_step: Callable[[int, Step], bool]  # (the sequence's number in this work, counted over its prompts, step)
    on_start: Callable[[list[int | None]], None] = lambda seeds: None  # the seed of each sequence, before any step
    on_done: Callable[[BaseException | None], None] = lambda error: None
    lm: LM | None = None  # the model it runs on (a worker makes its batcher from the first work it gets)
    _open: int = field(default=0, init=False)

    @property
    def size(self) -> int:
        """How many sequences it decodes."""
        return sum(len(params) for _, params, _, _ in self.prompts)


class Batcher:
    """A `Batch` fed by `Work`s: the model thread's side of continuous batching in `llm serve`."""

    def __init__(self, lm: LM, size: int) -> None:
        self.batch = Batch(lm)
        self.size = capacity(lm, size)

    def __len__(self) -> int:
        return len(self.batch)

    @property
    def room(self) -> bool:
        """Whether another sequence may join now."""
        return len(self.batch) < self.size

    def add(self, work: Work) -> None:
        """Prefill `work`'s prompts and add its sequences (its on_done gets any error, and nothing joins)."""
        self.add_all([work])

    def add_all(self, works: Seq[Work]) -> None:
        """Prefill every prompt of `works` in one forward pass and add their sequences; a failed work is told."""
        ready, prompts = [], []
        for work in works:
            try:
                for ids, _, settings, _ in work.prompts:
                    check_fits(len(ids), self.batch.lm.context_length, settings.max_new_tokens)
            except BaseException as exc:  # noqa: BLE001 (the work's caller answers for it)
                work.on_done(exc)
                continue
            ready.append(work)
            number = 0
            for ids, params, settings, alternatives in work.prompts:
                prompts.append(Prompt(ids, params, settings, alternatives,
                                      [(work, number + i) for i in range(len(params))]))
                number += len(params)
        try:
            members = self.batch.join_many(prompts) if prompts else []
        except BaseException as exc:  # noqa: BLE001 (a failed prefill fails every work in it)
            for work in ready:
                work.on_done(exc)
            return
        for work in ready:
            mine = [m for m in members if m.tag[0] is work]
            try:
                work.on_start([m.seed for m in mine])
            except BaseException as exc:  # noqa: BLE001
                for member in mine:
                    self.batch.leave(member)
                work.on_done(exc)
                continue
            work._open = len(mine)
            if not mine:
                work.on_done(None)

    def step(self) -> None:
        """One step of every sequence; each step goes to its work, which may ask it to leave."""
        try:
            steps = self.batch.step()
        except BaseException as exc:  # noqa: BLE001 (a failed forward pass fails every sequence in it)
            self.cut(exc)
            return
        for member, step in steps:
            work, number = member.tag
            if work._open <= 0:
                continue  # the work failed on an earlier sequence's step
            try:
                stay = work.on_step(number, step)
            except BaseException as exc:  # noqa: BLE001
                self._close_work(work, exc)
                continue
            if not stay:
                self.batch.leave(member)
            if member.left:
                self._finished(work)

    def cut(self, error: BaseException | None = None) -> None:
        """Every sequence leaves now; each work is told (with `error`, if any)."""
        works = {id(m.tag[0]): m.tag[0] for m in self.batch.members if not m.left}
        for member in self.batch.members:
            self.batch.leave(member)
        for work in works.values():
            work._open = 0
            work.on_done(error)

    def _close_work(self, work: Work, error: BaseException) -> None:
        for member in self.batch.members:
            if member.tag[0] is work:
                self.batch.leave(member)
        work._open = 0
        work.on_done(error)

    def _finished(self, work: Work) -> None:
        if work._open <= 0:
            return
        work._open -= 1
        if work._open == 0:
            work.on_done(None)

    def run(self, work: Work) -> None:
        """`work` to its end on this thread (with whatever else is in the batch)."""
        self.add(work)
        while work._open > 0 and len(self.batch):
            self.step()


