"""Where one decode step's time goes (a measurement, not a test): the matrix products against the rest of the step.

It loads a model as `llm bench` does (`--quantize`, `--threads`, a GGUF file kept quantized), decodes greedy tokens
with the single loop, and reports per decode step (the prefill left out):

- the whole step, as `llm bench` times it;
- the matrix products: every linear layer's forward (the LM head included), timed by hooks around each call;
- the rest of the step: the step minus the products, then split by torch's profiler (a second run) into each
  aten op outside the products (self time) and what is left, which is Python (transformers' eager code, the
  loop's own).

The first run has no profiler (only the hooks, two clock reads per layer); the profiler's own cost per op inflates
the second run's ops, so their per-step times are shown beside its step time.

With `--compile` (the step as `llm bench --compile` runs it: a static cache, inductor's graph) no hook is set: a
hook would be traced into the graph and keep the step from being replayed. The products are then the profiled
run's product ops (`lookinside::int4_linear`, fbgemm's and torch's int8 kernels, `mm`), and the rest is the
unprofiled step minus them; inductor's own fused kernels are no aten ops, so the rest is mostly not itemized.

    python scripts/profile_step.py --model DIR --quantize int4 --threads 1,2
    python scripts/profile_step.py --model FILE.gguf --threads 2 --tokens 64 [--compile]
"""

from __future__ import annotations

import argparse
import collections
import os
import time

import torch

PRODUCTS = "lookinside.products"  # the profiler's name for a linear layer's call
# the ops a compiled graph's linear layers run (no hook marks them there)
PRODUCT_OPS = {"lookinside::int4_linear", "quantized::linear_dynamic", "aten::_weight_int8pack_mm",
               "aten::_weight_int4pack_mm_for_cpu", "aten::mm", "aten::addmm", "aten::bmm"}


def products_of(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's matrix products: the modules named like a linear layer (nn.Linear, torch's dynamic int8 one, ours),
    the innermost only, so that a wrapper and the layer it holds are not timed twice."""
    def linear(module: torch.nn.Module) -> bool:
        return type(module).__name__.endswith("Linear")

    return [m for m in model.modules() if linear(m) and not any(linear(c) for c in m.modules() if c is not m)]


class Timer:
    """Hooks on `modules` that add up the wall time of their calls, and mark each call for the profiler."""

    def __init__(self, modules: list[torch.nn.Module]) -> None:
        self.seconds = 0.0
        self.calls = 0
        self._started = 0.0
        self._mark: torch.profiler.record_function | None = None
        self._handles = [h for m in modules for h in (m.register_forward_pre_hook(self._pre),
                                                       m.register_forward_hook(self._post))]

    def _pre(self, module: torch.nn.Module, args: object) -> None:
        self._mark = torch.profiler.record_function(PRODUCTS)
        self._mark.__enter__()
        self._started = time.perf_counter()

    def _post(self, module: torch.nn.Module, args: object, out: object) -> None:
        self.seconds += time.perf_counter() - self._started
        self.calls += 1
        if self._mark is not None:
            self._mark.__exit__(None, None, None)
            self._mark = None

    def reset(self) -> None:
        self.seconds, self.calls = 0.0, 0

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


def decode_steps(lm: object, prompt: list[int], tokens: int, timer: Timer | None = None,
                 during: object = None, compile: bool = False) -> list[float]:
    """Greedy decoding of `tokens` tokens; each decode step's seconds (the first, the prefill's, left out). After
    the prefill `timer` is reset, and `during`, a context manager, entered (and left after the last step)."""
    from contextlib import nullcontext

    from lookinside.core.bench.run import GREEDY
    from lookinside.core.decoding.generate import generate
    from lookinside.core.request import GenerationSettings

    settings = GenerationSettings(max_new_tokens=tokens, ignore_eos=True, cache="static" if compile else "dynamic",
                                  compile=compile)
    stream = iter(generate(lm, prompt, GREEDY, settings))
    next(stream)
    if timer is not None:
        timer.reset()
    with during if during is not None else nullcontext():
        return [step.seconds for step in stream]


def outside_products(prof: torch.profiler.profile, marked: bool = True) -> tuple[collections.Counter[str], float]:
    """Self time (µs) of every aten op outside the products, by name; and the products' own time (µs) as the
    profiler saw it (the product ops' with `marked` False: a compiled step, whose layers carry no hook)."""
    spent: collections.Counter[str] = collections.Counter()
    products = 0.0
    for event in prof.events():
        if not marked and event.name in PRODUCT_OPS and not inside(event, PRODUCT_OPS):
            products += event.cpu_time_total
        if event.name == PRODUCTS or not event.name.startswith("aten::"):
            continue
        if not inside(event, {PRODUCTS} if marked else PRODUCT_OPS) and event.name not in PRODUCT_OPS:
            spent[event.name] += event.self_cpu_time_total
    return spent, products


def inside(event: object, names: set[str]) -> bool:
    """Whether one of `event`'s callers is named in `names`."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name in names:
            return True
        parent = parent.cpu_parent
    return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a model folder or a GGUF file")
    parser.add_argument("--quantize", default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--threads", default="1,2", help="thread counts, comma-separated")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--ops", type=int, default=12, help="how many ops to list")
    parser.add_argument("--compile", action="store_true", help="the compiled step (static cache), as bench --compile")
    args = parser.parse_args()

    from transformers.utils import logging

    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    logging.disable_progress_bar()
    lm = load(LoadSpec(model=args.model, device="cpu", dtype=args.dtype, quantize=args.quantize))
    prompt = list(range(100, 100 + args.prompt_tokens))
    timer = None if args.compile else Timer(products_of(lm.model))
    print(f"{args.model}, --quantize {args.quantize}, {args.tokens} greedy tokens after {args.prompt_tokens}"
          f"{', compiled' if args.compile else ''}; load average {os.getloadavg()[0]:.1f}")
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for _ in range(3 if args.compile else 1):  # warm-up (compiling, and the replay's first runs)
            decode_steps(lm, prompt, args.tokens, compile=args.compile)
        steps = decode_steps(lm, prompt, args.tokens, timer, compile=args.compile)
        n = len(steps)
        step_ms = 1000 * sum(steps) / n
        if timer is not None:  # read before the profiled run, whose calls the hooks count too
            products_ms, how = 1000 * timer.seconds / n, f"{timer.calls // n} calls a step"
        prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU])
        profiled = decode_steps(lm, prompt, args.tokens, during=prof, compile=args.compile)
        spent, seen = outside_products(prof, marked=timer is not None)
        m = len(profiled)
        if timer is None:
            products_ms, how = seen / 1000 / m, "their ops in the profiled run"
        print(f"\n{threads} thread(s): step {step_ms:.2f} ms ({1000 / step_ms:.1f} tokens/s); products {products_ms:.2f} ms "
              f"({how}); the rest {step_ms - products_ms:.2f} ms")
        print(f"  profiled run: step {1000 * sum(profiled) / m:.2f} ms; aten ops outside the products "
              f"{sum(spent.values()) / 1000 / m:.2f} ms a step:")
        for name, us in spent.most_common(args.ops):
            print(f"    {name:<48} {us / m / 1000:6.3f} ms")
    if timer is not None:
        timer.remove()


if __name__ == "__main__":
    main()
