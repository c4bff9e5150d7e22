"""Low-precision loading: on the CPU, int4 and int8 weight-only layers (torch's weight-only kernels) and int8
through torch's dynamic int8 matmuls; on the GPU int4 and int8 weight-only layers, torchao's int8, and
bitsandbytes' 8-bit and 4-bit NF4 (CUDA).

The CPU kinds convert every linear layer (the output head too) after loading:
- `int4`: weights in int4, groups of 32 along the input with a scale and a zero each (`core/model/packed.py`);
- `int8-weight`: int8 weights with one scale per output row, multiplied with bfloat16 activations;
- `int8-dynamic`: torch's dynamically quantized int8 Linear (activations quantized per step, int8 x int8
  matmuls in fbgemm/oneDNN), computing in float32, so the model is loaded in float32 first;
- `int8`: the faster of the two int8 kinds on this machine's measurements (`CPU_INT8`, docs/benchmarks.md).
`float` keeps a model's weights as they are; for a GGUF file it means "dequantize to --dtype as it loads".

`quantization_config` turns `--quantize` into transformers' config for `from_pretrained` (None for the
kinds converted by `convert_after_loading`), or a
one-line error naming the package to install or the device it needs. After loading,
`quantization_facts` checks that it was applied (which linear weights are stored in the low
precision, by their tensor and module types) and counts the bytes the weights take before and
after, so the loading line can say both.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lookinside.core import errors

if TYPE_CHECKING:
    import torch

import warnings

from lookinside.core.records import Estimate
from lookinside.core.rules import QUANTIZE

PACKAGES = {"int8": "torchao", "8bit": "bitsandbytes", "4bit": "bitsandbytes"}
# What --quantize int8 is on the CPU: the faster int8 kind. On the 2-layer Phi-3 shape, one thread, the dynamic
# layers decoded 22.2 tokens/s against 12.6 weight-only (eager; 11.8 against 8.5 with --compile; docs/benchmarks.md).
CPU_INT8 = "int8-dynamic"
WEIGHT_ONLY = ("int4", "int8-weight")  # our own packed layers, on the CPU and on CUDA
GROUP_SIZE = 32  # --quantize int4's group: 128 decoded no faster here and lost more (docs/benchmarks.md)
DYNAMIC_METHOD = "torch dynamic int8 matmuls"
WEIGHT_ONLY_METHOD = "torch weight-only kernels, bfloat16 activations"


@dataclass(frozen=True)
class Quantized:
    """What quantization did: how many linear weights it converted, and the weights' bytes before and after."""

    kind: str
    converted: int  # linear layers whose weights are stored in the low precision
    linear: int  # all linear layers
    bytes_before: int  # at the load dtype
    bytes_after: int
    method: str = ""  # how: the package, or the CPU's dynamic int8 kernels; PACKAGES[kind] when empty

    def short(self) -> str:
        """`int8 weights 1.8 MiB (from 4.0 MiB)`, for a stats line."""
        return f"{self.kind} weights {_mib(self.bytes_after)} (from {_mib(self.bytes_before)})"

    def describe(self) -> str:
        """`int8 (torchao): 128 of 129 linear weights; weights 4.0 MiB -> 1.8 MiB`."""
        return (f"--quantize {self.kind} ({self.method or PACKAGES.get(self.kind, '')}): {self.converted} of {self.linear} linear weights "
                f"converted; weights {_mib(self.bytes_before)} -> {_mib(self.bytes_after)}")


# What each kind stores per converted weight: bits, and a float32 scale for every `block` weights
# (int8: one per output row; bitsandbytes 4-bit: one absmax per 64 weights, without double quantization).
# int4: a bfloat16 scale and zero per 32 weights, the bytes of one float32.
STORAGE = {"int8": (8, None), "int8-weight": (8, None), "int8-dynamic": (8, None), "int4": (4, GROUP_SIZE),
           "8bit": (8, None), "4bit": (4, 64)}


