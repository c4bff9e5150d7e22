"""A model kept warm by `llm serve`, as a `Backend` that shows every view, the insides included.

The server answers `POST /lookinside/v1/views/<name>` with the record
(core/wire.py), so this side draws the very record the server made, with the view it would have
drawn here. The views go over the standard library's HTTP client: a warm look imports neither
torch nor transformers nor the `openai` client. Generation (chat, generate, bench) streams through
the server's OpenAI-compatible API, with the openai client, opened on first use.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.backends.http import call, server_root
from lookinside.core.backends.seam import Backend, Capabilities
from lookinside.core.records import ModelFacts, NextToken, Resources
from lookinside.core.wire import from_wire, to_wire

if TYPE_CHECKING:
    from lookinside.core.backends.remote import RemoteBackend
    from lookinside.core.chat.conversation import Conversation, Fitted
    from lookinside.core.decoding.sampling import SamplingParams
    from lookinside.core.records import Stream
    from lookinside.core.request import GenerationSettings, NextTokenRequest

SERVED = Capabilities(kv_cache_switch=False, continue_reply=False, kind="lookinside")
INFO_PATH = "/lookinside/v1/info"


def probe(url: str, key: str | None, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The facts of the lookinside server at `url` (GET /lookinside/v1/info), or None when it is another server."""
    info = call(server_root(url), INFO_PATH, key, None, timeout_s, optional=True)  # another server has no such route
    return info if isinstance(info, dict) and info.get("lookinside") is True else None


def connect(endpoint: str, api_key: str | None = None, model: str | None = None) -> ServedBackend | RemoteBackend:
    """A backend for the server at `endpoint`: a ServedBackend for `llm serve`, else the OpenAI-compatible one.

    The key defaults to $LOOKINSIDE_API_KEY, then $OPENAI_API_KEY; `model` names a served model (None: the only one).
    """
    from lookinside.core.backends import remote

    spec = remote.RemoteSpec(endpoint, api_key or remote.api_key_from_env(), model)
    info = probe(spec.base_url, spec.api_key, spec.timeout_s)
    if info is None:
        return remote.connect(spec)
    if model is not None and model != info.get("model"):
        raise errors.BadInput(f"the server does not serve {model!r}; it serves: {info.get('model')}")
    return ServedBackend(spec.base_url, spec.api_key, info, spec.timeout_s)


class ServedBackend(Backend):
    """A `llm serve` server: every view answered there; generation streamed through its OpenAI API."""

    def __init__(self, url: str, key: str | None, info: dict[str, Any], timeout_s: float = 300.0) -> None:
        self.root = server_root(url)
        self.key = key
        self.info = info
        self.timeout_s = timeout_s
        self.name: str = str(info.get("model") or "?")
        context = info.get("context_length")
        self.context_length: int | None = int(context) if isinstance(context, int) else None
        samplers = info.get("samplers")  # the samplers that server takes (one of an older version lacks a new one)
        self.capabilities = replace(SERVED, samplers=frozenset(samplers) if isinstance(samplers, list) else None)

    @property
    def device(self) -> str:
        """Where the server holds the model, as it says."""
        return str(self.info.get("device") or "?")

    @property
    def dtype(self) -> str:
        """The served weights' dtype, as the server says."""
        return str(self.info.get("dtype") or "?")

    def __repr__(self) -> str:
        return f"ServedBackend({self.name} at {self.root}, {self.dtype} on {self.device})"

    # ---- the views

    def view(self, view: Any, request: Any) -> Any:
        """The server's record for `request` (a lookinside.views.View's), rebuilt here: the server answers every view."""
        return self.ask(view.name, request, view.record)

    def ask(self, name: str, request: Any, record: type) -> Any:
        """POST the request to the view `name`; the record the server made, rebuilt here as `record`.

        The record is all the server sends: this side draws it and makes its --json, as it would here.
        """
        answer = call(self.root, f"/lookinside/v1/views/{name}", self.key, to_wire(request), self.timeout_s)
        try:
            return from_wire(record, answer["record"])
        except (KeyError, TypeError, errors.BadInput) as exc:
            raise errors.RemoteError(f"{self.root} answered the {name} view in a shape this lookinside "
                                     f"does not read ({exc}); is it the same version?") from None

    def next_token(self, request: NextTokenRequest) -> NextToken:
        """The next-token view, as the server computes it (shapes and ids included)."""
        return self.ask("next-token", request, NextToken)

    # ---- generation, through the OpenAI-compatible API

    @cached_property
    def remote(self) -> RemoteBackend:
        """The server's OpenAI-compatible side (imports the openai client on first use)."""
        from lookinside.core.backends.remote import RemoteSpec, connect

        remote = connect(RemoteSpec(self.root + "/v1", self.key, self.name))
        remote.capabilities = replace(remote.capabilities, samplers=self.capabilities.samplers)  # what the server said
        return remote

    def prompt_ids(self, prompt: str, chat: bool = False) -> None:
        """None: a completion streamed through the OpenAI API names its tokens by their text, so its ids here would
        be lookinside's, not the model's (the views, compare included, come from the server with the real ids)."""
        return None

    @property
    def endpoint(self) -> str:
        """The server's root URL."""
        return self.root

    def prompt_tokens(self, prompt: str) -> int:
        """How many tokens the served model makes of `prompt`, from the server's tokens view."""
        from lookinside.core.records import Tokenization
        from lookinside.core.request import TokensRequest

        return len(self.ask("tokens", TokensRequest(prompt), Tokenization).tokens)

    def generate(self, prompt: str, params: SamplingParams, settings: GenerationSettings, chat: bool = False) -> Stream:
        """A streamed completion from the server."""
        return self.remote.generate(prompt, params, settings, chat)

    def fit(self, conversation: Conversation, continuation: str | None = None) -> Fitted:
        """The conversation as it is: the server applies the template and refuses what does not fit."""
        return self.remote.fit(conversation, continuation)

    def stream(self, fitted: Fitted, params: SamplingParams, settings: GenerationSettings) -> Stream:
        """A streamed chat reply."""
        return self.remote.stream(fitted, params, settings)

    def count_tokens(self, conversation: Conversation) -> int | None:
        """The server counts only what it is sent."""
        return None

    def token_text(self, token_id: int) -> str:
        """A streamed token's text."""
        return self.remote.token_text(token_id)

    def start_reply(self) -> None:
        """Nothing to reset on this side."""

    @property
    def generation_config(self) -> Any:
        """The server's model defaults are its own; requests carry the sampling settings."""
        return None

    def facts(self) -> ModelFacts:
        """What the server says of its model."""
        info = self.info
        return ModelFacts(name=self.name, source=f"{info.get('source') or self.name} served at {self.root}",
                          parameters=info.get("parameters"), dtype=info.get("dtype"), device=info.get("device"),
                          context_length=self.context_length, end_tokens=[], chat_template=None,
                          attention=info.get("attention"))

    def resources(self) -> Resources:
        """The server's memory and threads are not visible from here."""
        return Resources()
