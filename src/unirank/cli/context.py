"""What every command starts from: the settings, or a client on them, with bad settings reported once."""

from __future__ import annotations

import typer

from unirank.api import Unirank
from unirank.cli.output import print_error
from unirank.errors import ConfigurationError
from unirank.settings import Settings


def load_settings() -> Settings:
    try:
        return Settings.load()
    except ConfigurationError as exc:
        print_error(exc)
        raise typer.Exit(2) from None


def client() -> Unirank:
    return Unirank(load_settings())
