"""The HTTP model server: the registry's embedders and rerankers behind OpenAI/TEI/Cohere APIs."""

from unirank.serving.app import create_app

__all__ = ["create_app"]
