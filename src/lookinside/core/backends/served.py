"""A model kept warm by `llm serve`, as a `Backend` that shows every view, the insides included.

The server answers `POST /lookinside/v1/views/<name>` with the record
(core/wire.py), so this side draws the very record the server made, with the view it would have
drawn here. The views go over the standard library's HTTP client: a warm look imports neither
torch nor transformers nor the `openai` client. Generation (chat, generate, bench) streams through
the server's OpenAI-compatible API, with the openai client, opened on first use.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import cached_property
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.backends import remote
from lookinside.core.backends.http import call, lines, server_root
from lookinside.core.backends.seam import Backend, Capabilities
from lookinside.core.chat.conversation import Fitted
from lookinside.core.inside.interventions.records import SteerSpec
from lookinside.core.records import ModelFacts, NextToken, Resources, Step, Stream, Tokenization
from lookinside.core.request import TokensRequest
from lookinside.core.wire import from_wire, to_wire

if TYPE_CHECKING:
    from lookinside.core.backends.remote import RemoteBackend
    from lookinside.core.chat.conversation import Conversation
    from lookinside.core.request import GenerationSettings, NextTokenRequest
    from lookinside.core.sampling_params import SamplingParams

SERVED = Capabilities(kv_cache_switch=False, kind="lookinside")
CHAT_PATH = "/lookinside/v1/chat"  # fit, count, steer, reply: what a chat needs beyond the OpenAI routes
INFO_PATH = "/lookinside/v1/info"


def probe(url: str, key: str | None, timeout_s: float = 5.0) -> dict[str, Any] | None:
    """The facts of the lookinside server at `url` (GET /lookinside/v1/info), or None when it is another server."""
    info = call(server_root(url), INFO_PATH, key, None, timeout_s, optional=True)  # another server has no such route
    return info if isinstance(info, dict) and info.get("lookinside") is True else None


def connect(endpoint: str, api_key: str | None = None, model: str | None = None) -> ServedBackend | RemoteBackend:
    """A backend for the server at `endpoint`: a ServedBackend for `llm serve`, else the OpenAI-compatible one.

    The key defaults to $LOOKINSIDE_API_KEY, then $OPENAI_API_KEY; `model` names a served model (None: the only one).
    """
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
        self._texts: dict[int, str] = {}  # the texts of the ids a chat reply streamed, as the server sent them
        self._peak: int | None = None  # the last reply's peak CUDA memory, as the server measured it

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
        backend = remote.connect(remote.RemoteSpec(self.root + "/v1", self.key, self.name))
        backend.capabilities = replace(backend.capabilities, samplers=self.capabilities.samplers)  # what the server said
        return backend

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
        return len(self.ask("tokens", TokensRequest(prompt), Tokenization).tokens)

    def generate(self, prompt: str, params: SamplingParams, settings: GenerationSettings, chat: bool = False) -> Stream:
        """A streamed completion from the server."""
        return self.remote.generate(prompt, params, settings, chat)

    # ---- chat, through the server's chat routes (serve/chat.py): the same calls the model here answers

    def fit(self, conversation: Conversation, continuation: str | None = None) -> Fitted:
        """The conversation fitted by the server as it is here (oldest turns dropped: the window moves here too)."""
        answer = self._chat("fit", _conversation(conversation, continuation))
        conversation.window = int(answer["window"])
        return Fitted(ids=[int(i) for i in answer["ids"]], dropped_turns=int(answer["dropped_turns"]),
                      dropped_tokens=int(answer["dropped_tokens"]), messages=conversation.as_messages(),
                      continuation=continuation)

    def count_tokens(self, conversation: Conversation) -> int | None:
        """Tokens the conversation takes in the served model's chat template."""
        return int(self._chat("count", _conversation(conversation, None))["tokens"])

    def steering(self, add: str, subtract: str | None, layer: int, alpha: float) -> SteerSpec:
        """The steer made on the served model (which resolves its layer and refuses what `llm steer` refuses)."""
        answer = self._chat("steer", {"add": add, "subtract": subtract, "layer": layer, "alpha": alpha})
        return self._read(SteerSpec, answer.get("steer"), "steer")

    def stream(self, fitted: Fitted, params: SamplingParams, settings: GenerationSettings,
               steer: SteerSpec | None = None) -> Stream:
        """The reply made by the server's token loop from the fitted ids (steered there); a refusal comes before
        any token, as here."""
        params = params if params.greedy else params.seeded()  # the seed known up front, as the loop here does
        body = {"ids": fitted.ids, "params": to_wire(params), "max_new_tokens": settings.max_new_tokens,
                "steer": to_wire(steer) if steer is not None else None}
        answers = lines(self.root, CHAT_PATH + "/reply", self.key, body, self.timeout_s)
        first = next(answers, None)  # the request goes now: its refusal is raised here, before the stream starts
        if not isinstance(first, dict) or first.get("start") is not True:
            raise errors.RemoteError(f"{self.root} did not start the reply ({str(first)[:80]})")
        return Stream(self._steps(answers), params)

    def _steps(self, answers: Iterator[Any]) -> Iterator[Step]:
        """Each step the server sends; a reply that stops before its last step (finish set) is a StreamBroken, so the
        chat keeps what came, marked as cut."""
        last: Step | None = None
        try:
            for answer in answers:
                if not isinstance(answer, dict) or "step" not in answer:
                    message = answer.get("error", {}).get("message") if isinstance(answer, dict) else None
                    raise errors.StreamBroken(f"the server at {self.root} stopped the reply: "
                                              f"{message or str(answer)[:80]}")
                self._texts.update((int(i), str(text)) for i, text in answer.get("texts", {}).items())
                peak = answer.get("peak_memory_bytes")  # sent with the last step of a reply on CUDA
                self._peak = peak if isinstance(peak, int) and not isinstance(peak, bool) else self._peak
                last = self._read(Step, answer["step"], "reply")
                yield last
        except errors.StreamBroken:
            raise
        except errors.RemoteError as exc:  # the connection went mid-reply
            raise errors.StreamBroken(f"the server at {self.root} stopped sending mid-reply ({exc})") from None
        if last is None or last.finish is None:
            raise errors.StreamBroken(f"the server at {self.root} stopped sending before the reply ended")

    def _chat(self, route: str, body: dict[str, Any]) -> dict[str, Any]:
        answer = call(self.root, f"{CHAT_PATH}/{route}", self.key, body, self.timeout_s)
        if not isinstance(answer, dict):
            raise errors.RemoteError(f"{self.root} answered {CHAT_PATH}/{route} with {str(answer)[:80]}")
        return answer

    def _read(self, kind: type, data: Any, what: str) -> Any:
        try:
            return from_wire(kind, data)
        except errors.BadInput as exc:
            raise errors.RemoteError(f"{self.root} sent a {what} this lookinside does not read ({exc}); is it the "
                                     "same version?") from None

    def token_text(self, token_id: int) -> str:
        """A token's text: as the server sent it with a chat reply, else as its OpenAI API named it."""
        return self._texts[token_id] if token_id in self._texts else self.remote.token_text(token_id)

    def start_reply(self) -> None:
        """Forget the last reply's peak memory (the server measures the next one's)."""
        self._peak = None

    @property
    def generation_config(self) -> Any:
        """The server's model defaults are its own; requests carry the sampling settings."""
        return None

    def facts(self) -> ModelFacts:
        """What the server says of its model."""
        info = self.info
        return ModelFacts(name=self.name, source=f"{info.get('source') or self.name} served at {self.root}",
                          parameters=info.get("parameters"), dtype=info.get("dtype"), device=info.get("device"),
                          context_length=self.context_length, end_tokens=_end_tokens(info.get("end_tokens")),
                          chat_template=template if isinstance(template := info.get("chat_template"), str) else None,
                          attention=info.get("attention"))

    def resources(self) -> Resources:
        """The server's threads and quantization, as it says, and on CUDA the last reply's peak memory there."""
        threads, quantized = self.info.get("threads"), self.info.get("quantized")
        return Resources(peak_memory_bytes=self._peak, threads=threads if isinstance(threads, int) else None,
                         quantized=quantized if isinstance(quantized, str) else None)


def _conversation(conversation: Conversation, continuation: str | None) -> dict[str, Any]:
    """What the server's chat routes read of a conversation (the turns' text, not their tokens)."""
    return {"system": conversation.system, "window": conversation.window, "continuation": continuation,
            "settings": conversation.settings.to_json(),
            "messages": [{"role": m["role"], "content": m["content"]} for m in conversation.messages]}


def _end_tokens(sent: Any) -> list[tuple[int, str]]:
    """The end tokens a server listed as [id, text] pairs (none where an older server lists none)."""
    if not isinstance(sent, list):
        return []
    return [(pair[0], pair[1]) for pair in sent
            if isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int) and isinstance(pair[1], str)]
