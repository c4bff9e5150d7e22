"""Turn a `LoadSpec` (model name, device, dtype, attention) into a loaded `LM`.

A model is `tiny` (the built-in one), a local directory, or a Hugging Face Hub id.
Every expected failure becomes a typed error from `lookinside.core.errors`.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import torch

from lookinside.core import errors
from lookinside.core.model import checks, gguf
from lookinside.core.model.kernels import use_matrix_vector
from lookinside.core.model.quantize import (
    Quantized,
    convert_after_loading,
    load_dtype,
    quantization_config,
    quantization_facts,
)
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec
from lookinside.core.model.threads import ThreadChoice, choose_threads
from lookinside.tiny import ASSETS as TINY_ASSETS

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from lookinside.core.model.gguf import Dequantized

# torchao, when installed, is imported by transformers on every load; its wheel then logs a warning for each
# CUDA-only kernel this machine cannot load, and torch one for each enum it registers. Not the user's business.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Configs the project carries, so that meta-device views and random-weight benches work offline.
CARRIED_CONFIGS = {DEFAULT_MODEL: CONFIGS / "phi-3-mini-4k-instruct"}
TORCH_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


@dataclass
class LM:
    """A loaded causal LM with its tokenizer, and where it lives."""

    name: str
    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    device: torch.device
    dtype: torch.dtype
    source: str = field(default="")
    notes: tuple[str, ...] = ()  # what the user should know about how it was loaded
    threads: ThreadChoice | None = None  # torch's CPU thread count, set by `load`
    quantized: Quantized | None = None  # what --quantize converted, checked after loading
    origin: Dequantized | None = None  # what a GGUF file's weights were before loading, said when loading

    @property
    def config(self) -> PretrainedConfig:
        """The model's config."""
        return self.model.config

    @property
    def context_length(self) -> int:
        """How many positions the model attends over."""
        return context_length(self.config, self.tokenizer)

    @property
    def end_token_ids(self) -> list[int]:
        """Token ids that end a reply: the generation config's eos ids, else the tokenizer's."""
        ids = self.model.generation_config.eos_token_id
        if ids is None:
            ids = self.tokenizer.eos_token_id
        ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
        return sorted(set(ids))

    @property
    def attn_implementation(self) -> str:
        """The attention implementation transformers is using."""
        return str(getattr(self.config, "_attn_implementation", None) or "eager")


def context_length(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase | None = None) -> int:
    """The model's context length, from its config (or its tokenizer as a fallback)."""
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", None)
    return limit if isinstance(limit, int) and limit < 10**9 else 2048


