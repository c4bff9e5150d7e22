"""A GGUF file loaded with its quantized matrices kept quantized: the model built with empty weights, then
filled one tensor at a time from the memory-mapped file, so no float copy of the model ever exists.

Each matrix becomes (`core/model/packed.py`):
- a Q4_0, Q4_1 or Q4_K linear weight: an int4 layer in groups of 32, its values as in the file
  (`core/model/ggml.py`); in lookinside's int4 kernel (on a CPU with AVX512-VNNI) its scales and offsets as in
  the file too (float16, float32 for Q4_K's products), in torch's rounded to bfloat16;
- a Q8_0 linear weight: an int8 layer re-quantized to one scale per row (the int8 kernel has no per-block
  scales); any other type (Q5_K, Q6_K...) dequantized and re-quantized the same way, the 2- and 3-bit ones
  and 4-bit codebooks to int4 groups of 32 instead;
- the token embedding: a packed table whose lookup dequantizes only the rows it reads (4-bit types and Q8_0
  exactly as in the file, Q4_0 and Q8_0 in the file's own bytes; other types re-quantized to int8 groups of 32);
- float matrices, norms and biases: float tensors at the activations' dtype.
transformers' own tables name the tensors (`get_gguf_hf_weights_map`) and undo llama.cpp's row order for an
architecture's attention (its `TensorProcessor`); a processor that does more than reorder rows sends that
tensor through the dequantizing path.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np

from lookinside.core import errors
from lookinside.core.model import ggml
from lookinside.core.model.quantize import fits_int4, int4_groups, int8_rows, packed_method

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel

    from lookinside.core.model.gguf import GgufFile


def fill(model: PreTrainedModel, file: GgufFile, device: torch.device, dtype: torch.dtype) -> tuple[str, ...]:
    """Fill `model` (built with empty parameters) from `file`; how each kind of matrix was kept, counted."""
    import torch
    from gguf import GGUFReader
    from transformers.modeling_gguf_pytorch_utils import (
        TENSOR_PROCESSORS,
        TensorProcessor,
        get_gguf_hf_weights_map,
    )

    # The processors read the config's head counts, by transformers' names: the model's config has them, without
    # parsing the file's metadata (its whole vocabulary) once more.
    processor = TENSOR_PROCESSORS.get(file.architecture, TensorProcessor)(config=model.config.to_dict())
    names = get_gguf_hf_weights_map(model, processor)
    reader = GGUFReader(file.path)
    kept: Counter[str] = Counter()
    tensor = tied_source = None
    for tensor in reader.tensors:
        name = names.get(tensor.name)
        if name is None:
            continue
        if name.endswith(".weight") and isinstance(model.get_submodule(name[:-7]), torch.nn.Embedding):
            tied_source = tensor
        kept[_place(model, name, tensor, processor, names, device, dtype)] += 1
    head = model.get_output_embeddings()
    if isinstance(head, torch.nn.Linear) and head.weight.is_meta and tied_source is not None:
        head_name = next(n for n, m in model.named_modules() if m is head)  # tied to the embedding in the file
        kept[_place(model, f"{head_name}.weight", tied_source, processor, names, device, dtype)] += 1
    del reader, tensor, tied_source  # the file's mapping goes with the last view of it
    _check_filled(model, file)
    counted = tuple(f"{how} x{count}" for how, count in kept.most_common() if how)
    return (*counted, *_int4_method(model))


def _int4_method(model: torch.nn.Module) -> tuple[str, ...]:
    """What the int4 layers multiply with on the CPU (lookinside's kernel, or torch's and why), when there are any."""
    from lookinside.core.model.packed import Int4Linear  # deferred: torch

    int4 = [module for module in model.modules() if isinstance(module, Int4Linear)]
    return (f"int4 layers: {packed_method(int4)}",) if int4 and not int4[0].packed.is_cuda else ()


def _place(model: PreTrainedModel, name: str, tensor: Any, processor: Any, names: dict[str, str],
           device: torch.device, dtype: torch.dtype) -> str:
    """Put one GGUF tensor where `name` says, packed when it is a quantized matrix; how it was kept."""
    import torch

    kind = tensor.tensor_type.name
    path, _, leaf = name.rpartition(".")
    module = model.get_submodule(path)
    matrix = len(tensor.shape) == 2 and leaf == "weight"
    target = "linear" if isinstance(module, torch.nn.Linear) else "embedding" if isinstance(
        module, torch.nn.Embedding) else None
    order = _row_order(processor, tensor, names) if matrix and target and kind not in ggml.FLOAT_TYPES else None
    if target is None or not matrix or kind in ggml.FLOAT_TYPES or order is False:
        _set_float(module, leaf, _processed(processor, tensor, names), device, dtype)
        return "" if not matrix else f"{kind} dequantized to {str(dtype).removeprefix('torch.')}"
    rows = order if order is not None else slice(None)
    if target == "embedding":
        table, how = _embedding(tensor, kind, rows, dtype)
        _replace(model, path, table.to(device))
        return how
    layer, how = _linear(tensor, kind, rows, module.bias, device)
    _replace(model, path, layer)
    return how


def _linear(tensor: Any, kind: str, rows: Any, bias: Any, device: torch.device) -> tuple[torch.nn.Module, str]:
    """The packed linear layer for a quantized matrix, and how it was kept."""
    import torch

    from lookinside.core.model.packed import Int4Linear, Int8Linear  # deferred: torch

    in_features, out_features = (int(n) for n in tensor.shape)  # ggml's order: the row's length first
    if kind in ggml.EXACT_INT4 and fits_int4(out_features, in_features, ggml.GROUP):
        values, scales, zeros = (torch.from_numpy(np.ascontiguousarray(a[rows])) for a in ggml.int4_blocks(
            np.asarray(tensor.data), kind))
        return Int4Linear.from_values(values, scales, zeros, ggml.GROUP, bias, device), f"int4 ({kind} as in the file)"
    weight = torch.from_numpy(np.ascontiguousarray(ggml.dequantize(tensor)[rows]))
    if ggml.bits(kind) == 4 and fits_int4(out_features, in_features, ggml.GROUP):
        values, scales, zeros = int4_groups(weight, ggml.GROUP)
        return Int4Linear.from_values(values, scales, zeros, ggml.GROUP, bias, device), f"int4 (re-quantized from {kind})"
    values, scales = int8_rows(weight)
    return Int8Linear(values.to(device), scales.to(device), bias), f"int8 rows (re-quantized from {kind})"


def _embedding(tensor: Any, kind: str, rows: Any, dtype: torch.dtype) -> tuple[torch.nn.Module, str]:
    """The packed embedding table for a quantized matrix, and how it was kept."""
    import torch

    from lookinside.core.model.packed import PackedEmbedding  # deferred: torch

    raw = np.asarray(tensor.data)
    if kind in ggml.EXACT_INT4:
        values, scales, zeros = (torch.from_numpy(np.ascontiguousarray(a[rows])) for a in ggml.int4_blocks(raw, kind))
        offsets = None if kind == "Q4_0" else zeros - 8 * scales  # Q4_0's groups are symmetric: its own 18 bytes
        table = PackedEmbedding.from_values(values, scales, offsets, 4, dtype)
        return table, f"int4 embedding ({kind} as in the file)"
    if kind == "Q8_0":
        values, scales = (torch.from_numpy(np.ascontiguousarray(a[rows])) for a in ggml.q8_0_blocks(raw))
        return PackedEmbedding.from_values(values, scales, None, 8, dtype), "int8 embedding (Q8_0 as in the file)"
    weight = torch.from_numpy(np.ascontiguousarray(ggml.dequantize(tensor)[rows]))  # (rows, dim)
    groups = weight.unflatten(-1, (-1, ggml.GROUP))
    scales = (groups.abs().amax(-1) / 127).clamp(min=torch.finfo(torch.float32).tiny)
    values = (groups / scales[..., None]).round().clamp(-127, 127).flatten(-2)
    return PackedEmbedding.from_values(values, scales, None, 8, dtype), \
        f"int8 embedding (re-quantized from {kind})"


def _row_order(processor: Any, tensor: Any, names: dict[str, str]) -> np.ndarray | None | bool:
    """How the architecture's processor reorders this matrix's rows: None when it leaves them, the order when it
    permutes them (llama's q and k), False when it does something else (then the tensor is dequantized)."""
    from transformers.modeling_gguf_pytorch_utils import TensorProcessor

    if type(processor).process is TensorProcessor.process:
        return None
    rows = int(tensor.shape[1])
    probe = np.arange(rows, dtype=np.float64).reshape(rows, 1)
    try:
        result = processor.process(weights=probe, name=tensor.name, tensor_key_mapping=names,
                                   parsed_parameters={"tensors": {}, "config": {}})
    except Exception:  # a processor that reshapes by the real width: not a row order
        return False
    out = np.asarray(result.weights)
    if result.name != tensor.name or out.shape != (rows, 1) or sorted(out[:, 0]) != list(range(rows)):
        return False
    order = out[:, 0].astype(np.int64)
    return None if (order == np.arange(rows)).all() else order


def _processed(processor: Any, tensor: Any, names: dict[str, str]) -> np.ndarray:
    """The tensor dequantized and passed through the architecture's processor, as transformers loads it."""
    result = processor.process(weights=ggml.dequantize(tensor), name=tensor.name, tensor_key_mapping=names,
                               parsed_parameters={"tensors": {}, "config": {}})
    return result.weights


def _set_float(module: torch.nn.Module, leaf: str, array: np.ndarray, device: torch.device,
               dtype: torch.dtype) -> None:
    import torch

    value = torch.from_numpy(np.array(array, copy=True)).to(device, dtype)  # a copy: the file is mapped read-only
    if leaf in module._parameters:
        module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=False)
    else:
        module._buffers[leaf] = value


