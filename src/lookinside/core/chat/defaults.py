"""The settings a reply is generated with: the model's generation-config defaults, the user's flags laid over them.

`ChatRequest` holds the sampling flags and length that `chat` and `generate` were given (checked
before anything loads); `settings(generation_config)` lays them over the model's defaults (or
lookinside's chat default) as a `ChatSettings`, which chat's `/set` changes one field at a time.
Nothing here imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.rules import new_tokens
from lookinside.core.sampling_params import FIELD, FIELDS, SamplingParams

if TYPE_CHECKING:
    from transformers import GenerationConfig


# When the model's generation config says nothing about sampling: llama.cpp's and Ollama's
# usual chat settings, so that /retry gives a different answer.
CHAT_DEFAULT = SamplingParams(temperature=0.7, top_p=0.9)


DEFAULT_MAX_NEW_TOKENS = 256


@dataclass(frozen=True)
class ChatSettings:
    """How replies are generated: sampling, length, and whether old turns may be dropped."""

    params: SamplingParams = CHAT_DEFAULT
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    trim: bool = True
    source: str = "lookinside's chat default"  # where the sampling defaults came from, for /show

    def __post_init__(self) -> None:
        new_tokens(self.max_new_tokens)

    def updated(self, name: str, value: str) -> ChatSettings:
        """A copy with one setting changed from its text form, as `/set NAME VALUE` gives it."""
        if name == "max_new_tokens":
            try:
                return replace(self, max_new_tokens=int(value))
            except ValueError:
                raise errors.BadInput(f"max_new_tokens takes an integer, not {value!r}") from None
        if name not in SETTABLE:
            raise errors.BadInput(f"unknown setting {name!r}: one of {', '.join(SETTABLE)}")
        return replace(self, params=self.params.updated(**{name: FIELD[name].parse(value)}))

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON object."""
        return {"params": self.params.to_json(), "max_new_tokens": self.max_new_tokens, "trim": self.trim}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ChatSettings:
        """Settings from `to_json`'s object (validated again)."""
        return cls(params=SamplingParams.from_json(data.get("params", {})),
                   max_new_tokens=int(data.get("max_new_tokens", DEFAULT_MAX_NEW_TOKENS)),
                   trim=bool(data.get("trim", True)), source="the loaded transcript")


SETTABLE = (*(f.name for f in FIELDS if f.settable), "max_new_tokens")


def chat_defaults(generation_config: GenerationConfig | None,
                  given: dict[str, Any] | None = None) -> tuple[SamplingParams, str]:
    """Sampling defaults from the model's generation config, with the user's `given` values over them, and a phrase
    saying where the defaults came from. A bad value in the config (that `given` does not replace) is the file's."""
    given = given or {}
    do_sample = getattr(generation_config, "do_sample", None)
    penalty = getattr(generation_config, "repetition_penalty", None) or 1.0
    if do_sample is None:
        chosen, source = {**CHAT_DEFAULT.to_json()}, "lookinside's chat default, as the model's generation config sets none"
    elif not do_sample:
        chosen, source = {"temperature": 0}, "the model's generation config (greedy)"
    else:
        found = {f.name: getattr(generation_config, f.name, None) for f in FIELDS if f.from_generation_config}
        chosen, source = {name: value for name, value in found.items() if value is not None}, "the model's generation config"
    try:
        return SamplingParams.from_json({**chosen, "repetition_penalty": penalty, **given}), source
    except errors.BadInput as exc:  # the user's values were checked before: this is the file's mistake
        from lookinside.core.model.checks import generation_config_error  # deferred: logging (llm --help)


        raise generation_config_error(exc) from None


def chat_settings(generation_config: GenerationConfig | None, overrides: dict[str, Any],
                  max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, trim: bool = True) -> ChatSettings:
    """The model's defaults with the options the user gave (None means not given) laid over them."""
    given = {name: value for name, value in overrides.items() if value is not None}
    params, source = chat_defaults(generation_config, given)
    if given:
        source = f"{source}, then your options"
    return ChatSettings(params=params, max_new_tokens=max_new_tokens, trim=trim, source=source)


@dataclass(frozen=True)
class ChatRequest:
    """`chat` and `generate`'s sampling flags (None: not given) and length, checked once, before any loading.

    `settings` lays them over a model's defaults once the model (or server) is known.
    """

    overrides: Mapping[str, Any] = field(default_factory=dict)
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    trim: bool = True

    def __post_init__(self) -> None:
        for name, value in self.overrides.items():
            if name not in FIELD:
                raise errors.BadInput(f"unknown sampling setting {name!r}: one of {', '.join(FIELD)}")
            if value is not None:
                FIELD[name].check(value)
        new_tokens(self.max_new_tokens)

    def settings(self, generation_config: GenerationConfig | None) -> ChatSettings:
        """The model's defaults with these flags laid over them."""
        return chat_settings(generation_config, self.overrides, self.max_new_tokens, self.trim)

    def laid_over(self, settings: ChatSettings) -> ChatSettings:
        """`settings` (a saved conversation's) with the sampling flags given here laid over them."""
        given = {name: value for name, value in self.overrides.items() if value is not None}
        if not given:
            return settings
        return replace(settings, params=settings.params.updated(**given), source=f"{settings.source}, then your options")
