"""Pseudo-queries written by an LLM (doc2query): the kind ``llm`` of ``unirank train --pseudo-kinds``.

An LLM can ask what a passage answers in a searcher's words rather than the passage's, which the
offline kinds cannot. It runs on the OpenAI-compatible endpoint the chatbot is configured with
(``chat.llm_base_url``, ``chat.llm_model``, the key in ``chat.llm_api_key_env``). It is opt-in, as
every passage costs a request: only a sample of passages is asked, enough for the kind's share of
the pseudo-query cap, and the consistency filter then keeps a question only if its passage ranks
high for it, as for every kind. Each answer is appended to a cache file in the run folder as it
arrives, so a run stopped half-way asks again only for the passages it had not done.
"""

from __future__ import annotations

import json
import math
import random
import re
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Callable, Sequence

from unirank.chat.llm import OpenAIAnswerer
from unirank.errors import AnswererError, ConfigurationError, TrainingError
from unirank.search.types import Chunk
from unirank.settings import ChatSettings
from unirank.training.examples import TrainingPair

LLM_KIND = "llm"
SYSTEM_PROMPT = ("You write search queries for a retrieval training set. Reply with the queries only, "
                 "one per line, without numbering.")
_LIST_MARKER = re.compile(r"^\s*(?:[-*•]|\(?\d+[.):]|Q\d*[.:])\s*")
Progress = Callable[[int, int], None]


def user_prompt(passage: str, questions: int) -> str:
    return (f"Passage:\n<<<\n{passage}\n>>>\n\nWrite {questions} different questions that someone searching a "
            "document collection would type, and that this passage answers. Use your own words rather than "
            "the passage's phrases.")


def parse_questions(reply: str, limit: int, min_words: int = 3) -> list[str]:
    """The reply's questions, one per line, list markers and quotes taken off; too-short lines dropped."""
    out: list[str] = []
    for line in reply.splitlines():
        question = _LIST_MARKER.sub("", line).strip().strip("\"'").strip()
        if len(question.split()) >= min_words and question not in out:
            out.append(question)
    return out[:limit]


def require_llm(chat: ChatSettings) -> None:
    """Refuse the kind before any indexing or mining when no endpoint is configured for it."""
    if not chat.llm_base_url or not chat.llm_model:
        raise ConfigurationError(
            "The pseudo-query kind 'llm' asks the OpenAI-compatible endpoint set by chat.llm_base_url and "
            "chat.llm_model (unirank.toml [chat], or UNIRANK_CHAT__LLM_BASE_URL / UNIRANK_CHAT__LLM_MODEL); "
            "set both, or leave 'llm' out of --pseudo-kinds.")


class LLMQueryWriter:
    def __init__(self, chat: ChatSettings, cache: Path, *, questions_per_passage: int = 2, seed: int = 13,
                 workers: int = 4, max_passage_chars: int = 3000, progress: Progress | None = None) -> None:
        require_llm(chat)
        self.client = OpenAIAnswerer(chat)
        self.model = str(chat.llm_model)
        self.cache = Path(cache)
        self.questions_per_passage = questions_per_passage
        self.seed = seed
        self.workers = workers
        self.max_passage_chars = max_passage_chars
        self.progress = progress or (lambda done, total: None)

    def write(self, chunks: Sequence[Chunk], max_pairs: int) -> list[TrainingPair]:
        """Questions for a seeded sample of ``chunks``, about ``max_pairs`` in all."""
        wanted = math.ceil(max_pairs / self.questions_per_passage)
        sample = random.Random(self.seed).sample(list(chunks), min(wanted, len(chunks)))
        answers = self._cached()
        todo = [chunk for chunk in sample if chunk.id not in answers]
        if todo:
            self._ask_all(todo, answers, len(sample))
        return [TrainingPair(query=question, positive=chunk.embedding_input(), origin=f"pseudo:{LLM_KIND}",
                             doc_id=chunk.doc_id)
                for chunk in sample for question in answers.get(chunk.id, [])]

    def _ask_all(self, todo: list[Chunk], answers: dict[str, list[str]], total: int) -> None:
        done = total - len(todo)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="doc2query")
        try:
            with self.cache.open("a", encoding="utf-8") as handle:
                futures = {pool.submit(self._ask, chunk): chunk for chunk in todo}
                for future in as_completed(futures):
                    chunk = futures[future]
                    answers[chunk.id] = future.result()
                    handle.write(json.dumps({"chunk_id": chunk.id, "model": self.model,
                                             "questions": answers[chunk.id]}, ensure_ascii=False) + "\n")
                    handle.flush()
                    done += 1
                    self.progress(done, total)
        except AnswererError as exc:
            raise TrainingError(
                f"LLM doc2query stopped with questions for {done} of {total} passages: {exc} Those answers are "
                f"kept in {self.cache}; run the same command again to ask for the rest.") from exc
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after a failure, the passages not yet asked

    def _ask(self, chunk: Chunk) -> list[str]:
        passage = chunk.embedding_input()[: self.max_passage_chars]
        messages = [{"role": "system", "content": SYSTEM_PROMPT},
                    {"role": "user", "content": user_prompt(passage, self.questions_per_passage)}]
        reply = self.client.complete(messages, temperature=0.7, max_tokens=48 * self.questions_per_passage,
                                     seed=self.seed)
        return parse_questions(reply, self.questions_per_passage)

    def _cached(self) -> dict[str, list[str]]:
        """Answers a previous attempt of this run wrote, by chunk id (another model's are asked again)."""
        if not self.cache.exists():
            return {}
        answers = {}
        for line in self.cache.read_text(encoding="utf-8").splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the line being written when the run was killed
                continue
            if entry.get("model") == self.model:
                answers[entry["chunk_id"]] = list(entry["questions"])
        return answers
