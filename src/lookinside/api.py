"""The Python API: every view of the command line, on a model you load here or already hold.

    import lookinside as li
    lm = li.load("tiny")                  # or li.wrap(model, tokenizer): no copy, no reload
    li.next_token(lm, "The capital of France is")

Each function returns a `Result`: the core record (its fields read through, e.g. `result.top`),
`.to_dict()` equal to the command's `--json`, drawn by Rich in a terminal (`rich.print(result)`)
and as HTML in Jupyter. Mistakes raise the project's typed errors (`lookinside.core.errors`),
each with the one-line message the command would print; nothing here exits the interpreter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lookinside.core import arguments, errors
from lookinside.core.request import (
    AttentionRequest,
    BenchSettings,
    CompareRequest,
    GenerationSettings,
    LensRequest,
    NextTokenRequest,
    modes_for,
)
from lookinside.core.sampling import SamplingParams
from lookinside.core.spec import DEFAULT_MODEL, LoadSpec

if TYPE_CHECKING:
    from rich.console import RenderableType

    from lookinside.core.loading import LM
    from lookinside.core.records import Generation, Step, Stream

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """A view's result: `record` (the core dataclass), its Rich view and its JSON, as the command draws them."""

    record: T
    view: Callable[[T], RenderableType]
    json: Callable[[T], dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """What the command's --json prints, as a dict."""
        return self.json(self.record)

    def __rich__(self) -> RenderableType:
        return self.view(self.record)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the terminal's picture as HTML, colours kept."""
        from lookinside.ui.console import recorded

        return recorded(self.view(self.record)).export_html(
            inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")

    def save(self, path: str | Path) -> Path:
        """Write the picture to `path` as the command's --svg or --html does (by its suffix), atomically."""
        from lookinside.ui.console import save_view

        target = Path(path)
        kind = target.suffix.lower()
        if kind not in (".svg", ".html", ".htm"):
            raise errors.BadInput(f"save() writes .svg or .html, not {target.name!r}")
        save_view(self.view(self.record), target if kind == ".svg" else None, None if kind == ".svg" else target)
        return target

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.record, name)

    def __repr__(self) -> str:
        return f"Result({type(self.record).__name__}: {', '.join(self.to_dict())})"


# ---- models


def load(model: str = DEFAULT_MODEL, *, device: str = "auto", dtype: str = "auto", attn: str = "sdpa",
         device_map: str | None = None, max_memory: dict[int | str, str] | None = None, quantize: str | None = None,
         threads: int | None = None, trust_remote_code: bool = False) -> LM:
    """Load a model as the command line does (`tiny`, a Hub id or a directory), checked as it loads."""
    from lookinside.core import loading

    model = arguments.model_name(model)
    return loading.load(LoadSpec(model=model, device=device, dtype=dtype, attn=attn, device_map=device_map,
                                 max_memory=max_memory, quantize=quantize, threads=threads,
                                 trust_remote_code=trust_remote_code))


def wrap(model: Any, tokenizer: Any, name: str | None = None) -> LM:
    """A model you already loaded with transformers (any device, dtype or device map), used as it is.

    Nothing is copied or moved (only switched to eval mode, as from_pretrained leaves it). Refused: a
    model that is not a causal LM (no LM head, or an encoder-decoder), and a tokenizer that does not
    fit the model's embedding (more tokens than rows, or fewer than half: it belongs to another model).
    """
    import torch

    from lookinside.core.loading import LM

    _check_causal_lm(model)
    _check_tokenizer_fits(tokenizer, model.get_input_embeddings().weight.shape[0])
    embedding = model.get_input_embeddings().weight
    label = name or getattr(model, "name_or_path", None) or type(model).__name__
    model.eval()
    device = embedding.device if embedding.device.type != "meta" else torch.device("cpu")
    return LM(name=str(label), model=model, tokenizer=tokenizer, device=device, dtype=embedding.dtype,
              source="wrapped by lookinside.wrap")


def _check_causal_lm(model: Any) -> None:
    """Raise NotACausalLM unless `model` is a transformers model that predicts the next token from the left."""
    from transformers import PreTrainedModel

    if not isinstance(model, PreTrainedModel):
        raise errors.NotACausalLM(f"wrap() needs a transformers model, not {type(model).__name__}")
    kind = type(model).__name__
    if getattr(model.config, "is_encoder_decoder", False):
        raise errors.NotACausalLM(f"{kind} is an encoder-decoder model, not a causal language model; "
                                  "lookinside looks into decoder-only models (AutoModelForCausalLM)")
    if model.get_output_embeddings() is None or not hasattr(model, "generate"):
        raise errors.NotACausalLM(f"{kind} is not a causal language model (it has no LM head); "
                                  "load it with AutoModelForCausalLM")


def _check_tokenizer_fits(tokenizer: Any, rows: int) -> None:
    """Raise BadInput unless `tokenizer` is a transformers tokenizer sized for an embedding of `rows` rows.

    Embeddings are often padded past the tokenizer (Phi-3: 32,064 rows for 32,011 tokens), never by half.
    """
    from transformers import PreTrainedTokenizerBase

    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise errors.BadInput(f"wrap() needs a transformers tokenizer, not {type(tokenizer).__name__}")
    size = len(tokenizer)
    if size > rows:
        raise errors.BadInput(f"the tokenizer has {size:,} tokens but the model's embedding only "
                              f"{rows:,} rows: it belongs to another model")
    if size * 2 < rows:
        raise errors.BadInput(f"the tokenizer has {size:,} tokens but the model's embedding {rows:,} rows: "
                              "it belongs to another model")


# ---- the views


def next_token(lm: LM, prompt: str, *, top_k: int = 10, temperature: float | None = None,
               chat: bool = False) -> Result[Any]:
    """The top-k next tokens, the prompt's tokens and the forward pass's shapes (`llm next-token`)."""
    from lookinside.core import predict
    from lookinside.ui.next_token import next_token_json, next_token_view

    arguments.view(lm, prompt, "next_token")
    request = NextTokenRequest(prompt, top_k=top_k, temperature=temperature, chat=chat)
    return Result(predict.next_token(lm, request), next_token_view, next_token_json)


def compare(lm: LM, prompt: str, *, samples: int = 3, max_new_tokens: int = 40, stop: tuple[str, ...] = (),
            ignore_eos: bool = False, chat: bool = False, **sampling: Any) -> Result[Any]:
    """Greedy decoding beside `samples` seeded samples (`llm compare`); sampling keywords as the flags."""
    from lookinside.core import compare as core_compare
    from lookinside.ui.compare import compare_json, compare_view

    arguments.view(lm, prompt, "compare")
    arguments.sampling(sampling, "compare")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop), ignore_eos=ignore_eos)
    request = CompareRequest(prompt, SamplingParams(**sampling), settings, samples=samples, chat=chat)
    return Result(core_compare.compare(lm, request), compare_view, compare_json)


