"""``unirank ask``, ``unirank chat`` and ``unirank serve api``: the chatbot from the terminal and over HTTP."""

from __future__ import annotations

import re
import sys
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.prompt import Prompt
from rich.text import Text

from unirank.cli.context import FILTER_HELP, client, load_settings, parse_filters
from unirank.cli.output import console, errors, fail, print_error, print_json, shown_uri
from unirank.errors import ConversationNotFoundError, InvalidQueryError, UnirankError
from unirank.search.backend import refuse_unknown_filter_keys
from unirank.text import LONE_SURROGATE

if TYPE_CHECKING:
    from unirank.api import Unirank

INDEX_HELP = "Index to answer from (default: chat.index, or the only index)."
CHAT_HELP = ("Commands: /up or /down rate the last answer, /open N shows source N, /new starts a new "
             "conversation, /help shows this, /quit (or Ctrl-D) leaves.")


def _refuse_unknown_filter_keys(ur: Unirank, index: str, filters: dict[str, str]) -> None:
    """Before the first question: the answer would be "not covered" when a filter's key matches nothing."""
    if filters:
        refuse_unknown_filter_keys(filters, ur.backend.filter_keys(index))


def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    index: Annotated[Optional[str], typer.Option("--index", "-i", help=INDEX_HELP)] = None,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", "-f", help=FILTER_HELP)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print {answer, grounded, citations} as JSON.")] = False,
) -> None:
    """Answer one question from the documents, with citations."""
    from unirank.chat.service import ChatService
    from unirank.chat.types import Completed, Delta

    with client() as ur:
        service = ChatService(ur)
        mid_line = False
        try:
            filters = parse_filters(filter_)
            index = index or service.default_index()
            _refuse_unknown_filter_keys(ur, index, filters)
            if as_json:
                print_json(service.ask(question, index, filters=filters).brief())
                return
            for event in service.stream(question, index, filters=filters):
                if isinstance(event, Delta):
                    console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                    mid_line = True
                elif isinstance(event, Completed):
                    console.print()
                    _print_sources(event.answer.citations)
        except UnirankError as exc:
            if mid_line:  # the error goes under the part of the answer that came, not on its line
                console.print()
            fail(exc)


def chat(
    index: Annotated[Optional[str], typer.Option("--index", "-i", help=INDEX_HELP)] = None,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", "-f", help=FILTER_HELP)] = None,
) -> None:
    """Chat with your documents in the terminal; follow-up questions use the conversation so far."""
    from unirank.chat.service import ChatService, empty_index_hint
    from unirank.chat.store import ConversationStore

    with client() as ur:
        try:
            store = ConversationStore(ur.settings.chat_db_path)
        except UnirankError as exc:
            fail(exc)
        with store:
            service = ChatService(ur, store)
            try:
                filters = parse_filters(filter_)
                index = index or service.default_index()
                # a missing index is said, with the ones there are, before the first question
                if ur.index_info(index).chunk_count == 0:
                    errors.print(f"[yellow]warning:[/yellow] {escape(empty_index_hint(index))}", soft_wrap=True)
                _refuse_unknown_filter_keys(ur, index, filters)
                service.load_models(index, check_answerer=True)  # a bad model or answerer is said now, not per question
            except UnirankError as exc:
                fail(exc)
            unanswered = _Chat(service, index, filters).run()
    if unanswered and not sys.stdin.isatty():  # a script reading the transcript learns that it is incomplete
        raise typer.Exit(1)


