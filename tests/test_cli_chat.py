"""``unirank chat`` in the terminal, run as users run it (a real subprocess over the sample handbook):
what it refuses before the first question, lines that are not UTF-8, piped transcripts and exit codes,
a conversation deleted elsewhere, Ctrl-C while an answer is written, and ``/open N``."""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chat_helpers import OpenAIProtocolServer, build_corpus, free_port, isolated_env
from unirank.chat import ConversationStore
from unirank.chat.types import ChatAnswer, Citation
from unirank.errors import ConfigurationError

CHAT = [sys.executable, "-m", "unirank.cli.main", "chat", "--index", "handbook"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory, base_embedder) -> Path:
    """A data dir with the index ``handbook`` (the sample docs)."""
    ur = build_corpus(tmp_path_factory.mktemp("cli-chat"), base_embedder, hostile=False)
    ur.close()
    return ur.settings.data_dir


def chat(data_dir: Path, tmp_path: Path, script: bytes, **env: str) -> subprocess.CompletedProcess:
    """``unirank chat`` with ``script`` piped in; the conversations go to ``tmp_path/chat.sqlite``."""
    env = isolated_env(data_dir, UNIRANK_CHAT__DB_PATH=str(tmp_path / "chat.sqlite"), COLUMNS="200", **env)
    return subprocess.run(CHAT, input=script, env=env, capture_output=True, timeout=300, cwd=tmp_path)


def sessions(tmp_path: Path) -> list:
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        return [(s, store.messages(s.id)) for s in store.sessions()]


