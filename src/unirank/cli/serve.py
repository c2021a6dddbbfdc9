"""``unirank serve …``: the model server (``models``) and the app server (``api``)."""

from __future__ import annotations

import typer

serve_app = typer.Typer(help="Run the HTTP servers.", no_args_is_help=True)
