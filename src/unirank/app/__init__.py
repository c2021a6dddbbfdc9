"""The unirank app server: the chat API (OpenAI-compatible and sessions) and its web page."""

from unirank.app.server import create_app

__all__ = ["create_app"]
