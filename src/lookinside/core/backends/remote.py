"""A model behind an OpenAI-compatible server (vLLM, llama.cpp's server, Ollama, TGI, SGLang), as a `Backend`.

The views ask the server through the official `openai` client (the `lookinside[remote]` extra,
imported only here; nothing in this module imports torch):

- next-token: `/v1/completions` with `max_tokens` 1, `logprobs` k and `echo` (the prompt's
  tokens come back too); `--chat` prompts go through `/v1/chat/completions` with `top_logprobs`.
  vLLM also returns token ids (`return_tokens_as_token_ids`), asked in a second request.
- compare: one completion per run, greedy (temperature 0) and seeded samples, with logprobs.
- chat: `/v1/chat/completions` streamed with `logprobs` and `top_logprobs`; each chunk's arrival
  time is its step's time, so time to first token includes the network.

A server names tokens by their text. Texts are interned to stable negative ids within a backend,
so runs compare token by token and `/why` can name alternatives; JSON says the ids are not the
model's. What a server cannot give (tensor shapes, logits, the KV cache switch) is None with a
reason. Every failure is a `RemoteError` with one line that never contains the API key.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.backends import remote_guard as guard
from lookinside.core.backends.http import call, server_root
from lookinside.core.backends.seam import Backend, Capabilities
from lookinside.core.backends.server_kind import LLAMA_CPP, LLAMA_CPP_PYTHON, UNKNOWN, VLLM, ServerKind, detect
from lookinside.core.chat.conversation import Conversation, Fitted
from lookinside.core.decoding.prompting import chat_messages
from lookinside.core.records import (
    Candidate,
    Finish,
    ModelFacts,
    NextToken,
    Piece,
    Resources,
    Step,
    Stream,
)
from lookinside.core.request import GenerationSettings, NextTokenRequest
from lookinside.core.sampling_params import FIELDS, SamplingParams, request_fields

if TYPE_CHECKING:
    import openai

    from lookinside.core.inside.interventions.records import SteerSpec

KEY_ENVS = ("LOOKINSIDE_API_KEY", "OPENAI_API_KEY")
TOP_ALTERNATIVES = 5
NO_SHAPES = "a server does not show its tensors: run the model here (without --endpoint) for the shapes"
NO_LOGITS = "a server returns log-probabilities, not logits"
ProgressFn = Callable[[str], None]
NO_IDS = "this server names tokens by their text; the ids here are lookinside's, not the model's"
NO_ECHO = "{kind} does not send the prompt's tokens back (it ignores `echo`)"


@dataclass(frozen=True)
class RemoteSpec:
    """Where the server is, the key for it (never printed), which served model, and how long to wait."""

    endpoint: str
    api_key: str | None = field(default=None, repr=False)
    model: str | None = None  # None: the server's only model
    timeout_s: float = field(default_factory=guard.timeout_from_env)  # each request's deadline, and each chunk's

    def __post_init__(self) -> None:
        guard.check_endpoint(self.endpoint)
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            raise errors.BadInput(f"the timeout must be a positive number of seconds, not {self.timeout_s}")

    @property
    def base_url(self) -> str:
        """The endpoint with `/v1` at the end, as the client wants it."""
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/v1") else url + "/v1"


def api_key_from_env() -> str | None:
    """LOOKINSIDE_API_KEY, else OPENAI_API_KEY, else None."""
    return next((os.environ[name] for name in KEY_ENVS if os.environ.get(name)), None)


def connect(spec: RemoteSpec) -> RemoteBackend:
    """A backend for the server at `spec.endpoint`, its model chosen and checked (one /v1/models request)."""
    try:
        import openai
    except ImportError:
        raise errors.BadInput('--endpoint needs the openai client: pip install "lookinside[remote]"') from None
    client = openai.OpenAI(base_url=spec.base_url, api_key=spec.api_key or "none", timeout=spec.timeout_s,
                           max_retries=1)
    with _translated(spec):
        served = guard.model_ids(client.models.list().data, spec.base_url)
    if not served:
        raise errors.RemoteError(f"the server at {spec.base_url} serves no model")
    names = [name for name, _ in served]
    if spec.model is None:
        if len(served) > 1:
            raise errors.BadInput(f"the server serves several models; choose one with --model: {', '.join(names)}")
        name, chosen = served[0]
    else:
        name, chosen = next(((n, m) for n, m in served if n == spec.model), (None, None))
        if name is None:
            raise errors.BadInput(f"the server does not serve {spec.model!r}; it serves: {', '.join(names)}")
    context = guard.context_length(chosen)
    kind = detect(spec.base_url, chosen if isinstance(chosen, dict) else chosen.model_dump(), spec.api_key,
                  spec.timeout_s)
    return RemoteBackend(client, replace(spec, model=name), context or kind.context_length,
                         str((chosen.get("owned_by") if isinstance(chosen, dict) else getattr(chosen, "owned_by", ""))
                             or ""), kind)


def server_capabilities(kind: ServerKind) -> Capabilities:
    """What a server gives, from what it is (core/backends/server_kind.py): vLLM, and `llm serve` speaking as vLLM does,
    give ids and take every sampler; the others OpenAI's own samplers only."""
    remote = Capabilities(insides=False, kv_cache_switch=False, continue_reply=False)
    extra = kind.extra_fields() or {}
    samplers = frozenset(f.name for f in FIELDS if f.api == "openai" or f.name in extra)
    return replace(remote, ids=kind.is_vllm or kind.tokenizes, samplers=samplers, ignore_eos="ignore_eos" in extra,
                   kind=kind.describe())


