"""The rows the trainers see: no random negative is one of the query's own positives."""

from __future__ import annotations

import pytest

from unirank.training.embedder_trainer import _columns, _usable
from unirank.training.examples import TrainingPair
from unirank.training.reranker_trainer import _rows as reranker_rows


def _labelled() -> list[TrainingPair]:
    """Two queries with several relevant documents each, as qrels give them; one pair has a mined negative."""
    pairs = [TrainingPair(query="key rotation", positive=f"rotation doc {i}", doc_id=f"r{i}", query_id="q1")
             for i in range(6)]
    pairs += [TrainingPair(query="disk encryption", positive=f"encryption doc {i}", doc_id=f"e{i}", query_id="q2")
              for i in range(6)]
    pairs[0].negatives = ["a mined hard negative"]
    return pairs


def test_embedder_rows_keep_only_pairs_with_mined_negatives():
    pairs = _labelled()
    rows = _columns(_usable(pairs, negatives=1), 1, row_labels=False)
    assert rows == {"anchor": ["key rotation"], "positive": ["rotation doc 0"], "negative_1": ["a mined hard negative"]}
    assert _usable(pairs, negatives=0) == pairs  # in-batch negatives only
    assert _columns(pairs, 0, row_labels=True)["label"] == list(range(len(pairs)))  # for KnownPositivesMNRL


def test_reranker_random_negatives_are_never_the_querys_own_positives():
    pairs = _labelled()
    rows = reranker_rows(pairs, negatives_per_positive=1, random_negatives=2, seed=5)
    negatives = [(q, p) for q, p, label in zip(rows["query"], rows["passage"], rows["label"]) if label == 0.0]
    assert 1 + len(pairs) < len(negatives) <= 1 + 2 * len(pairs)  # draws that hit the query's own documents are skipped
    for query, passage in negatives:
        own = "rotation" if query == "key rotation" else "encryption"
        assert own not in passage, (query, passage)


def test_small_data_trains_to_the_step_floor_except_pseudo_queries_under_plain_mnrl():
    from unirank.training.embedder_trainer import EmbedderTrainingConfig, planned_max_steps

    config = EmbedderTrainingConfig(epochs=1.0, min_steps=80)
    assert planned_max_steps(config, 27, labelled=True) == 80
    assert planned_max_steps(config, 42, labelled=False) == 80  # GIST on pseudo-queries: the floor too
    plain = EmbedderTrainingConfig(epochs=1.0, min_steps=80, pseudo_query_loss="mnrl")
    assert planned_max_steps(plain, 42, labelled=False) == -1
    assert planned_max_steps(plain, 27, labelled=True) == 80
    assert planned_max_steps(config, 200, labelled=True) == -1  # already past the floor: config.epochs
    assert planned_max_steps(EmbedderTrainingConfig(epochs=1.0, min_steps=80, max_steps=6), 27, labelled=True) == 6


def test_labelled_data_trains_at_its_own_learning_rate():
    from unirank.training.embedder_trainer import EmbedderTrainingConfig, planned_learning_rate

    config = EmbedderTrainingConfig(learning_rate=2e-5, labelled_learning_rate=5e-5)
    assert planned_learning_rate(config, labelled=True) == 5e-5
    assert planned_learning_rate(config, labelled=False) == 2e-5


def test_pseudo_queries_train_with_the_guided_loss_and_labels_with_mnrl():
    from unirank.training.embedder_trainer import EmbedderTrainingConfig, planned_loss

    config = EmbedderTrainingConfig()
    assert planned_loss(config, labelled=False) == "gist"
    assert planned_loss(config, labelled=True) == "mnrl"
    swapped = EmbedderTrainingConfig(pseudo_query_loss="mnrl", labelled_loss="gist")
    assert planned_loss(swapped, labelled=False) == "mnrl"
    assert planned_loss(swapped, labelled=True) == "gist"


def test_an_unknown_embedder_loss_is_refused_when_configured():
    from unirank.errors import ConfigurationError
    from unirank.training.embedder_trainer import EmbedderTrainingConfig

    with pytest.raises(ConfigurationError, match="'mnrl' or 'gist'"):
        EmbedderTrainingConfig(pseudo_query_loss="triplet")


def test_gist_with_more_than_one_hard_negative_is_refused_before_training():
    """GISTEmbedLoss takes (anchor, positive[, negative]); two negatives would fail only at the first step."""
    from unirank.errors import ConfigurationError
    from unirank.training.embedder_trainer import EmbedderTrainingConfig

    with pytest.raises(ConfigurationError, match="one hard negative"):
        EmbedderTrainingConfig(hard_negatives=2)
    assert EmbedderTrainingConfig(hard_negatives=2, pseudo_query_loss="mnrl").hard_negatives == 2


def test_validation_runs_once_an_epoch_but_at_most_max_evaluations_times():
    from unirank.training.embedder_trainer import EmbedderTrainingConfig, planned_eval_steps

    config = EmbedderTrainingConfig(max_evaluations=8)
    assert planned_eval_steps(config, 27, 81) == 27  # labelled CISI: 3 epochs, 3 evaluations
    assert planned_eval_steps(config, 42, 80) == 42
    assert planned_eval_steps(config, 4, 80) == 10  # 20 short epochs: 8 evaluations, not 20
    assert planned_eval_steps(config, 27, 4) == 4  # max_steps shorter than an epoch
    assert planned_eval_steps(EmbedderTrainingConfig(eval_steps=3), 4, 80) == 3


def test_a_positive_of_a_query_is_never_its_negative(settings, tmp_path):
    """One row's negative was another row's positive for the same query: the passage was trained as both."""
    import json

    from unirank.training.job import TrainJob, TrainRequest

    rows = [{"query": "key rotation", "positive": "Rotate keys every 90 days.", "negative": "Revoke a leaked key at once."},
            {"query": "Key  rotation", "positive": "Revoke a leaked key at once.", "negative": "Backups run nightly."},
            {"query": "backups", "positive": "Backups run nightly.", "negative": "Rotate keys every 90 days."}]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    said: list[str] = []
    job = TrainJob(settings, None, lambda: None, TrainRequest(name="x", index="docs", pairs=path), stage=said.append)
    pairs, stats = job._labelled([])
    # the other query's positive stays a negative: it is judged relevant to "backups", not to "key rotation"
    assert [p.negatives for p in pairs] == [[], ["Backups run nightly."], ["Rotate keys every 90 days."]]
    assert stats["negatives_that_are_positives"] == 1
    assert said == ["warning: 1 negative(s) that are a positive of the same query left out: a passage cannot be both"]


def test_validation_scores_each_query_once_with_all_its_relevant_documents():
    """10 queries with 2 positives each said "20 validation queries", each pair scored as a query of its own
    whose other positive counted as a miss."""
    from unirank.training.validation import validation_queries

    pairs = _labelled()  # two queries, six judged documents each, one mined negative
    pairs[1].negatives = ["encryption doc 0", "rotation doc 3", "a mined hard negative"]
    grouped = validation_queries(pairs)
    assert [(q.query, q.doc_ids) for q in grouped] == [("key rotation", {f"r{i}" for i in range(6)}),
                                                       ("disk encryption", {f"e{i}" for i in range(6)})]
    assert grouped[0].positives == [f"rotation doc {i}" for i in range(6)]
    # another query's positive stays a negative; the query's own does not
    assert grouped[0].negatives == ["a mined hard negative", "encryption doc 0"] and grouped[1].negatives == []
