"""Follow-up questions -> stand-alone search queries, from the conversation so far.

"How long does the old one keep working?" means nothing to a search index on its own. Offline,
a follow-up (a pronoun or demonstrative that points back, an elliptical "what about …?", or a
question with no content word at all) gets the key terms of the previous question that it does not
already contain. A pronoun after a clause of the question's own that names something points at that
clause ("What is the minimum length of a password and does it expire?"), not back. A follow-up that
names a new subject ("what about SEV2?" after a question on API keys) gets only those terms the
passages about its subject also hold, less the earlier question's own subject, which the new one
replaces ("what about customer records?" after "how long are application logs kept?" asks how long
customer records are kept): carried whole, "api key" outweighed "SEV2" and the answer stayed on the
old topic. So does a follow-up whose pronoun sits beside a code the earlier question lacks ("who do I
page for it? sev2" after "is there a free plan?"). A code replaces the earlier one of its kind ("and
SEV1?" after "… sev2"), and an existential "there" ("is there a free plan?") points at nothing. With an
LLM configured, the LLM rewrites it (and the heuristic is the fallback when the LLM fails).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

from unirank.chat.types import Turn
from unirank.errors import AnswererError
from unirank.search.embedded.fulltext import english_analyzer

log = logging.getLogger(__name__)

_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_'\-]*")
#: Words that point back at something said before.
ANAPHORA = frozenset({
    "it", "its", "itself", "they", "them", "their", "theirs", "this", "that", "these", "those",
    "there", "he", "she", "him", "her", "his", "hers", "one", "ones", "such", "same", "former",
    "latter", "else", "too", "also", "then",
})
#: Openings of elliptical follow-ups ("what about the sandbox?").
ELLIPSIS = ("and ", "or ", "but ", "what about", "how about", "what if", "why not", "same for", "and?", "why?",
            "how so", "which one", "what else")
#: Question verbs sklearn's stop list lacks: they carry no topic.
QUESTION_WORDS = frozenset({"does", "did", "doing", "mean", "means", "tell", "explain", "happens", "happen"})
MAX_ADDED_TERMS = 8
#: The words ("is", "are", "will [be]" …) beside which "there" only says that something exists:
#: "is there a free plan?", "what plans are there?", "there are three levels". A complete question, read as a
#: follow-up for its "there", was searched with the previous question's topic ("what plans are there? rotate
#: api key"). "What's the weather there?", "who works there?" still point back.
_THERE_BEFORE = frozenset({"is", "are", "was", "were", "isn't", "aren't", "wasn't", "weren't"})
_THERE_AFTER = _THERE_BEFORE | frozenset({
    "be", "been", "will", "would", "can", "could", "may", "might", "must", "should", "has", "have", "had",
    "seem", "seems", "appear", "appears", "exist", "exists", "remain", "remains"})
#: Where a question's clauses meet: a pronoun after a clause that names its subject points at it.
_CLAUSE = re.compile(r"[,;:]|\b(?:and|or|but|if|when|whether|after|before|once|because|while|until|unless)\b")
#: The parts of a question whose shape says where its subject is: "how long are [application logs] kept?".
_WH = frozenset({"how", "what", "which", "who", "when", "where", "why"})
_AUX = frozenset({"is", "are", "was", "were", "do", "does", "did", "can", "could", "should", "will", "would",
                  "must", "may", "has", "have"})
_BE = frozenset({"is", "are", "was", "were"})
_ASKER = frozenset({"i", "we", "you"})
_DETERMINERS = frozenset({"a", "an", "the", "my", "our", "your"})
#: Openings of a follow-up that asks the same of another thing: "what about [customer records]?".
_NAMING = ("what about ", "how about ", "and ", "or ")
_PREPOSITIONS = frozenset({"in", "on", "at", "for", "by", "to", "from", "with", "after", "before", "during"})
#: How many earlier questions a follow-up of follow-ups is traced back through. Turns that carry no
#: stored query (an OpenAI request's history) are rewritten anew on each request: unbounded, 1,201
#: "and them?" turns recursed past Python's limit (a 500), and each naming a subject costs a search.
#: A topic not named in the last 8 questions is not what "it" means any more.
MAX_CHAIN = 8

#: The texts of the few passages a search for some words finds (in the chat's index, under its filters).
RelatedTexts = Callable[[str], Sequence[str]]


class LLMRewriter(Protocol):
    def rewrite(self, question: str, history: Sequence[Turn]) -> str:
        """The stand-alone question; "" for none, and the follow-up is then rewritten offline."""
        ...


def words(text: str) -> list[str]:
    return [w.lower().strip("'-") for w in _WORD.findall(text)]


def pointers(text: str) -> list[str]:
    """The words of ``text`` that point back at something said before (an existential "there" does not)."""
    tokens = words(text)
    return [w for i, w in enumerate(tokens) if w in ANAPHORA and not (w == "there" and _existential(tokens, i))]


def _existential(tokens: list[str], i: int) -> bool:
    """Whether ``tokens[i]`` ("there") is the existential one: "is there …", "… are there?", "there is …"."""
    before = tokens[i - 1] if i > 0 else ""
    after = tokens[i + 1] if i + 1 < len(tokens) else ""
    return before in _THERE_BEFORE or after in _THERE_AFTER


def codes(text: str) -> set[str]:
    """Words with a digit: severities, statuses, versions ("SEV2", "429", "v1"). Embeddings barely tell
    "SEV1: …" from "SEV2: …", so a question naming one quoted all three."""
    return {w for w in words(text) if any(ch.isdigit() for ch in w)}


def code_kind(code: str) -> str:
    """What a code is a code of: its letters ("sev2" and "sev1" -> "sev"; "429" and "503" -> "")."""
    return "".join(ch for ch in code if not ch.isdigit())


def is_content(word: str) -> bool:
    return bool(word) and word not in ENGLISH_STOP_WORDS and word not in ANAPHORA and word not in QUESTION_WORDS


def content_words(text: str) -> list[str]:
    return [w for w in words(text) if is_content(w)]


def is_follow_up(question: str) -> bool:
    lowered = question.strip().lower()
    return lowered.startswith(ELLIPSIS) or not content_words(lowered) or points_back(lowered)


def points_back(question: str) -> bool:
    """Whether a pronoun in ``question`` points at an earlier turn: one that comes after a clause naming
    something of its own ("… of a password and does it expire?") points at that clause instead; read as a
    follow-up, the previous question's topic was added to a complete question."""
    for clause in _CLAUSE.split(question.lower()):
        if pointers(clause):
            return True
        if content_words(clause):
            return False
    return False


