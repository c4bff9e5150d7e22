"""Linear and embedding layers whose weights stay packed in int4 or int8, computing with float activations.

`Int4Linear` holds int4 weights in groups along the input (one scale and one zero per group, llama.cpp's Q4_0,
Q4_1 and Q4_K as they are), `Int8Linear` int8 weights with one scale per output row. On a CPU with AVX512-VNNI
the int4 layer multiplies with lookinside's own kernel (`core/model/int4_kernel.py`: the input rounded to int8 per
32 values inside it, integer dot products, as llama.cpp's q4_0), which read one 16384 x 3072 matrix about twice as
fast as torch's (docs/benchmarks.md); elsewhere with torch's weight-only kernels (`aten._weight_int4pack_mm_for_cpu`,
`aten._weight_int8pack_mm` on the CPU, what gpt-fast and torchao call there). Those are fast only with bfloat16
activations: on this project's EPYC (AVX512-BF16) one 16384 x 3072 matrix took 2.8-3.2 ms in int4 and 5.1 ms in
int8 with a bfloat16 row, 87-165 ms and 45 ms with a float32 or float16 one (one thread). So their layers round the
input row to bfloat16. Every layer hands back its model's dtype: hooks before and after it see the model's float
activations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from lookinside.core.model import int4_kernel

COMPUTE = torch.bfloat16  # the weight-only kernels' activation dtype (see the module docstring)
INT4_ROWS = 16  # the CPU int4 packing wants output rows in multiples of 16
CUDA_INNER_K_TILES = 8


class Int4Linear(nn.Module):
    """`y = x W^T + b` with W in int4: w = (q - 8) * scale + zero, one (scale, zero) per `group_size` inputs.

    On a CPU with AVX512-VNNI the weights are kept in the tiles of lookinside's kernel (`core/model/int4_kernel.py`:
    the activations rounded to int8 per group, integer dot products), else in torch's own layout."""

    def __init__(self, in_features: int, out_features: int, group_size: int, packed: torch.Tensor,
                 scales_and_zeros: torch.Tensor | None, bias: nn.Parameter | None = None,
                 scales_f32: bool = False, offsets: bool = False) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.register_buffer("packed", packed)  # the kernel's own layout: torch's, or int4_kernel's tiles
        self.register_buffer("scales_and_zeros", scales_and_zeros)  # (in / group, out, 2), bfloat16; None in tiles
        self.bias = bias
        self.tiled = scales_and_zeros is None  # int4_kernel's tiles, which hold the scales and offsets
        self.scales_f32, self.offsets = scales_f32, offsets  # the tiles' scales in float32; asymmetric groups

    @classmethod
    def from_values(cls, values: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor, group_size: int,
                    bias: nn.Parameter | None = None, device: torch.device | None = None) -> Int4Linear:
        """From int4 values 0..15 `(out, in)` and per-group `scales`, `zeros` `(out, in / group)`."""
        out_features, in_features = values.shape
        device = device or torch.device("cpu")
        if device.type == "cpu" and int4_kernel.fits(out_features, in_features, group_size) and int4_kernel.available():
            return cls._tiled(values, scales, zeros, bias)
        if device.type == "cuda":
            q = values.to(device, torch.int32)
            pairs = (q[:, ::2] << 4 | q[:, 1::2]).to(torch.uint8)  # (out, in / 2), as the CUDA packing reads them
            packed = torch.ops.aten._convert_weight_to_int4pack(pairs, CUDA_INNER_K_TILES)
        else:
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values.to(torch.int32), 1)  # (out, in / 2)
        table = torch.stack([scales, zeros], dim=-1).transpose(0, 1).contiguous()  # (in / group, out, 2)
        return cls(in_features, out_features, group_size, packed, table.to(device, COMPUTE), bias)

    @classmethod
    def _tiled(cls, values: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
               bias: nn.Parameter | None) -> Int4Linear:
        """In int4_kernel's tiles: w = d q + m with d = scale, m = zero - 8 scale; a symmetric group (zero 0,
        Q4_0's) stores no m; d and m in float16 where that holds them exactly (a GGUF's own), else float32."""
        out_features, in_features = values.shape
        symmetric = not bool(zeros.any())
        offsets = None if symmetric else zeros.double() - 8 * scales.double()
        half = [_smallest_exact(t) for t in (scales, offsets) if t is not None]
        dtype = torch.float16 if all(t.dtype == torch.float16 for t in half) else torch.float32
        d, m = scales.to(dtype), None if offsets is None else offsets.to(dtype)
        tiles = int4_kernel.pack(values, d, m)
        return cls(in_features, out_features, int4_kernel.GROUP, tiles, None, bias, dtype == torch.float32,
                   not symmetric)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self.tiled:
            rows = x.reshape(-1, self.in_features)  # (rows, in)
            multiply = int4_kernel.int4_linear if torch.compiler.is_compiling() else int4_kernel.linear
            y = multiply(rows, self.packed, self.out_features, self.scales_f32, self.offsets).to(x.dtype)
        else:
            rows = x.reshape(-1, self.in_features).to(COMPUTE)
            if self.packed.is_cuda:
                y = torch.ops.aten._weight_int4pack_mm(rows, self.packed, self.group_size, self.scales_and_zeros)
            else:
                y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size,
                                                               self.scales_and_zeros)
            y = y.to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        kernel = ", int8 activations (AVX512-VNNI)" if self.tiled else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, int4, "
                f"group_size={self.group_size}{kernel}")


