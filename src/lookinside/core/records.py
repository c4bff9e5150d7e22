"""The results the views draw, as plain data: nothing here imports torch.

Every backend (this process, or a server: core/backend.py) returns these, and each view in
ui/ is a function of one of them. Two records describe a token: `Piece`, a token of the
input (id, vocabulary piece, text, kind), and `Candidate`, a token the model might produce
next (rank, id, text, probability).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

from lookinside.core.request import GenerationSettings
from lookinside.core.sampling import SamplingParams

Finish = Literal["eos", "length", "stop"]


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
    def perplexity(self) -> float:
        """exp(-mean log-probability)."""
        return math.exp(-self.mean_logprob) if self.mean_logprob > -700 else float("inf")


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

    @property
    def seeds(self) -> list[int]:
        """Each sample's seed: base, base + 1, ... (shown even at temperature 0, where it has no effect)."""
        return [(self.params.seed or 0) + i for i in range(len(self.samples))]

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
