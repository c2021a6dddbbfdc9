// The unirank chat page: plain JavaScript, no build step.
// Document text is untrusted: it is only ever put on the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
// As in style.css: on a narrow screen the conversation list is folded.
const narrowScreen = window.matchMedia("(max-width: 700px)");
// ``conversation`` counts the conversations started on this page, so an answer still arriving for
// one the user has left does not write over the status line of the one they are in.
// ``indexesLoaded`` settles once the picker is filled: a question asked while the page loads waits for it.
// ``follow``: the transcript keeps the newest text in view, until the user scrolls up to read.
// ``defaultIndex``: the index the picker starts on (the server's default, else the first listed).
// ``pending``: the question being answered ({asked, nodes: [question, answer]}): a turn is stored only once
// its answer is done, so a conversation opened again meanwhile puts these bubbles back (showPendingTurn).
// ``sessionIndex``: the index the open conversation's session answers from.
// ``listed``: how many of the newest conversations the list shows ("Show older conversations" adds more).
const state = { sessionId: null, sessionIndex: null, listed: 100, busy: false, conversation: 0, indexesLoaded: Promise.resolve(), follow: true,
                defaultIndex: "", pending: null };

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
const TRASH = "M6 19c0 1.1.9 2 2 2h8c1.1 0 2-.9 2-2V7H6v12zM19 4h-3.5l-1-1h-5l-1 1H5v2h14V4z";
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
  if (!response.ok) throw await responseError(response);
  return response.status === 204 ? null : response.json();
}

// An error that keeps the HTTP status and the server's error type, so the page can act on them.
async function responseError(response) {
  let message = `${response.status} ${response.statusText}`, type = "";
  try { ({ message, type } = (await response.json()).error); } catch (_) { /* not JSON */ }
  return Object.assign(new Error(message), { status: response.status, type });
}

// What to tell the user when a question gets no answer: plain words, not the API's.
function plainError(error) {
  if (error instanceof TypeError) return "The unirank server cannot be reached. Check that it is running, then ask again.";
  if (error.sessionGone) return "This conversation no longer exists on the server. Click \u201cNew conversation\u201d and ask again.";
  // The server's 404s say what is missing: a session (``conversation_not_found``) or an index (``index_not_found``).
  // An error event in a stream has no status, but the same ``type`` as that error's HTTP answer.
  if (error.status === 404 || error.type === "index_not_found")
    return "The documents picked are no longer indexed. Pick others under \u201cDocuments\u201d and ask again.";
  if (error.status === 502 || error.type === "answerer_error" || error.type === "upstream_error")
    return "The model that writes the answers failed or took too long. Try again in a moment.";
  // 413: a question over the server's request size limit (api.max_request_mb).
  if (error.status === 400 || error.status === 413 || error.status === 422 || error.type === "invalid_request_error")
    return `The question was refused: ${error.message}`;
  // 503: another process is writing or rebuilding the index; 409: it changed while the answer was found.
  if (error.status === 503 || error.type === "index_busy")
    return "The documents are being re-indexed right now. Try again in a moment.";
  if (error.status === 409 || error.type === "index_changed")
    return "The documents changed while the answer was being found. Ask again.";
  if (error.cutOff) return "The answer was cut off before it was finished. Ask again.";
  return "Something went wrong on the server, so there is no answer. Try again; if it keeps failing, see the server's log.";
}

// ---- conversations ------------------------------------------------------------------------------
// The open conversation is kept in the address (#session=ID), so a reload or a bookmark reopens it.
const SESSION_HASH = "#session=";

function sessionInAddress() {
  if (!location.hash.startsWith(SESSION_HASH)) return null;
  try { return decodeURIComponent(location.hash.slice(SESSION_HASH.length)) || null; } catch (_) { return null; }
}

function setSession(id, index = null) {
  state.sessionId = id;
  state.sessionIndex = id ? index : null;
  if (id === sessionInAddress()) return;
  history.replaceState(history.state, "", id ? SESSION_HASH + encodeURIComponent(id) : location.pathname + location.search);
}