def resolve_device(requested: str) -> torch.device:
    """`auto` is CUDA if available, else MPS, else CPU; an absent device is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    device = torch.device(requested)
    if device.type == "cuda" and not torch.cuda.is_available():
        build = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise errors.DeviceUnavailable(
            f"--device {requested} asked for CUDA, but torch {torch.__version__} ({build}) sees no CUDA GPU; "
            "use --device cpu or --device auto"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise errors.DeviceUnavailable(f"--device {requested}: there are only {torch.cuda.device_count()} CUDA GPUs")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise errors.DeviceUnavailable(f"--device {requested} asked for Apple MPS, which is not available here")
    return device


def resolve_dtype(requested: str, device: torch.device, checkpoint: torch.dtype | None = None) -> torch.dtype:
    """`auto`: bfloat16 on GPUs that have it (Ampere and newer), float16 on older ones; on the CPU, a bfloat16
    checkpoint stays bfloat16 where the CPU computes it natively (AVX512-BF16 or AMX), everything else float32.

    On this project's Xeon (AMX) a bfloat16 Phi-3 shape decoded 2.4x faster than in float32 with half the
    memory, while the float32 tiny model ran 2.3x slower in bfloat16 (docs/diff.md): so never convert up or
    down on the CPU, keep what the checkpoint holds when the hardware has it.
    """
    if requested != "auto":
        return TORCH_DTYPES[requested]
    if device.type == "cuda":
        major, _ = torch.cuda.get_device_capability(device)
        return torch.bfloat16 if major >= 8 else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16 if checkpoint == torch.bfloat16 and cpu_has_bf16() else torch.float32


@functools.cache
def cpu_has_bf16() -> bool:
    """True when the CPU has bfloat16 arithmetic (x86 AVX512-BF16 or AMX-BF16; Arm's BF16 extension)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "bf16"))


def resolve_source(name: str) -> str:
    """The directory or Hub id to load `name` from; fails fast when the Hub is out of reach."""
    if name == "tiny":
        return str(TINY_ASSETS)
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name.startswith((".", "/", "~")) or path.suffix or name.count("/") > 1:
        raise errors.ModelNotFound(f"model {name!r}: no such directory (and it is not a Hub id like owner/name)")
    if _cached_on_disk(name) or _hub_reachable():
        return name
    raise errors.ModelUnavailable(
        f"cannot reach the Hugging Face Hub to download {name!r} and no local copy is cached; "
        "use --model tiny (built in) or --model /path/to/a/local/model"
    )


def load_config(spec: LoadSpec) -> tuple[str, PretrainedConfig]:
    """The source and config for `spec.model`, without reading any weights."""
    from transformers import AutoConfig

    if (file := gguf.open_file(spec.model)) is not None:
        with _hub_errors(spec.model):
            config = gguf.load_config(spec.model, file, spec.trust_remote_code)
        check_causal_lm(spec.model, config)
        return str(file.path), config
    source = CARRIED_CONFIGS.get(spec.model) if spec.random_weights else None
    source = str(source) if source and not _cached_on_disk(spec.model) else resolve_source(spec.model)
    checks.check_files(spec.model, source)  # a local directory's files, before transformers reads them
    with checks.held() as release:  # transformers' warnings about a broken config only after our checks passed
        with _hub_errors(spec.model):
            config = AutoConfig.from_pretrained(source, trust_remote_code=spec.trust_remote_code)
        check_causal_lm(spec.model, config)
        checks.check_config(spec.model, config, checks.config_file(spec.model, source))
    release()
    return source, config


def load_config_offline(name: str, trust_remote_code: bool = False) -> PretrainedConfig:
    """A config for views that need no weights: a carried copy first, then the usual sources."""
    carried = CARRIED_CONFIGS.get(name)
    spec = LoadSpec(model=name, trust_remote_code=trust_remote_code, random_weights=carried is not None)
    return load_config(spec)[1]


def check_causal_lm(name: str, config: PretrainedConfig) -> None:
    """Refuse configs that transformers cannot load as a causal LM."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING or getattr(config, "auto_map", {}).get("AutoModelForCausalLM"):
        return
    raise errors.NotACausalLM(
        f"{name!r} is a {config.model_type!r} model, not a causal (text-generating) language model"
    )


def load_tokenizer(spec: LoadSpec, source: str | None = None) -> PreTrainedTokenizerBase:
    """Only the tokenizer of `spec.model` (the carried copy of a default model's, unless a download is cached)."""
    from transformers import AutoTokenizer

    if source is None and (file := gguf.open_file(spec.model)) is not None:
        with _hub_errors(spec.model):
            return gguf.load_tokenizer(file, spec.trust_remote_code)
    source = source or carried_tokenizer(spec.model) or resolve_source(spec.model)
    checks.check_files(spec.model, source, checks.TOKENIZER_FILES)
    with _hub_errors(spec.model), checks.naming_the_tokenizer(source):
        return AutoTokenizer.from_pretrained(source, trust_remote_code=spec.trust_remote_code)


def carried_tokenizer(name: str) -> str | None:
    """The directory of the tokenizer this project carries for `name`, when no downloaded copy is cached."""
    carried = CARRIED_CONFIGS.get(name)
    if carried is None or not (carried / "tokenizer.json").exists() or _cached_on_disk(name):
        return None
    return str(carried)


@contextmanager
def progress(bars: bool) -> Iterator[None]:
    """While loading: transformers' and the Hub's progress bars on or off (then as they were), and never tqdm's
    warning that a notebook lacks ipywidgets (its text bar works without them)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")  # raised once, where tqdm.auto is imported
        import transformers
        from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

        had_bar, hub_off = transformers.utils.logging.is_progress_bar_enabled(), are_progress_bars_disabled()
        (transformers.logging.enable_progress_bar if bars else transformers.logging.disable_progress_bar)()
        (enable_progress_bars if bars else disable_progress_bars)()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="IProgress not found")
            yield
    finally:
        (transformers.logging.enable_progress_bar if had_bar else transformers.logging.disable_progress_bar)()
        (disable_progress_bars if hub_off else enable_progress_bars)()


def load(spec: LoadSpec) -> LM:
    """Load model and tokenizer as `spec` says, in eval mode."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(spec.device)
    check_attention(spec.attn)
    threads = set_threads(spec.threads)
    if (file := gguf.open_file(spec.model)) is not None:  # a GGUF file, or ollama:NAME
        return replace(gguf.load(spec, file), threads=threads)
    source, config = load_config(spec)
    dtype = load_dtype(spec.quantize, device, resolve_dtype(spec.dtype, device, getattr(config, "dtype", None)))
    if spec.random_weights:
        return replace(_random_lm(spec, source, config, device, dtype), threads=threads)
    tokenizer = load_tokenizer(spec, source)
    with _hub_errors(spec.model), _memory_errors(spec.model, device):
        model, info = AutoModelForCausalLM.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **_load_kwargs(spec, device, dtype))
    notes = check_loaded(spec.model, model, tokenizer, info)
    convert_after_loading(spec.quantize, model, device)
    use_matrix_vector(model, device, dtype)
    quantized = quantization_facts(spec.quantize, model, dtype) if spec.quantize else None
    model.eval()
    return LM(name=spec.model, model=model, tokenizer=tokenizer, device=model.device, dtype=dtype, source=source,
              notes=(*notes, *([quantized.describe()] if quantized else [])), threads=threads, quantized=quantized)


def check_loaded(name: str, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                 info: dict[str, Any]) -> tuple[str, ...]:
    """Refuse a model whose weights were not all in its checkpoint, or whose tokenizer outgrows it; notes otherwise."""
    mismatched = sorted(info.get("mismatched_keys") or ())
    if mismatched:
        key, checkpoint, expected = (*mismatched[0], None, None)[:3]
        raise errors.CorruptWeights(
            f"the checkpoint of {name!r} does not fit its config.json: tensors with another shape than the "
            f"model's: {len(mismatched)}, first {key} ({_shape(checkpoint)} in the file, {_shape(expected)} in the model)")
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise errors.CorruptWeights(
            f"the checkpoint of {name!r} lacks {len(missing)} of the model's tensors ({shown}): they would run "
            "on random values; use --random-weights if that is what you want")
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise errors.CorruptWeights(
            f"the tokenizer of {name!r} has {len(tokenizer):,} tokens but the model's embedding only {rows:,} rows: "
            "ids past the end would crash or read the wrong rows; the tokenizer does not belong to this model")
    unexpected = sorted(info.get("unexpected_keys") or ())
    return (f"the checkpoint has {len(unexpected)} tensors the model does not use ({', '.join(unexpected[:3])})",
            ) if unexpected else ()


def check_attention(attn: str) -> None:
    """Refuse an attention kernel whose package is not installed, naming the package and the fallback."""
    import importlib.util

    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise errors.BadInput("--attn flash_attention_2 needs the flash-attn package (pip install flash-attn, "
                              "CUDA GPUs only); use --attn sdpa, the default, which needs nothing more")


def set_threads(requested: int | None) -> ThreadChoice:
    """Give torch's CPU kernels the chosen number of threads (one per idle core unless told)."""
    choice = choose_threads(requested)
    torch.set_num_threads(choice.count)
    return choice


def use_threads(lm: LM) -> None:
    """Run torch's CPU kernels on this thread with the count chosen when `lm` was loaded (the count is per thread)."""
    if lm.threads is not None:
        torch.set_num_threads(lm.threads.count)


def _load_kwargs(spec: LoadSpec, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dtype": dtype,
        "attn_implementation": spec.attn,
        "trust_remote_code": spec.trust_remote_code,
    }
    if spec.quantize and (config := quantization_config(spec.quantize, device, dtype)) is not None:
        kwargs["quantization_config"] = config
    if spec.device_map:
        kwargs["device_map"] = spec.device_map
        if spec.max_memory:
            kwargs["max_memory"] = spec.max_memory
    elif device.type != "cpu":
        kwargs["device_map"] = {"": device}  # weights go straight to the GPU, no CPU copy
    return kwargs


def _random_lm(spec: LoadSpec, source: str, config: PretrainedConfig, device: torch.device, dtype: torch.dtype) -> LM:
    """The architecture from its config alone, with random weights, built on the target device."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    notes = [shrink_layers(config, spec.layers, spec.model)] if spec.layers else []
    tokenizer, note = _tokenizer_or_standin(spec, source, config.get_text_config().vocab_size)
    notes += [note] if note else []
    with _hub_errors(spec.model), _memory_errors(spec.model, device), torch.device(device):
        model = AutoModelForCausalLM.from_config(
            config, dtype=dtype, attn_implementation=spec.attn, trust_remote_code=spec.trust_remote_code
        )
    use_matrix_vector(model, device, dtype)
    if (Path(source) / "generation_config.json").exists():  # its end tokens, as from_pretrained would read them
        model.generation_config = GenerationConfig.from_pretrained(source)
    model.eval()
    return LM(name=spec.model, model=model, tokenizer=tokenizer, device=model.device, dtype=dtype, source=source,
              notes=tuple(notes))


def shrink_layers(config: PretrainedConfig, layers: int, name: str) -> str:
    """Keep only the first `layers` decoder layers of `config`; a note that says so."""
    text = config.get_text_config()
    if layers > text.num_hidden_layers:
        raise errors.BadInput(f"--layers {layers}: {name} has only {text.num_hidden_layers} layers")
    note = (f"--layers {layers}: random weights for {layers} of {name}'s {text.num_hidden_layers} layers; "
            "per-layer costs scale, the embedding and output head do not")
    text.num_hidden_layers = layers
    if getattr(text, "layer_types", None):
        text.layer_types = text.layer_types[:layers]
    return note


def _tokenizer_or_standin(spec: LoadSpec, source: str, vocab_size: int) -> tuple[PreTrainedTokenizerBase, str | None]:
    """The model's tokenizer, or the tiny model's when the source carries only a config (as for Phi-3-mini)."""
    try:
        return load_tokenizer(spec, source), None
    except errors.LookinsideError:
        standin = load_tokenizer(LoadSpec(model="tiny"))
        if len(standin) > vocab_size:
            raise errors.LookinsideError(
                f"no tokenizer for {spec.model} here, and the stand-in does not fit its vocabulary of {vocab_size}"
            ) from None
        return standin, (f"no tokenizer for {spec.model} here (only its config): prompt ids come from the tiny "
                         "model's tokenizer; with random weights only how many ids there are matters")


def _cached_on_disk(repo_id: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except Exception:  # an invalid repo id: let transformers say so
        return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    """One quick TCP connect to the Hub, instead of transformers' 20 s of retries."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname or "", url.port or 443), timeout=timeout):
            return True
    except OSError:
        return False


@contextmanager
def _hub_errors(name: str) -> Iterator[None]:
    """Map transformers' and the Hub's loading exceptions to typed errors."""
    try:
        yield
    except errors.LookinsideError:
        raise
    except Exception as exc:
        raise _translate(name, exc) from exc


def _translate(name: str, exc: Exception) -> errors.LookinsideError:
    from huggingface_hub import errors as hub

    chain = [exc, exc.__cause__, exc.__context__]
    text = " ".join(str(e) for e in chain if e is not None)
    if any(isinstance(e, hub.GatedRepoError) for e in chain):
        return errors.ModelUnavailable(f"{name!r} is gated on the Hub: accept its licence and run `hf auth login`")
    if any(isinstance(e, (hub.RepositoryNotFoundError, hub.HFValidationError)) for e in chain) or (
        "not a valid model identifier" in text
    ):
        return errors.ModelNotFound(f"unknown model {name!r}: not `tiny`, not a local directory, not a Hub model id")
    if any(isinstance(e, hub.LocalEntryNotFoundError) for e in chain) or "couldn't connect" in text:
        return errors.ModelUnavailable(
            f"cannot download {name!r} (no network?) and no complete local copy is cached; "
            "use --model tiny or a local path"
        )
    if "deserializ" in text or "SafetensorError" in type(exc).__name__ or "Unable to load weights" in text:
        return errors.CorruptWeights(f"the weights of {name!r} are damaged or incomplete: {_first_line(exc)}")
    if "Unrecognized configuration class" in text or "Unrecognized model" in text:
        return errors.NotACausalLM(f"{name!r} is not a causal language model transformers can load")
    if any(isinstance(e, (hub.StrictDataclassFieldValidationError, hub.StrictDataclassClassValidationError))
           for e in chain):
        return errors.LookinsideError(f"the config.json of {name!r} is invalid: {' '.join(str(exc).split())}")
    if isinstance(exc, (TypeError, AttributeError)):  # a config field of the wrong type, met while building the model
        return errors.LookinsideError(f"cannot build {name!r} from its config.json: {_first_line(exc)}")
    if isinstance(exc, (ValueError, OSError, KeyError)):
        return errors.LookinsideError(f"cannot load {name!r}: {_first_line(exc)}")
    raise exc


@contextmanager
def _memory_errors(name: str, device: torch.device) -> Iterator[None]:
    """Map out-of-memory during loading to a typed error that says what to try."""
    try:
        yield
    except Exception as exc:
        if not errors.is_out_of_memory(exc):
            raise
        raise errors.OutOfMemory(
            f"{name!r} does not fit in {device.type} memory; "
            "try --dtype bfloat16/float16, --device-map auto, or a smaller model"
        ) from exc


def _shape(size: Any) -> str:
    return "x".join(str(n) for n in size) if size is not None else "?"


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]
