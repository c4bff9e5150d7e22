"""Which backend a command talks to: the model loaded here, or the server --endpoint names."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.cli.options import Remote

if TYPE_CHECKING:
    from lookinside.core.backend import Backend
    from lookinside.core.spec import LoadSpec


def open_backend(spec: LoadSpec, remote: Remote) -> Backend:
    """A RemoteBackend when --endpoint is given (torch is never imported then), else the model loaded here."""
    if remote.endpoint:
        from lookinside.core import remote as core_remote

        key = remote.api_key or core_remote.api_key_from_env()
        model = spec.model if spec.model_named else None
        return core_remote.connect(core_remote.RemoteSpec(remote.endpoint, key, model))
    from lookinside.core.backend import LocalBackend
    from lookinside.ui.progress import load_with_progress

    return LocalBackend(load_with_progress(spec))