// Opens the conversation the address names; one deleted (or never there) leaves a new conversation.
async function openFromAddress() {
  const id = sessionInAddress();
  if (!id || id === state.sessionId) return;
  try {
    await openSession(id);
  } catch (error) {
    if (error.status !== 404) throw error;
    startConversation("The conversation in the address no longer exists, so this is a new one.");
    await loadSessions();
  }
}

async function loadIndexes() {
  // The copies eval re-embeds with other models are left out: they hold the same documents. So are damaged
  // indexes, which answer nothing: the status names them, so they do not just look gone.
  const listed = (await api("/v1/indexes")).indexes;
  const indexes = listed.filter((i) => !i.copy_of && !i.damaged);
  const damaged = listed.filter((i) => i.damaged).map((i) => `\u201c${i.name}\u201d (${i.damaged})`);
  const select = $("index");
  select.replaceChildren(...indexes.map((i) => el("option", { value: i.name, title: `vectors made by ${i.model}` }, `${i.name} (${i.chunks} passage${i.chunks === 1 ? "" : "s"})`)));
  const preferred = indexes.find((i) => i.default) || indexes[0];
  state.defaultIndex = preferred ? preferred.name : "";
  if (preferred) select.value = preferred.name;
  if (damaged.length) setStatus(`These documents are damaged and cannot be read: ${damaged.join(", ")}. Run \`unirank index delete NAME\` and ingest them again.`, true);
  else if (!indexes.length) setStatus("No documents are indexed yet: run `unirank ingest FOLDER --index NAME` first.", true);
}

// When a conversation was last used: the time today, else the day (and the year, if not this one).
function shortTime(iso) {
  const when = new Date(iso), now = new Date();
  if (Number.isNaN(when.getTime())) return "";
  if (when.toDateString() === now.toDateString()) return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const day = { day: "numeric", month: "short" };
  if (when.getFullYear() !== now.getFullYear()) day.year = "numeric";
  return when.toLocaleDateString([], day);
}

// The server lists at most 10,000 at once (and 100 unless asked): the rest were out of the page's reach.
const SESSIONS_MORE = 100, SESSIONS_MAX = 10_000;

async function loadSessions() {
  // One more than shown: whether there are older ones to offer.
  const { sessions } = await api(`/v1/sessions?limit=${Math.min(state.listed + 1, SESSIONS_MAX)}`);
  const list = $("sessions");
  list.replaceChildren(...sessions.slice(0, state.listed).map((s) => {
    const title = s.title || "(untitled)";
    const when = new Date(s.updated_at);
    return el("li", {},
      el("button", {
        type: "button", class: "open", "aria-current": String(s.id === state.sessionId), title,
        onclick: () => openSession(s.id).then(() => {
          if (narrowScreen.matches) $("history").open = false;  // show the conversation, not the list
        }).catch((error) => {
          setStatus(error.status === 404 ? "That conversation no longer exists." : `Could not open the conversation: ${plainError(error)}`, true);
          loadSessions().catch(() => {});
        }),
      }, el("span", { class: "title" }, title),
      el("span", { class: "meta" }, `${s.index} \u00b7 `,
        el("time", { datetime: s.updated_at, title: Number.isNaN(when.getTime()) ? "" : when.toLocaleString() }, shortTime(s.updated_at)))),
      el("button", {
        type: "button", class: "delete", "aria-label": `Delete conversation \u201c${title}\u201d`,
        title: "Delete this conversation", onclick: () => deleteSession(s.id, title),
      }, icon(TRASH)));
  }));
  if (sessions.length > state.listed) {
    list.append(el("li", {}, el("button", { type: "button", class: "more", onclick: showOlderSessions },
      "Show older conversations")));
  }
}

async function showOlderSessions() {
  const shown = state.listed;
  state.listed = Math.min(state.listed + SESSIONS_MORE, SESSIONS_MAX - 1);
  try {
    await loadSessions();
    // The button is gone with the list it ended: the keyboard goes on at the first older conversation.
    const first = $("sessions").children[shown];
    if (first) first.querySelector("button").focus();
  } catch (error) {
    setStatus(`Could not list the older conversations: ${error instanceof TypeError ? "the server cannot be reached." : error.message}`, true);
  }
}

