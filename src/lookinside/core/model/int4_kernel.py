"""lookinside's int4 CPU kernel: int4 weights times activations rounded to int8 per group of 32, with AVX512-VNNI
integer dot products (int4_kernel.cpp, where the layout is described), as llama.cpp multiplies its q4_0 files.

torch's own CPU int4 kernel (`aten._weight_int4pack_mm_for_cpu`) unpacks the weights to bfloat16 and multiplies
in bfloat16; this one read one 16384 x 3072 matrix twice as fast on this project's EPYC (docs/benchmarks.md).
The C++ file is compiled once with g++ into a folder of this user's cache and loaded with ctypes: a plain shared
library built in 0.9 s here where a torch C++ extension took 21-26 s, and its OpenMP threads are torch's own (the
same libgomp), their count passed in from `torch.get_num_threads()` on every call.

`state()` says whether it is usable here, and `method()` says so in words for the loading line: where the CPU
lacks AVX512-VNNI, g++ is missing, the build fails, the cache folder is not this user's alone, or
`LOOKINSIDE_INT4_KERNEL=off`, the int4 layers keep torch's kernel and the line says why.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from platformdirs import user_cache_dir

from lookinside.core.paths import not_ours_alone

SOURCE = Path(__file__).with_name("int4_kernel.cpp")
FLAGS = ("-O3", "-shared", "-fPIC", "-fopenmp", "-std=c++17", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq",
         "-mavx512vnni", "-mf16c", "-mfma")
CPU_FLAGS = ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_vnni", "f16c", "fma")  # what FLAGS let it use
SWITCH = "LOOKINSIDE_INT4_KERNEL"  # "off": keep torch's kernel (to compare the two)
GROUP = 32  # the kernel's group along the input
ROWS = 4  # output rows per tile (int4_kernel.cpp's ROWS): the output count must be a multiple
BUILD_SECONDS = 120  # g++ on one small file: a second here; a minute would be a machine in trouble
KERNEL_METHOD = "lookinside's AVX512-VNNI kernel, each layer's input rounded to int8 per 32 values"
TORCH_METHOD = "torch weight-only kernels, bfloat16 activations"


class KernelUnavailable(Exception):
    """Why the kernel cannot be used here, in words for the loading line."""


@dataclass(frozen=True)
class KernelState:
    """The loaded kernel, or why there is none; and whether this process built it (and how long that took)."""

    library: ctypes.CDLL | None
    reason: str = ""  # why not, when library is None
    built_seconds: float | None = None  # set when this process compiled it
    path: Path | None = None


def cache_folder() -> Path:
    """Where the compiled kernel is kept: this user's cache, `.../lookinside/kernels`."""
    return Path(user_cache_dir("lookinside", appauthor=False)) / "kernels"


@functools.cache
def state() -> KernelState:
    """The kernel of this process: built or found once, on first use."""
    if os.environ.get(SWITCH, "").lower() in ("0", "off", "no", "false"):
        return KernelState(None, f"{SWITCH}={os.environ[SWITCH]}")
    try:
        missing = [flag for flag in CPU_FLAGS if flag not in cpu_flags()]
        if missing:
            raise KernelUnavailable(f"this CPU has no {', '.join(missing)}")
        return load(cache_folder())
    except KernelUnavailable as exc:
        return KernelState(None, str(exc))


def available() -> bool:
    """True when the int4 layers on the CPU multiply with this kernel."""
    return state().library is not None


def method() -> str:
    """What the CPU's int4 layers multiply with, in words, and why not this kernel where they cannot."""
    kernel = state()
    if kernel.library is None:
        return f"{TORCH_METHOD} (not lookinside's AVX512-VNNI int4 kernel: {kernel.reason})"
    if kernel.built_seconds is not None:
        return f"{KERNEL_METHOD}; built once, in {kernel.built_seconds:.1f} s, into {kernel.path.parent}"
    return KERNEL_METHOD


def fits(out_features: int, in_features: int, group_size: int) -> bool:
    """True when the kernel takes a matrix of this shape and group."""
    return group_size == GROUP and out_features % ROWS == 0 and in_features % GROUP == 0


def cpu_flags() -> set[str]:
    """The CPU's feature flags, as Linux lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError as exc:
        raise KernelUnavailable(f"the CPU's flags cannot be read ({exc.strerror or exc})") from None
    line = next((line for line in text.splitlines() if line.startswith("flags")), "")
    return set(line.partition(":")[2].split())


def load(folder: Path) -> KernelState:
    """The kernel from `folder` (made 0700 if missing), compiled into it first when it is not there."""
    try:
        source = SOURCE.read_bytes()
    except OSError as exc:
        raise KernelUnavailable(f"its source {SOURCE} cannot be read ({exc.strerror or exc})") from None
    digest = hashlib.sha256(source + "\0".join(FLAGS).encode()).hexdigest()[:16]
    checked_folder(folder)
    path = folder / f"int4_kernel-{digest}.so"
    built = None
    if not path.exists():
        started = time.perf_counter()
        compile_into(folder, path)
        built = time.perf_counter() - started
    checked_file(path)
    try:
        library = ctypes.CDLL(str(path))
    except OSError as exc:
        raise KernelUnavailable(f"{path} does not load ({exc})") from None
    library.lookinside_int4_linear.restype = ctypes.c_int
    library.lookinside_int4_linear.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                               ctypes.c_void_p, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                                               ctypes.c_int]
    library.lookinside_int4_tile_size.restype = ctypes.c_int64
    library.lookinside_int4_tile_size.argtypes = [ctypes.c_int64, ctypes.c_int, ctypes.c_int]
    return KernelState(library, built_seconds=built, path=path)


def checked_folder(folder: Path) -> None:
    """Make `folder` (0700) if missing; refuse one that is not a directory of this user's that only they can write:
    a shared library loaded from it runs as this user."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        folder.mkdir(exist_ok=True, mode=0o700)
        info = os.lstat(folder)
    except OSError as exc:
        raise KernelUnavailable(f"cannot make {folder} ({exc.strerror or exc})") from None
    refuse_shared(folder, info, "folder")
    if not stat.S_ISDIR(info.st_mode):
        raise KernelUnavailable(f"{folder} is not a folder")


