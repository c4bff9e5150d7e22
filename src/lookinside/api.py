"""The Python API: every view of the command line, on a model you load here or already hold.

    import lookinside as li
    lm = li.load("tiny")                  # or li.wrap(model, tokenizer): no copy, no reload
    li.next_token(lm, "The capital of France is")

Each function returns a `Result`: the core record (its fields read through, e.g. `result.top`),
`.to_dict()` the record as JSON values (core/wire.py's `to_wire`, what the command's `--json` prints), drawn by Rich in a terminal (`rich.print(result)`)
and as HTML in Jupyter. Mistakes raise the project's typed errors (`lookinside.core.errors`),
each with the one-line message the command would print; nothing here exits the interpreter.
"""

from __future__ import annotations

import inspect as inspect_module
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from lookinside.core import arguments, errors
from lookinside.core.backends.seam import as_backend
from lookinside.core.backends.served import connect as open_server
from lookinside.core.bench.stream import stream_bench
from lookinside.core.chat.defaults import ChatRequest
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec
from lookinside.core.records import Completion, Generation
from lookinside.core.request import BenchSettings, GenerationSettings, build, knobs, modes_for, parse_sweep, whole
from lookinside.core.wire import to_wire
from lookinside.views import VIEWS, View

if TYPE_CHECKING:
    from rich.console import RenderableType

    from lookinside.core.backends.seam import Backend
    from lookinside.core.model.loading import LM
    from lookinside.core.records import Step, Stream
    from lookinside.ui.generate import Source  # Rich (ui/): not for `import lookinside`

T = TypeVar("T")


@dataclass(frozen=True)
class Result(Generic[T]):
    """A view's result: `record` (the core dataclass) and its Rich view, as the command draws it."""

    record: T
    view: Callable[[T], RenderableType]

    @classmethod
    def of(cls, view: View, record: Any) -> Result[Any]:
        """The result of a view (lookinside.views), drawn as its command draws it."""
        return cls(record, view.draw)

    def to_dict(self) -> dict[str, Any]:
        """The record as JSON values (core/wire.py), what the command's --json prints: a NaN or infinity is None,
        said in "nulls" (core/finite.py)."""
        return to_wire(self.record)

    def __rich__(self) -> RenderableType:
        return self.view(self.record)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the terminal's picture as HTML, colours kept."""
        from lookinside.ui.console import recorded  # deferred: rich: only when a result is drawn

        return recorded(self.view(self.record)).export_html(
            inline_styles=True, code_format="<pre style=\"font-family:monospace\">{code}</pre>")

    def save(self, path: str | Path) -> Path:
        """Write the picture to `path` as the command's --svg or --html does (by its suffix), atomically."""
        from lookinside.ui.console import save_view  # deferred: rich: only when a result is drawn

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
    """Load a model as the command line does (`tiny`, a Hub id, a directory, a GGUF file or `ollama:NAME`)."""
    from lookinside.core.model import loading  # deferred: torch and transformers: only when a model loads

    model = arguments.model_name(model)
    with loading.progress(bars=model != "tiny"):  # the tiny model loads in a blink: no bar in a notebook's output
        return loading.load(LoadSpec(model=model, device=device, dtype=dtype, attn=attn, device_map=device_map,
                                     max_memory=max_memory, quantize=quantize, threads=threads,
                                     trust_remote_code=trust_remote_code))


def wrap(model: Any, tokenizer: Any, name: str | None = None) -> LM:
    """A model you already loaded with transformers (any device, dtype or device map), used as it is.

    Nothing is copied or moved (only switched to eval mode, as from_pretrained leaves it). Refused: a
    model that is not a causal LM (no LM head, or an encoder-decoder), and a tokenizer that does not
    fit the model's embedding (more tokens than rows, or fewer than half: it belongs to another model).
    """
    import torch  # wrap() is handed a torch model: torch is there already

    from lookinside.core.model.loading import LM  # deferred: torch

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
    from transformers import PreTrainedModel  # transformers: only for a model being wrapped

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
    from transformers import PreTrainedTokenizerBase  # transformers: as above

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


