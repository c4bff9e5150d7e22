"""A batch's rows computed as each sequence alone computes itself: the same kernels, so the same bits.

Two things make a batched row's numbers differ from its run alone in float32's last digits (up to
3e-5 in a log-probability, measured on the tiny model): a matrix product over R rows takes another
path through the BLAS than the product of one row (M=R against M=1), and a left-padded row's
attention needs a mask, which sends transformers' sdpa attention down another kernel (the query
packed per key head instead of `enable_gqa`). Inside `alone(lm, starts)`, every `nn.Linear` of
the model multiplies each row by itself (`torch.bmm` of R products of one row: each the very call
the row makes alone), and attention runs once per run of rows that start at the same column, over
those rows' own keys and values and with no mask: the call the sequence makes alone. Measured on
the tiny model: 16 rows of different lengths, bit for bit equal to each alone, at the cost of the
masked batch (tests/test_batch.py).

It applies where it was measured (`applies`): float32 on the CPU, with an attention that
transformers dispatches by name (sdpa, not eager: the eager function lives in each model's own
module). Elsewhere a batch runs its masked step, equal to float error.

The price: R products of one row read each weight matrix R times where one product of R rows reads
it once. On this project's CPU (MKL on an AMD EPYC, whose small products are slow either way) a
16-row step of the tiny model costs about 1.2x the masked one, and a 3072 x 9216 matrix times 16
rows 164 ms against 129 ms; where a batched product is cheap (a GPU, a well-served BLAS), the row
by row products are what a batch saves, which is why only the CPU takes this path.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM

NAME = "lookinside_rows"  # the attention implementation registered with transformers while a batch steps
_STARTS: contextvars.ContextVar[tuple[str, list[tuple[int, int, int]]]] = contextvars.ContextVar("rows")


def applies(lm: LM) -> bool:
    """Whether `alone` makes `lm`'s batched rows equal to its runs alone (see the module's docstring)."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    implementation = getattr(lm.model.config, "_attn_implementation", None)
    return (lm.device.type == "cpu" and lm.model.dtype == torch.float32
            and getattr(type(lm.model), "_supports_attention_backend", False)
            and implementation in ALL_ATTENTION_FUNCTIONS and implementation != NAME)


@contextlib.contextmanager
def alone(lm: LM, starts: list[int]) -> Iterator[None]:
    """While inside, each row of `lm`'s forward pass is computed as alone; row i's own keys start at `starts[i]`.

    Nothing is left behind: the linear layers' forward and the attention implementation are put back on the way out.
    """
    _register()
    config = lm.model.config
    before = config._attn_implementation
    linears = _linears(lm.model)
    token = _STARTS.set((before, _runs(starts)))
    config._attn_implementation = NAME  # no mask is made for it (transformers knows no mask function by this name)
    for module in linears:
        module.__dict__["forward"] = _row_by_row.__get__(module)  # the instance's own forward, in place of the class's
    try:
        yield
    finally:
        for module in linears:
            module.__dict__.pop("forward", None)
        config._attn_implementation = before
        _STARTS.reset(token)


def _row_by_row(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`self(x)` with each row of the batch multiplied on its own, as a batch of one does.

    # (rows, seq, in) -> (rows, seq, out)
    """
    if x.dim() != 3 or x.shape[0] == 1:
        return torch.nn.functional.linear(x, self.weight, self.bias)
    if x.shape[1] > 1:  # a prefill: a batched product of several rows each is not what each makes alone (measured)
        return torch.cat([torch.nn.functional.linear(x[i : i + 1], self.weight, self.bias) for i in range(x.shape[0])])
    weight = self.weight.t().expand(x.shape[0], -1, -1)  # (rows, in, out): one matrix, no copy
    if self.bias is None:
        return torch.bmm(x, weight)
    return torch.baddbmm(self.bias.expand(x.shape[0], x.shape[1], -1), x, weight)


def _attention(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
               attention_mask: torch.Tensor | None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """The model's own attention, once per run of rows with the same padding, over their own keys and no mask.

    # (rows, heads, q, dim), (rows, kv_heads, width, dim) -> (rows, q, heads, dim)
    """
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    implementation, runs = _STARTS.get()
    inner = ALL_ATTENTION_FUNCTIONS[implementation]
    if len(runs) == 1 and runs[0][0] == 0:
        return inner(module, query, key, value, None, **kwargs)
    gqa = _sdpa_decoding(inner, module, query, key, value, kwargs)
    if gqa is not None:  # a decoding step: sdpa's own call per run, without its wrapper's checks each time
        sdpa, scale = torch.nn.functional.scaled_dot_product_attention, kwargs.get("scaling")
        out = torch.cat([sdpa(query[lo:hi], key[lo:hi, :, start:], value[lo:hi, :, start:], scale=scale,
                              enable_gqa=gqa) for start, lo, hi in runs])  # (rows, heads, 1, dim)
        return out.transpose(1, 2).contiguous(), None
    out = [inner(module, query[lo:hi], key[lo:hi, :, start:], value[lo:hi, :, start:], None, **kwargs)[0]
           for start, lo, hi in runs]
    return torch.cat(out), None


def _sdpa_decoding(inner: Any, module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                   kwargs: dict[str, Any]) -> bool | None:
    """Its `enable_gqa` where transformers' sdpa attention, given one query and no mask, makes exactly the call
    `torch.nn.functional.scaled_dot_product_attention(query, key, value, scale=..., enable_gqa=...)`; else None.

    That function runs 16 to 32 times a layer in a step of 16 to 32 rows of different lengths, and its checks cost
    as much as the kernel (measured: 1.3 ms of a 12 ms step of 32 rows); tests/test_batch.py holds the rows to their
    runs alone bit for bit, which this call must keep.
    """
    from transformers.integrations.sdpa_attention import sdpa_attention_forward, use_gqa_in_sdpa

    if (inner is not sdpa_attention_forward or query.shape[2] != 1 or module.training or kwargs.get("dropout")
            or kwargs.get("softcap") is not None or kwargs.get("position_bias") is not None
            or kwargs.get("output_attentions")):
        return None
    if getattr(module, "num_key_value_groups", 1) <= 1:
        return False
    return True if use_gqa_in_sdpa(None, key, value) else None


def _runs(starts: list[int]) -> list[tuple[int, int, int]]:
    """(start, first row, end row) of each run of consecutive rows with the same start."""
    runs: list[tuple[int, int, int]] = []
    for row, start in enumerate(starts):
        if runs and runs[-1][0] == start:
            runs[-1] = (start, runs[-1][1], row + 1)
        else:
            runs.append((start, row, row + 1))
    return runs


_LINEARS: weakref.WeakKeyDictionary[torch.nn.Module, list[torch.nn.Linear]] = weakref.WeakKeyDictionary()


def _linears(model: torch.nn.Module) -> list[torch.nn.Linear]:
    """The model's plain linear layers, found once per model: not a quantized layer (it has kernels of its own), nor
    one whose forward something else has replaced (accelerate's offloading hooks), which is left as it is."""
    if model not in _LINEARS:
        _LINEARS[model] = [m for m in model.modules() if type(m) is torch.nn.Linear and "forward" not in m.__dict__]
    return _LINEARS[model]


def _register() -> None:
    from transformers import AttentionInterface

    if NAME not in AttentionInterface._global_mapping:
        AttentionInterface.register(NAME, _attention)