def checked_file(path: Path) -> None:
    """Refuse a compiled kernel that is a link, or not this user's alone to write."""
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise KernelUnavailable(f"cannot read {path} ({exc.strerror or exc})") from None
    if not stat.S_ISREG(info.st_mode):
        raise KernelUnavailable(f"{path} is not a regular file")
    refuse_shared(path, info, "file")


def refuse_shared(path: Path, info: os.stat_result, what: str) -> None:
    """Refuse `path` when another user owns it or can write to it (the project's rule for anything it runs)."""
    problem = not_ours_alone(info, subject=f"the {what} {path}")
    if problem:
        raise KernelUnavailable(problem)


def compile_into(folder: Path, path: Path) -> None:
    """Compile the kernel into `path`: to a fresh name in `folder` first, renamed into place when whole, so another
    process never loads half a file."""
    compiler = shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        raise KernelUnavailable("no C++ compiler (g++) to build it")
    fd, partial = tempfile.mkstemp(prefix=".int4_kernel-", suffix=".so", dir=folder)
    os.close(fd)
    try:
        result = subprocess.run([compiler, *FLAGS, "-o", partial, str(SOURCE)], capture_output=True, text=True,
                                timeout=BUILD_SECONDS, check=False)
        if result.returncode != 0:
            first = next((line for line in result.stderr.splitlines() if "error" in line), result.stderr.strip())
            raise KernelUnavailable(f"it did not build ({first[:200]})")
        os.chmod(partial, 0o700)
        os.replace(partial, path)
    except subprocess.TimeoutExpired:
        raise KernelUnavailable(f"g++ took over {BUILD_SECONDS} s to build it") from None
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def pack(values: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None) -> torch.Tensor:
    """The kernel's tiles from values 0..15 `(out, in)` and per-group scales and offsets `(out, in / 32)`, w =
    scale * q + offset (offsets None: symmetric, w = scale * (q - 8)); scales and offsets float16 or float32, the
    same dtype.  # -> (out / 4, tile bytes) uint8"""
    out_features, in_features = values.shape
    groups = in_features // GROUP
    v = values.to(torch.uint8).reshape(out_features, groups, 8, 4)  # (out, groups, j', t): value 4 j' + t
    pairs = v[:, :, :4] | (v[:, :, 4:] << 4)  # (out, groups, j, t): values 4j + t and 4(j + 4) + t
    tiles = out_features // ROWS
    parts = []
    whole = groups // 16 * 16
    if whole:
        blocks = pairs[:, :whole].reshape(out_features, whole // 16, 16, 4, 4).permute(0, 1, 3, 2, 4)  # (out, B, j, l, t)
        parts.append(blocks.reshape(tiles, ROWS, whole // 16, 256).transpose(1, 2).reshape(tiles, -1))
    if groups > whole:  # a last block of fewer groups
        parts.append(pairs[:, whole:].permute(0, 2, 1, 3).reshape(tiles, -1))  # (out, j, l, t)
    parts.append(scales.contiguous().view(torch.uint8).reshape(tiles, -1))
    if offsets is not None:
        parts.append(offsets.to(scales.dtype).contiguous().view(torch.uint8).reshape(tiles, -1))
    packed = torch.cat(parts, dim=1).contiguous()
    expected = state().library.lookinside_int4_tile_size(in_features, int(scales.dtype == torch.float32),
                                                         int(offsets is not None))
    if packed.shape[1] != expected:
        raise RuntimeError(f"int4 tiles of {packed.shape[1]} bytes where the kernel reads {expected}")
    return packed


def linear(x: torch.Tensor, tiles: torch.Tensor, out_features: int, scales_f32: bool, offsets: bool) -> torch.Tensor:
    """`x` times the packed weights' transpose, in float32.  # (rows, in) -> (rows, out)"""
    rows = x.to(torch.float32).contiguous()  # (rows, in)
    y = torch.empty(rows.shape[0], out_features, dtype=torch.float32)
    code = state().library.lookinside_int4_linear(rows.data_ptr(), rows.shape[0], rows.shape[1], out_features,
                                                  tiles.data_ptr(), int(scales_f32), int(offsets), y.data_ptr(),
                                                  torch.get_num_threads())
    if code != 0:
        raise ValueError(f"the int4 kernel refused a ({rows.shape[0]}, {rows.shape[1]}) input for {out_features} "
                         "outputs")
    return y


@torch.library.custom_op("lookinside::int4_linear", mutates_args=())
def int4_linear(x: torch.Tensor, tiles: torch.Tensor, out_features: int, scales_f32: bool,
                offsets: bool) -> torch.Tensor:
    """`linear`, opaque to torch.compile (dynamo cannot trace into a ctypes call).  # (rows, in) -> (rows, out)"""
    return linear(x, tiles, out_features, scales_f32, offsets)


@int4_linear.register_fake
def _(x: torch.Tensor, tiles: torch.Tensor, out_features: int, scales_f32: bool, offsets: bool) -> torch.Tensor:
    return x.new_empty((x.shape[0], out_features), dtype=torch.float32)
