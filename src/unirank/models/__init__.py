"""Embedders and rerankers behind small Protocols, loaded from the bundled base model or a path."""

from unirank.models.embedder import Embedder, SentenceTransformerEmbedder
from unirank.models.loading import BASE_MODEL_NAME, load_embedder, load_reranker, resolve_model_path
from unirank.models.reranker import BiEncoderReranker, CrossEncoderReranker, Reranker

__all__ = [
    "BASE_MODEL_NAME",
    "BiEncoderReranker",
    "CrossEncoderReranker",
    "Embedder",
    "Reranker",
    "SentenceTransformerEmbedder",
    "load_embedder",
    "load_reranker",
    "resolve_model_path",
]
