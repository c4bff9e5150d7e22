"""Which backend a command talks to: the server --endpoint names, a running `llm serve` of the same model, or the
model loaded here."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lookinside.cli.loading import load_here
from lookinside.cli.options import Remote
from lookinside.core.backends.seam import LocalBackend
from lookinside.core.errors import RemoteError

if TYPE_CHECKING:
    from lookinside.core.backends.seam import Backend
    from lookinside.core.model.spec import LoadSpec


def open_backend(spec: LoadSpec, remote: Remote) -> Backend:
    """A server when one answers for these options (torch is never imported then), else the model loaded here."""
    served = open_server(spec, remote)
    if served is not None:
        return served
    return LocalBackend(load_here(spec))


def open_server(spec: LoadSpec, remote: Remote) -> Backend | None:
    """The server --endpoint names, else a running `llm serve` that loaded this model the same way, else None."""
    if remote.endpoint:
        from lookinside.core.backends.served import connect  # deferred: http.client, ssl (llm --help)

        return connect(remote.endpoint, remote.api_key, spec.model if spec.model_named else None)
    return None if remote.no_server else _running_server(spec)


def _running_server(spec: LoadSpec) -> Backend | None:
    """The `llm serve` that loaded this model the same way, said in one dim line on stderr; None if there is none."""
    from lookinside.serve.registry import find_server  # deferred: platformdirs, http.client (llm --help)

    record, notes = find_server(spec)
    if notes or record is not None:
        from lookinside.ui.console import stderr_console  # deferred: rich

        for note in notes:
            stderr_console().print(f"note: {note}", markup=False, highlight=False, soft_wrap=True, style="dim")
    if record is None:
        return None
    from lookinside.core.backends.served import ServedBackend, probe  # deferred: http.client, ssl (llm --help)

    try:
        info = probe(record.url, record.key)
    except RemoteError as exc:
        stderr_console().print(f"[dim]note: {exc}; running here instead[/]", highlight=False, soft_wrap=True)
        return None
    if info is None:
        return None
    stderr_console().print(f"[dim]using the server at {record.url} (llm serve, pid {record.pid}); "
                           "--no-server to run here[/]", highlight=False, soft_wrap=True)
    return ServedBackend(record.url, record.key, info)
