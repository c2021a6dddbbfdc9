"""Centring an embedder on a corpus (unirank.training.centering), on the real bundled base model."""

from __future__ import annotations

import numpy as np
import pytest

from unirank.errors import TrainingError

PASSAGES = [
    "Rotate API keys every ninety days and revoke the old key after the overlap window.",
    "Vacation requests go to your manager two weeks ahead.",
    "The search index stores BM25 postings and HNSW vectors side by side.",
    "Expense reports need a receipt for anything over fifty euros.",
    "A reranker scores each query and passage pair with a cross-encoder.",
    "The cafeteria serves lunch from noon until two.",
]
QUERIES = ["how often should keys be rotated", "when is lunch"]


@pytest.fixture(scope="module")
def centered(tmp_path_factory, base_embedder):
    """The base model saved centred on PASSAGES, and the mean it subtracts."""
    from unirank.models.loading import resolve_model_path
    from unirank.training.centering import save_centered_copy

    out = tmp_path_factory.mktemp("centred") / "model"
    base_path = resolve_model_path("base")[0]
    info = save_centered_copy(base_path, PASSAGES, out)
    plain = base_embedder.model.encode(PASSAGES, normalize_embeddings=True)
    return out, plain.mean(axis=0), info


def test_a_centred_model_loads_without_unirank_and_subtracts_the_corpus_mean(centered, base_embedder):
    from sentence_transformers import SentenceTransformer

    out, mean, info = centered
    assert info["passages"] == len(PASSAGES) and info["mean_norm"] == pytest.approx(np.linalg.norm(mean), abs=1e-3)
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize", "Dense", "Normalize"]
    plain = base_embedder.model.encode(QUERIES, normalize_embeddings=True)
    expected = (plain - mean) / np.linalg.norm(plain - mean, axis=1, keepdims=True)
    np.testing.assert_allclose(model.encode(QUERIES), expected, atol=1e-5)
    # The corpus no longer shares one direction: its centred vectors average to ~0.
    assert np.linalg.norm(model.encode(PASSAGES).mean(axis=0)) < 0.5 * np.linalg.norm(mean)


def test_unirank_embeds_a_centred_model_padding_free_with_the_same_vectors(centered):
    from unirank.models.embedder import SentenceTransformerEmbedder

    out, _, _ = centered
    embedder = SentenceTransformerEmbedder(str(out), name="centred", version="1")
    assert embedder.padding_free is not None and embedder.dims == 384
    expected = embedder.model.encode(PASSAGES + QUERIES, normalize_embeddings=True)
    np.testing.assert_allclose(embedder.embed_documents(PASSAGES + QUERIES), expected, atol=1e-5)


def test_centring_again_replaces_the_mean_instead_of_stacking_a_second(centered, tmp_path):
    from sentence_transformers import SentenceTransformer

    from unirank.training.centering import save_centered_copy

    out, _, _ = centered
    again = tmp_path / "again"
    save_centered_copy(str(out), PASSAGES[:3], again)
    model = SentenceTransformer(str(again), device="cpu", local_files_only=True)
    assert len(model) == 5
    base = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    del base[4], base[3]
    new_mean = base.encode(PASSAGES[:3], normalize_embeddings=True).mean(axis=0)
    np.testing.assert_allclose(-model[3].linear.bias.detach().numpy(), new_mean, atol=1e-5)


def test_a_mean_of_other_dimensions_or_an_unnormalised_model_is_refused(base_embedder):
    from sentence_transformers import SentenceTransformer

    from unirank.training.centering import append_centering

    with pytest.raises(TrainingError, match="384-dimensional"):
        append_centering(base_embedder.model, np.zeros(768))
    unnormalised = SentenceTransformer(modules=[base_embedder.model[0], base_embedder.model[1]], device="cpu")
    with pytest.raises(TrainingError, match="center_on_corpus = false"):
        append_centering(unnormalised, np.zeros(384))


