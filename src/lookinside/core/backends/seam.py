"""The seam between the views and a model: "gives next-token log-probabilities and streams tokens".

Every command talks to a `Backend`: `LocalBackend` wraps a model loaded here (core/model/loading.py);
core/backends/remote.py's backend talks to an OpenAI-compatible server. A backend gives a few primitives
(the next-token distribution of a prompt, a stream of generated tokens with their probabilities,
the prompt's ids, a token's text) and says what else it can give in one typed value,
`Capabilities`, which views and commands read instead of asking which backend they have.
Drivers such as compare (core/decoding/compare.py) are written once over the primitives. What a backend
cannot give it leaves as None with a reason in the record, never a made-up value. Every backend
subclasses `Backend`, so a backend is told from a loaded model by its type; what the views need
beyond the primitives is here too: `view` (one whole view: `llm serve` answers it there), `weights`
(the model loaded here, None for a server) and `endpoint` (where it answers, None here).

This module imports no torch: a remote command must not pay for it. `LocalBackend`'s methods import
the core modules they call inside their bodies, since those import torch and transformers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lookinside.core.chat import conversation as chat
from lookinside.core.decoding.detokenize import token_text
from lookinside.core.decoding.prompting import encode_prompt
from lookinside.core.errors import BadInput
from lookinside.core.model.quantize import parameter_count
from lookinside.core.records import ModelFacts, Resources, Stream
from lookinside.core.sampling_params import FIELD, SamplingParams

if TYPE_CHECKING:
    from lookinside.core.chat.conversation import Conversation, Fitted
    from lookinside.core.inside.interventions.records import SteerSpec
    from lookinside.core.inside.interventions.steer import Steering
    from lookinside.core.model.loading import LM
    from lookinside.core.records import NextToken, Step
    from lookinside.core.request import GenerationSettings, NextTokenRequest


@dataclass(frozen=True)
class Capabilities:
    """What a backend can give beyond the primitives every backend has (each False: said in one line, or None)."""

    ids: bool = True  # the model's own token ids (a server may name tokens by their text only)
    insides: bool = True  # a forward pass with hooks: forward, attention, lens, interventions (here or served)
    kv_cache_switch: bool = True  # generation without a KV cache, or with a static one
    continue_reply: bool = True  # go on from a partial reply (chat's /continue)
    samplers: frozenset[str] | None = None  # the samplers (FIELDS names) it takes; None: every one
    ignore_eos: bool = True  # generate past end tokens
    kind: str = "local"  # what it is, in words a message can name: local, vllm, llama.cpp, lookinside, ...

    def check_samplers(self, params: SamplingParams) -> None:
        """Refuse in one line the samplers `params` turns on that this backend does not take."""
        if self.samplers is None:
            return
        refused = [f.flag for name, f in FIELD.items() if name not in self.samplers
                   and getattr(params, name) not in (None, f.off)]
        if refused:
            them = "it" if len(refused) == 1 else "them"
            raise BadInput(f"{', '.join(refused)} need a server that takes {them} (this one is {self.kind}): leave "
                           f"{them} out, or ask vLLM, llama.cpp or an `llm serve` of this version, which take every one")


LOCAL = Capabilities()


class Backend(ABC):
    """A model the views can ask; `name` and `context_length` (None where the server does not say) describe it."""

    name: str
    context_length: int | None
    capabilities: Capabilities
    endpoint: str | None = None  # where it answers (a server's URL); None for a model here

    @property
    def weights(self) -> LM | None:
        """The model loaded in this process, for what hooks its forward pass or times its cache (None: a server)."""
        return None

    def view(self, view: Any, request: Any) -> Any:  # a lookinside.views.View (views.py imports this module)
        """The record of one lookinside view: a "model" view from the primitives, the others from the weights here;
        a backend without them refuses in one line (`llm serve`'s backend sends the whole view to the server)."""
        if view.needs == "model":
            return view.answer(self, request)
        if not self.capabilities.insides or self.weights is None:
            view.refuse()
        return view.answer(self.weights, request)

    @abstractmethod
    def next_token(self, request: NextTokenRequest) -> NextToken:
        """The top-k next tokens of a prompt."""
        ...

    @abstractmethod
    def prompt_ids(self, prompt: str, chat: bool = False) -> list[int] | None:
        """The prompt's token ids as the model reads them (None where the backend does not show them)."""
        ...

    @abstractmethod
    def prompt_tokens(self, prompt: str) -> int | None:
        """How many tokens the model makes of `prompt` (None where the backend cannot count)."""
        ...

    @abstractmethod
    def generate(self, prompt: str, params: SamplingParams, settings: GenerationSettings, chat: bool = False) -> Stream:
        """A continuation of a text prompt (through the chat template with `chat`), one step per token."""
        ...

    @abstractmethod
    def fit(self, conversation: Conversation, continuation: str | None = None) -> Fitted:
        """The next chat prompt, oldest turns dropped while it does not fit (where the backend can count)."""
        ...

    @abstractmethod
    def stream(self, fitted: Fitted, params: SamplingParams, settings: GenerationSettings,
               steer: SteerSpec | None = None) -> Stream:
        """The reply to a fitted prompt, one step per token, steered by `steer` (made by `steering`) if given;
        `stream.seed` is the seed in effect."""
        ...

    def steering(self, add: str, subtract: str | None, layer: int, alpha: float) -> SteerSpec:
        """The steer chat's /steer asks for, its layer resolved by the model (one that needs the residual stream:
        refused in one line by a backend that cannot add to it)."""
        raise BadInput(f"/steer needs the model here or an `llm serve`: a {self.capabilities.kind} server does not "
                       "let us add to its residual stream")

    @abstractmethod
    def count_tokens(self, conversation: Conversation) -> int | None:
        """Tokens the conversation takes in the chat template (None where the backend cannot count)."""
        ...

    @abstractmethod
    def token_text(self, token_id: int) -> str:
        """A token id's text, as a reply shows it."""
        ...

    @abstractmethod
    def start_reply(self) -> None:
        """Called before each reply (a local GPU resets its peak-memory counter)."""
        ...

    @abstractmethod
    def facts(self) -> ModelFacts:
        """What chat's /show tells about the model."""
        ...

    @property
    @abstractmethod
    def generation_config(self) -> Any:
        """The model's transformers GenerationConfig (its sampling defaults), or None where it is not known."""
        ...

    @abstractmethod
    def resources(self) -> Resources:
        """What the last reply used."""
        ...


GenerateFn = Callable[..., Iterator["Step"]]


class LocalBackend(Backend):
    """A model loaded in this process: every view, and the numbers only it can give.

    `generate_fn` replaces the token loop (`core.decoding.generate.generate`'s signature); tests use it to
    script replies or to interrupt one.
    """

    def __init__(self, lm: LM, generate_fn: GenerateFn | None = None) -> None:
        self.lm = lm
        self.name = lm.name
        self.context_length: int | None = lm.context_length
        self.generate_fn = generate_fn
        self.capabilities = LOCAL
        self._steering: Steering | None = None  # the last steer made, vector and all (a chat steers every reply)

    @property
    def weights(self) -> LM:
        """The model loaded here."""
        return self.lm

    def next_token(self, request: NextTokenRequest) -> NextToken:
        """`core.inside.predict.next_token` on the local model."""
        from lookinside.core.inside import predict  # deferred: torch

        return predict.next_token(self.lm, request)

    def prompt_ids(self, prompt: str, chat: bool = False) -> list[int]:
        """The local tokenizer's ids (through the chat template with `chat`)."""
        return encode_prompt(self.lm.tokenizer, prompt, chat=chat)

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens the local tokenizer makes of `prompt`."""
        return len(self.prompt_ids(prompt))

    def generate(self, prompt: str, params: SamplingParams, settings: GenerationSettings, chat: bool = False) -> Stream:
        """The one token loop over the encoded prompt."""
        from lookinside.core.decoding import generate  # deferred: torch

        return generate.generate(self.lm, self.prompt_ids(prompt, chat), params, settings)

    def fit(self, conversation: Conversation, continuation: str | None = None) -> Fitted:
        """`core.chat.conversation.fit` with the local tokenizer and context."""
        return chat.fit(self.lm.tokenizer, conversation, self.lm.context_length, continuation)

    def stream(self, fitted: Fitted, params: SamplingParams, settings: GenerationSettings,
               steer: SteerSpec | None = None) -> Stream:
        """The one token loop, `core.decoding.generate.generate` (or the substitute given), steered if asked."""
        from lookinside.core.decoding import generate  # deferred: torch

        if self.generate_fn is None:
            stream = generate.generate(self.lm, fitted.ids or [], params, settings)
        else:
            params = generate.with_seed(params)
            stream = Stream(iter(self.generate_fn(self.lm, fitted.ids or [], params, settings)), params)
        if steer is None:
            return stream
        from lookinside.core.inside.interventions.steer import steered  # deferred: torch

        return steered(self.lm, stream, self.vector(steer))

    def steering(self, add: str, subtract: str | None, layer: int, alpha: float) -> SteerSpec:
        """The steering vector made here (kept for the replies that follow); its plain description."""
        from lookinside.core.inside.interventions.steer import steering  # deferred: torch

        self._steering = steering(self.lm, add, subtract, layer, alpha)
        return self._steering.spec

    def vector(self, steer: SteerSpec) -> Steering:
        """The steering vector of `steer`: the one made last when it is that steer, else made again."""
        from lookinside.core.inside.interventions.steer import steering  # deferred: torch

        if self._steering is None or self._steering.spec != steer:
            self._steering = steering(self.lm, steer.add, steer.subtract, steer.depth, steer.alpha)
        return self._steering

    def count_tokens(self, conversation: Conversation) -> int | None:
        """Tokens through the local chat template."""
        return chat.count_tokens(self.lm.tokenizer, conversation)

    def token_text(self, token_id: int) -> str:
        """The local tokenizer's text for the id."""
        return token_text(self.lm.tokenizer, token_id)

    def start_reply(self) -> None:
        """Reset CUDA's peak-memory counter, so the stats show this reply's peak."""
        from lookinside.core.decoding.timing import reset_peak_memory  # deferred: torch

        if self.lm.device.type == "cuda":
            reset_peak_memory(self.lm.device)

    @property
    def generation_config(self) -> Any:
        """The loaded model's GenerationConfig."""
        return self.lm.model.generation_config

    def facts(self) -> ModelFacts:
        """Name, size, dtype, device, attention, context, end tokens and chat template of the loaded model."""
        lm = self.lm
        return ModelFacts(
            name=lm.name, source=lm.source, parameters=parameter_count(lm.model),
            dtype=str(lm.dtype).removeprefix("torch."), device=str(lm.device), context_length=lm.context_length,
            attention=lm.attn_implementation, end_tokens=[(i, self.token_text(i)) for i in lm.end_token_ids],
            chat_template=getattr(lm.tokenizer, "chat_template", None),
        )

    def resources(self) -> Resources:
        """Peak CUDA memory, torch's CPU threads, and the quantization, as they apply to this device."""
        from lookinside.core.decoding.timing import peak_memory_bytes  # deferred: torch

        lm = self.lm
        return Resources(
            peak_memory_bytes=peak_memory_bytes(lm.device) if lm.device.type == "cuda" else None,
            threads=lm.threads.count if lm.threads and lm.device.type == "cpu" else None,
            quantized=lm.quantized.short() if lm.quantized else None,
        )


def as_backend(model: Backend | LM) -> Backend:
    """A backend as it is, or a model loaded here wrapped in a `LocalBackend`."""
    return model if isinstance(model, Backend) else LocalBackend(model)
