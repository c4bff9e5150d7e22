"""`llm generate`'s output: the completion streamed as plain text, one JSON object, or one JSON line per token.

Text goes to stdout as it is generated, flushed at every token, so a pipe sees it live; the
stats line goes to stderr, so `llm generate ... > out.txt` keeps only the completion.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from lookinside.core.finite import dumps
from lookinside.core.records import Generation

if TYPE_CHECKING:
    from lookinside.core.records import Step, Stream

Output = Literal["text", "json", "jsonl"]
NO_IDS = "the server names tokens by their text, not by the model's ids"


@dataclass(frozen=True)
class Source:
    """Where a completion came from: the model's name, the prompt, its ids (None: a server did not say), token names."""

    model: str
    prompt: str
    prompt_ids: list[int] | None
    token_text: Callable[[int], str]

    @property
    def ids(self) -> bool:
        """True when the ids are the model's own."""
        return self.prompt_ids is not None


def step_json(step: Step, source: Source) -> dict[str, Any]:
    """One generated token for machines: id, piece, text delta, log-probability, rank, the top alternatives."""
    def token_id(i: int) -> int | None:
        return i if source.ids else None

    return {
        "index": step.index, "token_id": token_id(step.token_id), "token": source.token_text(step.token_id),
        "text": step.text, "logprob": step.logprob, "rank": step.rank,
        "top": [{"token_id": token_id(i), "token": source.token_text(i), "prob": p} for i, p in step.top],
        "seconds": step.seconds, "finish": step.finish,
    }


def generation_json(run: Generation, source: Source) -> dict[str, Any]:
    """The whole completion: text, ids, per-token detail, why it ended, the seed and the timing."""
    return {
        "model": source.model, "prompt": source.prompt,
        "prompt_tokens": len(run.prompt_ids) if source.ids else None, "text": run.text,
        "token_ids": run.token_ids if source.ids else None, "finish": run.finish, "seed": run.seed,
        "timing": {"ttft_s": run.ttft_s, "decode_tok_s": run.decode_tok_s, "total_s": sum(s.seconds for s in run.steps)},
        "steps": [step_json(s, source) for s in run.steps],
        **({} if source.ids else {"unavailable": {"token_ids": NO_IDS, "prompt_tokens": NO_IDS}}),
    }


def stream_out(stream: Stream, source: Source, output: Output) -> Generation:
    """Write the stream as `output` says while it runs; Ctrl-C keeps what came so far (finish "interrupted")."""
    run = Generation(prompt_ids=list(source.prompt_ids or []), seed=stream.seed)
    try:
        for step in stream:
            run.steps.append(step)
            if output == "text" and step.text:
                sys.stdout.write(step.text)
                sys.stdout.flush()
            elif output == "jsonl":
                sys.stdout.write(dumps(step_json(step, source)) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        run.interrupted = True
    if output == "json":
        sys.stdout.write(dumps(generation_json(run, source), indent=2) + "\n")
    elif output == "jsonl":
        summary = {k: v for k, v in generation_json(run, source).items() if k != "steps"}
        sys.stdout.write(dumps({"done": True, **summary}) + "\n")
    elif output == "text":
        sys.stdout.write("\n")
    sys.stdout.flush()  # before the stats line on stderr
    return run


def stats_line(run: Generation) -> str:
    """The dim line after a plain completion: tokens, why it stopped, the seed, speed."""
    prompt = f"{len(run.prompt_ids)} prompt + " if run.prompt_ids else ""
    parts = [f"{prompt}{len(run.steps)} generated tokens", f"finish: {run.finish}"]
    parts += [f"seed {run.seed}"] if run.seed is not None else []
    parts += [f"TTFT {run.ttft_s * 1000:.0f} ms"] if run.ttft_s is not None else []
    parts += [f"{run.decode_tok_s:.1f} tok/s"] if run.decode_tok_s is not None else []
    return " · ".join(parts)
