"""The web page in headless Chromium (Debian's, driven by Playwright): ask, watch the answer stream
in, open a citation, give feedback, ask a follow-up; screenshots go to ``test-artifacts/``."""

from __future__ import annotations

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


@pytest.fixture(scope="module")
def server(tmp_path_factory, base_embedder):
    ur = build_corpus(tmp_path_factory.mktemp("web"), base_embedder, hostile=False)
    # A copy `eval` re-embeds with another model holds the same documents: not offered in the picker.
    ur.backend.create_index("handbook--other-1", ur.backend.model("handbook"), copy_of="handbook")
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
    assert page.get_by_label("Documents").locator("option").all_inner_texts() == ["handbook (19 passages)"]
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

    # A follow-up in the same conversation is resolved through its history.
    question.fill("How often should I do it?")
    page.get_by_role("button", name="Ask").click()
    follow_up = page.locator("#transcript article.assistant").nth(1)
    expect(follow_up).to_have_attribute("aria-busy", "false", timeout=120_000)
    expect(follow_up.locator(".answer")).to_contain_text("Rotate keys every 90 days")
    expect(page.get_by_role("navigation", name="Conversations").get_by_role("button", name=re.compile("rotation"))
           ).to_have_attribute("aria-current", "true")
    assert page.evaluate("document.activeElement.id") == "question"
    page.screenshot(path=str(ARTIFACTS / "web-page.png"), full_page=True)
    print(f"screenshots: {ARTIFACTS}/web-page*.png")

    # An off-topic question is answered honestly.
    question.fill("What is the plot of Hamlet?")
    question.press("Enter")
    last = page.locator("#transcript article.assistant").nth(2)
    expect(last).to_have_attribute("aria-busy", "false", timeout=120_000)
    expect(last.locator(".answer")).to_have_text("The documents do not cover this question.")
    expect(last.locator("button.cite")).to_have_count(0)
