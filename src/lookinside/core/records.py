"""The results the views draw, as plain data: nothing here imports torch.

Every backend (this process, or a server: core/backends/seam.py) returns these, and each view in
ui/ is a function of one of them. Their JSON is core/wire.py's `to_wire`: the fields, then the
worked-out values each record names in `DERIVED` (properties, so a number is computed once, here). Two records describe a token: `Piece`, a token of the
input (id, vocabulary piece, text, kind), and `Candidate`, a token the model might produce
next (rank, id, text, probability).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams

Finish = Literal["eos", "length", "stop"]
WORST = 10  # positions a diff lists where the two models differ most


@dataclass(frozen=True)
class Piece:
    """One token: its id, the tokenizer's piece for it, its text, and its kind."""

    index: int
    id: int
    piece: str  # as the vocabulary spells it: "▁Paris", "<0xF0>", "<|user|>"
    text: str  # the text it stands for, with its leading space
    kind: str  # "special", "byte" or "text"
    byte: int | None = None  # the byte value of a byte-fallback piece
    joined: str | None = None  # on the last byte of a run: the characters the run decodes to


@dataclass(frozen=True)
class Tokenization:
    """A text cut into tokens, with the chat template's rendering when it was used."""

    model: str
    text: str
    chat: bool
    rendered: str | None  # the chat template's output, None without --chat
    tokens: tuple[Piece, ...]
    vocab_size: int


@dataclass(frozen=True)
class Candidate:
    """A possible next token: its rank, id and text, its probability, and (where known) its logit."""

    rank: int
    id: int
    token: str
    prob: float
    logit: float | None = None
    prob_at_temperature: float | None = None


@dataclass(frozen=True)
class NextToken:
    """The next-token distribution for a prompt, and how it was computed."""

    model: str
    prompt: str
    tokens: tuple[Piece, ...]
    shapes: dict[str, list[int]] | None  # None where the backend cannot see inside (a server)
    top: list[Candidate]
    temperature: float | None
    context_length: int | None
    unavailable: dict[str, str] = field(default_factory=dict)  # what this backend could not give, and why


@dataclass(frozen=True)
class Step:
    """One generated token and what the model thought of it."""

    index: int
    token_id: int
    text: str  # the text this step completes ("" while a character is unfinished, and for an end token)
    prob: float  # under the raw (temperature 1, unpenalised) distribution
    rank: int  # 1 = the most probable token
    top: tuple[tuple[int, float], ...]  # the raw distribution's best (id, prob) pairs
    seconds: float  # the step's wall time, device synchronised; step 0 includes the prefill
    finish: Finish | None = None
    stop: str | int | None = None  # what stopped it with finish "stop": the stop string, or the stop token's id

    DERIVED = ("logprob",)  # written into the JSON beside the fields (core/wire.py)

    @property
    def logprob(self) -> float:
        """Natural log of `prob`."""
        return math.log(self.prob) if self.prob > 0 else float("-inf")


def first_token_seconds(seconds: Sequence[float]) -> float | None:
    """Time to the first token from a run's step times: step 0 holds the prefill (None for no steps)."""
    return seconds[0] if seconds else None


def decode_seconds(seconds: Sequence[float]) -> float:
    """The decode part of a run's step times: every step after the first."""
    return sum(seconds[1:])


def decode_rate(seconds: Sequence[float]) -> float | None:
    """Tokens per second after the first (None with fewer than two steps): the figure chat, generate and bench show."""
    decode = decode_seconds(seconds)
    return (len(seconds) - 1) / decode if len(seconds) > 1 and decode > 0 else None


