"""Pseudo-queries from the corpus alone, made so the query does not simply copy the passage.

Four offline kinds (the README of the shared data says why plain (title, body) pairs are not enough),
and ``llm``, questions an LLM writes when an endpoint is configured (``doc2query.py``):
- ``crop``: a cropped sentence as the query, with that sentence removed from the passage
  (inverse cloze), so the model must match meaning, not the same words;
- ``keyphrase``: a handful of the passage's most distinctive terms (TF-IDF), shuffled;
- ``title``: the document title as the query, with the title stripped from the passage;
- ``lead``: the passage's opening sentence, which usually states its topic as a whole question
  would, removed from the passage.

The defaults are ``lead``, ``keyphrase`` and ``title``. On corpus-only CISI (1,500 pairs, GIST, all
76 judged queries), held-out tuned kNN / hybrid nDCG@10 was 0.455 / 0.468 against 0.454 / 0.465 with
``crop`` in place of ``lead``, and 0.446 / 0.468 against 0.448 / 0.460 with seed 7 (within
run-to-run noise: the full bench gave tuned hybrid 0.463 against 0.464). Without key
phrases (lead and title only) it fell to 0.433 / 0.453; all four kinds at 2,000 pairs gave 0.443 / 0.462.
Without leads (key phrases and titles, 750 each) kNN kept its gain but hybrid lost it: 0.452 / 0.455
against 0.452 / 0.468 (another day, bf16): key phrases alone teach kNN the words BM25 already matches.
Without titles (leads and key phrases, 750 each): 0.443 / 0.456. Each of the three kinds earns its share.

BM25 ranks the source passage first for 96 % of the training split's pairs (1,297 of 1,356). Making
them harder did not help: taking out the rarer half of the query words the passage shares (BM25 top-1
still 84 %) gave 0.437 / 0.449 against 0.445 / 0.462. Nor did length: CISI's questions run to a median
of 50 words, and ``lead`` queries made of the opening sentences up to 40 words (median 51) gave
0.446 / 0.463. Nor did question form: key phrases set in question templates ("What is known about
...?", four of them, on the same pairs otherwise) gave 0.454 / 0.463 against 0.452 / 0.468. Nor did
taking half of a key-phrase query's words out of its passage (so the model must find the passage by
the words around them, which BM25 cannot): 0.452 / 0.467 against 0.452 / 0.468 on the same pairs.

Read these as single runs. The seed moves the result more than most of them: with the defaults,
seeds 13, 7, 21, 42 and 99 gave held-out tuned kNN / hybrid 0.452 / 0.468, 0.447 / 0.459,
0.438 / 0.452, 0.447 / 0.458 and 0.446 / 0.459 (hybrid mean 0.459, sd 0.006; base 0.420 / 0.443).
Averaging the weights of the 7, 21 and 42 models gave 0.446 / 0.456, their mean again.
"""

from __future__ import annotations

import random
import re
from typing import Sequence

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer

from unirank.errors import TrainingError
from unirank.ingest.chunking import CJK_SENTENCE_CLOSERS, CJK_SENTENCE_ENDS, SENTENCE_START
from unirank.search.types import Chunk
from unirank.training.examples import TrainingPair

# The chunker's sentence starts (a capital of any cased script) and CJK ends: with A-Z only, a Russian or
# Japanese passage was one sentence, too few for a lead or crop query. A CJK end before a closing quote or
# another end is inside the sentence (「はい。」と言った。, 本当！？).
_SENTENCE = re.compile(rf"(?<=[.!?])\s+(?=[\"'(]|{SENTENCE_START})"
                       rf"|(?<=[{CJK_SENTENCE_ENDS}])(?![{CJK_SENTENCE_ENDS}{CJK_SENTENCE_CLOSERS}])\s*")
#: Characters of scripts written without spaces (Han, kana): two count as a word, so a Japanese sentence
#: is long enough for a query by its length, not by its (one) space-separated "word".
_UNSPACED = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
#: ``llm`` (doc2query on an OpenAI-compatible endpoint) is written by ``doc2query.LLMQueryWriter``;
#: this generator makes the other, offline kinds.
KINDS = ("crop", "keyphrase", "title", "lead", "llm")
DEFAULT_KINDS = ("lead", "keyphrase", "title")
#: A sentence-kind query needs a passage that keeps at least two sentences once it is taken out.
MIN_SENTENCES = 3


def check_kinds(kinds: Sequence[str]) -> None:
    """Refuse an unknown or empty list of kinds before any indexing or mining is done for it."""
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        raise TrainingError(f"Unknown pseudo-query kinds {unknown or '(none given)'}: choose from {', '.join(KINDS)}.")


def sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.split(text) if s.strip()]


def word_count(text: str) -> int:
    """Words as a reader counts them: space-separated, plus one per two Han or kana characters."""
    return len(text.split()) + len(_UNSPACED.findall(text)) // 2


