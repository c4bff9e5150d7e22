"""GGUF files (llama.cpp's, Ollama's): recognise one, read what it holds, refuse what transformers cannot load.

A GGUF file is recognised by its magic bytes, not by its name (Ollama's blobs have none). Its metadata is
read with the `gguf` package (the `lookinside[gguf]` extra); transformers then builds the model, the
tokenizer and the chat template from the file and dequantizes every weight (`from_pretrained(dir,
gguf_file=name)`). What transformers cannot do, an unknown architecture or a quantization type the
`gguf` package cannot dequantize, is refused here in one line, before anything is built.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.model.ollama import find_model
from lookinside.core.model.quantize import stored_bytes

if TYPE_CHECKING:
    import torch
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

    from lookinside.core.model.loaded import LM
    from lookinside.core.model.spec import LoadSpec

MAGIC = b"GGUF"
OLLAMA_PREFIX = "ollama:"
EXTRA = "pip install 'lookinside[gguf]'"
# Types every gguf version dequantizes; the rest are asked of the installed package (`dequantizable_types`).
PLAIN_TYPES = ("F32", "F16")
# Tokens that end a reply whatever the file's one eos id says, as llama.cpp reads them (llama-vocab.cpp's
# end-of-generation list, its common entries): without them a Phi-3 GGUF would talk on past <|end|>.
END_TOKENS = ("<|endoftext|>", "<|end|>", "<|eot_id|>", "<|eom_id|>", "<|im_end|>", "<end_of_turn>",
              "<|end_of_text|>", "<eos>", "</s>")


class UnsupportedGguf(errors.LookinsideError):
    """A well-formed GGUF file that transformers cannot load: its architecture or a quantization type."""


@dataclass(frozen=True)
class GgufFile:
    """What a GGUF file holds, from its header: no tensor is read."""

    path: Path
    architecture: str  # general.architecture, llama.cpp's name: phi3, llama, qwen2...
    name: str | None  # general.name
    file_type: str  # general.file_type as llama.cpp names it (Q8_0, Q4_K_M, F16), else the commonest type
    tensor_types: dict[str, int]  # ggml type name -> how many tensors have it
    context_length: int | None  # {arch}.context_length
    embedding_rows: int | None  # token_embd.weight's vocabulary dimension
    tokens: int  # tokenizer.ggml.tokens: how many the file's vocabulary lists
    size: int  # bytes on disk


@dataclass(frozen=True)
class Dequantized:
    """What a GGUF file's weights were on disk and what they became in memory."""

    file_type: str  # Q8_0, Q4_K_M, F16...
    file_bytes: int
    dtype: str  # what transformers dequantized them to; with `kept`, the activations' dtype
    loaded_bytes: int
    kept: tuple[str, ...] = ()  # kept quantized: how each group of matrices was stored, e.g. "int4 x9 (Q4_0, exact)"

    @property
    def kind(self) -> str:
        """Like "Q8_0 GGUF"."""
        return f"{self.file_type} GGUF"

    def describe(self) -> str:
        """What it was and what it became: "Q8_0 GGUF (1.1 MB), dequantized to float32 (4.2 MB)", or
        "Q4_0 GGUF (238.4 MB), kept quantized in 270.1 MB: int4 x10 (Q4_0 as in the file)..."."""
        if self.kept:
            return (f"{self.kind} ({_size(self.file_bytes)}), kept quantized in {_size(self.loaded_bytes)}: "
                    f"{'; '.join(self.kept)}; {self.dtype} activations")
        return f"{self.kind} ({_size(self.file_bytes)}), dequantized to {self.dtype} ({_size(self.loaded_bytes)})"


def is_gguf(path: Path) -> bool:
    """True for a file that starts with GGUF's magic bytes, whatever its name."""
    try:
        with path.open("rb") as file:
            return file.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def locate(name: str) -> Path | None:
    """The GGUF file `--model name` means: a path to one, or `ollama:NAME[:TAG]`; None for anything else.

    A `.gguf` name that is missing or not a GGUF file is an error here, not a Hub id further on.
    """
    if name.startswith(OLLAMA_PREFIX):
        path = find_model(name.removeprefix(OLLAMA_PREFIX))
    else:
        path = Path(name).expanduser()
        if not path.is_file():
            if path.suffix.lower() == ".gguf":
                raise errors.ModelNotFound(f"model {name!r}: no such file")
            return None
    if not is_gguf(path):
        if path.suffix.lower() == ".gguf" or name.startswith(OLLAMA_PREFIX):
            raise errors.CorruptWeights(f"{name!r} is not a GGUF file: it does not start with the bytes "
                                        f"{MAGIC.decode()} ({_head(path).decode('latin-1')!r} instead)")
        return None
    return path