async function deleteSession(id, title) {
  if (!window.confirm(`Delete the conversation \u201c${title}\u201d? Its questions, answers and feedback are deleted for good.`)) return;
  try {
    await api(`/v1/sessions/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {  // gone already is as good as deleted
      setStatus(`Could not delete the conversation: ${error instanceof TypeError ? "the server cannot be reached." : error.message}`, true);
      return;
    }
  }
  const text = `Deleted the conversation \u201c${title}\u201d.`;
  if (id === state.sessionId) startConversation(`${text} This is a new conversation.`);
  else setStatus(text);
  await loadSessions().catch(() => {});
  $("question").focus();
}

async function openSession(id) {
  const conversation = state.conversation;
  const session = await api(`/v1/sessions/${encodeURIComponent(id)}`);
  if (conversation !== state.conversation) return;  // the user went on to another one meanwhile
  state.conversation += 1;
  setStatus("");
  setSession(session.id, session.index);
  if (!showIndex(session.index) && $("index").value)
    setStatus(`This conversation's documents (\u201c${session.index}\u201d) are not among those under \u201cDocuments\u201d (deleted, or a copy made by eval): a new conversation asks in \u201c${$("index").value}\u201d.`);
  const transcript = $("transcript");
  transcript.replaceChildren();
  let question = null;
  for (const m of session.messages) {
    if (m.role === "user") { addUserMessage(m.content); question = m.content; }
    else renderAnswer(addAssistantMessage(), m, question);
  }
  showPendingTurn();
  keepInView(true);
  await loadSessions();
  $("question").focus();
}

// Shows the turn being answered in the open conversation, if it is that turn's. Left and opened again
// mid-answer, the conversation showed only its stored turns: the question and the answer still arriving
// were gone until a reload. A turn stored just as it was opened is shown once: its stored bubbles stay.
function showPendingTurn() {
  const pending = state.pending;
  if (!pending || !state.sessionId || pending.asked.sessionId !== state.sessionId) return;
  const [question, answer] = pending.nodes;
  const id = answer.dataset.messageId;
  const transcript = $("transcript");
  if (id && [...transcript.querySelectorAll("article.assistant")].some((a) => a !== answer && a.dataset.messageId === id)) {
    question.remove();
    answer.remove();
  } else if (!answer.isConnected) {
    transcript.append(question, answer);
    pending.asked.conversation = state.conversation;  // its status and scrolling are this conversation's again
    if (answer.getAttribute("aria-busy") === "true") setStatus("Answering\u2026");
  }
}

// Shows ``name`` in the picker and says whether it could. An index the picker lacks (deleted, or an eval
// copy, which is not offered) would leave it blank, and the next new conversation was then asked with no
// index: refused, or answered from the server's default while the page showed none. The picked one stays.
function showIndex(name) {
  const select = $("index");
  const listed = [...select.options].some((o) => o.value === name);
  if (listed) select.value = name;
  else fillBlankPicker();
  return listed;
}

function fillBlankPicker() {
  const select = $("index");
  if (!select.value && select.options.length) select.value = state.defaultIndex || select.options[0].value;
}

// Forgets the session and the messages shown; the next question creates a session over the index picked.
function startConversation(status) {
  state.conversation += 1;
  fillBlankPicker();
  setSession(null);
  $("transcript").replaceChildren();
  setStatus(status);
}

// The skip link focuses the question box without going to "#question": that replaced the address's
// #session=ID, and a reload then lost the open conversation.
function skipToQuestion(event) {
  event.preventDefault();
  $("question").focus();
}

function newConversation() {
  startConversation("New conversation.");
  loadSessions().catch(() => {});
  $("question").focus();
}

// A session belongs to one index: picking other documents starts a new conversation over them.
// (Focus stays on the picker, where the arrow keys change it.)
function onIndexChange() {
  startConversation(`New conversation over \u201c${$("index").value}\u201d.`);
  loadSessions().catch(() => {});
}

// ---- messages -----------------------------------------------------------------------------------
// Scrolls the transcript to its newest text while it follows (or always, with ``force``: a new question).
function keepInView(force = false) {
  const transcript = $("transcript");
  if (force) state.follow = true;
  if (state.follow) transcript.scrollTop = transcript.scrollHeight;
}

function onTranscriptScroll() {
  const t = $("transcript");
  state.follow = t.scrollHeight - t.scrollTop - t.clientHeight < 40;
}

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

const MARKER = /\[(\d+(?:\s*,\s*\d+)*)\]/g;
const QUOTE_OR_MARKER = /\u201c[^\u201d]*\u201d|\[(\d+(?:\s*,\s*\d+)*)\]/g;
// How every extractive answer opens (the server's chat.extractive.PREFIX and its first quote).
const EXTRACTIVE_OPENING = "From the documents: \u201c";

// Whether the answer's “quotes” hold documents' words: the extractive answerer's do, an LLM's are its own
// (a "[1]" inside one is a citation, as the server counts it). The final chunk and a stored message name
// their answerer; a message stored by an earlier unirank does not, and the extractive answerer's opening tells it.
function quotesDocuments(message, text) {
  return message.answerer ? message.answerer === "extractive" : text.startsWith(EXTRACTIVE_OPENING);
}

// "[2]" or "[1, 2]" in the answer becomes buttons that open those citations; the rest stays plain text.
// With ``documentQuotes``, text inside “quotes” is a passage's own words: a "[1]" there is the document's,
// not a citation.
function answerWithCitations(text, citations, messageId, documentQuotes = true) {
  const known = new Map(citations.map((c) => [c.n, c]));
  const parts = [];
  let last = 0;
  for (const match of text.matchAll(documentQuotes ? QUOTE_OR_MARKER : MARKER)) {
    if (match[1] === undefined) continue;  // a quotation
    const numbers = match[1].split(",").map((part) => Number(part.trim()));
    if (!numbers.some((n) => known.has(n))) continue;
    parts.push(text.slice(last, match.index));
    if (numbers.length === 1) {
      parts.push(citeButton(messageId, known.get(numbers[0]), match[0], "cite"));
    } else {
      parts.push("[");
      numbers.forEach((n, i) => {
        if (i) parts.push(", ");
        parts.push(known.has(n) ? citeButton(messageId, known.get(n), String(n), "cite") : String(n));
      });
      parts.push("]");
    }
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
  node.classList.remove("failed");
  node.dataset.messageId = message.message_id || message.id || "";
  node.classList.toggle("not-grounded", !message.grounded);
  const messageId = node.dataset.messageId;
  const citations = message.citations || [];
  const answer = node.querySelector(".answer");
  const text = message.content ?? message.answer ?? "";
  answer.replaceChildren(...answerWithCitations(text, citations, messageId, quotesDocuments(message, text)));
  if (message.query && message.query !== question) node.append(el("p", { class: "query" }, `Searched for: ${message.query}`));
  if (citations.length) {
    node.append(el("ol", { class: "sources", "aria-label": "Sources" }, ...citations.map((c) => el("li", { value: String(c.n) },
      citeButton(messageId, c, [c.title, c.heading].filter(Boolean).join(" › ") + (c.page ? ` (p. ${c.page})` : ""), "source")))));
  }
  if (messageId) node.append(feedbackButtons(messageId, message.vote));
}

// The bubble of a question that got no answer: no longer busy, marked failed, saying why. The text
// that arrived before a stream was cut off (``partial``) stays, with why after it.
function failAnswer(node, text, partial = "") {
  node.setAttribute("aria-busy", "false");
  node.classList.add("failed");
  node.classList.toggle("partial", Boolean(partial));
  const answer = node.querySelector(".answer");
  if (partial) answer.replaceChildren(partial, el("span", { class: "note" }, `\n${text}`));
  else answer.textContent = text;
}

// ``vote``: the stored message's last vote ("up", "down" or null), so a reopened answer shows it pressed.
function feedbackButtons(messageId, vote = null) {
  const group = el("div", { class: "feedback", role: "group", "aria-label": "Was this answer helpful?" });
  const send = async (kind, button) => {
    try {
      await api("/v1/feedback", { method: "POST", body: JSON.stringify({ message_id: messageId, kind }) });
      for (const b of group.querySelectorAll("button")) b.setAttribute("aria-pressed", String(b === button));
      setStatus(kind === "up" ? "Thanks: marked as helpful." : "Thanks: marked as not helpful.");
    } catch (error) { setStatus(`Feedback failed: ${error.message}`, true); }
  };
  const up = el("button", { type: "button", "aria-pressed": String(vote === "up") }, icon(THUMB_UP), "Helpful");
  const down = el("button", { type: "button", "aria-pressed": String(vote === "down") }, icon(THUMB_DOWN), "Not helpful");
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
  // What the user sees when they ask: the question belongs to this conversation and index, even if they
  // open another conversation or pick other documents while its session is being created.
  const asked = { conversation: state.conversation, sessionId: state.sessionId, sessionIndex: state.sessionIndex,
                  index: $("index").value };
  const status = (text, isError) => { if (asked.conversation === state.conversation) setStatus(text, isError); };
  const pending = { asked, nodes: [addUserMessage(question), addAssistantMessage()] };
  state.pending = pending;
  try { return await answerPending(question, pending, status); } finally { state.pending = null; }
}

// Streams the answer to ``pending``'s question into its bubble; true once answered.
async function answerPending(question, pending, status) {
  const asked = pending.asked;
  let node = pending.nodes[1];
  keepInView(true);
  let restarted = "";
  try {
    let final;
    try {
      final = await streamAnswer(question, node, status, asked);
    } catch (error) {
      restarted = restartNote(error, asked);
      if (!restarted || asked.conversation !== state.conversation) throw error;
      startConversation("");
      Object.assign(asked, { conversation: state.conversation, sessionId: null, sessionIndex: null });
      pending.nodes = [addUserMessage(question), addAssistantMessage()];
      node = pending.nodes[1];
      keepInView(true);
      final = await streamAnswer(question, node, status, asked);
    }
    renderAnswer(node, final, question);
    showPendingTurn();
    if (asked.conversation === state.conversation) keepInView();
    status(restarted + (final.grounded ? "Answered from the documents." : "The documents do not cover this question."));
  } catch (error) {
    console.warn("unirank: no answer:", error);
    const text = plainError(error);
    failAnswer(node, text, error.partial);
    showPendingTurn();
    if (asked.conversation === state.conversation) keepInView();
    status(`No answer: ${text}`, true);
    if (asked.created) await dropIfEmpty(asked.sessionId);
    await loadSessions().catch(() => {});
    return false;
  }
  await loadSessions().catch(() => {});
  return true;
}

// Why a question that failed is asked once more in a new conversation (over the index picked), or "".
// Its session was deleted elsewhere; or its index was, in a conversation reopened over it while the picker
// shows others: every question there failed, saying to pick other documents, which were picked already.
function restartNote(error, asked) {
  if (error.sessionGone) return "The earlier conversation no longer exists, so a new conversation was started. ";
  const otherPicked = asked.sessionIndex && asked.index && asked.index !== asked.sessionIndex;
  if (error.type === "index_not_found" && asked.sessionId && otherPicked)
    return `This conversation's documents (\u201c${asked.sessionIndex}\u201d) are no longer indexed, so a new ` +
           `conversation over \u201c${asked.index}\u201d was started. `;
  return "";
}

// A session made for a question that got no answer (refused, say) holds nothing: it is deleted rather
// than left in the list as "(untitled)", and the next question makes another.
async function dropIfEmpty(sessionId) {
  try {
    const session = await api(`/v1/sessions/${encodeURIComponent(sessionId)}`);
    if (session.messages.length) return;
    await api(`/v1/sessions/${encodeURIComponent(sessionId)}`, { method: "DELETE" });
    if (state.sessionId === sessionId) setSession(null);
  } catch (_) { /* the server cannot be reached, or it is gone already */ }
}

// Asks in the conversation ``asked`` (creating its session over ``asked.index`` first) and returns the
// final chunk. The new session becomes the page's only while the user is still in that conversation.
// A session that is gone (deleted elsewhere) gets ``sessionGone`` set, so it is started again. A session
// whose index is gone is only when the picker shows other documents (restartNote): a new one over the
// picked index would be asked in the same missing index.
async function streamAnswer(question, node, status, asked) {
  if (!asked.sessionId) {
    await state.indexesLoaded.catch(() => {});
    // No index to pick (none is indexed): the server says so. An empty "index" is refused, not the default.
    const index = asked.index || $("index").value;
    const session = await api("/v1/sessions", { method: "POST", body: JSON.stringify(index ? { index } : {}) });
    Object.assign(asked, { sessionId: session.id, created: true });
    if (asked.conversation === state.conversation) setSession(session.id, index);
  }
  const sessionId = asked.sessionId;
  const answer = node.querySelector(".answer");
  status("Searching the documents\u2026");
  const response = await fetch(`/v1/sessions/${encodeURIComponent(sessionId)}/messages`, {
    method: "POST", headers: { "Content-Type": "application/json", Accept: "text/event-stream" },
    body: JSON.stringify({ content: question, stream: true }),
  });
  if (!response.ok) {
    const error = await responseError(response);
    if (error.type === "conversation_not_found") sessionGone(error, sessionId);
    throw error;
  }
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", text = "", final = null;
  // The connection dropping mid-answer rejects a read (a TypeError, as when the server cannot be
  // reached): the server was reached, and the text so far is kept.
  const cutOff = (cause) => Object.assign(new Error("the answer stream ended early", { cause }), { cutOff: true, partial: text });
  for (;;) {
    let value, done;
    try { ({ value, done } = await reader.read()); } catch (error) { throw cutOff(error); }
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
        if (chunk.error) {  // the answer failed after it began (the session deleted meanwhile, say): the text so far stays
          const error = Object.assign(new Error(chunk.error.message), { type: chunk.error.type, partial: text });
          if (error.type === "conversation_not_found") sessionGone(error, sessionId);
          throw error;
        }
        const choice = chunk.choices[0];
        if (choice.delta && choice.delta.content) {
          if (!text) status("Answering\u2026");  // once: a "wait" said meanwhile stays until the answer ends
          text += choice.delta.content;
          answer.textContent = text;
          if (asked.conversation === state.conversation) keepInView();
        }
        if (choice.finish_reason) final = { ...chunk, answer: text };
      }
    }
  }
  if (!final) throw cutOff();
  return final;
}

// Marks ``error`` as the session being gone (deleted elsewhere), so the question is asked again in a new one.
function sessionGone(error, sessionId) {
  error.sessionGone = true;
  if (state.sessionId === sessionId) setSession(null);
}

async function onSubmit(event) {
  event.preventDefault();
  const input = $("question");
  const question = input.value.trim();
  // The Ask button stays focusable and Enter still submits while an answer runs, so both can say why
  // nothing is asked (a disabled button would leave Enter silently doing nothing).
  if (state.busy) { setStatus("Wait for the current answer to finish, then ask again."); return; }
  if (!question) { setStatus("Type a question first."); input.value = ""; input.focus(); return; }
  state.busy = true;
  $("ask").setAttribute("aria-disabled", "true");
  input.value = "";
  let answered = false;
  try { answered = await ask(question); } catch (error) { setStatus(`No answer: ${plainError(error)}`, true); }
  finally {
    if (!answered && !input.value) input.value = question;  // to ask again with Enter, or to change it
    state.busy = false;
    $("ask").removeAttribute("aria-disabled");
    input.focus();
  }
}

document.addEventListener("DOMContentLoaded", async () => {
  $("ask-form").addEventListener("submit", onSubmit);
  $("new-conversation").addEventListener("click", newConversation);
  document.querySelector("a.skip").addEventListener("click", skipToQuestion);
  $("index").addEventListener("change", onIndexChange);
  $("transcript").addEventListener("scroll", onTranscriptScroll, { passive: true });
  $("history").open = !narrowScreen.matches;
  narrowScreen.addEventListener("change", () => { $("history").open = !narrowScreen.matches; });
  try {
    state.indexesLoaded = loadIndexes();
    await state.indexesLoaded;
    if (sessionInAddress()) await openFromAddress();
    else await loadSessions();
  } catch (error) { setStatus(`Cannot reach the server: ${error.message}`, true); }
});

window.addEventListener("hashchange", () => {
  openFromAddress().catch((error) => setStatus(`Could not open the conversation: ${plainError(error)}`, true));
});
