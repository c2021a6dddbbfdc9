"""Input limits, counted in the model's own tokens."""

from __future__ import annotations

from typing import Any

from unirank.errors import ServingRequestError

#: A generous bound on the characters one token stands for (English averages ~4): a text longer than
#: ``limit * CHARS_PER_TOKEN`` characters is over the limit without tokenizing it. Tokenizing a 10 MB
#: text to count it held the event loop for 9.5 s.
CHARS_PER_TOKEN = 32
#: Texts holding fewer characters than this in all are tokenized on the event loop: a thread hop
#: would cost more than the tokenizing.
INLINE_CHARS = 16_384


def bound_characters(texts: list[str], limit: int, *, truncate: bool, what: str = "input") -> list[str]:
    """Refuse, or cut, texts too long to hold ``limit`` tokens, before they are tokenized."""
    max_chars = limit * CHARS_PER_TOKEN
    over = [i for i, text in enumerate(texts) if len(text) > max_chars]
    if not over:
        return texts
    if not truncate:
        i = over[0]
        raise ServingRequestError(
            f"{what} {i} has {len(texts[i]):,} characters, far more than the limit of {limit} tokens holds "
            f"(at most {max_chars:,} characters are read). Shorten it, or send `truncate: true` to cut it "
            "to the limit.", status_code=413, code="input_too_long")
    return [text[:max_chars] if len(text) > max_chars else text for text in texts]


def enforce_token_limit(tokenizer: Any, texts: list[str], limit: int, *, truncate: bool,
                        what: str = "input") -> tuple[list[str], int]:
    """Refuse texts over ``limit`` tokens, or cut them to fit when the request asks to truncate.

    Returns the texts to run and the number of tokens they hold (for usage reporting). One batched
    tokenizer call counts and finds the cut points: 50 long passages cut one by one took 27 ms, a
    tenth of a short-window rerank. A text too long to fit is found by its length first (see
    :data:`CHARS_PER_TOKEN`), so a huge one costs no tokenizing.
    """
    texts = bound_characters(texts, limit, truncate=truncate, what=what)
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
        ends = [end for start, end in encoded["offset_mapping"][i] if end > start][:keep]
        texts[i] = texts[i][: ends[-1]] if ends else ""
        counts[i] = limit
    return texts, sum(counts)
