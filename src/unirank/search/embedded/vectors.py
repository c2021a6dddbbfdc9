"""Approximate kNN with usearch's HNSW over normalised vectors (cosine).

Identical vectors (the same licence file in 400 folders, a file that repeats one paragraph) are one
point in the graph: the others are kept as aliases of it. HNSW links each point to its nearest
neighbours, so hundreds of copies at distance 0 fill each other's neighbour lists and cut the rest of
the graph off: with 400 copies beside 20 distinct chunks, half the distinct ones could not be found
even with their own vector as the query; with 5,000 copies beside 2,000, 96% could not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

try:  # before usearch: onnxruntime(-openvino) 1.24 loaded after it dies in its start-up (SIGSEGV), which
    import onnxruntime  # noqa: F401  # killed ingest and search with an ONNX model version
except ImportError:  # the `onnx` extra is not installed: nothing to order
    pass
from usearch.index import Index  # noqa: E402

#: Graph degree and build breadth: on 100k near-duplicate-heavy vectors M=16 gave recall@10 0.87,
#: M=32 with expansion_add=256 gave 0.98 at ef_search=128 (build ~3x slower, still far below embedding cost).
CONNECTIVITY = 32
EXPANSION_ADD = 256
#: Cosine distance under which two vectors are copies: the same text embedded in batches of other
#: lengths differs by float rounding (~1e-7), distinct chunks by far more.
DUPLICATE_DISTANCE = 1e-5
#: The HNSW search breadth used to look a new vector's copy up in the graph.
DUPLICATE_SEARCH_BREADTH = 16


class VectorIndex:
    def __init__(self, path: Path, dims: int, *, ef_search: int = 128, view: bool = False,
                 build_threads: int = 1) -> None:
        self.path = path
        self.dims = dims
        self.build_threads = build_threads
        self.index = self._new(ef_search)
        self.ef_search = ef_search
        #: A key in the graph -> the keys whose vectors are copies of its vector (not in the graph).
        self.copies: dict[int, list[int]] = {}
        #: A copy's key -> the key in the graph it stands behind.
        self.original: dict[int, int] = {}
        if path.exists():
            if view:
                self.index.view(str(path))
            else:
                self.index.load(str(path))
            self.index.expansion_search = ef_search
            self._load_copies()
        self.dirty = False

    @property
    def copies_path(self) -> Path:
        return self.path.with_suffix(".copies.npy")

    def _new(self, ef_search: int) -> Index:
        return Index(
            ndim=self.dims,
            metric="cos",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=ef_search,
        )

    def _load_copies(self) -> None:
        if not self.copies_path.exists():  # written before copies were folded, or none
            return
        for copy, original in np.load(self.copies_path).tolist():
            self.original[copy] = original
            self.copies.setdefault(original, []).append(copy)

    def __len__(self) -> int:
        return len(self.index) + len(self.original)

    def keys(self) -> set[int]:
        """Every key held: in the graph, and copies standing behind a point of it."""
        return set(np.asarray(self.index.keys).tolist()) | set(self.original)

    def apply(self, removed_keys: Sequence[int], keys: Sequence[int], vectors: np.ndarray) -> None:
        for key in removed_keys:
            self._remove(int(key))
        if len(keys):
            self._add([int(k) for k in keys], np.ascontiguousarray(vectors, dtype=np.float32))
        self.dirty = self.dirty or bool(removed_keys) or bool(len(keys))

    def _remove(self, key: int) -> None:
        if key in self.original:  # a copy: the graph does not hold it
            original = self.original.pop(key)
            self.copies[original].remove(key)
            if not self.copies[original]:
                del self.copies[original]
        elif self.index.contains(key):
            copies = self.copies.pop(key, [])
            if copies:  # the first copy takes the point's place in the graph
                vector = self.index.get(key)
                successor, rest = copies[0], copies[1:]
                del self.original[successor]
                for copy in rest:
                    self.original[copy] = successor
                if rest:
                    self.copies[successor] = rest
                self.index.remove(key)
                self.index.add(successor, vector)
            else:
                self.index.remove(key)

    def _add(self, keys: list[int], vectors: np.ndarray) -> None:
        """Add the vectors that are new to the graph; record the rest as copies of what is there."""
        vectors = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        matches = self._nearest_in_graph(vectors)
        firsts: dict[bytes, int] = {}  # a rounded vector -> the batch's first key with it
        new_keys, new_rows = [], []
        for row, key in enumerate(keys):
            if matches is not None and matches[row] is not None:
                self._record_copy(key, matches[row])
                continue
            signature = np.round(vectors[row], 5).tobytes()
            if signature in firsts:
                self._record_copy(key, firsts[signature])
                continue
            firsts[signature] = key
            new_keys.append(key)
            new_rows.append(row)
        if new_keys:
            self.index.add(np.asarray(new_keys, dtype=np.uint64), np.ascontiguousarray(vectors[new_rows]),
                           threads=self.build_threads)

    def _nearest_in_graph(self, vectors: np.ndarray) -> list[int | None] | None:
        """Each vector's copy in the graph, where it has one."""
        if len(self.index) == 0:
            return None
        # A narrow search finds a copy at distance 0: at the search's own breadth (256), looking for
        # copies made building 22k vectors take 64 s against a plain index's 40 s; at 16, 39.5 s.
        self.index.expansion_search = DUPLICATE_SEARCH_BREADTH
        try:
            found = self.index.search(vectors, 1, threads=self.build_threads)
        finally:
            self.index.expansion_search = self.ef_search
        keys = np.asarray(found.keys).reshape(len(vectors), -1)[:, 0]
        distances = np.asarray(found.distances).reshape(len(vectors), -1)[:, 0]
        return [int(k) if d <= DUPLICATE_DISTANCE else None for k, d in zip(keys, distances)]

    def _record_copy(self, key: int, original: int) -> None:
        self.original[key] = original
        self.copies.setdefault(original, []).append(key)

    def clear(self) -> None:
        self.index = self._new(self.ef_search)
        self.copies, self.original = {}, {}
        self.dirty = True

    def save(self) -> None:
        """Write to temporary files and rename: readers see the old or the new index, never half.
        The copies go first: derived.json, written after both, says whether they belong together."""
        pairs = np.asarray(list(self.original.items()), dtype=np.uint64).reshape(-1, 2)
        with open(self.copies_path.with_suffix(".tmp"), "wb") as out:
            np.save(out, pairs)
        os.replace(self.copies_path.with_suffix(".tmp"), self.copies_path)
        tmp = self.path.with_suffix(".tmp")
        self.index.save(str(tmp))
        os.replace(tmp, self.path)
        self.dirty = False

    def search(self, vector: np.ndarray, top_k: int) -> list[tuple[int, float]]:
        if len(self.index) == 0:
            return []
        matches = self.index.search(np.asarray(vector, dtype=np.float32), min(top_k, len(self.index)))
        hits: list[tuple[int, float]] = []
        for key, distance in zip(matches.keys, matches.distances):
            score = 1.0 - float(distance)
            hits.extend((k, score) for k in [int(key), *self.copies.get(int(key), [])])
            if len(hits) >= top_k:
                break
        return hits[:top_k]