class _Chat:
    """The terminal conversation: a prompt loop over one index."""

    def __init__(self, service, index: str, filters: dict[str, str]) -> None:
        self.service = service
        self.store = service.store
        self.index = index
        self.filters = filters
        #: The conversation's session id: made as the first answer is stored, so a question that gets no answer
        #: (failed, cancelled, or the chat killed meanwhile) leaves no empty "(untitled)" one.
        self.session: str | None = None
        self.last = None
        #: Questions that got no answer (failed, cancelled, or not UTF-8 text).
        self.unanswered = 0
        self.echo = not sys.stdin.isatty()  # piped in: the question is not echoed by a terminal

    def run(self) -> int:
        filters = self.filters
        only = f" ({escape(', '.join(f'{k}={v}' for k, v in filters.items()))} only)" if filters else ""
        console.print(f"[bold]unirank chat[/bold] on index [bold]{escape(self.index)}[/bold]{only}. {CHAT_HELP}")
        # Bytes that are not UTF-8 arrive as lone surrogates rather than ending the chat with a traceback.
        errors_before = getattr(sys.stdin, "errors", None)
        reconfigured = _reconfigure_stdin(errors="surrogateescape")
        try:
            while self._one_line():
                pass
        finally:
            if reconfigured and errors_before:
                _reconfigure_stdin(errors=errors_before)
        return self.unanswered

    def _one_line(self) -> bool:
        """Reads and handles one line; False when the chat ends."""
        try:
            # A file saved with a byte-order mark (Notepad's UTF-8) starts with U+FEFF, which strip() keeps:
            # its "/help" was asked as a question, and a question's BOM went into the conversation's title.
            line = Prompt.ask("\n[bold cyan]you[/bold cyan]", console=console).lstrip("\ufeff").strip()
        except (EOFError, KeyboardInterrupt):
            console.print()
            return False
        except UnicodeDecodeError:  # stdin kept strict decoding: it had been read from before the chat
            return self._not_text()
        if self.echo:
            console.print(_printable(line), markup=False, highlight=False)
        if LONE_SURROGATE.search(line):  # a byte that is not UTF-8, as surrogateescape reads it
            return self._not_text()
        if not line:
            return True
        command, _, arg = line.partition(" ")
        if command in ("/quit", "/exit"):
            return False
        if command == "/new":
            self.session = None
            self.last = None
            console.print("[dim]New conversation.[/dim]")
            return True
        if command in ("/up", "/down", "/open"):
            _chat_command(self.store, self.last, command, arg)
            return True
        if re.fullmatch(r"/\w+|/\?", command) and not arg:  # a mistyped command, not a question to search
            known = "" if command in ("/help", "/?") else f"[yellow]Unknown command {escape(command)}.[/yellow] "
            console.print(f"{known}{CHAT_HELP}")
            return True
        try:
            answered = self._answer(line)
        except UnirankError as exc:  # the conversation database failed before the question was asked
            print_error(exc)
            answered = False
        if not answered:
            self.unanswered += 1
        return True

    def _not_text(self) -> bool:
        self.unanswered += 1
        encoding = getattr(sys.stdin, "encoding", None) or "UTF-8"
        console.print(f"[yellow]That line is not {escape(encoding.upper())} text, so it was not asked: set "
                      "the terminal (or the file) to UTF-8 and ask again.[/yellow]")
        return True

    def _answer(self, question: str) -> bool:
        """Streams the answer to ``question`` in the conversation; False when it got none."""
        from unirank.chat.types import Completed, Delta

        if self.session is not None and not self._exists(self.session):
            self.session = None  # deleted elsewhere (the web page): its history went with it
            console.print("[yellow]This conversation was deleted elsewhere, so this question starts a new "
                          "one.[/yellow]")
        console.print("[bold green]unirank[/bold green] ", end="")
        # /up, /down and /open then act on this question's answer, not an earlier one when this one gets none.
        self.last = None
        events = None
        try:
            if self.session is None:
                events = self.service.stream(question, self.index, new_session=True, filters=self.filters)
            else:
                events = self.service.stream(question, session_id=self.session, filters=self.filters)
            for event in events:
                if isinstance(event, Delta):
                    console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                elif isinstance(event, Completed):
                    self.last = event.answer
                    self.session = self.last.session_id
                    console.print()
                    if self.last.query != self.last.question:
                        console.print(f"[dim]searched for: {escape(self.last.query)}[/dim]")
                    _print_sources(self.last.citations)
            return True
        except KeyboardInterrupt:
            console.print("\n[yellow]Answer cancelled.[/yellow] [dim]Ask again, or Ctrl-D to leave.[/dim]")
        except ConversationNotFoundError as exc:
            console.print()
            if self.session is not None and not self._exists(self.session):
                console.print("[yellow]This conversation was deleted elsewhere while the answer was written, "
                              "so it was not kept; the next question starts a new conversation.[/yellow]")
                self.session = None
            else:
                print_error(exc)
        except UnirankError as exc:
            console.print()
            print_error(exc)
        finally:
            if events is not None:
                events.close()  # a cancelled answer stops where it was
        return False

    def _exists(self, session_id: str) -> bool:
        try:
            self.store.session(session_id)
        except ConversationNotFoundError:
            return False
        return True


