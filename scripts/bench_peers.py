"""Decode speed beside llama.cpp: the same weights, prompt ids and thread count, taking turns.

For each row it converts the checkout's model to GGUF (scripts/hf_to_gguf.py: the `gguf` package's
writer, the vocabulary padded to the embedding's rows and built from tokenizer.json), loads it in
llama.cpp through llama-cpp-python and in lookinside, checks that the greedy tokens agree, then times
both engines in turns (`--repeat` rounds, after a warm-up of each) and prints the table of
issue 22 with the machine's load before and after. Decode tokens/s is the same on both sides: the
steps after the first token, over their summed time, the median over the rounds (and their range).

    python scripts/bench_peers.py                 # every row, 128 tokens after 32
    python scripts/bench_peers.py --rows tiny --repeat 3 --compile
    python scripts/bench_peers.py --rows quantized --compile   # issue 31's rows: int4 and both int8 kinds

The quantized rows (issue 31): llama.cpp's q4_0 against the same Q4_0 file loaded here kept in int4, and
against `--quantize int4` from the float weights; llama.cpp's q8_0 against `--quantize int8-dynamic` and
`--quantize int8-weight`; each at 1 and 2 threads.

llama-cpp-python is optional (it compiles llama.cpp from source, so it is no dependency of this
project, not even for tests): where it is missing this says so in one line and exits 0.
"""

from __future__ import annotations

import os

WAIT_POLICY = os.environ.get("OMP_WAIT_POLICY")  # the user's, read before lookinside sets its own

import argparse
import gc
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hf_to_gguf import convert  # noqa: E402 - the converter beside this script

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "src" / "lookinside" / "tiny" / "assets"


@dataclass(frozen=True)
class Row:
    """One line of the table: which model, which precision on each side, how many threads."""

    label: str
    model: str  # "tiny" or "phi3" (the Phi-3-mini shape, 2 layers, random weights saved once)
    gguf: str  # f32, bf16, q8_0
    dtype: str  # ours: float32 or bfloat16
    quantize: str | None  # ours: None, or a --quantize kind
    threads: int
    compile: bool = False  # ours with --compile
    from_gguf: bool = False  # ours loads the very GGUF file llama.cpp runs (kept quantized), not the float weights


def rows(cores: int) -> dict[str, Row]:
    """The issue's rows (the 2-thread ones only where there are 2 cores)."""
    two = min(2, cores)
    return {
        "tiny": Row("tiny, f32, 1", "tiny", "f32", "float32", None, 1),
        "tiny-compile": Row("tiny, f32, 1, ours with `--compile`", "tiny", "f32", "float32", None, 1, compile=True),
        "phi3-f32-1": Row("Phi-3 shape 2 layers, f32, 1", "phi3", "f32", "float32", None, 1),
        "phi3-f32-2": Row(f"Phi-3 shape 2 layers, f32, {two}", "phi3", "f32", "float32", None, two),
        "phi3-bf16": Row(f"Phi-3 shape 2 layers, bf16, {two}", "phi3", "bf16", "bfloat16", None, two),
        "phi3-int8": Row(f"Phi-3 shape 2 layers, llama.cpp q8_0 vs `--quantize int8`, {two}", "phi3", "q8_0",
                         "float32", "int8", two),
        **quantized_rows(cores),
    }


QUANTIZED = "quantized"  # --rows quantized: every row of quantized_rows


def quantized_rows(cores: int) -> dict[str, Row]:
    """Issue 31's rows: our int4 against q4_0 (the same file, and from the float weights), both int8 kinds
    against q8_0, at 1 and 2 threads."""
    found: dict[str, Row] = {}
    for threads in sorted({1, min(2, cores)}):
        shape = f"Phi-3 shape 2 layers, {threads}"
        found[f"phi3-q4_0-gguf-{threads}"] = Row(f"{shape}: q4_0 vs the same Q4_0 file kept int4", "phi3", "q4_0",
                                                 "float32", None, threads, from_gguf=True)
        found[f"phi3-int4-{threads}"] = Row(f"{shape}: q4_0 vs `--quantize int4`", "phi3", "q4_0", "float32", "int4",
                                            threads)
        for kind in ("int8-dynamic", "int8-weight"):
            found[f"phi3-{kind}-{threads}"] = Row(f"{shape}: q8_0 vs `--quantize {kind}`", "phi3", "q8_0", "float32",
                                                  kind, threads)
    return found


