"""The reranker trained from the base bi-encoder must actually learn: a real model, a few dozen steps."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from data.make_minibeir import DOCS
from unirank.models.loading import is_cross_encoder, resolve_model_path
from unirank.training.examples import TrainingPair
from unirank.training.reranker_trainer import (RerankerTrainingConfig, build_cross_encoder, keep_first_layers,
                                               train_reranker)


def title_pairs() -> list[TrainingPair]:
    """Title as query, body as positive, another document's body as negative."""
    rng = random.Random(0)
    ids = sorted(DOCS)
    pairs = []
    for doc_id in ids:
        title, body = DOCS[doc_id]
        other = rng.choice([d for d in ids if d != doc_id])
        pairs.append(TrainingPair(query=title.lower(), positive=body, negatives=[DOCS[other][1]],
                                  origin="pairs", doc_id=doc_id, query_id=doc_id))
    return pairs


def separation(model, pairs: list[TrainingPair]) -> tuple[float, float]:
    """(share of pairs with positive above negative, mean score gap)."""
    pos = np.asarray(model.predict([(p.query, p.positive) for p in pairs], show_progress_bar=False))
    neg = np.asarray(model.predict([(p.query, p.negatives[0]) for p in pairs], show_progress_bar=False))
    return float(np.mean(pos > neg)), float(np.mean(pos - neg))


def test_scoring_head_reads_mean_pooled_tokens(tmp_path: Path):
    model = build_cross_encoder(resolve_model_path("base")[0], max_length=64)
    modules = [type(m).__name__ for m in model]
    assert modules == ["Transformer", "Pooling", "Dense"]
    assert model[1].get_config_dict()["pooling_mode"] == "mean"
    model.save(str(tmp_path / "ce"))
    assert is_cross_encoder(str(tmp_path / "ce"))  # saved with modules.json and pooling, still a cross-encoder


def test_a_shallower_reranker_keeps_the_first_layers_and_loads_back_with_them(tmp_path: Path):
    """--reranker-layers 3: the saved model must load with 3 layers (not 6 with 3 random ones) and
    score as it was saved."""
    from unirank.errors import TrainingError
    from unirank.models.reranker import CrossEncoderReranker

    model = build_cross_encoder(resolve_model_path("base")[0], max_length=64)
    whole = model[0].auto_model.base_model.encoder.layer
    first = [layer.attention.self.query.weight.clone() for layer in whole[:3]]
    with pytest.raises(TrainingError, match=r"--reranker-layers must be 1 to 6 \(the base's layers\), got 7"):
        keep_first_layers(model, 7)
    keep_first_layers(model, 3)
    kept = model[0].auto_model.base_model.encoder.layer
    assert len(kept) == 3 and all((a == b.attention.self.query.weight).all() for a, b in zip(first, kept))
    pairs = [(p.query, p.positive) for p in title_pairs()[:4]]
    saved_scores = np.asarray(model.predict(pairs, show_progress_bar=False))
    model.save(str(tmp_path / "ce3"))
    assert '"num_hidden_layers": 3' in (tmp_path / "ce3" / "config.json").read_text()
    loaded = CrossEncoderReranker(str(tmp_path / "ce3"), name="ce3")
    assert len(loaded.model[0].auto_model.base_model.encoder.layer) == 3
    np.testing.assert_allclose(np.asarray(loaded.model.predict(pairs, show_progress_bar=False)).ravel(),
                               saved_scores.ravel(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # builds and saves a cross-encoder (~10 s): in the slow step, for the default run's margin
def test_a_hub_id_is_told_apart_by_its_files_in_the_hub_cache(tmp_path: Path, monkeypatch):
    """Every id that was not a folder was read as a cross-encoder: a bi-encoder base from the hub was trained
    as one, and a hub bi-encoder named as the reranker was given a new, random classifier head."""
    import shutil

    from huggingface_hub import constants

    def cached(repo: str, source: Path) -> None:
        folder = tmp_path / "hub" / f"models--acme--{repo}"
        shutil.copytree(source, folder / "snapshots" / "abc123")
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("abc123")

    cached("mini", Path(resolve_model_path("base")[0]))
    build_cross_encoder(resolve_model_path("base")[0], max_length=64).save(str(tmp_path / "ce"))
    cached("ce", tmp_path / "ce")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert not is_cross_encoder("acme/mini")
    assert is_cross_encoder("acme/ce")
    assert is_cross_encoder("acme/absent")  # none of its files here: a hub reranker is a cross-encoder by convention


@pytest.mark.slow  # a real cross-encoder training (~30 s): in the slow step; test_training trains one by default too
def test_reranker_learns_to_separate_positives_from_negatives(tmp_path: Path):
    """The loss used to stay at ln 2 with a [CLS] head on this base; a mean-pooled head learns."""
    from sentence_transformers.cross_encoder import CrossEncoder

    pairs = title_pairs()
    train, validation = pairs[:22], pairs[22:]
    untrained = build_cross_encoder(resolve_model_path("base")[0], max_length=96)
    before_share, before_gap = separation(untrained, train)
    config = RerankerTrainingConfig(batch_size=8, max_steps=80, train_length=96, max_length=128, warmup_ratio=0.1,
                                    eval_steps=40)
    metrics = train_reranker(resolve_model_path("base")[0], train, validation, tmp_path / "rr", config)
    trained = CrossEncoder(str(tmp_path / "rr" / "final"), device="cpu")
    share, gap = separation(trained, train)
    assert share >= 0.9 and gap > 0.3, (before_share, before_gap, share, gap)
    assert gap > before_gap + 0.3
    assert trained.max_seq_length == 128  # the inference length, not the shorter training one
    assert 0.0 <= metrics["ndcg@10"] <= 1.0
