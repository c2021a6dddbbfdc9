"""One chat turn: rewrite the follow-up, retrieve, decide whether it is covered, answer, remember.

The CLI, the app server and the benchmark all go through :class:`ChatService`, so a question gets
the same answer whichever surface asked it.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import time
from functools import cached_property
from typing import Iterator, Mapping, Protocol, Sequence

from unirank.api import Unirank
from unirank.chat.extractive import ExtractiveAnswerer
from unirank.chat.retrieval import Retriever
from unirank.chat.rewrite import QueryRewriter
from unirank.chat.store import ConversationStore, Session, turn_problem
from unirank.chat.types import (
    NOT_COVERED, AnswerEvent, ChatAnswer, ChatEvent, Completed, Delta, Final, Passage, Retrieved, Turn, Usage,
    add_usage,
)
from unirank.errors import InvalidQueryError, UnirankError
from unirank.text import is_blank


class Answerer(Protocol):
    """Turns a question and its numbered context passages into a cited answer, streamed."""

    name: str

    def stream(self, question: str, passages: Sequence[Passage], *,
               as_asked: str | None = None) -> Iterator[AnswerEvent]:
        """Yields :class:`Delta` pieces of the answer, then one :class:`Final` with its citations.
        ``question`` stands alone; ``as_asked`` is the user's follow-up in their words, when it differs."""
        ...


def make_answerer(ur: Unirank, retriever: Retriever) -> Answerer:
    settings = ur.settings.chat
    if settings.answerer == "openai":
        from unirank.chat.llm import OpenAIAnswerer

        return OpenAIAnswerer(settings)
    return ExtractiveAnswerer(retriever.scorer, max_sentences=settings.max_sentences,
                             fallback=lambda: retriever.cosine)


#: How to name the index to answer from, in the CLI and on /v1/chat/completions (which takes a "model").
NAME_THE_INDEX = ("--index NAME (over HTTP, the request's \"index\", or an index name as the \"model\"), "
                  "or chat.index in settings")


