"""The web page in headless Chromium (Debian's, driven by Playwright): ask, watch the answer stream
in, open a citation, give feedback, ask a follow-up; screenshots go to ``test-artifacts/``."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import httpx
import pytest

from chat_helpers import AppServer, build_corpus, quotes

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-gpu", "--no-first-run",
        "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(),
    reason="Debian's chromium is not installed (scripts/setup.sh installs it when run as root with apt-get: "
           "apt-get install chromium chromium-driver)",
)

# Records every text the answer bubble shows, so the test can see the answer arrive in pieces.
WATCH_ANSWERS = """
window.__answerTexts = [];
new MutationObserver(() => {
  const answers = document.querySelectorAll('#transcript article.assistant .answer');
  if (answers.length) window.__answerTexts.push(answers[answers.length - 1].textContent);
}).observe(document.getElementById('transcript'), {subtree: true, childList: true, characterData: true});
"""


OFFICE_DOC = """# Office Wi-Fi

The guest Wi-Fi network is called Northwind-Guest. Its password changes every Monday and is posted at reception.
The \u201cfloor plans\u201d are kept in binder [1] at reception, beside the visitor book.
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_embedder):
    ur = build_corpus(tmp_path_factory.mktemp("web"), base_embedder, hostile=False)
    # A copy `eval` re-embeds with another model holds the same documents: not offered in the picker.
    ur.backend.create_index("handbook--other-1", ur.backend.model("handbook"), copy_of="handbook")
    # A second index with other documents, for picking another one mid-conversation.
    office = tmp_path_factory.mktemp("office-docs")
    (office / "office.md").write_text(OFFICE_DOC, encoding="utf-8")
    assert not ur.ingest(str(office), "office").failed
    data_dir = ur.settings.data_dir
    ur.close()
    app = AppServer(data_dir, "--index", "handbook").wait_ready()
    yield app
    app.stop()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        yield page
        browser.close()


def test_ask_stream_cite_and_rate_in_the_browser(server, page):
    from playwright.sync_api import expect

    ARTIFACTS.mkdir(exist_ok=True)
    page.goto(server.url)
    expect(page.get_by_label("Documents")).to_have_value("handbook")
    assert page.get_by_label("Documents").locator("option").all_inner_texts() == ["handbook (19 passages)",
                                                                                  "office (1 passage)"]
    page.evaluate(WATCH_ANSWERS)

    question = page.get_by_label("Your question")
    question.fill("How long does an old API key keep working after rotation?")
    question.press("Enter")  # the keyboard alone is enough

    answer = page.locator("#transcript article.assistant").last
    expect(answer).to_have_attribute("aria-busy", "false", timeout=120_000)
    final = answer.locator(".answer").inner_text()
    assert final.startswith("From the documents:") and "24 hours" in final
    seen = page.evaluate("window.__answerTexts")
    partial = [t for t in seen if t and len(t) < len(final) and final.startswith(t)]
    assert partial, f"the answer did not arrive in pieces: {seen}"
    expect(page.get_by_role("status")).to_contain_text("Answered from the documents")
    # Each [n] in the text and each entry of the source list is a button named after its source.
    cites = answer.locator("button.cite")
    assert cites.count() == final.count("[1]") >= 1
    expect(answer.get_by_role("list", name="Sources").get_by_role(
        "button", name=re.compile(r"^Open source 1: API keys and token rotation"))).to_have_count(1)
    page.screenshot(path=str(ARTIFACTS / "web-page-answer.png"), full_page=True)

    # A citation opens the passage it came from, with the quoted span marked.
    answer.locator("button.cite").first.click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    expect(dialog.locator("h2")).to_have_text("[1] API keys and token rotation")
    marks = dialog.locator("mark")
    expect(marks).to_have_count(sum(n == 1 for _, n in quotes(final)))  # each quoted sentence marked on its own
    expect(marks.nth(1)).to_contain_text("overlap window of 24 hours")
    page.screenshot(path=str(ARTIFACTS / "web-page-citation.png"), full_page=True)
    page.keyboard.press("Escape")
    expect(dialog).to_be_hidden()

    helpful = answer.get_by_role("button", name="Helpful", exact=True)
    helpful.click()
    expect(helpful).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_role("status")).to_contain_text("marked as helpful")

    message_id = answer.get_attribute("data-message-id")
    events = httpx.get(f"{server.url}/v1/feedback", params={"message_id": message_id}).json()["events"]
    assert sorted(e["kind"] for e in events) == ["click", "up"]
    page.reload()  # the vote stays pressed: it showed as never given
    expect(answer.get_by_role("button", name="Helpful", exact=True)).to_have_attribute("aria-pressed", "true")
    expect(answer.get_by_role("button", name="Not helpful", exact=True)).to_have_attribute("aria-pressed", "false")

    # A follow-up in the same conversation is resolved through its history.
    question.fill("How often should I do it?")
    page.get_by_role("button", name="Ask").click()
    follow_up = page.locator("#transcript article.assistant").nth(1)
    expect(follow_up).to_have_attribute("aria-busy", "false", timeout=120_000)
    expect(follow_up.locator(".answer")).to_contain_text("Rotate keys every 90 days")
    expect(page.get_by_role("navigation", name="Conversations").get_by_role("button", name=re.compile("^How long.*rotation"))
           ).to_have_attribute("aria-current", "true")
    expect(question).to_be_focused()  # waits: the focus returns after the answer's last awaits, not with aria-busy
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    print(f"screenshots: {ARTIFACTS}/web-page*.png")

    # An off-topic question is answered honestly.
    question.fill("What is the plot of Hamlet?")
    question.press("Enter")
    last = page.locator("#transcript article.assistant").nth(2)
    expect(last).to_have_attribute("aria-busy", "false", timeout=120_000)
    expect(last.locator(".answer")).to_have_text("The documents do not cover this question.")
    expect(last.locator("button.cite")).to_have_count(0)


