"""The OpenAI-compatible API as vLLM serves it: requests checked, answered by the one token loop.

`parse_completion` and `parse_chat` turn a request body into a checked request or raise
`ApiError` (a 4xx with one line). `completion_job` and `chat_job` run on the model's thread
(serve/worker.py): they encode the prompt, check it against the context, and emit a `Prologue`
and then one `Scored` token per step of `core.decoding.generate.generate`, already named as the wire names
them (`token_id:N` with vLLM's `return_tokens_as_token_ids`), so no tokenizer is touched off that
thread. The `*_response` and `*_chunk` functions shape them as OpenAI's JSON, streamed or whole.

Log-probabilities are natural logs under the raw distribution (temperature 1, no penalty), as the
in-process views show them; a completion's `top_logprobs` holds the N best and the chosen token,
and echo gives the prompt's tokens with theirs, the first one null, as vLLM does.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.decoding.sampling import SamplingParams
from lookinside.core.request import GenerationSettings

if TYPE_CHECKING:
    from lookinside.core.model.loading import LM
    from lookinside.serve.settings import ServeSettings
    from lookinside.serve.worker import Cancel

NEG_INF = -9999.0  # what vLLM writes for a log-probability of -inf (JSON has no infinity)
MAX_STOPS = 16
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for /v1/completions
UNSUPPORTED = {"n": 1, "best_of": 1, "presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
               "suffix": None, "tools": None, "functions": None, "response_format": None}
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}


class ApiError(Exception):
    """A request the server refuses: its HTTP status and one line, as OpenAI's error object says it."""

    def __init__(self, message: str, status: int = 400, kind: str = "invalid_request_error",
                 param: str | None = None, code: str | int | None = None) -> None:
        super().__init__(message)
        self.message = message.strip().splitlines()[0] if message.strip() else kind
        self.status, self.kind, self.param = status, kind, param
        self.code = code if code is not None else status

    def body(self) -> dict[str, Any]:
        """OpenAI's error object."""
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


# ---- requests


@dataclass(frozen=True)
class Sampling:
    """What both endpoints share: the model, the sampling settings, the length and how to name tokens."""

    model: str | None
    params: SamplingParams
    max_tokens: int | None  # None: as much as the context leaves
    stop: tuple[str, ...]
    ignore_eos: bool
    stream: bool
    include_usage: bool
    token_ids: bool  # vLLM's return_tokens_as_token_ids


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions, checked."""

    prompt: str | tuple[int, ...]
    sampling: Sampling
    logprobs: int | None
    echo: bool


@dataclass(frozen=True)
class ChatBody:
    """POST /v1/chat/completions, checked."""

    messages: tuple[dict[str, str], ...]
    sampling: Sampling
    logprobs: bool
    top_logprobs: int


def parse_completion(body: Any, settings: ServeSettings) -> CompletionRequest:
    """A completion request from its JSON body, or ApiError."""
    body = _object(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        prompt = tuple(prompt)
    elif not isinstance(prompt, str):
        raise ApiError("prompt must be a string or a list of token ids (one prompt per request)", param="prompt")
    if isinstance(prompt, str) and not prompt.strip():
        raise ApiError("prompt is empty", param="prompt")
    logprobs = _optional_int(body, "logprobs", 0, settings.max_logprobs)
    echo = _bool(body, "echo")
    sampling = _sampling(body, settings, "max_tokens", COMPLETION_DEFAULT_MAX_TOKENS, allow_zero=echo)
    return CompletionRequest(prompt, sampling, logprobs, echo)


def parse_chat(body: Any, settings: ServeSettings) -> ChatBody:
    """A chat completion request from its JSON body, or ApiError."""
    body = _object(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("messages must be a non-empty list of {role, content} objects", param="messages")
    checked = tuple(_message(m) for m in messages)
    logprobs = _bool(body, "logprobs")
    top = _optional_int(body, "top_logprobs", 0, settings.max_logprobs) or 0
    if top and not logprobs:
        raise ApiError("top_logprobs needs logprobs: true", param="top_logprobs")
    limit = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    return ChatBody(checked, _sampling(body, settings, limit, None), logprobs, top)


def _sampling(body: dict[str, Any], settings: ServeSettings, length: str, default: int | None,
              allow_zero: bool = False) -> Sampling:
    for name, neutral in UNSUPPORTED.items():
        value = body.get(name)
        if value is not None and value != neutral and value != {}:
            raise ApiError(f"{name} is not supported by this server (lookinside serve)", param=name)
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError("model must be a string", param="model")
    max_tokens = _optional_int(body, length, 0 if allow_zero else 1, settings.max_tokens)
    max_tokens = default if max_tokens is None else max_tokens
    stop = body.get("stop")
    stops = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stops, (list, tuple)) or len(stops) > MAX_STOPS or not all(isinstance(s, str) and s for s in stops):
        raise ApiError(f"stop must be a non-empty string or a list of at most {MAX_STOPS} of them", param="stop")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise ApiError("stream_options must be an object", param="stream_options")
    return Sampling(model, _params(body), max_tokens, tuple(stops), _bool(body, "ignore_eos"), _bool(body, "stream"),
                    bool((options or {}).get("include_usage")), _bool(body, "return_tokens_as_token_ids"))


def _params(body: dict[str, Any]) -> SamplingParams:
    """SamplingParams from the request's own and extra fields; each checked by its SamplingField."""
    from lookinside.core.decoding.sampling import FIELD

    given = {name: body[name] for name in FIELD if body.get(name) is not None}
    if given.get("top_k") == -1:
        given["top_k"] = 0  # vLLM's "off"
    for name, value in given.items():  # a JSON 1 is a fine temperature: floats take ints
        if _is_int(value) and FIELD[name].kind is float:
            given[name] = float(value)
    try:
        return SamplingParams(**given)
    except errors.BadInput as exc:
        raise ApiError(str(exc), param=str(exc).split()[0]) from None


