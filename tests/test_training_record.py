"""What a training run records in the registry (training queries, timings, centring) and says on Ctrl-C,
checked with the trainers replaced by stand-ins that copy their starting model: the job's own
bookkeeping, in seconds instead of a real training run's minutes."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from data.make_minibeir import write as write_minibeir
from unirank.errors import LeakageError
from unirank.evaluation.datasets import load_beir
from unirank.evaluation.leakage import check_no_leakage
from unirank.registry import ModelRegistry
from unirank.training import job as job_module
from unirank.training.embedder_trainer import EmbedderTrainingConfig
from unirank.training.examples import query_fingerprint
from unirank.training.job import TrainJob, TrainRequest, ensure_beir_index
from unirank.training.reranker_trainer import RerankerTrainingConfig


@pytest.fixture(scope="module")
def minibeir(tmp_path_factory) -> Path:
    return write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")


@pytest.fixture(scope="module")
def client(tmp_path_factory, base_embedder):
    from unirank.api import Unirank
    from unirank.settings import Settings

    ur = Unirank(Settings(data_dir=tmp_path_factory.mktemp("record") / "data"))
    ur.__dict__["embedder"] = base_embedder
    yield ur
    ur.close()


def _copy_model(start: str, out: Path) -> None:
    def link_or_copy(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    shutil.copytree(start, out / "final", copy_function=link_or_copy, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("unirank_model.json"))


class FakeTrainers:
    """Stand-ins for the two trainers and the blend choice: each copies its starting model as "final"."""

    def __init__(self, embedder_s: float = 0.0, reranker_s: float = 0.0) -> None:
        self.embedder_s, self.reranker_s = embedder_s, reranker_s
        self.interrupt_reranker = 0  # how many reranker runs to cut short with Ctrl-C
        self.starts: dict[str, str] = {}

    def train_embedder(self, start, train, validation, corpus, out, config):
        self.starts["embedder"] = start
        time.sleep(self.embedder_s)
        _copy_model(start, out)
        return {"ndcg@10": 0.5}

    def train_reranker(self, start, train, validation, out, config):
        self.starts["reranker"] = start
        time.sleep(self.reranker_s)
        if self.interrupt_reranker:
            self.interrupt_reranker -= 1
            raise KeyboardInterrupt
        _copy_model(start, out)
        return {"ndcg@10": 0.4}

    @staticmethod
    def choose_blend_weight(*args, **kwargs):
        return {"blend_weight": 0.0, "chosen_on": "none: stand-in"}


@pytest.fixture()
def fake(monkeypatch) -> FakeTrainers:
    trainers = FakeTrainers()
    for name in ("train_embedder", "train_reranker", "choose_blend_weight"):
        monkeypatch.setattr(job_module, name, getattr(trainers, name))
    return trainers


def request(name: str, minibeir: Path, **extra) -> TrainRequest:
    embedder = extra.pop("embedder", {})
    return TrainRequest(name=name, beir=minibeir, embedder=EmbedderTrainingConfig(batch_size=8, **embedder),
                        reranker=RerankerTrainingConfig(batch_size=8), **extra)


def _register_base_copy(client, name: str, record: dict):
    from unirank.models.loading import resolve_model_path
    from unirank.registry.describe import describe_model_folder

    base = Path(resolve_model_path("base")[0])
    registry = ModelRegistry(client.settings.models_dir)
    try:
        return registry.register(name, "embedder", path=base,
                                 record={**describe_model_folder(base, "embedder"), **record})
    finally:
        registry.close()


@pytest.mark.parametrize("named_as", ["ref", "folder", "exported"])
def test_a_version_trained_from_a_registered_base_records_the_bases_training_queries(
        client, minibeir, fake, named_as, tmp_path):
    """`train --base t1-embed@1` recorded only its own training queries: eval of the new version on the
    queries t1 was trained on was not refused."""
    from unirank.models.loading import resolve_model_path
    from unirank.registry.store import MARKER_FILE

    queries = load_beir(minibeir).judged().queries
    prints = {q: query_fingerprint(text) for q, text in queries.items()}
    grand = _register_base_copy(client, f"grand-{named_as}", {"base_model": "base", "training_queries": [prints["q3"]]})
    # An earlier version's record has its own queries only: the chain of bases is followed.
    teacher = _register_base_copy(client, f"teacher-{named_as}", {
        "base_model": grand.ref, "training_queries": [prints["q1"], prints["q2"]]})
    base, inherited_from = (teacher.ref if named_as == "ref" else str(teacher.path)), [teacher.ref, grand.ref]
    if named_as == "exported":  # a folder `models export` wrote: it carries its record, which names its base
        base = str(tmp_path / "far-embed-v3")
        shutil.copytree(resolve_model_path("base")[0], base)
        (Path(base) / MARKER_FILE).write_text(json.dumps({"name": "far-embed", "version": 3, "record": {
            "base_model": grand.ref, "training_queries": [prints["q1"], prints["q2"], prints["q3"]]}}))
        inherited_from = ["far-embed@3"]  # that base_model is another registry's: not looked up here
    result = TrainJob(client.settings, client.backend, client.embedder,
                      request(f"pupil-{named_as}", minibeir, base=base), stage=lambda _: None).run()
    inherited = {prints[q] for q in ("q1", "q2", "q3")}
    for version in (result.embedder, result.reranker):
        assert set(version.record["training_queries"]) == inherited  # corpus-only: nothing of its own
        assert version.record["training_queries_inherited_from"] == inherited_from
        with pytest.raises(LeakageError, match=r"3 of them"):
            check_no_leakage(queries, [version])
    # A version trained from this one gets them from its record alone, which says it is complete.
    registry = ModelRegistry(client.settings.models_dir)
    registry.update_record(grand.ref, training_queries=[prints["q4"]])  # not followed again
    registry.close()
    again = TrainJob(client.settings, client.backend, client.embedder,
                     request(f"pupil2-{named_as}", minibeir, base=result.embedder.ref), stage=lambda _: None).run()
    assert set(again.embedder.record["training_queries"]) == inherited
    assert again.embedder.record["training_queries_inherited_from"] == [result.embedder.ref]


def test_centring_skipped_for_a_small_corpus_is_recorded_as_not_done(client, minibeir, fake):
    """hyperparameters.center_on_corpus said true when centring was skipped (fewer than 100 passages)."""
    stages: list[str] = []
    result = TrainJob(client.settings, client.backend, client.embedder, request("small", minibeir),
                      stage=stages.append).run()
    record = result.embedder.record
    assert record["hyperparameters"]["center_on_corpus"] is False and record["centered_on_corpus"] is None
    assert record["not_centered"].endswith("passages are fewer than 100")
    assert any(s.startswith("centring: skipped") for s in stages)
    off = TrainJob(client.settings, client.backend, client.embedder,
                   request("off", minibeir, embedder={"center_on_corpus": False}), stage=lambda _: None).run()
    assert off.embedder.record["hyperparameters"]["center_on_corpus"] is False
    assert off.embedder.record["not_centered"] == "turned off (--no-center)"
    done = TrainJob(client.settings, client.backend, client.embedder,
                    request("centred", minibeir, embedder={"center_min_passages": 1}), stage=lambda _: None).run()
    assert done.embedder.record["hyperparameters"]["center_on_corpus"] is True
    assert done.embedder.record["centered_on_corpus"]["passages"] > 0 and "not_centered" not in done.embedder.record


def test_a_resumed_run_records_the_time_its_stages_took_in_the_interrupted_one(client, minibeir, fake):
    """After Ctrl-C during the reranker and a re-run, the record said embedder_s 0.0: the embedder had
    trained in the first run, and the second reused it."""
    fake.embedder_s, fake.reranker_s, fake.interrupt_reranker = 0.6, 0.3, 1
    stages: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        TrainJob(client.settings, client.backend, client.embedder, request("resumed", minibeir),
                 stage=stages.append).run()
    fake.embedder_s = 0.0
    result = TrainJob(client.settings, client.backend, client.embedder, request("resumed", minibeir),
                      stage=stages.append).run()
    assert any(s.startswith("embedder: already trained") for s in stages)
    timings = result.embedder.record["timings"]
    assert timings["embedder_s"] >= 0.6
    assert timings["reranker_s"] >= 0.6  # the cut-short attempt's 0.3 s and the finished one's
    assert timings["total_s"] >= timings["embedder_s"] + timings["reranker_s"]
    assert result.reranker.record["timings"] == timings


def test_pairs_whose_negative_is_the_positive_lose_that_negative_with_a_warning(client, minibeir, fake, tmp_path):
    from data.make_minibeir import DOCS

    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    passages = {c.doc_id: c.text for batch in client.backend.iter_chunks(index) for c in batch if c.ordinal == 0}
    rows = [{"query": f"what does the policy on {title.lower()} say", "positive": passages[doc]}
            for doc, (title, _) in DOCS.items() if doc in passages]
    rows[0]["negative"] = rows[0]["positive"]
    rows[1]["negative"] = "  " + rows[1]["positive"].upper()  # case and spacing aside, the same passage
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages: list[str] = []
    request_ = TrainRequest(name="same-negative", index=index, pairs=pairs,
                            embedder=EmbedderTrainingConfig(batch_size=8), reranker=RerankerTrainingConfig(batch_size=8))
    result = TrainJob(client.settings, client.backend, client.embedder, request_, stage=stages.append).run()
    assert any(s.startswith("warning: 2 negative(s) of") and "(line 1, 2)" in s for s in stages), stages
    assert result.stats["pairs_negative_same_as_positive"] == 2
    trained = [json.loads(line) for line in (result.run_dir / "training_pairs.jsonl").read_text().splitlines()]
    assert all(p["positive"] not in p["negatives"] for p in trained)


def test_ctrl_c_says_that_the_same_command_resumes(client, minibeir, monkeypatch, tmp_path):
    """Ctrl-C exited 130 without a word on what was kept or how to go on."""
    from typer.testing import CliRunner

    from unirank.cli.main import app

    def interrupted(self):
        self.run_dir.mkdir(parents=True, exist_ok=True)
        raise KeyboardInterrupt

    monkeypatch.setattr(TrainJob, "run", interrupted)
    for key in [k for k in os.environ if k.startswith("UNIRANK_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(tmp_path / "data"))
    runner = CliRunner()
    for fresh, again in (([], "the same command resumes"), (["--fresh"], "the same command without --fresh resumes")):
        result = runner.invoke(app, ["train", "--beir", str(minibeir), "--name", "ctrlc", *fresh])
        assert result.exit_code == 130, result.output
        said = " ".join(result.stderr.split())
        assert "Interrupted. Finished stages are kept in " in said and again in said, said
        assert result.stdout == ""
