"""The OpenAI-compatible API as vLLM serves it: requests checked, answered by the one token loop.

`parse_completion` and `parse_chat` turn a request body into a checked request or raise
`ApiError` (a 4xx with one line); every field of vLLM's request types is honoured or refused by
name, never dropped (`HONOURED`, `NEUTRAL`). `completion_job` and `chat_job` run on the model's
thread (serve/worker.py): they encode the prompts, check them against the context, score an echoed
prompt, and return the `Work` that decodes them in the batch (core/decoding/batch.py), which emits a
`Prologue` and then one `Scored` token per step of each choice, already named as the wire names them
(`token_id:N` with vLLM's `return_tokens_as_token_ids`), so no tokenizer is touched off that thread.
The `*_response` and `*_chunk` functions shape them as OpenAI's JSON, streamed or whole; choices are
indexed as OpenAI and vLLM index them: prompt i's sample j is choice i * n + j.

Log-probabilities are natural logs under the raw distribution (temperature 1, no penalty), as the
in-process views show them; a completion's `top_logprobs` holds the N best and the chosen token,
and echo gives the prompt's tokens with theirs, the first one null, as vLLM does.
"""

from __future__ import annotations

import json
import math
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from lookinside.core import errors
from lookinside.core.decoding.detokenize import decode, token_text
from lookinside.core.decoding.prompting import check_fits, encode_messages, encode_prompt
from lookinside.core.request import GenerationSettings
from lookinside.core.sampling_params import FIELD, SamplingParams

if TYPE_CHECKING:
    import torch

    from lookinside.core.decoding.batch import Work
    from lookinside.core.model.loading import LM
    from lookinside.core.records import Step
    from lookinside.serve.settings import ServeSettings
    from lookinside.serve.worker import Cancel

NEG_INF = -9999.0  # what vLLM writes for a log-probability of -inf (JSON has no infinity)
MAX_STOPS = 16
MAX_SEQUENCES = 64  # prompts x best_of in one request: each is a sequence on the model (the cost is bounded at the door)
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's and vLLM's default for /v1/completions
FINISH = {"eos": "stop", "stop": "stop", "length": "length"}

# Every field of vLLM's request types (vllm/entrypoints/openai/protocol.py, CompletionRequest and
# ChatCompletionRequest, vLLM 0.10 at commit 0052bed3) is either read by name in this module (HONOURED) or
# listed in NEUTRAL with the values that change nothing here: any other value is a 400 that names the field,
# and so is a field vLLM does not have. tests/test_openai_fields.py walks vLLM's lists against these.
SAMPLING_FIELDS = frozenset({"model", "seed", "stop", "stream", "stream_options", "temperature", "top_p", "n",
                             "best_of", "top_k", "min_p", "repetition_penalty", "stop_token_ids", "ignore_eos",
                             "include_stop_str_in_output", "min_tokens", "skip_special_tokens", "prompt_logprobs",
                             "return_tokens_as_token_ids", "request_id", "max_tokens"}) | frozenset(FIELD)
# (FIELD: every sampler lookinside has, by its own name, so one added by the recipe is honoured here too)
HONOURED = {
    "completion": SAMPLING_FIELDS | {"prompt", "echo", "logprobs"},
    "chat": SAMPLING_FIELDS | {"messages", "logprobs", "top_logprobs", "max_completion_tokens"},
}
_ANY = object()  # metadata with no effect on the reply here (no prefix cache to salt, no tools to call)
_COMMON_NEUTRAL: dict[str, tuple[Any, ...]] = {
    "frequency_penalty": (0,), "presence_penalty": (0,), "logit_bias": ({},), "response_format": ({"type": "text"},),
    "use_beam_search": (False,), "length_penalty": (1,), "truncate_prompt_tokens": (), "allowed_token_ids": (),
    "spaces_between_special_tokens": (True,), "guided_json": (), "guided_regex": (), "guided_choice": (),
    "guided_grammar": (), "guided_decoding_backend": (), "guided_whitespace_pattern": (), "priority": (0,),
    "logits_processors": ([],), "kv_transfer_params": ({},), "vllm_xargs": ({},), "user": (_ANY,),
    "cache_salt": (_ANY,),
}
NEUTRAL: dict[str, dict[str, tuple[Any, ...]]] = {
    "completion": _COMMON_NEUTRAL | {"suffix": ("",), "prompt_embeds": (), "add_special_tokens": (True,)},
    "chat": _COMMON_NEUTRAL | {
        "tools": ([],), "tool_choice": ("none", "auto"), "parallel_tool_calls": (_ANY,), "reasoning_effort": (),
        "include_reasoning": (_ANY,), "bad_words": ([],), "echo": (False,), "add_generation_prompt": (True,),
        "continue_final_message": (False,), "add_special_tokens": (False,), "documents": (), "chat_template": (),
        "chat_template_kwargs": ({},), "mm_processor_kwargs": ({},), "structural_tag": ()},
}


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
    """What both endpoints share: the model, the sampling settings, the length, the stops and how to name tokens."""

    model: str | None
    params: SamplingParams
    max_tokens: int | None  # None: as much as the context leaves
    stop: tuple[str, ...]
    ignore_eos: bool
    stream: bool
    include_usage: bool
    token_ids: bool  # vLLM's return_tokens_as_token_ids
    n: int = 1  # choices per prompt
    best_of: int = 1  # sequences per prompt, of which the n most probable are returned
    stop_token_ids: tuple[int, ...] = ()
    min_tokens: int = 0
    include_stop: bool = False  # vLLM's include_stop_str_in_output
    skip_special: bool = True  # vLLM's skip_special_tokens (its default too)
    prompt_logprobs: int | None = None
    request_id: str | None = None


