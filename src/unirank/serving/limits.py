"""Input limits, counted in the model's own tokens."""

from __future__ import annotations

from typing import Any

from unirank.errors import ServingRequestError

#: A generous bound on the characters one token stands for (English averages ~4): a text longer than
#: ``limit * CHARS_PER_TOKEN`` characters is cut there, or refused when its prefix shows it is over the
#: limit, without tokenizing it. Tokenizing a 10 MB text to count it held the event loop for 9.5 s.
CHARS_PER_TOKEN = 32
#: Texts holding fewer characters than this in all are tokenized on the event loop: a thread hop
#: would cost more than the tokenizing.
INLINE_CHARS = 16_384


def bound_characters(tokenizer: Any, texts: list[str], limit: int, *, truncate: bool,
                     what: str = "input") -> list[str]:
    """Refuse, or cut, texts too long to hold ``limit`` tokens, before they are tokenized whole.

    A text over ``limit * CHARS_PER_TOKEN`` characters is refused when its words alone outnumber the
    limit (every tokenizer makes at least one token of each word), else when the tokens of that prefix
    do: a text without spaces (Chinese, Japanese) is one "word", and tokenizing 4 M characters of it
    to count them held the tokenizing thread 14 s. One of few tokens in many characters (a base64
    image, a long URL: 20,000 characters in 17 tokens) is left to the tokenizer to count."""
    max_chars = limit * CHARS_PER_TOKEN
    over = [i for i, text in enumerate(texts) if len(text) > max_chars]
    if not over:
        return texts
    if truncate:
        return [text[:max_chars] if len(text) > max_chars else text for text in texts]
    for i in over:
        prefix = texts[i][:max_chars]
        if len(prefix.split()) > limit:  # the words in a prefix are at most the text's
            counted = "words"
        elif prefix_tokens(tokenizer, prefix) > limit:
            counted = "tokens"
        else:
            continue
        raise ServingRequestError(
            f"{what} {i} has {len(texts[i]):,} characters, and more {counted} than the limit of {limit} tokens "
            f"in its first {max_chars:,} alone. Shorten it, or send `truncate: true` to cut it to the limit.",
            status_code=413, code="input_too_long")
    return texts


def prefix_tokens(tokenizer: Any, prefix: str) -> int:
    """Tokens of ``prefix`` that the whole text holds too, at least: those of its last word are not counted,
    as the cut may have split it (a word cut short can take more tokens than the whole, which a WordPiece
    tokenizer reads as one [UNK] past 100 characters). With no word break in it, its last token is dropped."""
    encoded = tokenizer(prefix, add_special_tokens=False, verbose=False)
    words = encoded.word_ids() if encoded.is_fast else []
    if len(set(words)) > 1:
        return sum(word != words[-1] for word in words)
    return max(0, len(encoded["input_ids"]) - 1)


def enforce_token_limit(tokenizer: Any, texts: list[str], limit: int, *, truncate: bool,
                        what: str = "input") -> tuple[list[str], int]:
    """Refuse texts over ``limit`` tokens, or cut them to fit when the request asks to truncate.

    Returns the texts to run and the number of tokens they hold (for usage reporting). One batched
    tokenizer call counts and finds the cut points: 50 long passages cut one by one took 27 ms, a
    tenth of a short-window rerank. A text too long to fit is found by its length first (see
    :data:`CHARS_PER_TOKEN`), so a huge one costs no tokenizing.
    """
    texts = bound_characters(tokenizer, texts, limit, truncate=truncate, what=what)
    encoded = tokenizer(texts, add_special_tokens=True, truncation=False, return_offsets_mapping=True,
                        verbose=False)
    counts = [len(ids) for ids in encoded["input_ids"]]
    over = [i for i, n in enumerate(counts) if n > limit]
    if over and not truncate:
        i = over[0]
        raise ServingRequestError(
            f"{what} {i} has {counts[i]} tokens; the limit is {limit}. Shorten it, or send "
            "`truncate: true` to cut it to the limit.", status_code=413, code="input_too_long")
    if not over:
        return texts, sum(counts)
    keep = max(0, limit - tokenizer.num_special_tokens_to_add(pair=False))
    texts = list(texts)
    for i in over:
        texts[i] = _cut(texts[i], encoded["offset_mapping"][i], keep)
        counts[i] = limit
    return texts, sum(counts)


def enforce_pair_limit(tokenizer: Any, query: str, texts: list[str], limit: int, *,
                       truncate: bool) -> tuple[str, list[str], int]:
    """For a cross-encoder, which reads the query and a document as one sequence of at most ``limit``
    tokens: refuse a pair over it (the query, the document and the special tokens around them), or cut
    it to fit when the request asks to truncate. Unchecked, the model cut the end of every document
    itself, so documents that differed only there scored the same.

    Returns the query and documents to run and the tokens of all the pairs (for usage reporting).
    When cutting, the query keeps its tokens unless that left a document less than half the window.
    """
    (query,) = bound_characters(tokenizer, [query], limit, truncate=truncate, what="query")
    texts = bound_characters(tokenizer, texts, limit, truncate=truncate, what="document")
    encoded = tokenizer([query, *texts], add_special_tokens=False, truncation=False,
                        return_offsets_mapping=True, verbose=False)
    query_tokens, *doc_tokens = (len(ids) for ids in encoded["input_ids"])
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    room = max(0, limit - specials)
    over = [i for i, n in enumerate(doc_tokens) if query_tokens + n > room]
    if over and not truncate:
        i = over[0]
        raise ServingRequestError(
            f"document {i} and the query hold {query_tokens + doc_tokens[i] + specials} tokens together; this "
            f"reranker reads at most {limit} (the query, the document and {specials} special tokens). Shorten "
            "them, or send `truncate: true` to cut the document to fit.", status_code=413, code="input_too_long")
    if not over:
        return query, texts, sum(query_tokens + n + specials for n in doc_tokens)
    query_keep = min(query_tokens, max(room - max(doc_tokens), room // 2))
    doc_keep = room - query_keep
    if query_keep < query_tokens:
        query = _cut(query, encoded["offset_mapping"][0], query_keep)
    texts = [_cut(text, encoded["offset_mapping"][i + 1], doc_keep) if n > doc_keep else text
             for i, (text, n) in enumerate(zip(texts, doc_tokens))]
    return query, texts, sum(query_keep + min(n, doc_keep) + specials for n in doc_tokens)


def cut_to_tokens(tokenizer: Any, texts: list[str], keep: int) -> list[str]:
    """Each text cut to its first ``keep`` tokens (Cohere's ``max_tokens_per_doc``), special tokens aside. A
    text longer than ``keep * CHARS_PER_TOKEN`` characters is cut there first, so a huge one costs little."""
    texts = bound_characters(tokenizer, texts, keep, truncate=True)
    encoded = tokenizer(texts, add_special_tokens=False, truncation=False, return_offsets_mapping=True,
                        verbose=False)
    return [_cut(text, offsets, keep) if len(ids) > keep else text
            for text, ids, offsets in zip(texts, encoded["input_ids"], encoded["offset_mapping"])]


def _cut(text: str, offsets: list[tuple[int, int]], keep: int) -> str:
    """``text`` up to the end of its ``keep``-th token (``offsets`` are its tokens' character spans)."""
    ends = [end for start, end in offsets if end > start][:keep]
    return text[: ends[-1]] if ends else ""

