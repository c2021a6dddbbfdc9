"""The padding-free embedder path (unirank.models.padding_free) against sentence-transformers' own encode,
on the real bundled base model."""

from __future__ import annotations

import numpy as np
import pytest

#: Lengths from a few tokens to past the model's 256-token window, so batches carry real padding.
TEXTS = [
    "Password rotation policy.",
    "How do I rotate an API key without downtime? " * 3,
    "Indexing " + "documents for retrieval evaluation and reranking " * 60,  # truncated at 256 tokens
    "x",
    "Librarians catalogue serials, monographs and grey literature; citation indexes link them. " * 8,
    "  Leading and trailing spaces are stripped like encode strips them.  ",
    "Ünïcödé text, accents and CJK 検索 survive the tokenizer.",
]


@pytest.fixture(scope="module")
def sentence_transformers_vectors(base_embedder) -> np.ndarray:
    return base_embedder.model.encode(TEXTS, batch_size=4, normalize_embeddings=True, convert_to_numpy=True)


def test_the_base_embedder_runs_padding_free_and_matches_encode(base_embedder, sentence_transformers_vectors):
    assert base_embedder.padding_free is not None
    vectors = base_embedder.embed_documents(TEXTS)
    assert vectors.dtype == np.float32 and vectors.shape == (len(TEXTS), base_embedder.dims)
    np.testing.assert_allclose(vectors, sentence_transformers_vectors, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 3, 16])
def test_a_text_gets_the_same_vector_whatever_shares_its_batch(base_embedder, sentence_transformers_vectors,
                                                               batch_size):
    shuffled = [5, 2, 0, 6, 3, 1, 4]
    vectors = base_embedder.padding_free.encode([TEXTS[i] for i in shuffled], batch_size=batch_size)
    np.testing.assert_allclose(vectors, sentence_transformers_vectors[shuffled], atol=1e-5)


def test_a_model_it_cannot_run_exactly_keeps_encode(base_embedder):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules.pooling import Pooling

    from unirank.models.padding_free import padding_free_encoder

    cls_pooled = SentenceTransformer(modules=[base_embedder.model[0], Pooling(base_embedder.dims, pooling_mode="cls")],
                                     device="cpu")
    assert padding_free_encoder(cls_pooled) is None
    assert padding_free_encoder(base_embedder.model) is not None


def test_the_setting_turns_it_off(settings):
    from unirank.models.loading import load_embedder

    settings.embedder.padding_free = False
    embedder = load_embedder(settings)
    assert embedder.padding_free is None
    assert embedder.embed_documents(TEXTS[:2]).shape == (2, embedder.dims)
