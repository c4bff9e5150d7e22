"""The int4 kernels alone: lookinside's (core/model/int4_kernel.py), torch's `_weight_int4pack_mm_for_cpu` and
fbgemm's dynamic int8 (`--quantize int8`'s), one matrix times a few rows.

Each kernel cycles through four copies of its matrix, so that none sits in the CPU's last-level cache between
calls as a model's weights do not; it reports the median of each round of 40 calls, the median round and the
range over `--rounds` alternating rounds, and lookinside's kernel's read rate (its tiles' bytes over its time).

    python scripts/bench_int4_kernel.py                     # 16384 x 3072 and 3072 x 8192, 1 row, 1 and 2 threads
    python scripts/bench_int4_kernel.py --rows 1,4,32 --threads 1
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import warnings
from collections.abc import Callable

import torch

from lookinside.core.model import int4_kernel

COPIES = 4  # 4 x 28 MB: more than the EPYC's 32 MB of L3
CALLS = 40


def per_call_ms(calls: list[Callable[[], object]]) -> float:
    """The median of CALLS calls, cycling through `calls` (one per copy of the matrix), in ms."""
    for call in calls:
        call()
    seconds = []
    for i in range(CALLS):
        start = time.perf_counter()
        calls[i % len(calls)]()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds) * 1e3


def kernels(out: int, inp: int, rows: int) -> tuple[dict[str, list[Callable[[], object]]], int]:
    """Each kernel's calls on COPIES random matrices, and the bytes of one of lookinside's tiled matrices."""
    warnings.filterwarnings("ignore")  # torch.ao's deprecation of the dynamic int8 it still ships
    x = torch.randn(rows, inp)
    xb = x.bfloat16()
    found: dict[str, list[Callable[[], object]]] = {"lookinside int4": [], "torch int4": [], "fbgemm int8": []}
    nbytes = 0
    for _ in range(COPIES):
        values = torch.randint(0, 16, (out, inp), dtype=torch.uint8)
        scales = (torch.rand(out, inp // 32) * 0.02 + 0.001).half()  # Q4_0's: float16, symmetric
        tiles = int4_kernel.pack(values, scales, None)
        nbytes = tiles.nbytes
        found["lookinside int4"].append(lambda t=tiles: int4_kernel.linear(x, t, out, False, False))
        packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(values.to(torch.int32), 1)
        table = torch.stack([scales.float(), torch.zeros(out, inp // 32)], -1).transpose(0, 1).contiguous().bfloat16()
        found["torch int4"].append(
            lambda p=packed, s=table: torch.ops.aten._weight_int4pack_mm_for_cpu(xb, p, 32, s))
        dense = torch.nn.Sequential(torch.nn.Linear(inp, out, bias=False))
        dynamic = torch.ao.quantization.quantize_dynamic(dense, {torch.nn.Linear}, dtype=torch.qint8)[0]
        found["fbgemm int8"].append(lambda d=dynamic: d(x))
    return found, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="16384x3072,3072x8192", help="out x in, comma-separated")
    parser.add_argument("--rows", default="1")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if not int4_kernel.available():
        raise SystemExit(f"lookinside's int4 kernel is not available here: {int4_kernel.state().reason}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; ms per call, median round "
          f"(range of {args.rounds} rounds)")
    print("\n| matrix, rows, threads | lookinside int4 | torch int4 | fbgemm int8 | lookinside GB/s | load |")
    print("|---|---:|---:|---:|---:|---:|")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for shape in args.shapes.split(","):
            out, inp = (int(n) for n in shape.split("x"))
            for rows in (int(r) for r in args.rows.split(",")):
                calls, nbytes = kernels(out, inp, rows)
                rounds: dict[str, list[float]] = {name: [] for name in calls}
                for _ in range(args.rounds):
                    for name, each in calls.items():
                        rounds[name].append(per_call_ms(each))
                cells = [f"{statistics.median(r):.2f} ({min(r):.2f}–{max(r):.2f})" for r in rounds.values()]
                rate = nbytes / statistics.median(rounds["lookinside int4"]) / 1e6
                print(f"| {out} x {inp}, {rows}, {threads} | {' | '.join(cells)} | {rate:.1f} | "
                      f"{os.getloadavg()[0]:.2f} |", flush=True)
    print(f"\nload average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