class LlamaCpp:
    """llama.cpp through llama-cpp-python: feed ids, read the last logits, pick the top one."""

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        import llama_cpp

        self.lib = llama_cpp
        self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=512, n_threads=threads,
                                   n_threads_batch=threads, n_gpu_layers=0, logits_all=False, verbose=False)
        self.n_vocab = self.llm.n_vocab()

    def _top(self) -> int:
        pointer = self.lib.llama_get_logits_ith(self.llm.ctx, -1)
        return int(np.argmax(np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))))

    def run(self, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        """`n` greedy ids after `prompt`, and each step's seconds (step 0: the prompt and the first token)."""
        self.llm.reset()
        start = time.perf_counter()
        for token in prompt:  # one at a time: llama.cpp's batched int8 path (AMX) dies of SIGILL on this VM
            self.llm.eval([token])
        ids, seconds = [self._top()], [time.perf_counter() - start]
        for _ in range(n - 1):
            start = time.perf_counter()
            self.llm.eval([ids[-1]])
            ids.append(self._top())
            seconds.append(time.perf_counter() - start)
        return ids, seconds


def _serve(connection: Connection, path: str, threads: int, n_ctx: int, wait_policy: str | None) -> None:
    """The child process: llama.cpp loaded once, one run per request until told to stop. Its OpenMP threads wait
    as the user's environment has them (by default spinning), not as lookinside sets it for itself
    (`lookinside/__init__.py`), which the child inherited."""
    if wait_policy is None:
        os.environ.pop("OMP_WAIT_POLICY", None)
    else:
        os.environ["OMP_WAIT_POLICY"] = wait_policy
    engine = LlamaCpp(Path(path), threads, n_ctx)
    connection.send("ready")
    while (request := connection.recv()) is not None:
        connection.send(engine.run(*request))


class Peer:
    """llama.cpp in a process of its own: its thread pool and OpenMP runtime never share a process with torch's,
    so neither engine's idle threads spin inside the other's timing."""

    def __init__(self, path: Path, threads: int, n_ctx: int) -> None:
        self.path = path
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, str(path), threads, n_ctx, WAIT_POLICY),
                                       daemon=True)
        self.process.start()
        if self.connection.recv() != "ready":
            raise RuntimeError("llama.cpp did not start")

    def run(self, prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        """As `LlamaCpp.run`, in the child."""
        self.connection.send((prompt, n))
        try:
            return self.connection.recv()
        except EOFError:
            self.process.join(timeout=30)
            sys.exit(f"llama.cpp's process died (exit code {self.process.exitcode}) on {self.path.name}")

    def close(self) -> None:
        """Stop the child."""
        self.connection.send(None)
        self.process.join(timeout=30)


def ours(row: Row, model_dir: Path, compile: bool,
         gguf: Path | None = None) -> tuple[Callable[[list[int], int], tuple[list[int], list[float]]], object]:
    """lookinside's generation loop as `llm bench` times it (greedy, end tokens ignored, the dynamic cache)."""
    from transformers.utils import logging

    from lookinside.core.bench.run import our_loop
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    logging.disable_progress_bar()
    lm = load(LoadSpec(model=str(gguf if row.from_gguf and gguf else model_dir), device="cpu", dtype=row.dtype,
                       quantize=row.quantize, threads=row.threads))

    def run(prompt: list[int], n: int) -> tuple[list[int], list[float]]:
        timed = our_loop(lm, prompt, "static" if compile else "dynamic", n, compile)()
        return list(timed.token_ids), list(timed.step_seconds)

    return run, lm


def decode_rate(seconds: list[float]) -> float:
    """Tokens/s over the steps after the first token."""
    return (len(seconds) - 1) / sum(seconds[1:])


def phi3_dir(work: Path) -> Path:
    """The Phi-3-mini shape with 2 layers and seeded random weights, saved once so both engines read the same."""
    path = work / "phi3-2layers"
    if (path / "config.json").exists():
        return path
    import torch

    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec

    torch.manual_seed(0)
    lm = load(LoadSpec(model=DEFAULT_MODEL, random_weights=True, layers=2, dtype="float32", device="cpu"))
    lm.model.save_pretrained(path)
    lm.tokenizer.save_pretrained(path)
    carried = ROOT / "src" / "lookinside" / "configs" / "phi-3-mini-4k-instruct"
    for name in ("tokenizer.json", "tokenizer_config.json"):  # Phi-3's own vocabulary, not the tiny stand-in
        if (carried / name).exists():
            (path / name).write_bytes((carried / name).read_bytes())
    return path


def prompt_ids(model_dir: Path, count: int) -> list[int]:
    """`count` ids of the bench's default prompt, as `llm bench --prompt-tokens` makes them."""
    from lookinside.core.bench.run import bench_prompt_ids
    from lookinside.core.model.loading import load_tokenizer
    from lookinside.core.model.spec import LoadSpec
    from lookinside.core.request import BenchSettings

    tokenizer = load_tokenizer(LoadSpec(model=str(model_dir)))
    return bench_prompt_ids(tokenizer, BenchSettings(prompt_tokens=count))


def measure(row: Row, work: Path, args: argparse.Namespace) -> tuple[list[float], list[float], int]:
    """llama.cpp's and our decode tokens/s in each round for `row`, and how many greedy tokens agree."""
    model_dir = TINY if row.model == "tiny" else phi3_dir(work)
    gguf = work / f"{row.model}-{row.gguf}.gguf"
    if not gguf.exists():
        convert(model_dir, gguf, row.gguf)
    prompt = prompt_ids(model_dir, args.prompt_tokens)
    peer = Peer(gguf, row.threads, n_ctx=args.prompt_tokens + args.tokens + 8)
    mine, lm = ours(row, model_dir, args.compile or row.compile, gguf)
    theirs_ids, _ = peer.run(prompt, args.tokens)
    our_ids, _ = mine(prompt, args.tokens)
    agree = next((i for i, (a, b) in enumerate(zip(our_ids, theirs_ids)) if a != b), len(our_ids))
    if agree < len(our_ids) and row.gguf == "f32":
        peer.close()
        sys.exit(f"{row.label}: the engines part at token {agree} of {len(our_ids)} in float32 "
                 "(the conversion is wrong, or the two compute different models): not timing it")
    rates: dict[str, list[float]] = {"llama.cpp": [], "ours": []}
    for _ in range(args.repeat):  # taking turns, so load that comes and goes hits both alike
        rates["llama.cpp"].append(decode_rate(peer.run(prompt, args.tokens)[1]))
        rates["ours"].append(decode_rate(mine(prompt, args.tokens)[1]))
    peer.close()
    del mine, lm
    gc.collect()
    return rates["llama.cpp"], rates["ours"], agree


def spread(rates: list[float]) -> str:
    """`median (min-max)` of one engine's rounds."""
    places = 1 if max(rates) < 100 else 0
    return f"{statistics.median(rates):.1f} ({min(rates):.{places}f}–{max(rates):.{places}f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cores = os.cpu_count() or 1
    parser.add_argument("--rows", default=",".join(rows(cores)), help=f"any of {', '.join(rows(cores))}")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per run")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5, help="timed rounds per row, each engine once a round")
    parser.add_argument("--compile", action="store_true", help="our side with --compile (static cache)")
    parser.add_argument("--work", type=Path, help="where the converted models go (default: a temporary folder)")
    args = parser.parse_args()
    try:
        import llama_cpp  # noqa: F401
    except ImportError:
        print("llama-cpp-python is not installed: nothing to compare with (pip install llama-cpp-python, "
              "which compiles llama.cpp from source); skipped")
        return
    names = [n for name in args.rows.split(",") for n in (quantized_rows(cores) if name == QUANTIZED else [name])]
    unknown = [name for name in names if name not in rows(cores)]
    if unknown:
        sys.exit(f"--rows: no row {', '.join(unknown)}; there are {', '.join(rows(cores))} and {QUANTIZED}")
    chosen = [rows(cores)[name] for name in names]
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {cores} cores; "
          f"{args.tokens} new tokens after {args.prompt_tokens}; median of {args.repeat} alternating rounds"
          f"{'; ours with --compile' if args.compile else ''}")
    print("\n| model, precision, threads | llama.cpp, median (min–max) | `llm bench` | ratio | greedy tokens agree "
          "| load |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in chosen:
        theirs, mine, agree = measure(row, work, args)
        ratio = statistics.median(mine) / statistics.median(theirs)
        print(f"| {row.label} | {spread(theirs)} | {spread(mine)} | {ratio:.2f} | {agree}/{args.tokens} | "
              f"{os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
