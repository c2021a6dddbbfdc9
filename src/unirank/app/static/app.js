// The unirank chat page: plain JavaScript, no build step.
// Document text is untrusted: it is only ever put on the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { sessionId: null, busy: false };

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// Thumbs as inline SVG (Material Design icons, Apache-2.0): emoji need a colour-emoji font, and
// where none is installed (a server, a minimal desktop) they render as empty boxes.
const THUMB_UP = "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z";
const THUMB_DOWN = "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31l-.95 4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z";

function icon(path) {
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  for (const [key, value] of Object.entries({ viewBox: "0 0 24 24", width: "14", height: "14", fill: "currentColor",
                                               "aria-hidden": "true", class: "icon" })) svg.setAttribute(key, value);
  const shape = document.createElementNS(ns, "path");
  shape.setAttribute("d", path);
  svg.append(shape);
  return svg;
}

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

async function api(path, options = {}) {
  const response = await fetch(path, {
    headers: { "Content-Type": "application/json" }, ...options,
  });
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response.status === 204 ? null : response.json();
}

// ---- conversations ------------------------------------------------------------------------------
async function loadIndexes() {
  // The copies eval re-embeds with other models are left out: they hold the same documents.
  const indexes = (await api("/v1/indexes")).indexes.filter((i) => !i.copy_of);
  const select = $("index");
  select.replaceChildren(...indexes.map((i) => el("option", { value: i.name, title: `vectors made by ${i.model}` }, `${i.name} (${i.chunks} passages)`)));
  const preferred = indexes.find((i) => i.default) || indexes[0];
  if (preferred) select.value = preferred.name;
  if (!indexes.length) setStatus("No documents are indexed yet: run `unirank ingest FOLDER --index NAME` first.", true);
}

async function loadSessions() {
  const { sessions } = await api("/v1/sessions");
  const list = $("sessions");
  list.replaceChildren(...sessions.map((s) => el("li", {},
    el("button", {
      type: "button", "aria-current": String(s.id === state.sessionId), title: s.title || "(untitled)",
      onclick: () => openSession(s.id),
    }, s.title || "(untitled)"))));
}

async function openSession(id) {
  const session = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  state.sessionId = session.id;
  $("index").value = session.index;
  const transcript = $("transcript");
  transcript.replaceChildren();
  let question = null;
  for (const m of session.messages) {
    if (m.role === "user") { addUserMessage(m.content); question = m.content; }
    else renderAnswer(addAssistantMessage(), m, question);
  }
  await loadSessions();
  $("question").focus();
}

function newConversation() {
  state.sessionId = null;
  $("transcript").replaceChildren();
  setStatus("New conversation.");
  loadSessions();
  $("question").focus();
}

// ---- messages -----------------------------------------------------------------------------------
function addUserMessage(text) {
  const node = el("article", { class: "msg user", "aria-label": "You asked" },
    el("p", { class: "who" }, "You"), el("p", { class: "answer" }, text));
  $("transcript").append(node);
  return node;
}

function addAssistantMessage() {
  const answer = el("p", { class: "answer" });
  const node = el("article", { class: "msg assistant", "aria-label": "Answer", "aria-busy": "true" },
    el("p", { class: "who" }, "unirank"), answer);
  $("transcript").append(node);
  return node;
}

// "[2]" in the answer becomes a button that opens citation 2; the rest stays plain text.
function answerWithCitations(text, citations, messageId) {
  const known = new Map(citations.map((c) => [c.n, c]));
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(/\[(\d+)\]/g)) {
    const n = Number(match[1]);
    if (!known.has(n)) continue;
    parts.push(text.slice(last, match.index));
    parts.push(citeButton(messageId, known.get(n), `[${n}]`, "cite"));
    last = match.index + match[0].length;
  }
  parts.push(text.slice(last));
  return parts;
}

function citeButton(messageId, citation, label, cls) {
  const where = citation.page ? `${citation.title}, page ${citation.page}` : citation.title;
  return el("button", {
    type: "button", class: cls, "data-n": String(citation.n),
    "aria-label": `Open source ${citation.n}: ${where}`,
    onclick: () => openCitation(messageId, citation.n),
  }, label);
}

