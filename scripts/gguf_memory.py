"""Memory of a 4-bit GGUF kept quantized: the process's resident size before and after `--model FILE.gguf` loads.

Makes the 2-layer Phi-3-mini shape with seeded random weights (as scripts/bench_peers.py does), writes it as a
Q4_0 GGUF (scripts/hf_to_gguf.py), then loads that file in a fresh process and reads /proc/self/status's VmRSS
after importing torch and transformers and again after loading: the growth is what the model takes, against
the file's size.

    python scripts/gguf_memory.py [--work DIR] [--type q4_0]
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
import json, sys
def rss():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) * 1024
import torch, transformers, gguf  # what any load imports, before the model
from lookinside.core.model.loading import load
from lookinside.core.model.spec import LoadSpec
before = rss()
lm = load(LoadSpec(model=sys.argv[1], device='cpu'))
after = rss()
print(json.dumps({'before': before, 'after': after, 'line': lm.origin.describe()}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, help="where the model and the GGUF go (default: a temporary folder)")
    parser.add_argument("--type", default="q4_0", choices=("q4_0", "q8_0"))
    args = parser.parse_args()
    from bench_peers import phi3_dir
    from hf_to_gguf import convert

    work = args.work or Path(tempfile.mkdtemp(prefix="gguf-memory-"))
    work.mkdir(parents=True, exist_ok=True)
    path = work / f"phi3-{args.type}.gguf"
    if not path.exists():
        convert(phi3_dir(work), path, args.type)
    child = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True)
    found = json.loads(child.stdout.strip().splitlines()[-1])
    size, grew = path.stat().st_size, found["after"] - found["before"]
    print(found["line"])
    print(f"file {size / 1e6:.1f} MB; resident {found['before'] / 1e6:.1f} MB after the imports, "
          f"{found['after'] / 1e6:.1f} MB after loading: the load added {grew / 1e6:.1f} MB = {grew / size:.2f}x "
          "the file")


if __name__ == "__main__":
    main()