def read(path: Path, label: str | None = None) -> GgufFile:
    """The header of the GGUF file at `path`; a damaged or truncated file is one `CorruptWeights` line."""
    label = label or str(path)
    reader = _reader(path, label)
    fields = {key: _value(field) for key, field in reader.fields.items() if not key.startswith("tokenizer.ggml.")}
    architecture = str(fields.get("general.architecture", ""))
    if not architecture:
        raise errors.CorruptWeights(f"{label}: the GGUF file names no architecture (general.architecture)")
    types = Counter(tensor.tensor_type.name for tensor in reader.tensors)
    embedding = next((t for t in reader.tensors if t.name == "token_embd.weight"), None)
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    return GgufFile(
        path=path, architecture=architecture, name=fields.get("general.name"),
        file_type=_file_type(fields.get("general.file_type"), reader),
        tensor_types=dict(types.most_common()),
        context_length=_int(fields.get(f"{architecture}.context_length")),
        embedding_rows=int(embedding.shape[-1]) if embedding is not None else None,  # ggml order: (dim, rows)
        tokens=len(tokens.data) if tokens is not None else 0, size=path.stat().st_size)


def check_supported(file: GgufFile, label: str) -> None:
    """Refuse an architecture transformers does not read from GGUF, or a type the gguf package cannot dequantize."""
    import transformers

    architectures = supported_architectures()
    if _canonical(file.architecture) not in architectures:
        raise UnsupportedGguf(
            f"{label}: transformers {transformers.__version__} cannot load GGUF architecture {file.architecture!r}; "
            f"it reads {', '.join(sorted(architectures))}; load the original Hugging Face model instead")
    readable = dequantizable_types()
    unreadable = [name for name in file.tensor_types if name not in readable]
    if unreadable:
        raise UnsupportedGguf(
            f"{label}: tensors of type {', '.join(unreadable)} cannot be dequantized by gguf {version('gguf')}; "
            f"it reads {', '.join(sorted(readable))}: use a file quantized to one of those (Q8_0, Q4_K_M...) "
            "or the original model")
    if not file.tokens:
        raise UnsupportedGguf(f"{label}: the GGUF file carries no vocabulary (tokenizer.ggml.tokens), so no "
                              "tokenizer can be built from it")


def supported_architectures() -> set[str]:
    """GGUF architectures the installed transformers turns into a model (llama.cpp's names)."""
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    names = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}
    try:  # transformers 5's packed-weights reader, for the architectures it covers
        from transformers.integrations.gguf import GGUF_ARCHS

        names |= set(GGUF_ARCHS)
    except ImportError:
        pass
    return names


def dequantizable_types() -> set[str]:
    """ggml tensor types the installed gguf package dequantizes (transformers calls its `dequantize`)."""
    from gguf import quants

    return {*PLAIN_TYPES, *(qtype.name for qtype in getattr(quants, "_type_traits", {}))}


def load_config(label: str, file: GgufFile, trust_remote_code: bool = False) -> PretrainedConfig:
    """The model's config as transformers rebuilds it from the file, its vocabulary sized to the embedding."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(str(file.path.parent), gguf_file=file.path.name,
                                        trust_remote_code=trust_remote_code)
    # Without {arch}.vocab_size transformers sizes the vocabulary by the file's token list, which llama.cpp pads
    # to the embedding's rows but other writers need not: the embedding decides, as in llama.cpp.
    if file.embedding_rows and config.vocab_size != file.embedding_rows:
        config.vocab_size = file.embedding_rows
    # A file without tokenizer.ggml.padding_token_id leaves the config class's default (Phi-3's 32000), which a
    # smaller vocabulary cannot hold; the embedding then refuses it. Padding plays no part in one sequence.
    pad = getattr(config, "pad_token_id", None)
    if isinstance(pad, int) and not 0 <= pad < config.vocab_size:
        config.pad_token_id = None
    return config


def load_tokenizer(file: GgufFile, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """The tokenizer and chat template the file carries."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(file.path.parent), gguf_file=file.path.name,
                                              trust_remote_code=trust_remote_code)
    if file.architecture == "phi3":
        _strip_after_phi3_markers(tokenizer)
    return tokenizer


