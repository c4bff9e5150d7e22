"""Which backend a command talks to: the model loaded here, the server --endpoint names, or a running `llm serve`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.cli.options import Remote

if TYPE_CHECKING:
    from lookinside.core.backend import Backend
    from lookinside.core.spec import LoadSpec


def open_backend(spec: LoadSpec, remote: Remote) -> Backend:
    """A RemoteBackend for --endpoint, or for a running `llm serve` of the same model (torch is never imported
    then); else the model loaded here."""
    if remote.endpoint:
        from lookinside.core import remote as core_remote

        key = remote.api_key or core_remote.api_key_from_env()
        model = spec.model if spec.model_named else None
        return core_remote.connect(core_remote.RemoteSpec(remote.endpoint, key, model))
    served = None if remote.no_server else _running_server(spec)
    if served is not None:
        return served
    from lookinside.core.backend import LocalBackend
    from lookinside.ui.progress import load_with_progress

    return LocalBackend(load_with_progress(spec))


def _running_server(spec: LoadSpec) -> Backend | None:
    """The `llm serve` that loaded this model the same way, said in one dim line on stderr; None if there is none."""
    from lookinside.serve.registry import find_server

    record = find_server(spec)
    if record is None:
        return None
    from lookinside.core import remote as core_remote
    from lookinside.ui.console import stderr_console

    stderr_console().print(f"[dim]using the server at {record.url} (llm serve, pid {record.pid}); "
                           "--no-server to run here[/]", highlight=False, soft_wrap=True)
    return core_remote.connect(core_remote.RemoteSpec(record.url, record.key, None))