def passage_without_title(chunk: Chunk, text: str | None = None) -> str:
    """The passage as embedded, minus the title line: what a title-query must be matched against."""
    headings = [h for h in chunk.heading_path if h and h != chunk.title]
    body = chunk.text if text is None else text
    return "\n".join([" > ".join(headings), body]) if headings else body


class PseudoQueryGenerator:
    def __init__(self, *, seed: int = 13, kinds: Sequence[str] = DEFAULT_KINDS, crops_per_chunk: int = 1,
                 min_words: int = 5) -> None:
        check_kinds(kinds)
        self.kinds = tuple(kinds)
        self.crops_per_chunk = crops_per_chunk
        self.min_words = min_words
        self.seed = seed

    def generate(self, chunks: Sequence[Chunk]) -> list[TrainingPair]:
        rng = random.Random(self.seed)
        pairs: list[TrainingPair] = []
        if "crop" in self.kinds:
            for chunk in chunks:
                pairs += self._crops(chunk, rng)
        if "keyphrase" in self.kinds:
            pairs += self._keyphrases(chunks, rng)
        if "title" in self.kinds:
            pairs += [p for c in chunks if (p := self._title(c))]
        if "lead" in self.kinds:
            pairs += [p for c in chunks if (p := self._lead(c))]
        return pairs

    def _crops(self, chunk: Chunk, rng: random.Random) -> list[TrainingPair]:
        parts = sentences(chunk.text)
        candidates = [i for i, s in enumerate(parts) if len(s.split()) >= self.min_words]  # crops cut at spaces
        if len(parts) < MIN_SENTENCES or not candidates:
            return []
        out = []
        for i in rng.sample(candidates, min(self.crops_per_chunk, len(candidates))):
            words = parts[i].rstrip(".!?").split()
            span = rng.randint(min(len(words), self.min_words + 1), min(len(words), 20))
            start = rng.randint(0, len(words) - span)
            query = " ".join(words[start : start + span])
            out.append(TrainingPair(query=query, positive=_without_sentence(chunk, parts, i), origin="pseudo:crop",
                                    doc_id=chunk.doc_id))
        return out

    def _keyphrases(self, chunks: Sequence[Chunk], rng: random.Random) -> list[TrainingPair]:
        texts = [c.text for c in chunks]
        if len(texts) < 5:
            return []
        # Terms in at least 2 passages and at most 30 % of them; as a count, so that a small corpus
        # (under 7 passages) still has a range to keep.
        vectorizer = TfidfVectorizer(stop_words="english", ngram_range=(1, 2), min_df=2,
                                     max_df=max(2, int(0.3 * len(texts))), sublinear_tf=True,
                                     token_pattern=r"(?u)\b[a-zA-Z][a-zA-Z]+\b")
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # no term is shared by 2 passages: nothing distinctive to pick
            return []
        vocab = np.asarray(vectorizer.get_feature_names_out())
        out = []
        for row, chunk in enumerate(chunks):
            weights = matrix.getrow(row)
            if weights.nnz < 4:
                continue
            order = weights.indices[np.argsort(-weights.data)][:12]
            terms = list(vocab[order])
            picked = rng.sample(terms, min(len(terms), rng.randint(3, 6)))
            words = list(dict.fromkeys(w for term in picked for w in term.split()))
            rng.shuffle(words)
            out.append(TrainingPair(query=" ".join(words), positive=chunk.embedding_input(),
                                    origin="pseudo:keyphrase", doc_id=chunk.doc_id))
        return out

    def _lead(self, chunk: Chunk) -> TrainingPair | None:
        parts = sentences(chunk.text)
        if len(parts) < MIN_SENTENCES or word_count(parts[0]) < self.min_words:
            return None
        return TrainingPair(query=parts[0], positive=_without_sentence(chunk, parts, 0), origin="pseudo:lead",
                            doc_id=chunk.doc_id)

    def _title(self, chunk: Chunk) -> TrainingPair | None:
        title = chunk.title.strip()
        if chunk.ordinal != 0 or len(title.split()) < 3 or title.lower() in chunk.text.lower()[: len(title) + 5]:
            return None
        return TrainingPair(query=title, positive=passage_without_title(chunk), origin="pseudo:title",
                            doc_id=chunk.doc_id)


def _without_sentence(chunk: Chunk, parts: list[str], index: int) -> str:
    """The passage as embedded (title included) with the sentence a query was taken from left out."""
    kept = parts[:index] + parts[index + 1 :]
    text = "".join(part if i == 0 or kept[i - 1][-1] in CJK_SENTENCE_ENDS else " " + part  # no space after 。
                   for i, part in enumerate(kept))
    return _with_title(chunk, text)


def _with_title(chunk: Chunk, text: str) -> str:
    probe = Chunk(id="", doc_id="", source_uri="", ordinal=0, text=text, title=chunk.title,
                  heading_path=chunk.heading_path)
    return probe.embedding_input()
