"""Low-precision loading: int8 through torch's dynamic int8 matmuls (CPU) or torchao (GPU), 8-bit and 4-bit NF4
through bitsandbytes (CUDA).

On the CPU `--quantize int8` converts every linear layer (the output head too) after loading to torch's
dynamically quantized int8 Linear (int8 weights per output channel, activations quantized per step, int8 x
int8 matmuls in fbgemm/oneDNN): on the 2-layer Phi-3 shape it decoded about 3x faster than float32, where
torchao's int8 weight-only layers (dequantized to float at every matmul) decoded about 7x slower
(docs/benchmarks.md).
It computes in float32, so the model is loaded in float32 first.

`quantization_config` turns `--quantize` into transformers' config for `from_pretrained` (None for the
CPU's int8, converted by `convert_after_loading`), or a
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

QUANTIZE = ("int8", "8bit", "4bit")
PACKAGES = {"int8": "torchao", "8bit": "bitsandbytes", "4bit": "bitsandbytes"}


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
        return (f"--quantize {self.kind} ({self.method or PACKAGES[self.kind]}): {self.converted} of {self.linear} linear weights "
                f"converted; weights {_mib(self.bytes_before)} -> {_mib(self.bytes_after)}")


# What each kind stores per converted weight: bits, and a float32 scale for every `block` weights
# (int8: one per output row; bitsandbytes 4-bit: one absmax per 64 weights, without double quantization).
STORAGE = {"int8": (8, None), "8bit": (8, None), "4bit": (4, 64)}


@dataclass(frozen=True)
class Estimate:
    """The weights' footprint under `kind`, from the shapes alone: what is converted, what stays 16-bit."""

    kind: str
    converted_params: int  # in the decoder's linear layers
    kept_params: int  # embeddings, the LM head, norms: kept at 16 bits, as the loaders do
    converted_bytes: int
    scale_bytes: int
    kept_bytes: int

    @property
    def total_bytes(self) -> int:
        """Everything the weights take."""
        return self.converted_bytes + self.scale_bytes + self.kept_bytes


def estimate(model: torch.nn.Module, kind: str) -> Estimate:
    """The footprint of `model`'s weights quantized as `kind` (works on the meta device: shapes only)."""
    import torch

    bits, block = STORAGE[kind]
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not head]
    converted = sum(m.weight.numel() for m in linear)
    scales = sum(m.weight.numel() // block if block else m.weight.shape[0] for m in linear)
    kept = sum(p.numel() for p in model.parameters()) - converted
    return Estimate(kind, converted, kept, converted * bits // 8, scales * 4, kept * 2)


CPU_INT8 = "torch dynamic int8 matmuls"


def dynamic_int8(kind: str | None, device: torch.device) -> bool:
    """True when `kind` is int8 on the CPU and torch has a quantized engine (fbgemm/x86 or qnnpack) to run it."""
    if kind != "int8" or device.type != "cpu":
        return False
    import torch

    return any(engine in torch.backends.quantized.supported_engines for engine in ("x86", "fbgemm", "qnnpack"))


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
    if not dynamic_int8(kind, device):
        return
    import warnings

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
    if dynamic_int8(kind, device):
        return None
    package = PACKAGES[kind]
    if kind in ("8bit", "4bit") and device.type != "cuda":
        raise errors.BadInput(f"--quantize {kind} uses bitsandbytes, which needs a CUDA GPU (this run is on "
                              f"{device.type}); on the CPU use --quantize int8 (torchao)")
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

    dynamic = [m for m in model.modules() if _is_dynamic_int8(m)]
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)] + dynamic
    converted = sum(is_quantized(m) for m in linear)
    if converted == 0:
        raise errors.LookinsideError(f"--quantize {kind}: the model loaded, but none of its {len(linear)} linear "
                                     "weights was converted; refusing to show full-precision numbers as quantized")
    bits = torch.finfo(dtype).bits
    float_params = sum(p.numel() for p in model.parameters()) + sum(_int8_numel(m) + _bias_numel(m) for m in dynamic)
    return Quantized(kind, converted, len(linear), float_params * bits // 8, stored_bytes(model),
                     CPU_INT8 if dynamic else "")


def is_quantized(module: torch.nn.Module) -> bool:
    """True when a linear layer's weight is stored in a low precision (a torchao tensor or a bitsandbytes layer)."""
    name = type(module).__name__
    if name in ("Linear8bitLt", "Linear4bit") or _is_dynamic_int8(module):
        return True
    weight = getattr(module, "weight", None)
    return weight is not None and hasattr(weight, "__tensor_flatten__") and weight.dtype.is_floating_point and any(
        not getattr(weight, inner).dtype.is_floating_point for inner in weight.__tensor_flatten__()[0])


def stored_bytes(model: torch.nn.Module) -> int:
    """The bytes the parameters really take: the inner tensors of torchao's tensor subclasses, packed bitsandbytes data."""
    total = 0
    for parameter in model.parameters():
        inner = parameter.__tensor_flatten__()[0] if hasattr(parameter, "__tensor_flatten__") else None
        total += sum(getattr(parameter, name).nbytes for name in inner) if inner else parameter.nbytes
    for module in model.modules():
        if _is_dynamic_int8(module):  # its packed weights are no parameter: int8 values, a scale and zero per row
            total += _int8_numel(module) + module.out_features * 16 + _bias_numel(module) * 4
    return total


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

    from lookinside.core.model import kernels

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