def _replace(model: torch.nn.Module, path: str, layer: torch.nn.Module) -> None:
    parent, _, child = path.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, layer)


def _check_filled(model: torch.nn.Module, file: GgufFile) -> None:
    """Refuse a model the file left parameters of: they would compute on nothing."""
    empty = [name for name, p in (*model.named_parameters(), *model.named_buffers()) if p.is_meta]
    if empty:
        shown = ", ".join(empty[:3]) + (f" and {len(empty) - 3} more" if len(empty) > 3 else "")
        raise errors.CorruptWeights(f"{file.path.name}: the GGUF file lacks {len(empty)} of the model's tensors "
                                    f"({shown})")


@contextlib.contextmanager
def empty_parameters() -> Iterator[None]:
    """Build modules with their parameters on the meta device and their buffers (RoPE's frequencies) real:
    accelerate's `init_empty_weights(include_buffers=False)`, which this project does not depend on."""
    import torch

    register = torch.nn.Module.register_parameter

    def on_meta(module: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        register(module, name, param)
        if param is not None and not param.is_meta:
            module._parameters[name] = torch.nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)

    torch.nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        with torch.device("cpu"):
            yield
    finally:
        torch.nn.Module.register_parameter = register  # type: ignore[method-assign]


def give_back_freed_memory() -> None:
    """Hand the loading's freed heap back to the system, so the resident size says what the model keeps: the
    readers' parsed metadata (gguf's per-field objects, transformers' vocabulary lists) may sit in cycles until a
    collection, and glibc keeps freed arenas until asked (`malloc_trim`; elsewhere a no-op)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)