class RemoteBackend(Backend):
    """The `Backend` protocol over HTTP (see the module docstring for what each view asks)."""

    def __init__(self, client: openai.OpenAI, spec: RemoteSpec, context_length: int | None, owner: str = "",
                 kind: ServerKind | None = None) -> None:
        self.client = client
        self.spec = spec
        self.name: str = spec.model or "?"
        self.context_length = context_length
        self.owner = owner
        self.kind = kind or ServerKind(VLLM if owner == "vllm" else UNKNOWN, owner)  # `connect` asks the server
        self.capabilities = server_capabilities(self.kind)
        self._ids: dict[str, int] = {}
        self._texts: dict[int, str] = {}

    # ---- token names

    def intern(self, text: str) -> int:
        """A stable negative id for a token's text (a server names tokens by text)."""
        if text not in self._ids:
            self._ids[text] = -(len(self._ids) + 1)
            self._texts[self._ids[text]] = text
        return self._ids[text]

    def token_text(self, token_id: int) -> str:
        """The text of an interned id."""
        return self._texts.get(token_id, f"<{token_id}>")

    # ---- next token

    def next_token(self, request: NextTokenRequest) -> NextToken:
        """The top-k next tokens, as the server's log-probabilities give them."""
        self._check_k(request.top_k)
        if request.chat:
            return self._next_token_chat(request)
        with _translated(self.spec):
            out = self.client.completions.create(model=self.name, prompt=request.prompt, max_tokens=1,
                                                 logprobs=request.top_k, echo=self.kind.echoes, temperature=0)
        usage = getattr(out, "usage", None)
        if self.kind.echoes and getattr(usage, "completion_tokens", None) == 0:  # what came back is the prompt only
            raise errors.RemoteError(f"{self.kind.describe()} sent no next token for this prompt: the most likely one "
                                     "ends the reply, and this server does not send an end token's log-probabilities")
        tokens, tops, top_ids = _completion_logprobs(out.choices[0].logprobs)
        if not tops or not tops[-1]:
            raise errors.RemoteError("the server gave no log-probabilities (it may not support logprobs)")
        top, prompt = _ranked(tops[-1]), tokens[:-1]
        ids = self._prompt_and_top_ids(request) if self.kind.is_vllm else None
        if self.kind.tokenizes and top_ids:  # llama-server: the prompt's ids from /tokenize, the top-k's from its answer
            prompt, prompt_ids = self._tokenized(request.prompt)
            ids = prompt_ids, [top_ids[text] for text, _ in top]
        if ids is not None and (len(ids[0]) != len(prompt) or len(ids[1]) != len(top)):
            ids = None  # two tokens spelled alike collapsed in the text answer: ranks would not line up
        pieces = tuple(Piece(i, ids[0][i] if ids else self.intern(t), t, t, "text") for i, t in enumerate(prompt))
        unavailable_tokens = {} if pieces else {"tokens": NO_ECHO.format(kind=self.kind.describe())}
        candidates = [Candidate(rank, ids[1][rank - 1] if ids else self.intern(text), text, math.exp(lp), None,
                                _at_temperature(top, rank - 1, request.temperature))
                      for rank, (text, lp) in enumerate(top[: request.top_k], start=1)]
        unavailable = {"shapes": NO_SHAPES, "logit": NO_LOGITS} | ({} if ids else {"ids": NO_IDS}) | unavailable_tokens
        return NextToken(self.name, request.prompt, pieces, None, candidates, request.temperature,
                         self.context_length, unavailable)

    def _next_token_chat(self, request: NextTokenRequest) -> NextToken:
        with _translated(self.spec):
            out = self.client.chat.completions.create(
                model=self.name, messages=chat_messages(request.prompt), max_tokens=1, logprobs=True,
                top_logprobs=request.top_k, temperature=0)
        content = out.choices[0].logprobs.content if out.choices[0].logprobs else None
        if not content:
            raise errors.RemoteError("the server gave no log-probabilities (it may not support logprobs)")
        top = _ranked({t.token: t.logprob for t in content[0].top_logprobs})
        candidates = [Candidate(rank, self.intern(text), text, math.exp(lp), None,
                                _at_temperature(top, rank - 1, request.temperature))
                      for rank, (text, lp) in enumerate(top[: request.top_k], start=1)]
        unavailable = {"shapes": NO_SHAPES, "logit": NO_LOGITS, "ids": NO_IDS,
                       "tokens": "the server applies the chat template itself and does not show its tokens"}
        return NextToken(self.name, request.prompt, (), None, candidates, request.temperature, self.context_length,
                         unavailable)

    def _prompt_and_top_ids(self, request: NextTokenRequest) -> tuple[list[int], list[int]] | None:
        """vLLM's token ids for the prompt and the top-k, from a second request (None if it does not give them)."""
        with _translated(self.spec):
            out = self.client.completions.create(
                model=self.name, prompt=request.prompt, max_tokens=1, logprobs=request.top_k, echo=True,
                temperature=0, extra_body={"return_tokens_as_token_ids": True})
        logprobs = out.choices[0].logprobs
        tokens = list(logprobs.tokens or [])
        if not tokens or not all(t.startswith("token_id:") for t in tokens):
            return None
        prompt = [int(t.removeprefix("token_id:")) for t in tokens[:-1]]
        top = [int(t.removeprefix("token_id:")) for t, _ in _ranked(logprobs.top_logprobs[-1])]
        return prompt, top

    def _tokenized(self, prompt: str) -> tuple[list[str], list[int]]:
        """The prompt's pieces and ids as llama-server's /tokenize gives them (with BOS, as a completion reads it)."""
        body = {"content": prompt, "add_special": True, "with_pieces": True}
        with _translated(self.spec):
            out = self.client.post(server_root(self.spec.base_url) + "/tokenize", body=body, cast_to=object)
        pieces = [(t["piece"] if isinstance(t["piece"], str) else bytes(t["piece"]).decode("utf-8", "replace"),
                   int(t["id"])) for t in out["tokens"]]
        return [piece for piece, _ in pieces], [i for _, i in pieces]

    def _check_k(self, k: int) -> None:
        cap = self.kind.max_logprobs
        if cap is not None and k > cap:
            raise errors.BadInput(f"--top-k {k} is more than vLLM returns by default ({cap}); "
                                  "ask for fewer, or start the server with a larger --max-logprobs")

    # ---- completions

    def prompt_ids(self, prompt: str, chat: bool = False) -> None:
        """A server does not show the prompt's ids on this path."""
        return None

    @property
    def endpoint(self) -> str:
        """The server's base URL."""
        return self.spec.base_url

    def prompt_tokens(self, prompt: str) -> int | None:
        """How many tokens the server makes of `prompt`, from its tokenize route; None where it has none.

        vLLM and llama-server answer POST /tokenize (`prompt` and `content`), llama-cpp-python /extras/tokenize (`input`).
        """
        root = server_root(self.spec.base_url)
        for path, name in (("/tokenize", "prompt"), ("/tokenize", "content"), ("/extras/tokenize", "input")):
            try:
                answer = call(root, path, self.spec.api_key, {"model": self.name, name: prompt}, self.spec.timeout_s)
            except errors.LookinsideError:
                continue
            tokens = answer.get("tokens") if isinstance(answer, dict) else None
            if isinstance(tokens, list) and tokens:  # none at all: the route read another field for the text
                return len(tokens)
        return None

    def generate(self, prompt: str, params: SamplingParams, settings: GenerationSettings, chat: bool = False) -> Stream:
        """A streamed completion (a chat completion with `chat`); `stream.seed` is the seed sent."""
        params = params if params.greedy else params.seeded()
        return Stream(self._stream(None if chat else prompt, chat_messages(prompt) if chat else None, params,
                                   settings), params)

    # ---- chat

    def fit(self, conversation: Conversation, continuation: str | None = None) -> Fitted:
        """The whole conversation (a continuation is refused before, by its capability): the server applies the
        template and counts; it refuses what does not fit."""
        return Fitted(ids=None, dropped_turns=0, dropped_tokens=0, messages=conversation.as_messages())

    def stream(self, fitted: Fitted, params: SamplingParams, settings: GenerationSettings,
               steer: SteerSpec | None = None) -> Stream:
        """The reply, streamed; `stream.seed` is the seed sent (a steer is refused before, by `steering`)."""
        params = params if params.greedy else params.seeded()
        return Stream(self._stream(None, fitted.messages, params, settings), params)

    def count_tokens(self, conversation: Conversation) -> int | None:
        """A server counts only what it is sent."""
        return None

    def start_reply(self) -> None:
        """Nothing to reset on this side."""

    @property
    def generation_config(self) -> Any:
        """A server does not tell its model's sampling defaults."""
        return None

    def facts(self) -> ModelFacts:
        """What the server says of the model."""
        return ModelFacts(name=self.name, source=self.spec.base_url, parameters=None, dtype=None, device=None,
                          context_length=self.context_length, end_tokens=[], chat_template=None, attention=None)

    def resources(self) -> Resources:
        """The server's memory and threads are not visible from here."""
        return Resources()

    # ---- the one streaming request

    def _stream(self, prompt: str | None, messages: list[Any] | None, params: SamplingParams,
                settings: GenerationSettings) -> Iterator[Step]:
        """Steps from a streamed completion (`prompt`) or chat completion (`messages`), timed as they arrive."""
        body = self._request(params, settings)
        stops = bool(settings.stop_strings)
        start = time.perf_counter()
        with _translated(self.spec):
            if messages is not None:
                response = self.client.chat.completions.create(
                    model=self.name, messages=messages, stream=True, logprobs=True, top_logprobs=TOP_ALTERNATIVES,
                    **body)
            else:
                response = self.client.completions.create(
                    model=self.name, prompt=prompt or "", stream=True, logprobs=TOP_ALTERNATIVES, **body)
        # llama.cpp gives the last token's finish reason in a closing chunk that carries no token: for it, each token
        # is held until the next arrives (the display lags one token), so the reason lands on the last step. Every
        # other server names the reason on the token's own chunk, and each token is shown as it comes.
        hold = self.kind.name in (LLAMA_CPP, LLAMA_CPP_PYTHON)
        index, finish_reason, held = 0, None, None
        try:
            with _translated(self.spec, streaming=True, timed=False):
                for chunk in _each_within(response, self.spec.timeout_s):  # a deadline per chunk, not per byte
                    finish_reason = finish_reason or _finish_reason(chunk)
                    for token, lp, top, finish in _chunk_tokens(chunk):
                        now = time.perf_counter()
                        if held is not None:
                            yield self._step(*held, stops=stops)
                            held = None
                        step = (index, token, lp, top, now - start, finish)
                        start, index = now, index + 1
                        if hold:
                            held = step
                        else:
                            yield self._step(*step, stops=stops)
        except errors.LookinsideError:
            if held is not None:  # what came before the break is kept
                yield self._step(*held, stops=stops)
            raise
        finally:
            response.close()
        if held is not None:
            yield self._step(*held[:5], held[5] or finish_reason, stops=stops)
        if not finish_reason:  # the stream ended without a finish reason: the server went away mid-reply, or, before
            # the first token, it may have refused the request inside a started stream (llama-cpp-python)
            refused = self._refusal(prompt, messages, body) if index == 0 else None
            if refused is not None:
                raise refused
            raise errors.StreamBroken(f"the server at {self.spec.base_url} stopped sending before the reply ended")

    def _refusal(self, prompt: str | None, messages: list[Any] | None, body: dict[str, Any]) -> errors.BadInput | None:
        """Why a stream ended before its first token, when the server says so unstreamed; None where it does not.

        llama-cpp-python checks a prompt against its context only once its stream has started (a 200), then ends
        the stream without an event; asked the same without streaming (one token), it refuses with a 400 that says
        why. Only that refusal is returned: a server that answers, or fails otherwise, leaves the break as it is.
        """
        once = {**body, "max_tokens": 1}
        try:
            with _translated(self.spec):
                if messages is not None:
                    self.client.chat.completions.create(model=self.name, messages=messages, **once)
                else:
                    self.client.completions.create(model=self.name, prompt=prompt or "", **once)
        except errors.BadInput as refused:
            return errors.BadInput(f"{refused} (asked again unstreamed: its stream had ended before the first token)")
        except errors.LookinsideError:
            return None
        return None

    def _step(self, index: int, token: str, logprob: float, top: dict[str, float], seconds: float,
              finish: str | None, stops: bool = False) -> Step:
        """One streamed token as a step; `stops`: the request asked for stop strings (else "stop" is an end token)."""
        ranked = _ranked(top)
        logprob = guard.logprob(logprob, token)
        rank = 1 + sum(1 for _, lp in ranked if lp > logprob)
        alternatives = tuple((self.intern(text), math.exp(lp)) for text, lp in ranked[:TOP_ALTERNATIVES])
        ended: Finish | None = None
        text = token
        if finish == "length":
            ended = "length"
        elif finish is not None:  # "stop": an end token (its text is not part of the reply) or a stop string
            # with no stop string asked for, only an end token stops a reply: llama.cpp's servers do not send it, and
            # name the reason on the last token they show (held for it, see `_stream`)
            ended = "eos" if _looks_special(token) or not stops else "stop"
            text = "" if _looks_special(token) else token
        return Step(index, self.intern(token), text, math.exp(logprob), rank, alternatives, seconds, ended)

    def _request(self, params: SamplingParams, settings: GenerationSettings) -> dict[str, Any]:
        """The sampling and length fields of a request; vLLM's extra ones in `extra_body`."""
        self.capabilities.check_samplers(params)  # a sampler this server lacks: one line, not a KeyError below
        wire = request_fields(params)
        body: dict[str, Any] = {"max_tokens": settings.max_new_tokens, **wire["openai"]}
        if params.greedy:
            body.pop("seed", None)
        if settings.stop_strings:
            body["stop"] = list(settings.stop_strings)
        extra = dict(wire["extra"])
        if settings.ignore_eos:
            extra["ignore_eos"] = True
        names = self.kind.extra_fields()
        if extra and names is None:
            raise errors.BadInput(f"{', '.join(sorted(extra))} need a vLLM or llama.cpp server (this one is "
                                  f"{self.kind.describe()}): drop them, or serve the model with one of those")
        if extra:
            body["extra_body"] = {names[key]: value for key, value in extra.items()}
        return body


