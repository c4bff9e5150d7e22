"""lookinside's int4 CPU kernel (core/model/int4_kernel.py and .cpp): int4 weights times activations rounded to
int8 per 32, against a float reference and against torch's own int4 kernel; its fallback and its build's checks.

The kernel needs AVX512-VNNI: on a CPU without it these tests skip, but for the fallback's. On one with it the
kernel must build (g++ is a test dependency): built once per session, in this user's cache, as `llm` builds it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lookinside.core.model import int4_kernel
from lookinside.core.model.loading import load
from lookinside.core.model.packed import Int4Linear
from lookinside.core.model.spec import LoadSpec


def has_the_cpu() -> bool:
    """True on a CPU with every instruction set the kernel is compiled for."""
    try:
        return all(flag in int4_kernel.cpu_flags() for flag in int4_kernel.CPU_FLAGS)
    except int4_kernel.KernelUnavailable:
        return False


HAS_CPU = has_the_cpu()
needs_kernel = pytest.mark.skipif(not HAS_CPU, reason="the int4 kernel needs AVX512-VNNI (and F, BW, VL, DQ)")
# (out, in, rows): one block of 16 groups and less, several blocks and a partial one, Phi-3's widths
SHAPES = [(4, 32, 1), (8, 96, 3), (12, 544, 2), (36, 1024, 5), (64, 3072, 1), (20, 8192, 2)]


@pytest.fixture(scope="session")
def kernel() -> int4_kernel.KernelState:
    """The kernel, built (or found) once for the session; on a CPU with AVX512-VNNI it must load."""
    if not HAS_CPU:
        pytest.skip("the int4 kernel needs AVX512-VNNI (and F, BW, VL, DQ)")
    state = int4_kernel.state()
    assert state.library is not None, state.reason
    return state


@pytest.fixture
def fresh_state():
    """state() worked out again inside the test (its cache cleared before and after)."""
    int4_kernel.state.cache_clear()
    yield
    int4_kernel.state.cache_clear()


def random_int4(out: int, inp: int, symmetric: bool, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Values 0..15 and per-32 scales and zeros in Int4Linear's form, w = (q - 8) * scale + zero."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randint(0, 16, (out, inp), generator=g, dtype=torch.uint8)
    scales = (torch.rand(out, inp // 32, generator=g) * 0.02 + 0.001).half().float()  # a GGUF's float16 d
    if symmetric:  # Q4_0's: w = (q - 8) d
        return values, scales, torch.zeros_like(scales)
    offsets = (torch.randn(out, inp // 32, generator=g) * 0.01).half().float()  # Q4_1's: w = q d + m, m float16
    return values, scales, offsets + 8 * scales


def dequantized(values: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The float64 weights.  # -> (out, in)"""
    groups = values.double().unflatten(-1, (-1, 32))  # (out, in / 32, 32)
    return ((groups - 8) * scales.double()[..., None] + zeros.double()[..., None]).flatten(-2)