class Generating:
    """`li.generate`'s answer: iterate it for `Step`s as they are made; `result()` runs to the end."""

    def __init__(self, lm: LM, prompt: str, ids: list[int], stream: Stream) -> None:
        from lookinside.core.records import Generation

        self.lm, self.prompt, self.stream = lm, prompt, stream
        self.run: Generation = Generation(prompt_ids=list(ids), seed=stream.seed)

    @property
    def seed(self) -> int | None:
        """The seed in effect (None when greedy)."""
        return self.stream.seed

    def __repr__(self) -> str:
        return (f"Generating({self.lm.name}, {self.prompt!r}, {len(self.run.steps)} steps so far): "
                "iterate it for steps, or .result() for the whole run")

    def __iter__(self) -> Iterator[Step]:
        for step in self.stream:
            self.run.steps.append(step)
            yield step

    def result(self) -> Result[Generation]:
        """Generate what is left and return the whole run (`llm generate --json`'s object)."""
        for _ in self:
            pass
        lm, prompt = self.lm, self.prompt

        def to_json(run: Generation) -> dict[str, Any]:
            from lookinside.ui.generate import generation_json

            return generation_json(run, lm.tokenizer, lm.name, prompt)

        def view(run: Generation) -> RenderableType:
            from lookinside.ui.compare import run_text

            return run_text(run, None, prompt)

        return Result(self.run, view, to_json)


