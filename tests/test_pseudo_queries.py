"""Pseudo-queries must not be answerable by copying: each kind takes its query out of the passage."""

import pytest

from unirank.search.types import Chunk
from unirank.training.pseudo_queries import DEFAULT_KINDS, PseudoQueryGenerator, sentences

TEXTS = [
    "Library catalogues describe books by author and title. Subject headings add a controlled vocabulary "
    "for topics. Users rarely know the headings and search by keywords instead. Catalogue use studies show this.",
    "Citation indexes link papers that cite each other. Co-citation counts measure how related two papers "
    "are. Bibliographic coupling compares reference lists instead. Both methods map scientific fields.",
    "Automatic indexing assigns terms to documents by counting words. Term weights favour words that are "
    "frequent in a document and rare elsewhere. Stop words are removed first. Stemming merges word forms.",
    "Relevance judgements differ between assessors. Agreement is higher for highly relevant documents than "
    "for marginal ones. Test collections pool results from many systems. Pooling misses some relevant items.",
    "Online retrieval systems charge by connect time. Searchers plan their strategies offline to save cost. "
    "Boolean operators combine search terms. Truncation finds word variants at once.",
    "Reference interviews clarify what a patron needs. Open questions reveal the real information need. "
    "Librarians then choose sources and search them. Follow-up checks whether the answer helped.",
]


@pytest.fixture
def chunks() -> list[Chunk]:
    return [Chunk(id=f"c{i}", doc_id=f"d{i}", source_uri=f"mem://{i}", ordinal=0, text=text,
                  title=f"Study number {i} of library practice") for i, text in enumerate(TEXTS)]


def test_every_kind_removes_its_query_from_the_passage(chunks):
    pairs = PseudoQueryGenerator(seed=1, kinds=("crop", "title", "lead")).generate(chunks)
    origins = {p.origin for p in pairs}
    assert origins == {"pseudo:crop", "pseudo:title", "pseudo:lead"}
    for pair in pairs:
        assert pair.query and pair.query not in pair.positive, pair
        assert pair.doc_id in {c.doc_id for c in chunks}


def test_lead_is_the_opening_sentence_and_the_rest_stays(chunks):
    pairs = PseudoQueryGenerator(kinds=("lead",)).generate(chunks)
    assert len(pairs) == len(chunks)
    first = pairs[0]
    assert first.query == "Library catalogues describe books by author and title."
    assert "Subject headings add a controlled vocabulary" in first.positive
    assert first.positive.startswith("Study number 0")  # the title still gives the passage its context


def test_keyphrases_come_from_the_passage_and_crop_is_not_a_default(chunks):
    # Key phrases are terms that 2 passages share but most do not: give each text a second edition.
    editions = [Chunk(id=c.id + "b", doc_id=c.doc_id + "b", source_uri=c.source_uri + "b", ordinal=0,
                      text=c.text + " A second edition.", title=c.title) for c in chunks]
    pairs = PseudoQueryGenerator(seed=3).generate(chunks + editions)
    assert DEFAULT_KINDS == ("lead", "keyphrase", "title")
    assert {p.origin for p in pairs} == {"pseudo:lead", "pseudo:keyphrase", "pseudo:title"}
    keyphrases = [p for p in pairs if p.origin == "pseudo:keyphrase"]
    assert keyphrases
    for pair in keyphrases:
        assert all(word in pair.positive.lower() for word in pair.query.split())


def test_an_unknown_kind_is_refused():
    from unirank.errors import TrainingError

    with pytest.raises(TrainingError, match="Unknown pseudo-query kinds"):
        PseudoQueryGenerator(kinds=("crop", "summary"))


def test_a_corpus_of_a_few_passages_still_gets_pseudo_queries(chunks):
    """6 passages once made the key-phrase filter's range empty (at most 30 % of 6 < at least 2): an error."""
    pairs = PseudoQueryGenerator().generate(chunks)
    assert {p.origin for p in pairs} >= {"pseudo:lead", "pseudo:title"}


def test_training_refuses_an_unknown_kind_before_any_work(tmp_path):
    from unirank.errors import TrainingError
    from unirank.training.job import TrainRequest

    with pytest.raises(TrainingError, match="choose from crop, keyphrase, title, lead"):
        TrainRequest(name="x", beir=tmp_path, pseudo_kinds=("crop", "summary")).validate()
    with pytest.raises(TrainingError, match="none given"):
        TrainRequest(name="x", beir=tmp_path, pseudo_kinds=()).validate()
    TrainRequest(name="x", beir=tmp_path, pseudo_kinds=("lead",)).validate()


@pytest.mark.parametrize("text, first", [
    ("Ключи меняются каждые девяносто дней. Резервные копии хранятся тридцать дней. Журналы удаляются через год.",
     "Ключи меняются каждые девяносто дней."),
    ("Τα κλειδιά αλλάζουν κάθε ενενήντα ημέρες. Η πολιτική ισχύει για όλους. Οι αλλαγές καταγράφονται.",
     "Τα κλειδιά αλλάζουν κάθε ενενήντα ημέρες."),
    ("鍵は九十日ごとに交換します。バックアップは三十日間保存します。ログは一年後に削除します。", "鍵は九十日ごとに交換します。"),
    ("Keys rotate every ninety days. Backups are kept for thirty days. Logs go after a year.",
     "Keys rotate every ninety days."),
])
def test_sentences_are_split_in_every_cased_script_and_after_cjk_ends(text, first):
    """Only an A-Z capital started a sentence: a Russian, Greek or Japanese passage was one sentence,
    too few for a lead query, so corpus-only training on such documents had only keyphrase and title ones.
    A Japanese sentence, one space-separated "word", was then still too short for one."""
    parts = sentences(text)
    assert len(parts) == 3 and parts[0] == first
    chunk = Chunk(id="c", doc_id="d", source_uri="d", ordinal=1, text=text, title="")
    [lead] = PseudoQueryGenerator(kinds=("lead",)).generate([chunk])
    assert lead.query == first and lead.positive == text.replace(first, "").strip()


def test_a_cjk_end_inside_quotes_or_doubled_ends_no_sentence():
    assert sentences("彼は「はい。」と言った。本当！？次です。") == ["彼は「はい。」と言った。", "本当！？", "次です。"]