# ---- helpers


def _looks_special(token: str) -> bool:
    """True for a control token's text such as <|endoftext|>, </s> or <|im_end|>."""
    return re.fullmatch(r"<\|?[^<>\s]{1,40}\|?>|</s>", token) is not None


def _ranked(top: dict[str, float] | None) -> list[tuple[str, float]]:
    """A top-logprobs mapping as (text, logprob) pairs, most probable first (each checked: a number <= 0)."""
    return sorted(((text, guard.logprob(lp, text)) for text, lp in (top or {}).items()), key=lambda item: -item[1])


def _each_within(response: Any, seconds: float) -> Iterator[Any]:
    """The stream's chunks, each one waited for at most `seconds` (the timer is off while the caller has it)."""
    chunks = iter(response)
    while True:
        with guard.deadline(seconds):
            chunk = next(chunks, None)
        if chunk is None:
            return
        yield chunk


def _at_temperature(top: Sequence[tuple[str, float]], index: int, temperature: float | None) -> float | None:
    """The candidate's probability at `temperature`, renormalised over the top-k the server returned."""
    if temperature is None:
        return None
    if temperature == 0:
        return 1.0 if index == 0 else 0.0
    scaled = [lp / temperature for _, lp in top]
    peak = max(scaled)
    weights = [math.exp(s - peak) for s in scaled]
    return weights[index] / sum(weights)