def _strip_after_phi3_markers(tokenizer: PreTrainedTokenizerBase) -> None:
    """Phi-3's chat markers swallow the whitespace after them (`rstrip` in its tokenizer.json), which a GGUF does
    not record: without this `<|user|>` and the newline after it read as two tokens where the model was trained
    on one. llama.cpp restores it the same way (llama-vocab.cpp, for a model named Phi-3: every special token
    but <unk>, <s> and <|endoftext|>)."""
    from tokenizers import AddedToken

    backend = tokenizer.backend_tokenizer
    markers = [AddedToken(token.content, rstrip=True, lstrip=False, normalized=False, special=True)
               for token in backend.get_added_tokens_decoder().values()
               if token.special and token.content not in ("<unk>", "<s>", "<|endoftext|>")]
    backend.add_special_tokens(markers)


def open_file(name: str) -> GgufFile | None:
    """For `--model name`: the GGUF file it means, read and checked; None when `name` is no GGUF."""
    path = locate(name)
    if path is None:
        return None
    require_package(name)
    file = read(path, name)
    check_supported(file, name)
    return file


def load(spec: LoadSpec, file: GgufFile) -> LM:
    """Model, tokenizer and chat template from a GGUF file: its quantized matrices kept packed where the device
    runs our packed layers (`load_packed`), else (and with `--quantize float`) dequantized to the dtype `spec`
    resolves to."""
    from transformers import AutoModelForCausalLM

    from lookinside.core.model import loaded  # deferred: torch

    if spec.random_weights:
        raise errors.BadInput("--random-weights needs a Hugging Face checkpoint; a GGUF file brings its weights")
    if spec.quantize not in (None, "float"):
        raise errors.BadInput(f"--quantize {spec.quantize}: a GGUF file keeps its own quantization (--quantize "
                              "float dequantizes it as it loads)")
    device = loaded.resolve_device(spec.device)
    dtype = loaded.resolve_dtype(spec.dtype, device, _checkpoint_dtype(file))
    if spec.quantize is None and device.type in ("cpu", "cuda") and quantized_matrices(file):
        return load_packed(spec, file, device, dtype)
    with loaded.hub_errors(spec.model), loaded.memory_errors(spec.model, device), _transformers_progress():
        config = load_config(spec.model, file, spec.trust_remote_code)
        loaded.check_causal_lm(spec.model, config)
        tokenizer = load_tokenizer(file, spec.trust_remote_code)
        model, info = AutoModelForCausalLM.from_pretrained(
            str(file.path.parent), gguf_file=file.path.name, config=config, output_loading_info=True,
            **loaded.load_kwargs(replace(spec, quantize=None), device, dtype))
    notes = loaded.check_loaded(spec.model, model, tokenizer, info)
    model.generation_config.eos_token_id = end_token_ids(model.generation_config.eos_token_id, tokenizer)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    model.eval()
    origin = Dequantized(file.file_type, file.size, str(dtype).removeprefix("torch."), weights)
    return loaded.LM(name=spec.model, model=model, tokenizer=tokenizer, device=model.device, dtype=dtype,
                      source=str(file.path), notes=(origin.describe(), *notes), origin=origin)


def quantized_matrices(file: GgufFile) -> bool:
    """True when some of the file's tensors are quantized (not F32, F16 or BF16): those are kept packed."""
    from lookinside.core.model.ggml import FLOAT_TYPES  # deferred: numpy

    return any(kind not in FLOAT_TYPES for kind in file.tensor_types)