class Int8Linear(nn.Module):
    """`y = x W^T + b` with W in int8 and one scale per output row."""

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, bias: nn.Parameter | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = values.shape
        self.register_buffer("values", values.to(torch.int8))  # (out, in)
        self.register_buffer("scales", scales.to(COMPUTE))  # (out,)
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if self.values.is_cuda:
            y = F.linear(x, self.values.to(x.dtype)) * self.scales.to(x.dtype)
        else:
            rows = x.reshape(-1, self.in_features).to(COMPUTE)
            y = torch.ops.aten._weight_int8pack_mm(rows, self.values, self.scales).to(x.dtype)
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


class PackedEmbedding(nn.Module):
    """An embedding table in groups of int4 (two to a byte) or int8 values, each group `w = q * scale + offset`;
    a lookup dequantizes only the rows it reads.

    Without `offsets` the groups are symmetric, `w = (q - 8) * scale` for 4 bits and `q * scale` for 8 (Q4_0,
    Q8_0): the table then takes the file's own bytes. Scales and offsets are float16 where that holds them
    exactly (the file's float16 `d`), else float32."""

    def __init__(self, values: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None, bits: int,
                 dtype: torch.dtype) -> None:
        super().__init__()
        self.num_embeddings, self.embedding_dim = values.shape[0], values.shape[1] * (2 if bits == 4 else 1)
        self.bits, self.dtype = bits, dtype
        self.group_size = self.embedding_dim // scales.shape[1]
        self.center = 8 if bits == 4 else 0  # the value a symmetric group maps to 0
        self.register_buffer("values", values)  # (rows, dim / 2) uint8 for 4 bits, (rows, dim) int8 for 8
        self.register_buffer("scales", scales)  # (rows, dim / group) float16 or float32
        self.register_buffer("offsets", offsets)  # (rows, dim / group) like scales, or None: symmetric

    @classmethod
    def from_values(cls, values: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None, bits: int,
                    dtype: torch.dtype) -> PackedEmbedding:
        """From values `(rows, dim)` (0..15 for 4 bits, -128..127 for 8) and per-group scales and offsets (None:
        symmetric)."""
        if bits == 4:
            q = values.to(torch.uint8)
            values = q[:, ::2] | (q[:, 1::2] << 4)  # (rows, dim / 2)
        else:
            values = values.to(torch.int8)
        return cls(values, _smallest_exact(scales), None if offsets is None else _smallest_exact(offsets), bits, dtype)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """The dequantized rows of `ids`.  # (...) -> (..., dim)"""
        q = F.embedding(ids, self.values)  # (..., stored)
        if self.bits == 4:
            q = torch.stack([q & 0x0F, q >> 4], dim=-1).flatten(-2)  # (..., dim)
        groups = q.to(torch.float32).unflatten(-1, (-1, self.group_size))  # (..., dim / group, group)
        scales = F.embedding(ids, self.scales).float()[..., None]  # (..., dim / group, 1)
        if self.offsets is None:
            w = (groups - self.center) * scales
        else:
            w = groups * scales + F.embedding(ids, self.offsets).float()[..., None]
        return w.flatten(-2).to(self.dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (...) -> (..., dim)
        return self.rows(ids)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int{self.bits}, group_size={self.group_size}"


def _smallest_exact(x: torch.Tensor) -> torch.Tensor:
    """`x` as float16 when that holds every value exactly (a GGUF's float16 scales), else as float32."""
    x = x.float()
    half = x.half()
    return half if torch.equal(half.float(), x) else x


PACKED_LINEAR = (Int4Linear, Int8Linear)
PACKED = (Int4Linear, Int8Linear, PackedEmbedding)


def packed_bytes(module: nn.Module) -> int:
    """Bytes a packed layer's buffers and bias take."""
    total = sum(buffer.nbytes for buffer in module.buffers(recurse=False))
    bias = getattr(module, "bias", None)
    return total + (bias.nbytes if isinstance(bias, torch.Tensor) else 0)