@dataclass
class Generation:
    """A finished (or interrupted) run: the steps and why it ended."""

    prompt_ids: list[int]
    steps: list[Step] = field(default_factory=list)
    seed: int | None = None
    interrupted: bool = False

    DERIVED = ("text", "token_ids", "finish", "mean_logprob", "perplexity", "ttft_s", "decode_tok_s", "total_s")

    @property
    def token_ids(self) -> list[int]:
        """The generated ids, end token included."""
        return [s.token_id for s in self.steps]

    @property
    def text(self) -> str:
        """The generated text (without an end token or a stop string)."""
        return "".join(s.text for s in self.steps)

    @property
    def logprobs(self) -> list[float]:
        """Each generated token's log-probability under the raw distribution."""
        return [s.logprob for s in self.steps]

    @property
    def finish(self) -> Finish | Literal["interrupted"] | None:
        """Why generation ended."""
        return "interrupted" if self.interrupted else self.steps[-1].finish if self.steps else None

    @property
    def mean_logprob(self) -> float:
        """Mean log-probability per generated token."""
        return sum(s.logprob for s in self.steps) / len(self.steps) if self.steps else 0.0

    @property
    def ttft_s(self) -> float | None:
        """Time to the first token: the prefill plus choosing it (None before any step)."""
        return first_token_seconds([s.seconds for s in self.steps])

    @property
    def decode_tok_s(self) -> float | None:
        """Tokens per second after the first (None with fewer than two tokens)."""
        return decode_rate([s.seconds for s in self.steps])

    @property
    def total_s(self) -> float:
        """The whole run's time: the prefill and every step."""
        return sum(s.seconds for s in self.steps)

    @property
    def perplexity(self) -> float:
        """exp(-mean log-probability)."""
        return math.exp(-self.mean_logprob) if self.mean_logprob > -700 else float("inf")


@dataclass(frozen=True)
class Completion:
    """`llm generate`'s record: the run, what made it, and the token text of every id it names."""

    model: str
    prompt: str
    run: Generation
    pieces: dict[int, str]  # each id in the run (its tokens and their alternatives) -> the token's text
    unavailable: dict[str, str] = field(default_factory=dict)  # what a server could not give, and why

    @classmethod
    def of(cls, model: str, prompt: str, run: Generation, token_text: Callable[[int], str],
           unavailable: dict[str, str] | None = None) -> Completion:
        """The record of `run`, each id it names spelt by `token_text` (the backend's)."""
        ids = sorted({i for step in run.steps for i in (step.token_id, *(t for t, _ in step.top))})
        return cls(model, prompt, run, {i: token_text(i) for i in ids}, unavailable or {})


def gather(stream: Stream, prompt_ids: Sequence[int] = ()) -> Generation:
    """Run a stream to its end and keep every step."""
    run = Generation(prompt_ids=list(prompt_ids), seed=stream.seed)
    run.steps.extend(stream)
    return run


class Stream(Iterator[Step]):
    """What `generate` returns: iterate it for `Step`s; `params` (with the seed in effect) is known up front."""

    def __init__(self, steps: Iterator[Step], params: SamplingParams) -> None:
        self._steps = steps
        self.params = params

    @property
    def seed(self) -> int | None:
        """The seed the sampler uses (None for greedy decoding)."""
        return None if self.params.greedy else self.params.seed

    def __iter__(self) -> Stream:
        return self

    def __next__(self) -> Step:
        return next(self._steps)

    def close(self) -> None:
        """Stop generating; the model is not run again."""
        getattr(self._steps, "close", lambda: None)()


@dataclass(frozen=True)
class Comparison:
    """The greedy run, the sampled runs, and the settings that made them."""

    model: str
    prompt: str
    chat: bool
    prompt_ids: list[int]
    params: SamplingParams  # the samplers' settings; `seed` is the base seed
    settings: GenerationSettings
    greedy: Generation
    samples: list[Generation]
    unavailable: dict[str, str] = field(default_factory=dict)  # what a server could not give, and why

    DERIVED = ("seeds", "departs_at")

    @property
    def seeds(self) -> list[int]:
        """Each sample's seed: base, base + 1, ... (shown even at temperature 0, where it has no effect)."""
        return [(self.params.seed or 0) + i for i in range(len(self.samples))]

    @property
    def departs_at(self) -> list[int | None]:
        """Per sample, the index of its first token that differs from the greedy run's (None: the same run)."""
        return [self.departs(run) for run in self.samples]

    def departs(self, run: Generation) -> int | None:
        """Index of the first new token where `run` differs from the greedy run (None: identical)."""
        return first_difference(self.greedy.token_ids, run.token_ids)


def first_difference(a: list[int], b: list[int]) -> int | None:
    """The first index where two id lists differ (a length difference counts); None if equal."""
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@dataclass(frozen=True)
class Resources:
    """What a reply used beyond time: peak accelerator memory, CPU threads, quantized weights (None: not known)."""

    peak_memory_bytes: int | None = None
    threads: int | None = None
    quantized: str | None = None


