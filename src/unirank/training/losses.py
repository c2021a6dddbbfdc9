"""MultipleNegativesRankingLoss that never uses an anchor's own labelled positives as its negatives."""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
from torch import Tensor, nn

from unirank.training.examples import TrainingPair, by_query, query_key


class KnownPositivesMNRL(nn.Module):
    """In-batch negatives that people judged relevant to the anchor's query are masked out.

    A labelled query has many relevant passages (a CISI query ~40), and the no-duplicates sampler
    puts nearly every training query in each batch, so another row's positive or hard negative is
    often one of the anchor's own positives (3.8 % of them on labelled CISI: ~1 of the 31 in-batch
    positives, every batch). Plain MNRL pushes those away as hard as it pulls the row's positive
    in. Rows come to the loss by their index in ``rows`` (the dataset's ``label`` column).
    """

    def __init__(self, model: nn.Module, rows: Sequence[TrainingPair], negatives: int, scale: float = 20.0) -> None:
        super().__init__()
        self.model = model
        self.scale = scale
        known = by_query(rows, lambda p: (p.positive,))
        self._known = [known[query_key(pair)] for pair in rows]
        # Column c of row r: its positive (c = 0) or its c-th hard negative.
        self._texts = [[pair.positive, *pair.negatives[:negatives]] for pair in rows]

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor) -> Tensor:
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        anchors, candidates = embeddings[0], torch.cat(embeddings[1:])
        scores = nn.functional.normalize(anchors, dim=-1) @ nn.functional.normalize(candidates, dim=-1).T
        rows = labels.tolist()
        batch = len(rows)
        mask = torch.tensor([[c != i and self._texts[rows[c % batch]][c // batch] in self._known[rows[i]]
                              for c in range(candidates.size(0))] for i in range(batch)], device=scores.device)
        scores = scores.masked_fill(mask, float("-inf")) * self.scale
        return nn.functional.cross_entropy(scores, torch.arange(batch, device=scores.device))

    @property
    def citation(self) -> str:
        return "MultipleNegativesRankingLoss (van den Oord et al. 2018) with labelled false negatives masked"