@dataclass(frozen=True)
class CompletionRequest:
    """POST /v1/completions, checked: one or several prompts (text or token ids)."""

    prompts: tuple[str | tuple[int, ...], ...]
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
    _check_fields(body, "completion")
    prompts = _prompts(body.get("prompt"))
    logprobs = _optional_int(body, "logprobs", 0, settings.max_logprobs)
    echo = _bool(body, "echo")
    sampling = _sampling(body, settings, "max_tokens", COMPLETION_DEFAULT_MAX_TOKENS, allow_zero=echo)
    if len(prompts) * sampling.best_of > MAX_SEQUENCES:
        raise ApiError(f"{len(prompts)} prompts x best_of {sampling.best_of} is more than this server's "
                       f"{MAX_SEQUENCES} sequences per request", param="prompt")
    return CompletionRequest(prompts, sampling, logprobs, echo)


def parse_chat(body: Any, settings: ServeSettings) -> ChatBody:
    """A chat completion request from its JSON body, or ApiError."""
    body = _object(body)
    _check_fields(body, "chat")
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


def _check_fields(body: dict[str, Any], endpoint: str) -> None:
    """Refuse, naming it, a field this server would otherwise drop: unknown, or set to what it cannot do."""
    neutral = NEUTRAL[endpoint]
    for name, value in body.items():
        if name in HONOURED[endpoint] or value is None:
            continue
        if name not in neutral:
            raise ApiError(f"{name} is not a field of this endpoint (lookinside serve)", param=name)
        allowed = neutral[name]
        if _ANY not in allowed and not any(_same(value, a) for a in allowed):
            raise ApiError(f"{name} is not supported by this server (lookinside serve): only "
                           f"{' or '.join(json.dumps(a) for a in allowed) or 'null'}", param=name)


def _same(value: Any, allowed: Any) -> bool:
    """Equal as JSON values (so 0 is not false, and 1.0 is 1)."""
    if isinstance(allowed, bool):
        return isinstance(value, bool) and value == allowed
    return not isinstance(value, bool) and value == allowed


def _prompts(prompt: Any) -> tuple[str | tuple[int, ...], ...]:
    """vLLM's four prompt shapes: a string, a list of strings, a list of ids, a list of lists of ids."""
    if isinstance(prompt, str):
        items: list[Any] = [prompt]
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        items = [prompt]
    elif isinstance(prompt, list) and prompt:
        items = prompt
    else:
        raise ApiError("prompt must be a string, a list of token ids, or a non-empty list of either", param="prompt")
    out: list[str | tuple[int, ...]] = []
    for item in items:
        if isinstance(item, str):
            if not item.strip():
                raise ApiError("prompt is empty", param="prompt")
            out.append(item)
        elif isinstance(item, list) and item and all(_is_int(t) for t in item):
            out.append(tuple(item))
        else:
            raise ApiError("each prompt must be a non-empty string or a non-empty list of token ids", param="prompt")
    return tuple(out)


