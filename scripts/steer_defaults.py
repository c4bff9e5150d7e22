"""Measure `llm steer`'s defaults: at which depth and size a steer shows and the text stays readable.

For each form (`--add " Japan"` alone, README's form; and `--add " Japan" --subtract " France"`),
each depth (a quarter, half and three quarters of the blocks) and each size r (alpha chosen so
that |alpha x v| is r times the prompt's own residual stream there), the script steers a few
prompts greedily and prints, over the prompts: the mean KL of the next-token distribution (nats:
does the steer show), how many continuations changed, and how many stayed readable (non-empty,
at least half their tokens distinct, no token four times in a row: not `''''''''`).
docs/interventions.md says what it showed on tiny and on the Phi-3 shape.

    python scripts/steer_defaults.py --model tiny
    python scripts/steer_defaults.py --model microsoft/Phi-3-mini-4k-instruct --random-weights -n 6 --prompts 2
"""

from __future__ import annotations

import argparse
import statistics

PROMPTS = ("The capital of France is", "What is the capital of France?", "I live in", "The weather today is")
FORMS = ((" Japan", None), (" Japan", " France"))


def readable(ids: list[int]) -> bool:
    """Non-empty, half its tokens distinct, and no token four times in a row."""
    runs = [len({*ids[i : i + 4]}) == 1 for i in range(len(ids) - 3)]
    return bool(ids) and len(set(ids)) >= len(ids) / 2 and not any(runs)


def main() -> None:
    """One row per (form, depth, size): mean KL, changed and readable continuations, the alpha it took."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--sizes", default="0.25,0.5,0.75,1,1.5,2")
    parser.add_argument("--prompts", type=int, default=len(PROMPTS))
    parser.add_argument("-n", "--max-new-tokens", type=int, default=12)
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch

    from lookinside.core.inside import passes
    from lookinside.core.inside.interventions import hooks
    from lookinside.core.inside.interventions.requests import SteerRequest
    from lookinside.core.inside.interventions.steer import sized_alpha, stream_at
    from lookinside.core.inside.interventions.steer import steer as run_steer
    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    torch.manual_seed(0)
    lm = load(LoadSpec(model=args.model, device="cpu", dtype=args.dtype, random_weights=args.random_weights))
    blocks = len(hooks.blocks(lm.model))
    depths = sorted({max(1, blocks * k // 4) for k in (1, 2, 3)})
    prompts = PROMPTS[: args.prompts]
    print(f"model {lm.name}: {blocks} blocks; {len(prompts)} prompts; {args.max_new_tokens} new tokens, greedy")
    print(f"{'form':<30} {'depth':>5} {'size':>5} {'alpha (mean)':>12} {'KL nats':>8} {'changed':>8} {'readable':>8}")
    for add, subtract in FORMS:
        form = f"--add {add!r}" + (f" --subtract {subtract!r}" if subtract else "")
        for depth in depths:
            vector = stream_at(lm, add, depth) - (stream_at(lm, subtract, depth) if subtract else 0)
            four = 4 / statistics.mean(sized_alpha(lm, vector, passes.prompt_ids(lm, p, False), depth, 1.0)
                                       for p in prompts)
            print(f"{form:<30} {depth:>5}   the old default, alpha 4, was size {four:.2f} here")
            for size in (float(s) for s in args.sizes.split(",")):
                kls, alphas, changed, kept = [], [], 0, 0
                for prompt in prompts:
                    alpha = sized_alpha(lm, vector, passes.prompt_ids(lm, prompt, False), depth, size)
                    result = run_steer(lm, SteerRequest(prompt, add, subtract, depth, alpha,
                                                        max_new_tokens=args.max_new_tokens))
                    kls.append(result.shift.kl if result.shift.kl is not None else float("inf"))
                    alphas.append(alpha)
                    changed += result.steered != result.unsteered
                    kept += readable(lm.tokenizer(result.steered, add_special_tokens=False).input_ids)
                print(f"{form:<30} {depth:>5} {size:>5g} {statistics.mean(alphas):>12.3g} {statistics.mean(kls):>8.2f}"
                      f" {changed:>5}/{len(prompts)} {kept:>5}/{len(prompts)}", flush=True)


if __name__ == "__main__":
    main()
