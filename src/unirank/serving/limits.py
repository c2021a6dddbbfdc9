"""Input limits, counted in the model's own tokens."""

from __future__ import annotations

from typing import Any

from unirank.errors import ServingRequestError


def token_counts(tokenizer: Any, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=True, truncation=False,
                                          verbose=False)["input_ids"]]


def enforce_token_limit(tokenizer: Any, texts: list[str], limit: int, *, truncate: bool,
                        what: str = "input") -> tuple[list[str], int]:
    """Refuse texts over ``limit`` tokens, or cut them to fit when the request asks to truncate.

    Returns the texts to run and the number of tokens they hold (for usage reporting).
    """
    counts = token_counts(tokenizer, texts)
    over = [i for i, n in enumerate(counts) if n > limit]
    if over and not truncate:
        i = over[0]
        raise ServingRequestError(
            f"{what} {i} has {counts[i]} tokens; the limit is {limit}. Shorten it, or send "
            "`truncate: true` to cut it to the limit.", status_code=413, code="input_too_long")
    if not over:
        return texts, sum(counts)
    texts = list(texts)
    for i in over:
        texts[i] = _cut(tokenizer, texts[i], limit)
        counts[i] = limit
    return texts, sum(counts)


def _cut(tokenizer: Any, text: str, limit: int) -> str:
    encoded = tokenizer(text, add_special_tokens=True, truncation=True, max_length=limit,
                        return_offsets_mapping=True)
    ends = [end for start, end in encoded["offset_mapping"] if end > start]
    return text[: ends[-1]] if ends else ""