// ``message``: a stored assistant message, or the final stream chunk (plus the streamed text).
function renderAnswer(node, message, question) {
  node.setAttribute("aria-busy", "false");
  node.dataset.messageId = message.message_id || message.id || "";
  node.classList.toggle("not-grounded", !message.grounded);
  const messageId = node.dataset.messageId;
  const citations = message.citations || [];
  const answer = node.querySelector(".answer");
  answer.replaceChildren(...answerWithCitations(message.content ?? message.answer ?? "", citations, messageId));
  if (message.query && message.query !== question) node.append(el("p", { class: "query" }, `Searched for: ${message.query}`));
  if (citations.length) {
    node.append(el("ol", { class: "sources", "aria-label": "Sources" }, ...citations.map((c) => el("li", { value: String(c.n) },
      citeButton(messageId, c, [c.title, c.heading].filter(Boolean).join(" › ") + (c.page ? ` (p. ${c.page})` : ""), "source")))));
  }
  if (messageId) node.append(feedbackButtons(messageId));
}

function feedbackButtons(messageId) {
  const group = el("div", { class: "feedback", role: "group", "aria-label": "Was this answer helpful?" });
  const send = async (kind, button) => {
    try {
      await api("/v1/feedback", { method: "POST", body: JSON.stringify({ message_id: messageId, kind }) });
      for (const b of group.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
      setStatus(kind === "up" ? "Thanks: marked as helpful." : "Thanks: marked as not helpful.");
    } catch (error) { setStatus(`Feedback failed: ${error.message}`, true); }
  };
  const up = el("button", { type: "button", "aria-pressed": "false" }, icon(THUMB_UP), "Helpful");
  const down = el("button", { type: "button", "aria-pressed": "false" }, icon(THUMB_DOWN), "Not helpful");
  up.addEventListener("click", () => send("up", up));
  down.addEventListener("click", () => send("down", down));
  group.append(up, down);
  return group;
}

async function openCitation(messageId, n) {
  try {
    const c = await api(`/v1/messages/${encodeURIComponent(messageId)}/citations/${n}`);
    $("passage-title").textContent = `[${c.n}] ${c.title}`;
    $("passage-location").textContent = [c.heading, c.page ? `page ${c.page}` : "", c.uri].filter(Boolean).join(" · ");
    const text = $("passage-text");
    // The quoted sentences are marked inside the whole passage (spans are offsets into it).
    const spans = c.spans && c.spans.length ? c.spans : [[c.start, c.end]];
    const parts = [];
    let at = 0;
    for (const [start, end] of spans) {
      parts.push(c.passage.slice(at, start), el("mark", {}, c.passage.slice(start, end)));
      at = end;
    }
    parts.push(c.passage.slice(at));
    text.replaceChildren(...parts);
    $("passage").showModal();
    api("/v1/feedback", { method: "POST", body: JSON.stringify({ message_id: messageId, kind: "click", citation: n }) })
      .catch((error) => setStatus(`Could not record the click: ${error.message}`, true));
  } catch (error) { setStatus(`Could not open the source: ${error.message}`, true); }
}

// ---- asking, with the answer streamed as server-sent events ------------------------------------
async function ask(question) {
  if (!state.sessionId) {
    const session = await api("/v1/sessions", { method: "POST", body: JSON.stringify({ index: $("index").value }) });
    state.sessionId = session.id;
  }
  addUserMessage(question);
  const node = addAssistantMessage();
  const answer = node.querySelector(".answer");
  setStatus("Searching the documents…");
  const response = await fetch(`/v1/sessions/${encodeURIComponent(state.sessionId)}/messages`, {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ content: question, stream: true }),
  });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", text = "", final = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices[0];
        if (choice.delta && choice.delta.content) {
          text += choice.delta.content;
          answer.textContent = text;
          setStatus("Answering…");
        }
        if (choice.finish_reason) final = { ...chunk, answer: text };
      }
    }
  }
  if (!final) throw new Error("the answer stream ended early");
  renderAnswer(node, final, question);
  setStatus(final.grounded ? "Answered from the documents." : "The documents do not cover this question.");
  await loadSessions();
}

async function onSubmit(event) {
  event.preventDefault();
  const input = $("question");
  const question = input.value.trim();
  if (!question || state.busy) return;
  state.busy = true;
  $("ask").disabled = true;
  input.value = "";
  try { await ask(question); } catch (error) { setStatus(`Error: ${error.message}`, true); }
  finally {
    state.busy = false;
    $("ask").disabled = false;
    input.focus();
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("ask-form").addEventListener("submit", onSubmit);
  $("new-conversation").addEventListener("click", newConversation);
  try {
    await loadIndexes();
    await loadSessions();
  } catch (error) { setStatus(`Cannot reach the server: ${error.message}`, true); }
});