def _sampling(body: dict[str, Any], settings: ServeSettings, length: str, default: int | None,
              allow_zero: bool = False) -> Sampling:
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
    stream = _bool(body, "stream")
    n = _optional_int(body, "n", 1, MAX_SEQUENCES) or 1
    best_of = _optional_int(body, "best_of", 1, MAX_SEQUENCES) or n
    if best_of < n:
        raise ApiError(f"best_of must be >= n ({n}), not {best_of}", param="best_of")
    if stream and best_of > n:
        raise ApiError("best_of above n cannot stream: the best are known only at the end", param="best_of")
    stop_ids = body.get("stop_token_ids") or []
    if not isinstance(stop_ids, list) or len(stop_ids) > MAX_STOPS or not all(_is_int(t) and t >= 0 for t in stop_ids):
        raise ApiError(f"stop_token_ids must be a list of at most {MAX_STOPS} token ids", param="stop_token_ids")
    min_tokens = _optional_int(body, "min_tokens", 0, max_tokens) or 0
    prompt_logprobs = _optional_int(body, "prompt_logprobs", 0, settings.max_logprobs)
    if stream and prompt_logprobs:
        raise ApiError("prompt_logprobs are not available when stream is true", param="prompt_logprobs")
    request_id = body.get("request_id")
    if request_id is not None and (not isinstance(request_id, str) or not request_id.isprintable()
                                   or len(request_id) > 128):
        raise ApiError("request_id must be printable text of at most 128 characters", param="request_id")
    return Sampling(model, _params(body), max_tokens, tuple(stops), _bool(body, "ignore_eos"), stream,
                    bool((options or {}).get("include_usage")), _bool(body, "return_tokens_as_token_ids"),
                    n, best_of, tuple(stop_ids), min_tokens, _bool(body, "include_stop_str_in_output"),
                    _bool(body, "skip_special_tokens", default=True), prompt_logprobs, request_id)


def _params(body: dict[str, Any]) -> SamplingParams:
    """SamplingParams from the request's own and extra fields; each checked by its SamplingField."""
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


def _bool(body: dict[str, Any], name: str, default: bool = False) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
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
    """One token as the wire names it: its choice, its text in the reply, its name, log-probability and the best others."""

    text: str
    token: str
    logprob: float | None
    top: dict[str, float] | None
    finish: str | None = None
    index: int = 0  # the choice it belongs to
    stop_reason: str | int | None = None  # as vLLM fills it: the stop string or stop token id that ended the choice


@dataclass(frozen=True)
class Choice:
    """What is known of one choice before its first token: its prompt, and that prompt's echo and log-probs."""

    index: int
    prompt_tokens: int
    echo_text: str = ""
    echoed: tuple[Scored, ...] = ()
    prompt_logprobs: list[dict[str, dict[str, Any]] | None] | None = None


@dataclass(frozen=True)
class Prologue:
    """What is known before the first new token: the choices, the prompts' length and the seed in effect."""

    choices: tuple[Choice, ...]
    prompt_tokens: int  # all the prompts' tokens, each prompt counted once (n choices share it)
    seed: int | None = None


@dataclass
class Answer:
    """A whole reply, gathered from what the job emitted: the tokens of each choice."""

    prologue: Prologue
    tokens: dict[int, list[Scored]] = field(default_factory=dict)

    def add(self, token: Scored) -> None:
        """Keep one token of its choice."""
        self.tokens.setdefault(token.index, []).append(token)

    def of(self, index: int) -> list[Scored]:
        """The tokens of choice `index`."""
        return self.tokens.get(index, [])

    def text(self, index: int = 0) -> str:
        """The choice's text (after any echo)."""
        return "".join(t.text for t in self.of(index))

    def finish(self, index: int = 0) -> str | None:
        """Why the choice ended (OpenAI's words)."""
        tokens = self.of(index)
        return tokens[-1].finish if tokens else "length"

    def stop_reason(self, index: int = 0) -> str | int | None:
        """vLLM's stop_reason: the stop string or token id that ended the choice, else null."""
        tokens = self.of(index)
        return tokens[-1].stop_reason if tokens else None


Emit = Callable[[Any], None]