class Generating:
    """`li.generate`'s answer: iterate it for `Step`s as they are made; `result()` runs to the end."""

    def __init__(self, source: Source, stream: Stream) -> None:
        self.source, self.stream = source, stream
        self.run: Generation = Generation(prompt_ids=list(source.prompt_ids or []), seed=stream.seed)

    @property
    def seed(self) -> int | None:
        """The seed in effect (None when greedy)."""
        return self.stream.seed

    def __repr__(self) -> str:
        return (f"Generating({self.source.model}, {self.source.prompt!r}, {len(self.run.steps)} steps so far): "
                "iterate it for steps, or .result() for the whole run")

    def __iter__(self) -> Iterator[Step]:
        for step in self.stream:
            self.run.steps.append(step)
            yield step

    def result(self) -> Result[Completion]:
        """Generate what is left and return the whole run (`llm generate --json`'s record: `.run`, `.pieces`)."""
        from lookinside.ui.compare import run_text  # deferred: rich: only when a result is drawn

        for _ in self:
            pass
        return Result(self.source.completion(self.run), lambda done: run_text(done.run, None, done.prompt))


def generate(lm: LM | Backend, prompt: str, *, max_new_tokens: int = 128, stop: tuple[str, ...] = (),
             ignore_eos: bool = False, chat: bool = False, **sampling: Any) -> Generating:
    """A completion, step by step (`llm generate`): the model's sampling defaults, your keywords on top."""
    arguments.view(lm, prompt, "generate")
    backend = as_backend(lm)
    settings = GenerationSettings(max_new_tokens=max_new_tokens, stop_strings=tuple(stop), ignore_eos=ignore_eos)
    params = ChatRequest(sampling, max_new_tokens).settings(backend.generation_config).params
    from lookinside.ui.generate import Source  # deferred: rich (ui/), not for `import lookinside`

    source = Source(backend.name, prompt, backend.prompt_ids(prompt, chat), backend.token_text)
    return Generating(source, backend.generate(prompt, params, settings, chat))


def connect(url: str, *, api_key: str | None = None, model: str | None = None) -> Backend:
    """A model served elsewhere, for every `li.` view: `llm serve` shows them all; another server what it can.

    `api_key` defaults to $LOOKINSIDE_API_KEY, then $OPENAI_API_KEY. Nothing is loaded here, and no torch imported.
    """
    return open_server(url, api_key, model)


def bench(lm: LM | Backend, *, new_tokens: int = 100, warmup: int = 1, repeat: int = 3, modes: str | None = None,
          cache: bool | None = None, prompt: str | None = None, prompt_tokens: int | None = None,
          sweep: str | None = None, bandwidth: float | None = None, reference: bool = True) -> Result[Any]:
    """Generation timed per KV-cache mode (`llm bench`); `modes` as --modes ("dynamic,static,none"), `sweep` as --sweep.

    On a server (li.connect) the stream is timed from here, as `llm bench --endpoint` does.
    """

    arguments.lm(lm, "bench")
    settings = BenchSettings(new_tokens=new_tokens, warmup=warmup, repeat=repeat, modes=modes_for(cache, modes),
                             prompt=prompt, prompt_tokens=prompt_tokens, sweep=parse_sweep(sweep),
                             bandwidth_gbs=bandwidth, reference=reference)
    backend = as_backend(lm)
    here = backend.weights
    if here is None or not backend.capabilities.kv_cache_switch:
        from lookinside.ui.bench import remote_bench_view  # deferred: rich

        return Result(stream_bench(backend, settings), remote_bench_view)
    from lookinside.core.bench.run import run_bench  # deferred: torch
    from lookinside.ui.bench import bench_view  # deferred: rich

    return Result(run_bench(here, settings, here.notes), bench_view)


