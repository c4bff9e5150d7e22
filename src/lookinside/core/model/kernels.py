"""Kernel choices torch does not make well for one token at a time on the CPU.

A decode step multiplies each weight matrix by a single row. In bfloat16 on the CPU, `F.linear`
sends that to oneDNN's AMX matrix-matrix kernel, which for one row read 10 GB/s on this project's
Xeon where `torch.mv` over the same weights read 17 GB/s (a 16384 x 3072 matrix, one thread:
9.6-10.1 ms against 5.8-6.7 ms). `use_matrix_vector` gives a bfloat16 model's linear layers a
forward that takes `torch.mv` for a single row and `F.linear` for everything else (the prefill):
the module stays an `nn.Linear` with the same weight, so hooks, the logit lens and the tests read
it as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RowLinear(torch.nn.Linear):
    """`nn.Linear` that multiplies a single row with `torch.mv`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if x.numel() != x.shape[-1] or x.is_cuda:
            return F.linear(x, self.weight, self.bias)
        y = torch.mv(self.weight, x.reshape(-1))  # (out,)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


def use_matrix_vector(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> int:
    """On the CPU in bfloat16, every plain `nn.Linear` of `model` becomes a `RowLinear`; how many did."""
    if device.type != "cpu" or dtype != torch.bfloat16:
        return 0
    changed = 0
    for module in model.modules():
        if type(module) is torch.nn.Linear:
            module.__class__ = RowLinear
            changed += 1
    return changed
