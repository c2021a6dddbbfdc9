"""Hard-negative mining for labelled queries, on a real index with the real base model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from env_helpers import clear_unirank_settings
from unirank.training.examples import TrainingPair
from unirank.training.mining import HardNegativeMiner, MiningConfig, judged_documents

QUERY = "How do I rotate an API key?"
DOCS = {
    "rotate": "Rotating API keys. To rotate an API key, create a successor key in the console, deploy it, "
              "then revoke the old key once no client uses it.",
    "rotate-copy": "How to rotate your API key: make a new key in the console, switch your clients to it, "
                   "then revoke the previous key.",  # unjudged, but it answers the query: not a negative
    "audit": "Security policy. Every credential change is written to the audit log and reviewed monthly.",
    # The hard negatives: about API keys or keys, but not about rotating one.
    "scopes": "API key scopes decide which endpoints a key may call: read, write or admin.",
    "limits": "API keys: each project may hold up to ten API keys, and each key has its own rate limit.",
    "hsm": "Key management. Encryption keys are stored in a hardware security module and never leave it.",
    "billing": "Invoices are sent on the first day of each month and can be paid by card or transfer.",
    "holidays": "Employees get 25 days of paid leave a year, plus public holidays.",
    "tokens": "Session tokens expire after 12 hours of inactivity; users then sign in again.",
}
JUDGED = {"rotate", "audit"}  # "audit" is relevant, but the model ranks it far below "rotate"


@pytest.fixture(scope="module")
def index(tmp_path_factory, base_embedder):
    from unirank.api import Unirank
    from unirank.settings import Settings

    tmp = tmp_path_factory.mktemp("mining")
    folder = tmp / "docs"
    folder.mkdir()
    for doc_id, text in DOCS.items():
        (folder / f"{doc_id}.txt").write_text(text, encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        clear_unirank_settings(mp)
        mp.setenv("UNIRANK_CONFIG", os.devnull)
        settings = Settings(data_dir=tmp / "data")
    ur = Unirank(settings)
    ur.__dict__["embedder"] = base_embedder
    assert not ur.ingest(str(folder), "kb").failed
    doc_ids = {Path(c.doc_id).stem: c.doc_id for batch in ur.backend.iter_chunks("kb") for c in batch}
    assert sorted(doc_ids) == sorted(DOCS)
    yield ur, doc_ids
    ur.close()


def test_labelled_pairs_get_hard_negatives_but_never_a_judged_or_likely_positive(index):
    ur, doc = index
    pairs = [TrainingPair(query=QUERY, positive=DOCS[d], doc_id=doc[d], query_id="q1", origin="qrels")
             for d in sorted(JUDGED)]
    miner = HardNegativeMiner(ur.backend, "kb", ur.embedder, ur.settings.search,
                              MiningConfig(negatives_per_pair=3, skip_top=0))
    mined, stats = miner.mine(pairs, check_consistency=False, relevant={"q1": {doc[d] for d in JUDGED}})
    by_positive = {p.doc_id: p for p in mined}
    # "rotate-copy" is within 5 % of "rotate"'s dense score: a likely unlabelled positive, skipped.
    assert negatives(by_positive[doc["rotate"]]) == {"scopes", "limits", "hsm"}
    # Each pair is measured against its own positive: below the weakly matched "audit", only
    # passages that score under 95 % of it are negatives (here the easy ones).
    assert negatives(by_positive[doc["audit"]]) == {"billing", "tokens", "holidays"}
    vectors = dict(zip(DOCS, ur.embedder.embed_documents(list(DOCS.values()))))
    query = ur.embedder.embed_documents([QUERY])[0]
    for name in negatives(by_positive[doc["audit"]]):
        assert query @ vectors[name] < 0.95 * (query @ vectors["audit"])
    assert stats.dropped_false_negatives == 1 + 4  # "rotate-copy"; it and the three hard ones


def negatives(pair: TrainingPair) -> set[str]:
    """The documents of a pair's negatives (a passage is embedded with its title line first)."""
    return {d for d in DOCS for text in pair.negatives if text.endswith(DOCS[d])}


def test_pairs_without_query_ids_are_judged_per_query(index):
    """A pairs file names no query ids: a query's pairs share their positives by its text, and one
    query's positive may still be another query's negative."""
    ur, doc = index
    other = "Which scopes can an API key have?"
    pairs = [TrainingPair(query=QUERY, positive=DOCS["rotate"], doc_id=doc["rotate"], origin="pairs"),
             TrainingPair(query=QUERY.upper(), positive=DOCS["hsm"], doc_id=doc["hsm"], origin="pairs"),
             TrainingPair(query=other, positive=DOCS["scopes"], doc_id=doc["scopes"], origin="pairs")]
    judged = judged_documents(pairs)
    assert judged == {"how do i rotate an api key?": {doc["rotate"], doc["hsm"]},
                      "which scopes can an api key have?": {doc["scopes"]}}
    miner = HardNegativeMiner(ur.backend, "kb", ur.embedder, ur.settings.search,
                              MiningConfig(negatives_per_pair=3, skip_top=0))
    mined, _ = miner.mine(pairs, check_consistency=False, relevant=judged)
    assert "scopes" in negatives(mined[0]) and "hsm" not in negatives(mined[0])
