"""Typed errors for the mistakes a user can make; the CLI turns each into one line.

Nothing here imports torch, so the CLI edge can catch these cheaply.
"""

from __future__ import annotations


class LookinsideError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1


class BadInput(LookinsideError):
    """An option or argument value that cannot be used."""

    exit_code = 2


class EmptyPrompt(BadInput):
    """The prompt has no text."""


class ContextOverflow(BadInput):
    """The prompt (plus what should be generated) does not fit the model's context."""


class ModelNotFound(LookinsideError):
    """No model by that name: not `tiny`, not a directory, not on the Hub."""


class ModelUnavailable(LookinsideError):
    """The model exists on the Hub, but it cannot be reached and is not cached."""


class NotACausalLM(LookinsideError):
    """The model loads, but it is not a text-generating (causal) language model."""


class CorruptWeights(LookinsideError):
    """A weights file is damaged or truncated."""


class DeviceUnavailable(LookinsideError):
    """The device asked for (CUDA, MPS) is not there."""


class OutOfMemory(LookinsideError):
    """The model or its activations do not fit in memory."""


def is_out_of_memory(exc: BaseException) -> bool:
    """True for torch's CUDA/MPS out-of-memory errors (by name: no torch import here) and a plain MemoryError."""
    return (isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError"
            or (isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()))


class RemoteError(LookinsideError):
    """An OpenAI-compatible server could not be used: not reachable, not compatible, or it refused."""


class StreamBroken(RemoteError):
    """The server stopped sending in the middle of a reply; what came before is kept."""