class ChatService:
    def __init__(self, ur: Unirank, store: ConversationStore | None = None, answerer: Answerer | None = None) -> None:
        self.ur = ur
        self.settings = ur.settings.chat
        self.store = store
        self.retriever = Retriever(ur, self.settings)
        if answerer is not None:
            self.__dict__["answerer"] = answerer

    @cached_property
    def answerer(self) -> Answerer:
        return make_answerer(self.ur, self.retriever)

    @cached_property
    def _answerer_takes_as_asked(self) -> bool:
        """An answerer written before ``as_asked`` was (``stream(question, passages)``) gets the stand-alone
        question alone, as it did: passed the keyword, it failed with a TypeError."""
        try:
            parameters = inspect.signature(self.answerer.stream).parameters.values()
        except (TypeError, ValueError):  # no signature to read (a builtin): keep to the old call
            return False
        return any(p.name == "as_asked" or p.kind is p.VAR_KEYWORD for p in parameters)

    @cached_property
    def rewriter(self) -> QueryRewriter:
        llm = self.answerer if hasattr(self.answerer, "rewrite") else None
        return QueryRewriter(llm)  # type: ignore[arg-type]

    def default_index(self, how: str = NAME_THE_INDEX) -> str:
        """``chat.index``, else the only index there is. ``how``: the ways the caller has to name one, for the
        error when there is none (an HTTP route that takes no ``model`` does not offer it)."""
        if self.settings.index:
            return self.settings.index
        indexes = self.ur.list_indexes()
        originals = [i.name for i in indexes if i.copy_of is None]  # eval's re-embedded copies are not meant
        if len(originals) == 1:
            return originals[0]
        names = [i.name for i in indexes]
        hint = f" (there are: {', '.join(names)})" if names else " (there are none yet: run `unirank ingest`)"
        raise InvalidQueryError(f"Name the index to answer from{hint}: {how}.")

    def load_models(self, index: str | None = None, *, check_answerer: bool = False) -> None:
        """Load what a question needs now (the embedder, the one ``index``'s vectors are comparable with, the
        reranker, the answerer), so a bad model name fails the start of a chat or a server, not its first
        question. ``index`` defaults to the default index, when there is one; ``check_answerer`` also asks an
        LLM endpoint whether it can be reached."""
        self.ur.embedder  # noqa: B018 - cached properties: loading them is the point
        if index is None:
            try:
                index = self.default_index()
            except InvalidQueryError:  # no default index: requests name theirs, loaded when asked
                index = None
        if index is not None and self.ur.backend.exists(index):  # it may have been made by another model
            self.retriever.searcher.embedder_for(index)
        self.retriever.scorer  # noqa: B018
        check_reachable = getattr(self.answerer, "check_reachable", None)  # an LLM endpoint's answerer
        if check_answerer and check_reachable is not None:
            check_reachable()

    def ask(self, question: str, index: str | None = None, *, session_id: str | None = None,
            history: Sequence[Turn] | None = None, filters: Mapping[str, str] | None = None,
            new_session: bool = False) -> ChatAnswer:
        for event in self.stream(question, index, session_id=session_id, history=history, filters=filters,
                                 new_session=new_session):
            if isinstance(event, Completed):
                return event.answer
        raise AssertionError("the chat stream ended without an answer")  # pragma: no cover

    def stream(self, question: str, index: str | None = None, *, session_id: str | None = None,
               history: Sequence[Turn] | None = None, filters: Mapping[str, str] | None = None,
               new_session: bool = False) -> Iterator[ChatEvent]:
        """Events of one turn: :class:`Retrieved`, then :class:`Delta` pieces, then :class:`Completed`.

        With ``session_id`` the session's stored history is used and the turn is stored in it;
        otherwise ``history`` (e.g. an OpenAI request's earlier messages) and the answer is stored
        on its own, so feedback can still point at it. With ``new_session`` the turn starts a session of
        ``index``, made only as the answer is stored (the answer's ``session_id`` names it): a session made
        before would stay empty when the answer fails or its process is killed meanwhile.
        """
        if not isinstance(question, str):
            raise InvalidQueryError(f"The question must be text, got {type(question).__name__}.")
        if is_blank(question):  # a zero-width space passed .strip()
            raise InvalidQueryError("The question is empty: ask something.")
        if new_session:
            _refuse_new_session_with(session_id, history, self.store)
        if history is not None:
            history = _checked_history(history)
        if session_id is not None:
            index = self.session_index(session_id, index)
            history = self.store.history(session_id)  # type: ignore[union-attr]
        index = index or self.default_index()
        self.ur.backend.model(index)  # a missing index is said now, not once the events are read
        return self._turn(question, index, session_id, history, filters, new_session)

    def create_session(self, index: str | None = None, title: str = "") -> Session:
        """A session of ``index`` (the default index when None) that exists now: the store alone keeps any
        name, and a misspelt one was listed as a conversation until its first question failed."""
        if self.store is None:
            raise InvalidQueryError("Sessions need a conversation store: ChatService(ur, ConversationStore(path)).")
        index = index or self.default_index()
        self.ur.index_info(index)  # IndexNotFoundError names the indexes there are
        return self.store.create_session(index, title)

    def session_index(self, session_id: str, named: str | None = None) -> str:
        """The session's index; a request naming another is refused, not answered from it: its messages
        would be stored in a session of other documents, and follow-ups rewritten with that history."""
        if self.store is None:
            raise InvalidQueryError("Sessions need a conversation store: ChatService(ur, ConversationStore(path)); "
                                    "without one, pass the earlier turns as history=[Turn(...)].")
        index = self.store.session(session_id).index
        if named and named != index:
            raise InvalidQueryError(f"Session {session_id!r} answers from index {index!r}, not {named!r}: drop "
                                    f"`model`/`index`, send {index!r}, or start a new session for {named!r}.")
        return index

    def _turn(self, question: str, index: str, session_id: str | None, history: Sequence[Turn] | None,
              filters: Mapping[str, str] | None, new_session: bool = False) -> Iterator[ChatEvent]:
        started = time.perf_counter()
        timings: dict[str, float] = {}
        rewriter, rewrites = self._rewriter_of_one_turn()
        query = rewriter.rewrite(question, history or [],
                                 related=lambda words: self.retriever.texts_about(words, index, filters))
        timings["rewrite"] = _ms(started)
        retrieval = self.retriever.retrieve(query, index, filters)
        timings.update(retrieval.timings_ms)
        yield Retrieved(query=query, passages=retrieval.passages, grounded=retrieval.grounded)

        final: Final | None = None
        if not retrieval.grounded:
            text = NOT_COVERED + ("" if retrieval.passages else self._why_nothing_matched(index, filters))
            final = Final(text, [], Usage())  # no answerer ran: no tokens
            timings["first_token"] = _ms(started)
            yield Delta(text)
        else:
            follow_up = question.strip() != query and self._answerer_takes_as_asked
            events = self.answerer.stream(query, retrieval.passages,
                                          **({"as_asked": question.strip()} if follow_up else {}))
            try:
                for event in events:
                    if isinstance(event, Final):
                        final = event
                        continue
                    timings.setdefault("first_token", _ms(started))
                    yield event
            finally:  # a turn closed early (its client left) closes the LLM's stream now, not at garbage collection
                close = getattr(events, "close", None)
                if close is not None:
                    close()
        assert final is not None, "the answerer ended without a Final event"
        timings["total"] = _ms(started)
        answer = ChatAnswer(
            question=question.strip(), query=query, answer=final.text,
            grounded=retrieval.grounded and bool(final.citations), citations=final.citations,
            answerer=self.answerer.name if retrieval.grounded else "none", relevance=retrieval.relevance,
            threshold=retrieval.threshold, session_id=session_id, timings_ms=timings,
            usage=add_usage(rewrites.usage, self._cost_of(final)),
        )
        if self.store is not None:
            self._remember(answer, index, new_session)
        yield Completed(answer)

    def _remember(self, answer: ChatAnswer, index: str, new_session: bool) -> None:
        """Stores the turn (in a session made now, with ``new_session``), setting the answer's ids."""
        store = self.store
        assert store is not None
        if new_session:
            answer.session_id = store.create_session(index).id
        try:
            _, stored = store.add_turn(answer.session_id, index, answer.question, answer.answer, query=answer.query,
                                       grounded=answer.grounded, citations=answer.citations,
                                       answerer=answer.answerer)
        except BaseException:  # the session made for this turn must not outlive it empty
            if new_session:
                with contextlib.suppress(UnirankError):
                    store.delete_session(answer.session_id)  # type: ignore[arg-type]
            raise
        answer.message_id = stored.id

    def _rewriter_of_one_turn(self) -> tuple[QueryRewriter, "_CountedRewrites"]:
        """The rewriter, its LLM's rewrites counted for this turn alone: a copy, as turns run side by side.
        A rewriter of the caller's own (any object with ``rewrite``) is used as it is, at a cost unknown."""
        if not isinstance(self.rewriter, QueryRewriter):
            return self.rewriter, _CountedRewrites.unknown()
        rewriter = copy.copy(self.rewriter)
        rewrites = _CountedRewrites(rewriter.llm)
        if rewriter.llm is not None:
            rewriter.llm = rewrites  # type: ignore[assignment]
        return rewriter, rewrites

    def _cost_of(self, final: Final) -> Usage | None:
        """The tokens the answerer's :class:`Final` says it cost; the extractive answerer runs no language model."""
        return Usage() if isinstance(self.answerer, ExtractiveAnswerer) else final.usage

    def _why_nothing_matched(self, index: str, filters: Mapping[str, str] | None) -> str:
        """Why no passage came back, when it is not a gap in the documents; "" when it is."""
        if filters:  # "--filter category=Data" for "data" looked like a gap
            shown = ", ".join(f"{key}={value}" for key, value in filters.items())
            return (f" No passage matches the filter {shown}: a filter keeps passages whose value is exactly "
                    "the one given, capitals included.")
        if self.ur.index_info(index).chunk_count == 0:  # every question looked like a gap
            return f" {empty_index_hint(index)}"
        return ""