def int8_rounding_bound(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """How far rounding each row of `x` to int8 per 32 (scale max |x| / 127) can move x @ w.T: half a step of
    each group, times |w|.  # (rows, in), (out, in) -> (rows, out)"""
    step = x.double().unflatten(-1, (-1, 32)).abs().amax(-1) / 127  # (rows, in / 32)
    return (step.repeat_interleave(32, -1) / 2) @ w.abs().T


def tiled(values: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> Int4Linear:
    layer = Int4Linear.from_values(values, scales, zeros, 32)
    assert layer.tiled, "the kernel was available but the layer kept torch's layout"
    return layer


@needs_kernel
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize(("out", "inp", "rows"), SHAPES)
def test_kernel_is_the_float_product_within_the_int8_rounding_of_the_activations(kernel, out, inp, rows, symmetric):
    values, scales, zeros = random_int4(out, inp, symmetric)
    layer = tiled(values, scales, zeros)
    assert layer.offsets == (not symmetric) and not layer.scales_f32  # float16 scales: a GGUF's own, 2 bytes
    x = torch.randn(rows, inp, generator=torch.Generator().manual_seed(1))
    w = dequantized(values, scales, zeros)
    exact = x.double() @ w.T  # (rows, out)
    with torch.inference_mode():
        y = layer(x)
    assert y.dtype == torch.float32 and y.shape == (rows, out)
    error = (y.double() - exact).abs()
    bound = int8_rounding_bound(x, w)
    assert (error <= bound + 1e-5 * exact.abs() + 1e-6).all(), (error / bound).max()
    assert error.max() > 0  # the activations were rounded: this is not the float path


@needs_kernel
def test_float32_scales_where_float16_cannot_hold_them(kernel):
    values, scales, zeros = random_int4(8, 256, symmetric=False)
    scales = scales * (1 + 2**-14)  # not a float16 value any more
    layer = tiled(values, scales, zeros)
    assert layer.scales_f32
    x = torch.randn(3, 256)
    w = dequantized(values, scales, zeros)
    error = (layer(x).double() - x.double() @ w.T).abs()
    assert (error <= int8_rounding_bound(x, w) + 1e-5).all()


@needs_kernel
def test_rows_together_equal_rows_alone_and_threads_do_not_change_the_numbers(kernel):
    values, scales, zeros = random_int4(64, 3072, symmetric=True)
    layer = tiled(values, scales, zeros)
    x = torch.randn(7, 3072)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        together = layer(x)
        alone = torch.cat([layer(row[None]) for row in x])
        torch.set_num_threads(2)
        two = layer(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(together, alone) and torch.equal(together, two)


@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_the_layer_takes_and_returns_the_models_dtype_with_its_bias(kernel, dtype):
    values, scales, zeros = random_int4(16, 128, symmetric=True)
    bias = torch.nn.Parameter(torch.randn(16).to(dtype), requires_grad=False)  # at the model's dtype, as loaded
    layer = Int4Linear.from_values(values, scales, zeros, 32, bias)
    x = torch.randn(2, 3, 128).to(dtype)
    y = layer(x)
    assert y.dtype == dtype and y.shape == (2, 3, 16)
    w = dequantized(values, scales, zeros)
    exact = x.double() @ w.T + bias.double()
    slack = int8_rounding_bound(x.reshape(-1, 128), w).reshape(2, 3, 16) + exact.abs() * 2 ** -7  # the dtype's rounding
    assert ((y.double() - exact).abs() <= slack + 1e-3).all()


@needs_kernel
def test_kernel_agrees_with_torchs_int4_kernel(kernel, monkeypatch):
    """The same values, scales and zeros through both layouts: they differ by the activations' rounding (int8 per
    32 here, bfloat16 in torch's) and torch's bfloat16 scales and zeros."""
    values, scales, zeros = random_int4(48, 1024, symmetric=False)
    ours = tiled(values, scales, zeros)
    monkeypatch.setattr(int4_kernel, "available", lambda: False)
    torchs = Int4Linear.from_values(values, scales, zeros, 32)
    assert not torchs.tiled
    x = torch.randn(4, 1024)
    w = dequantized(values, scales, zeros)
    bf16 = (x.double().abs() @ w.abs().T) * 2 ** -7  # bfloat16's relative step on the row and the scales
    assert ((ours(x).double() - torchs(x).double()).abs() <= int8_rounding_bound(x, w) + bf16 + 1e-4).all()


@needs_kernel
def test_compiled_layer_goes_through_the_custom_op_and_equals_eager(kernel):
    values, scales, zeros = random_int4(32, 256, symmetric=False)
    layer = tiled(values, scales, zeros)
    x = torch.randn(1, 1, 256)
    torch._dynamo.reset()
    compiled = torch.compile(layer, fullgraph=True, backend="inductor")
    with torch.inference_mode():
        assert torch.equal(compiled(x), layer(x))
    tiles = layer.packed
    torch.library.opcheck(int4_kernel.int4_linear, (x.reshape(1, 256), tiles, 32, layer.scales_f32, layer.offsets))


@needs_kernel
def test_a_q4_0_gguf_loads_through_the_kernel_with_the_top_1_of_its_dequantized_weights(kernel, tmp_path):
    from tests.test_gguf import write_gguf

    path = write_gguf(tmp_path / "tiny-q4_0.gguf", "Q4_0")
    kept = load(LoadSpec(model=str(path), device="cpu"))
    float_ = load(LoadSpec(model=str(path), device="cpu", quantize="float"))
    layers = [m for m in kept.model.modules() if isinstance(m, Int4Linear)]
    assert len(layers) == 17 and all(m.tiled and not m.offsets and not m.scales_f32 for m in layers)  # 18 bytes/32
    assert "lookinside's AVX512-VNNI kernel" in kept.origin.describe()
    ids = kept.tokenizer("The capital of France is Paris. The capital of Germany is", return_tensors="pt").input_ids
    with torch.inference_mode():
        a = torch.log_softmax(kept.model(ids).logits.double(), -1)
        b = torch.log_softmax(float_.model(ids).logits.double(), -1)
    assert torch.equal(a.argmax(-1), b.argmax(-1))
    kl = (b.exp() * (b - a)).sum(-1)
    assert 0 < kl.max().item() < 5e-3  # llama.cpp's own, on this file and text: 3.5e-3 (docs/benchmarks.md)


def test_without_avx512_vnni_the_layers_keep_torchs_kernel_and_say_why(fresh_state, monkeypatch):
    flags = int4_kernel.cpu_flags() - {"avx512_vnni"}
    monkeypatch.setattr(int4_kernel, "cpu_flags", lambda: flags)
    assert int4_kernel.state().library is None
    assert int4_kernel.method() == ("torch weight-only kernels, bfloat16 activations (not lookinside's "
                                    "AVX512-VNNI int4 kernel: this CPU has no avx512_vnni)")
    values, scales, zeros = random_int4(16, 64, symmetric=True)
    layer = Int4Linear.from_values(values, scales, zeros, 32)
    assert not layer.tiled
    x = torch.randn(2, 64)
    w = dequantized(values, scales, zeros)
    assert ((layer(x).double() - x.double() @ w.T).abs() <= (x.double().abs() @ w.abs().T) * 2 ** -6).all()


def test_quantize_int4_says_which_kernel_on_its_loading_line(fresh_state, monkeypatch):
    monkeypatch.setenv(int4_kernel.SWITCH, "off")
    lm = load(LoadSpec(model="tiny", device="cpu", quantize="int4"))
    assert lm.quantized.describe().startswith("--quantize int4 (torch weight-only kernels, bfloat16 activations "
                                              "(not lookinside's AVX512-VNNI int4 kernel: LOOKINSIDE_INT4_KERNEL=off))")
    assert not any(m.tiled for m in lm.model.modules() if isinstance(m, Int4Linear))


@needs_kernel
def test_a_kernel_that_does_not_build_is_one_line(fresh_state, monkeypatch, tmp_path):
    broken = tmp_path / "int4_kernel.cpp"
    broken.write_text("this is not C++\n")
    monkeypatch.setattr(int4_kernel, "SOURCE", broken)
    monkeypatch.setattr(int4_kernel, "cache_folder", lambda: tmp_path / "kernels")
    reason = int4_kernel.state().reason
    assert reason.startswith("it did not build (") and "\n" not in reason, reason
    assert [p.name for p in (tmp_path / "kernels").iterdir()] == []  # no half-written library left behind


@needs_kernel
def test_the_kernel_is_built_once_into_a_private_folder_and_loaded_from_it(fresh_state, monkeypatch, tmp_path):
    folder = tmp_path / "cache" / "kernels"
    monkeypatch.setattr(int4_kernel, "cache_folder", lambda: folder)
    first = int4_kernel.state()
    assert first.library is not None and first.built_seconds is not None
    assert "built once, in" in int4_kernel.method() and str(folder) in int4_kernel.method()
    assert oct(folder.stat().st_mode & 0o777) == oct(0o700)
    int4_kernel.state.cache_clear()
    second = int4_kernel.state()
    assert second.library is not None and second.built_seconds is None and second.path == first.path  # found
    assert int4_kernel.method() == int4_kernel.KERNEL_METHOD


@needs_kernel
@pytest.mark.parametrize("what", ["folder", "file"])
def test_a_kernel_others_can_write_is_never_loaded(fresh_state, monkeypatch, tmp_path, what):
    folder = tmp_path / "kernels"
    monkeypatch.setattr(int4_kernel, "cache_folder", lambda: folder)
    built = int4_kernel.state()
    assert built.library is not None
    int4_kernel.state.cache_clear()
    (folder if what == "folder" else built.path).chmod(0o777 if what == "folder" else 0o722)
    reason = int4_kernel.state().reason
    assert reason.startswith(f"others can write to the {what} ") and "chmod go-w" in reason, reason


@needs_kernel
def test_a_kernel_that_is_a_link_is_never_loaded(fresh_state, monkeypatch, tmp_path):
    folder = tmp_path / "kernels"
    monkeypatch.setattr(int4_kernel, "cache_folder", lambda: folder)
    built = int4_kernel.state()
    int4_kernel.state.cache_clear()
    elsewhere = tmp_path / "elsewhere.so"
    built.path.rename(elsewhere)
    built.path.symlink_to(elsewhere)
    assert int4_kernel.state().reason == f"{built.path} is not a regular file"


def test_pack_lays_values_out_as_the_kernel_reads_them(kernel):
    """One row's first block by hand: byte 4l + t of register j holds value 4j + t of group l, low nibble, and
    value 4(j + 4) + t, high nibble."""
    values, scales, _ = random_int4(4, 512, symmetric=True)
    tiles = int4_kernel.pack(values, scales.half(), None)  # (1, 4 * 256 + 4 * 16 * 2)
    row = np.asarray(tiles[0, :256])  # the first row of the tile, its one block
    v = values.numpy()
    for j, l, t in ((0, 0, 0), (3, 15, 3), (1, 7, 2)):
        byte = int(row[j * 64 + 4 * l + t])
        assert byte & 0x0F == v[0, 32 * l + 4 * j + t] and byte >> 4 == v[0, 32 * l + 4 * (j + 4) + t]
    assert torch.equal(tiles[0, 1024:1024 + 32].view(torch.float16), scales[0].half())


@needs_kernel
def test_a_missing_source_is_one_line(fresh_state, monkeypatch, tmp_path):
    monkeypatch.setattr(int4_kernel, "SOURCE", tmp_path / "int4_kernel.cpp")
    assert int4_kernel.state().reason.startswith(f"its source {tmp_path / 'int4_kernel.cpp'} cannot be read (")
    assert "not lookinside's AVX512-VNNI int4 kernel: its source" in int4_kernel.method()