def completion_job(lm: LM, request: CompletionRequest, settings: ServeSettings, emit: Emit,
                   cancel: Cancel) -> Work | None:
    """Set up a completion on the model's thread: its prompts encoded, checked and (with echo) scored.

    The decoding itself is the returned `Work`, which the worker adds to the batch; its Prologue and then
    one Scored per token are emitted from there (None: nothing to decode, the Prologue is already out).
    """
    sampling, want = request.sampling, request.logprobs
    max_tokens = _max_tokens(lm, sampling, settings, 0)
    prompts, choices = [], []
    for p, prompt in enumerate(request.prompts):
        if isinstance(prompt, str):
            ids, text = encode_prompt(lm.tokenizer, prompt), prompt
        else:
            ids = list(prompt)
            check_ids(lm, ids)
            text = decode(lm.tokenizer, ids) if request.echo else ""
        _check_fits(lm, ids, max_tokens)
        echoed, prompt_logprobs = _prompt_pass(lm, ids, sampling, want, request.echo, chat=False)
        choices += [Choice(p * sampling.n + j, len(ids), text if request.echo else "", echoed, prompt_logprobs)
                    for j in range(sampling.n)]
        prompts.append(ids)
    return _decode(lm, prompts, choices, sampling, max_tokens, want, emit, cancel, chat=False)


def chat_job(lm: LM, request: ChatBody, settings: ServeSettings, emit: Emit, cancel: Cancel) -> Work | None:
    """Set up a chat completion on the model's thread, through the model's chat template (see completion_job)."""
    ids = encode_messages(lm.tokenizer, list(request.messages))
    sampling = request.sampling
    max_tokens = _max_tokens(lm, sampling, settings, len(ids))
    _check_fits(lm, ids, max_tokens)
    want = request.top_logprobs if request.logprobs else None
    _, prompt_logprobs = _prompt_pass(lm, ids, sampling, want, False, chat=True)
    choices = [Choice(j, len(ids), prompt_logprobs=prompt_logprobs) for j in range(sampling.n)]
    return _decode(lm, [ids], choices, sampling, max_tokens, want, emit, cancel, chat=True)


def run_here(lm: LM, work: Work | None) -> None:
    """Decode a job's `Work` to its end on this thread, alone (scripts and tests; the server batches it)."""
    from lookinside.core.decoding.batch import Batcher  # deferred: torch

    if work is not None:
        Batcher(lm, work.size).run(work)


def _max_tokens(lm: LM, sampling: Sampling, settings: ServeSettings, prompt_length: int) -> int:
    room = max(lm.context_length - prompt_length, 0)
    return sampling.max_tokens if sampling.max_tokens is not None else min(room, settings.max_tokens or room)


def _check_fits(lm: LM, ids: list[int], max_tokens: int) -> None:
    check_fits(len(ids), lm.context_length, max_tokens)


def _decode(lm: LM, prompts: list[list[int]], choices: list[Choice], sampling: Sampling, max_tokens: int,
            want: int | None, emit: Emit, cancel: Cancel, chat: bool) -> Work | None:
    """The Work that decodes `best_of` sequences per prompt and emits the `n` choices of each."""
    from lookinside.core.decoding.batch import Work  # deferred: torch

    base = sampling.params if sampling.params.greedy else sampling.params.seeded()
    prologue = Prologue(tuple(choices), sum(len(ids) for ids in prompts), base.seed if not base.greedy else None)
    if max_tokens == 0:  # echo only: the prompts scored, nothing generated
        emit(prologue)
        return None
    n, best_of = sampling.n, sampling.best_of
    run = GenerationSettings(max_new_tokens=max_tokens, stop_strings=sampling.stop, ignore_eos=sampling.ignore_eos,
                             stop_token_ids=sampling.stop_token_ids, min_new_tokens=sampling.min_tokens,
                             include_stop_string=sampling.include_stop, skip_special_tokens=sampling.skip_special)
    # Sample j of each prompt draws from seed + j, as compare's samples do: a seeded request is repeatable.
    params = [base if base.greedy else base.updated(seed=(base.seed or 0) + j) for j in range(best_of)]
    name = _namer(lm, sampling.token_ids)
    kept: dict[int, list[Scored]] = {}  # best_of > n: every sequence's tokens, until the best are known

    def scored(number: int, step: Step) -> Scored:
        logprob = _log(step.prob)
        top = None
        if want is not None:
            top = {name(i): _log(p) for i, p in step.top[:want]}
            if not chat:
                top.setdefault(name(step.token_id), logprob)  # vLLM lists the chosen token too
        prompt, j = divmod(number, best_of)
        return Scored(step.text, name(step.token_id), logprob, top, FINISH.get(step.finish or ""), prompt * n + j,
                      step.stop if step.finish == "stop" else None)

    def on_step(number: int, step: Step) -> bool:
        if cancel:
            return False  # the client went away, or the server is stopping: its slot is free at the next step
        token = scored(number, step)
        if best_of > n:
            kept.setdefault(number, []).append(token)
        else:
            emit(token)
        return True

    def on_done(error: BaseException | None) -> None:
        if error is None and best_of > n and not cancel:
            for prompt in range(len(prompts)):
                runs = sorted(range(prompt * best_of, (prompt + 1) * best_of),
                              key=lambda k: -sum(t.logprob or 0.0 for t in kept.get(k, [])))
                for j, number in enumerate(runs[:n]):
                    for token in kept.get(number, []):
                        emit(replace(token, index=prompt * n + j))

    return Work([(ids, params, run, max(want or 0, 1)) for ids in prompts], on_step,
                on_start=lambda seeds: emit(prologue), on_done=on_done, lm=lm)