def ask_and_wait(page, text: str):
    """Asks ``text`` and returns the last answer bubble once it is no longer busy."""
    from playwright.sync_api import expect

    page.evaluate("document.querySelectorAll('#transcript article').forEach((a) => { a.dataset.seen = '1'; })")
    page.get_by_label("Your question").fill(text)
    page.get_by_label("Your question").press("Enter")
    answer = page.locator("#transcript article.assistant:not([data-seen])").last
    expect(answer).to_have_attribute("aria-busy", "false", timeout=120_000)
    expect(page.locator("#ask")).to_be_enabled()
    return answer


def test_picking_other_documents_starts_a_new_conversation(server, page):
    """The picker used to be ignored once a conversation had begun: the session stayed on the old index."""
    from playwright.sync_api import expect

    page.goto(server.url)
    picker = page.get_by_label("Documents")
    expect(picker).to_have_value("handbook")
    first = ask_and_wait(page, "How long does an old API key keep working after rotation?")
    expect(first.locator(".answer")).to_contain_text("24 hours")
    first_session = page.evaluate("state.sessionId")

    picker.select_option("office")
    expect(page.locator("#transcript article")).to_have_count(0)  # the old messages are gone with their session
    expect(page.get_by_role("status")).to_contain_text("New conversation")

    second = ask_and_wait(page, "What is the guest Wi-Fi network called?")
    expect(second.locator(".answer")).to_contain_text("Northwind-Guest")
    expect(second.get_by_role("list", name="Sources")).to_contain_text("Office Wi-Fi")
    expect(page.locator("#transcript article")).to_have_count(2)
    session_id = page.evaluate("state.sessionId")
    assert session_id != first_session
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}").json()["index"] == "office"
    assert httpx.get(f"{server.url}/v1/sessions/{first_session}").json()["index"] == "handbook"


