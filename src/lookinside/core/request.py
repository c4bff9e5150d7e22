"""What the user asks of the model, as data checked on creation: nothing here loads or imports torch.

Each command builds its request once, before the model is loaded, so a bad flag costs no load;
the core functions take the request as it is. A request's fields say how they are asked for
(`text`, `option`, `group`, `from_spec`); `knobs(kind)` reads that once for the command line
(cli/views.py) and the Python API (api.py), and `build(kind, values)` makes the request from them,
so an option is added to a view in this file alone. What can only be checked against the model
(a --top-k above the vocabulary, a prompt over the context, a --position past the prompt)
is checked by the core function once the model is there.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Any, Literal, Optional

from lookinside.core.errors import BadInput, EmptyPrompt
from lookinside.core.rules import check_prompt, check_quantize, check_threads, new_tokens
from lookinside.core.sampling_params import FIELDS, SamplingParams

CacheKind = Literal["dynamic", "static", "none"]
CACHE_KINDS: tuple[CacheKind, ...] = ("dynamic", "static", "none")
MAX_SAMPLES = 16


PROMPT_HELP = "The text to run through the model (- reads stdin; or --file PATH; one trailing newline is dropped)."
CHAT_HELP = "Wrap the prompt in the model's chat template first."


REQUIRED: Any = dataclasses.MISSING  # an option the request cannot do without (`missing` says so in one line)


def option(default: Any, *flags: str, help: str, metavar: str | None = None, cli: Any = None, keyword: str | None = None,
           missing: str | None = None) -> Any:
    """A request field asked for by `flags` on the command line and by its name (or `keyword`) in the API.

    `cli` is the type the command line reads when it is not the field's (`list[str]` for a repeatable flag the
    request parses); `missing` is the one line for a REQUIRED option left out.
    """
    metadata = {"flags": flags, "help": help, "metavar": metavar, "cli": cli, "keyword": keyword, "missing": missing}
    return field(metadata=metadata) if default is REQUIRED else field(default=default, metadata=metadata)


def text(metavar: str = "[PROMPT]", help: str = PROMPT_HELP) -> Any:
    """The request field a command takes as its argument (or from - or --file)."""
    return field(metadata={"argument": metavar, "help": help})


def group(default: Any) -> Any:
    """A field made of settings asked for one by one: `SamplingParams` (one knob per sampler in `FIELDS`) or a
    dataclass whose own fields are options (`GenerationSettings`); `default` holds this request's defaults."""
    return field(default_factory=lambda: default, metadata={"group": True})


def from_spec(name: str) -> Any:
    """A field the command line takes from the model options (`LoadSpec.<name>`), the API as a keyword."""
    return field(default=None, metadata={"spec": name, "help": f"as --{name.replace('_', '-')}"})


@dataclass(frozen=True)
class Knob:
    """One thing a view's request is asked for: a command's argument or option, an API keyword."""

    name: str  # the API keyword and the command's parameter
    path: tuple[str, ...]  # where it lands in the request: ("samples",), ("params", "temperature")
    kind: Any  # its type hint in the request
    default: Any  # REQUIRED, or the value when it is not given (None for a group's: the group's default)
    help: str
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    cli: Any = None
    missing: str | None = None
    argument: str | None = None  # the command's argument (its metavar), not an option
    spec: str | None = None  # taken from the model options on the command line
    sampling: bool = False

    @property
    def required(self) -> bool:
        """True when the request cannot be made without it."""
        return self.default is REQUIRED


@cache
def knobs(kind: type) -> tuple[Knob, ...]:
    """Every knob of request type `kind`, in the order of its fields."""
    hints = typing.get_type_hints(kind)
    found: list[Knob] = []
    for f in dataclasses.fields(kind):
        meta = f.metadata
        default = (f.default if f.default is not dataclasses.MISSING
                   else f.default_factory() if f.default_factory is not dataclasses.MISSING else REQUIRED)
        if "group" in meta:
            found += _group_knobs(f.name, hints[f.name], default)
        elif meta:
            found.append(Knob(meta.get("keyword") or f.name, (f.name,), hints[f.name], default, meta["help"],
                              meta.get("flags", ()), meta.get("metavar"), meta.get("cli"), meta.get("missing"),
                              meta.get("argument"), meta.get("spec")))
    return tuple(found)


