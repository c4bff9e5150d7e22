"""One GGUF file's next-token distributions in llama.cpp and in lookinside (kept quantized), position by position.

Both engines read the same prompt ids (from the file's tokenizer as lookinside builds it); llama.cpp returns
the logits of every position (`logits_all`), lookinside one forward pass. Printed: the top-1 agreement, the
KL divergence KL(llama.cpp || ours) per position (mean and max, nats), and the last position's top 5 on
each side.

    python scripts/gguf_agree.py FILE.gguf ["prompt"]

Needs llama-cpp-python (the `peers` extra); it is no dependency of the tests.
"""

from __future__ import annotations

import argparse

import numpy as np

PROMPT = "The capital of France is Paris. The capital of Germany is Berlin. The capital of Italy is"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf")
    parser.add_argument("prompt", nargs="?", default=PROMPT)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    try:
        import llama_cpp
    except ImportError:
        print("llama-cpp-python is not installed: nothing to compare with; skipped")
        return
    import torch

    from lookinside.core.model.loading import load
    from lookinside.core.model.spec import LoadSpec

    lm = load(LoadSpec(model=args.gguf, device="cpu", threads=args.threads))
    ids = lm.tokenizer(args.prompt).input_ids
    with torch.inference_mode():
        ours = torch.log_softmax(lm.model(torch.tensor([ids])).logits[0].float(), -1).numpy()  # (seq, vocab)
    engine = llama_cpp.Llama(model_path=args.gguf, n_ctx=len(ids) + 8, n_threads=args.threads, logits_all=True,
                             n_gpu_layers=0, verbose=False)
    engine.eval(ids)
    theirs = np.asarray(engine.scores[: len(ids)], dtype=np.float64)[:, : ours.shape[1]]  # (seq, vocab)
    theirs = theirs - np.logaddexp.reduce(theirs, axis=-1, keepdims=True)
    kl = (np.exp(theirs) * (theirs - ours)).sum(-1)  # (seq,)
    same = (theirs.argmax(-1) == ours.argmax(-1)).mean()
    print(lm.origin.describe() if lm.origin else args.gguf)
    print(f"{len(ids)} positions: same top-1 {same:.1%}; KL(llama.cpp || ours) mean {kl.mean():.2e}, "
          f"max {kl.max():.2e} nats")
    for label, logp in (("llama.cpp", theirs[-1]), ("lookinside", ours[-1])):
        top = np.argsort(-logp)[:5]
        print(f"{label:>10}: " + "  ".join(f"{lm.tokenizer.decode([int(i)])!r} {np.exp(logp[i]):.4f}" for i in top))


if __name__ == "__main__":
    main()