def _completion_logprobs(logprobs: Any) -> tuple[list[str], list[dict[str, float]], dict[str, int]]:
    """A completion's tokens, top log-probabilities per token, and the top tokens' ids where the server gives them.

    OpenAI's format (vLLM, llama-cpp-python) has `tokens` and `top_logprobs`; llama-server answers in the chat
    format (`content`: token, logprob, id and top_logprobs per token), which the client leaves as plain dicts.
    """
    content = _field(logprobs, "content")
    if content:
        tops = [{_field(t, "token"): _field(t, "logprob") for t in _field(item, "top_logprobs") or []}
                for item in content]
        last = _field(content[-1], "top_logprobs") or []
        ids = {_field(t, "token"): _field(t, "id") for t in last if isinstance(_field(t, "id"), int)}
        return [_field(item, "token") for item in content], tops, ids if len(ids) == len(last) else {}
    if logprobs is None:
        return [], [], {}
    return list(logprobs.tokens or []), [dict(t) if t else {} for t in logprobs.top_logprobs or []], {}


def _field(item: Any, name: str) -> Any:
    """A field of a parsed object or of a plain dict (what the client could not parse stays a dict)."""
    return item.get(name) if isinstance(item, dict) else getattr(item, name, None)


def _finish_reason(chunk: Any) -> str | None:
    """The finish reason a streamed chunk gives, in a token's chunk or in a closing one."""
    return next((c.finish_reason for c in chunk.choices or () if getattr(c, "finish_reason", None)), None)