def _object(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise ApiError("the request body must be a JSON object")
    return body


def _message(message: Any) -> dict[str, str]:
    if not isinstance(message, dict) or message.get("role") not in ("system", "user", "assistant"):
        raise ApiError("each message must be an object with a role of system, user or assistant", param="messages")
    content = message.get("content")
    if isinstance(content, list):  # OpenAI's content parts: text only here
        if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
            raise ApiError("only text content parts are supported", param="messages")
        content = "".join(p["text"] for p in content)
    if not isinstance(content, str):
        raise ApiError("each message's content must be a string", param="messages")
    return {"role": message["role"], "content": content}


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _bool(body: dict[str, Any], name: str) -> bool:
    value = body.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise ApiError(f"{name} must be true or false, not {value!r}"[:200], param=name)
    return value


def _optional_int(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_int(value):
        raise ApiError(f"{name} must be a whole number, not {value!r}"[:200], param=name)
    if value < low or (high is not None and value > high):
        rule = f">= {low}" if high is None else f"in [{low}, {high}]"
        raise ApiError(f"{name} must be {rule} on this server, not {value}", param=name)
    return value


# ---- what the model thread emits


@dataclass(frozen=True)
class Scored:
    """One token as the wire names it: its text in the reply, its name, log-probability and the best others."""

    text: str
    token: str
    logprob: float | None
    top: dict[str, float] | None
    finish: str | None = None


@dataclass(frozen=True)
class Prologue:
    """What is known before the first new token: the prompt's length, its echo and the seed in effect."""

    prompt_tokens: int
    echo_text: str = ""
    echoed: tuple[Scored, ...] = ()
    seed: int | None = None


@dataclass
class Answer:
    """A whole reply, gathered from what the job emitted."""

    prologue: Prologue
    tokens: list[Scored] = field(default_factory=list)

    @property
    def text(self) -> str:
        """The reply's text (after any echo)."""
        return "".join(t.text for t in self.tokens)

    @property
    def finish(self) -> str | None:
        """Why it ended (OpenAI's words)."""
        return self.tokens[-1].finish if self.tokens else "length"


Emit = Callable[[Any], None]


def completion_job(lm: LM, request: CompletionRequest, settings: ServeSettings, emit: Emit, cancel: Cancel) -> None:
    """Run a completion on the model (on its thread), emitting a Prologue and then one Scored per token."""
    from lookinside.core.decoding.detokenize import decode
    from lookinside.core.decoding.prompting import encode_prompt

    sampling = request.sampling
    if isinstance(request.prompt, str):
        ids, text = encode_prompt(lm.tokenizer, request.prompt), request.prompt
    else:
        ids = list(request.prompt)
        _check_ids(lm, ids)
        text = decode(lm.tokenizer, ids) if request.echo else ""
    want = request.logprobs
    echoed = tuple(_prompt_scores(lm, ids, want or 0, sampling.token_ids, want is not None)) if request.echo else ()
    _generate(lm, ids, sampling, settings, want, emit, cancel,
              lambda seed: Prologue(len(ids), text if request.echo else "", echoed, seed), chat=False)


def chat_job(lm: LM, request: ChatBody, settings: ServeSettings, emit: Emit, cancel: Cancel) -> None:
    """Run a chat completion on the model (on its thread), through the model's chat template."""
    from lookinside.core.decoding.prompting import encode_messages

    ids = encode_messages(lm.tokenizer, list(request.messages))
    want = request.top_logprobs if request.logprobs else None
    _generate(lm, ids, request.sampling, settings, want, emit, cancel, lambda seed: Prologue(len(ids), seed=seed),
              chat=True)


def _generate(lm: LM, ids: list[int], sampling: Sampling, settings: ServeSettings, want: int | None, emit: Emit,
              cancel: Cancel, prologue: Callable[[int | None], Prologue], chat: bool) -> None:
    from lookinside.core.decoding.generate import generate
    from lookinside.core.decoding.prompting import check_fits

    room = lm.context_length - len(ids)
    max_tokens = sampling.max_tokens if sampling.max_tokens is not None else min(room, settings.max_tokens or room)
    check_fits(len(ids), lm.context_length, max_tokens)
    if max_tokens == 0:  # echo only: the prompt scored, nothing generated
        emit(prologue(None))
        return
    run = GenerationSettings(max_new_tokens=max_tokens, stop_strings=sampling.stop, ignore_eos=sampling.ignore_eos)
    stream = generate(lm, ids, sampling.params, run, alternatives=max(want or 0, 1))
    emit(prologue(None if sampling.params.greedy else stream.seed))
    name = _namer(lm, sampling.token_ids)
    for step in stream:
        if cancel:
            return  # the client went away, or the server is stopping: no more tokens
        logprob = _log(step.prob)
        top = None
        if want is not None:
            top = {name(i): _log(p) for i, p in step.top[:want]}
            if not chat:
                top.setdefault(name(step.token_id), logprob)  # vLLM lists the chosen token too
        emit(Scored(step.text, name(step.token_id), logprob, top, FINISH.get(step.finish or "")))


def _prompt_scores(lm: LM, ids: list[int], n: int, as_ids: bool, with_top: bool) -> Iterator[Scored]:
    """The prompt's tokens with their log-probabilities given what comes before (the first: None)."""
    import torch

    from lookinside.core.inside import passes

    name = _namer(lm, as_ids)
    out = passes.forward(lm, ids)
    logp = torch.log_softmax(out.logits[0, :-1].float(), dim=-1)  # (n-1, vocab): position i predicts token i+1
    chosen = logp.gather(-1, torch.tensor(ids[1:], device=logp.device).unsqueeze(-1)).squeeze(-1).tolist()  # (n-1,)
    values, best = logp.topk(max(n, 1), dim=-1) if len(ids) > 1 else (logp, logp)  # (n-1, n)
    yield Scored(name(ids[0]), name(ids[0]), None, None)
    for i, token_id in enumerate(ids[1:]):
        top = {name(int(t)): _log_value(float(v)) for t, v in zip(best[i][:n].tolist(), values[i][:n].tolist())}
        top.setdefault(name(token_id), _log_value(chosen[i]))
        yield Scored(name(token_id), name(token_id), _log_value(chosen[i]), top if with_top else None)


def _check_ids(lm: LM, ids: list[int]) -> None:
    from lookinside.core.inside.hooks import head_rows

    vocab = head_rows(lm.model)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise ApiError(f"token id {bad} is outside this model's vocabulary of {vocab:,}", param="prompt")


def _namer(lm: LM, as_ids: bool) -> Callable[[int], str]:
    from lookinside.core.decoding.detokenize import token_text

    return (lambda i: f"token_id:{i}") if as_ids else (lambda i: token_text(lm.tokenizer, i))


def _log(prob: float) -> float:
    return math.log(prob) if prob > 0 else NEG_INF


def _log_value(value: float) -> float:
    return value if math.isfinite(value) else NEG_INF


# ---- answers, as OpenAI's JSON


def new_id(prefix: str) -> str:
    """An id as vLLM makes them: cmpl-..., chatcmpl-..."""
    return f"{prefix}-{uuid.uuid4().hex}"


def _usage(answer: Answer) -> dict[str, int]:
    completion = len(answer.tokens)
    return {"prompt_tokens": answer.prologue.prompt_tokens, "completion_tokens": completion,
            "total_tokens": answer.prologue.prompt_tokens + completion}


def completion_logprobs(tokens: list[Scored] | tuple[Scored, ...], start: int = 0) -> dict[str, Any]:
    """The `logprobs` object of a completion choice: tokens, their logprobs, the top ones, text offsets."""
    offsets, at = [], start
    for t in tokens:
        offsets.append(at)
        at += len(t.text)
    return {"tokens": [t.token for t in tokens], "token_logprobs": [t.logprob for t in tokens],
            "top_logprobs": [t.top for t in tokens], "text_offset": offsets}


def completion_response(request: CompletionRequest, answer: Answer, model: str, rid: str) -> dict[str, Any]:
    """The whole /v1/completions answer."""
    tokens = [*answer.prologue.echoed, *answer.tokens]
    logprobs = completion_logprobs(tokens) if request.logprobs is not None else None
    choice = {"index": 0, "text": answer.prologue.echo_text + answer.text, "logprobs": logprobs,
              "finish_reason": answer.finish, "stop_reason": None}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice],
            "usage": _usage(answer), "system_fingerprint": None}