@dataclass(frozen=True)
class ModelFacts:
    """What chat's /show tells about the model (a server fills what it knows; the rest is None)."""

    name: str
    source: str
    parameters: int | None
    dtype: str | None
    device: str | None
    context_length: int | None
    end_tokens: Sequence[tuple[int, str]]
    chat_template: str | None
    attention: str | None


# ---- the inside: shapes (llm forward), attention (llm attention), the logit lens (llm lens)


@dataclass(frozen=True)
class Stage:
    """One module's call in the forward pass: what went in and what came out."""

    path: str  # inside its decoder block ("self_attn.qkv_proj") or from the model's root
    kind: str  # class name
    input_shape: tuple[int, ...] | None
    output_shape: tuple[int, ...] | None
    layer: int | None = None  # the decoder block it belongs to, None outside the stack

    @property
    def depth(self) -> int:
        """How deep the module sits below its block (or the root): 0 for the block itself."""
        return 0 if not self.path else self.path.count(".") + 1


@dataclass(frozen=True)
class LayerRun:
    """Consecutive decoder blocks whose stages have identical shapes, shown once."""

    first: int
    last: int
    stages: tuple[Stage, ...]  # those of block `first`

    DERIVED = ("count",)

    @property
    def count(self) -> int:
        """How many blocks the run stands for."""
        return self.last - self.first + 1


@dataclass(frozen=True)
class ForwardPass:
    """The shapes through one forward pass: before the stack, the blocks, after it."""

    model: str
    prompt: str
    tokens: tuple[Piece, ...]
    input_shape: tuple[int, ...]  # (batch, tokens)
    before: tuple[Stage, ...]
    blocks: tuple[LayerRun, ...]
    after: tuple[Stage, ...]
    heads: int
    kv_heads: int
    head_dim: int

    DERIVED = ("head_shapes",)

    @property
    def head_shapes(self) -> dict[str, tuple[int, ...]]:
        """Inside attention, per head (from the config, since no module returns these)."""
        batch, n = self.input_shape
        return {
            "queries": (batch, self.heads, n, self.head_dim),
            "keys, values": (batch, self.kv_heads, n, self.head_dim),
            "scores, weights": (batch, self.heads, n, n),
        }


@dataclass(frozen=True)
class HeadSummary:
    """One head's habits, averaged over the query rows that can see more than one key."""

    head: int
    entropy: float  # bits; 0 = always one key, log2(keys) = uniform
    first_token: float  # mean weight on key 0
    previous_token: float  # mean weight on the key just before the query
    self_token: float  # mean weight on the query's own position


@dataclass(frozen=True)
class AttentionMaps:
    """One layer's attention weights, [head][query][key], with the mask that shaped them."""

    model: str
    prompt: str
    tokens: tuple[Piece, ...]
    layer: int
    layers: int
    heads: int
    kv_heads: int
    head: int | None  # the head asked for, None for all
    weights: dict[int, tuple[tuple[float, ...], ...]]  # head -> (queries, keys); see KEEP_ALL_HEADS_UP_TO
    summaries: tuple[HeadSummary, ...]
    sliding_window: int | None

    DERIVED = ("attention", "uniform_entropy")

    @property
    def attention(self) -> str:
        """MHA, MQA or GQA."""
        return attention_kind(self.heads, self.kv_heads)

    @property
    def uniform_entropy(self) -> float:
        """The summaries' entropy if every query spread evenly over the keys it can see (bits)."""
        n = len(self.tokens)
        return sum(math.log2(q + 1) for q in range(1, n)) / (n - 1) if n > 1 else 0.0

    def masked(self, query: int, key: int) -> bool:
        """True where the causal (or sliding-window) mask hides `key` from `query`."""
        return key > query or (self.sliding_window is not None and query - key >= self.sliding_window)


@dataclass(frozen=True)
class LensRow:
    """What one depth predicts at the chosen position (layer 0 = the embeddings)."""

    layer: int
    top: tuple[Candidate, ...]
    answer_prob: float  # the final answer's probability at this depth
    answer_rank: int  # its rank (1 = top)


