"""The ``unirank`` command line (Typer + Rich)."""
