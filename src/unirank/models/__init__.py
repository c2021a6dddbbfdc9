"""Embedders and rerankers behind small Protocols (embedder.py, reranker.py), loaded by loading.py."""
