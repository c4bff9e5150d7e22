"""`llm generate`'s output: the completion streamed as plain text, one JSON object, or one JSON line per token.

Text goes to stdout as it is generated, flushed at every token, so a pipe sees it live; the
stats line goes to stderr, so `llm generate ... > out.txt` keeps only the completion.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any, Literal

from lookinside.core.detokenize import token_text
from lookinside.core.finite import dumps
from lookinside.core.records import Generation

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from lookinside.core.records import Step, Stream

Output = Literal["text", "json", "jsonl"]


def step_json(step: Step, tokenizer: PreTrainedTokenizerBase) -> dict[str, Any]:
    """One generated token for machines: id, piece, text delta, log-probability, rank, the top alternatives."""
    return {
        "index": step.index, "token_id": step.token_id, "token": token_text(tokenizer, step.token_id),
        "text": step.text, "logprob": step.logprob, "rank": step.rank,
        "top": [{"token_id": i, "token": token_text(tokenizer, i), "prob": p} for i, p in step.top],
        "seconds": step.seconds, "finish": step.finish,
    }


def generation_json(run: Generation, tokenizer: PreTrainedTokenizerBase, model: str, prompt: str) -> dict[str, Any]:
    """The whole completion: text, ids, per-token detail, why it ended, the seed and the timing."""
    return {
        "model": model, "prompt": prompt, "prompt_tokens": len(run.prompt_ids), "text": run.text,
        "token_ids": run.token_ids, "finish": run.finish, "seed": run.seed,
        "timing": {"ttft_s": run.ttft_s, "decode_tok_s": run.decode_tok_s, "total_s": sum(s.seconds for s in run.steps)},
        "steps": [step_json(s, tokenizer) for s in run.steps],
    }


def stream_out(stream: Stream, prompt_ids: list[int], tokenizer: PreTrainedTokenizerBase, output: Output,
               model: str, prompt: str) -> Generation:
    """Write the stream as `output` says while it runs; Ctrl-C keeps what came so far (finish "interrupted")."""
    run = Generation(prompt_ids=list(prompt_ids), seed=stream.seed)
    try:
        for step in stream:
            run.steps.append(step)
            if output == "text" and step.text:
                sys.stdout.write(step.text)
                sys.stdout.flush()
            elif output == "jsonl":
                sys.stdout.write(dumps(step_json(step, tokenizer)) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        run.interrupted = True
    if output == "json":
        sys.stdout.write(dumps(generation_json(run, tokenizer, model, prompt), indent=2) + "\n")
    elif output == "jsonl":
        summary = {k: v for k, v in generation_json(run, tokenizer, model, prompt).items() if k != "steps"}
        sys.stdout.write(dumps({"done": True, **summary}) + "\n")
    elif output == "text":
        sys.stdout.write("\n")
    sys.stdout.flush()  # before the stats line on stderr
    return run


def stats_line(run: Generation) -> str:
    """The dim line after a plain completion: tokens, why it stopped, the seed, speed."""
    parts = [f"{len(run.prompt_ids)} prompt + {len(run.steps)} generated tokens", f"finish: {run.finish}"]
    parts += [f"seed {run.seed}"] if run.seed is not None else []
    parts += [f"TTFT {run.ttft_s * 1000:.0f} ms"] if run.ttft_s is not None else []
    parts += [f"{run.decode_tok_s:.1f} tok/s"] if run.decode_tok_s is not None else []
    return " · ".join(parts)
