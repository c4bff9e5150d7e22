"""Memory of a 4-bit GGUF kept quantized: the process's resident size before and after `--model FILE.gguf` loads.

Makes the 2-layer Phi-3-mini shape with seeded random weights (as scripts/bench_peers.py does), writes it as a
Q4_0 GGUF (scripts/hf_to_gguf.py), then loads that file in a fresh process and reads /proc/self/status's VmRSS
three times: after importing torch, transformers and gguf; after importing the code any load of a Phi-3 model
imports as well (transformers' modeling code, which pulls in torch.distributed: the same for every model and
file size); and after loading. The last step is what the model takes, against the file's size; it is split
into the weights (the packed layers' bytes), the Python objects still alive (a second process traces the
load with tracemalloc), and the rest (the tokenizer's Rust tables, the allocator's unreturned pages).

    python scripts/gguf_memory.py [--work DIR] [--type q4_0] [--no-trace]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

CHILD = """
import json, sys, tracemalloc
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
import torch, transformers, gguf  # what any load imports, before the model
from lookinside.core.model.loading import load
from lookinside.core.model.quantize import stored_bytes
from lookinside.core.model.spec import LoadSpec
imported = rss()
import transformers.models.phi3.modeling_phi3, tokenizers  # the code a load of this architecture imports
before = rss()
trace = sys.argv[2] == 'trace'
if trace:
    tracemalloc.start(1)
lm = load(LoadSpec(model=sys.argv[1], device='cpu'))
after = rss()
python = tracemalloc.get_traced_memory()[0] if trace else None
top = [f'{s.size / 1e6:.1f} MB {s.traceback[0].filename.split("site-packages/")[-1]}:{s.traceback[0].lineno}'
       for s in tracemalloc.take_snapshot().statistics('lineno')[:3]] if trace else []
print(json.dumps({'imported': imported, 'before': before, 'after': after, 'line': lm.origin.describe(),
                  'weights': stored_bytes(lm.model), 'python': python, 'top': top}))
"""


def measure(path: Path, trace: bool) -> dict:
    """One fresh process's readings (tracemalloc's own bookkeeping inflates the resident size: `trace` apart)."""
    child = subprocess.run([sys.executable, "-c", CHILD, str(path), "trace" if trace else "plain"],
                           capture_output=True, text=True, check=True)
    return json.loads(child.stdout.strip().splitlines()[-1])


def tensor_bytes(path: Path) -> int:
    """The bytes the file's tensors take (the file less its header and vocabulary)."""
    from gguf import GGUFReader

    return sum(int(tensor.n_bytes) for tensor in GGUFReader(path).tensors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="where the model and the GGUF go (default: a temporary folder)")
    parser.add_argument("--type", default="q4_0", choices=("q4_0", "q8_0"))
    parser.add_argument("--no-trace", action="store_true", help="skip the tracemalloc run (the Python objects kept)")
    args = parser.parse_args()
    from bench_peers import phi3_dir
    from hf_to_gguf import convert

    work = args.work or Path(tempfile.mkdtemp(prefix="gguf-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"phi3-{args.type}.gguf"
    if not path.exists():
        convert(phi3_dir(work), path, args.type)
    found = measure(path, trace=False)
    size, tensors = path.stat().st_size, tensor_bytes(path)
    grew, weights = found["after"] - found["before"], found["weights"]
    mb = 1e6
    print(found["line"])
    print(f"file {size / mb:.1f} MB ({tensors / mb:.1f} MB of tensors); resident {found['imported'] / mb:.1f} MB "
          f"after importing torch, transformers and gguf, {found['before'] / mb:.1f} MB after the modeling code a "
          f"load imports (+{(found['before'] - found['imported']) / mb:.1f} MB, any model), "
          f"{found['after'] / mb:.1f} MB after loading")
    print(f"the load added {grew / mb:.1f} MB = {grew / size:.2f}x the file: weights {weights / mb:.1f} MB "
          f"({weights / tensors:.2f}x the file's tensors), the rest {(grew - weights) / mb:.1f} MB")
    if not args.no_trace:
        traced = measure(path, trace=True)
        print(f"Python objects alive after the load (tracemalloc): {traced['python'] / mb:.1f} MB; most from "
              + "; ".join(traced["top"]))


if __name__ == "__main__":
    main()