def _group_knobs(name: str, kind: type, default: Any) -> list[Knob]:
    if kind is SamplingParams:
        return [Knob(f.name, (name, f.name), Optional[f.kind], None, f.help, (f.flag, *f.shorts), sampling=True)
                for f in FIELDS]
    return [replace(k, path=(name, *k.path), default=getattr(default, k.path[0])) for k in knobs(kind)]


def build(kind: type, values: Mapping[str, Any]) -> Any:
    """The request of type `kind` from its knobs' values by name; a knob left out or None keeps its default."""
    fields: dict[str, Any] = {}
    groups: dict[str, dict[str, Any]] = {}
    for knob in knobs(kind):
        value = values.get(knob.name)
        if value is None and knob.required and knob.missing:
            raise BadInput(knob.missing)
        if value is None and not knob.required:
            continue
        if len(knob.path) == 1:
            fields[knob.path[0]] = value
        else:
            groups.setdefault(knob.path[0], {})[knob.path[1]] = value
    defaults = {f.name: f.default_factory for f in dataclasses.fields(kind) if f.name in groups}
    fields |= {name: replace(defaults[name](), **changes) for name, changes in groups.items()}  # type: ignore[misc]
    return kind(**fields)


def whole(name: str, value: object, low: int | None = None) -> None:
    """Refuse a value that is not a whole number (at least `low`, when given)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadInput(f"{name} must be a whole number, not {value!r}")
    if low is not None and value < low:
        raise BadInput(f"{name} must be {'a positive number' if low == 1 else f'at least {low}'}, not {value}")


@dataclass(frozen=True)
class GenerationSettings:
    """What to generate: how many tokens, when to stop, and which KV cache to use."""

    max_new_tokens: int = option(128, "--max-new-tokens", "-n", help="Most tokens to generate.")
    cache: CacheKind = "dynamic"
    stop_strings: tuple[str, ...] = option((), "--stop", cli=list[str], keyword="stop",
                                           help="Stop when this text appears (repeatable); it is not printed.")
    ignore_eos: bool = option(False, "--ignore-eos", help="Go on past end tokens until --max-new-tokens.")
    compile: bool = False  # decode with a torch.compile'd step over a static cache (core/decoding/compiled.py)
    # What an OpenAI-compatible request may add (vLLM's names in serve/openai_api.py):
    stop_token_ids: tuple[int, ...] = ()  # tokens that end the reply as an end token does, finish "stop"
    min_new_tokens: int = 0  # the end tokens and stop_token_ids cannot be picked before this many tokens
    include_stop_string: bool = False  # the text keeps the stop string (or stop token) that ended it
    skip_special_tokens: bool = False  # special tokens (chat markers) are left out of the text

    def __post_init__(self) -> None:
        if self.compile and self.cache == "none":
            raise BadInput("--compile needs the KV cache: it compiles the one-token step over a static cache")
        new_tokens(self.max_new_tokens)
        if self.cache not in CACHE_KINDS:
            raise BadInput(f"cache must be one of {', '.join(CACHE_KINDS)}, not {self.cache!r}")
        if isinstance(self.stop_strings, str):  # a lone string would be read as one stop string per character
            object.__setattr__(self, "stop_strings", (self.stop_strings,))
        object.__setattr__(self, "stop_strings", tuple(self.stop_strings))
        if any(not isinstance(s, str) or not s for s in self.stop_strings):
            raise BadInput("stop strings must be non-empty text")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise BadInput(f"min_new_tokens must be in [0, max_new_tokens={self.max_new_tokens}], not {self.min_new_tokens}")


@dataclass(frozen=True)
class NextTokenRequest:
    """`next-token`: the prompt, how many candidates, and an optional second temperature to show."""

    prompt: str = text()
    top_k: int = option(10, "--top-k", "-k", help="How many candidates to list.")
    temperature: float | None = option(None, "--temperature", "-t",
                                       help="Also show the probabilities at this temperature.")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        whole("--top-k", self.top_k, low=1)
        if self.temperature is not None and (isinstance(self.temperature, bool)
                                             or not isinstance(self.temperature, (int, float))
                                             or not 0 <= self.temperature < float("inf")):
            raise BadInput(f"--temperature must be >= 0 and finite (0 is greedy), not {self.temperature}")


@dataclass(frozen=True)
class CompareRequest:
    """`compare`: the greedy run and `samples` sampled runs of one prompt; sample i uses seed base + i."""

    prompt: str = text()
    params: SamplingParams = group(SamplingParams())
    settings: GenerationSettings = group(GenerationSettings(max_new_tokens=40))
    samples: int = option(3, "--samples", "-s", help="How many sampled runs to show beside the greedy one.")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        if not isinstance(self.samples, int) or not 1 <= self.samples <= MAX_SAMPLES:
            raise BadInput(f"--samples must be between 1 and {MAX_SAMPLES}, not {self.samples}")
        if self.params.seed is not None and self.params.seed + self.samples > 2**63:
            raise BadInput(f"--seed must be below 2**63 - {self.samples}, not {self.params.seed}")

    def seeded(self) -> CompareRequest:
        """The same request with a concrete base seed (drawn once here), so the comparison can be repeated."""
        return self if self.params.seed is not None else replace(self, params=self.params.seeded())

    def sample_params(self) -> list[SamplingParams]:
        """One copy of the params per sample, seeds base, base + 1, ... (call on a seeded request)."""
        base = self.params.seed or 0
        return [self.params.updated(seed=base + i) for i in range(self.samples)]


@dataclass(frozen=True)
class LensRequest:
    """`lens`: the prompt, candidates per depth, which position, and whether to draw the whole grid."""

    prompt: str = text()
    top_k: int = option(3, "--top-k", "-k", help="Candidates to show per layer.")
    position: int = option(-1, "--position", help="Which prompt position to read (-1: the last).")
    all_positions: bool = option(False, "--all-positions", help="A layer-by-position grid of top tokens.")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        whole("--top-k", self.top_k, low=1)
        whole("--position", self.position)


@dataclass(frozen=True)
class AttentionRequest:
    """`attention`: the prompt, the layer, and one head or all (negative numbers count from the end)."""

    prompt: str = text()
    layer: int = option(0, "--layer", "-l", help="Which decoder block (0 is the first, -1 the last).")
    head: int | None = option(None, "--head",
                              help="One head as a large heat map (default: all heads, small maps and a summary).")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)
        whole("--layer", self.layer)
        if self.head is not None:
            whole("--head", self.head)

    def resolved(self, layers: int, heads: int) -> tuple[int, int | None]:
        """The (layer, head) in range for a model of `layers` blocks and `heads` heads."""
        if not -layers <= self.layer < layers:
            raise BadInput(f"--layer must be between 0 and {layers - 1} (or -1 for the last), not {self.layer}")
        if self.head is not None and not -heads <= self.head < heads:
            raise BadInput(f"--head must be between 0 and {heads - 1}, not {self.head}")
        return self.layer % layers, None if self.head is None else self.head % heads


@dataclass(frozen=True)
class ForwardRequest:
    """`forward`: the prompt whose forward pass is traced."""

    prompt: str = text()
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        check_prompt(self.prompt)


@dataclass(frozen=True)
class TokensRequest:
    """`tokens`: the text to cut into tokens (it may be empty: an empty text is zero tokens and a BOS)."""

    text: str = text("[TEXT]", "The text to cut into tokens (- reads stdin; or --file PATH; one trailing "
                      "newline is dropped).")
    chat: bool = option(False, "--chat", help=CHAT_HELP)

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise BadInput(f"the text must be a string, not {type(self.text).__name__}")


@dataclass(frozen=True)
class InspectRequest:
    """`inspect`: the architecture card, and what --quantize KIND would make of the weights."""

    quantize: str | None = from_spec("quantize")

    def __post_init__(self) -> None:
        check_quantize(self.quantize)


# The book's chapter 3 experiment: this prompt, 100 new tokens, cache on and off.
DEFAULT_PROMPT = (
    "Write a very long email apologizing to Sarah for the tragic gardening mishap. Explain how it happened."
)
DEFAULT_NEW_TOKENS = 100


@dataclass(frozen=True)
class BenchSettings:
    """What to time: prompt, length, modes, warm-up and repeats; checked before any loading."""

    new_tokens: int = DEFAULT_NEW_TOKENS
    prompt: str | None = None
    prompt_tokens: int | None = None
    modes: tuple[CacheKind, ...] = ("dynamic", "none")
    warmup: int = 1
    repeat: int = 3
    sweep: tuple[int, ...] = ()
    bandwidth_gbs: float | None = None
    reference: bool = True
    threads: int | None = None  # CPU threads for torch; None leaves torch's default
    compile: bool = False  # time the decode step torch.compile'd over a static cache (core/decoding/compiled.py)

    def __post_init__(self) -> None:
        new_tokens(self.new_tokens, "--new-tokens")
        if self.prompt is not None and self.prompt_tokens is not None:
            raise BadInput("give --prompt or --prompt-tokens, not both")
        if self.prompt is not None and not self.prompt.strip():
            raise EmptyPrompt("--prompt is empty: give some text, or --prompt-tokens N")
        if self.prompt_tokens is not None and self.prompt_tokens < 1:
            raise BadInput(f"--prompt-tokens must be at least 1, not {self.prompt_tokens}")
        if not self.modes:
            raise BadInput("nothing to time: choose --cache, --no-cache, or neither for both")
        if len(set(self.modes)) != len(self.modes) or any(m not in CACHE_KINDS for m in self.modes):
            raise BadInput(f"--modes takes distinct kinds among {', '.join(CACHE_KINDS)}, not {self.modes!r}")
        if self.warmup < 0:
            raise BadInput(f"--warmup must be 0 or more, not {self.warmup}")
        if self.repeat < 1:
            raise BadInput(f"--repeat must be at least 1, not {self.repeat}")
        if any(n < 1 for n in self.sweep):
            raise BadInput(f"--sweep lengths must be at least 1, not {min(self.sweep)}")
        check_threads(self.threads)
        if self.bandwidth_gbs is not None and not self.bandwidth_gbs > 0:
            raise BadInput(f"--bandwidth must be a positive number of GB/s, not {self.bandwidth_gbs}")

    @property
    def lengths(self) -> tuple[int, ...]:
        """The new-token counts to run: the sweep's, or just --new-tokens."""
        return self.sweep or (self.new_tokens,)


def parse_sweep(text: str | None) -> tuple[int, ...]:
    """`32,128,512` -> (32, 128, 512), sorted and without repeats."""
    if not text:
        return ()
    try:
        lengths = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BadInput(f"--sweep wants lengths such as 32,128,512, not {text!r}") from None
    if len(lengths) < 2:
        raise BadInput(f"--sweep needs at least two lengths to show growth, not {text!r}")
    return tuple(lengths)


def modes_for(cache: bool | None, modes: str | None = None) -> tuple[CacheKind, ...]:
    """--modes dynamic,static,none as given; else --cache -> dynamic, --no-cache -> none, neither -> both."""
    if modes is not None:
        if cache is not None:
            raise BadInput("give --modes or --cache/--no-cache, not both")
        chosen = tuple(part.strip() for part in modes.split(",") if part.strip())
        if not chosen or any(kind not in CACHE_KINDS for kind in chosen):
            raise BadInput(f"--modes takes cache kinds among {', '.join(CACHE_KINDS)}, e.g. dynamic,static; "
                                  f"not {modes!r}")
        return tuple(dict.fromkeys(chosen))  # type: ignore[return-value]
    return ("dynamic", "none") if cache is None else ("dynamic",) if cache else ("none",)