def generate(lm: LM, prompt: str, *, max_new_tokens: int = 128, stop: tuple[str, ...] = (), ignore_eos: bool = False,
             chat: bool = False, **sampling: Any) -> Generating:
    """A completion, step by step (`llm generate`): the model's sampling defaults, your keywords on top."""
    from lookinside.core.conversation import ChatRequest
    from lookinside.core.generate import generate as start
    from lookinside.core.prompting import encode_prompt

    arguments.view(lm, prompt, "generate")
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop), ignore_eos=ignore_eos)
    params = ChatRequest(sampling, max_new_tokens).settings(lm.model.generation_config).params
    ids = encode_prompt(lm.tokenizer, prompt, chat=chat)
    return Generating(lm, prompt, ids, start(lm, ids, params, settings))


def bench(lm: LM, *, new_tokens: int = 100, warmup: int = 1, repeat: int = 3, modes: str | None = None,
          cache: bool | None = None, prompt: str | None = None, prompt_tokens: int | None = None,
          sweep: str | None = None, bandwidth: float | None = None, reference: bool = True) -> Result[Any]:
    """Generation timed per KV-cache mode (`llm bench`); `modes` as --modes ("dynamic,static,none"), `sweep` as --sweep."""
    from lookinside.core.bench import run_bench
    from lookinside.core.request import parse_sweep
    from lookinside.ui.bench import bench_json, bench_view

    arguments.lm(lm, "bench")
    settings = BenchSettings(new_tokens=new_tokens, warmup=warmup, repeat=repeat, modes=modes_for(cache, modes),
                             prompt=prompt, prompt_tokens=prompt_tokens, sweep=parse_sweep(sweep),
                             bandwidth_gbs=bandwidth, reference=reference)
    return Result(run_bench(lm, settings, lm.notes), bench_view, bench_json)


def inspect(model: LM | str) -> Result[Any]:
    """The architecture card and module tree (`llm inspect`): of a loaded model, or of a name from its config."""
    from lookinside.core import anatomy
    from lookinside.ui.anatomy import anatomy_json, anatomy_view

    if isinstance(model, str):
        return Result(anatomy.inspect_model(LoadSpec(model=model)), anatomy_view, anatomy_json)
    arguments.lm(model, "inspect", runs=False)
    return Result(anatomy.anatomy_of(model.name, model.model), anatomy_view, anatomy_json)


def tokens(lm: LM, text: str, *, chat: bool = False) -> Result[Any]:
    """Each token of `text` with its id and piece (`llm tokens`)."""
    from lookinside.core import tokens as core_tokens
    from lookinside.ui.tokens import tokens_json, tokens_view

    arguments.view(lm, text, "tokens", what="text", runs=False)
    return Result(core_tokens.tokenize(lm.name, lm.tokenizer, text, chat=chat), tokens_view, tokens_json)


def forward(lm: LM, prompt: str, *, chat: bool = False) -> Result[Any]:
    """The shapes through one forward pass, stage by stage (`llm forward`)."""
    from lookinside.core import hooks
    from lookinside.core.prompting import check_prompt
    from lookinside.ui.forward import forward_json, forward_view

    arguments.view(lm, prompt, "forward")
    check_prompt(prompt)
    return Result(hooks.trace_forward(lm, prompt, chat=chat), forward_view, forward_json)


def attention(lm: LM, prompt: str, *, layer: int = 0, head: int | None = None, chat: bool = False) -> Result[Any]:
    """One layer's attention maps (`llm attention`); a non-eager model is switched to eager for the pass and back."""
    from lookinside.core import attention as core_attention
    from lookinside.ui.attention import attention_json, attention_view

    arguments.view(lm, prompt, "attention")
    request = AttentionRequest(prompt, layer=layer, head=head, chat=chat)
    before = lm.attn_implementation
    try:
        maps = core_attention.attention_maps(lm, request)
    finally:
        if lm.attn_implementation != before:
            lm.model.set_attn_implementation(before)  # the user's model is left as it was given
    return Result(maps, attention_view, attention_json)


def lens(lm: LM, prompt: str, *, top_k: int = 3, position: int = -1, all_positions: bool = False,
         chat: bool = False) -> Result[Any]:
    """The logit lens: what each layer would predict (`llm lens`)."""
    from lookinside.core import lens as core_lens
    from lookinside.ui.lens import lens_json, lens_view

    arguments.view(lm, prompt, "lens")
    request = LensRequest(prompt, top_k=top_k, position=position, all_positions=all_positions, chat=chat)
    return Result(core_lens.logit_lens(lm, request), lens_view, lens_json)

