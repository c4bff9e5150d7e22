"""llama.cpp's quantized blocks read as values, scales and zeros for the packed layers, without dequantizing.

Three 4-bit types map onto int4 in groups of 32 (`w = (q - 8) * scale + zero`) value for value:
- Q4_0: blocks of 32, a float16 `d`, w = (q - 8) * d: scale d, zero 0;
- Q4_1: blocks of 32, `d` and `m`, w = q * d + m: scale d, zero m + 8d;
- Q4_K: super-blocks of 256 with eight 6-bit scales and mins under float16 `d` and `dmin`,
  w = d * sc * q - dmin * m: per group of 32, scale d * sc, zero 8 d sc - dmin m.
Q8_0 (blocks of 32, a float16 `d`, int8 q) is read as its int8 values and per-block scales. Every other type
is dequantized with the `gguf` package, one tensor at a time, and re-quantized by the caller.
The layouts are the `gguf` package's own (gguf/quants.py); tests/test_gguf.py holds every decoding equal to its
`dequantize`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

GROUP = 32
EXACT_INT4 = ("Q4_0", "Q4_1", "Q4_K")
FLOAT_TYPES = ("F32", "F16", "BF16")
# Bits per weight of the types kept at 4 bits when re-quantized (lower types, and 4-bit ones with codebooks).
LOW_BIT_TYPES = ("Q2_K", "Q3_K", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "IQ3_S", "IQ4_NL",
                 "IQ4_XS", "TQ1_0", "TQ2_0", "MXFP4", "NVFP4")


def int4_blocks(raw: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values 0..15 and per-32 scales and zeros (w = (q - 8) * scale + zero) of a Q4_0, Q4_1 or Q4_K matrix.
    # raw (rows, bytes per row) -> (rows, cols) uint8, (rows, cols / 32) float32, (rows, cols / 32) float32"""
    rows = raw.shape[0]
    if kind == "Q4_K":
        return _q4_k(raw.reshape(-1, 144), rows)
    size = 18 if kind == "Q4_0" else 20
    blocks = raw.reshape(-1, size)  # (rows * groups, size)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)  # (blocks, 1)
    qs = blocks[:, size - 16:]
    values = np.concatenate([qs & 0x0F, qs >> 4], axis=-1)  # low nibbles are the block's first 16 weights
    zeros = np.zeros_like(d) if kind == "Q4_0" else blocks[:, 2:4].copy().view(np.float16).astype(np.float32) + 8 * d
    return values.reshape(rows, -1), d.reshape(rows, -1), zeros.reshape(rows, -1)


def _q4_k(blocks: np.ndarray, rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from gguf.quants import Q4_K

    d = blocks[:, 0:2].copy().view(np.float16).astype(np.float32)  # (super-blocks, 1)
    dmin = blocks[:, 2:4].copy().view(np.float16).astype(np.float32)
    sc, m = Q4_K.get_scale_min(blocks[:, 4:16])  # (super-blocks, 8) each
    scales = d * sc.astype(np.float32)  # (super-blocks, 8)
    mins = dmin * m.astype(np.float32)
    qs = blocks[:, 16:].reshape(-1, 4, 32)  # four 64-weight chunks: low nibbles first, then high
    values = np.stack([qs & 0x0F, qs >> 4], axis=2).reshape(-1, 256)  # (super-blocks, 256)
    return values.reshape(rows, -1), scales.reshape(rows, -1), (8 * scales - mins).reshape(rows, -1)


def q8_0_blocks(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """int8 values and per-32 scales (w = q * scale) of a Q8_0 matrix.
    # raw (rows, bytes per row) -> (rows, cols) int8, (rows, cols / 32) float32"""
    rows = raw.shape[0]
    blocks = raw.reshape(-1, 34)
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)
    return blocks[:, 2:].copy().view(np.int8).reshape(rows, -1), d.reshape(rows, -1)


def dequantize(tensor: Any) -> np.ndarray:
    """A GGUF tensor as float32, shaped as transformers reads it: (rows, cols) for a matrix."""
    from gguf import dequantize as gguf_dequantize

    return gguf_dequantize(tensor.data, tensor.tensor_type).astype(np.float32, copy=False)


def bits(kind: str) -> int:
    """The bits a re-quantized tensor of `kind` keeps: 4 for the low-bit types, else 8."""
    return 4 if kind in LOW_BIT_TYPES or kind in EXACT_INT4 else 8