def _chunk_tokens(chunk: Any) -> Iterator[tuple[str, float, dict[str, float], str | None]]:
    """(token text, logprob, top alternatives, finish reason) for each token a streamed chunk carries."""
    for choice in chunk.choices or ():
        finish = getattr(choice, "finish_reason", None)
        logprobs = getattr(choice, "logprobs", None)
        content = getattr(logprobs, "content", None) if logprobs is not None else None
        if content is not None:  # chat completion chunk (llama-server: a completion chunk too, as plain dicts)
            for i, item in enumerate(content):
                top = {_field(t, "token"): _field(t, "logprob") for t in (_field(item, "top_logprobs") or [])}
                yield _field(item, "token"), _field(item, "logprob"), top, finish if i == len(content) - 1 else None
        elif logprobs is not None and getattr(logprobs, "tokens", None):  # completion chunk
            tokens, lps, tops = logprobs.tokens, logprobs.token_logprobs, logprobs.top_logprobs or []
            for i, token in enumerate(tokens):
                top = dict(tops[i]) if i < len(tops) and tops[i] else {}
                yield token, lps[i], top, finish if i == len(tokens) - 1 else None
        elif finish is not None and getattr(getattr(choice, "delta", None), "content", None) in (None, ""):
            continue  # the closing chunk carries no token
        elif getattr(getattr(choice, "delta", None), "content", None) or getattr(choice, "text", None):
            raise errors.RemoteError("the server streams text without log-probabilities; "
                                     "lookinside needs a server that returns logprobs")


