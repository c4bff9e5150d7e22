"""`llm serve`: load the model once and serve it over HTTP (OpenAI-compatible, as vLLM does)."""

from typing import Annotated, Optional

import typer

from lookinside.cli.loading import load_here
from lookinside.cli.options import model_options
from lookinside.core.errors import BadInput
from lookinside.core.model.spec import LoadSpec
from lookinside.serve.settings import ServeSettings, origins_from_env

SERVER_PANEL = "Server"


@model_options
def serve(
    host: Annotated[str, typer.Option("--host", metavar="HOST", rich_help_panel=SERVER_PANEL,
                                      help="Address to listen on; other than loopback it needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", metavar="PORT", rich_help_panel=SERVER_PANEL,
                                      help="Port to listen on (0: any free one).")] = 8765,
    api_key: Annotated[Optional[str], typer.Option(
        "--api-key", metavar="KEY", envvar="LOOKINSIDE_SERVE_KEY", show_envvar=True, rich_help_panel=SERVER_PANEL,
        show_default=False, help="Refuse requests without `Authorization: Bearer KEY`; never printed.")] = None,
    queue: Annotated[int, typer.Option("--queue", metavar="N", rich_help_panel=SERVER_PANEL,
                                       help="Requests that may wait for the model; one more is answered 503.")] = 32,
    max_tokens: Annotated[Optional[int], typer.Option(
        "--max-tokens", metavar="N", rich_help_panel=SERVER_PANEL, show_default=False,
        help="The most tokens one request may generate [default: the context].")] = None,
    max_logprobs: Annotated[int, typer.Option("--max-logprobs", metavar="N", rich_help_panel=SERVER_PANEL,
                                              help="The most logprobs / top_logprobs a request may ask.")] = 20,
    max_body: Annotated[int, typer.Option("--max-body", metavar="BYTES", rich_help_panel=SERVER_PANEL,
                                          help="The largest request body accepted.")] = 1_000_000,
    allow_origin: Annotated[Optional[list[str]], typer.Option(
        "--allow-origin", metavar="ORIGIN", rich_help_panel=SERVER_PANEL, show_default=False,
        help="A web page's origin (http://host:port, or *) let in beside the server's own; repeatable. "
             "Also $LOOKINSIDE_ORIGINS, comma-separated.")] = None,
    allow_host: Annotated[Optional[list[str]], typer.Option(
        "--allow-host", metavar="HOST[:PORT]", rich_help_panel=SERVER_PANEL, show_default=False,
        help="A Host header accepted beside loopback and --host (a proxy's name); repeatable.")] = None,
    read_timeout: Annotated[float, typer.Option("--read-timeout", metavar="SECONDS", rich_help_panel=SERVER_PANEL,
                                                help="A request's headers and body must arrive within this.")] = 10.0,
    max_connections: Annotated[int, typer.Option(
        "--max-connections", metavar="N", rich_help_panel=SERVER_PANEL,
        help="Open connections; past it the oldest one not being answered is closed.")] = 256,
    debug: Annotated[bool, typer.Option("--debug", rich_help_panel=SERVER_PANEL,
                                        help="Log an unexpected error's traceback, not only its one line.")] = False,
    decoder: Annotated[str, typer.Option(
        "--decoder", metavar="WHERE", rich_help_panel=SERVER_PANEL,
        help="Where the batch decodes: process (its own, sharing the weights; more tokens/s with many clients), "
             "thread (the model's), or auto (process where the model can share its weights: on the CPU).")] = "auto",
    open_page: Annotated[bool, typer.Option("--open", rich_help_panel=SERVER_PANEL,
                                            help="Open the web inspector (at /) in the browser.")] = False,
    *,
    spec: LoadSpec,
) -> None:
    """Load the model once and serve it: /v1/completions, /v1/chat/completions, /v1/models, /health.

    Commands with the same model options then use this server (--no-server runs them here).
    """
    settings = ServeSettings(spec=spec, host=host, port=port, api_key=api_key, queue=queue, max_tokens=max_tokens,
                             max_logprobs=max_logprobs, max_body_bytes=max_body,
                             allow_origins=(*(allow_origin or ()), *origins_from_env()),
                             allow_hosts=tuple(allow_host or ()), read_timeout_s=read_timeout,
                             max_connections=max_connections, debug=debug, decoder=decoder)
    try:
        from lookinside.serve import server  # deferred: uvicorn
    except ImportError:
        raise BadInput('llm serve needs starlette and uvicorn: pip install "lookinside[serve]"') from None
    from lookinside.serve.web import open_in_browser  # deferred: starlette
    from lookinside.ui.console import stderr_console  # deferred: rich

    sock = server.bind(settings)
    lm = load_here(spec)
    server.quiet_libraries()
    server.serve(lm, settings, sock, lambda line: stderr_console().print(line, markup=False, highlight=False,
                                                                          soft_wrap=True),
                 on_ready=open_in_browser if open_page else None)
    server.exit_now()
