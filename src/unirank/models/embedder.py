"""Bi-encoder embedders: text in, L2-normalised float32 vectors out."""

from __future__ import annotations

from typing import Any, Callable, Iterable, Protocol, Sequence

import numpy as np

from unirank.errors import DimensionMismatchError, EmbedderMismatchError, ModelLoadError
from unirank.models.backends import backend_kwargs
from unirank.models.fixed_shape import use_fixed_shape_session
from unirank.search.types import FOLDER_VERSION, ModelSignature, is_folder_version


class Embedder(Protocol):
    signature: ModelSignature
    #: Other models (``NAME@VERSION``) whose vectors this one's are interchangeable with: an optimized
    #: copy and its source (``unirank.registry.lineage``).
    same_vectors_as: frozenset[str]
    #: Tokens the model reads; longer input would be cut, so chunks are made to fit.
    max_seq_length: int

    @property
    def dims(self) -> int: ...

    @property
    def tokenizer(self) -> Any: ...

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray: ...

    def embed_query(self, text: str) -> np.ndarray: ...


def loaded(embedder: Embedder | Callable[[], Embedder]) -> Embedder:
    """The embedder itself, or what its loader gives: a job that takes a loader checks its cheap inputs
    (names, paths, label files) before the model's seconds-long load."""
    return embedder if hasattr(embedder, "embed_documents") else embedder()  # type: ignore[operator,return-value]


def makes_vectors_of(embedder: Embedder, index_model: ModelSignature) -> bool:
    """Whether ``embedder``'s vectors are comparable with those of an index made by ``index_model``."""
    mine = embedder.signature
    if index_model.dims != mine.dims:
        return False
    if str(index_model) == str(mine) or str(index_model) in embedder.same_vectors_as:
        return True
    # An index made before folder models were told apart by their files names the folder alone.
    return (index_model.version == FOLDER_VERSION and mine.name == index_model.name
            and is_folder_version(mine.version))


def require_comparable_vectors(index: str, index_model: ModelSignature, embedder: Embedder) -> None:
    """Refuse to query or extend ``index`` with an embedder whose vectors are not comparable with its own."""
    mine = embedder.signature
    if index_model.dims != mine.dims:
        raise DimensionMismatchError(index, str(index_model), index_model.dims, str(mine), mine.dims)
    if not makes_vectors_of(embedder, index_model):
        raise EmbedderMismatchError(index, str(index_model), str(mine))


def device_unusable(device: str) -> str | None:
    """Why this process's torch cannot put a tensor on ``device`` (``cuda`` on a CPU-only build: "Torch not
    compiled with CUDA enabled"; ``cuda:3`` on a one-GPU machine), or None when it can."""
    if device == "cpu":
        return None
    import torch

    try:
        torch.empty(0, device=device)
    except Exception as exc:  # AssertionError, RuntimeError, NotImplementedError, as the backend has it
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def raise_if_device_unusable(role: str, path: str, device: str, exc: Exception) -> None:
    """A model that failed to load on a device torch cannot use is said to be the device setting's fault: the
    general advice (give a local model folder or a hub id) sent users after the model instead."""
    why = device_unusable(device)
    if why is not None:
        raise ModelLoadError(
            f"Cannot load {role} {path!r} on device {device!r}: {why.rstrip('.')}. embedder.device (where the "
            "embedder and a local reranker run) names a device this machine's torch cannot use: set it to cpu "
            "(UNIRANK_EMBEDDER__DEVICE=cpu), or install a torch built for that device."
        ) from exc


class SentenceTransformerEmbedder:
    """A sentence-transformers model loaded in this process."""

    def __init__(
        self,
        path: str,
        *,
        name: str,
        version: str,
        device: str = "cpu",
        batch_size: int = 16,
        local_files_only: bool = True,
        query_threads: int = 0,
        backend: str = "torch",
        onnx_file: str | None = None,
        dtype: str | None = None,
        onnx_provider: str = "cpu",
        padding_free: bool = True,
        openvino_fixed_shape: bool = True,
        same_vectors_as: Iterable[str] = (),
    ) -> None:
        from sentence_transformers import SentenceTransformer

        from unirank.models.padding_free import padding_free_encoder

        try:
            loaded_with = backend_kwargs(path, backend, onnx_file, dtype, device, onnx_provider)
            self.model = SentenceTransformer(path, device=device, local_files_only=local_files_only,
                                             **loaded_with)
        except ModelLoadError:
            raise
        except Exception as exc:  # the library raises OSError, ValueError, HF errors...
            raise_if_device_unusable("embedder", path, device, exc)
            raise ModelLoadError(
                f"Cannot load embedder {path!r}: {str(exc).rstrip('.')}. Give a local model folder, `base` for the "
                "bundled all-MiniLM-L6-v2, or a hub id on a machine that can reach the hub."
            ) from exc
        self.path = path
        self.backend = backend
        self.dtype = dtype or "float32"
        self.batch_size = batch_size
        self.query_threads = query_threads
        self.max_seq_length = int(self.model.max_seq_length)
        self.signature = ModelSignature(name=name, version=version, dims=self.dims)
        self.same_vectors_as = frozenset(same_vectors_as)
        #: Set when the model is a plain BERT with mean pooling (see unirank.models.padding_free).
        self.padding_free = padding_free_encoder(self.model) if padding_free and backend == "torch" else None
        self.fixed_shape = use_fixed_shape_session(self.model, path, loaded_with, enabled=openvino_fixed_shape)

    @property
    def dims(self) -> int:
        return int(self.model.get_embedding_dimension())

    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dims), dtype=np.float32)
        if self.padding_free is not None:
            return self.padding_free.encode(list(texts), self.batch_size)
        return self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        ).astype(np.float32, copy=False)

    def embed_query(self, text: str) -> np.ndarray:
        """Runs on ``query_threads`` threads when set: with other work on the machine, one thread
        was far steadier for a CISI query (p50 13.8 -> 6.7 ms, p95 50 -> 8 ms on 2 cores)."""
        import torch

        previous = torch.get_num_threads()
        if self.query_threads and self.query_threads != previous:
            torch.set_num_threads(self.query_threads)
            try:
                return self.embed_documents([text])[0]
            finally:
                torch.set_num_threads(previous)
        return self.embed_documents([text])[0]