def test_a_file_that_is_not_sqlite_is_refused_as_chat_db_path(tmp_path):
    bad = tmp_path / "bad.sqlite"
    bad.write_text("x\n")
    with pytest.raises(ConfigurationError, match=r"chat.db_path .*bad.sqlite is not a SQLite database .*Move it "
                                                 r"aside .* or set chat.db_path to another file"):
        ConversationStore(bad)
    with pytest.raises(ConfigurationError, match=r"chat.db_path .* cannot be opened as the conversation database"):
        ConversationStore(tmp_path)  # a folder
    assert bad.read_text() == "x\n"  # nothing written over it


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_chat_and_serve_api_refuse_a_corrupt_conversation_db(data_dir, tmp_path):
    (tmp_path / "chat.sqlite").write_text("x\n")
    proc = chat(data_dir, tmp_path, b"")
    stderr = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert f"error: chat.db_path {tmp_path / 'chat.sqlite'} is not a SQLite database" in stderr
    assert "you:" not in proc.stdout.decode()

    env = isolated_env(data_dir, UNIRANK_CHAT__DB_PATH=str(tmp_path / "chat.sqlite"), COLUMNS="200")
    served = subprocess.run([sys.executable, "-m", "unirank.cli.main", "serve", "api", "--port", str(free_port())],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert served.returncode == 2 and "is not a SQLite database" in " ".join(served.stderr.split()), served.stderr


def test_serve_api_refuses_a_chat_index_that_does_not_exist(data_dir, tmp_path):
    """`--index nope` was refused, but chat.index = nope started a server that listed the model `unirank` and
    answered every request naming no index with a 404."""
    env = isolated_env(data_dir, UNIRANK_CHAT__INDEX="nope", UNIRANK_CHAT__DB_PATH=str(tmp_path / "chat.sqlite"))
    served = subprocess.run([sys.executable, "-m", "unirank.cli.main", "serve", "api", "--port", str(free_port())],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    stderr = " ".join(served.stderr.split())
    assert served.returncode == 2 and "Index 'nope' does not exist" in stderr, served.stderr
    assert "app server on" not in stderr and "Uvicorn" not in stderr


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
@pytest.mark.parametrize("encoding", [{"PYTHONIOENCODING": "utf-8"}, {"LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}],
                         ids=["strict", "surrogateescape"])
def test_a_line_that_is_not_utf8_is_not_asked_and_the_chat_goes_on(data_dir, tmp_path, monkeypatch, encoding):
    """The second also shows a piped transcript: each question is echoed after its prompt."""
    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    proc = chat(data_dir, tmp_path, b"what is caf\xe9 SEV1?\nWhat does SEV1 mean?\n", **encoding)
    out, err = proc.stdout.decode(), proc.stderr.decode()
    assert "Traceback" not in err and "surrogate" not in out + err, err
    assert "you: what is caf\ufffd SEV1?\nThat line is not UTF-8 text, so it was not asked" in out
    assert "you: What does SEV1 mean?\nunirank From the documents: “SEV1: the product is down" in out
    assert proc.returncode == 1  # piped, and one line got no answer
    (only, messages), = sessions(tmp_path)
    assert [m.content for m in messages][0] == "What does SEV1 mean?"


def test_a_piped_chat_that_answers_everything_exits_0_with_the_questions_in_its_transcript(data_dir, tmp_path):
    proc = chat(data_dir, tmp_path, b"how do I rotate an API key?\n/open 1\n/up\n")
    out = proc.stdout.decode()
    assert proc.returncode == 0, proc.stderr
    assert "you: how do I rotate an API key?\nunirank From the documents:" in out
    assert "you: /open 1\n[1] API keys and token rotation" in out and "you: /up\nThanks: noted." in out


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_piped_input_that_starts_with_a_byte_order_mark_is_read_without_it(data_dir, tmp_path):
    """A questions file saved by Notepad: its first line's "/help" was searched as a question ("not covered"),
    and a first question was stored with U+FEFF at the start of the conversation's title."""
    proc = chat(data_dir, tmp_path, "\ufeff/help\n".encode())
    assert proc.returncode == 0, proc.stderr
    assert "you: /help\nCommands: /up or /down" in proc.stdout.decode() and sessions(tmp_path) == []

    proc = chat(data_dir, tmp_path, "\ufeffWhat does SEV1 mean?\n".encode())
    assert proc.returncode == 0, proc.stderr
    assert "you: What does SEV1 mean?\nunirank From the documents:" in proc.stdout.decode()
    (session, messages), = sessions(tmp_path)
    assert session.title == messages[0].content == "What does SEV1 mean?"


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
@pytest.mark.parametrize("setting, says", [
    ({"UNIRANK_EMBEDDER__MODEL": "nosuch-embed@prod"}, "'nosuch-embed@prod' names a registry version"),
    ({"UNIRANK_RERANKER__MODEL": "/nonexistent/xx"}, "'/nonexistent/xx' is not a registered model"),
    ({"UNIRANK_CHAT__ANSWERER": "openai"}, 'chat.answerer = "openai" needs chat.llm_base_url'),
    ({"UNIRANK_CHAT__ANSWERER": "openai", "UNIRANK_CHAT__LLM_MODEL": "m",
      "UNIRANK_CHAT__LLM_BASE_URL": f"http://127.0.0.1:{free_port()}/v1"}, "Cannot reach the LLM endpoint"),
], ids=["embedder", "reranker", "answerer", "llm-down"])
def test_a_chat_that_cannot_answer_is_refused_before_the_first_question(data_dir, tmp_path, setting, says):
    proc = chat(data_dir, tmp_path, b"q1\nq2\n", **setting)
    stderr = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert f"error: {says}" in stderr and stderr.count("error:") == 1
    assert "you:" not in proc.stdout.decode()
    assert sessions(tmp_path) == []


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_questions_that_fail_exit_1_and_leave_no_empty_conversation(data_dir, tmp_path):
    """The endpoint is up (it is asked at start-up) but answers every question with a 503."""
    llm = OpenAIProtocolServer()
    llm.fail_after = 0
    try:
        proc = chat(data_dir, tmp_path, b"How do I rotate an API key?\n/new\nWhat does SEV1 mean?\n",
                    UNIRANK_CHAT__ANSWERER="openai", UNIRANK_CHAT__LLM_BASE_URL=llm.url, UNIRANK_CHAT__LLM_MODEL="m")
    finally:
        llm.stop()
    stderr = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 1 and stderr.count("answered HTTP 503") == 2, stderr
    assert sessions(tmp_path) == []  # the web page's list shows no "(untitled)" conversations


class Terminal:
    """``unirank chat`` with its input written line by line, its output read as it comes."""

    def __init__(self, env: dict[str, str], cwd: Path) -> None:
        # SIGHUP as a terminal's chat gets it: a runner under nohup passes it on ignored, and the chat then
        # outlived the SIGHUP case.
        self.proc = subprocess.Popen(CHAT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     env={**env, "PYTHONUNBUFFERED": "1"}, cwd=cwd,
                                     preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL))
        self.out = b""
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while chunk := os.read(self.proc.stdout.fileno(), 4096):  # type: ignore[union-attr]
            self.out += chunk

    @property
    def text(self) -> str:
        return self.out.decode(errors="replace")

    def wait_for(self, predicate, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while not predicate(self.text):
            assert self.proc.poll() is None or predicate(self.text), self.text
            assert time.monotonic() < deadline, f"timed out; output so far:\n{self.text}"
            time.sleep(0.05)

    def prompts(self, n: int) -> None:
        """Waits until the n-th ``you:`` prompt is shown."""
        self.wait_for(lambda text: text.count("you: ") >= n)

    def send(self, line: str) -> None:
        self.proc.stdin.write(line.encode() + b"\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]


def llm_terminal(data_dir: Path, tmp_path: Path, llm: OpenAIProtocolServer) -> Terminal:
    """``unirank chat`` answered by ``llm``, its conversations in ``tmp_path / "chat.sqlite"``, 200 columns wide."""
    env = isolated_env(data_dir, UNIRANK_CHAT__DB_PATH=str(tmp_path / "chat.sqlite"), COLUMNS="200",
                       UNIRANK_CHAT__ANSWERER="openai", UNIRANK_CHAT__LLM_BASE_URL=llm.url, UNIRANK_CHAT__LLM_MODEL="m")
    return Terminal(env, tmp_path)


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_a_conversation_deleted_elsewhere_and_ctrl_c_while_answering(data_dir, tmp_path):
    llm = OpenAIProtocolServer()
    term = llm_terminal(data_dir, tmp_path, llm)
    try:
        term.prompts(1)
        term.send("How do I rotate an API key?")
        term.prompts(2)
        assert "According to the documents, " in term.text
        (first, _), = sessions(tmp_path)
        with ConversationStore(tmp_path / "chat.sqlite") as store:
            store.delete_session(first.id)  # as the web page's DELETE /v1/sessions/{id} does

        term.send("What does SEV1 mean?")
        term.prompts(3)
        asked = term.text.rpartition("you: ")[0].rpartition("you: ")[2]
        assert "This conversation was deleted elsewhere, so this question starts a new one." in asked
        assert "According to the documents, " in asked and "does not exist" not in asked, asked
        (second, messages), = sessions(tmp_path)
        assert second.id != first.id and [m.content for m in messages][0] == "What does SEV1 mean?"

        term.send("/new")
        term.prompts(4)
        llm.delay_s = 5  # an answer slow enough to be cancelled
        term.send("How do I reset my password?")
        term.wait_for(lambda text: "How do I reset my password?\nunirank " in text)
        time.sleep(0.5)
        term.proc.send_signal(signal.SIGINT)
        term.wait_for(lambda text: "Answer cancelled." in text, timeout=10)
        term.prompts(5)  # back at the prompt, not out of the chat
        assert term.proc.poll() is None
        llm.delay_s = 0
        term.send("/quit")
        assert term.proc.wait(60) == 1, term.text  # piped in, and one question got no answer
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        llm.stop()
    assert "Traceback" not in term.text and "KeyboardInterrupt" not in term.text, term.text
    assert [s.id for s, _ in sessions(tmp_path)] == [second.id]  # the cancelled question left no empty one


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_chat_killed_while_its_first_answer_is_written_leaves_no_empty_conversation(data_dir, tmp_path, sig):
    """`timeout`, a closed terminal (SIGHUP) or `kill` end the chat without its `finally`: the session made
    before the answer stayed, empty, listed by the web page as "(untitled)"."""
    llm = OpenAIProtocolServer()
    llm.delay_s = 30  # still answering when the signal comes
    term = llm_terminal(data_dir, tmp_path, llm)
    try:
        term.prompts(1)
        term.send("How do I rotate an API key?")
        term.wait_for(lambda text: "How do I rotate an API key?\nunirank " in text)
        deadline = time.monotonic() + 30
        while not llm.requests and time.monotonic() < deadline:  # the answer is being written
            time.sleep(0.05)
        assert llm.requests, term.text
        term.proc.send_signal(sig)
        assert term.proc.wait(30) == -sig
    finally:
        if term.proc.poll() is None:
            term.proc.kill()
        llm.stop()
    assert sessions(tmp_path) == []


def test_open_marks_the_quoted_sentences_not_the_text_between_them(tmp_path, monkeypatch):
    """An answer that quotes sentences 1 and 3 of a passage: ``/open`` marks those two, as the web page
    does (its spans), not sentence 2 between them (``start:end``)."""
    from rich.console import Console

    import unirank.cli.chat as chat_cli

    passage = "Keys expire after 90 days. Nobody reads this. Rotate them at once if one leaks."
    one, three = (0, 26), (46, len(passage))
    citation = Citation(n=1, chunk_id="c", doc_id="d", title="Keys", uri="file:///keys.md", page=None, heading="",
                        text=passage, start=0, end=len(passage), passage=passage, spans=[one, three])
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        _, answer = store.add_turn(None, "handbook", "q", "a", citations=[citation])
        last = ChatAnswer(question="q", query="q", answer="a", grounded=True, citations=[citation],
                          answerer="extractive", message_id=answer.id)
        screen = io.StringIO()
        monkeypatch.setattr(chat_cli, "console", Console(file=screen, force_terminal=True, color_system="standard",
                                                         width=300))
        chat_cli._chat_command(store, last, "/open", "1")
    marked = re.findall(r"\x1b\[7m(.*?)\x1b\[0m", screen.getvalue())
    assert marked == [passage[slice(*one)], passage[slice(*three)]], screen.getvalue()


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_after_a_question_that_got_no_answer_down_and_open_do_not_rate_the_earlier_answer(data_dir, tmp_path):
    """/down after a failed question recorded a thumbs-down on the answer before it, which
    `train --feedback` then turns into negatives for that earlier, unrelated query."""
    llm = OpenAIProtocolServer()
    llm.fail_after = 1  # the first question is answered; every request after it gets a 503
    try:
        proc = chat(data_dir, tmp_path, b"How do I rotate an API key?\nWhat does SEV1 mean?\n/down\n/open 1\n",
                    UNIRANK_CHAT__ANSWERER="openai", UNIRANK_CHAT__LLM_BASE_URL=llm.url, UNIRANK_CHAT__LLM_MODEL="m")
    finally:
        llm.stop()
    out = proc.stdout.decode()
    assert proc.returncode == 1 and "answered HTTP 503" in " ".join(proc.stderr.decode().split()), proc.stderr
    assert "you: /down\nAsk something first." in out and "you: /open 1\nAsk something first." in out, out
    with ConversationStore(tmp_path / "chat.sqlite") as store:
        assert store.feedback() == []


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_chat_refuses_a_conversation_db_with_damaged_pages_before_the_first_question(data_dir, tmp_path):
    """Its header is whole, so it opened; the first question then ended the chat with a traceback."""
    from test_chat import damage_pages

    with ConversationStore(tmp_path / "chat.sqlite") as store:
        for _ in range(300):
            store.create_session("handbook", title="t" * 120)
    damage_pages(tmp_path / "chat.sqlite")
    proc = chat(data_dir, tmp_path, b"how long are backups kept?\n")
    stderr = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert f"error: chat.db_path {tmp_path / 'chat.sqlite'} is not a SQLite database" in stderr
    assert "it is damaged. Move it aside" in stderr and "you:" not in proc.stdout.decode()


def test_chat_refuses_another_applications_sqlite_file_before_the_first_question(data_dir, tmp_path):
    """A file with its own 'sessions' table opened, and the first question ended in a traceback."""
    import sqlite3

    other = sqlite3.connect(tmp_path / "chat.sqlite")
    other.execute("CREATE TABLE sessions (x)")
    other.commit()
    other.close()
    proc = chat(data_dir, tmp_path, b"how long are backups kept?\n")
    stderr = " ".join(proc.stderr.decode().split())
    assert proc.returncode == 2 and "Traceback" not in stderr, stderr
    assert "has a table 'sessions' with other columns (x): it is not a unirank conversation database" in stderr
    assert "you:" not in proc.stdout.decode()


@pytest.mark.slow  # a `unirank chat` process per case (~8 s each): in the slow step
def test_an_index_that_holds_no_documents_is_said_by_chat_and_ask(tmp_path, base_embedder):
    """Every question was answered "not covered", with nothing to say that the index was empty."""
    from chat_helpers import _unirank, sample_folder

    ur = _unirank(tmp_path, base_embedder)
    doc = sample_folder(tmp_path) / "backups.md"
    assert not ur.ingest(str(doc), "empty").failed
    ur.remove_sources("empty", ur.sources_under("empty", doc))
    assert ur.index_info("empty").chunk_count == 0
    ur.close()
    hint = "Index 'empty' holds no documents: ingest some with `unirank ingest SOURCE --index empty`."
    env = isolated_env(ur.settings.data_dir, UNIRANK_CHAT__DB_PATH=str(tmp_path / "chat.sqlite"), COLUMNS="200")
    chatted = subprocess.run([*CHAT[:-1], "empty"], input=b"how long are backups kept?\n", env=env,
                             capture_output=True, timeout=300, cwd=tmp_path)
    assert "warning: " + hint in " ".join(chatted.stderr.decode().split()), chatted.stderr
    assert "The documents do not cover this question. " + hint in " ".join(chatted.stdout.decode().split())
    asked = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ask", "how long are backups kept?", "-i", "empty"],
                           env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert asked.returncode == 0 and hint in " ".join(asked.stdout.split()), asked.stdout + asked.stderr
