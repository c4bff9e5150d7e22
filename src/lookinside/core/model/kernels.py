"""Kernel choices torch does not make well for one token at a time on the CPU, kept under torch.compile.

A decode step multiplies each weight matrix by a single row. In bfloat16 on the CPU, `F.linear`
sends that to oneDNN's AMX matrix-matrix kernel, which for one row read 10 GB/s on this project's
Xeon where `torch.mv` over the same weights read 17 GB/s (a 16384 x 3072 matrix, one thread:
9.6-10.1 ms against 5.8-6.7 ms). `use_matrix_vector` gives a bfloat16 model's linear layers a
forward that takes `torch.mv` for a single row and `F.linear` for everything else (the prefill):
the module stays an `nn.Linear` with the same weight, so hooks, the logit lens and the tests read
it as before.

Under torch.compile (`--compile`) both this choice and the CPU's int8 layers (core/model/quantize.py) go
through custom ops, which inductor calls as they are: lowered by inductor, one bfloat16 row went back to
the slow matrix-matrix kernel (the 2-layer Phi-3 shape decoded at 17.8 tokens/s compiled against 25.3
eager), and dynamo cannot put the int8 layers' packed fbgemm weights in a graph at all ("Failed to
convert args/kwargs to proxy"): the graph holds an int8 layer's key, and the op finds its weights.
"""

from __future__ import annotations

import weakref

import torch
import torch.nn.functional as F


@torch.library.custom_op("lookinside::matrix_vector", mutates_args=())
def matrix_vector(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """`torch.mv`, opaque to inductor.  # (out, in), (in,) -> (out,)"""
    return torch.mv(weight, x)


@matrix_vector.register_fake
def _(weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return x.new_empty(weight.shape[0])


_INT8_LAYERS: weakref.WeakValueDictionary[int, torch.nn.Module] = weakref.WeakValueDictionary()


def register_int8(layer: torch.nn.Module) -> int:
    """The key by which `int8_linear` finds `layer` (held weakly: it dies with the model)."""
    _INT8_LAYERS[id(layer)] = layer
    return id(layer)


@torch.library.custom_op("lookinside::int8_linear", mutates_args=())
def int8_linear(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    """The int8 layer registered as `key` applied to `x`, opaque to torch.compile.  # (..., in) -> (..., out)"""
    return _INT8_LAYERS[key].matmul(x)


@int8_linear.register_fake
def _(x: torch.Tensor, key: int, out_features: int) -> torch.Tensor:
    return x.new_empty((*x.shape[:-1], out_features))


class RowLinear(torch.nn.Linear):
    """`nn.Linear` that multiplies a single row with `torch.mv`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        if x.numel() != x.shape[-1] or x.is_cuda:
            return F.linear(x, self.weight, self.bias)
        mv = matrix_vector if torch.compiler.is_compiling() else torch.mv  # eager: no dispatch through the op
        y = mv(self.weight, x.reshape(-1))  # (out,)
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
