"""An answerer on any OpenAI-compatible chat endpoint (OpenAI, DashScope compatible mode, vLLM, Ollama).

The official ``openai`` client talks to it; the answer streams through as it is generated. A slow
or unreachable endpoint becomes an :class:`AnswererError` that says which URL failed and what to
check, never a hang: every request has ``chat.llm_timeout_s``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import socket
import threading
import time
from functools import partial
from typing import Iterator, Sequence

import httpx
import openai

from unirank.chat.prompt import answer_prompt, rewrite_prompt
from unirank.chat.types import AnswerEvent, Citation, Delta, Final, Passage, Turn, Usage
from unirank.errors import AnswererError, ConfigurationError
from unirank.settings import ChatSettings, masked_url

log = logging.getLogger(__name__)

_CITATION = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")
#: A citation marker with the spaces before it (dropped with it when none of its numbers is a passage's).
_SPACED_CITATION = re.compile(r"([ \t]*)\[(\d+(?:\s*,\s*\d+)*)\]")


class OpenAIAnswerer:
    name = "openai"

    def __init__(self, settings: ChatSettings) -> None:
        if not settings.llm_base_url or not settings.llm_model:
            raise ConfigurationError(
                "chat.answerer = \"openai\" needs chat.llm_base_url (e.g. http://localhost:11434/v1) and "
                "chat.llm_model; set them in unirank.toml or UNIRANK_CHAT__LLM_BASE_URL / UNIRANK_CHAT__LLM_MODEL."
            )
        self.settings = settings
        self.base_url = settings.llm_base_url
        self.model = settings.llm_model
        # Local servers (vLLM, Ollama) take any key; the client insists on one being set.
        key = os.environ.get(settings.llm_api_key_env) or "no-key-set"
        self.client = openai.OpenAI(base_url=settings.llm_base_url, api_key=key,
                                    timeout=settings.llm_timeout_s, max_retries=0)
        #: The optional request parameters this endpoint refused (:data:`_OPTIONAL_PARAMETERS`): left out from then on.
        self.refused_parameters: set[str] = set()

    def stream(self, question: str, passages: Sequence[Passage], *,
               as_asked: str | None = None) -> Iterator[AnswerEvent]:
        """The answer's pieces as they arrive, then :class:`Final`. An answer the endpoint did not finish
        (cut off, or stopped at its token limit) is an :class:`AnswererError`, not a shorter answer.
        ``as_asked``: the follow-up as the user wrote it, when ``question`` is its stand-alone rewrite."""
        prompt = answer_prompt(question, passages, as_asked=as_asked)
        parts: list[str] = []
        shown = KnownCitations(passages)
        finish_reason: str | None = None
        usage: Usage | None = None
        with self._errors():
            stream = self._open_stream(prompt.messages)
        # Closed however this generator ends: a client that leaves mid-answer stops the LLM's work too.
        with contextlib.closing(stream), self._mid_answer_errors(parts):
            if not _is_event_stream(stream.response):  # an endpoint that ignores `stream: true`
                yield from self._whole_answer(stream.response, passages)
                return
            with StallWatch(stream.response, self.settings.llm_timeout_s) as watch:
                for chunk in stream:
                    watch.fed()
                    usage = _reported_usage(getattr(chunk, "usage", None)) or usage  # the last chunk's, as asked
                    if not chunk.choices:
                        continue  # e.g. the usage chunk
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    if choice.delta and choice.delta.content:
                        parts.append(choice.delta.content)
                        if piece := shown.feed(parts[-1]):
                            watch.hold()  # the caller's time with the piece is not the endpoint's
                            yield Delta(piece)
                            watch.fed()
        self._check_finished(finish_reason, parts)
        final = _final("".join(parts), passages, usage)
        self._check_not_empty(final.text, finish_reason)
        if rest := shown.flush():
            yield Delta(rest)
        yield final

    def _open_stream(self, messages: list[dict[str, str]]) -> openai.Stream:
        """The answer's stream, at temperature 0 and asked to end with its token counts (as far as the
        endpoint takes those parameters: see :meth:`_create`)."""
        return self._create(model=self.model, messages=messages, stream=True, temperature=0,
                            stream_options={"include_usage": True})

    def _create(self, **request: object) -> object:
        """``chat.completions.create`` without the optional parameters this endpoint refused. One it refuses
        now (a 4xx that names it: ``stream_options`` on older vLLM and some proxies, ``temperature`` 0 and
        ``max_tokens`` on OpenAI's reasoning models) is left out of a second try, and of every later request
        once a try without it is answered: a server that echoes the request in its errors names every
        parameter, and one refused on a guess that changes nothing is the original error, not a refusal."""
        left_out: list[str] = []
        while True:
            sent = {name: value for name, value in request.items()
                    if name not in self.refused_parameters and name not in left_out}
            try:
                response = self.client.chat.completions.create(**sent)  # type: ignore[call-overload]
            except openai.APIStatusError as exc:
                refused = _refused_parameter(exc, [name for name in sent if name in _OPTIONAL_PARAMETERS])
                if refused is None:
                    raise
                left_out.append(refused)
                continue
            for refused in left_out:
                log.info("%s refuses %s: %s.", _capital(self._where), refused, _OPTIONAL_PARAMETERS[refused])
                self.refused_parameters.add(refused)
            return response

    def _whole_answer(self, response: httpx.Response, passages: Sequence[Passage]) -> Iterator[AnswerEvent]:
        """The answer of an endpoint that sent one complete chat completion instead of a stream: it is the
        whole answer, at once. Any other body is refused as the non-streamed replies are."""
        response.read()
        try:
            body = response.json()
            choice = body["choices"][0]
            text, finish_reason = choice["message"]["content"] or "", choice["finish_reason"]
            if not isinstance(text, str):
                raise TypeError(type(text).__name__)
        except (ValueError, LookupError, TypeError, AttributeError):
            kind = response.headers.get("content-type") or "no Content-Type"
            raise AnswererError(
                f"{_capital(self._where)} answered with neither an event stream nor a chat completion ({kind}: "
                f"{_short(response.text, 80)!r}): check that chat.llm_base_url names an OpenAI-compatible API "
                "(usually ending in /v1).") from None
        self._check_finished(finish_reason, [text])
        final = _final(text, passages, _reported_usage(body.get("usage")))
        self._check_not_empty(final.text, finish_reason)
        if final.text:
            yield Delta(final.text)
        yield final

    def rewrite(self, question: str, history: Sequence[Turn]) -> str:
        """The LLM's stand-alone version of a follow-up question; "" when it gave none, so that the
        caller rewrites the follow-up itself (the bare follow-up would lose its context)."""
        return self.rewrite_counted(question, history)[0]

    def rewrite_counted(self, question: str, history: Sequence[Turn]) -> tuple[str, Usage | None]:
        """:meth:`rewrite`, with the tokens it cost (None when the endpoint did not say)."""
        text, usage = self.complete_counted(rewrite_prompt(question, history), temperature=0, max_tokens=96)
        text = text.strip('"').strip()
        return (text.splitlines()[0].strip() if text else ""), usage

    def complete(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                 seed: int | None = None) -> str:
        """One non-streamed reply's text ("" for none); errors as :class:`AnswererError`."""
        return self.complete_counted(messages, temperature=temperature, max_tokens=max_tokens, seed=seed)[0]

    def complete_counted(self, messages: list[dict[str, str]], *, temperature: float, max_tokens: int,
                         seed: int | None = None) -> tuple[str, Usage | None]:
        """:meth:`complete`, with the tokens the reply cost (None when the endpoint did not say)."""
        with self._errors():
            response = self._create(model=self.model, messages=messages, temperature=temperature,
                                    max_tokens=max_tokens, **({"seed": seed} if seed is not None else {}))
        choices = getattr(response, "choices", None)
        if not isinstance(choices, list):  # the openai client hands back a body it could not read as one
            raise AnswererError(f"{self._where} did not answer with a chat completion (got "
                                f"{type(response).__name__}: {str(response)[:80]!r}): check that chat.llm_base_url "
                                "names an OpenAI-compatible API (usually ending in /v1).")
        text = (choices[0].message.content or "").strip() if choices else ""
        return text, _reported_usage(getattr(response, "usage", None))

    def check_reachable(self) -> None:
        """Refuse an endpoint that is down or refuses the key before anyone asks a question. Its model
        list is asked (no tokens spent); one that answers with another status, or without a model list
        (some servers have none), is taken as reachable; a model it does not list is warned of."""
        try:
            with self._errors():
                page = self.client.models.list()
        except AnswererError as exc:
            cause = exc.__cause__
            if isinstance(cause, openai.APIStatusError) and not isinstance(cause, openai.AuthenticationError):
                return
            if isinstance(cause, ValueError):  # a body that is not a model list
                return
            raise
        except openai.APIError:
            return
        self._warn_if_unlisted([getattr(m, "id", None) for m in getattr(page, "data", None) or []])

    def _warn_if_unlisted(self, listed: list) -> None:
        """A model the endpoint does not list is warned of, not refused: Ollama and proxies answer to names
        their list spells otherwise ('llama3' for 'llama3:latest')."""
        ids = [i for i in listed if isinstance(i, str)]
        if ids and self.model not in ids:
            shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
            log.warning("%s does not list chat.llm_model %r among its models (%s): if questions then fail with "
                        "'model not found', set chat.llm_model to one of those.", masked_url(self.base_url), self.model,
                        shown)

    @property
    def _where(self) -> str:
        return f"the LLM endpoint {masked_url(self.base_url)} (model {self.model})"

    def _check_finished(self, finish_reason: str | None, parts: list[str]) -> None:
        """Refuse an answer the endpoint did not finish: stored and shown, it would pass for a whole one."""
        got = _got(parts)
        if finish_reason is None:
            raise AnswererError(
                f"The answer stream from {self._where} ended before the answer was finished ({got}, and no "
                "finish_reason): the connection was closed early, or a proxy cut it. Nothing was stored; ask "
                "again, and check the endpoint's logs if it keeps happening."
            )
        if finish_reason == "length":
            raise AnswererError(
                f"{_capital(self._where)} stopped the answer at its token limit (finish_reason \"length\", {got}), "
                "so it is cut off and was not stored. Raise the endpoint's output or context limit (vLLM "
                "--max-model-len, Ollama num_ctx/num_predict), or lower chat.context_tokens so the passages "
                "leave the answer more room; unirank sets no max tokens of its own."
            )
        if finish_reason == "content_filter":
            raise AnswererError(f"{_capital(self._where)} stopped the answer with its content filter ({got}), "
                                "so it is cut off and was not stored. Rephrase the question, or check the "
                                "endpoint's filter settings.")

    def _check_not_empty(self, text: str, finish_reason: str | None) -> None:
        """Refuse an answer with nothing in it (a finished one, markers of no passage aside): stored, it was
        a blank turn, and the web page said the documents do not cover a question they do."""
        if not text.strip():
            raise AnswererError(
                f"{_capital(self._where)} finished with an empty answer (finish_reason {finish_reason!r}), so "
                "nothing was stored. Ask again, and check the endpoint's logs if it keeps happening."
            )

    @contextlib.contextmanager
    def _mid_answer_errors(self, parts: list[str]) -> Iterator[None]:
        """Errors once the endpoint has begun to answer: it was reached, so "cannot reach" would mislead."""
        try:
            yield
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise AnswererError(
                f"{_capital(self._where)} stopped mid-answer ({_got(parts)}) and sent nothing more for "
                f"{self.settings.llm_timeout_s:g}s. Check that it is not overloaded, or raise chat.llm_timeout_s."
            ) from exc
        except (openai.APIConnectionError, httpx.HTTPError) as exc:
            cause = exc.__cause__ or exc
            raise AnswererError(
                f"{_capital(self._where)} stopped mid-answer: the connection was closed after {_got(parts)} "
                f"({_short(str(cause)).rstrip('.')}). Nothing was stored; ask again, and check the endpoint's "
                "logs if it keeps happening."
            ) from exc
        except openai.APIError as exc:  # an error event in the stream
            raise AnswererError(f"{_capital(self._where)} reported an error mid-answer ({_got(parts)}): "
                                f"{_short(exc.message).rstrip('.')}. Check the endpoint's logs.") from exc
        except ValueError as exc:  # the client lets json.JSONDecodeError through as it is
            raise AnswererError(f"{_capital(self._where)} sent an event that is not JSON mid-answer ({_got(parts)}: "
                                f"{_short(str(exc)).rstrip('.')}): check that chat.llm_base_url names an "
                                "OpenAI-compatible API (usually ending in /v1).") from exc

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        where = self._where
        try:
            yield
        except (openai.APITimeoutError, httpx.TimeoutException) as exc:
            raise AnswererError(
                f"{where} did not answer within {self.settings.llm_timeout_s:g}s. Check that it is up and "
                "not overloaded, or raise chat.llm_timeout_s."
            ) from exc
        except openai.AuthenticationError as exc:
            raise AnswererError(
                f"{where} refused the API key ({exc.status_code}). Put a valid key in the environment "
                f"variable {self.settings.llm_api_key_env} (named by chat.llm_api_key_env)."
            ) from exc
        except openai.APIStatusError as exc:
            raise AnswererError(f"{where} answered HTTP {exc.status_code}: {_short(exc.message).rstrip('.')}. "
                                "Check chat.llm_model and the endpoint's logs.") from exc
        except (openai.APIConnectionError, httpx.HTTPError) as exc:
            raise AnswererError(
                f"Cannot reach {where}: {str(exc).rstrip('.')}. Is it running, and is chat.llm_base_url right "
                "(it usually ends in /v1)?"
            ) from exc
        except ValueError as exc:  # the client lets json.JSONDecodeError through as it is
            raise AnswererError(f"{where} sent a reply that is not JSON ({_short(str(exc)).rstrip('.')}): check "
                                "that chat.llm_base_url names an OpenAI-compatible API (usually ending in /v1).") from exc


class StallWatch:
    """Cuts an answer's stream once no event has come for ``timeout_s``, so that the stream's reader fails
    as at a read timeout (:class:`openai.APITimeoutError`). The read timeout alone did not bound the wait:
    any byte restarts it, and an endpoint's keep-alive comments (``: ping``; OpenRouter's ``: OPENROUTER
    PROCESSING`` while its upstream stalls) are bytes the client then drops, so an answer that had stalled
    was waited on for ever. One thread per answer, which sleeps until the deadline."""

    def __init__(self, response: httpx.Response, timeout_s: float) -> None:
        self.response = response
        self.timeout_s = timeout_s
        self.cut = False
        self._deadline = time.monotonic() + timeout_s
        self._over = threading.Event()
        self._lock = threading.Lock()  # the stream cannot end as its watch cuts it

    def fed(self) -> None:
        """An event came (or the caller is back for the next): the endpoint has ``timeout_s`` again."""
        self._deadline = time.monotonic() + self.timeout_s

    def hold(self) -> None:
        """No deadline while the caller has the stream's last piece."""
        self._deadline = float("inf")

    def __enter__(self) -> StallWatch:
        threading.Thread(target=self._watch, name="unirank-llm-stall-watch", daemon=True).start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        with self._lock:
            self._over.set()
        # What the cut did to the reader (a closed connection, a body that ends early) is the stall's doing.
        if self.cut and (exc is None or isinstance(exc, Exception)):
            raise openai.APITimeoutError(request=self.response.request) from exc

    def _watch(self) -> None:
        while not self._over.wait(min(max(self._deadline - time.monotonic(), 0.0), self.timeout_s)):
            with self._lock:
                if self._over.is_set() or time.monotonic() < self._deadline:
                    continue
                self.cut = True
            _cut(self.response)
            return


def _cut(response: httpx.Response) -> None:
    """End the response's connection under the thread that reads it. A shutdown wakes a read in progress at
    once; a close may not until more bytes come. The plain socket's shutdown: a TLS socket's own would drop
    its TLS state under the reader."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    try:
        if isinstance(sock, socket.socket):
            socket.socket.shutdown(sock, socket.SHUT_RDWR)
        else:
            response.close()
    except OSError:  # it closed meanwhile
        pass


#: Content types an event stream may come under: some servers and proxies label theirs loosely.
_STREAM_TYPES = frozenset({"text/event-stream", "text/plain", "application/octet-stream", ""})


def _is_event_stream(response: httpx.Response) -> bool:
    return response.headers.get("content-type", "").split(";")[0].strip().lower() in _STREAM_TYPES


def _final(text: str, passages: Sequence[Passage], usage: Usage | None) -> Final:
    """The answer as stored and shown in full, without the markers that point at no passage."""
    text = without_unknown_citations(text, passages)
    return Final(text, cited(text, passages), usage)


#: The request parameters an answer can do without, each with what leaving it out costs.
_OPTIONAL_PARAMETERS = {
    "stream_options": "its answers are streamed without their token counts",
    "temperature": "it is asked at its own default temperature",
    "max_tokens": "its replies (follow-up rewrites) are asked without a token limit",
    "seed": "its replies are asked without a seed",
}


#: How endpoints say a parameter is not taken at all: OpenAI's "Unsupported parameter"/"unsupported_value",
#: pydantic's "Extra inputs are not permitted" (vLLM, FastAPI servers), "unrecognized request argument".
_REFUSAL = re.compile(r"unsupported|not supported|does not support|unrecogni[sz]ed|unknown|not permitted|"
                      r"not allowed|extra_forbidden|unexpected", re.IGNORECASE)
#: Where a pydantic validation error says the fault is: ``'loc': ('body', 'stream_options')`` (or JSON's list).
_LOCATION = re.compile(r"""['"]loc['"]\s*:\s*[(\[]([^)\]]*)[)\]]""")


def _refused_parameter(exc: openai.APIStatusError, sent: Sequence[str]) -> str | None:
    """Which of the parameters ``sent`` an endpoint's 4xx refuses as such ("unsupported", "not permitted",
    ...; "max_tokens is too large" asks for a shorter prompt, not for no limit): the one its error's
    ``param`` names (OpenAI's); else, when it says where (pydantic's ``loc``), the one named there, not one
    its echo of the request names; else the first it names as a word ("max_tokens", not in
    "max_completion_tokens") beside the refusal."""
    if not 400 <= exc.status_code < 500:
        return None
    said = f"{exc.message} {exc.body}"
    if not _REFUSAL.search(said):
        return None
    if exc.param in sent:
        return exc.param
    if locations := _LOCATION.findall(said):
        where = " ".join(locations)
        return next((name for name in sent if re.search(rf"\b{name}\b", where)), None)
    return next((name for name in sent if re.search(_beside_refusal(name), said, re.IGNORECASE)), None)


def _beside_refusal(name: str) -> str:
    """``name`` as a word within 40 characters of a refusal's words, on the same line."""
    refusal = _REFUSAL.pattern
    return rf"(?:{refusal})[^\n]{{0,40}}\b{name}\b|\b{name}\b[^\n]{{0,40}}(?:{refusal})"


def _reported_usage(reported: object) -> Usage | None:
    """The token counts an endpoint reported (the client's object, or the JSON body's ``usage``); None for
    none, or for counts that are not counts. A missing total is the sum of the two."""
    if reported is None:
        return None
    get = reported.get if isinstance(reported, dict) else partial(getattr, reported)
    prompt, completion, total = (get(name, None) for name in ("prompt_tokens", "completion_tokens", "total_tokens"))
    if not (_is_count(prompt) and _is_count(completion)):
        return None
    total = total if _is_count(total) else prompt + completion
    return Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=total)


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def without_unknown_citations(text: str, passages: Sequence[Passage]) -> str:
    """``text`` with the numbers in ``[n]`` markers that are no passage's dropped ("[99]" goes, with the
    space before it; "[1, 99]" becomes "[1]"): shown, they would send a reader to a source that is not there."""
    known = {p.n for p in passages}

    def keep_known(match: re.Match[str]) -> str:
        numbers = [part.strip() for part in match.group(2).split(",") if int(part) in known]
        return f"{match.group(1)}[{', '.join(numbers)}]" if numbers else ""

    return _SPACED_CITATION.sub(keep_known, text)


