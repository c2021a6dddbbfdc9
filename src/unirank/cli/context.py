"""What every command starts from: the settings, or a client on them, with bad settings reported once."""

from __future__ import annotations

import typer
from rich.markup import escape

from unirank.api import Unirank
from unirank.cli.output import errors
from unirank.errors import ConfigurationError
from unirank.settings import Settings


def load_settings() -> Settings:
    try:
        return Settings.load()
    except ConfigurationError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None


def client() -> Unirank:
    return Unirank(load_settings())
