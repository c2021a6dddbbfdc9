"""BM25 over chunks with tantivy: English stemming and stop words, CJK split into characters,
``key=value`` filter terms."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Iterable, Sequence

import tantivy

from unirank.search.types import Chunk

ANALYZER = "unirank_en"
# Bumped whenever english_analyzer's tokens change: an index whose full-text part was built with
# another version is rebuilt from its chunk store on the next write-locked open.
ANALYZER_VERSION = 2

# Han and Hiragana, which are written without spaces, become one token per character and a Katakana
# run one token (as Lucene's standard analyzer does), so "東京" finds "東京リージョン". Every other
# script keeps tantivy's simple tokenizer's words (letters and digits), with combining marks kept
# inside the word so Devanagari's vowel signs don't split it.
_IDEOGRAPHS = r"\p{Han}\p{Hiragana}"
_KATAKANA = r"\p{Katakana}\x{30FC}"  # U+30FC, the long-vowel mark, is in katakana words
_WORDS = (rf"[{_IDEOGRAPHS}]|[{_KATAKANA}]+"
          rf"|[[\p{{Alphabetic}}\p{{N}}\p{{M}}]--[{_IDEOGRAPHS}{_KATAKANA}]]+")


def english_analyzer() -> tantivy.TextAnalyzer:
    """Lucene's 33 English stop words. NLTK's 179, which also drop question words ("what", "does"),
    raised CISI's BM25 nDCG@10 0.370 → 0.387 but lowered the fine-tuned hybrid (labelled, seed 13:
    0.511 → 0.497; corpus-only 0.475 → 0.474), so they are not used: see the README's Search section."""
    return (
        tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.regex(_WORDS))
        .filter(tantivy.Filter.remove_long(40))
        .filter(tantivy.Filter.lowercase())
        .filter(tantivy.Filter.ascii_fold())
        .filter(tantivy.Filter.stopword("english"))
        .filter(tantivy.Filter.stemmer("english"))
        .build()
    )


def _schema() -> tantivy.Schema:
    builder = tantivy.SchemaBuilder()
    builder.add_unsigned_field("key", stored=False, indexed=True, fast=True)
    builder.add_text_field("body", stored=False, tokenizer_name=ANALYZER, index_option="freq")
    builder.add_text_field("filters", stored=False, tokenizer_name="raw", index_option="basic")
    return builder.build()


class FullTextIndex:
    def __init__(self, path: Path) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.schema = _schema()
        self.analyzer = english_analyzer()
        self.index = tantivy.Index(self.schema, path=str(path), reuse=True)
        self.index.register_tokenizer(ANALYZER, self.analyzer)
        self._writer: tantivy.IndexWriter | None = None

    # -- writes ---------------------------------------------------------------------------------
    @property
    def writer(self) -> tantivy.IndexWriter:
        if self._writer is None:
            self._writer = self.index.writer(heap_size=64_000_000, num_threads=1)
        return self._writer

    def apply(self, removed_keys: Sequence[int], added: Iterable[tuple[int, Chunk, list[str]]]) -> None:
        writer = self.writer
        if removed_keys:
            # Not delete_documents_by_term("key", k): tantivy-py makes that term a signed one, which
            # matches nothing in this unsigned field, so replaced chunks stayed searchable.
            writer.delete_documents_by_query(tantivy.Query.term_set_query(self.schema, "key", list(removed_keys)))
        for key, chunk, terms in added:
            doc = tantivy.Document(body=[chunk.embedding_input()], filters=terms)
            doc.add_unsigned("key", key)
            writer.add_document(doc)

    def commit(self) -> None:
        self.writer.commit()
        self.writer.wait_merging_threads()
        self._writer = None
        self.index.reload()

    def clear(self) -> None:
        self.writer.delete_all_documents()

    def release(self) -> None:
        if self._writer is not None:
            self._writer.rollback()
            self._writer = None

    # -- reads ----------------------------------------------------------------------------------
    def reload(self) -> None:
        self.index.reload()

    def search(self, query: str, top_k: int, filter_terms: Sequence[str] = ()) -> list[tuple[int, float]]:
        # Repeated terms stay repeated: their scores add up, weighting what the query stresses
        # (on CISI this is worth +0.05 nDCG@10 over de-duplicated terms).
        tokens = self.analyzer.analyze(query)
        if not tokens:
            return []
        text_query = tantivy.Query.boolean_query(
            [(tantivy.Occur.Should, tantivy.Query.term_query(self.schema, "body", t)) for t in tokens]
        )
        clauses = [(tantivy.Occur.Must, text_query)]
        for term in filter_terms:
            clauses.append(
                (tantivy.Occur.Must, tantivy.Query.const_score_query(
                    tantivy.Query.term_query(self.schema, "filters", term), 0.0))
            )
        searcher = self.index.searcher()
        result = searcher.search(tantivy.Query.boolean_query(clauses), limit=top_k, count=False)
        if not result.hits:
            return []
        keys = searcher.fast_field_values("key", [addr for _, addr in result.hits])
        return [(int(k), float(score)) for (score, _), k in zip(result.hits, keys, strict=True)]

    def num_docs(self) -> int:
        return int(self.index.searcher().num_docs)

    @staticmethod
    def destroy(path: Path) -> None:
        shutil.rmtree(path, ignore_errors=True)