def test_citation_markers_are_buttons_but_a_quoted_bracket_is_text(server, page):
    """A "[1]" inside a quoted sentence (the document's own words) was made a citation button, and an
    LLM's "[1, 2]" was left as plain text; so was a "[1]" after a \u201cterm\u201d the sentence quotes."""
    from playwright.sync_api import expect

    page.goto(server.url)
    page.get_by_label("Documents").select_option("office")
    answer = ask_and_wait(page, "Where are the office floor plans kept?")
    text = answer.locator(".answer").inner_text()
    assert "\u2018floor plans\u2019 are kept in binder [1] at reception" in text, text
    expect(answer.locator(".answer button.cite")).to_have_count(1)  # the marker after the quote, not the one in it
    assert text.rstrip().endswith("[1]")

    rendered = page.evaluate("""() => {
      const p = document.createElement("p");
      p.append(...answerWithCitations("Both say so [1, 2]; only one does [2]; none [3].",
                                      [{n: 1, title: "A"}, {n: 2, title: "B"}], "m"));
      return [p.textContent, [...p.querySelectorAll("button.cite")].map((b) => b.dataset.n)];
    }""")
    assert rendered == ["Both say so [1, 2]; only one does [2]; none [3].", ["1", "2", "2"]]

    # An LLM's quotes are its own words: a "[1]" inside one is a citation (the server counts it), in the final
    # chunk, which names the answerer, and reopened from the store, which does not. It was left as text.
    llm = "The handbook says \u201cRotate keys every 90 days [1].\u201d The old key keeps working [1]."
    extractive = "From the documents: \u201cKept in binder [1] at reception.\u201d [1]"
    buttons = page.evaluate("""([llm, extractive]) => [
        {answer: llm, answerer: "openai"}, {content: llm},
        {answer: extractive, answerer: "extractive"}, {content: extractive},
      ].map((message) => {
        const node = addAssistantMessage();
        renderAnswer(node, {...message, message_id: "m", grounded: true, citations: [{n: 1, title: "A"}]}, "q");
        node.remove();
        return node.querySelectorAll(".answer button.cite").length;
      })""", [llm, extractive])
    assert buttons == [2, 2, 1, 1]


def test_a_conversation_deleted_elsewhere_is_started_again(server, page):
    """Asking in a deleted session showed the API's 404 text, and every later question failed too."""
    from playwright.sync_api import expect

    page.goto(server.url)
    ask_and_wait(page, "How long does an old API key keep working after rotation?")
    old = page.evaluate("state.sessionId")
    assert httpx.delete(f"{server.url}/v1/sessions/{old}").status_code == 204

    answer = ask_and_wait(page, "How often should API keys be rotated?")
    expect(answer).not_to_have_class(re.compile("failed"))
    expect(answer.locator(".answer")).to_contain_text("90 days")
    status = page.locator("#status")
    expect(status).to_contain_text("a new conversation was started")
    expect(status).not_to_contain_text("does not exist")
    expect(status).not_to_have_class(re.compile("error"))
    # The transcript is the new conversation's: the question asked again and its answer.
    expect(page.locator("#transcript article")).to_have_count(2)
    new = page.evaluate("state.sessionId")
    assert new and new != old
    assert [m["role"] for m in httpx.get(f"{server.url}/v1/sessions/{new}").json()["messages"]] == ["user", "assistant"]

    # Later questions go on in the new session.
    follow_up = ask_and_wait(page, "How long does an old API key keep working after rotation?")
    expect(follow_up.locator(".answer")).to_contain_text("24 hours")
    assert page.evaluate("state.sessionId") == new


def test_a_conversation_deleted_while_its_answer_streams_is_started_again(server, page):
    """The server's error event for a session deleted mid-answer ("conversation_not_found") said "Something
    went wrong on the server ... see the server's log"; a 404 before the answer already started it again."""
    from playwright.sync_api import expect

    page.goto(server.url)
    gone = json.dumps({"error": {"message": "Session 'x' was deleted while its answer was being written",
                                 "type": "conversation_not_found"}})
    page.route("**/v1/sessions/*/messages", lambda route: route.fulfill(
        status=200, content_type="text/event-stream", body=(
            'data: {"choices": [{"index": 0, "delta": {"content": "Keys are"}, "finish_reason": null}]}\n\n'
            f"data: {gone}\n\ndata: [DONE]\n\n")), times=1)
    try:
        answer = ask_and_wait(page, "How often should API keys be rotated?")
    finally:
        page.unroute_all()
    expect(answer).not_to_have_class(re.compile("failed"))
    expect(answer.locator(".answer")).to_contain_text("90 days")
    expect(page.locator("#status")).to_contain_text("a new conversation was started")
    expect(page.locator("#status")).not_to_have_class(re.compile("error"))
    expect(page.locator("#transcript article")).to_have_count(2)  # the new conversation's question and answer
    session = httpx.get(f"{server.url}/v1/sessions/{page.evaluate('state.sessionId')}").json()
    assert [m["role"] for m in session["messages"]] == ["user", "assistant"]


