"""A model directory checked before anything is built from it: each error names the file and the field.

transformers meets a broken config deep inside a constructor (a division by zero heads, an
embedding of 0 rows) or not at all (a context of 0 falls back to the tokenizer's 512), and a
config.json that is a FIFO makes it wait forever. So `core/model/loading.py` calls, in this order:

- `check_files(name, source)` on a local directory, before transformers reads it: the directory
  can be read; config.json, tokenizer.json, tokenizer_config.json and generation_config.json are
  regular files holding JSON objects (config.json with a `model_type`); each weights file starts
  as its format does (safetensors' header, a zip or a pickle);
- `check_config(name, config, raw)` once the config is parsed: sizes positive, heads that divide
  the hidden size, a known rope type, a pad id inside the vocabulary, a positive epsilon;
- `generation_config_error(...)` words a bad value of generation_config.json as the file's.

transformers' own warnings about the config (an id outside a vocabulary of 0) are `held` while it
parses, and printed only when `check_config` passed: a broken file is our one line, not three of
theirs before it.

Each raises `BrokenModel` (or `errors.CorruptWeights` for weights) with one line.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from logging.handlers import BufferingHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookinside.core import errors

if TYPE_CHECKING:
    from transformers import PretrainedConfig

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
JSON_FILES = ("config.json", *TOKENIZER_FILES, "generation_config.json")
SAFETENSORS_HEADER_LIMIT = 100 * 2**20  # safetensors refuses headers above 100 MB too


class BrokenModel(errors.LookinsideError):
    """A model directory whose files cannot describe a model (named, with the field at fault)."""


def check_files(name: str, source: str, files: tuple[str, ...] = JSON_FILES) -> None:
    """Refuse, naming the file, a local model directory that transformers would choke on (see the module docstring).

    `files` are the JSON files to check (TOKENIZER_FILES when only the tokenizer is loaded).
    """
    directory = Path(source)
    if not directory.is_dir():
        return  # a Hub id: the Hub's files are checked as transformers reads them
    if not os.access(directory, os.R_OK | os.X_OK):
        raise BrokenModel(f"cannot read the model directory {directory}: permission denied")
    for file in files:
        _json_object(directory / file, required=file == "config.json")
    if "config.json" not in files:
        return
    config = _json_object(directory / "config.json", required=True)
    if not isinstance(config.get("model_type"), str) or not config["model_type"]:
        raise BrokenModel(f"{directory / 'config.json'} has no \"model_type\": transformers cannot tell which "
                          "architecture it describes (e.g. \"phi3\", \"llama\")")
    _check_rope(config, lambda field, why: BrokenModel(f"{directory / 'config.json'}: {field} {why}"))
    for path in sorted(directory.glob("*.safetensors")) + sorted(directory.glob("*.bin")):
        _check_weights(path)


def _regular(path: Path) -> None:
    """Refuse a path that is missing, unreadable or not a regular file, naming what it is instead."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        hint = ": a model directory holds one (is this the model's directory?)" if path.name == "config.json" else ""
        raise BrokenModel(f"{path} is missing{hint}") from None
    except OSError as exc:
        raise BrokenModel(f"cannot read {path}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise BrokenModel(f"{path} is a directory, not a file")
    if not stat.S_ISREG(mode):
        kind = "a FIFO" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"
        raise BrokenModel(f"{path} is {kind}, not a file")  # reading a FIFO would wait forever


def _json_object(path: Path, required: bool) -> dict[str, Any]:
    """The JSON object in `path`; one line naming it when it is not a readable file holding a JSON object."""
    if not required and not os.path.lexists(path):
        return {}
    _regular(path)
    try:
        data = json.loads(path.read_bytes())
    except OSError as exc:
        raise BrokenModel(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise BrokenModel(f"{path} is not text (not UTF-8)") from None
    except json.JSONDecodeError as exc:
        raise BrokenModel(f"{path} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    if not isinstance(data, dict):
        raise BrokenModel(f"{path} holds a JSON {type(data).__name__.replace('dict', 'object')}, not an object of "
                          "settings")
    return data


def _check_weights(path: Path) -> None:
    """Refuse a weights file that does not start as its format does (a garbage file fails deep in torch otherwise)."""
    try:
        _regular(path)
        with path.open("rb") as file:
            head = file.read(8)
            if path.suffix == ".safetensors":
                size = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
                header = file.read(size) if 0 < size <= SAFETENSORS_HEADER_LIMIT else b""
                if not header.startswith(b"{") or not isinstance(json.loads(header), dict):
                    raise ValueError
            elif not head.startswith((b"PK\x03\x04", b"\x80")):  # torch.save's zip, or a pickle
                raise ValueError
    except BrokenModel as exc:
        raise errors.CorruptWeights(str(exc)) from None
    except OSError as exc:
        raise errors.CorruptWeights(f"cannot read {path}: {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError):
        kind = "safetensors" if path.suffix == ".safetensors" else "PyTorch"
        raise errors.CorruptWeights(f"{path} is not a {kind} weights file (its start is not one): the download is "
                                    "damaged or the file is something else") from None


def check_config(name: str, config: PretrainedConfig, where: str) -> None:
    """Refuse a config whose sizes, heads, rope type or pad id cannot make a model; `where` names config.json."""
    text = config.get_text_config()
    raw = text.to_dict()
    names = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
             "num_key_value_heads", "intermediate_size", "pad_token_id", "bos_token_id", "eos_token_id")
    raw.update({name: getattr(text, name) for name in names if hasattr(text, name)})  # GPT-2's n_layer is num_hidden_layers

    def bad(field: str, why: str) -> BrokenModel:
        return BrokenModel(f"{where}: {field} {why}")

    for field in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings",
                  "num_key_value_heads", "intermediate_size"):
        value = raw.get(field)
        if value is None:
            continue  # a family that does without it; transformers says so if it is needed
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise bad(field, f"must be a positive whole number, not {value!r}")
    hidden, heads = raw.get("hidden_size"), raw.get("num_attention_heads")
    if hidden and heads and raw.get("head_dim") in (None, hidden // heads) and hidden % heads:
        raise bad("hidden_size", f"{hidden} is not divisible by num_attention_heads {heads}: "
                  "each head must get a whole share")
    kv = raw.get("num_key_value_heads")
    if heads and kv and heads % kv:
        raise bad("num_attention_heads", f"{heads} is not a multiple of num_key_value_heads {kv}")
    _check_rope(raw, bad)
    vocab = raw.get("vocab_size")
    # Only the pad id builds into the model (the embedding's padding row); a bos or eos id past the vocabulary,
    # as GPT-2's 50256 in a small test config, is never looked up while the model is built.
    for field in ("pad_token_id",) if vocab else ():
        ids = raw.get(field)
        for token_id in ids if isinstance(ids, list) else [ids]:
            if token_id is not None and (isinstance(token_id, bool) or not isinstance(token_id, int)
                                         or not 0 <= token_id < vocab):
                raise bad(field, f"{token_id!r} is outside the vocabulary of {vocab} tokens (0 to {vocab - 1})")
    for field in ("rms_norm_eps", "layer_norm_eps", "layer_norm_epsilon"):
        eps = raw.get(field)
        if eps is not None and (isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0):
            raise bad(field, f"must be a small positive number such as 1e-05, not {eps!r} (it divides)")


def _check_rope(raw: dict[str, Any], bad: Any) -> None:
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for field in ("rope_parameters", "rope_scaling"):
        rope = raw.get(field)
        if rope is None:
            continue
        if not isinstance(rope, dict):
            raise bad(field, f"must be an object, not {rope!r}")
        kind = rope.get("rope_type", rope.get("type", "default"))
        known = ("default", *ROPE_INIT_FUNCTIONS)
        if kind not in known:
            raise bad(field, f"has the rope type {kind!r}, which transformers does not know (one of {', '.join(known)})")


def config_file(name: str, source: str) -> str:
    """How an error names the config: its path for a local directory, else the model's config.json."""
    return str(Path(source) / "config.json") if Path(source).is_dir() else f"the config.json of {name!r}"


@contextmanager
def naming_the_tokenizer(source: str) -> Iterator[None]:
    """A tokenizer that fails to load, said as its files' (transformers' message alone names no file)."""
    try:
        yield
    except errors.LookinsideError:
        raise
    except Exception as exc:
        if not Path(source).is_dir():
            raise
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BrokenModel(f"the tokenizer in {source} (tokenizer.json, tokenizer_config.json) cannot be loaded: "
                          f"{first}") from None


def generation_config_error(exc: errors.BadInput) -> errors.BadInput:
    """A bad sampling value from the model's generation_config.json, said as the file's (not as if the user typed it)."""
    return errors.BadInput(f"the model's generation_config.json has a bad value: {exc}; fix that file, or give the "
                           "setting yourself (for example --temperature 0.7)")


@contextmanager
def held(logger_name: str = "transformers") -> Iterator[Callable[[], None]]:
    """Hold what `logger_name` logs in the block; the function it yields prints it (call it once the config passed)."""
    logger = logging.getLogger(logger_name)
    handlers, propagate = logger.handlers[:], logger.propagate
    buffer = BufferingHandler(capacity=1000)
    logger.handlers, logger.propagate = [buffer], False

    def release() -> None:
        for record in buffer.buffer:
            logger.handle(record)
        buffer.buffer.clear()

    try:
        yield release
    finally:
        logger.handlers, logger.propagate = handlers, propagate