def estimate(model: torch.nn.Module, kind: str) -> Estimate:
    """The footprint of `model`'s weights quantized as `kind` (works on the meta device: shapes only)."""
    import torch

    if kind not in STORAGE:
        raise errors.BadInput(f"--quantize {kind} keeps the weights as they are: there is no footprint to estimate")
    bits, block = STORAGE[kind]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    converted = sum(m.weight.numel() for m in linear)
    scales = sum(m.weight.numel() // block if block else m.weight.shape[0] for m in linear)
    kept = sum(p.numel() for p in model.parameters()) - converted
    return Estimate(kind, converted, kept, converted * bits // 8, scales * 4, kept * 2)


def resolve_kind(kind: str | None, device: torch.device) -> str | None:
    """The kind `kind` means on `device`: `int8` on the CPU is `CPU_INT8`; `float` is no quantization."""
    if kind == "float":
        return None
    return CPU_INT8 if kind == "int8" and device.type == "cpu" else kind


def dynamic_int8(kind: str | None, device: torch.device) -> bool:
    """True when `kind` is the dynamic int8 on the CPU and torch has a quantized engine (fbgemm/x86 or qnnpack)."""
    if resolve_kind(kind, device) != "int8-dynamic" or device.type != "cpu":
        return False
    import torch

    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "qnnpack"))


def weight_only(kind: str | None, device: torch.device) -> bool:
    """True when `kind` is one of our packed weight-only kinds on a device that runs them (CPU, CUDA)."""
    return resolve_kind(kind, device) in WEIGHT_ONLY and device.type in ("cpu", "cuda")


def load_dtype(kind: str | None, device: torch.device, dtype: torch.dtype) -> torch.dtype:
    """The dtype to load in: float32 under the CPU's dynamic int8, whose matmuls take float32 activations."""
    import torch

    return torch.float32 if dynamic_int8(kind, device) else dtype


def convert_after_loading(kind: str | None, model: torch.nn.Module, device: torch.device) -> None:
    """The CPU's int8: every linear layer, the output head too, becomes a dynamically quantized int8 Linear
    (weights per output channel).

    The head is the largest single matrix a decode step reads (Phi-3-mini's: 32,064 x 3,072): kept in float32 it
    was two thirds of the bytes of the 2-layer Phi-3 shape's step, which decoded at 29.7 tokens/s, and 52-54 with
    it converted (2 threads). llama.cpp's q8_0 converts its output matrix as well. The logit lens calls the head as
    a module, which works the same on the converted one.
    """
    if weight_only(kind, device):
        to_weight_only(model, resolve_kind(kind, device) or "", device)
        return
    if not dynamic_int8(kind, device):
        return

    import torch
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    with warnings.catch_warnings():  # torch 2.13 announces the quantized tensor types will move to torchao
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        names = {name: per_channel_dynamic_qconfig for name, module in model.named_modules()
                 if isinstance(module, torch.nn.Linear)}
        quantize_dynamic(model, names, dtype=torch.qint8, inplace=True, mapping={torch.nn.Linear: _int8_linear()})


def quantization_config(kind: str, device: torch.device, dtype: torch.dtype) -> Any:
    """transformers' quantization config for `kind` (None: converted after loading), or a typed error."""
    if kind not in QUANTIZE:
        raise errors.BadInput(f"--quantize must be one of {', '.join(QUANTIZE)}, not {kind!r}")
    if kind == "float" or dynamic_int8(kind, device) or weight_only(kind, device):
        return None
    if kind in ("int8-dynamic", *WEIGHT_ONLY):
        where = "the CPU" if kind == "int8-dynamic" else "the CPU or a CUDA GPU"
        raise errors.BadInput(f"--quantize {kind} runs on {where}, not on {device.type}; use --quantize int8")
    package = PACKAGES[kind]
    if kind in ("8bit", "4bit") and device.type != "cuda":
        raise errors.BadInput(f"--quantize {kind} uses bitsandbytes, which needs a CUDA GPU (this run is on "
                              f"{device.type}); on the CPU use --quantize int4 or int8")
    if importlib.util.find_spec(package) is None:
        raise errors.BadInput(f"--quantize {kind} needs the {package} package: pip install {package} "
                              "(or pip install 'lookinside[quantize]')")
    if kind == "int8":
        from torchao.quantization import Int8WeightOnlyConfig  # its import-time warnings: see core/model/loading.py
        from transformers import TorchAoConfig

        return TorchAoConfig(quant_type=Int8WeightOnlyConfig())
    from transformers import BitsAndBytesConfig

    if kind == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype,
                              bnb_4bit_use_double_quant=False)