def test_a_failed_answer_is_marked_and_not_left_busy(server, page):
    """A failed answer left an empty bubble marked aria-busy and the server's wording in the status line."""
    from playwright.sync_api import expect

    page.goto(server.url)
    messages = "**/v1/sessions/*/messages"
    error_json = json.dumps({"error": {"message": "LLM at http://10.0.0.5:8000 timed out after 60 s",
                                       "type": "upstream_error"}})
    cases = [
        ("upstream", lambda route: route.fulfill(status=502, content_type="application/json", body=error_json),
         "failed or took too long"),
        ("unreachable", lambda route: route.abort("connectionrefused"), "cannot be reached"),
        ("cut off", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=(
            'data: {"choices": [{"index": 0, "delta": {"content": "Keys are rotated"}, "finish_reason": null}]}\n\n')),
         "cut off"),
        # An error event after some text: the text stays, as for a dropped connection (it was thrown away).
        ("in-band", lambda route: route.fulfill(status=200, content_type="text/event-stream", body=(
            'data: {"choices": [{"index": 0, "delta": {"content": "Keys are rotated"}, "finish_reason": null}]}\n\n'
            f"data: {error_json}\n\ndata: [DONE]\n\n")), "failed or took too long"),
    ]
    try:
        for name, handler, words in cases:
            page.route(messages, handler)
            answer = ask_and_wait(page, "How often should API keys be rotated?")
            expect(answer, name).to_have_class(re.compile("failed"))
            expect(answer.locator(".answer"), name).to_contain_text(words)
            if name in ("cut off", "in-band"):
                expect(answer.locator(".answer"), name).to_contain_text("Keys are rotated")
            alert = page.get_by_role("alert")
            expect(alert, name).to_contain_text("No answer:")
            expect(alert, name).to_contain_text(words)
            expect(alert, name).not_to_contain_text("10.0.0.5")
            page.unroute(messages)

        # A session that stays missing is started again once, not in a loop, and then reported plainly.
        asked = []

        def gone(route):
            asked.append(route.request.url)
            route.fulfill(status=404, content_type="application/json", body=json.dumps(
                {"error": {"message": "Session 'x' does not exist: create one with POST /v1/sessions",
                           "type": "conversation_not_found"}}))

        page.route(messages, gone)
        answer = ask_and_wait(page, "How often should API keys be rotated?")
        assert len(asked) == 2 and asked[0] != asked[1]
        expect(answer).to_have_class(re.compile("failed"))
        expect(page.get_by_role("alert")).to_contain_text("no longer exists")
        expect(page.get_by_role("alert")).not_to_contain_text("POST /v1/sessions")
        page.unroute(messages)

        # A session whose index was deleted is a 404 too, but not a deleted session: it was started again
        # over `"index": ""`, answered from the default index, and said "the conversation no longer exists".
        asked.clear()

        def index_gone(route):
            asked.append(route.request.url)
            route.fulfill(status=404, content_type="application/json", body=json.dumps(
                {"error": {"message": "Index 'hr' does not exist. Available indexes: handbook, office. Create it "
                                      "with `unirank ingest SOURCE --index hr`.", "type": "index_not_found"}}))

        page.route(messages, index_gone)
        answer = ask_and_wait(page, "How often should API keys be rotated?")
        assert len(asked) == 1, asked
        expect(answer).to_have_class(re.compile("failed"))
        expect(page.get_by_role("alert")).to_contain_text("no longer indexed")
        expect(page.get_by_role("alert")).not_to_contain_text("conversation")
        page.unroute(messages)
    finally:
        page.unroute_all()

    # The page still answers once the server does.
    answer = ask_and_wait(page, "How often should API keys be rotated?")
    expect(answer).not_to_have_class(re.compile("failed"))
    expect(answer.locator(".answer")).to_contain_text("90 days")
    expect(page.locator("#status")).to_contain_text("Answered from the documents")
    assert page.locator("#transcript article[aria-busy='true']").count() == 0


def test_the_api_docs_page_renders_without_a_network(server, page):
    """/docs loaded Swagger UI from cdn.jsdelivr.net: on a machine without internet it was a blank page."""
    from playwright.sync_api import expect

    page.goto(f"{server.url}/docs")
    expect(page.locator(".opblock-summary-path", has_text="/v1/chat/completions")).to_have_count(1, timeout=30_000)
    assert all(url.startswith(server.url) for url in page.evaluate(
        "performance.getEntriesByType('resource').map((r) => r.name)"))


