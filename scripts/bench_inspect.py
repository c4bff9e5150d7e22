"""How long `llm inspect` takes for Phi-3-mini, split into imports, config, meta build and card.

Run: PYTHONPATH=src python scripts/bench_inspect.py [--repeat 3]
The meta-device build allocates no weights, so the time is imports plus module construction.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    start = time.perf_counter()
    import torch  # noqa: F401
    import transformers  # noqa: F401

    from lookinside.core.inside.anatomy import anatomy_of, meta_model
    from lookinside.core.model.loading import load_config_offline
    from lookinside.core.model.spec import DEFAULT_MODEL

    imports = time.perf_counter() - start
    samples: dict[str, list[float]] = {"config": [], "meta build": [], "card and tree": []}
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        config = load_config_offline(DEFAULT_MODEL)
        t1 = time.perf_counter()
        model = meta_model(config)
        t2 = time.perf_counter()
        anatomy = anatomy_of(DEFAULT_MODEL, model)
        t3 = time.perf_counter()
        for name, seconds in zip(samples, (t1 - t0, t2 - t1, t3 - t2)):
            samples[name].append(seconds)
    print(f"{DEFAULT_MODEL}: {anatomy.card.parameters:,} parameters, {anatomy.card.attention}")
    print(f"imports (torch, transformers, lookinside): {imports:.2f} s (once)")
    for name, values in samples.items():
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        print(f"{name}: {statistics.mean(values):.3f}{spread} s  raw {[round(v, 3) for v in values]}")


if __name__ == "__main__":
    main()
