"""Option types shared by the commands, and two decorators that add whole groups of options.

A command decorated with `model_options` declares `spec: LoadSpec` and receives the
--model/--device/--dtype/--attn/--device-map/--max-memory/--quantize/--threads/--trust-remote-code
options already checked and bundled. One decorated with `sampling_options` declares
`request: ChatRequest` and receives the --temperature/--top-k/--top-p/--min-p/
--repetition-penalty/--seed values the user gave, checked (absent ones are the model's defaults, laid under
them once the model is known). `option_group` makes such a decorator from a list of parameters.
"""

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from lookinside.cli.inputs import text_or_file
from lookinside.core.chat.defaults import ChatRequest
from lookinside.core.model.spec import ATTENTIONS, DEFAULT_MODEL, DEVICES, DTYPES, LoadSpec, parse_max_memory
from lookinside.core.request import CHAT_HELP
from lookinside.core.sampling_params import FIELDS, SamplingField

MODEL_PANEL = "Model"
SAMPLING_PANEL = "Sampling"

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of the view.")]
ChatOpt = Annotated[bool, typer.Option("--chat", help=CHAT_HELP)]
FileOpt = Annotated[Optional[Path], typer.Option("--file", "-f", metavar="PATH", help="Read the text from this file.",
                                                 show_default=False)]
MaxNewTokensOpt = Annotated[int, typer.Option("--max-new-tokens", "-n", help="Most tokens to generate.",
                                              rich_help_panel=SAMPLING_PANEL)]


def _choice(values: tuple[str, ...]) -> str:
    return "|".join(values)


def _load_parameters() -> list[inspect.Parameter]:
    def option(name: str, default: Any, annotation: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)

    return [
        option("model", None, Annotated[Optional[str], typer.Option(
            "--model", "-m", envvar="LOOKINSIDE_MODEL", metavar="NAME", rich_help_panel=MODEL_PANEL,
            show_default=False, help=f"A Hub id, a local directory, a GGUF file, ollama:NAME[:TAG] (a model Ollama "
            f"pulled), or `tiny` (built in, works offline). "
            f"[default: {DEFAULT_MODEL}; with --endpoint: the server's only model]")]),
        option("device", "auto", Annotated[str, typer.Option(
            "--device", metavar="DEVICE", rich_help_panel=MODEL_PANEL,
            help=f"{_choice(DEVICES)}|cuda:N. auto: CUDA if available, else MPS, else CPU.")]),
        option("dtype", "auto", Annotated[str, typer.Option(
            "--dtype", metavar="DTYPE", rich_help_panel=MODEL_PANEL,
            help=f"{_choice(DTYPES)}. auto: bfloat16 on GPUs that have it, float16 on older ones; on the CPU a "
            "bfloat16 checkpoint stays bfloat16 where the CPU has bfloat16 arithmetic, else float32.")]),
        option("attn", "sdpa", Annotated[str, typer.Option(
            "--attn", metavar="IMPL", rich_help_panel=MODEL_PANEL,
            help=f"Attention implementation: {_choice(ATTENTIONS)}.")]),
        option("device_map", None, Annotated[Optional[str], typer.Option(
            "--device-map", metavar="MAP", rich_help_panel=MODEL_PANEL, show_default=False,
            help="accelerate placement, e.g. auto: spread a large model over GPUs and CPU.")]),
        option("max_memory", None, Annotated[Optional[str], typer.Option(
            "--max-memory", metavar="LIMITS", rich_help_panel=MODEL_PANEL, show_default=False,
            help="Per-device limits for --device-map, e.g. 0=20GiB,cpu=64GiB.")]),
        option("quantize", None, Annotated[Optional[str], typer.Option(
            "--quantize", metavar="KIND", rich_help_panel=MODEL_PANEL, show_default=False,
            help="int4 | int8 (CPU: int8-dynamic; GPU: torchao) | int8-weight | int8-dynamic | 8bit | 4bit "
                 "(bitsandbytes NF4: CUDA) | float (a GGUF dequantized). Weights in low precision.")]),
        option("threads", None, Annotated[Optional[int], typer.Option(
            "--threads", metavar="N", rich_help_panel=MODEL_PANEL, show_default=False,
            help="CPU threads for torch (default: one per idle core, measured at load).")]),
        option("trust_remote_code", False, Annotated[bool, typer.Option(
            "--trust-remote-code", rich_help_panel=MODEL_PANEL,
            help="Run the model repository's own Python code (only for repos you trust).")]),
    ]