def hold_requests(page, pattern: str, method: str = "POST") -> list:
    """Routes ``pattern`` so that its ``method`` requests wait (in the returned list) until the test lets
    them go with ``route.continue_()``; the others go through."""
    held = []
    page.route(pattern, lambda route: held.append(route) if route.request.method == method else route.continue_())
    return held


def wait_for(page, condition, what: str, timeout_ms: int = 10_000):
    for _ in range(timeout_ms // 50):
        if condition():
            return
        page.wait_for_timeout(50)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_question_stays_in_the_conversation_it_was_asked_in(server, page):
    """A session created for a question was kept as the page's after the user had picked other documents
    meanwhile: the next question, asked over "office", went to the "handbook" session."""
    from playwright.sync_api import expect

    page.goto(server.url)
    held = hold_requests(page, "**/v1/sessions")
    try:
        page.get_by_label("Your question").fill("How long does an old API key keep working after rotation?")
        page.get_by_label("Your question").press("Enter")
        wait_for(page, lambda: held, "the session to be asked for")
        page.get_by_label("Documents").select_option("office")  # while the session is being created
        held[0].continue_()
        expect(page.locator("#ask")).to_be_enabled(timeout=120_000)
    finally:
        page.unroute_all()
    assert page.evaluate("state.sessionId") is None
    answer = ask_and_wait(page, "What is the guest Wi-Fi network called?")
    expect(answer.locator(".answer")).to_contain_text("Northwind-Guest")
    session = httpx.get(f"{server.url}/v1/sessions/{page.evaluate('state.sessionId')}").json()
    assert session["index"] == "office" and len(session["messages"]) == 2
    # The first question was answered in a session of its own, over the documents it was asked about.
    first = httpx.get(f"{server.url}/v1/sessions").json()["sessions"][1]
    assert (first["index"], first["title"]) == ("handbook", "How long does an old API key keep working after rotation?")


def test_the_page_fits_a_phone_and_keeps_new_answers_in_view(server, page):
    """A long URL in a question made the page 960 px wide on a 375 px phone; and the transcript never
    scrolled: each question pushed the question box and the new answer below the screen."""
    from playwright.sync_api import expect

    page.goto(server.url)
    # Earlier turns enough to overflow the transcript (made on the page: asking them would take long).
    page.evaluate("for (let i = 0; i < 30; i++) addUserMessage(`Earlier question ${i}`);")
    answer = ask_and_wait(page, "How often should API keys be rotated?")
    expect(answer.locator(".answer")).to_contain_text("90 days")
    expect(answer).to_be_in_viewport()
    expect(page.get_by_label("Your question")).to_be_in_viewport()
    assert page.evaluate("document.documentElement.scrollHeight <= innerHeight")

    page.set_viewport_size({"width": 375, "height": 740})
    try:
        url = "https://intranet.example.com/" + "x" * 300
        answer = ask_and_wait(page, f"What does {url} say?")
        assert page.evaluate("document.documentElement.scrollWidth") <= 375
        expect(page.locator("#transcript article.user").last).to_contain_text(url)
        expect(answer).to_be_in_viewport()
        expect(page.get_by_label("Your question")).to_be_in_viewport()
        page.screenshot(path=str(ARTIFACTS / "web-page-phone.png"))
    finally:
        page.set_viewport_size({"width": 1200, "height": 900})


def test_a_reload_reopens_the_conversation(server, page):
    """Reloading the page lost the open conversation: it came back empty, the answers only in the list.
    So did a reload after the skip link, which replaced #session=ID in the address with #question."""
    from playwright.sync_api import expect

    page.goto(server.url)
    page.get_by_label("Documents").select_option("office")
    ask_and_wait(page, "What is the guest Wi-Fi network called?")
    session_id = page.evaluate("state.sessionId")
    page.get_by_role("link", name="Skip to the question box").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_label("Your question")).to_be_focused()
    assert page.evaluate("location.hash") == f"#session={session_id}"
    page.reload()
    expect(page.locator("#transcript article")).to_have_count(2)
    expect(page.locator("#transcript article.assistant .answer")).to_contain_text("Northwind-Guest")
    expect(page.get_by_label("Documents")).to_have_value("office")
    assert page.evaluate("state.sessionId") == session_id

    # One deleted meanwhile leaves a new conversation, not an error.
    assert httpx.delete(f"{server.url}/v1/sessions/{session_id}").status_code == 204
    page.reload()
    expect(page.locator("#status")).to_contain_text("no longer exists")
    expect(page.locator("#status")).not_to_have_class(re.compile("error"))
    expect(page.locator("#transcript article")).to_have_count(0)
    assert page.evaluate("state.sessionId") is None and "#" not in page.url
    answer = ask_and_wait(page, "How often should API keys be rotated?")
    expect(answer.locator(".answer")).to_contain_text("90 days")


