"""KnownPositivesMNRL: plain MNRL, except that an anchor's own labelled positives are never its negatives."""

from __future__ import annotations

import pytest
import torch

from unirank.training.examples import TrainingPair
from unirank.training.losses import KnownPositivesMNRL

ROWS = [
    TrainingPair(query="how are library books classified", positive="Dewey decimal classification of books",
                 negatives=["the price of printing paper"], query_id="q1", origin="qrels"),
    TrainingPair(query="how are library books classified", positive="subject headings in card catalogues",
                 negatives=["citation counts of physics journals"], query_id="q1", origin="qrels"),
    # q2's mined hard negative is a passage people judged relevant to q1.
    TrainingPair(query="who reads scientific journals", positive="a survey of chemists' reading habits",
                 negatives=["subject headings in card catalogues"], query_id="q2", origin="qrels"),
    TrainingPair(query="automatic indexing of documents", positive="term weighting for automatic indexing",
                 negatives=["the history of the printing press"], query_id="q3", origin="qrels"),
]


def _batch(model, rows: list[int]):
    columns = [[ROWS[r].query for r in rows], [ROWS[r].positive for r in rows], [ROWS[r].negatives[0] for r in rows]]
    return [model.tokenize(texts) for texts in columns], torch.tensor(rows)


@pytest.fixture()
def model(base_embedder):
    return base_embedder.model


def test_a_batch_without_known_positives_among_its_negatives_scores_as_plain_mnrl(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    features, labels = _batch(model, [0, 3])
    with torch.no_grad():
        ours = KnownPositivesMNRL(model, ROWS, negatives=1)(features, labels)
        plain = MultipleNegativesRankingLoss(model)(features, labels)
    assert ours.item() == pytest.approx(plain.item(), rel=1e-3)


def test_an_anchors_own_positive_in_another_row_is_not_pushed_away(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    features, labels = _batch(model, [0, 2])  # row 2's hard negative is q1's second positive
    with torch.no_grad():
        ours = KnownPositivesMNRL(model, ROWS, negatives=1)(features, labels)
        plain = MultipleNegativesRankingLoss(model)(features, labels)
        anchors = torch.nn.functional.normalize(model(features[0])["sentence_embedding"], dim=-1)
        candidates = torch.nn.functional.normalize(torch.cat(
            [model(f)["sentence_embedding"] for f in features[1:]]), dim=-1)
        scores = 20.0 * anchors @ candidates.T  # candidates: positives 0, 2, then negatives 0, 2
    keep_q1 = [0, 1, 2]  # not column 3, row 2's negative, which q1's labels call relevant
    expected = (torch.logsumexp(scores[0, keep_q1], 0) - scores[0, 0] + torch.logsumexp(scores[1], 0) - scores[1, 1]) / 2
    assert ours.item() == pytest.approx(expected.item(), rel=1e-3)
    assert ours.item() < plain.item() * 0.99  # one fewer term in the first row's softmax denominator


def test_the_masked_loss_still_trains(model):
    import copy

    trainee = copy.deepcopy(model)
    loss = KnownPositivesMNRL(trainee, ROWS, negatives=1)
    features, labels = _batch(trainee, [0, 2, 3])
    loss(features, labels).backward()
    grads = [p.grad for p in trainee.parameters() if p.grad is not None]
    assert grads and any(g.abs().sum() > 0 for g in grads)