def load_packed(spec: LoadSpec, file: GgufFile, device: torch.device, dtype: torch.dtype) -> LM:
    """The model with its quantized matrices kept quantized (`core/model/gguf_packed.py`), the activations in
    `dtype`; built with empty parameters and filled tensor by tensor, so memory grows only by what is kept."""
    from transformers import AutoModelForCausalLM

    from lookinside.core.model import gguf_packed, loaded  # deferred: numpy, torch

    with loaded.hub_errors(spec.model), loaded.memory_errors(spec.model, device):
        config = load_config(spec.model, file, spec.trust_remote_code)
        loaded.check_causal_lm(spec.model, config)
        tokenizer = load_tokenizer(file, spec.trust_remote_code)
        # The metadata just parsed three times (the whole vocabulary each time) is garbage now: handed back
        # before the weights are read, its pages are not left scattered under them.
        gguf_packed.give_back_freed_memory()
        with gguf_packed.empty_parameters():
            model = AutoModelForCausalLM.from_config(config, dtype=dtype, attn_implementation=spec.attn,
                                                     trust_remote_code=spec.trust_remote_code)
        kept = gguf_packed.fill(model, file, device, dtype)
    model.to(device)
    rows = model.get_input_embeddings().num_embeddings
    if len(tokenizer) > rows:
        raise errors.CorruptWeights(f"the tokenizer of {spec.model!r} has {len(tokenizer):,} tokens but the model's "
                                    f"embedding only {rows:,} rows")
    model.generation_config.eos_token_id = end_token_ids(model.generation_config.eos_token_id, tokenizer)
    model.eval()
    origin = Dequantized(file.file_type, file.size, str(dtype).removeprefix("torch."), stored_bytes(model), kept)
    gguf_packed.give_back_freed_memory()  # the unpacked values and the vocabulary's lists: the model is what stays
    return loaded.LM(name=spec.model, model=model, tokenizer=tokenizer, device=device, dtype=dtype,
                     source=str(file.path), notes=(origin.describe(),), origin=origin)


def end_token_ids(eos: int | list[int] | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The file's eos id and every end-of-turn token its vocabulary has (gpt-oss's <|end|> is not one: it goes on
    to <|return|> or <|call|>, as llama.cpp also decides)."""
    vocab = tokenizer.get_vocab()
    ends = [token for token in END_TOKENS if token in vocab and not (token == "<|end|>" and "<|return|>" in vocab)]
    known = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    return sorted({*known, *(vocab[token] for token in ends)})


def require_package(name: str) -> None:
    """The gguf package, or one line naming the extra that brings it."""
    try:
        import gguf  # noqa: F401
    except ImportError:
        raise errors.LookinsideError(f"{name!r} is a GGUF file; reading it needs the gguf package: {EXTRA}") from None


@contextmanager
def _transformers_progress() -> Iterator[None]:
    """Route the GGUF dequantizing bar through transformers' progress switch, which the caller set.

    transformers' GGUF reader draws its bar with tqdm directly, so it would print even when progress is off.
    """
    from transformers import modeling_gguf_pytorch_utils as reader
    from transformers.utils import logging

    bar = reader.tqdm
    reader.tqdm = logging.tqdm
    try:
        yield
    finally:
        reader.tqdm = bar


def _reader(path: Path, label: str) -> Any:
    from gguf import GGUFReader

    try:
        return GGUFReader(path)
    except Exception as exc:  # the reader fails on a short file with whatever numpy raised first
        detail = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise errors.CorruptWeights(f"{label}: the GGUF file is damaged or truncated "
                                    f"({path.stat().st_size:,} bytes; reading it failed: {detail})") from exc


def _value(field: Any) -> Any:
    try:
        return field.contents()
    except (ValueError, TypeError, IndexError, UnicodeDecodeError):  # a field this gguf cannot decode: not ours
        return None


def _file_type(code: Any, reader: Any) -> str:
    """llama.cpp's name for the file's type (Q8_0, Q4_K_M), else the type most of its matrices have."""
    from gguf import LlamaFileType

    try:
        return LlamaFileType(int(code)).name.removeprefix("MOSTLY_").removeprefix("ALL_")
    except (TypeError, ValueError):
        matrices = Counter(t.tensor_type.name for t in reader.tensors if len(t.shape) > 1)
        return matrices.most_common(1)[0][0] if matrices else "unknown"


def _checkpoint_dtype(file: GgufFile) -> torch.dtype | None:
    """The dtype the weights are stored in, when they are plain floats (it guides --dtype auto)."""
    import torch

    return {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}.get(file.file_type)


def _canonical(architecture: str) -> str:
    """llama.cpp's architecture name as transformers' table spells it (qwen2moe -> qwen2_moe, gpt-oss -> gpt_oss)."""
    known = supported_architectures()
    for candidate in (architecture, architecture.replace("-", "_"), architecture.replace("moe", "_moe")):
        if candidate in known:
            return candidate
    return architecture


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _head(path: Path) -> bytes:
    try:
        with path.open("rb") as file:
            return file.read(len(MAGIC))
    except OSError:
        return b""


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"