def test_a_conversation_over_documents_the_picker_lacks_keeps_the_picked_ones(server, page):
    """Opening a conversation over a deleted index (or an eval copy, which the picker leaves out) blanked the
    picker, and "New conversation" then asked with no index: answered from the server's default index while
    the picker showed nothing, or refused with advice for the command line. A question asked in the one over
    the deleted index failed each time, saying to pick other documents, which the picker already showed."""
    from playwright.sync_api import expect

    from unirank.search.embedded.backend import EmbeddedBackend

    backend = EmbeddedBackend(server.log_path.parent / "indexes")  # the server's data dir
    try:
        backend.create_index("gone", backend.model("handbook"))
        gone = httpx.post(f"{server.url}/v1/sessions", json={"index": "gone"}).json()["id"]
        backend.delete_index("gone")  # `unirank index delete gone --yes` while the server runs
    finally:
        backend.close()
    copy = httpx.post(f"{server.url}/v1/sessions", json={"index": "handbook--other-1"}).json()["id"]
    for session_id, index in [(gone, "gone"), (copy, "handbook--other-1")]:
        page.goto(server.url)
        picker = page.get_by_label("Documents")
        picker.select_option("office")
        page.goto(f"{server.url}/#session={session_id}")
        expect(page.locator("#status")).to_contain_text(f"This conversation's documents (\u201c{index}\u201d) are "
                                                        "not among those under \u201cDocuments\u201d")
        expect(picker).to_have_value("office")
        if index == "gone":  # asked in it, every question failed saying to pick others: "office" was picked
            answer = ask_and_wait(page, "What is the guest Wi-Fi network called?")
            expect(answer.locator(".answer")).to_contain_text("Northwind-Guest")
            expect(page.locator("#status")).to_contain_text("(\u201cgone\u201d) are no longer indexed, so a new "
                                                            "conversation over \u201coffice\u201d was started")
            expect(page.locator("#transcript article")).to_have_count(2)
            assert page.evaluate("state.sessionId") != gone
        page.get_by_role("button", name="New conversation").click()
        answer = ask_and_wait(page, "What is the guest Wi-Fi network called?")
        expect(answer.locator(".answer")).to_contain_text("Northwind-Guest")
        asked = page.evaluate("state.sessionId")
        assert httpx.get(f"{server.url}/v1/sessions/{asked}").json()["index"] == "office"


def test_a_damaged_index_is_named_and_not_offered(server, page):
    """/v1/indexes lists a damaged index (chunks and model null, and why in ``damaged``): the picker offers
    only the indexes that can answer, and the status names the damaged one, which no longer just looks gone."""
    from playwright.sync_api import expect

    from unirank.search.embedded.backend import EmbeddedBackend

    indexes = server.log_path.parent / "indexes"  # the server's data dir
    backend = EmbeddedBackend(indexes)
    try:
        backend.create_index("broken", backend.model("handbook"))
        backend.flush("broken")
    finally:
        backend.close()
    (indexes / "broken" / "v1" / "chunks.sqlite").write_bytes(b"not a database " * 1000)
    try:
        page.goto(server.url)
        expect(page.locator("#status")).to_contain_text("These documents are damaged and cannot be read: "
                                                        "\u201cbroken\u201d (")
        picker = page.get_by_label("Documents")
        expect(picker).to_have_value("handbook")
        assert page.evaluate("[...document.getElementById('index').options].map((o) => o.value)") == [
            "handbook", "office"]
        answer = ask_and_wait(page, "What does SEV1 mean?")  # the page still asks and answers
        expect(answer.locator(".answer")).to_contain_text("Page the incident commander at once.")
    finally:
        shutil.rmtree(indexes / "broken")


