"""A loaded model (`LM`) and what every loader shares (loading.py for checkpoints, gguf.py for GGUF files): the
device and dtype resolved, transformers' loading arguments, the loaded model checked against its checkpoint, and
the Hub's and memory's exceptions turned into typed errors."""

from __future__ import annotations

import functools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from lookinside.core import errors
from lookinside.core.model.quantize import Quantized, quantization_config
from lookinside.core.model.spec import LoadSpec
from lookinside.core.model.threads import ThreadChoice

if TYPE_CHECKING:
    from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

    from lookinside.core.model.gguf import Dequantized


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


def check_causal_lm(name: str, config: PretrainedConfig) -> None:
    """Refuse configs that transformers cannot load as a causal LM."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING

    if type(config) in MODEL_FOR_CAUSAL_LM_MAPPING or getattr(config, "auto_map", {}).get("AutoModelForCausalLM"):
        return
    raise errors.NotACausalLM(
        f"{name!r} is a {config.model_type!r} model, not a causal (text-generating) language model"
    )


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


def load_kwargs(spec: LoadSpec, device: torch.device, dtype: torch.dtype) -> dict[str, Any]:
    """transformers' `from_pretrained` arguments for `spec` on `device` in `dtype`."""
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


@contextmanager
def hub_errors(name: str) -> Iterator[None]:
    """Map transformers' and the Hub's loading exceptions to typed errors."""
    try:
        yield
    except errors.LookinsideError:
        raise
    except Exception as exc:
        raise translate(name, exc) from exc


def translate(name: str, exc: Exception) -> errors.LookinsideError:
    """The typed error for a loading exception of transformers or the Hub (re-raised when it is none we know)."""
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
def memory_errors(name: str, device: torch.device) -> Iterator[None]:
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
