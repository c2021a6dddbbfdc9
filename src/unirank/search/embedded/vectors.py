"""Approximate kNN with usearch's HNSW over normalised vectors (cosine)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from usearch.index import Index

#: Graph degree and build breadth: on 100k near-duplicate-heavy vectors M=16 gave recall@10 0.87,
#: M=32 with expansion_add=256 gave 0.98 at ef_search=128 (build ~3x slower, still far below embedding cost).
CONNECTIVITY = 32
EXPANSION_ADD = 256


class VectorIndex:
    def __init__(self, path: Path, dims: int, *, ef_search: int = 128, view: bool = False,
                 build_threads: int = 1) -> None:
        self.path = path
        self.dims = dims
        self.build_threads = build_threads
        self.index = self._new(ef_search)
        self.ef_search = ef_search
        if path.exists():
            if view:
                self.index.view(str(path))
            else:
                self.index.load(str(path))
            self.index.expansion_search = ef_search
        self.dirty = False

    def _new(self, ef_search: int) -> Index:
        return Index(
            ndim=self.dims,
            metric="cos",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=ef_search,
        )

    def __len__(self) -> int:
        return len(self.index)

    def apply(self, removed_keys: Sequence[int], keys: Sequence[int], vectors: np.ndarray) -> None:
        if removed_keys:
            present = [k for k in removed_keys if self.index.contains(k)]
            if present:
                self.index.remove(np.asarray(present, dtype=np.uint64))
        if len(keys):
            self.index.add(np.asarray(keys, dtype=np.uint64), np.ascontiguousarray(vectors, dtype=np.float32),
                           threads=self.build_threads)
        self.dirty = self.dirty or bool(removed_keys) or bool(len(keys))

    def clear(self) -> None:
        self.index = self._new(self.ef_search)
        self.dirty = True

    def save(self) -> None:
        """Write to a temporary file and rename: readers see the old or the new index, never half."""
        tmp = self.path.with_suffix(".tmp")
        self.index.save(str(tmp))
        os.replace(tmp, self.path)
        self.dirty = False

    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[int, float]]:
        if len(self.index) == 0:
            return []
        matches = self.index.search(np.asarray(vector, dtype=np.float32), min(top_k, len(self.index)))
        return [(int(k), 1.0 - float(d)) for k, d in zip(matches.keys, matches.distances)]