def test_conversations_can_be_deleted_from_the_list(server, page):
    """The page could not delete a conversation, nor tell which documents or day one was from; on a
    phone the list filled the first screen."""
    from playwright.sync_api import expect

    page.goto(server.url)
    ask_and_wait(page, "How often should API keys be rotated?")
    session_id = page.evaluate("state.sessionId")
    nav = page.get_by_role("navigation", name="Conversations")
    current = nav.locator("li").filter(has=page.locator("button[aria-current='true']"))
    expect(current).to_have_count(1)
    expect(current.locator(".meta")).to_contain_text("handbook")
    expect(current.locator("time")).to_have_text(re.compile(r"\d"))
    delete = current.get_by_role("button", name="Delete conversation \u201cHow often should API keys be rotated?\u201d")

    asked = []
    page.once("dialog", lambda dialog: (asked.append(dialog.message), dialog.dismiss()))
    delete.click()
    wait_for(page, lambda: asked, "the confirmation")
    assert "How often should API keys be rotated?" in asked[0]
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}").status_code == 200  # not without a yes

    page.once("dialog", lambda dialog: dialog.accept())
    delete.click()
    expect(page.locator("#status")).to_contain_text("Deleted the conversation")
    expect(page.locator("#transcript article")).to_have_count(0)  # the open one: a new conversation begins
    assert page.evaluate("state.sessionId") is None
    assert httpx.get(f"{server.url}/v1/sessions/{session_id}").status_code == 404
    expect(nav.locator("button[aria-current='true']")).to_have_count(0)

    page.set_viewport_size({"width": 375, "height": 740})
    try:
        expect(page.locator("#sessions")).to_be_hidden()  # folded, so the conversation comes first
        nav.get_by_text("Conversations").click()
        expect(page.locator("#sessions")).to_be_visible()
        nav.locator("li button.open").first.click()
        expect(page.locator("#transcript article").first).to_be_visible()
        expect(page.locator("#sessions")).to_be_hidden()
    finally:
        page.set_viewport_size({"width": 1200, "height": 900})


def test_conversations_past_the_newest_hundred_can_be_listed(server, page):
    """The list showed the 100 newest conversations (the server's default limit), and the older ones
    could not be reached from the page."""
    from playwright.sync_api import expect

    with httpx.Client(base_url=server.url) as http:
        have = len(http.get("/v1/sessions", params={"limit": 10_000}).json()["sessions"])
        made = [http.post("/v1/sessions", json={"title": f"Older {i}"}).json()["id"] for i in range(max(0, 101 - have))]
        oldest = http.get("/v1/sessions", params={"limit": 10_000}).json()["sessions"][-1]["id"]
        try:
            page.goto(server.url)
            sessions = page.locator("#sessions")
            expect(sessions.locator("button.open")).to_have_count(100)
            sessions.get_by_role("button", name="Show older conversations").click()
            expect(sessions.locator("button.open")).to_have_count(have + len(made))
            expect(sessions.get_by_role("button", name="Show older conversations")).to_have_count(0)
            expect(sessions.locator("li").nth(100).locator("button.open")).to_be_focused()
            sessions.locator("button.open").last.click()
            page.wait_for_function(f"state.sessionId === {json.dumps(oldest)}")
        finally:
            for session_id in made:
                http.delete(f"/v1/sessions/{session_id}")


# Answers every question with a stream that breaks off after its first words, as a dropped connection does.
DROP_THE_STREAM = """
const realFetch = window.fetch;
window.fetch = async (url, options) => {
  if (!String(url).endsWith("/messages")) return realFetch(url, options);
  const words = 'data: {"choices": [{"index": 0, "delta": {"content": "From the documents: keys are"}, '
              + '"finish_reason": null}]}\\n\\n';
  const body = new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode(words));
      setTimeout(() => controller.error(new TypeError("network error")), 100);
    },
  });
  return new Response(body, {status: 200, headers: {"Content-Type": "text/event-stream"}});
};
"""


def test_a_dropped_stream_keeps_the_words_that_came(server, page):
    """A connection dropped mid-answer threw the words away and said the server could not be reached;
    and the question was gone from the box, to be typed again."""
    from playwright.sync_api import expect

    page.goto(server.url)
    page.evaluate(DROP_THE_STREAM)
    question = "How often should API keys be rotated?"
    answer = ask_and_wait(page, question)
    expect(answer).to_have_class(re.compile("failed"))
    expect(answer.locator(".answer")).to_contain_text("From the documents: keys are")
    expect(answer.locator(".answer")).to_contain_text("cut off")
    expect(page.get_by_role("alert")).not_to_contain_text("cannot be reached")
    expect(page.get_by_label("Your question")).to_have_value(question)  # Enter asks it again