def quantization_facts(kind: str, model: torch.nn.Module, dtype: torch.dtype) -> Quantized:
    """Check that `kind` was applied to `model` (refuse a load where nothing was converted) and count bytes."""
    import torch

    from lookinside.core.model.packed import PACKED_LINEAR  # deferred: torch

    dynamic = [m for m in model.modules() if _is_dynamic_int8(m)]
    packed = [m for m in model.modules() if isinstance(m, PACKED_LINEAR)]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)] + dynamic + packed
    converted = sum(is_quantized(m) for m in linear)
    if converted == 0:
        raise errors.LookinsideError(f"--quantize {kind}: the model loaded, but none of its {len(linear)} linear "
                                     "weights was converted; refusing to show full-precision numbers as quantized")
    bits = torch.finfo(dtype).bits
    float_params = parameter_count(model)
    method = DYNAMIC_METHOD if dynamic else packed_method(packed) if packed else ""
    return Quantized(kind, converted, len(linear), float_params * bits // 8, stored_bytes(model), method)


def parameter_count(model: torch.nn.Module) -> int:
    """The model's parameters as its float checkpoint counts them: a quantized layer's weights by their shape, where
    they are buffers (our packed layers) or packed data (fbgemm's int8), not parameters."""
    from lookinside.core.model.packed import PACKED_LINEAR, PackedEmbedding  # deferred: torch

    total = sum(p.numel() for p in model.parameters())
    for module in model.modules():
        if _is_dynamic_int8(module):
            total += _int8_numel(module) + _bias_numel(module)
        elif isinstance(module, PACKED_LINEAR):  # a bias stays a parameter, counted above
            total += module.in_features * module.out_features
        elif isinstance(module, PackedEmbedding):
            total += module.num_embeddings * module.embedding_dim
    return total


def packed_method(layers: list[torch.nn.Module]) -> str:
    """How packed layers multiply, in words: lookinside's int4 kernel where the int4 layers use it (or why not, on
    the CPU), torch's weight-only kernels otherwise."""
    from lookinside.core.model import int4_kernel  # deferred: torch
    from lookinside.core.model.packed import Int4Linear  # deferred: torch

    if any(isinstance(layer, Int4Linear) and not layer.packed.is_cuda for layer in layers):
        return int4_kernel.method()
    return WEIGHT_ONLY_METHOD


def is_quantized(module: torch.nn.Module) -> bool:
    """True when a linear layer's weight is stored in a low precision (a torchao tensor or a bitsandbytes layer)."""
    from lookinside.core.model.packed import PACKED  # deferred: torch

    name = type(module).__name__
    if name in ("Linear8bitLt", "Linear4bit") or _is_dynamic_int8(module) or isinstance(module, PACKED):
        return True
    weight = getattr(module, "weight", None)
    return weight is not None and hasattr(weight, "__tensor_flatten__") and weight.dtype.is_floating_point and any(
        not getattr(weight, inner).dtype.is_floating_point for inner in weight.__tensor_flatten__()[0])


def stored_bytes(model: torch.nn.Module) -> int:
    """The bytes the parameters really take: the inner tensors of torchao's tensor subclasses, packed bitsandbytes data,
    our packed layers' buffers."""
    from lookinside.core.model.packed import PACKED  # deferred: torch

    total = sum(sum(b.nbytes for b in m.buffers(recurse=False)) for m in model.modules() if isinstance(m, PACKED))
    for parameter in model.parameters():
        inner = parameter.__tensor_flatten__()[0] if hasattr(parameter, "__tensor_flatten__") else None
        total += sum(getattr(parameter, name).nbytes for name in inner) if inner else parameter.nbytes
    for module in model.modules():
        if _is_dynamic_int8(module):  # its packed weights are no parameter: int8 values, a scale and zero per row
            total += _int8_numel(module) + module.out_features * 16 + _bias_numel(module) * 4
    return total


def to_weight_only(model: torch.nn.Module, kind: str, device: torch.device) -> int:
    """Every `nn.Linear` of `model`, the output head too, becomes an int4 or int8 packed layer; how many did.

    An int4 layer whose shape the kernel cannot take (output rows not a multiple of 16, inputs not of the group
    size) becomes int8 instead.
    """
    import torch

    changed = 0
    for name, module in list(model.named_modules()):
        if not isinstance(module, torch.nn.Linear):  # nn.Linear and kernels.RowLinear
            continue
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, packed_linear(module.weight.data,
                                                                                      module.bias, kind, device))
        changed += 1
    return changed