def diff(a: LM, b: LM, text: str, *, top_k: int = 10) -> Result[Any]:
    """What B changes in A's predictions over `text`, token by token (`llm diff`, with both models loaded here)."""
    from lookinside.core.inside import diff as core_diff  # deferred: torch
    from lookinside.ui.diff import diff_view  # deferred: rich

    for side in (a, b):
        arguments.lm(side, "diff")
    arguments.text(text, "text", "diff")
    whole("--top-k", top_k, low=1)
    sides = [core_diff.read_side(lm, text, core_diff.describe(lm)) for lm in (a, b)]
    core_diff.check_same_vocabulary(*sides)
    return Result(core_diff.compare_sides(sides[0], sides[1], top_k), diff_view)


def _view_function(name: str) -> Callable[..., Result[Any]]:
    """`li.<name>(lm, ...)`: the view's request from the arguments (its knobs, core/request.py), answered.

    The required knobs (the prompt, patch's two prompts, steer's `add`) may be given by position; the
    rest are keywords named as the command's options (sampling ones as in `FIELDS`). A view that reads
    only the config (inspect) also takes a model's name in place of a loaded model.
    """
    view = VIEWS[name]
    fn = name.replace("-", "_")
    asked = knobs(view.request)
    signature = inspect_module.Signature([
        inspect_module.Parameter("lm", inspect_module.Parameter.POSITIONAL_OR_KEYWORD, annotation="LM"),
        *(inspect_module.Parameter(k.name, inspect_module.Parameter.POSITIONAL_OR_KEYWORD, annotation=k.kind)
          for k in asked if k.required),
        *(inspect_module.Parameter(k.name, inspect_module.Parameter.KEYWORD_ONLY, default=k.default,
                                   annotation=k.kind) for k in asked if not k.required)])

    def function(*args: Any, **kwargs: Any) -> Result[Any]:
        unknown = sorted(set(kwargs) - set(signature.parameters))
        if unknown:
            raise errors.BadInput(f"{fn}() got unknown keyword {', '.join(map(repr, unknown))}; its keywords are "
                                  f"{', '.join(k.name for k in asked if not k.required)}")
        try:
            values = signature.bind(*args, **kwargs).arguments
        except TypeError as exc:  # an unknown keyword, a missing prompt
            raise errors.BadInput(f"{fn}(): {exc}") from None
        lm = values.pop("lm")
        if view.needs == "config" and isinstance(lm, str):  # a model's name: its config, on the meta device
            from lookinside.core.inside.anatomy import on_meta  # deferred: torch and transformers (the meta device)

            lm = on_meta(LoadSpec(model=arguments.model_name(lm)))
        else:
            arguments.lm(lm, fn, runs=view.needs in ("model", "insides"))
        for knob in asked:
            if knob.required and knob.kind is str:  # bound above, so given: text, not bytes or None
                arguments.text(values[knob.name], knob.name.replace("_", " "), fn)
        return Result.of(view, view.run(lm, build(view.request, values)))

    function.__signature__ = signature  # type: ignore[attr-defined]
    function.__name__ = function.__qualname__ = fn
    function.__doc__ = f"{view.help.splitlines()[0]} (`llm {name}`; the keywords are its options)"
    return function


next_token = _view_function("next-token")
compare = _view_function("compare")
tokens = _view_function("tokens")
inspect = _view_function("inspect")
forward = _view_function("forward")
attention = _view_function("attention")
lens = _view_function("lens")
ablate = _view_function("ablate")
patch = _view_function("patch")
steer = _view_function("steer")


def __getattr__(name: str) -> Any:
    """A view added to lookinside.views after these lines is a function here too."""
    if name.replace("_", "-") in VIEWS:
        return _view_function(name.replace("_", "-"))
    raise AttributeError(f"module 'lookinside.api' has no attribute {name!r}")