@contextmanager
def _translated(spec: RemoteSpec, streaming: bool = False, timed: bool = True) -> Iterator[None]:
    """The openai client's errors as one-line RemoteErrors that name the server, never the key.

    With `timed`, the whole block has `spec.timeout_s` (the client's own timeout is per read).
    """
    import openai

    transport = _transport_errors()

    url = spec.base_url
    try:
        with guard.deadline(spec.timeout_s) if timed else nullcontext():
            yield
    except guard.DeadlinePassed:
        if streaming:
            raise errors.StreamBroken(f"the server at {url} sent nothing for {spec.timeout_s:g} s mid-reply "
                                      "(LOOKINSIDE_TIMEOUT)") from None
        raise errors.RemoteError(f"the server at {url} did not answer within {spec.timeout_s:g} s "
                                 "(LOOKINSIDE_TIMEOUT)") from None
    except errors.LookinsideError:
        raise
    except openai.APITimeoutError:
        raise errors.RemoteError(f"the server at {url} did not answer within {spec.timeout_s:g} s") from None
    except openai.APIConnectionError as exc:
        if streaming:
            raise errors.StreamBroken(f"the server at {url} stopped sending mid-reply ({_cause(exc)})") from None
        raise errors.RemoteError(f"nothing answers at {url} ({_cause(exc)}): is the server running?") from None
    except openai.AuthenticationError:
        raise errors.RemoteError(f"the server at {url} refused the API key (401): give --api-key or set "
                                 "LOOKINSIDE_API_KEY") from None
    except openai.PermissionDeniedError:
        raise errors.RemoteError(f"the server at {url} refused this request (403)") from None
    except openai.NotFoundError as exc:
        message = _server_message(exc)
        if "model" in message.lower():
            raise errors.BadInput(f"the server says: {message}") from None
        raise errors.RemoteError(f"{url} is not an OpenAI-compatible server (404 for the API); "
                                 "give the base URL, e.g. http://host:8000/v1") from None
    except openai.BadRequestError as exc:
        message = _server_message(exc)
        hint = ("; vLLM caps it with its --max-logprobs" if "logprob" in message.lower() else
                "; the conversation or prompt is longer than the server's context" if "context" in message.lower()
                or "maximum" in message.lower() else "")
        raise errors.BadInput(f"the server refused the request: {message}{hint}") from None
    except openai.APIStatusError as exc:
        raise errors.RemoteError(f"the server at {url} answered {exc.status_code}: {_server_message(exc)}") from None
    except openai.APIResponseValidationError:
        raise errors.RemoteError(f"{url} answered, but not as an OpenAI-compatible server does") from None
    except transport as exc:  # raised bare from inside a stream (a reset connection, a cut chunk)
        if streaming:
            raise errors.StreamBroken(f"the server at {url} stopped sending mid-reply ({_cause(exc)})") from None
        raise errors.RemoteError(f"the connection to {url} failed ({_cause(exc)})") from None
    except (ValueError, KeyError, AttributeError, TypeError) as exc:  # a body that is not the API's JSON
        raise errors.RemoteError(f"{url} answered, but not as an OpenAI-compatible server does "
                                 f"({type(exc).__name__})") from None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The HTTP library's own error class (httpx, or httpx2 in newer openai clients), which streams raise bare."""
    for name in ("httpx2", "httpx"):
        try:
            return (importlib.import_module(name).HTTPError,)
        except (ImportError, AttributeError):
            continue
    return ()


def _server_message(exc: Any) -> str:
    """The server's own error message, first line only."""
    body = getattr(exc, "body", None)
    message = body.get("message") if isinstance(body, dict) else None
    if message is None and isinstance(body, dict) and isinstance(body.get("error"), dict):
        message = body["error"].get("message")
    text = str(message or getattr(exc, "message", "") or exc)
    return (text.strip().splitlines() or [type(exc).__name__])[0]


def _cause(exc: BaseException) -> str:
    """The innermost reason of a connection error, in a few words."""
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