def changes_subject(question: str) -> bool:
    """An elliptical follow-up that names its own subject and points back at nothing ("what about SEV2?")."""
    lowered = question.strip().lower()
    return lowered.startswith(ELLIPSIS) and not pointers(lowered) and bool(content_words(lowered))


@dataclass
class Subject:
    """Where in a question the thing it asks about is named (``start:end``, with its determiner)."""

    start: int
    end: int
    words: list[str]


def subject_of(question: str) -> Subject | None:
    """The thing ``question`` asks about, where its shape says which: "how long are [application logs]
    kept?", "how much does [the team plan] cost?", "how do I rotate [an API key]?", "what is [the recovery
    point objective]?". None for other shapes ("who updates the status page?")."""
    matches = list(_WORD.finditer(question))
    tokens = [m.group().lower().strip("'-") for m in matches]
    if len(tokens) < 3 or tokens[0] not in _WH:
        return None
    i = 2 if tokens[0] == "how" and tokens[1] not in _AUX else 1  # "how long", "how often"
    if i >= len(tokens) or tokens[i] not in _AUX:
        return None
    verb_last = not (tokens[0] in {"what", "which", "who"} and tokens[i] in _BE)  # "what is X?": no verb after X
    i += 1
    if i < len(tokens) and tokens[i] in _ASKER:  # "how do I rotate an API key?": the verb's object
        i, verb_last = i + 2, False
    first = i
    while i < len(tokens) and tokens[i] in _DETERMINERS:
        i += 1
    named = i
    while i < len(tokens) and is_content(tokens[i]):
        i += 1
    if verb_last and i - named > 1 and (i == len(tokens) or tokens[i] in _PREPOSITIONS):
        i -= 1  # "… logs kept?", "… logs kept in …": the last word is the verb
    if i == named:
        return None
    return Subject(matches[first].start(), matches[i - 1].end(), tokens[named:i])


def replaced_code(anchor: str, question: str) -> Subject | None:
    """Where ``anchor`` names the one code that a code in ``question`` replaces, being of its kind and not
    named in ``question`` ("SEV2" in "who do I page for it? sev2", for "and SEV1?"); None when it names
    none, or several."""
    asked = codes(question)
    kinds = {code_kind(c) for c in asked}
    found = [m for m in re.finditer(r"\b\w*\d\w*\b", anchor)
             if m.group().lower() not in asked and code_kind(m.group().lower()) in kinds]
    if len({m.group().lower() for m in found}) != 1:
        return None
    return Subject(found[-1].start(), found[-1].end(), [found[-1].group().lower()])