class _CountedRewrites:
    """An LLM rewriter whose rewrites add the tokens they cost to :attr:`usage` (None once one is not known)."""

    def __init__(self, llm: object) -> None:
        self.llm = llm
        self.usage: Usage | None = Usage()

    @classmethod
    def unknown(cls) -> "_CountedRewrites":
        """The count of a rewriter that may run a model unseen: unknown (None), never made up as zero."""
        counted = cls(None)
        counted.usage = None
        return counted

    def rewrite(self, question: str, history: Sequence[Turn]) -> str:
        counted = getattr(self.llm, "rewrite_counted", None)
        if counted is None:  # a rewriter of the caller's own: what it cost is not known
            self.usage = None
            return self.llm.rewrite(question, history)  # type: ignore[attr-defined]
        text, cost = counted(question, history)
        self.usage = add_usage(self.usage, cost)
        return text


def _refuse_new_session_with(session_id: str | None, history: Sequence[Turn] | None,
                             store: ConversationStore | None) -> None:
    """``new_session`` starts a conversation: it has no session yet, nor earlier turns."""
    if store is None:
        raise InvalidQueryError("new_session needs a conversation store: ChatService(ur, ConversationStore(path)).")
    if session_id is not None or history is not None:
        raise InvalidQueryError("new_session starts a conversation: pass it without session_id or history (ask "
                                "in an existing session with session_id alone).")


def _checked_history(history: Sequence[Turn]) -> list[Turn]:
    """The turns as a list (a generator would be used up by the check), each one the rewriter can read:
    others are refused, as OpenAI's endpoint refuses them. A "User" turn was dropped without a word, so
    its follow-up was not rewritten and came back "not covered"."""
    try:
        history = list(history)
    except TypeError:
        raise InvalidQueryError("history must be a list of unirank.chat.Turn(role, content), oldest first.") from None
    if not all(isinstance(turn, Turn) for turn in history):
        raise InvalidQueryError("history must be a list of unirank.chat.Turn(role, content), oldest first.")
    for i, turn in enumerate(history):
        problem = turn_problem(turn.role, turn.content)
        if problem:
            raise InvalidQueryError(f"history[{i}]: {problem}. Each turn is Turn(role, content), with role 'user' "
                                    "or 'assistant' and content the message's text.")
    return history


def empty_index_hint(index: str) -> str:
    return f"Index {index!r} holds no documents: ingest some with `unirank ingest SOURCE --index {index}`."


def _ms(since: float) -> float:
    return round((time.perf_counter() - since) * 1000, 3)
