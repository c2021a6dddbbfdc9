"""The app server end to end (``unirank serve api`` in a subprocess, the offline extractive answerer,
the real sample handbook): the OpenAI-compatible endpoint through the official ``openai`` client,
server-sent events, sessions with follow-ups, citations, feedback and errors."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import openai
import pytest

from chat_helpers import AppServer, OpenAIProtocolServer, build_corpus, build_policies, isolated_env, quotes, squash
from unirank.app.openai_format import ChatCompletion, ErrorBody, SessionAnswer
from unirank.app.session_format import (CitedPassage, FeedbackList, FeedbackOut, IndexAsModel, IndexList,
                                        IndexModels, Liveness, SessionList, SessionOut, SessionWithMessages)
from unirank.app.search_format import SearchResponse
from unirank.chat import NOT_COVERED
from unirank.chat.extractive import PREFIX


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, base_embedder):
    ur = build_corpus(tmp_path_factory.mktemp("app"), base_embedder, hostile=False)
    texts = {c.id: c.text for batch in ur.backend.iter_chunks("handbook") for c in batch}
    data_dir = ur.settings.data_dir
    ur.close()
    return data_dir, texts


@pytest.fixture(scope="module")
def server(corpus):
    data_dir, _ = corpus
    app = AppServer(data_dir, "--index", "handbook").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def http(server):
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def llm_client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def assert_cited(answer: str, citations: list[dict], texts: dict[str, str]) -> None:
    assert answer.startswith(PREFIX)
    by_n = {c["n"]: c for c in citations}
    found = quotes(answer)
    assert found
    for sentence, n in found:
        c = by_n[n]
        assert c["passage"] == texts[c["chunk_id"]]
        assert c["passage"][c["start"]:c["end"]] == c["text"]
        assert squash(sentence) in squash(c["text"])
        assert squash(sentence) in [squash(c["passage"][a:b]) for a, b in c["spans"]]


def test_openai_client_gets_a_cited_answer(llm_client, corpus):
    _, texts = corpus
    response = llm_client.chat.completions.create(
        model="handbook", messages=[{"role": "user", "content": "How long does an old API key keep working after rotation?"}])
    content = response.choices[0].message.content
    extra = response.model_extra
    assert response.object == "chat.completion" and response.choices[0].finish_reason == "stop"
    assert "24 hours" in content and extra["grounded"] is True and extra["message_id"]
    assert extra["citations"][0]["title"] == "API keys and token rotation"
    assert_cited(content, extra["citations"], texts)


def test_openai_client_streams_chunks(llm_client, corpus):
    _, texts = corpus
    stream = llm_client.chat.completions.create(
        model="handbook", stream=True, messages=[{"role": "user", "content": "Who updates the status page?"}])
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    pieces = [c.choices[0].delta.content for c in chunks if c.choices[0].delta.content]
    assert len(pieces) >= 2 and all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    final = chunks[-1]
    assert final.choices[0].finish_reason == "stop"
    assert_cited("".join(pieces), final.model_extra["citations"], texts)
    assert "communications lead" in "".join(pieces)


def test_usage_is_sent_and_stream_may_be_null(llm_client, http):
    """`"stream": null` (nullable in OpenAI's spec) was a 422, and `usage` was never sent, not even in the last
    chunk `stream_options.include_usage` asks for. The extractive answerer runs no language model: 0 tokens."""
    none = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    asked = [{"role": "user", "content": "Who updates the status page?"}]
    reply = llm_client.chat.completions.create(model="handbook", messages=asked)
    assert reply.usage is not None and reply.usage.model_dump(exclude_none=True) == none
    null = http.post("/v1/chat/completions", json={"model": "handbook", "stream": None, "messages": asked})
    assert null.status_code == 200 and null.json()["object"] == "chat.completion", null.text
    chunks = list(llm_client.chat.completions.create(model="handbook", messages=asked, stream=True,
                                                     stream_options={"include_usage": True}))
    assert chunks[-1].choices == [] and chunks[-1].usage.model_dump(exclude_none=True) == none
    assert chunks[-2].choices[0].finish_reason == "stop" and all(c.usage is None for c in chunks[:-1])
    plain = list(llm_client.chat.completions.create(model="handbook", messages=asked, stream=True))
    assert plain[-1].choices[0].finish_reason == "stop"  # no usage chunk unless asked for


def _on_llm(ur, llm: OpenAIProtocolServer):
    """``ur`` answering with the OpenAI-compatible answerer on ``llm``."""
    ur.settings.chat.llm_base_url = llm.url
    ur.settings.chat.llm_model = "scripted"
    ur.settings.chat.answerer = "openai"
    return ur


def _streamed_usage(client, asked: dict, route: str = "/v1/chat/completions") -> dict | None:
    """The usage chunk of ``asked`` streamed with ``stream_options.include_usage``, after the answer's last."""
    streamed = client.post(route, json={**asked, "stream": True, "stream_options": {"include_usage": True}}).text
    chunks = [json.loads(event[6:]) for event in streamed.strip().split("\n\n")[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop" and chunks[-2]["answerer"] == "openai", chunks[-2]
    assert chunks[-1]["choices"] == [], chunks[-1]
    return chunks[-1]["usage"]


def _counted(requests: list[dict]) -> dict[str, int]:
    """The token counts the endpoint reported for ``requests``, summed."""
    return {key: sum(r["usage"][key] for r in requests) for key in ("prompt_tokens", "completion_tokens",
                                                                     "total_tokens")}


def test_an_llm_answer_sends_usage_as_unknown_not_made_up(tmp_path, base_embedder):
    """An LLM endpoint that sends no token counts: usage is null, not a guess."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    llm = OpenAIProtocolServer()
    ur = _on_llm(build_policies(tmp_path, base_embedder), llm)
    asked = {"model": "policies", "messages": [{"role": "user", "content": "How long are backups kept?"}]}
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            reply = client.post("/v1/chat/completions", json=asked).json()
            assert reply["answerer"] == "openai" and reply["usage"] is None, reply
            assert _streamed_usage(client, asked) is None
    finally:
        ur.close()
        llm.stop()


def test_an_llm_answer_sends_the_tokens_its_endpoint_counted(tmp_path, base_embedder):
    """The LLM answerer dropped the token counts its endpoint sent, so usage was null. It is their sum over
    the answer's LLM calls, a follow-up's rewrite with its answer, streamed and not."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    llm = OpenAIProtocolServer()
    llm.counts_tokens = True
    ur = _on_llm(build_policies(tmp_path, base_embedder), llm)
    asked = {"model": "policies", "messages": [
        {"role": "user", "content": "How long are backups kept?"},
        {"role": "assistant", "content": "Backups are kept for 35 days [1]."},
        {"role": "user", "content": "And the monthly ones?"}]}
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            reply = client.post("/v1/chat/completions", json=asked).json()
            assert reply["answerer"] == "openai" and len(llm.requests) == 2  # the rewrite, then the answer
            assert reply["usage"] == _counted(llm.requests) and reply["usage"]["prompt_tokens"] > 0, reply
            llm.requests.clear()
            assert _streamed_usage(client, asked) == _counted(llm.requests)
            assert [r["body"].get("stream_options") for r in llm.requests] == [None, {"include_usage": True}]
            # In a session too: the answer, and the stream's last chunk when asked (it was never sent there)
            sid = client.post("/v1/sessions", json={"index": "policies"}).json()["id"]
            client.post(f"/v1/sessions/{sid}/messages", json={"content": "How long are backups kept?"})
            llm.requests.clear()
            follow_up = client.post(f"/v1/sessions/{sid}/messages", json={"content": "And the monthly ones?"}).json()
            assert len(llm.requests) == 2 and follow_up["usage"] == _counted(llm.requests), follow_up
            llm.requests.clear()
            sid = client.post("/v1/sessions", json={"index": "policies"}).json()["id"]
            streamed = _streamed_usage(client, {"content": "How long are backups kept?"}, f"/v1/sessions/{sid}/messages")
            assert len(llm.requests) == 1 and streamed == _counted(llm.requests) and streamed["total_tokens"] > 0
    finally:
        ur.close()
        llm.stop()


def test_an_llm_endpoint_that_refuses_stream_options_still_answers(tmp_path, base_embedder):
    """The answer's stream asks for its token counts; an endpoint that refuses the parameter (a 400 naming
    it) is asked again without it, and not asked for it again: its stream's counts are not known (null)."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    llm = OpenAIProtocolServer()
    llm.counts_tokens = llm.refuses_stream_options = True
    ur = _on_llm(build_policies(tmp_path, base_embedder), llm)
    asked = {"model": "policies", "messages": [{"role": "user", "content": "How long are backups kept?"}]}
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            assert _streamed_usage(client, asked) is None
            assert ["stream_options" in r["body"] for r in llm.requests] == [True, False]
            reply = client.post("/v1/chat/completions", json=asked).json()
            assert reply["choices"][0]["message"]["content"].startswith("According to the documents,"), reply
            assert reply["usage"] is None
            assert ["stream_options" in r["body"] for r in llm.requests] == [True, False, False]
    finally:
        ur.close()
        llm.stop()


def test_raw_server_sent_events_end_with_done(http):
    with http.stream("POST", "/v1/chat/completions", json={
            "model": "handbook", "stream": True, "messages": [{"role": "user", "content": "What does SEV2 mean?"}]}) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]"
    final = json.loads(lines[-2][6:])
    assert final["choices"][0]["finish_reason"] == "stop" and final["grounded"] is True


def test_off_topic_is_not_covered(llm_client):
    response = llm_client.chat.completions.create(
        model="handbook", messages=[{"role": "user", "content": "What is the boiling point of water at sea level?"}])
    assert response.choices[0].message.content == NOT_COVERED
    assert response.model_extra["grounded"] is False and response.model_extra["citations"] == []


def test_follow_up_from_the_request_messages(llm_client):
    response = llm_client.chat.completions.create(model="handbook", messages=[
        {"role": "system", "content": "You are helpful."},
        {"role": "user", "content": "How do I rotate an API key?"},
        {"role": "assistant", "content": "From the documents: …"},
        {"role": "user", "content": "How often should I do it?"},
    ])
    assert {"rotate", "api", "key"} <= set(response.model_extra["query"].lower().split())
    assert "Rotate keys every 90 days" in response.choices[0].message.content


def test_content_parts_are_read_as_text(llm_client):
    """OpenAI's content-part list (as multimodal clients send it): the text parts are the question."""
    response = llm_client.chat.completions.create(model="handbook", messages=[{"role": "user", "content": [
        {"type": "text", "text": "How often should I"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
        {"type": "text", "text": "rotate an API key?"}]}])
    assert response.model_extra["query"] == "How often should I\nrotate an API key?"
    assert "Rotate keys every 90 days" in response.choices[0].message.content


def test_filters_restrict_the_documents_answered_from(http):
    def ask(filters: dict) -> dict:
        return http.post("/v1/chat/completions", json={"model": "handbook", "filters": filters, "messages": [
            {"role": "user", "content": "How do I reset my password?"}]}).json()

    account = ask({"category": "account"})
    assert account["grounded"] and {c["doc_id"] for c in account["citations"]} <= {"faq-3", "faq-4"}
    data = ask({"category": "data"})
    assert not data["grounded"] and data["choices"][0]["message"]["content"] == NOT_COVERED
    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    in_session = http.post(f"/v1/sessions/{sid}/messages", json={
        "content": "How do I reset my password?", "filters": {"doc_id": "faq-1"}}).json()
    assert in_session["answer"] == NOT_COVERED  # faq-1 is about data export


def test_filter_values_may_be_numbers_and_booleans_as_in_python(client, tmp_path):
    """`{"version": 2}` was a 422 ("Input should be a valid string") on every route taking filters, while Python's
    search matched it, as the README says a whole number does however it is written."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    docs = tmp_path / "releases"
    docs.mkdir()
    (docs / "two.md").write_text("---\nversion: 2\nstable: true\n---\n# Release two\n\nBackups run hourly.\n")
    (docs / "three.md").write_text("---\nversion: 3\nstable: false\n---\n# Release three\n\nBackups run daily.\n")
    assert not client.ingest(str(docs), "releases").failed
    with TestClient(create_app(unirank=client, warm_up=False)) as http:
        def found(filters: dict) -> list[str]:
            served = http.post("/v1/search", json={"query": "backups", "index": "releases", "mode": "bm25",
                                                   "rerank": False, "filters": filters})
            assert served.status_code == 200, served.text
            return [h["title"] for h in served.json()["hits"]]

        assert found({"version": "2"}) == found({"version": 2}) == found({"version": 2.0}) == ["Release two"]
        assert found({"stable": True}) == ["Release two"] and found({"stable": False}) == ["Release three"]
        asked = [{"role": "user", "content": "How often do backups run?"}]
        chat = http.post("/v1/chat/completions", json={"model": "releases", "messages": asked,
                                                       "filters": {"version": 3}})
        assert chat.status_code == 200, chat.text
        assert {c["title"] for c in chat.json()["citations"]} == {"Release three"}, chat.text
        sid = http.post("/v1/sessions", json={"index": "releases"}).json()["id"]
        in_session = http.post(f"/v1/sessions/{sid}/messages", json={"content": "How often do backups run?",
                                                                     "filters": {"version": 2, "stable": True}})
        assert in_session.status_code == 200 and "hourly" in in_session.json()["answer"], in_session.text
        listed = http.post("/v1/search", json={"query": "backups", "index": "releases", "filters": {"version": [2]}})
        assert listed.status_code == 422 and listed.json()["error"]["message"] == (
            "Invalid request: filters.version: expected a string, an integer, a number or true or false.")


def test_search_over_http_is_the_clis_search(http, corpus, tmp_path):
    """POST /v1/search answers what `unirank search --json` prints for the same request."""
    data_dir, _ = corpus
    body = {"query": "which region keeps my data", "top_k": 3, "filters": {"category": "data"}}
    served = http.post("/v1/search", json=body)
    assert served.status_code == 200, served.text
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "search", body["query"], "--index", "handbook",
                           "--top-k", "3", "--filter", "category=data", "--json"],
                          env=isolated_env(data_dir), capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    printed = json.loads(proc.stdout)
    assert served.json().keys() == printed.keys() == {"query", "mode", "embedder", "reranked", "degraded",
                                                      "timings_ms", "hits"}
    assert printed["embedder"] == "all-MiniLM-L6-v2@base"
    del printed["timings_ms"]
    without_timings = {k: v for k, v in served.json().items() if k != "timings_ms"}
    assert without_timings == printed and printed["hits"][0]["title"] == "Where is my data stored?"
    assert {h["metadata"]["category"] for h in printed["hits"]} == {"data"} and len(printed["hits"]) == 2

    reranked = http.post("/v1/search", json={"query": "rotate an API key", "index": "handbook", "rerank": True,
                                             "mode": "bm25", "top_k": 2}).json()
    assert reranked["reranked"] and all("rerank" in h["scores"] for h in reranked["hits"])
    too_many = http.post("/v1/search", json={"query": "x", "rerank": True, "top_k": 51})
    assert too_many.status_code == 400 and "at most 50" in too_many.json()["error"]["message"]
    assert http.post("/v1/search", json={"query": "x", "index": "nope"}).status_code == 404
    typo = http.post("/v1/search", json={"query": "x", "topk": 3})
    assert typo.status_code == 422 and "topk" in typo.json()["error"]["message"]
    no = http.post("/v1/search", json={"query": "x", "rerank": "no"})  # a string is not a boolean
    assert no.status_code == 422 and no.json()["error"]["message"].startswith("Invalid request: rerank: Input should be a valid boolean")


def test_sessions_keep_history_and_resolve_follow_ups(http):
    session = http.post("/v1/sessions", json={"index": "handbook"})
    assert session.status_code == 201
    sid = session.json()["id"]
    first = http.post(f"/v1/sessions/{sid}/messages", json={"content": "How do I rotate an API key?"}).json()
    assert first["grounded"] and first["session_id"] == sid
    with http.stream("POST", f"/v1/sessions/{sid}/messages",
                     json={"content": "How often should I do it?", "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    final = events[-1]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert "Rotate keys every 90 days" in text and final["session_id"] == sid and final["message_id"]
    assert final["query"] != "How often should I do it?" and "rotate" in final["query"]

    listed = http.get("/v1/sessions").json()["sessions"]
    assert listed[0]["id"] == sid and listed[0]["title"] == "How do I rotate an API key?"
    detail = http.get(f"/v1/sessions/{sid}").json()
    assert [m["role"] for m in detail["messages"]] == ["user", "assistant"] * 2
    assert detail["messages"][3]["content"] == text and detail["messages"][3]["query"] == final["query"]
    # What wrote each answer, as the answer said (the page reads it to tell quotes of documents from an LLM's)
    assert [m["answerer"] for m in detail["messages"]] == [None, "extractive"] * 2 == [None, final["answerer"]] * 2


def test_citation_endpoint_and_feedback(http):
    answer = http.post("/v1/chat/completions", json={
        "model": "handbook", "messages": [{"role": "user", "content": "How do I reset my password?"}]}).json()
    mid, n = answer["message_id"], answer["citations"][0]["n"]
    cited = http.get(f"/v1/messages/{mid}/citations/{n}").json()
    assert cited["title"] == "How do I reset my password?" and "Forgot password" in cited["passage"]
    assert cited["passage"][cited["start"]:cited["end"]] == cited["text"] and cited["index"] == "handbook"
    assert http.get(f"/v1/messages/{mid}/citations/99").status_code == 404
    assert http.get("/v1/messages/nope/citations/1").status_code == 404

    assert http.post("/v1/feedback", json={"message_id": mid, "kind": "up"}).status_code == 201
    click = http.post("/v1/feedback", json={"message_id": mid, "kind": "click", "citation": n})
    assert click.status_code == 201 and click.json()["citation"] == n
    assert http.post("/v1/feedback", json={"message_id": mid, "kind": "click"}).status_code == 400
    voted = http.post("/v1/feedback", json={"message_id": mid, "kind": "down", "citation": 1})  # stored, then ignored
    assert voted.status_code == 400 and "only a click names a citation" in voted.json()["error"]["message"]
    as_text = http.post("/v1/feedback", json={"message_id": mid, "kind": "click", "citation": str(n)})
    assert as_text.status_code == 422 and "citation: Input should be a valid integer" in as_text.text
    love = http.post("/v1/feedback", json={"message_id": mid, "kind": "love"})
    assert love.status_code == 422
    assert love.json()["error"]["message"].startswith("Invalid request: kind: Input should be")
    assert http.post("/v1/feedback", json={"message_id": "nope", "kind": "up"}).status_code == 404
    events = http.get("/v1/feedback", params={"message_id": mid}).json()["events"]
    assert [(e["kind"], e["citation"]) for e in events] == [("up", None), ("click", n)]


def test_answers_have_the_shapes_the_spec_declares(http):
    """Every route's answer validates against the model its OpenAPI spec names, field for field."""
    spec = http.get("/openapi.json").json()
    components = {m.__name__: m for m in (ChatCompletion, SessionAnswer, SearchResponse, Liveness, IndexList,
                                          IndexModels, IndexAsModel, SessionOut, SessionList, SessionWithMessages,
                                          CitedPassage, FeedbackOut, FeedbackList)}
    session = http.post("/v1/sessions", json={}).json()
    sid = session["id"]
    answer = http.post(f"/v1/sessions/{sid}/messages", json={"content": "How do I reset my password?"}).json()
    http.post("/v1/feedback", json={"message_id": answer["message_id"], "kind": "click", "citation": 1})
    question = {"role": "user", "content": "How do I reset my password?"}
    calls = [
        ("GET", "/healthz", "/healthz", {}),
        ("GET", "/v1/indexes", "/v1/indexes", {}),
        ("GET", "/v1/models", "/v1/models", {}),
        ("POST", "/v1/search", "/v1/search", {"json": {"query": "password reset"}}),
        ("GET", "/v1/models/{model_id}", "/v1/models/handbook", {}),
        ("POST", "/v1/chat/completions", "/v1/chat/completions", {"json": {"messages": [question]}}),
        # Nothing retrieved: relevance is null, which the spec said could not be.
        ("POST", "/v1/chat/completions", "/v1/chat/completions",
         {"json": {"messages": [question], "filters": {"category": "none-such"}}}),
        ("POST", "/v1/sessions", "/v1/sessions", {}),  # no body: every field is optional
        ("POST", "/v1/sessions", "/v1/sessions", {"json": {"index": "handbook"}}),
        ("GET", "/v1/sessions", "/v1/sessions", {}),
        ("GET", "/v1/sessions/{session_id}", f"/v1/sessions/{sid}", {}),
        ("POST", "/v1/sessions/{session_id}/messages", f"/v1/sessions/{sid}/messages", {"json": {"content": "Hi?"}}),
        ("GET", "/v1/messages/{message_id}/citations/{n}", f"/v1/messages/{answer['message_id']}/citations/1", {}),
        ("POST", "/v1/feedback", "/v1/feedback", {"json": {"message_id": answer["message_id"], "kind": "up"}}),
        ("GET", "/v1/feedback", f"/v1/feedback?message_id={answer['message_id']}", {}),
    ]
    for method, route, path, request in calls:
        response = http.request(method, path, **request)
        assert response.is_success, (path, response.text)
        declared = spec["paths"][route][method.lower()]["responses"][str(response.status_code)]["content"]
        model = components[declared["application/json"]["schema"]["$ref"].rsplit("/", 1)[1]]
        validated = model.model_validate_json(response.text, strict=True)
        assert validated.model_dump(mode="json") == response.json(), path  # every field declared, none left out
    assert "text/event-stream" in spec["paths"]["/v1/chat/completions"]["post"]["responses"]["200"]["content"]


def test_errors_are_clear(http):
    spec = http.get("/openapi.json").json()
    # FastAPI's own 422 body, which this app never sends, was declared for GET /v1/feedback and others.
    assert "ValidationError" not in json.dumps(spec)
    assert "422" not in spec["paths"]["/v1/sessions/{session_id}"]["delete"]["responses"]

    def refused(method: str, route: str, path: str, status: int, **request) -> dict:
        """The response has ``status`` and the body the OpenAPI spec declares for the route and status."""
        response = http.request(method, path, **request)
        assert response.status_code == status, response.text
        declared = spec["paths"][route][method.lower()]["responses"][str(status)]
        assert declared["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        return ErrorBody.model_validate(response.json(), strict=True).error.model_dump()

    chat = "/v1/chat/completions"
    missing = refused("POST", chat, chat, 404, json={"model": "unirank", "index": "nope",
                                                     "messages": [{"role": "user", "content": "hi"}]})
    assert "unirank ingest" in missing["message"]
    typo = refused("POST", chat, chat, 404, json={"model": "handbok", "messages": [{"role": "user", "content": "hi"}]})
    assert "Index 'handbok' does not exist. Available indexes: handbook" in typo["message"]  # not the default index
    refused("POST", chat, chat, 422, json={"messages": []})
    empty = refused("POST", chat, chat, 422, json={"model": "", "messages": [{"role": "user", "content": "hi"}]})
    assert empty["message"].startswith("Invalid request: model:")  # it was answered from the default index
    yes = refused("POST", chat, chat, 422, json={"stream": "yes", "messages": [{"role": "user", "content": "hi"}]})
    assert yes["message"] == "Invalid request: stream: Input should be a valid boolean."  # not read as true
    garbled = refused("POST", chat, chat, 422, content=b"{messages", headers={"Content-Type": "application/json"})
    assert "not valid JSON" in garbled["message"]
    last_assistant = refused("POST", chat, chat, 400, json={"messages": [{"role": "assistant", "content": "hi"}]})
    assert "user" in last_assistant["message"]
    refused("POST", "/v1/sessions/{session_id}/messages", "/v1/sessions/nope/messages", 404, json={"content": "hi"})
    refused("POST", "/v1/sessions", "/v1/sessions", 404, json={"index": "nope"})
    refused("GET", "/v1/sessions/{session_id}", "/v1/sessions/nope", 404)
    refused("DELETE", "/v1/sessions/{session_id}", "/v1/sessions/nope", 404)
    refused("GET", "/v1/sessions", "/v1/sessions?limit=many", 422)
    refused("GET", "/v1/sessions", "/v1/sessions?limit=-1", 422)  # it listed every session
    refused("GET", "/v1/messages/{message_id}/citations/{n}", "/v1/messages/nope/citations/1", 404)
    refused("POST", "/v1/feedback", "/v1/feedback", 404, json={"message_id": "nope", "kind": "up"})
    refused("POST", "/v1/feedback", "/v1/feedback", 422, json={"message_id": "nope", "kind": "meh"})
    refused("POST", chat, chat, 404, json={"index": "nope", "stream": True,  # checked before the stream starts
                                           "messages": [{"role": "user", "content": "hi"}]})
    # A misspelt filter key matched nothing, and over HTTP nothing said so.
    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    for route, path, body in [("/v1/search", "/v1/search", {"query": "password", "filters": {"categry": "x"}}),
                              (chat, chat, {"filters": {"categry": "x"},
                                            "messages": [{"role": "user", "content": "hi"}]}),
                              (chat, chat, {"filters": {"categry": "x"}, "stream": True,  # before the stream
                                            "messages": [{"role": "user", "content": "hi"}]}),
                              ("/v1/sessions/{session_id}/messages", f"/v1/sessions/{sid}/messages",
                               {"content": "hi", "filters": {"categry": "x"}, "stream": True}),
                              ("/v1/sessions/{session_id}/messages", f"/v1/sessions/{sid}/messages",
                               {"content": "hi", "filters": {"categry": "x"}})]:
        typo = refused("POST", route, path, 400, json=body)
        assert typo["message"].startswith("No passage has the key 'categry' (did you mean 'category'?)"), typo
    # A session answers from its own index: `model` naming another one mixed two corpora in one session.
    other = refused("POST", chat, chat, 400, json={"model": "other", "session_id": sid,
                                                   "messages": [{"role": "user", "content": "hi"}]})
    assert other["message"].startswith(f"Session '{sid}' answers from index 'handbook', not 'other'")
    # `model` and `index` naming two indexes: answered from `index` while the answer said `model`.
    both = refused("POST", chat, chat, 400, json={"model": "handbook", "index": "other",
                                                  "messages": [{"role": "user", "content": "hi"}]})
    assert both["message"].startswith("`model` names the index 'handbook' and `index` names 'other'"), both
    # A filter key that reads like a union member's name was taken for one ("filters: expected an object"), a
    # content of the wrong type was told in Python's type names, and an empty body named no field.
    for key in ("Category", "list"):
        named = refused("POST", "/v1/search", "/v1/search", 422, json={"query": "x", "filters": {key: [5]}})
        assert named["message"] == (f"Invalid request: filters.{key}: expected a string, an integer, a number or "
                                    "true or false."), named
    content = refused("POST", chat, chat, 422, json={"messages": [{"role": "user", "content": 5}]})
    assert content["message"] == ("Invalid request: messages.0.content: expected a string, a list of content parts, "
                                  "or null."), content
    items = refused("POST", chat, chat, 422, json={"messages": [{"role": "user", "content": [5]}]})
    assert items["message"] == "Invalid request: messages.0.content: expected a string or a list of content parts."
    for route in ("/v1/search", chat):
        nothing = refused("POST", route, route, 422, content=b"", headers={"Content-Type": "application/json"})
        assert nothing["message"] == "The request body is empty: send a JSON object.", nothing
    form = refused("POST", "/v1/search", "/v1/search", 422, content=b'{"query": "password"}',
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # curl -d's default
    assert form["message"].startswith("The request body was sent as application/x-www-form-urlencoded, not JSON")
    # A Latin-1 body (a Windows script's default) was a 400 "There was an error parsing the body".
    latin1 = refused("POST", "/v1/search", "/v1/search", 422, content='{"query": "café"}'.encode("latin-1"),
                     headers={"Content-Type": "application/json"})
    assert latin1["message"].startswith("The request body is not valid JSON: it is not UTF-8"), latin1
    assert latin1["type"] == "invalid_request_error"  # it was "invalid_request", a type no other error has
    # Valid JSON nested deeper than the parser goes was a 400 "There was an error parsing the body".
    deep = b'{"messages": [{"role": "user", "content": "hi"}], "x": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    nested = refused("POST", chat, chat, 422, content=deep, headers={"Content-Type": "application/json"})
    assert nested == {"type": "invalid_request_error", "message": "The request body is nested too deeply to read "
                      "(arrays or objects more than about 900 levels deep): send flatter JSON."}, nested
    refused("GET", "/v1/models/{model_id}", "/v1/models/nope", 404)
    # A 2 MB question was read, embedded and stored whole.
    huge = refused("POST", chat, chat, 413, json={"messages": [{"role": "user", "content": "why? " * 400_000}]})
    assert huge["message"].startswith("The request body is 2.0 MB; this server reads at most 1.0 MB "
                                      "(api.max_request_mb)") and huge["type"] == "request_too_large"
    # Every route that reads a body refuses one over api.max_request_mb, and says so in its spec: POST
    # /v1/sessions and /v1/feedback did not declare their 413.
    oversized = b'{"title": "' + b"x" * 1_100_000 + b'"}'
    body_routes = [(route, method) for route, ops in spec["paths"].items() for method, op in ops.items()
                   if "requestBody" in op]
    assert len(body_routes) == 5, body_routes
    for route, method in body_routes:
        refused(method.upper(), route, route.replace("{session_id}", sid), 413, content=oversized,
                headers={"Content-Type": "application/json"})
    # A damaged index (500 index_damaged) or a busy one (503 index_busy) is declared where an index is read.
    for route in ("/v1/search", "/v1/chat/completions", "/v1/sessions", "/v1/sessions/{session_id}/messages"):
        declared = spec["paths"][route]["post"]["responses"]
        assert {"500", "503"} <= set(declared), (route, sorted(declared))
    assert "index_busy" in spec["paths"]["/v1/search"]["post"]["responses"]["503"]["description"]
    # The router's own refusals come in the same shape, not FastAPI's {"detail": "Not Found"}.
    unknown = http.get("/v1/chat/complete")
    assert unknown.status_code == 404 and ErrorBody.model_validate(unknown.json()).error.type == "not_found"
    wrong = http.delete("/v1/search")
    assert wrong.status_code == 405 and wrong.headers["allow"] == "POST"
    assert ErrorBody.model_validate(wrong.json()).error.message == "DELETE /v1/search: Method Not Allowed"


def test_an_empty_question_or_query_is_the_400_a_blank_one_is(http):
    """"" was a 422 on /v1/search and a session's messages (pydantic's min_length), " " a 400, and "" a 400 on
    /v1/chat/completions: one condition, two statuses."""
    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    for path, body, said in [("/v1/search", {"query": ""}, "The query is empty"),
                             ("/v1/search", {"query": " "}, "The query is empty"),
                             (f"/v1/sessions/{sid}/messages", {"content": ""}, "The question is empty"),
                             (f"/v1/sessions/{sid}/messages", {"content": " "}, "The question is empty"),
                             ("/v1/chat/completions", {"messages": [{"role": "user", "content": ""}]},
                              "The question is empty")]:
        refused = http.post(path, json=body)
        assert refused.status_code == 400, (path, body, refused.text)
        error = refused.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"].startswith(said), error
    assert http.get(f"/v1/sessions/{sid}").json()["messages"] == []


def test_page_and_indexes(http):
    page = http.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<label for="question">Your question</label>' in page.text
    assert http.get("/static/app.js").status_code == 200
    indexes = http.get("/v1/indexes").json()["indexes"]
    assert {i["name"]: i["default"] for i in indexes} == {"handbook": True}
    assert indexes[0]["model"] == "all-MiniLM-L6-v2@base" and indexes[0]["copy_of"] is None
    assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["unirank", "handbook"]


def test_the_default_model_id_is_listed_and_can_be_retrieved(llm_client):
    """`model: "unirank"` answers from the default index, but the model lookup OpenAI clients make first
    was a 404 ("Index 'unirank' does not exist")."""
    assert llm_client.models.retrieve("unirank").id == "unirank"
    assert [m.id for m in llm_client.models.list()] == ["unirank", "handbook"]
    with pytest.raises(openai.NotFoundError, match="Index 'nope' does not exist"):
        llm_client.models.retrieve("nope")


def test_model_unirank_is_the_index_called_unirank_when_there_is_one(tmp_path, base_embedder):
    """/v1/models listed an index named "unirank" and /v1/models/unirank described it, but `"model": "unirank"`
    was answered from the default index."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    ur = build_policies(tmp_path, base_embedder)  # the index "policies": retention, passwords, backups
    office = tmp_path / "office"
    office.mkdir()
    (office / "wifi.md").write_text("# Office Wi-Fi\n\nThe guest Wi-Fi network is called Northwind-Guest.\n")
    assert not ur.ingest(str(office), "unirank").failed
    ur.settings.chat.index = "policies"  # the default index is the other one
    wifi = [{"role": "user", "content": "What is the guest Wi-Fi network called?"}]
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["policies", "unirank"]
            for stream in (False, True):
                asked = client.post("/v1/chat/completions", json={"model": "unirank", "messages": wifi, "stream": stream})
                assert "Northwind-Guest" in asked.text, (stream, asked.text)
            beside = client.post("/v1/chat/completions", json={"model": "unirank", "index": "policies", "messages": wifi})
            assert beside.json()["grounded"] is False  # beside `index`, "unirank" stands for it
            sid = client.post("/v1/sessions", json={"index": "policies"}).json()["id"]
            in_session = client.post("/v1/chat/completions", json={"model": "unirank", "session_id": sid, "messages": [
                {"role": "user", "content": "How long are backups kept?"}]})
            assert in_session.status_code == 200 and "35 days" in in_session.json()["choices"][0]["message"]["content"]
    finally:
        ur.close()


def test_a_default_index_that_does_not_exist_is_not_listed_as_a_model(tmp_path, base_embedder):
    """With chat.index naming a missing (or deleted) index, /v1/models listed `unirank` and /v1/models/unirank
    answered its card, while every request naming no index got a 404."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    ur = build_policies(tmp_path, base_embedder)
    ur.settings.chat.index = "nope"
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["policies"]
            card = client.get("/v1/models/unirank")
            assert card.status_code == 404 and card.json()["error"]["type"] == "index_not_found", card.text
            assert "Index 'nope' does not exist" in card.json()["error"]["message"]
            assert [i["default"] for i in client.get("/v1/indexes").json()["indexes"]] == [False]
    finally:
        ur.close()


def _add_damaged_index(data_dir, name: str) -> None:
    """An index ``name`` of a few hundred passages whose chunks.sqlite is cut in half."""
    import numpy as np

    from unirank.search.embedded.backend import EmbeddedBackend
    from unirank.search.types import Chunk, IndexedSource, ModelSignature, SourceState

    backend = EmbeddedBackend(data_dir / "indexes")
    backend.create_index(name, ModelSignature(name="tiny", version="1", dims=4))
    backend.index(name, [IndexedSource(SourceState(uri=f"mem://{i}", content_hash=str(i), size=1),
                                       [Chunk(id=f"d{i}#0", doc_id=f"d{i}", source_uri=f"mem://{i}", ordinal=0,
                                              text=f"passage {i} " * 40)],
                                       np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)) for i in range(300)])
    backend.flush(name)
    backend.close()
    store = data_dir / "indexes" / name / "v1" / "chunks.sqlite"
    with open(store, "r+b") as f:
        f.truncate(store.stat().st_size // 2)


def test_a_damaged_index_is_listed_as_damaged(tmp_path, base_embedder):
    """/v1/indexes left a damaged index out (as Unirank.list_indexes does), so to API clients and the web page
    it looked deleted, while /v1/models/NAME answered 500 index_damaged; `index list --json` shows it."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    ur = build_policies(tmp_path, base_embedder)
    _add_damaged_index(ur.settings.data_dir, "broken")
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            listed = client.get("/v1/indexes").json()
            IndexList.model_validate(listed, strict=True)
            readable, broken = listed["indexes"]
            assert readable["name"] == "policies" and readable["damaged"] is None and readable["chunks"] > 0
            assert readable["default"] is True  # the only index that can answer
            assert broken["name"] == "broken" and broken["damaged"], broken  # why it cannot be read
            assert broken["chunks"] is None and broken["model"] is None and broken["default"] is False
            # It cannot answer, so it is no model to pick; asked for by name, it says why.
            assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["unirank", "policies"]
            card = client.get("/v1/models/broken")
            assert card.status_code == 500 and card.json()["error"]["type"] == "index_damaged", card.text
            # Each route that says so declares it in the spec (/v1/models/{model_id} declared only 200 and 404).
            spec = client.get("/openapi.json").json()["paths"]
            asked = [{"role": "user", "content": "hi"}]
            for method, path, route, body in [
                    ("GET", "/v1/models/broken", "/v1/models/{model_id}", None),
                    ("POST", "/v1/search", "/v1/search", {"query": "passage", "index": "broken"}),
                    ("POST", "/v1/chat/completions", "/v1/chat/completions", {"model": "broken", "messages": asked}),
                    ("POST", "/v1/sessions", "/v1/sessions", {"index": "broken"})]:
                damaged = client.request(method, path, json=body)
                assert damaged.json()["error"]["type"] == "index_damaged", (path, damaged.text)
                assert str(damaged.status_code) in spec[route][method.lower()]["responses"], (path, damaged.status_code)
            ur.settings.chat.index = "broken"  # `unirank` is the default index, damaged
            default = client.get("/v1/models/unirank")
            assert default.status_code == 500 and default.json()["error"]["type"] == "index_damaged", default.text
    finally:
        ur.close()


def test_sessions_can_be_deleted(http):
    sid = http.post("/v1/sessions", json={}).json()["id"]  # the server's default index
    assert http.get(f"/v1/sessions/{sid}").json()["index"] == "handbook"
    assert http.delete(f"/v1/sessions/{sid}").status_code == 204
    assert http.get(f"/v1/sessions/{sid}").status_code == 404
    assert sid not in [s["id"] for s in http.get("/v1/sessions").json()["sessions"]]


def test_a_turn_is_deleted_with_its_question_and_feedback(http):
    """An answer asked for without a session was kept (for feedback) with no way to take it back."""
    asked = {"model": "handbook", "messages": [{"role": "user", "content": "How do I reset my password?"}]}
    mid = http.post("/v1/chat/completions", json=asked).json()["message_id"]
    http.post("/v1/feedback", json={"message_id": mid, "kind": "up"})
    deleted = http.delete(f"/v1/messages/{mid}")
    assert deleted.status_code == 200 and len(deleted.json()["deleted"]) == 2 and mid in deleted.json()["deleted"]
    assert http.get(f"/v1/messages/{mid}/citations/1").status_code == 404
    assert http.get("/v1/feedback", params={"message_id": mid}).json()["events"] == []
    gone = http.delete(f"/v1/messages/{mid}")
    assert gone.status_code == 404 and gone.json()["error"]["type"] == "conversation_not_found"

    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    for question in ("What does SEV1 mean?", "How do I reset my password?"):
        http.post(f"/v1/sessions/{sid}/messages", json={"content": question})
    first_question = http.get(f"/v1/sessions/{sid}").json()["messages"][0]["id"]
    assert http.delete(f"/v1/messages/{first_question}").status_code == 200  # by its question: the answer too
    left = http.get(f"/v1/sessions/{sid}").json()["messages"]
    assert [(m["role"], m["content"][:27]) for m in left][:1] == [("user", "How do I reset my password?")]
    assert [m["role"] for m in left] == ["user", "assistant"]
    # The title was the deleted question's text, here and in the page's list: it is the next question's now.
    titles = {s["id"]: s["title"] for s in http.get("/v1/sessions").json()["sessions"]}
    assert titles[sid] == "How do I reset my password?"
    assert http.delete(f"/v1/messages/{left[1]['id']}").status_code == 200
    assert http.get(f"/v1/sessions/{sid}").json()["title"] == ""  # the next question asked gives it
    named = http.post("/v1/sessions", json={"index": "handbook", "title": "Passwords"}).json()["id"]
    asked = http.post(f"/v1/sessions/{named}/messages", json={"content": "How do I reset my password?"}).json()
    assert http.delete(f"/v1/messages/{asked['message_id']}").status_code == 200
    assert http.get(f"/v1/sessions/{named}").json()["title"] == "Passwords"  # a title given is kept


def test_a_lone_surrogate_in_any_field_is_a_400_naming_it(http):
    """JSON's "\\ud800" (half a UTF-16 pair) in a filter, a session id, a message id or a title was a plain-text
    500 (the index or SQLite failed on it); in a question it was already a 400."""
    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    asked = '"messages": [{"role": "user", "content": "hi"}]'
    chat = "/v1/chat/completions"
    for path, body, where in [
        ("/v1/search", r'{"query": "password", "filters": {"category": "\ud800"}}', "filters.category"),
        (chat, '{%s, "filters": {"category": "\\ud800"}}' % asked, "filters.category"),
        (chat, '{%s, "filters": {"\\udfff": "x"}}' % asked, "filters (a key)"),
        (chat, '{%s, "session_id": "\\ud800"}' % asked, "session_id"),
        (chat, r'{"messages": [{"role": "user", "content": [{"type": "text", "text": "a \ud83d b"}]}]}',
         "messages.0.content.0.text"),
        ("/v1/sessions", r'{"title": "\ud800"}', "title"),
        (f"/v1/sessions/{sid}/messages", r'{"content": "hi", "filters": {"doc_id": "\ud800"}}', "filters.doc_id"),
        (f"/v1/sessions/{sid}/messages", r'{"content": "\ud800 hi"}', "content"),
        ("/v1/feedback", r'{"message_id": "\ud800", "kind": "up"}', "message_id"),
    ]:
        refused = http.post(path, content=body, headers={"Content-Type": "application/json"})
        assert refused.status_code == 400, (path, body, refused.text)
        error = ErrorBody.model_validate(refused.json(), strict=True).error
        assert error.type == "invalid_request_error"
        assert error.message.startswith(f"{where}: holds a lone UTF-16 surrogate"), (body, error.message)
    paired = http.post("/v1/sessions", content=r'{"title": "\ud83d\ude00 keys"}',
                       headers={"Content-Type": "application/json"})
    assert paired.status_code == 201 and paired.json()["title"] == "\U0001F600 keys"  # a whole pair is one character
    assert http.delete(f"/v1/sessions/{paired.json()['id']}").status_code == 204


def test_an_unexpected_error_is_a_500_in_the_error_shape(settings):
    """A bug answered Starlette's plain-text "Internal Server Error", which no client of the API parses."""
    from fastapi.testclient import TestClient

    from unirank.api import Unirank
    from unirank.app.server import create_app

    def broken() -> None:
        raise RuntimeError("the disk is on fire")

    with Unirank(settings) as ur:
        ur.list_indexes = broken  # type: ignore[method-assign]
        app = create_app(unirank=ur, warm_up=False)
        with TestClient(app, raise_server_exceptions=False) as client:
            response = client.get("/v1/indexes")
        assert response.status_code == 500 and response.headers["content-type"] == "application/json"
        error = ErrorBody.model_validate(response.json(), strict=True).error
        assert error.type == "server_error" and error.message.startswith("Internal error (RuntimeError) while "
                                                                         "answering GET /v1/indexes")
        with TestClient(app) as client, pytest.raises(RuntimeError, match="on fire"):
            client.get("/v1/indexes")  # raised on after the answer, so the server logs its traceback


def test_a_missing_index_is_told_from_a_missing_session_and_wrong_fields_are_refused(http, corpus):
    """The page took every 404 on a session's messages for a deleted session and asked again in a new session
    over `"index": ""`, which was the default index: a deleted index was answered from other documents.
    Unknown fields were ignored, and a session's message naming another index was answered from the session's."""
    from unirank.search.embedded.backend import EmbeddedBackend

    data_dir, _ = corpus
    backend = EmbeddedBackend(data_dir / "indexes")
    try:
        backend.create_index("gone", backend.model("handbook"))
        gone = http.post("/v1/sessions", json={"index": "gone"}).json()["id"]
        backend.delete_index("gone")  # `unirank index delete gone --yes` while the server runs
    finally:
        backend.close()
    for stream in (False, True):
        missing = http.post(f"/v1/sessions/{gone}/messages", json={"content": "hi", "stream": stream})
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["type"] == "index_not_found"
        assert missing.json()["error"]["message"].startswith("Index 'gone' does not exist")
    no_session = http.post("/v1/sessions/nope/messages", json={"content": "hi"})
    assert no_session.status_code == 404 and no_session.json()["error"]["type"] == "conversation_not_found"
    assert http.post("/v1/chat/completions", json={"model": "nope", "messages": [
        {"role": "user", "content": "hi"}]}).json()["error"]["type"] == "index_not_found"

    for path, body in [("/v1/sessions", {}), ("/v1/search", {"query": "x"}),
                       ("/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}]})]:
        empty = http.post(path, json={**body, "index": ""})  # omitted: the default index
        assert empty.status_code == 400, (path, empty.text)
        assert empty.json()["error"]["message"].startswith("`index` is empty: name an index"), empty.text

    sid = http.post("/v1/sessions", json={"index": "handbook"}).json()["id"]
    other = http.post(f"/v1/sessions/{sid}/messages", json={"content": "hi", "index": "other"})
    assert other.status_code == 400, other.text
    assert other.json()["error"]["message"].startswith(f"Session '{sid}' answers from index 'handbook', not 'other'")
    for path, body, field in [("/v1/sessions", {"index": "handbook", "titel": "x"}, "titel"),
                              (f"/v1/sessions/{sid}/messages", {"content": "hi", "filter": {"category": "x"}},
                               "filter"),
                              ("/v1/feedback", {"message_id": "x", "kind": "up", "n": 1}, "n")]:
        unknown = http.post(path, json=body)
        assert unknown.status_code == 422, (path, unknown.text)
        assert unknown.json()["error"]["message"] == f"Invalid request: {field}: Extra inputs are not permitted."
    assert http.get(f"/v1/sessions/{sid}").json()["messages"] == []  # nothing was asked

    part = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": [
        {"type": "text", "text": 5}]}]})
    assert part.status_code == 422, part.text  # it was asked as the question "5"
    assert part.json()["error"]["message"].startswith("Invalid request: messages.0.content: part 0 is a text part "
                                                      "with text of type int"), part.text


def test_chat_stores_no_session_until_something_is_asked(corpus, tmp_path):
    """`unirank chat` left without a question, and each /new, stored an empty session: "(untitled)" on the page."""
    from unirank.chat.store import ConversationStore

    data_dir, _ = corpus
    db = tmp_path / "cli-chat.sqlite"
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "chat", "--index", "handbook"],
                          input="/new\n/up\n/new\n", env=isolated_env(data_dir, UNIRANK_CHAT__DB_PATH=str(db)),
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("New conversation.") == 2 and "Ask something first." in proc.stdout
    with ConversationStore(db) as store:
        assert store.sessions() == []


def test_server_side_and_busy_refusals_are_not_answered_as_bad_requests():
    """Any unirank error the table lacked was a 400 invalid_request_error: a model the server cannot load
    (the index's, deleted from the registry) told the client its request was wrong, and a busy index did not
    say to come back."""
    from unirank.app.server import _status_and_type
    from unirank.errors import (IndexCorruptedError, IndexLockedError, InvalidQueryError, ModelLoadError,
                                ModelNotFoundError, RebuildRunningError)

    assert _status_and_type(ModelLoadError("cannot load")) == (500, "configuration_error")
    assert _status_and_type(ModelNotFoundError("gone")) == (500, "configuration_error")
    assert _status_and_type(IndexLockedError("handbook")) == (503, "index_busy")
    assert _status_and_type(RebuildRunningError("handbook", 42)) == (503, "index_busy")
    assert _status_and_type(IndexCorruptedError("handbook", "truncated")) == (500, "index_damaged")
    assert _status_and_type(InvalidQueryError("bad")) == (400, "invalid_request_error")


def test_liveness_and_sessions_answer_while_every_answer_is_busy(tmp_path, base_embedder):
    """Answers ran in AnyIO's shared 40-thread pool: 45 questions at once took every thread, and /healthz
    (a liveness probe's 1 s timeout) and the page's conversation list waited ~10 s behind them."""
    import asyncio
    import threading
    import time

    from unirank.app.server import create_app
    from unirank.chat.types import Final

    release, answering = threading.Event(), []

    class HeldAnswerer:
        name = "held"

        def stream(self, question, passages, *, as_asked=None):
            answering.append(question)
            release.wait(60)
            yield Final("Backups are kept for 35 days [1].", [])

    ur = build_policies(tmp_path, base_embedder)
    app = create_app(unirank=ur, warm_up=False)
    app.state.chat.answerer = HeldAnswerer()

    async def scenario() -> tuple[dict[str, float], set[int]]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app", timeout=120) as client:
            asks = [asyncio.create_task(client.post("/v1/chat/completions", json={
                "model": "policies", "stream": i % 3 == 0,
                "messages": [{"role": "user", "content": f"How long are backups kept? {i}"}]})) for i in range(45)]
            try:
                while len(answering) < 30:  # most of them are held in the answerer now
                    await asyncio.sleep(0.05)
                waited = {}
                for path in ("/healthz", "/v1/sessions"):
                    started = time.perf_counter()
                    assert (await asyncio.wait_for(client.get(path), 5)).status_code == 200
                    waited[path] = time.perf_counter() - started
            finally:
                release.set()
            return waited, {r.status_code for r in await asyncio.gather(*asks)}

    try:
        waited, statuses = asyncio.run(scenario())
    finally:
        ur.close()
    assert statuses == {200}
    assert all(seconds < 1 for seconds in waited.values()), waited


def test_with_no_default_index_each_route_is_told_the_field_it_takes(tmp_path, base_embedder):
    """/v1/search and POST /v1/sessions said to send the index's name as the "model", a field both refuse (422)."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app

    ur = build_policies(tmp_path, base_embedder)
    assert not ur.ingest(str(tmp_path / "policies"), "other").failed  # two indexes, no chat.index
    try:
        with TestClient(create_app(unirank=ur, warm_up=False)) as client:
            for path, body in [("/v1/search", {"query": "backups"}), ("/v1/sessions", {})]:
                refused = client.post(path, json=body)
                assert refused.status_code == 400, (path, refused.text)
                message = refused.json()["error"]["message"]
                assert message.startswith("Name the index to answer from (there are: other, policies): "
                                          'send "index": NAME (GET /v1/indexes lists them)'), message
                assert '"model"' not in message
                assert client.post(path, json={**body, "index": "policies"}).status_code in (200, 201)
            chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
            assert chat.status_code == 400 and 'an index name as the "model"' in chat.json()["error"]["message"]
    finally:
        ur.close()


def test_a_conversation_database_that_cannot_be_read_is_a_declared_500(settings):
    """chat.db_path damaged while the server runs is a 500 configuration_error naming the file on every route
    that reads it, and the spec of the routes that only read sessions, messages or feedback declared no 500."""
    from fastapi.testclient import TestClient

    from unirank.api import Unirank
    from unirank.app.server import create_app

    with Unirank(settings) as ur, TestClient(create_app(unirank=ur, warm_up=False)) as client:
        spec = client.get("/openapi.json").json()["paths"]
        db = ur.settings.chat_db_path
        for written in db.parent.glob(f"{db.name}*"):  # the database and its WAL files
            written.write_bytes(b"not a database " * 1000)
        for method, path, route, body in [
                ("GET", "/v1/sessions", "/v1/sessions", None),
                ("GET", "/v1/sessions/abc", "/v1/sessions/{session_id}", None),
                ("DELETE", "/v1/sessions/abc", "/v1/sessions/{session_id}", None),
                ("GET", "/v1/messages/abc/citations/1", "/v1/messages/{message_id}/citations/{n}", None),
                ("DELETE", "/v1/messages/abc", "/v1/messages/{message_id}", None),
                ("POST", "/v1/feedback", "/v1/feedback", {"message_id": "abc", "kind": "up"}),
                ("GET", "/v1/feedback", "/v1/feedback", None)]:
            failed = client.request(method, path, json=body)
            error = ErrorBody.model_validate(failed.json(), strict=True).error
            assert failed.status_code == 500 and error.type == "configuration_error", (path, failed.text)
            assert str(db) in error.message
            assert "500" in spec[route][method.lower()]["responses"], (method, route)
