"""Turn a `LoadSpec` (model name, device, dtype, attention) into a loaded `LM`.

A model is `tiny` (the built-in one), a local directory, or a Hugging Face Hub id.
Every expected failure becomes a typed error from `lookinside.core.errors`.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import torch

from lookinside.core import errors
from lookinside.core.model import checks, gguf
from lookinside.core.model.kernels import use_matrix_vector
from lookinside.core.model.loaded import (
    LM,
    check_causal_lm,
    check_loaded,
    hub_errors,
    load_kwargs,
    memory_errors,
    resolve_device,
    resolve_dtype,
)
from lookinside.core.model.quantize import convert_after_loading, load_dtype, quantization_facts
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec
from lookinside.core.model.threads import ThreadChoice, choose_threads
from lookinside.tiny import ASSETS as TINY_ASSETS

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

# torchao, when installed, is imported by transformers on every load; its wheel then logs a warning for each
# CUDA-only kernel this machine cannot load, and torch one for each enum it registers. Not the user's business.
for _noisy in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_noisy).setLevel(logging.ERROR)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# Configs the project carries, so that meta-device views and random-weight benches work offline.
CARRIED_CONFIGS = {DEFAULT_MODEL: CONFIGS / "phi-3-mini-4k-instruct"}


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
        with hub_errors(spec.model):
            config = gguf.load_config(spec.model, file, spec.trust_remote_code)
        check_causal_lm(spec.model, config)
        return str(file.path), config
    source = CARRIED_CONFIGS.get(spec.model) if spec.random_weights else None
    source = str(source) if source and not _cached_on_disk(spec.model) else resolve_source(spec.model)
    checks.check_files(spec.model, source)  # a local directory's files, before transformers reads them
    with checks.held() as release:  # transformers' warnings about a broken config only after our checks passed
        with hub_errors(spec.model):
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


def load_tokenizer(spec: LoadSpec, source: str | None = None) -> PreTrainedTokenizerBase:
    """Only the tokenizer of `spec.model` (the carried copy of a default model's, unless a download is cached)."""
    from transformers import AutoTokenizer

    if source is None and (file := gguf.open_file(spec.model)) is not None:
        with hub_errors(spec.model):
            return gguf.load_tokenizer(file, spec.trust_remote_code)
    source = source or carried_tokenizer(spec.model) or resolve_source(spec.model)
    checks.check_files(spec.model, source, checks.TOKENIZER_FILES)
    with hub_errors(spec.model), checks.naming_the_tokenizer(source):
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
    with hub_errors(spec.model), memory_errors(spec.model, device):
        model, info = AutoModelForCausalLM.from_pretrained(
            source, output_loading_info=True, ignore_mismatched_sizes=True, **load_kwargs(spec, device, dtype))
    notes = check_loaded(spec.model, model, tokenizer, info)
    convert_after_loading(spec.quantize, model, device)
    use_matrix_vector(model, device, dtype)
    quantized = quantization_facts(spec.quantize, model, dtype) if spec.quantize else None
    model.eval()
    return LM(name=spec.model, model=model, tokenizer=tokenizer, device=model.device, dtype=dtype, source=source,
              notes=(*notes, *([quantized.describe()] if quantized else [])), threads=threads, quantized=quantized)


def check_attention(attn: str) -> None:
    """Refuse an attention kernel whose package is not installed, naming the package and the fallback."""
    if attn == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        raise errors.BadInput("--attn flash_attention_2 needs the flash-attn package (pip install flash-attn, "
                              "CUDA GPUs only); use --attn sdpa, the default, which needs nothing more")


def set_threads(requested: int | None) -> ThreadChoice:
    """Give torch's CPU kernels the chosen number of threads (one per idle core unless told)."""
    choice = choose_threads(requested)
    torch.set_num_threads(choice.count)
    return choice


def use_threads(lm: LM, streaming: bool = False) -> None:
    """Run torch's CPU kernels on this thread with the count chosen when `lm` was loaded (the count is per thread);
    `streaming`: the count for a server's batched decoding (`ThreadChoice.streaming`)."""
    if lm.threads is not None:
        torch.set_num_threads(lm.threads.streaming() if streaming else lm.threads.count)


def _random_lm(spec: LoadSpec, source: str, config: PretrainedConfig, device: torch.device, dtype: torch.dtype) -> LM:
    """The architecture from its config alone, with random weights, built on the target device."""
    from transformers import AutoModelForCausalLM, GenerationConfig

    notes = [shrink_layers(config, spec.layers, spec.model)] if spec.layers else []
    tokenizer, note = _tokenizer_or_standin(spec, source, config.get_text_config().vocab_size)
    notes += [note] if note else []
    with hub_errors(spec.model), memory_errors(spec.model, device), torch.device(device):
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


