"""The one opening every one-pass view shares: prompt -> checked ids -> one forward pass.

`prompt_ids` encodes (through the chat template with `chat`) and refuses a prompt over the
context; `forward` runs the ids once, without a cache, under inference mode, with whatever
extra outputs the view needs (hidden states, attentions), and refuses logits that are not finite
(core/finite.py) in one line naming the likely cause. Views that read the pass through
hooks (core/inside/hooks.py) wrap the `forward` call in their hook context.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from lookinside.core.decoding.prompting import check_fits, encode_prompt
from lookinside.core.finite import check_logits

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM


def prompt_ids(lm: LM, prompt: str, chat: bool = False) -> list[int]:
    """The prompt's token ids, refused when they do not fit the model's context."""
    ids = encode_prompt(lm.tokenizer, prompt, chat=chat)
    check_fits(len(ids), lm.context_length)
    return ids


def forward(lm: LM, ids: list[int], **outputs: Any) -> Any:
    """One forward pass over `ids` (no cache): transformers' output, with `outputs` such as output_attentions=True."""
    input_ids = torch.tensor([ids], device=lm.device)  # (1, n)
    with torch.inference_mode():
        out = lm.model(input_ids=input_ids, use_cache=False, **outputs)
    check_logits(lm, out.logits)  # (1, n, vocab): NaN here would be drawn as a table of nan
    return out
