"""Which backend a command talks to: the model loaded here, the server --endpoint names, or a running `llm serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.cli.options import Remote

if TYPE_CHECKING:
    from lookinside.core.backend import Backend
    from lookinside.core.spec import LoadSpec


def open_backend(spec: LoadSpec, remote: Remote) -> Backend:
    """The server --endpoint names (a `llm serve` shows every view; another server what it can), else the model here.

    Torch is never imported for a server.
    """
    if remote.endpoint:
        from lookinside.core.served import connect

        return connect(remote.endpoint, remote.api_key, spec.model if spec.model_named else None)
    from lookinside.core.backend import LocalBackend
    from lookinside.ui.progress import load_with_progress

    return LocalBackend(load_with_progress(spec))
