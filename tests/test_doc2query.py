"""LLM doc2query, the pseudo-query kind ``llm``, against the local OpenAI-protocol server (the one
stand-in allowed: no LLM runs on these machines): its questions pass the consistency filter into the
training data of real models, a run stopped by a failing endpoint keeps its answers and asks only for
the rest, and an unconfigured endpoint is refused before any work."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from chat_helpers import OpenAIProtocolServer
from data.make_minibeir import DOCS
from data.make_minibeir import write as write_minibeir
from unirank.errors import ConfigurationError, TrainingError
from unirank.training.doc2query import SYSTEM_PROMPT, parse_questions
from unirank.training.embedder_trainer import EmbedderTrainingConfig
from unirank.training.examples import read_pairs
from unirank.training.job import TrainJob, TrainRequest
from unirank.training.reranker_trainer import RerankerTrainingConfig

KEY_ENV = "UNIRANK_TEST_DOC2QUERY_KEY"
TINY = dict(batch_size=8, max_steps=2)


def request(minibeir: Path) -> TrainRequest:
    return TrainRequest(name="d2q", beir=minibeir, pseudo_kinds=("llm", "keyphrase"),
                        embedder=EmbedderTrainingConfig(**TINY), reranker=RerankerTrainingConfig(**TINY))


@pytest.fixture(scope="module")
def llm():
    server = OpenAIProtocolServer(api_key="sk-d2q")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def client(tmp_path_factory, base_embedder, llm):
    from unirank.api import Unirank
    from unirank.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(KEY_ENV, "sk-d2q")
        settings = Settings(data_dir=tmp_path_factory.mktemp("d2q") / "data")
        settings.chat.llm_base_url, settings.chat.llm_model, settings.chat.llm_api_key_env = llm.url, "qwriter", KEY_ENV
        ur = Unirank(settings)
        ur.__dict__["embedder"] = base_embedder
        yield ur
        ur.close()


def _doc2query_requests(llm) -> list[dict]:
    return [r["body"] for r in llm.requests if r["body"]["messages"][0]["content"] == SYSTEM_PROMPT]


def test_parse_questions_takes_one_per_line_without_list_markers():
    reply = '1. What is X made of?\n- How do Y work?\nok\n"Why does Z happen?"\n2) What is X made of?\nQ3: When is W due?'
    assert parse_questions(reply, 5) == ["What is X made of?", "How do Y work?", "Why does Z happen?", "When is W due?"]
    assert parse_questions(reply, 2) == ["What is X made of?", "How do Y work?"]


@pytest.mark.slow  # two real trainings (~10-30 s): in the slow step, for the default run's margin
def test_a_stopped_run_keeps_its_answers_and_the_next_run_trains_on_them(client, llm, tmp_path_factory):
    minibeir = write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")
    llm.requests.clear()
    llm.fail_after = 5
    with pytest.raises(TrainingError, match=r"LLM doc2query stopped with questions for (\d+) of 26 passages: .*503.*"
                                            r"run the same command again") as failure:
        TrainJob(client.settings, client.backend, client.embedder, request(minibeir)).run()
    answered = int(re.search(r"questions for (\d+) of", str(failure.value)).group(1))  # type: ignore[union-attr]
    job = TrainJob(client.settings, client.backend, client.embedder, request(minibeir))
    cache = job.run_dir / "doc2query.jsonl"
    assert 1 <= answered <= 5 and len(cache.read_text().splitlines()) == answered
    first_attempt = len(_doc2query_requests(llm))

    llm.fail_after = None
    result = job.run()
    asked_again = _doc2query_requests(llm)[first_attempt:]
    assert len(asked_again) == 26 - answered  # only the passages without an answer
    assert all(r["model"] == "qwriter" and r["seed"] == 13 for r in asked_again)
    prompts = [r["messages"][1]["content"] for r in _doc2query_requests(llm)]
    title, text = DOCS["d1"]
    assert any(f"<<<\n{title}\n{text}\n>>>" in p for p in prompts)  # the passage as it is embedded

    questions = {q for line in cache.read_text().splitlines() for q in json.loads(line)["questions"]}
    assert len(questions) == 2 * len(DOCS)  # every minibeir passage asked once, two questions each
    pairs = [p for p in read_pairs(job.run_dir / "training_pairs.jsonl") if p.origin == "pseudo:llm"]
    assert pairs and {p.query for p in pairs} <= questions and all(p.negatives for p in pairs)
    assert result.stats["pseudo_generated"]["pseudo:llm"] == 2 * len(DOCS)
    assert result.stats["pseudo_kept"]["pseudo:llm"] == len(pairs)
    assert result.embedder.ref == "d2q-embed@1" and result.reranker.ref == "d2q-rerank@1"


def test_the_llm_kind_without_an_endpoint_is_refused_before_any_work(tmp_path, base_embedder):
    from unirank.api import Unirank
    from unirank.settings import Settings

    settings = Settings(data_dir=tmp_path / "data")
    (tmp_path / "beir").mkdir()  # a folder (its files are never read: the refusal comes first)
    with Unirank(settings) as ur:
        with pytest.raises(ConfigurationError, match="'llm' asks the OpenAI-compatible endpoint set by chat.llm_base_url"):
            TrainJob(settings, ur.backend, base_embedder, request(tmp_path / "beir"))
    assert not (tmp_path / "data" / "runs").exists()
