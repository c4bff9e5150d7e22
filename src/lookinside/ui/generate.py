"""`llm generate`'s output: the completion streamed as plain text, one JSON object, or one JSON line per token.

The JSON is the records' own (core/wire.py): `--json` prints the `Completion`; `--jsonl` prints each
`Step` on a line as it comes, then the `Completion` on one line.

Text goes to stdout as it is generated, flushed at every token, so a pipe sees it live; the
stats line goes to stderr, so `llm generate ... > out.txt` keeps only the completion.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from lookinside.core.decoding.compare import NO_IDS, NO_PROMPT_IDS
from lookinside.core.finite import dumps
from lookinside.core.records import Completion, Generation
from lookinside.core.wire import to_wire

if TYPE_CHECKING:
    from lookinside.core.records import Stream

Output = Literal["text", "json", "jsonl"]


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

    def completion(self, run: Generation) -> Completion:
        """The record of `run` (`llm generate --json`): a server's ids said to be lookinside's own in `unavailable`."""
        unavailable = {} if self.ids else {"token_ids": NO_IDS, "prompt_ids": NO_PROMPT_IDS}
        return Completion.of(self.model, self.prompt, run, self.token_text, unavailable)


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
                sys.stdout.write(dumps(to_wire(step)) + "\n")
                sys.stdout.flush()
    except KeyboardInterrupt:
        stream.close()
        run.interrupted = True
    if output in ("json", "jsonl"):  # --jsonl ends with the whole record on one line
        sys.stdout.write(dumps(to_wire(source.completion(run)), indent=2 if output == "json" else None) + "\n")
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