@dataclass(frozen=True)
class LogitLens:
    """The lens at one position, and optionally the top token at every (depth, position)."""

    model: str
    prompt: str
    tokens: tuple[Piece, ...]
    position: int
    answer: Candidate  # the model's real top-1 next token at `position`
    rows: tuple[LensRow, ...]  # depths 0..layers
    grid: tuple[tuple[Candidate, ...], ...] | None  # [depth][position] top-1, with --all-positions
    norm: str | None  # the final norm's class, None if the model has none we could find

    DERIVED = ("first_top1", "settled")

    @property
    def first_top1(self) -> int | None:
        """The first depth at which the final answer is the top token."""
        return next((r.layer for r in self.rows if r.top[0].id == self.answer.id), None)

    @property
    def settled(self) -> int | None:
        """The depth from which the final answer stays the top token to the end."""
        settled = None
        for row in reversed(self.rows):
            if row.top[0].id != self.answer.id:
                break
            settled = row.layer
        return settled


# ---- the architecture (llm inspect)


@dataclass(frozen=True)
class ModuleNode:
    """One module of the tree; `repeat` > 1 stands for that many identical siblings."""

    name: str
    kind: str  # the class name, e.g. Phi3DecoderLayer
    detail: str  # PyTorch's own extra_repr, e.g. in_features=3072, out_features=9216, bias=False
    parameters: int  # in one copy of this module
    children: tuple[ModuleNode, ...] = ()
    repeat: int = 1
    tied_to: str | None = None  # a weight shared with another module (tied embeddings)

    @property
    def total_parameters(self) -> int:
        """Parameters in all `repeat` copies."""
        return self.parameters * self.repeat


@dataclass(frozen=True)
class Architecture:
    """The architecture card: what the book's chapter 3 names, for one model."""

    model: str
    architecture: str  # the top class, e.g. Phi3ForCausalLM
    model_type: str
    vocab_size: int
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    attention: str  # MHA, MQA or GQA
    group_size: int  # query heads per KV head
    intermediate_size: int | None
    ffn: str  # e.g. SwiGLU (fused gate/up)
    activation: str | None
    norm: str  # e.g. RMSNorm
    norm_eps: float | None
    positions: str  # e.g. RoPE
    rope: dict[str, Any] = field(default_factory=dict)  # theta, type, scaling factors
    sliding_window: int | None = None
    context_length: int = 0
    tied_embeddings: bool = False
    parameters: int = 0
    weight_bytes: dict[str, int] = field(default_factory=dict)  # per dtype
    kv_bytes_per_token: dict[str, int] = field(default_factory=dict)  # per dtype, all layers, K and V


@dataclass(frozen=True)
class Estimate:
    """The weights' footprint under `kind`, from the shapes alone: what is converted, what stays 16-bit."""

    kind: str
    converted_params: int  # in the decoder's linear layers
    kept_params: int  # embeddings, the LM head, norms: kept at 16 bits, as the loaders do
    converted_bytes: int
    scale_bytes: int
    kept_bytes: int

    DERIVED = ("total_bytes",)  # written into the JSON beside the fields (core/wire.py)

    @property
    def total_bytes(self) -> int:
        """Everything the weights take."""
        return self.converted_bytes + self.scale_bytes + self.kept_bytes


@dataclass(frozen=True)
class Anatomy:
    """A model's card and its module tree."""

    card: Architecture
    tree: ModuleNode
    quantized: Estimate | None = None  # with --quantize: the footprint that would take


def attention_kind(heads: int, kv_heads: int) -> str:
    """MHA when every query head has its own K/V, MQA when all share one, GQA in between."""
    if kv_heads == heads:
        return "MHA"
    if kv_heads == 1:
        return "MQA"
    return "GQA"


# ---- two models over the same text (llm diff)


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

    DERIVED = ("mean_kl", "median_kl", "p99_kl", "max_kl", "same_top1", "perplexity_a", "perplexity_b",
               "perplexity_change", "worst_at")

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

    @property
    def perplexity_change(self) -> float:
        """How much B's perplexity differs from A's, as a share of A's (+0.01: 1% higher)."""
        return self.perplexity_b / self.perplexity_a - 1

    @property
    def worst_at(self) -> list[int]:
        """The indices of the positions `worst()` lists, largest KL first."""
        return [p.index for p in self.worst()]

    def worst(self, n: int = WORST) -> list[Position]:
        """The `n` positions where the models differ most, largest KL first."""
        return sorted(self.positions, key=lambda p: p.kl, reverse=True)[:n]

