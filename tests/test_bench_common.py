"""The benchmarks' own checks (bench/): helpers of bench/_common.py and the scripts' command lines.

No model is loaded and no CISI run starts: these take seconds.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def import_bench(name: str):
    """A bench module, imported without leaving its environment defaults (TOKENIZERS_PARALLELISM ...) behind."""
    saved_env, saved_path = dict(os.environ), list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


@pytest.fixture(scope="module")
def common():
    return import_bench("_common")


def unit_vectors(rows: int = 5, dims: int = 384) -> np.ndarray:
    vectors = np.random.default_rng(7).standard_normal((rows, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_vectors_match_is_false_for_other_vectors(common):
    vectors = unit_vectors()
    assert not common.vectors_match(vectors, -vectors)
    assert common.max_vector_difference(vectors, -vectors) > common.VECTOR_TOLERANCE


def test_vectors_match_takes_float_noise_of_another_encode(common):
    vectors = unit_vectors()
    assert common.vectors_match(vectors, vectors + 1e-6)
    assert common.vectors_match(vectors.astype(np.float64), vectors)


def test_vectors_match_is_false_for_a_different_count_or_nan(common):
    vectors = unit_vectors()
    assert not common.vectors_match(vectors, vectors[:-1])
    broken = vectors.copy()
    broken[2, 3] = np.nan
    assert not common.vectors_match(vectors, broken)