def _prompt_pass(lm: LM, ids: list[int], sampling: Sampling, want: int | None, echo: bool,
                 chat: bool) -> tuple[tuple[Scored, ...], list[dict[str, dict[str, Any]] | None] | None]:
    """The echoed prompt's tokens (completions) and vLLM's prompt_logprobs, from one forward pass over the prompt."""
    if not echo and sampling.prompt_logprobs is None:
        return (), None
    logp = _prompt_logp(lm, ids)
    echoed = tuple(_prompt_scores(lm, ids, logp, want or 0, sampling.token_ids, want is not None)) if echo else ()
    wanted = sampling.prompt_logprobs
    return echoed, (_vllm_prompt_logprobs(lm, ids, logp, wanted) if wanted is not None else None)


def _prompt_logp(lm: LM, ids: list[int]) -> torch.Tensor:
    """Each prompt position's log-probabilities of the next token.  # (n-1, vocab)"""
    import torch

    from lookinside.core.inside import passes  # deferred: torch

    out = passes.forward(lm, ids)
    return torch.log_softmax(out.logits[0, :-1].float(), dim=-1)  # (n-1, vocab): position i predicts token i+1


def _prompt_scores(lm: LM, ids: list[int], logp: torch.Tensor, n: int, as_ids: bool,
                   with_top: bool) -> Iterator[Scored]:
    """The prompt's tokens with their log-probabilities given what comes before (the first: None)."""
    import torch

    name = _namer(lm, as_ids)
    chosen = logp.gather(-1, torch.tensor(ids[1:], device=logp.device).unsqueeze(-1)).squeeze(-1).tolist()  # (n-1,)
    values, best = logp.topk(max(n, 1), dim=-1) if len(ids) > 1 else (logp, logp)  # (n-1, n)
    yield Scored(name(ids[0]), name(ids[0]), None, None)
    for i, token_id in enumerate(ids[1:]):
        top = {name(int(t)): _log_value(float(v)) for t, v in zip(best[i][:n].tolist(), values[i][:n].tolist())}
        top.setdefault(name(token_id), _log_value(chosen[i]))
        yield Scored(name(token_id), name(token_id), _log_value(chosen[i]), top if with_top else None)


def _vllm_prompt_logprobs(lm: LM, ids: list[int], logp: torch.Tensor,
                          n: int) -> list[dict[str, dict[str, Any]] | None]:
    """vLLM's prompt_logprobs: per prompt token (the first: null) its id -> logprob, rank, decoded text; and the n best."""
    import torch

    out: list[dict[str, dict[str, Any]] | None] = [None]
    if len(ids) < 2:
        return out
    chosen = logp.gather(-1, torch.tensor(ids[1:], device=logp.device).unsqueeze(-1))  # (n-1, 1)
    ranks = ((logp > chosen).sum(-1) + 1).tolist()  # (n-1,)
    values, best = logp.topk(max(n, 1), dim=-1)  # (n-1, n)
    for i, token_id in enumerate(ids[1:]):
        entry = {str(token_id): {"logprob": _log_value(float(chosen[i, 0])), "rank": int(ranks[i]),
                                 "decoded_token": token_text(lm.tokenizer, token_id)}}
        for r, (t, v) in enumerate(zip(best[i][:n].tolist(), values[i][:n].tolist())):
            entry.setdefault(str(int(t)), {"logprob": _log_value(float(v)), "rank": r + 1,
                                          "decoded_token": token_text(lm.tokenizer, int(t))})
        out.append(entry)
    return out