def _sampling_parameters() -> list[inspect.Parameter]:
    """One option per field of core.sampling_params.FIELDS (so a new sampler needs no edit here)."""
    def option(f: SamplingField) -> inspect.Parameter:
        flag = typer.Option(f.flag, *f.shorts, help=f.help, rich_help_panel=SAMPLING_PANEL, show_default=False)
        return inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None,
                                 annotation=Annotated[Optional[f.kind], flag])

    return [option(f) for f in FIELDS]


def option_group(target: str, parameters: Callable[[], list[inspect.Parameter]],
                 build: Callable[[dict[str, Any]], Any]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A decorator that adds `parameters` to a command and hands it `target=build(their values)`."""
    names = tuple(p.name for p in parameters())

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        own = [p for p in signature.parameters.values() if p.name != target]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            chosen = {name: kwargs.pop(name) for name in names}
            return fn(*args, **{target: build(chosen)}, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=own + parameters())  # type: ignore[attr-defined]
        return wrapper

    return decorate


def _load_spec(chosen: dict[str, Any]) -> LoadSpec:
    max_memory, model = chosen.pop("max_memory"), chosen.pop("model")
    return LoadSpec(**chosen, model=DEFAULT_MODEL if model is None else model, model_named=model is not None,
                    max_memory=parse_max_memory(max_memory) if max_memory else None)


model_options = option_group("spec", _load_parameters, _load_spec)
model_options.__doc__ = "Give a command the loading options; it receives them as `spec: LoadSpec`."
# The sampling flags arrive as one typed, checked value (bad values fail before the model loads).
sampling_options = option_group("request", _sampling_parameters, lambda given: ChatRequest(overrides=given))
sampling_options.__doc__ = "Give a command the sampling options; it receives those given as `request: ChatRequest`."


@dataclass(frozen=True)
class Keep:
    """Where to keep a copy of the view: an SVG picture and/or an HTML page of what the terminal shows."""

    svg: Path | None = None
    html: Path | None = None


def _keep_parameters() -> list[inspect.Parameter]:
    def option(name: str, help: str) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[
            Path | None, typer.Option(f"--{name}", metavar="FILE", help=help, show_default=False)])

    return [option("svg", "Also save the view as an SVG picture (what the terminal shows)."),
            option("html", "Also save the view as an HTML page, colours kept.")]


keep_options = option_group("keep", _keep_parameters, lambda chosen: Keep(**chosen))
keep_options.__doc__ = "Give a view command --svg and --html; it receives them as `keep: Keep`."


REMOTE_PANEL = "Remote (OpenAI-compatible server)"


@dataclass(frozen=True)
class Remote:
    """--endpoint and --api-key as given (the key is never printed: it is left out of repr)."""

    endpoint: Optional[str] = None
    api_key: Optional[str] = field(default=None, repr=False)
    no_server: bool = False  # run here even when an `llm serve` of the same model is running


def _remote_parameters() -> list[inspect.Parameter]:
    def option(name: str, annotation: Any) -> inspect.Parameter:
        return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=annotation)

    return [
        option("endpoint", Annotated[Optional[str], typer.Option(
            "--endpoint", metavar="URL", envvar="LOOKINSIDE_ENDPOINT", rich_help_panel=REMOTE_PANEL,
            show_default=False, help="Ask an OpenAI-compatible server (vLLM, llama.cpp, Ollama...) instead of "
            "loading the model here, e.g. http://127.0.0.1:8000/v1; --model then names a served model.")]),
        option("api_key", Annotated[Optional[str], typer.Option(
            "--api-key", metavar="KEY", envvar="LOOKINSIDE_API_KEY", rich_help_panel=REMOTE_PANEL,
            show_default=False, show_envvar=True,
            help="The server's API key (default: $LOOKINSIDE_API_KEY, then $OPENAI_API_KEY); never printed.")]),
        inspect.Parameter("no_server", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=Annotated[
            bool, typer.Option("--no-server", envvar="LOOKINSIDE_NO_SERVER", rich_help_panel=REMOTE_PANEL,
                               show_envvar=True, help="Load the model here even when `llm serve` runs it.")]),
    ]


remote_options = option_group("remote", _remote_parameters, lambda chosen: Remote(**chosen))
remote_options.__doc__ = "Give a command --endpoint and --api-key; it receives them as `remote: Remote`."



def file_option(argument: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Give a command `--file PATH` as the other way to pass its text `argument` (exactly one of the two)."""
    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        signature = inspect.signature(fn)
        extra = inspect.Parameter("file", inspect.Parameter.KEYWORD_ONLY, default=None, annotation=FileOpt)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[argument] = text_or_file(kwargs.get(argument), kwargs.pop("file"))
            return fn(*args, **kwargs)

        wrapper.__signature__ = signature.replace(parameters=[*signature.parameters.values(), extra])  # type: ignore[attr-defined]
        return wrapper

    return decorate