def named_thing(question: str) -> str | None:
    """The noun phrase an elliptical follow-up is about ("What about [the enterprise plan]?", "And
    [SEV3]?"), or None when it says more than a name ("and how long are they kept?")."""
    lowered = question.strip().lower()
    opening = next((o for o in _NAMING if lowered.startswith(o)), None)
    if opening is None:
        return None
    thing = question.strip()[len(opening):].strip(" ?!.")
    tokens = words(thing)
    if not tokens or not all(is_content(t) or t in _DETERMINERS for t in tokens):
        return None
    return thing


class QueryRewriter:
    def __init__(self, llm: LLMRewriter | None = None, *, max_turns: int = 6) -> None:
        self.llm = llm
        self.max_turns = max_turns
        self._stems = english_analyzer()  # BM25's own: "rotating" in a passage holds "rotate"

    def rewrite(self, question: str, history: Sequence[Turn], related: RelatedTexts | None = None) -> str:
        """The stand-alone query for ``question`` (itself when there is no history to draw on). ``related``
        finds the passages about a new subject, so that only the earlier terms they share are carried."""
        previous = [t for t in history if t.role == "user"]
        if not previous:
            return question.strip()
        if self.llm is not None:
            try:
                rewritten = self.llm.rewrite(question, list(history)[-self.max_turns:])
                if rewritten.strip():
                    return rewritten.strip()
            except AnswererError as exc:
                log.warning("LLM rewrite failed, rewriting the follow-up offline instead: %s", exc)
        return self.heuristic(question, history, related)

    def heuristic(self, question: str, history: Sequence[Turn], related: RelatedTexts | None = None) -> str:
        question = question.strip()
        if not is_follow_up(question):
            return question
        return self._resolve(question, self._previous_query(history, related), related)

    def _resolve(self, question: str, anchor: str, related: RelatedTexts | None) -> str:
        """A follow-up ``question`` with the terms of ``anchor`` (the previous stand-alone query) it lacks."""
        question = question.strip()
        if not is_follow_up(question):
            return question
        have = set(content_words(question))
        carried: list[str] = []
        for term in content_words(anchor):
            if term not in have and term not in carried:
                carried.append(term)
        # A code the question names replaces the earlier ones of its kind: "and SEV1?" after a question on SEV2
        # asks about SEV1 alone; carried, "sev2" (and the words carried with it) outweighed it. As the other
        # subject changes, only where the passages are at hand: without them every term is carried (the
        # earlier code still says what "and SEV3?" is about: alone, it was "not covered").
        kinds = {code_kind(c) for c in codes(question)} if related is not None else set()
        added = [t for t in carried if t not in codes(anchor) or code_kind(t) not in kinds]
        if carried and related is not None and changes_subject(question):
            thing = named_thing(question)
            code = replaced_code(anchor, question)
            if code is not None:  # the earlier question is asked of the new code only when that is all it names
                subject = code if thing and set(content_words(thing)) <= codes(thing) else None
            else:
                subject = subject_of(anchor)
            replaced = set(subject.words) if subject else set()  # the new subject takes the old one's place
            frame = [t for t in added if t not in replaced]
            added = self._shared_with(frame, related(" ".join(content_words(question))))
            if subject and thing and (added or not frame):  # the earlier question, asked of the new thing
                return f"{anchor[:subject.start]}{thing}{anchor[subject.end:]}".strip()
        elif carried and related is not None and (fresh := codes(question) - codes(anchor)):
            # A pronoun beside a code the earlier question lacks ("who do I page for it? sev2" after "is there a
            # free plan?"): the code names the subject. Carried whole, "free plan" answered about pricing; only
            # the terms the code's passages also hold are kept, none when they hold none.
            added = self._shared_with(added, related(" ".join(sorted(fresh))))
        if not added:
            return question
        return f"{question} {' '.join(added[:MAX_ADDED_TERMS])}"

    def _shared_with(self, terms: list[str], texts: Sequence[str]) -> list[str]:
        """The terms these texts also hold, compared stemmed. None when nothing is about the new subject:
        the old topic's terms would then answer the old question again."""
        held = {stem for text in texts for stem in self._stems.analyze(text)}
        return [t for t in terms if any(stem in held for stem in self._stems.analyze(t))]

    def _previous_query(self, history: Sequence[Turn], related: RelatedTexts | None = None) -> str:
        """The last user turn as a stand-alone query. Turns without a stored query are rewritten in order
        from the last one that stands alone, at most :data:`MAX_CHAIN` back (iteratively: a recursion per
        turn overflowed on long histories)."""
        asked = [t for t in history if t.role == "user"][-MAX_CHAIN:]
        start = 0
        for i in range(len(asked) - 1, -1, -1):
            if asked[i].query or not is_follow_up(asked[i].content):
                start = i
                break
        query = ""
        for turn in asked[start:]:
            query = turn.query or self._resolve(turn.content, query, related)
        return query