def check_ids(lm: LM, ids: list[int]) -> None:
    """Refuse, as the request's 400, a prompt id outside the model's vocabulary (chat's routes check theirs too)."""
    from lookinside.core.inside.hooks import head_rows  # deferred: torch

    vocab = head_rows(lm.model)
    bad = next((i for i in ids if not 0 <= i < vocab), None)
    if bad is not None:
        raise ApiError(f"token id {bad} is outside this model's vocabulary of {vocab:,}", param="prompt")


def _namer(lm: LM, as_ids: bool) -> Callable[[int], str]:
    return (lambda i: f"token_id:{i}") if as_ids else (lambda i: token_text(lm.tokenizer, i))


def _log(prob: float) -> float:
    return math.log(prob) if prob > 0 else NEG_INF


def _log_value(value: float) -> float:
    return value if math.isfinite(value) else NEG_INF


# ---- answers, as OpenAI's JSON


def new_id(prefix: str, request_id: str | None = None) -> str:
    """An id as vLLM makes them: cmpl-..., chatcmpl-... (from the request's request_id when it gave one)."""
    return f"{prefix}-{request_id or uuid.uuid4().hex}"


def _usage(answer: Answer) -> dict[str, int]:
    completion = sum(len(tokens) for tokens in answer.tokens.values())
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
    """The whole /v1/completions answer: one choice per prompt and sample, in index order."""
    choices = []
    for choice in answer.prologue.choices:
        tokens = [*choice.echoed, *answer.of(choice.index)]
        logprobs = completion_logprobs(tokens) if request.logprobs is not None else None
        entry = {"index": choice.index, "text": choice.echo_text + answer.text(choice.index), "logprobs": logprobs,
                 "finish_reason": answer.finish(choice.index), "stop_reason": answer.stop_reason(choice.index)}
        if choice.prompt_logprobs is not None:
            entry["prompt_logprobs"] = choice.prompt_logprobs
        choices.append(entry)
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices,
            "usage": _usage(answer), "system_fingerprint": None}


def completion_chunk(request: CompletionRequest, tokens: list[Scored], text: str, finish: str | None, model: str,
                     rid: str, offset: int, index: int = 0, stop_reason: str | int | None = None) -> dict[str, Any]:
    """One streamed /v1/completions chunk, of choice `index`."""
    logprobs = completion_logprobs(tokens, offset) if request.logprobs is not None and tokens else None
    choice = {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish, "stop_reason": stop_reason}
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": [choice]}


def chat_logprobs(tokens: list[Scored]) -> dict[str, Any]:
    """The `logprobs` object of a chat choice."""
    def entry(token: str, logprob: float | None) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [entry(t.token, t.logprob) | {"top_logprobs": [entry(k, v) for k, v in (t.top or {}).items()]}
                        for t in tokens]}


def chat_response(request: ChatBody, answer: Answer, model: str, rid: str) -> dict[str, Any]:
    """The whole /v1/chat/completions answer, one choice per sample."""
    choices = [{"index": c.index, "message": {"role": "assistant", "content": answer.text(c.index), "tool_calls": []},
                "logprobs": chat_logprobs(answer.of(c.index)) if request.logprobs else None,
                "finish_reason": answer.finish(c.index), "stop_reason": answer.stop_reason(c.index)}
               for c in answer.prologue.choices]
    out = {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model, "choices": choices,
           "usage": _usage(answer), "system_fingerprint": None}
    if request.sampling.prompt_logprobs is not None and answer.prologue.choices:
        out["prompt_logprobs"] = answer.prologue.choices[0].prompt_logprobs
    return out


def chat_chunk(request: ChatBody, delta: dict[str, Any], tokens: list[Scored], finish: str | None, model: str,
               rid: str, index: int = 0, stop_reason: str | int | None = None) -> dict[str, Any]:
    """One streamed /v1/chat/completions chunk, of choice `index`."""
    choice = {"index": index, "delta": delta,
              "logprobs": chat_logprobs(tokens) if request.logprobs and tokens else None, "finish_reason": finish}
    if finish is not None:
        choice["stop_reason"] = stop_reason
    return {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
            "choices": [choice]}


def usage_chunk(answer: Answer, rid: str, model: str, kind: str) -> dict[str, Any]:
    """The last streamed chunk with stream_options.include_usage: no choices, the usage."""
    return {"id": rid, "object": kind, "created": int(time.time()), "model": model, "choices": [],
            "usage": _usage(answer)}