def packed_linear(weight: torch.Tensor, bias: Any, kind: str, device: torch.device) -> torch.nn.Module:
    """The packed layer of `kind` (int4 or int8-weight) for a float `weight` `(out, in)`."""
    from lookinside.core.model.packed import Int4Linear, Int8Linear  # deferred: torch

    if kind == "int4" and fits_int4(*weight.shape, GROUP_SIZE):
        values, scales, zeros = int4_groups(weight, GROUP_SIZE)
        return Int4Linear.from_values(values, scales, zeros, GROUP_SIZE, bias, device)
    values, scales = int8_rows(weight)
    return Int8Linear(values.to(device), scales.to(device), bias)


def fits_int4(out_features: int, in_features: int, group_size: int) -> bool:
    """True when the int4 kernels take a matrix of this shape."""
    from lookinside.core.model.packed import INT4_ROWS  # deferred: torch

    return out_features % INT4_ROWS == 0 and in_features % group_size == 0


def int4_groups(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric int4 in groups along the input: values 0..15, and per group a scale and a zero with
    w ~ (q - 8) * scale + zero (the kernels' form), from each group's minimum and maximum.

    The scale and the minimum are rounded to float16 first (where that keeps them finite and the scale above 0),
    so that the int4 kernel keeps them in 2 bytes each, as a GGUF's: 20 bytes per 32 weights read instead of 24
    (a symmetric Q4_0 group, which stores no minimum, takes 18).
    # (out, in) -> (out, in), (out, in / group), (out, in / group)"""
    import torch

    groups = weight.float().unflatten(-1, (-1, group_size))  # (out, in / group, group)
    low, high = groups.amin(-1), groups.amax(-1)  # (out, in / group)
    scales = ((high - low) / 15).clamp(min=torch.finfo(torch.float32).tiny)
    low, scales = _half_where_it_holds(low, scales)
    values = ((groups - low[..., None]) / scales[..., None]).round().clamp(0, 15).to(torch.uint8)
    return values.flatten(-2), scales, low + 8 * scales


def _half_where_it_holds(low: torch.Tensor, scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`low` and `scales` rounded to float16 and back, where both stay finite and the scale above 0; as they are
    elsewhere."""
    import torch

    low16, scales16 = low.half().float(), scales.half().float()
    fine = low16.isfinite() & scales16.isfinite() & (scales16 > 0)
    return torch.where(fine, low16, low), torch.where(fine, scales16, scales)


def int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric int8 with one scale per output row.  # (out, in) -> (out, in), (out,)"""
    import torch

    w = weight.float()
    scales = (w.abs().amax(-1) / 127).clamp(min=torch.finfo(torch.float32).tiny)  # (out,)
    return (w / scales[:, None]).round().clamp(-127, 127).to(torch.int8), scales


def _is_dynamic_int8(module: torch.nn.Module) -> bool:
    from torch.ao.nn.quantized.dynamic import Linear

    return isinstance(module, Linear)


@functools.cache
def _int8_linear() -> type:
    """torch's dynamic int8 Linear, quantizing activations to all 8 bits where the CPU multiplies int8 with VNNI,
    and traceable by torch.compile (`--compile --quantize int8`: core/model/kernels.int8_linear).

    torch's own module uses 7 (`reduce_range`), which keeps AVX2's 16-bit intermediate sums from saturating
    and is not needed with VNNI's 32-bit ones; on the tiny model the 8th bit cut the mean KL divergence from
    float32 twelvefold (0.021 -> 0.0018 nats) at the same speed.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear

    from lookinside.core.model import kernels  # deferred: torch

    full = _cpu_has_vnni()

    class Int8Linear(Linear):
        @classmethod
        def from_float(cls, *args: Any, **kwargs: Any) -> Linear:
            layer = super().from_float(*args, **kwargs)
            layer.key = kernels.register_int8(layer)
            return layer

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if torch.compiler.is_compiling():
                return kernels.int8_linear(x, self.key, self.out_features)
            return self.matmul(x)

        def matmul(self, x: torch.Tensor) -> torch.Tensor:
            y = torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=not full)
            return y.to(x.dtype)

    return Int8Linear


def _cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text().split()
    except OSError:
        return False
    return any(flag in flags for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


def _int8_numel(module: torch.nn.Module) -> int:
    """A dynamic int8 layer's weight count, from its shape (`weight()` would unpack a copy; bench asks per run)."""
    return module.in_features * module.out_features


def _bias_numel(module: torch.nn.Module) -> int:
    bias = module.bias()
    return 0 if bias is None else bias.numel()


def _mib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