def test_a_question_too_long_is_refused_plainly(server, page):
    """A question over the server's 1 MB limit (its 413) said "Something went wrong on the server", and
    left an empty "(untitled)" conversation behind; opening a conversation kept the old status line.
    A pasted question over 4000 characters was cut there without a word (the box's maxlength)."""
    from playwright.sync_api import expect

    opened = httpx.post(f"{server.url}/v1/sessions", json={"title": "One to open after"}).json()["id"]
    page.goto(server.url)
    question = page.get_by_label("Your question")
    pasted = "How do I rotate an API key? " + "x" * 4100 + " END"
    question.focus()
    page.keyboard.insert_text(pasted)  # as a paste: a script's value was never cut
    expect(question).to_have_value(pasted)
    before = httpx.get(f"{server.url}/v1/sessions").json()["sessions"]
    page.evaluate("document.getElementById('question').value = 'Why? '.repeat(220_000)")
    question.press("Enter")
    answer = page.locator("#transcript article.assistant").last
    expect(answer).to_have_class(re.compile("failed"))
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("The question was refused:")
    expect(alert).not_to_contain_text("went wrong")
    expect(page.locator("#ask")).to_be_enabled()
    assert httpx.get(f"{server.url}/v1/sessions").json()["sessions"] == before
    assert page.evaluate("state.sessionId") is None

    page.get_by_role("navigation", name="Conversations").get_by_role("button", name=re.compile("^One to open after")).click()
    expect(page.locator("#sessions button[aria-current='true']")).to_contain_text("One to open after")
    assert page.evaluate("state.sessionId") == opened
    expect(page.locator("#status")).to_have_text("")


def test_asking_while_an_answer_runs_or_asking_nothing_says_so(server, page):
    """Enter while an answer was running did nothing at all (the Ask button was disabled), and a
    question of spaces was ignored without a word, where an empty one got the browser's bubble.
    Another conversation opened mid-answer, and this one opened again, showed neither the question nor
    its answer (a turn is stored once answered) until a reload."""
    from playwright.sync_api import expect

    httpx.post(f"{server.url}/v1/sessions", json={"title": "Another conversation"}).raise_for_status()
    page.goto(server.url)
    question, status = page.get_by_label("Your question"), page.locator("#status")
    held = hold_requests(page, "**/v1/sessions/*/messages")
    try:
        question.fill("How often should API keys be rotated?")
        question.press("Enter")
        wait_for(page, lambda: held, "the question to be sent")
        expect(page.locator("#ask")).to_be_disabled()
        question.fill("What is SEV1?")
        question.press("Enter")
        expect(status).to_contain_text("Wait for the current answer to finish")
        expect(question).to_have_value("What is SEV1?")  # kept, to ask once the answer is in

        asked_in = page.evaluate("state.sessionId")
        page.get_by_role("button", name=re.compile("^Another conversation")).click()
        expect(page.locator("#transcript article")).to_have_count(0)
        page.locator("#sessions button.open").first.click()  # the newest: the one being answered
        page.wait_for_function(f"state.sessionId === {json.dumps(asked_in)}")
        expect(page.locator("#transcript article.user")).to_have_text(re.compile("How often should API keys"))
        expect(page.locator("#transcript article.assistant")).to_have_attribute("aria-busy", "true")

        held[0].continue_()
        answer = page.locator("#transcript article.assistant").last
        expect(answer).to_have_attribute("aria-busy", "false", timeout=120_000)
        expect(page.locator("#ask")).to_be_enabled()
    finally:
        page.unroute_all()
    expect(page.locator("#transcript article")).to_have_count(2)
    expect(answer.locator(".answer")).to_contain_text("90 days")
    expect(status).to_contain_text("Answered from the documents")

    for nothing in ["", "   "]:
        page.evaluate("document.getElementById('status').textContent = ''")
        question.fill(nothing)
        question.press("Enter")
        expect(status, repr(nothing)).to_have_text("Type a question first.")
    expect(page.locator("#transcript article")).to_have_count(2)
