#!/usr/bin/env bash
# Re-measure the numbers in docs/benchmarks.md. Timing claims live here and in the docs,
# never in tests. Run from the repository root; each line prints one `llm bench` view.
set -euo pipefail
export COLUMNS=${COLUMNS:-100}
run() { echo "\$ llm $*"; python -m lookinside "$@"; echo; }

# The built-in tiny model: the book's prompt and 100 tokens, then a length sweep.
run bench --model tiny --threads 1
run bench --model tiny --threads 1 --sweep 32,128,448 --no-reference

# Phi-3-mini's architecture with random weights, cut to 2 of its 32 layers so it fits a small CPU.
run bench --random-weights --layers 2 --device cpu --threads 1 --new-tokens 32 --prompt-tokens 32
run bench --random-weights --layers 2 --device cpu --threads 1 --prompt-tokens 32 --sweep 8,32,128 --no-reference

# On a CUDA GPU: the whole Phi-3-mini (random weights, no download) in bfloat16, and a sweep.
if python -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
  run bench --random-weights --dtype bfloat16
  run bench --random-weights --dtype bfloat16 --sweep 32,128,512 --no-reference
fi
