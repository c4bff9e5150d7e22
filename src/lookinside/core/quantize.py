"""Low-precision loading: int8 weights through torchao (CPU and GPU), 8-bit and 4-bit NF4 through bitsandbytes (CUDA).

`quantization_config` turns `--quantize` into transformers' config for `from_pretrained`, or a
one-line error naming the package to install or the device it needs. After loading,
`quantization_facts` checks that it was applied (which linear weights are stored in the low
precision, by their tensor and module types) and counts the bytes the weights take before and
after, so the loading line can say both.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
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

    def short(self) -> str:
        """`int8 weights 1.8 MiB (from 4.0 MiB)`, for a stats line."""
        return f"{self.kind} weights {_mib(self.bytes_after)} (from {_mib(self.bytes_before)})"

    def describe(self) -> str:
        """`int8 (torchao): 128 of 129 linear weights; weights 4.0 MiB -> 1.8 MiB`."""
        return (f"--quantize {self.kind} ({PACKAGES[self.kind]}): {self.converted} of {self.linear} linear weights "
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


def quantization_config(kind: str, device: torch.device, dtype: torch.dtype) -> Any:
    """transformers' quantization config for `kind`, or a typed error saying what is missing."""
    if kind not in QUANTIZE:
        raise errors.BadInput(f"--quantize must be one of {', '.join(QUANTIZE)}, not {kind!r}")
    package = PACKAGES[kind]
    if kind in ("8bit", "4bit") and device.type != "cuda":
        raise errors.BadInput(f"--quantize {kind} uses bitsandbytes, which needs a CUDA GPU (this run is on "
                              f"{device.type}); on the CPU use --quantize int8 (torchao)")
    if importlib.util.find_spec(package) is None:
        raise errors.BadInput(f"--quantize {kind} needs the {package} package: pip install {package} "
                              "(or pip install 'lookinside[quantize]')")
    if kind == "int8":
        from torchao.quantization import Int8WeightOnlyConfig  # its import-time warnings: see core/loading.py
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

    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    converted = sum(is_quantized(m) for m in linear)
    if converted == 0:
        raise errors.LookinsideError(f"--quantize {kind}: the model loaded, but none of its {len(linear)} linear "
                                     "weights was converted; refusing to show full-precision numbers as quantized")
    before = sum(p.numel() for p in model.parameters()) * torch.finfo(dtype).bits // 8
    return Quantized(kind, converted, len(linear), before, stored_bytes(model))


def is_quantized(module: torch.nn.Module) -> bool:
    """True when a linear layer's weight is stored in a low precision (a torchao tensor or a bitsandbytes layer)."""
    name = type(module).__name__
    if name in ("Linear8bitLt", "Linear4bit"):
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
    return total


def _mib(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"