def _reconfigure_stdin(**options: str) -> bool:
    reconfigure = getattr(sys.stdin, "reconfigure", None)
    if reconfigure is None:
        return False
    try:
        reconfigure(**options)
    except (OSError, ValueError):  # io.UnsupportedOperation: text already read and not yet used
        return False
    return True


def _printable(line: str) -> str:
    """The line as it can be written out: a byte that is not UTF-8 shows as \ufffd."""
    return line.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _chat_command(store, last, command: str, arg: str) -> None:
    if last is None or last.message_id is None:
        console.print("[yellow]Ask something first.[/yellow]")
        return
    try:
        if command == "/open":
            n = int(arg)
            cited = [c.n for c in last.citations]
            if n not in cited:
                listed = ", ".join(f"/open {c}" for c in cited)
                console.print(f"[yellow]The last answer has no source [{n}]"
                              f"{f'; try {listed}' if cited else ': it cites nothing'}.[/yellow]")
                return
            citation = store.message(last.message_id).citation(n)
            store.add_feedback(last.message_id, "click", n)
            where = " · ".join(p for p in (citation.heading, f"page {citation.page}" if citation.page else "",
                                            shown_uri(citation.uri)) if p)
            console.print(f"[bold][{n}] {escape(citation.title)}[/bold]  [dim]{escape(where)}[/dim]")
            console.print(_marked(citation))
        else:
            store.add_feedback(last.message_id, command[1:])
            console.print("[dim]Thanks: noted.[/dim]")
    except ValueError:
        console.print("[yellow]Usage: /open N, where N is a citation number.[/yellow]")
    except UnirankError as exc:
        print_error(exc)


def _marked(citation) -> Text:
    """The cited passage with each quoted sentence marked (``spans``, as the web page marks them): an
    answer quoting sentences 1 and 3 does not mark sentence 2, which ``start:end`` spans."""
    text = Text(citation.passage)
    for start, end in citation.quoted_spans():
        text.stylize("reverse", start, end)
    return text


def _print_sources(citations) -> None:
    for c in citations:
        where = " › ".join(p for p in (c.title, c.heading) if p)
        page = f" p.{c.page}" if c.page else ""
        console.print(f"  [bold][{c.n}][/bold] {escape(where)}{page}  [dim]{escape(shown_uri(c.uri))}[/dim]")


def serve_api(
    host: Annotated[Optional[str], typer.Option(help="Interface (default: api.host, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default: api.port, 8000).")] = None,
    index: Annotated[Optional[str], typer.Option("--index", "-i", help=INDEX_HELP)] = None,
) -> None:
    """Run the app server: the chat API (OpenAI-compatible and sessions), search, and the web page at /."""
    import uvicorn

    from unirank.app.server import create_app
    from unirank.cli.serve import refuse_busy_port

    settings = load_settings()
    if index is not None:
        if not index.strip():  # "" was read as no --index, and the default index answered
            fail(InvalidQueryError("--index is empty: name the index to answer from, or leave --index out to use "
                                   "chat.index or the only index."))
        settings.chat.index = index
    host = host or settings.api.host
    port = port or settings.api.port
    try:
        refuse_busy_port(host, port)
        # The models load here, before the banner: in the server's start-up a bad one was a traceback and
        # "Application startup failed" (exit 3) after the banner had said it was running.
        app = create_app(settings, warm_up=False)
        service = app.state.chat
        try:
            default = service.default_index()
        except InvalidQueryError as exc:  # no default index: the server still answers requests that name one
            default = None
            errors.print(f"[yellow]warning:[/yellow] {escape(str(exc))} Until then each request must name its "
                         "index.", soft_wrap=True)
        if default is not None:  # --index or chat.index: a missing or misnamed one is said now, as every
            service.ur.index_info(default)  # request naming no index would get a 404
        service.load_models()
    except UnirankError as exc:
        fail(exc)
    where = f", answering from {escape(default)} by default" if default else ""
    errors.print(f"unirank app server on http://{host}:{port}/ (chat page), API under /v1{where}", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