def test_training_leaves_the_centring_fixed_and_the_encoder_trainable(centered, base_embedder):
    from sentence_transformers import SentenceTransformer

    from unirank.training.centering import freeze_centering

    out, _, _ = centered
    model = SentenceTransformer(str(out), device="cpu", local_files_only=True)
    assert freeze_centering(model)
    assert not any(p.requires_grad for p in model[3].parameters())
    assert all(p.requires_grad for p in model[0].parameters())
    assert not freeze_centering(base_embedder.model)  # nothing to fix on a plain model


def test_whitening_evens_out_the_corpus_main_directions_and_is_the_identity_at_zero():
    from unirank.errors import ConfigurationError
    from unirank.training.centering import whitening

    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(1000, 8)) * np.array([8, 4, 2, 1, 1, 1, 1, 1]) + 3.0
    np.testing.assert_array_equal(whitening(vectors, 0.0), np.eye(8))
    transform = whitening(vectors, 0.25)
    np.testing.assert_allclose(transform, transform.T, atol=1e-12)
    spread = np.linalg.svd(vectors - vectors.mean(axis=0), compute_uv=False)
    evened = np.linalg.svd((vectors - vectors.mean(axis=0)) @ transform, compute_uv=False)
    # (spread ratio) ** (1 - 0.25): the widest direction is now 8 ** 0.75 ~ 4.8x the narrowest, not ~8x.
    assert evened[0] / evened[-1] == pytest.approx((spread[0] / spread[-1]) ** 0.75, rel=1e-6)
    with pytest.raises(ConfigurationError, match="outside 0-0.5"):
        whitening(vectors, 0.8)


def test_a_whitened_model_applies_the_transform_and_is_recognised_frozen_and_replaced(base_embedder, tmp_path):
    from sentence_transformers import SentenceTransformer

    from unirank.models.embedder import SentenceTransformerEmbedder
    from unirank.training.centering import append_centering, freeze_centering, is_centering_tail, whitening, \
        without_centering

    rng = np.random.default_rng(1)
    corpus = rng.normal(size=(1000, 384)) * np.linspace(3, 0.5, 384)
    mean, transform = corpus.mean(axis=0) * 0.01, whitening(corpus, 0.25)
    model = SentenceTransformer(modules=list(base_embedder.model), device="cpu")
    append_centering(model, mean, transform)
    model.save(str(tmp_path / "whitened"))
    loaded = SentenceTransformer(str(tmp_path / "whitened"), device="cpu", local_files_only=True)
    plain = base_embedder.model.encode(QUERIES, normalize_embeddings=True)
    expected = (plain - mean) @ transform
    np.testing.assert_allclose(loaded.encode(QUERIES), expected / np.linalg.norm(expected, axis=1, keepdims=True),
                               atol=1e-5)
    served = SentenceTransformerEmbedder(str(tmp_path / "whitened"), name="whitened", version="1")
    assert served.padding_free is not None
    np.testing.assert_allclose(served.embed_documents(QUERIES), loaded.encode(QUERIES), atol=1e-5)
    assert is_centering_tail(list(loaded)[-2:]) and freeze_centering(loaded)
    assert [type(m).__name__ for m in without_centering(loaded)] == ["Transformer", "Pooling", "Normalize"]
    with pytest.raises(TrainingError, match="transform of shape"):
        append_centering(model, np.zeros(384), np.eye(8))


def test_too_few_passages_to_measure_their_spread_are_centred_only(centered):
    _, _, info = centered  # 6 passages for 384 dimensions
    assert info["whitening"] == 0.0


def test_a_whitening_strength_outside_its_range_is_refused_before_any_work():
    from unirank.errors import ConfigurationError
    from unirank.training.embedder_trainer import EmbedderTrainingConfig

    with pytest.raises(ConfigurationError, match="give 0-0.5"):
        EmbedderTrainingConfig(whitening_strength=0.6)