class KnownCitations:
    """Drops the markers of no passage from a stream as :func:`without_unknown_citations` drops them from
    the whole answer, so the pieces shown add up to the answer stored. What may still become a marker
    (trailing spaces, an unclosed "[1, 9") is held back until the next piece says whether it is one."""

    _MAYBE_A_MARKER = re.compile(r"[ \t]*(?:\[[\d\s,]*)?\Z")

    def __init__(self, passages: Sequence[Passage]) -> None:
        self.passages = passages
        self.held = ""

    def feed(self, piece: str) -> str:
        """The text that can be shown now ("" while all of it is held)."""
        text = self.held + piece
        cut = self._MAYBE_A_MARKER.search(text).start()  # type: ignore[union-attr] - matches at the end at least
        self.held = text[cut:]
        return without_unknown_citations(text[:cut], self.passages)

    def flush(self) -> str:
        """What was held back, once the answer has ended."""
        text, self.held = self.held, ""
        return without_unknown_citations(text, self.passages)


def cited(text: str, passages: Sequence[Passage]) -> list[Citation]:
    """The passages an answer cites as ``[n]`` (numbers not in the context are ignored)."""
    by_n = {p.n: p for p in passages}
    numbers: list[int] = []
    for match in _CITATION.finditer(text):
        for part in match.group(1).split(","):
            n = int(part)
            if n in by_n and n not in numbers:
                numbers.append(n)
    return [Citation.from_passage(n, by_n[n]) for n in sorted(numbers)]


def _got(parts: list[str]) -> str:
    """How much of the answer had arrived, for an error about it."""
    size = sum(len(part) for part in parts)
    return f"{size} character{'' if size == 1 else 's'} of it had arrived"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _short(message: str, limit: int = 300) -> str:
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[:limit] + "…"