def completion_chunk(request: CompletionRequest, tokens: list[Scored], text: str, finish: str | None, model: str,
                     rid: str, offset: int) -> dict[str, Any]:
    """One streamed /v1/completions chunk."""
    logprobs = completion_logprobs(tokens, offset) if request.logprobs is not None and tokens else None
    choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": None}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice]}


def chat_logprobs(tokens: list[Scored]) -> dict[str, Any]:
    """The `logprobs` object of a chat choice."""
    def entry(token: str, logprob: float | None) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [entry(t.token, t.logprob) | {"top_logprobs": [entry(k, v) for k, v in (t.top or {}).items()]}
                        for t in tokens]}


def chat_response(request: ChatBody, answer: Answer, model: str, rid: str) -> dict[str, Any]:
    """The whole /v1/chat/completions answer."""
    choice = {"index": 0, "message": {"role": "assistant", "content": answer.text, "tool_calls": []},
              "logprobs": chat_logprobs(answer.tokens) if request.logprobs else None,
              "finish_reason": answer.finish, "stop_reason": None}
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model, "choices": [choice],
            "usage": _usage(answer), "system_fingerprint": None}


def chat_chunk(request: ChatBody, delta: dict[str, Any], tokens: list[Scored], finish: str | None, model: str,
               rid: str) -> dict[str, Any]:
    """One streamed /v1/chat/completions chunk."""
    choice = {"index": 0, "delta": delta, "logprobs": chat_logprobs(tokens) if request.logprobs and tokens else None,
              "finish_reason": finish}
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [choice]}


def usage_chunk(answer: Answer, rid: str, model: str, kind: str) -> dict[str, Any]:
    """The last streamed chunk with stream_options.include_usage: no choices, the usage."""
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [],
            "usage": _usage(answer)}
