"""``unirank ask``, ``unirank chat`` and ``unirank serve api``: the chatbot from the terminal and over HTTP."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.markup import escape
from rich.prompt import Prompt

from unirank.cli.context import FILTER_HELP, client, load_settings, parse_filters
from unirank.cli.output import console, errors, fail, print_error, print_json, shown_uri
from unirank.errors import InvalidQueryError, UnirankError
from unirank.search.backend import refuse_unknown_filter_keys

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
                elif isinstance(event, Completed):
                    console.print()
                    _print_sources(event.answer.citations)
        except UnirankError as exc:
            fail(exc)


def chat(
    index: Annotated[Optional[str], typer.Option("--index", "-i", help=INDEX_HELP)] = None,
    filter_: Annotated[Optional[list[str]], typer.Option("--filter", "-f", help=FILTER_HELP)] = None,
) -> None:
    """Chat with your documents in the terminal; follow-up questions use the conversation so far."""
    from unirank.chat.service import ChatService
    from unirank.chat.store import ConversationStore, Session
    from unirank.chat.types import ChatAnswer, Completed, Delta

    with client() as ur, ConversationStore(ur.settings.chat_db_path) as store:
        service = ChatService(ur, store)
        try:
            filters = parse_filters(filter_)
            index = index or service.default_index()
            ur.index_info(index)  # a missing index is said, with the ones there are, before the first question
            _refuse_unknown_filter_keys(ur, index, filters)
        except UnirankError as exc:
            fail(exc)
        # Made on the first question: a chat left (or a /new) before asking stored an empty "(untitled)" session.
        session: Session | None = None
        last: ChatAnswer | None = None
        only = f" ({escape(', '.join(f'{k}={v}' for k, v in filters.items()))} only)" if filters else ""
        console.print(f"[bold]unirank chat[/bold] on index [bold]{escape(index)}[/bold]{only}. {CHAT_HELP}")
        while True:
            try:
                line = Prompt.ask("\n[bold cyan]you[/bold cyan]", console=console).strip()
            except (EOFError, KeyboardInterrupt):
                console.print()
                return
            if not line:
                continue
            command, _, arg = line.partition(" ")
            if command in ("/quit", "/exit"):
                return
            if command == "/new":
                session = None
                last = None
                console.print("[dim]New conversation.[/dim]")
                continue
            if command in ("/up", "/down", "/open"):
                _chat_command(store, last, command, arg)
                continue
            if re.fullmatch(r"/\w+|/\?", command) and not arg:  # a mistyped command, not a question to search
                known = "" if command in ("/help", "/?") else f"[yellow]Unknown command {escape(command)}.[/yellow] "
                console.print(f"{known}{CHAT_HELP}")
                continue
            console.print("[bold green]unirank[/bold green] ", end="")
            try:
                session = session or store.create_session(index)
                for event in service.stream(line, session_id=session.id, filters=filters):
                    if isinstance(event, Delta):
                        console.print(event.text, end="", markup=False, highlight=False, soft_wrap=True)
                    elif isinstance(event, Completed):
                        last = event.answer
                        console.print()
                        if last.query != last.question:
                            console.print(f"[dim]searched for: {escape(last.query)}[/dim]")
                        _print_sources(last.citations)
            except UnirankError as exc:
                console.print()
                print_error(exc)


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
            p = citation.passage
            console.print(f"{escape(p[:citation.start])}[reverse]{escape(p[citation.start:citation.end])}[/reverse]"
                          f"{escape(p[citation.end:])}")
        else:
            store.add_feedback(last.message_id, command[1:])
            console.print("[dim]Thanks: noted.[/dim]")
    except ValueError:
        console.print("[yellow]Usage: /open N, where N is a citation number.[/yellow]")
    except UnirankError as exc:
        print_error(exc)


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
    if index:
        settings.chat.index = index
    host = host or settings.api.host
    port = port or settings.api.port
    try:
        refuse_busy_port(host, port)
        app = create_app(settings)
        if index:  # a missing one is said now: every question would get a 404
            app.state.chat.ur.index_info(index)
        default = app.state.chat.default_index()
    except InvalidQueryError as exc:  # no default index: the server still answers requests that name one
        default = None
        errors.print(f"[yellow]warning:[/yellow] {escape(str(exc))} Until then each request must name its index.",
                     soft_wrap=True)
    except UnirankError as exc:
        fail(exc)
    where = f", answering from {escape(default)} by default" if default else ""
    errors.print(f"unirank app server on http://{host}:{port}/ (chat page), API under /v1{where}", soft_wrap=True)
    uvicorn.run(app, host=host, port=port, log_level="info")
