"""``unirank serve …``: the model server (``models``) and the app server (``api``)."""

from __future__ import annotations

import errno
import socket
from typing import Annotated, Optional

import typer

from unirank.cli.context import load_settings
from unirank.cli.output import counted, errors, fail
from unirank.errors import ConfigurationError, UnirankError

serve_app = typer.Typer(help="Run the HTTP servers: models (embeddings, rerank) and api (chat, search, web page).",
                        no_args_is_help=True)


def refuse_busy_port(host: str, port: int) -> None:
    """Found out before the models load, not after: uvicorn only tries the port once it has started."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigurationError(f"Cannot listen on {host!r}: {exc.strerror}. Give --host an address of this "
                                 "machine, e.g. 127.0.0.1 or 0.0.0.0.") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds: TIME_WAIT is no obstacle
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRNOTAVAIL:  # the port is not the trouble
                raise ConfigurationError(f"Cannot listen on {host}: {exc.strerror} (it is not an address of this "
                                         "machine). Give --host one of its addresses, e.g. 127.0.0.1 or 0.0.0.0 "
                                         "for all of them.") from None
            if exc.errno == errno.EACCES:
                raise ConfigurationError(f"Cannot listen on {host}:{port}: {exc.strerror} (ports below 1024 need "
                                         "privileges). Choose a --port above 1023.") from None
            raise ConfigurationError(f"Cannot listen on {host}:{port}: {exc.strerror}. Stop what listens there "
                                     "(another unirank server?) or choose another --port.") from None


@serve_app.command("models")
def serve_models(
    model: Annotated[Optional[list[str]], typer.Option(
        "--model", "-m", help="Model to serve: base, a folder, a registry ref such as NAME@prod, or a hub id (ORG/NAME); "
        "repeatable. "
        "Default: serving.models, else embedder.model and reranker.model.")] = None,
    replicas: Annotated[Optional[int], typer.Option(min=1, help="Worker processes behind the one port.")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default serving.port).")] = None,
    host: Annotated[Optional[str], typer.Option(help="Interface (default serving.host).")] = None,
) -> None:
    """Serve embeddings and reranking over HTTP (OpenAI, TEI and Cohere APIs)."""
    from unirank.serving.auth import TokenStore
    from unirank.serving.catalog import ModelCatalog, default_refs
    from unirank.serving.runner import run_model_server

    settings = load_settings()
    refs = list(model) if model else default_refs(settings)
    replicas = settings.serving.replicas if replicas is None else replicas  # both are held to >= 1
    host, port = host or settings.serving.host, port or settings.serving.port
    try:  # a ref that names nothing is refused here; a model that then fails to load is reported on /health
        ModelCatalog(settings, refs).check_refs()
        # a blank key, or a keys file that is missing, does not parse or is not UTF-8: an `error:` line
        TokenStore(settings.serving.api_keys, settings.serving.api_keys_file)
        refuse_busy_port(host, port)
    except UnirankError as exc:
        fail(exc)
    errors.print(f"unirank model server on http://{host}:{port} ({counted(replicas, 'replica')}): "
                 f"{', '.join(refs)}. POST /v1/embeddings, /embed, /rerank, /v1/rerank; "
                 f"GET /v1/models, /health, /ready, /metrics; the OpenAPI spec at /docs", markup=False, soft_wrap=True)
    run_model_server(settings, refs, host=host, port=port, replicas=replicas)
