"""Which OpenAI-compatible server is at an endpoint (vLLM, llama.cpp, llama-cpp-python, Ollama), from its answers.

The kind decides what may be asked and names the server in refusals:
- vLLM gives token ids on request and takes `top_k`, `min_p`, `repetition_penalty` and `ignore_eos`;
- llama.cpp's `llama-server` takes the same under its own names (`repeat_penalty`), gives the ids of
  the tokens it returns, tokenizes a prompt on `/tokenize`, and refuses `echo`;
- llama-cpp-python, Ollama and the rest get OpenAI's own fields only.
It is read from what the server says, never from one field: `/v1/models` (vLLM adds
`max_model_len`, llama-server a `meta` block with `n_ctx`, llama-cpp-python an empty `permissions`
list and the owner "me"), then a few cheap GETs on the server's root: llama-server's `/props` (its
context again, `n_ctx`), Ollama's `/api/version`, vLLM's `/version`. Nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lookinside.core import errors
from lookinside.core.backends.http import call, server_root
from lookinside.core.sampling_params import FIELDS

VLLM, LLAMA_CPP, LLAMA_CPP_PYTHON, OLLAMA, UNKNOWN = "vLLM", "llama.cpp", "llama-cpp-python", "Ollama", "unknown"
LOOKINSIDE = "lookinside"  # `llm serve`: vLLM's dialect (ids on request, the same extra fields)
PROBE_TIMEOUT_S = 5.0
VLLM_MAX_LOGPROBS = 20  # vLLM's default --max-logprobs
# The request fields beyond OpenAI's (core.sampling_params's "extra" ones, and ignore_eos) as each server names them.
EXTRA_FIELDS = {
    VLLM: {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repetition_penalty", "ignore_eos": "ignore_eos"},
    # `llm serve` reads every sampler of FIELDS by its own name (serve/openai_api.py), a new one included
    LOOKINSIDE: {**{f.name: f.name for f in FIELDS if f.api == "extra"}, "ignore_eos": "ignore_eos"},
    LLAMA_CPP: {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repeat_penalty", "ignore_eos": "ignore_eos"},
}


@dataclass(frozen=True)
class ServerKind:
    """What answers at an endpoint, and the facts only its own routes give."""

    name: str  # one of VLLM, LOOKINSIDE, LLAMA_CPP, LLAMA_CPP_PYTHON, OLLAMA, UNKNOWN
    owner: str = ""  # /v1/models' owned_by, as the server spelled it
    context_length: int | None = None  # the context the server runs with, where it tells (llama.cpp's n_ctx)
    version: str | None = None

    @property
    def is_vllm(self) -> bool:
        """vLLM, or `llm serve` speaking its dialect: token ids on request (`return_tokens_as_token_ids`)."""
        return self.name in (VLLM, LOOKINSIDE)

    @property
    def max_logprobs(self) -> int | None:
        """The most log-probabilities a request may ask for where the server caps them (vLLM's --max-logprobs, 20 by
        default, and `llm serve`'s, the same); None where no cap is known (llama.cpp's servers)."""
        return VLLM_MAX_LOGPROBS if self.is_vllm else None

    @property
    def streams_end_token(self) -> bool:
        """Whether a stream's last step is the end token itself (vLLM, `llm serve`: finish "eos", no text); llama.cpp's
        servers end the reply without it, on the last token they show (finish "stop")."""
        return self.is_vllm

    @property
    def echoes(self) -> bool:
        """Whether /v1/completions may be asked to send the prompt's tokens back (llama-server refuses `echo`)."""
        return self.name != LLAMA_CPP

    @property
    def tokenizes(self) -> bool:
        """Whether the server tokenizes a prompt on request, with ids and pieces (llama-server's /tokenize)."""
        return self.name == LLAMA_CPP

    def extra_fields(self) -> dict[str, str] | None:
        """lookinside's extra request fields -> this server's names for them; None where it takes none."""
        return EXTRA_FIELDS.get(self.name)

    def describe(self) -> str:
        """"llama.cpp", "vLLM 0.11.0", "an unknown server (owned_by 'me')"."""
        if self.name == UNKNOWN:
            return f"an unknown server (owned_by {self.owner!r})" if self.owner else "an unknown server"
        return f"{self.name} {self.version}" if self.version else self.name


def detect(base_url: str, model: dict[str, Any], api_key: str | None = None,
           timeout_s: float = PROBE_TIMEOUT_S) -> ServerKind:
    """The kind of server at `base_url` (ending in /v1), given the /v1/models entry of the model in use."""
    owner = str(model.get("owned_by") or "")
    root = server_root(base_url)
    timeout = min(timeout_s, PROBE_TIMEOUT_S)
    if owner == LOOKINSIDE:
        return ServerKind(LOOKINSIDE, owner, _int(model.get("max_model_len")))
    if owner == "vllm" and "max_model_len" in model:
        return ServerKind(VLLM, owner, _int(model.get("max_model_len")))
    meta = model.get("meta") if isinstance(model.get("meta"), dict) else {}
    props, headers = _get(root, "/props", api_key, timeout)
    if isinstance(props, dict) and ("default_generation_settings" in props or "llama.cpp" in headers.get("server", "")):
        return ServerKind(LLAMA_CPP, owner, _int(meta.get("n_ctx")) or _props_context(props), _str(props.get("build_info")))
    ollama, _ = _get(root, "/api/version", api_key, timeout)
    if isinstance(ollama, dict) and "version" in ollama:
        return ServerKind(OLLAMA, owner, None, _str(ollama.get("version")))
    if owner == "me" and "permissions" in model:
        return ServerKind(LLAMA_CPP_PYTHON, owner)
    version, _ = _get(root, "/version", api_key, timeout)
    if owner == "vllm" or (isinstance(version, dict) and "max_model_len" in model):
        return ServerKind(VLLM, owner, _int(model.get("max_model_len")), _str((version or {}).get("version")))
    return ServerKind(UNKNOWN, owner)


def _props_context(props: dict[str, Any]) -> int | None:
    """llama-server's context: `default_generation_settings.n_ctx` (older builds: a top-level `n_ctx`)."""
    settings = props.get("default_generation_settings")
    return _int(settings.get("n_ctx")) if isinstance(settings, dict) and "n_ctx" in settings else _int(props.get("n_ctx"))


def _get(root: str, path: str, api_key: str | None, timeout: float) -> tuple[Any, dict[str, str]]:
    """The JSON at `root + path` and the response's headers (lower-cased), or (None, {}) for anything else."""
    headers: dict[str, str] = {}
    try:
        return call(root, path, api_key, None, timeout, optional=True, headers_seen=headers, limit=1_000_000), headers
    except errors.LookinsideError:  # a probe: a server without the route, or not answering, is simply not that kind
        return None, {}


def _int(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and value > 0 else None


def _str(value: Any) -> str | None:
    return str(value) if value else None
