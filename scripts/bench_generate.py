"""Time per token of lookinside's generation core against `model.generate`, same model, same run.

Both decode greedily for exactly N new tokens (end tokens ignored: `ignore_eos` for
the core, `eos_token_id=[]` for generate) from the same prompt, and must produce
the same ids. Each is timed end to end with the device synchronised, at N tokens
and at 1 token; the decode cost per token is (T(N) - T(1)) / (N - 1), which takes
the prefill out of both the same way. Runs alternate between the two and the
median of the repeats is reported, after one warm-up of each; "paired" is the
median (and range) of each repeat's core/generate ratio, which cancels slow drifts
in machine load. On a busy CPU use --threads 1: oversubscribed OpenMP threads
make a forward pass 10x slower and very noisy.

    PYTHONPATH=src python scripts/bench_generate.py --model tiny
    PYTHONPATH=src python scripts/bench_generate.py --model phi3-mini-2l --dtype bfloat16
    PYTHONPATH=src python scripts/bench_generate.py --model tiny --cache static --cache none
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch

from lookinside.core.decoding.generate import generate
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.decoding.timing import now
from lookinside.core.model.loading import LM, load, load_config_offline
from lookinside.core.model.spec import DEFAULT_MODEL, LoadSpec
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import SamplingParams
from lookinside.tiny import ASSETS

PROMPT = "Write an email to Sarah to apologize for the tragic gardening mishap. Explain how it happened."
PHI3_TOKENIZER = Path(__file__).resolve().parents[2] / "shared" / "phi3-tokenizer"
GREEDY = SamplingParams(temperature=0)


def load_model(name: str, device: str, dtype: str, workdir: Path) -> LM:
    """`tiny`, `phi3-mini-2l` (Phi-3-mini's dimensions with 2 of its 32 layers, random weights), or a path."""
    if name != "phi3-mini-2l":
        return load(LoadSpec(model=name, device=device, dtype=dtype))
    config = load_config_offline(DEFAULT_MODEL)
    config.num_hidden_layers = 2
    config.save_pretrained(workdir)
    tokenizer = PHI3_TOKENIZER if (PHI3_TOKENIZER / "tokenizer.json").exists() else ASSETS
    for file in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tokenizer / file).exists():
            shutil.copy(tokenizer / file, workdir / file)
    return load(LoadSpec(model=str(workdir), device=device, dtype=dtype, random_weights=True))


def time_core(lm: LM, prompt: list[int], n: int, cache: str) -> tuple[float, list[int], list[float]]:
    """Seconds for n greedy tokens through `generate`; the ids; each step's own seconds."""
    start = now(lm.device)
    config = GenerationSettings(max_new_tokens=n, cache=cache, ignore_eos=True)  # type: ignore[arg-type]
    steps = list(generate(lm, prompt, GREEDY, config))
    return now(lm.device) - start, [s.token_id for s in steps], [s.seconds for s in steps]


def time_hf(lm: LM, prompt: list[int], n: int, cache: str) -> tuple[float, list[int]]:
    """Seconds for n greedy tokens through `model.generate`, and the ids."""
    ids = torch.tensor([prompt], device=lm.device)  # (1, seq)
    extra = {"cache_implementation": "static"} if cache == "static" else {"use_cache": cache != "none"}
    start = now(lm.device)
    with torch.inference_mode():
        out = lm.model.generate(ids, do_sample=False, max_new_tokens=n, eos_token_id=[],
                                pad_token_id=lm.tokenizer.pad_token_id or 0, **extra)
    return now(lm.device) - start, out[0, len(prompt):].tolist()


def bench(lm: LM, n: int, repeats: int, cache: str) -> dict[str, float | int | str | bool]:
    """Median decode ms/token and total ms for the core and for generate."""
    prompt = encode_prompt(lm.tokenizer, PROMPT)
    time_core(lm, prompt, n, cache), time_hf(lm, prompt, n, cache)  # warm-up
    core_n, core_1, hf_n, hf_1, step_ms = [], [], [], [], []
    same = True
    for _ in range(repeats):
        seconds, ours, steps = time_core(lm, prompt, n, cache)
        core_n.append(seconds)
        step_ms.append(statistics.median(steps[1:]) * 1000)
        hf_seconds, theirs = time_hf(lm, prompt, n, cache)
        hf_n.append(hf_seconds)
        same = same and ours == theirs
        hf_1.append(time_hf(lm, prompt, 1, cache)[0])
        core_1.append(time_core(lm, prompt, 1, cache)[0])
    med = statistics.median
    # Paired per repeat: each core run against the generate run right after it, so load drifts cancel.
    paired = [(c - med(core_1)) / (h - med(hf_1)) for c, h in zip(core_n, hf_n)]
    return {
        "cache": cache, "prompt_tokens": len(prompt), "new_tokens": n, "repeats": repeats, "same_ids": same,
        "core_ms_per_token": (med(core_n) - med(core_1)) / (n - 1) * 1000,
        "generate_ms_per_token": (med(hf_n) - med(hf_1)) / (n - 1) * 1000,
        "paired_ratio_median": med(paired), "paired_ratio_min": min(paired), "paired_ratio_max": max(paired),
        "core_step_median_ms": med(step_ms),
        "core_total_ms": med(core_n) * 1000, "generate_total_ms": med(hf_n) * 1000,
        "core_first_token_ms": med(core_1) * 1000, "generate_first_token_ms": med(hf_1) * 1000,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny", help="tiny, phi3-mini-2l, or a model path")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cache", action="append", choices=["dynamic", "static", "none"],
                        help="repeatable; default dynamic")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as workdir:
        lm = load_model(args.model, args.device, args.dtype, Path(workdir))
        results = [bench(lm, args.new_tokens, args.repeats, cache) for cache in args.cache or ["dynamic"]]
    header = {"model": args.model, "device": str(lm.device), "dtype": str(lm.dtype).removeprefix("torch."),
              "threads": torch.get_num_threads(), "torch": torch.__version__,
              "transformers": __import__("transformers").__version__}
    if args.json:
        print(json.dumps({**header, "results": results}, indent=2))
        return
    print(" ".join(f"{k}={v}" for k, v in header.items()))
    print(f"{'cache':8} {'core ms/tok':>12} {'generate ms/tok':>16} {'ratio':>6} {'paired (min-max)':>17} "
          f"{'core 1st ms':>12} {'gen 1st ms':>11} {'same ids':>9}")
    for r in results:
        ratio = r["core_ms_per_token"] / r["generate_ms_per_token"]
        spread = f"{r['paired_ratio_median']:.2f} ({r['paired_ratio_min']:.2f}-{r['paired_ratio_max']:.2f})"
        print(f"{r['cache']:8} {r['core_ms_per_token']:12.2f} {r['generate_ms_per_token']:16.2f} {ratio:6.2f} "
              f"{spread:>17} {r['core_first_token_ms']:12.1f} {r['generate_first_token_ms']:11.1f} "
              f"{r['same_ids']!s:>9}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
