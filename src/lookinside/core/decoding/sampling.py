"""The logits -> probabilities -> token step, for the settings in core/sampling_params.py.

The processors are transformers' own, applied to the logits in the order `model.generate` uses:

1. repetition penalty (`RepetitionPenaltyLogitsProcessor`), over the prompt and the reply so far;
2. temperature (`TemperatureLogitsWarper`): logits / T;
3. then each sampler of `FIELDS` that names its warper (`SamplingField.processor`), in `FIELDS` order and only
   where it is not off: top-k (`TopKLogitsWarper`: keep the k highest), top-p (`TopPLogitsWarper`: keep the
   smallest set whose probability reaches p), min-p (`MinPLogitsWarper`: drop tokens below min_p x the top
   token's probability);

then softmax and one multinomial draw from a `torch.Generator` seeded with `seed`.
Temperature 0 means greedy: the argmax after step 1, and no warpers at all.
The filters after temperature see the tempered distribution, as in transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.core.sampling_params import FIELDS, SamplingParams

if TYPE_CHECKING:
    import torch
    from transformers import LogitsProcessorList


FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38  # torch.finfo(torch.float32).tiny and .max


def build_processors(params: SamplingParams) -> LogitsProcessorList:
    """transformers' logits processors for `params`, in generate's order."""
    import transformers

    processors = transformers.LogitsProcessorList()
    if params.repetition_penalty != 1:
        processors.append(transformers.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    if params.greedy:
        return processors
    if params.temperature != 1 or params.repetition_penalty != 1:
        processors.append(ShiftToTop())  # any temperature or penalty the flags accept (1e-300 too) stays finite
    if params.temperature != 1:
        # The scores are float32: a temperature outside its range would be 0 or inf there (0/0, inf/inf = NaN).
        temperature = min(max(params.temperature, FLOAT32_TINY), FLOAT32_MAX)
        processors.append(transformers.TemperatureLogitsWarper(temperature))
    for f in FIELDS:
        if f.processor is not None and (value := getattr(params, f.name)) != f.off:
            processors.append(getattr(transformers, f.processor)(value))
    return processors


class ShiftToTop:
    """A logits processor that subtracts each row's top score, so that the top is 0 and the rest below it.

    Softmax, top-k, top-p and min-p are unchanged by the shift; what changes is that dividing by a
    tiny temperature gives 0 and -inf (a sure pick of the top) instead of inf - inf = NaN. A score
    that is already +inf (a repetition penalty near 0 divides a positive logit by it) becomes the top.
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """`scores` minus each row's maximum; +inf scores become 0 and every finite one -inf.  # (batch, vocab)"""
        import torch

        top = scores.max(dim=-1, keepdim=True).values  # (batch, 1)
        infinite = torch.isposinf(top)  # (batch, 1)
        shifted = scores - torch.where(infinite, torch.zeros_like(top), top)  # (batch, vocab)
        return torch.where(infinite, torch.where(torch.isposinf(scores), 0.0, float("-inf")), shifted)


def logits_to_probs(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Softmax at `temperature` in float32; temperature 0 puts all mass on the argmax."""
    import torch

    logits = logits.float()
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).float()
    return torch.softmax(logits / temperature, dim=-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token id per row drawn from `probs`.  # (batch, vocab) -> (batch,)"""
    import torch

    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)


def top_candidates(probs: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
    """The k most probable ids of a 1-D distribution and their probabilities."""
    values, ids = probs.topk(min(k, probs.shape[-1]))
    return ids.tolist(), values.tolist()
