"""The model server's input limits, counted with the bundled model's real tokenizer."""

from __future__ import annotations

import time

import pytest
from transformers import AutoTokenizer

from unirank.errors import ServingRequestError
from unirank.models.loading import resolve_model_path
from unirank.serving.limits import enforce_pair_limit, enforce_token_limit


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("base")[0])


def test_a_text_of_few_words_in_many_characters_is_counted_not_guessed(tokenizer):
    """A base64 image or a long URL in a document (20,000 characters, 17 tokens) was refused as "far more
    than the limit of 256 tokens holds", and ingestion through the server failed on it."""
    blob = "data: " + "QUJD" * 5000
    url = "https://example.com/" + "x" * 9000
    texts, tokens = enforce_token_limit(tokenizer, [blob, url], 256, truncate=False)
    assert texts == [blob, url]  # nothing cut: they fit
    assert tokens == len(tokenizer(blob)["input_ids"]) + len(tokenizer(url)["input_ids"]) < 40
    (query, docs, _) = enforce_pair_limit(tokenizer, "what is in the image?", [blob], 256, truncate=False)
    assert docs == [blob]


def test_a_long_text_of_many_words_is_refused_without_tokenizing_it(tokenizer):
    prose = "lorem ipsum dolor sit amet " * 400_000  # 10.8 MB: tokenizing it takes seconds
    started = time.perf_counter()
    with pytest.raises(ServingRequestError, match=r"input 1 has 10,800,000 characters, and more words than the "
                                                  r"limit of 256 tokens in its first 8,192 alone") as refused:
        enforce_token_limit(tokenizer, ["short", prose], 256, truncate=False)
    assert refused.value.status_code == 413 and time.perf_counter() - started < 1.0
    # Just over the character bound, with fewer words than the limit: refused on its prefix's tokens.
    words = "antidisestablishmentarianism " * 250  # 7,250 characters... and 250 words of 6 tokens each
    with pytest.raises(ServingRequestError, match=r"input 0 has 9,250 characters, and more tokens than the limit"):
        enforce_token_limit(tokenizer, [words + "x" * 2000], 256, truncate=False)
    with pytest.raises(ServingRequestError, match=r"input 0 has \d+ tokens; the limit is 256"):  # within the bound
        enforce_token_limit(tokenizer, [words], 256, truncate=False)
    texts, tokens = enforce_token_limit(tokenizer, [prose], 256, truncate=True)
    assert tokens == 256 and prose.startswith(texts[0]) and len(texts[0]) < 2000


def test_a_long_text_without_spaces_is_refused_on_its_prefixs_tokens_without_tokenizing_it(tokenizer):
    """Chinese or Japanese text is one "word" to a split on spaces: 4 M characters of it were tokenized whole to
    be refused (14 s on the server's one tokenizing thread, every other long request queued behind)."""
    han = "\u6f22" * 4_000_000
    started = time.perf_counter()
    with pytest.raises(ServingRequestError, match=r"input 0 has 4,000,000 characters, and more tokens than the "
                                                  r"limit of 256 tokens in its first 8,192 alone") as refused:
        enforce_token_limit(tokenizer, [han], 256, truncate=False)
    with pytest.raises(ServingRequestError, match=r"^document 0 has 4,000,000 characters"):
        enforce_pair_limit(tokenizer, "which character?", [han], 256, truncate=False)
    assert refused.value.status_code == 413 and time.perf_counter() - started < 1.0
    texts, tokens = enforce_token_limit(tokenizer, [han], 256, truncate=True)
    assert tokens == 256 and texts[0] == han[:254]  # one token a character, [CLS] and [SEP] aside
    assert time.perf_counter() - started < 2.0


def test_a_word_cut_by_the_prefix_does_not_count_against_the_text(tokenizer):
    """A word over 100 characters is one [UNK] to this tokenizer, but its first 52 characters are 26 tokens: the
    prefix's last word is left out of its count, so a text of 5 tokens is not refused on it."""
    text = "y" * 101 + " " + "y" * 101 + " " + "z" * 5000  # 5,206 characters, over 8 * 32
    assert enforce_token_limit(tokenizer, [text], 8, truncate=False) == ([text], 5)


def test_a_text_of_invisible_characters_only_is_an_empty_input(tmp_path):
    """A zero-width space or a NUL is dropped by the tokenizer: such an input was embedded (200, the vector of
    an empty string) where "  " gets the documented 400 empty_input; a rerank query likewise."""
    from fastapi.testclient import TestClient

    from unirank.serving.app import create_app
    from unirank.settings import Settings
    from unirank.text import is_blank

    assert not is_blank("a\u200b") and not is_blank("\u00e9") and not is_blank("e\u0301")
    refused = []
    with TestClient(create_app(Settings(_env_file=None, data_dir=tmp_path / "data"), ["base"])) as http:
        deadline = time.monotonic() + 60
        while http.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, "the base model did not load"
            time.sleep(0.2)
        for invisible in ("\u200b", "\u0000", " \u200b\ufeff\u200d\t", "\u0007\u2060", "\ufffd", "\u0301\ue000"):
            refused += [http.post("/v1/embeddings", json={"input": ["ok", invisible]}),
                        http.post("/embed", json={"inputs": invisible}),
                        http.post("/rerank", json={"query": invisible, "texts": ["t"]}),
                        http.post("/v1/rerank", json={"query": "q", "documents": ["t", invisible]})]
        assert http.post("/v1/embeddings", json={"input": ["ok", "\u200bok"]}).status_code == 200
    assert [r.status_code for r in refused] == [400] * 24, [r.text for r in refused]
    assert refused[0].json()["error"]["code"] == "empty_input" and refused[1].json()["error_type"] == "empty_input"
    assert refused[3].json()["error"]["message"].startswith("documents[1] is empty")


@pytest.mark.parametrize("text", ["\u034f", "\ufe0f", "\u0301", "\u20dd", "\ufffd", "\ue000", "\U0010fffd", "\u0378",
                                  " \u0301\u200b\ufffd "])
def test_marks_without_a_letter_private_use_and_replacement_characters_are_blank(text):
    """A combining grapheme joiner, a variation selector, an accent or an enclosing circle with no letter before
    it, a private-use or unassigned code point, U+FFFD: the tokenizer drops each (or reads [UNK]), yet a query
    of one passed the empty-query check and kNN returned the empty string's neighbours as results."""
    from unirank.text import is_blank

    assert is_blank(text)
    assert not is_blank("x" + text) and not is_blank(text + "\u4e2d")  # a letter or an ideograph is a word
