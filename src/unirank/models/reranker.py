"""Rerankers rescore a short list of (query, passage) candidates more carefully than retrieval did."""

from __future__ import annotations

from typing import Protocol, Sequence

import json
from pathlib import Path

import numpy as np

from unirank.errors import ModelLoadError
from unirank.models.backends import backend_kwargs
from unirank.models.embedder import Embedder, raise_if_device_unusable
from unirank.models.fixed_shape import use_fixed_shape_session


BLEND_FILE = "unirank_reranker.json"


class Reranker(Protocol):
    name: str
    #: How much the reranker's score counts against the first-stage rank (1.0: it alone).
    blend_weight: float

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        """Higher is more relevant; one score per passage, in the passages' order."""
        ...

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One score per (query, passage) pair; the queries may differ."""
        ...


class CrossEncoderReranker:
    """A cross-encoder reads query and passage together: the usual, strongest reranker."""

    def __init__(self, path: str, *, name: str, device: str = "cpu", batch_size: int = 32,
                 local_files_only: bool = True, backend: str = "torch", onnx_file: str | None = None,
                 dtype: str | None = None, onnx_provider: str = "cpu", openvino_fixed_shape: bool = True) -> None:
        from sentence_transformers import CrossEncoder

        try:
            loaded_with = backend_kwargs(path, backend, onnx_file, dtype, device, onnx_provider)
            self.model = CrossEncoder(path, device=device, local_files_only=local_files_only,
                                      **loaded_with)
        except ModelLoadError:
            raise
        except Exception as exc:
            raise_if_device_unusable("cross-encoder", path, device, exc)
            raise ModelLoadError(f"Cannot load cross-encoder {path!r}: {exc}") from exc
        self.name = name
        self.batch_size = batch_size
        self.blend_weight = stored_blend_weight(path)
        self.fixed_shape = use_fixed_shape_session(self.model, path, loaded_with, enabled=openvino_fixed_shape)

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        return self.score_pairs([(query, p) for p in passages])

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """Pairs from several queries in one forward pass, through the model's own activation (a sigmoid
        for a one-logit head, as sentence-transformers sets it): a probability, what the chat's
        threshold and the blend weight chosen at training time were set on."""
        if not pairs:
            return []
        import torch

        scores = self.model.activation_fn(torch.from_numpy(self.logits(pairs)))
        return [float(s) for s in scores.reshape(-1)]

    def logits(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """The head's raw outputs, one per pair: what TEI's ``raw_scores`` returns."""
        if not pairs:
            return np.zeros(0, dtype=np.float32)
        from torch.nn import Identity

        scores = self.model.predict(list(pairs), batch_size=self.batch_size, show_progress_bar=False,
                                    activation_fn=Identity())
        return np.asarray(scores, dtype=np.float32).reshape(-1)


class BiEncoderReranker:
    """Rescores with a bi-encoder's cosine similarity over the full passage.

    This is what the bundled base model can do before a cross-encoder is fine-tuned: it
    re-orders the BM25 side of the fused list by meaning. A trained cross-encoder replaces it.
    """

    #: Its score is a cosine in [-1, 1], not a probability: the chat holds it to chat.min_score_cosine (as a
    #: RemoteReranker serving a bi-encoder says it does too).
    scores_cosine = True

    def __init__(self, embedder: Embedder, *, name: str) -> None:
        self.embedder = embedder
        self.name = name
        self.blend_weight = 1.0

    def score(self, query: str, passages: Sequence[str]) -> list[float]:
        if not passages:
            return []
        q = self.embedder.embed_query(query)
        docs = self.embedder.embed_documents(passages)
        return [float(s) for s in docs @ q]

    def score_pairs(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        queries = sorted({q for q, _ in pairs})
        q_vecs = dict(zip(queries, self.embedder.embed_documents(queries)))
        docs = self.embedder.embed_documents([p for _, p in pairs])
        return [float(doc @ q_vecs[q]) for doc, (q, _) in zip(docs, pairs)]


def stored_blend_weight(path: str) -> float:
    """The weight chosen on validation at training time; 1.0 for a cross-encoder from elsewhere."""
    marker = Path(path) / BLEND_FILE
    if marker.exists():
        return float(json.loads(marker.read_text()).get("blend_weight", 1.0))
    return 1.0
