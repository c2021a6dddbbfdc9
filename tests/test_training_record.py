"""What a training run records in the registry (training queries, timings, centring) and says on Ctrl-C,
checked on real runs: the bundled base fine-tuned on the minibeir set for two embedder steps and one or two
reranker steps (batches of 4, 32-token texts, two dozen pseudo-queries), interrupted by a real SIGINT."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from data.make_minibeir import write as write_minibeir
from env_helpers import without_unirank_settings
from unirank.errors import LeakageError
from unirank.evaluation.datasets import load_beir
from unirank.evaluation.runner import Evaluation, resolve_specs
from unirank.registry import ModelRegistry
from unirank.training.embedder_trainer import EmbedderTrainingConfig
from unirank.training.examples import query_fingerprint
from unirank.training.job import TrainJob, TrainRequest, ensure_beir_index
from unirank.training.reranker_trainer import RerankerTrainingConfig


#: Real training runs, about 80 s: in the separate slow step (`scripts/test.sh -m slow`, which .ci/run runs).
pytestmark = pytest.mark.slow


def tiny(name: str, beir: Path | None = None, *, reranker_steps: int = 1, embedder: dict | None = None,
         **extra) -> TrainRequest:
    """As small as a real run gets: two embedder steps, ``reranker_steps`` reranker steps (a checkpoint
    after each), 32-token texts for training and for the blend choice, at most 24 pseudo-queries."""
    return TrainRequest(
        name=name, beir=beir, max_pseudo_pairs=24,
        embedder=EmbedderTrainingConfig(**{"batch_size": 4, "max_steps": 2, "max_seq_length": 32,
                                           "center_on_corpus": False, **(embedder or {})}),
        reranker=RerankerTrainingConfig(batch_size=4, max_steps=reranker_steps, eval_steps=1, train_length=32,
                                        max_length=32),
        **extra)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The machines these run on are small and shared: a second torch thread waiting for a core another
    process holds made a training step 5x slower. One thread, then the session's setting again."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def minibeir(tmp_path_factory) -> Path:
    return write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")


@pytest.fixture(scope="module")
def prints(minibeir) -> dict[str, str]:
    return {q: query_fingerprint(text) for q, text in load_beir(minibeir).judged().queries.items()}


@pytest.fixture(scope="module")
def client(module_client):
    return module_client


def _register_base_copy(client, name: str, record: dict):
    """The bundled base registered with ``record`` as an older unirank wrote it: its own training queries
    only, no training_queries_inherited_from. Such records are in registries today and no run of this
    version writes one; the chain of bases they name is what a run follows (their weights do not matter)."""
    from unirank.models.loading import resolve_model_path
    from unirank.registry.describe import describe_model_folder

    base = Path(resolve_model_path("base")[0])
    registry = ModelRegistry(client.settings.models_dir)
    try:
        return registry.register(name, "embedder", path=base,
                                 record={**describe_model_folder(base, "embedder"), **record})
    finally:
        registry.close()


def _refused_by_eval(client, minibeir, name: str, message: str) -> None:
    """``eval --models NAME`` refuses the minibeir queries before any index is made or model loaded."""
    def no_index(embedder):
        raise AssertionError("eval made an index before refusing the queries the models were trained on")

    registry = ModelRegistry(client.settings.models_dir)
    try:
        specs = resolve_specs([name], registry)
    finally:
        registry.close()
    with pytest.raises(LeakageError, match=message):
        Evaluation(client.settings, client.backend).run(load_beir(minibeir).judged(), specs, no_index)


@pytest.fixture(scope="module")
def teacher(client, minibeir, prints, tmp_path_factory):
    """Trained for real on the labels of q1 and q2 (and pseudo-queries) from ``grand``, whose older record
    names its own base ``great``: ``grand`` has seen q3 and ``great`` q4. Centring is on, as by default."""
    great = _register_base_copy(client, "great", {"base_model": "base", "training_queries": [prints["q4"]]})
    grand = _register_base_copy(client, "grand", {"base_model": great.ref, "training_queries": [prints["q3"]]})
    lines = (minibeir / "qrels" / "test.tsv").read_text().splitlines()
    qrels = tmp_path_factory.mktemp("teacher") / "train.tsv"
    qrels.write_text("\n".join(lines[:1] + [line for line in lines[1:] if line.split("\t")[0] in {"q1", "q2"}]) + "\n")
    stages: list[str] = []
    request = tiny("teacher", minibeir, base=grand.ref, qrels=qrels, pseudo=True, embedder={"center_on_corpus": True})
    result = TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append).run()
    # Changed since: a version trained from the teacher must not follow the teacher's bases again (its
    # record is complete), or it would record q5.
    registry = ModelRegistry(client.settings.models_dir)
    registry.update_record(grand.ref, training_queries=[prints["q5"]])
    registry.close()
    return result, stages, (grand.ref, great.ref)


def test_a_version_trained_from_an_older_record_follows_its_chain_of_bases(client, minibeir, prints, teacher):
    """`train --base t1-embed@1` recorded only its own training queries: eval of the new version on the
    queries t1 (and t1's own base) was trained on was not refused."""
    result, _, (grand, great) = teacher
    for version in (result.embedder, result.reranker):
        assert set(version.record["training_queries"]) == {prints[q] for q in ("q1", "q2", "q3", "q4")}
        assert version.record["training_queries_inherited_from"] == [grand, great]
    _refused_by_eval(client, minibeir, "teacher", r"teacher-embed@1 was trained on 4 of them \(e\.g\. q1, q2, q3, q4\)"
                                                  r".*teacher-rerank@1 was trained on 4 of them")


@pytest.mark.parametrize("named_as", ["ref", "folder", "exported"])
def test_a_version_trained_from_a_registered_base_records_the_bases_training_queries(
        client, minibeir, prints, teacher, named_as, tmp_path, base_embedder):
    """The teacher named by its ref, by its registry folder, or as a folder `models export` wrote, trained
    from on another machine (another data dir, whose registry has no teacher): the export carries its record."""
    from unirank.api import Unirank
    from unirank.settings import Settings

    taught = teacher[0].embedder
    trainer, base = client, {"ref": taught.ref, "folder": str(taught.path)}.get(named_as)
    if named_as == "exported":
        registry = ModelRegistry(client.settings.models_dir)
        base = registry.export(taught.ref, str(tmp_path / "exported"))
        registry.close()
        trainer = Unirank(Settings(data_dir=tmp_path / "elsewhere"))
        trainer.__dict__["embedder"] = base_embedder
        elsewhere = ModelRegistry(trainer.settings.models_dir)
        assert not elsewhere.exists(taught.ref)
        elsewhere.close()
    try:
        request = tiny(f"pupil-{named_as}", minibeir, base=base)
        result = TrainJob(trainer.settings, trainer.backend, trainer.embedder, request, stage=lambda _: None).run()
        inherited = {prints[q] for q in ("q1", "q2", "q3", "q4")}  # not q5: the teacher's record is complete
        for version in (result.embedder, result.reranker):
            assert set(version.record["training_queries"]) == inherited  # corpus-only: nothing of its own
            assert version.record["training_queries_inherited_from"] == ["teacher-embed@1"]
        _refused_by_eval(trainer, minibeir, f"pupil-{named_as}",
                         rf"pupil-{named_as}-embed@1 was trained on 4 of them .*"
                         rf"pupil-{named_as}-rerank@1 was trained on 4 of them")
    finally:
        if trainer is not client:
            trainer.close()


_FIRST_RUN = """
import json, os, signal, sys, threading, time
from pathlib import Path

import torch

torch.set_num_threads(1)
sys.path.insert(0, sys.argv[1])
from test_training_record import tiny
from unirank.api import Unirank
from unirank.settings import Settings
from unirank.training.job import TrainJob

ur = Unirank(Settings(data_dir=Path(sys.argv[2])))
marks = []
job = TrainJob(ur.settings, ur.backend, ur.embedder, tiny("resumed", Path(sys.argv[3]), reranker_steps=2),
               stage=lambda message: marks.append((time.time(), message)))
checkpoint = job.run_dir / "reranker" / "checkpoints" / "checkpoint-1" / "trainer_state.json"


def ctrl_c_after_the_first_reranker_checkpoint():
    while True:
        time.sleep(0.02)
        try:  # written last, and whole: the checkpoint is complete (the second run resumes from it)
            json.loads(checkpoint.read_text())
        except (OSError, ValueError):
            continue
        os.kill(os.getpid(), signal.SIGINT)
        return


threading.Thread(target=ctrl_c_after_the_first_reranker_checkpoint, daemon=True).start()
try:
    job.run()
except KeyboardInterrupt:
    marks.append((time.time(), "interrupted"))
Path(sys.argv[4]).write_text(json.dumps(marks))
os._exit(0)
"""


@pytest.fixture(scope="module")
def resumed(client, minibeir, tmp_path_factory):
    """A run cut short by a real SIGINT once the reranker saved its first checkpoint (in a child process: a
    KeyboardInterrupt inside torch's training is no state for the test process to go on in), and the same
    request again here. Returns the second run's result and the (time, stage message) pairs of each, with
    the moment the first one's KeyboardInterrupt came out."""
    marks = tmp_path_factory.mktemp("resume") / "marks.json"
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_CONFIG=os.devnull, OMP_NUM_THREADS="1")
    child = subprocess.run([sys.executable, "-c", _FIRST_RUN, str(Path(__file__).parent),
                            str(client.settings.data_dir), str(minibeir), str(marks)],
                           env=env, capture_output=True, text=True, timeout=600)
    assert child.returncode == 0 and marks.exists(), child.stderr[-3000:]
    first = [(t, m) for t, m in json.loads(marks.read_text())]
    assert first[-1][1] == "interrupted", first
    interrupted_at, first = first[-1][0], first[:-1]
    second: list[tuple[float, str]] = []
    said = _Said()
    logger = logging.getLogger("unirank.training.reranker_trainer")
    level = logger.level
    logger.addHandler(said)
    logger.setLevel(logging.INFO)
    try:
        result = TrainJob(client.settings, client.backend, client.embedder, tiny("resumed", minibeir, reranker_steps=2),
                          stage=lambda message: second.append((time.time(), message))).run()
        done_at = time.time()
    finally:
        logger.removeHandler(said)
        logger.setLevel(level)
    return result, first, interrupted_at, second, done_at, said.messages


class _Said(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_resumed_run_records_the_time_its_stages_took_in_the_interrupted_one(resumed):
    """After Ctrl-C during the reranker and a re-run, the record said embedder_s 0.0: the embedder had
    trained in the first run, and the second reused it."""
    result, first, interrupted_at, second, done_at, logged = resumed
    at = lambda marks, message: next(t for t, m in marks if m == message)  # noqa: E731
    assert [m for _, m in first][-2:] == ["training the embedder", "training the reranker"]
    assert any(m.startswith("embedder: already trained") for _, m in second)
    assert "training the embedder" not in [m for _, m in second]
    assert any(m.startswith("resuming reranker training from") and m.endswith("checkpoint-1") for m in logged), logged
    timings = result.embedder.record["timings"]
    # The embedder trained between these two messages of the first run, and only then.
    embedder_then = at(first, "training the reranker") - at(first, "training the embedder")
    assert embedder_then - 0.25 <= timings["embedder_s"] <= embedder_then + 0.05, (timings, embedder_then)
    # The reranker: the cut-short attempt, then the rest of it in the second run; the blend (after its
    # message, with nothing after it to time it by) is taken from the run folder's ledger.
    blend = json.loads((result.run_dir / "timings.json").read_text())["blend"]
    reranker_then = interrupted_at - at(first, "training the reranker")
    reranker_now = at(second, "training the blend") - at(second, "training the reranker")
    assert abs(timings["reranker_s"] - blend - (reranker_then + reranker_now)) <= 0.25, (
        timings, blend, reranker_then, reranker_now)
    # Every run's time: the first one's from its first stage to Ctrl-C, the second's to the blend.
    both = (interrupted_at - first[0][0]) + (at(second, "training the blend") - second[0][0])
    assert timings["total_s"] >= both - 0.1, (timings, both)
    assert timings["total_s"] >= timings["embedder_s"] + timings["reranker_s"]
    assert timings["total_s"] <= (interrupted_at - first[0][0]) + (done_at - second[0][0]) + 0.1
    assert result.reranker.record["timings"] == timings


@pytest.fixture(scope="module")
def from_pairs(client, minibeir, tmp_path_factory):
    """A run on a JSONL pair file whose first two negatives are their own positives; it centres the base
    (its passage floor lowered to 1: the corpus has 26)."""
    from data.make_minibeir import DOCS

    index = ensure_beir_index(client.settings, client.backend, client.embedder, minibeir, lambda _: None)
    passages = {c.doc_id: c.text for batch in client.backend.iter_chunks(index) for c in batch if c.ordinal == 0}
    rows = [{"query": f"what does the policy on {title.lower()} say", "positive": passages[doc]}
            for doc, (title, _) in DOCS.items() if doc in passages]
    rows[0]["negative"] = rows[0]["positive"]
    rows[1]["negative"] = "  " + rows[1]["positive"].upper()  # case and spacing aside, the same passage
    pairs = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stages: list[str] = []
    request = tiny("same-negative", index=index, pairs=pairs,
                   embedder={"center_on_corpus": True, "center_min_passages": 1})
    return TrainJob(client.settings, client.backend, client.embedder, request, stage=stages.append).run(), stages


def test_pairs_whose_negative_is_the_positive_lose_that_negative_with_a_warning(from_pairs):
    result, stages = from_pairs
    assert any(s.startswith("warning: 2 negative(s) of") and "(line 1, 2)" in s for s in stages), stages
    assert result.stats["pairs_negative_same_as_positive"] == 2
    trained = [json.loads(line) for line in (result.run_dir / "training_pairs.jsonl").read_text().splitlines()]
    assert len(trained) > 2 and all(p["positive"] not in p["negatives"] for p in trained)


def test_centring_skipped_for_a_small_corpus_is_recorded_as_not_done(teacher, resumed, from_pairs):
    """hyperparameters.center_on_corpus said true when centring was skipped (fewer than 100 passages)."""
    skipped, stages, _ = teacher  # centring asked for (the default), on 26 passages
    record = skipped.embedder.record
    assert record["hyperparameters"]["center_on_corpus"] is False and record["centered_on_corpus"] is None
    assert record["not_centered"] == "26 passages are fewer than 100"
    assert "centring: skipped, 26 passages are fewer than 100" in stages
    off = resumed[0].embedder.record  # center_on_corpus=False: `--no-center`
    assert off["hyperparameters"]["center_on_corpus"] is False and off["centered_on_corpus"] is None
    assert off["not_centered"] == "turned off (--no-center)"
    done = from_pairs[0].embedder.record
    assert done["hyperparameters"]["center_on_corpus"] is True
    assert done["centered_on_corpus"]["passages"] == 26 and "not_centered" not in done
    assert "centring the base on the corpus" in from_pairs[1]


def test_ctrl_c_says_that_the_same_command_resumes(minibeir, tmp_path):
    """Ctrl-C exited 130 without a word on what was kept or how to go on. A real `unirank train`, sent
    SIGINT once it says it trains the embedder (the mined pairs are kept by then)."""
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_CONFIG=os.devnull, UNIRANK_DATA_DIR=str(tmp_path / "data"),
               OMP_NUM_THREADS="1")  # as one_torch_thread
    command = [sys.executable, "-m", "unirank.cli.main", "train", "--beir", str(minibeir), "--name", "ctrlc",
               "--epochs", "0.5", "--min-steps", "0", "--batch-size", "8", "--no-center"]
    for fresh, again in (([], "the same command resumes"), (["--fresh"], "the same command without --fresh resumes")):
        stdout = tmp_path / "stdout.txt"
        with stdout.open("w") as out:
            proc = subprocess.Popen([*command, *fresh], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.PIPE,
                                    text=True)
            lines: list[str] = []
            training = threading.Event()

            def read_stderr():
                for line in proc.stderr:
                    lines.append(line)
                    if "training the embedder" in line:
                        training.set()

            reader = threading.Thread(target=read_stderr, daemon=True)
            reader.start()
            try:
                while not training.wait(0.1):
                    assert proc.poll() is None, f"`unirank train` ended before training:\n{''.join(lines)}"
                proc.send_signal(signal.SIGINT)
                assert proc.wait(timeout=120) == 130, "".join(lines)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
                reader.join(timeout=10)
        said = " ".join("".join(lines).split("training the embedder", 1)[1].split())
        assert "Interrupted. Finished stages (training data) are kept in " in said and again in said, said
        kept = Path(said.split("are kept in ", 1)[1].split(": ", 1)[0])
        assert kept.parent == tmp_path / "data" / "runs" and (kept / "training_pairs.jsonl").is_file()
        assert stdout.read_text() == ""



def test_an_interrupt_between_the_two_registrations_leaves_neither(client, minibeir, monkeypatch, capsys):
    """Ctrl-C (or a failure) after NAME-embed@N was registered and before its reranker left the embedder
    registered alone, and --fresh then orphaned it. It is removed again, and the interrupt says so."""
    from unirank.cli.training import _interrupted

    register = TrainJob._register

    def interrupted_at_the_reranker(self, registry, name, folder, role, record):
        if folder == "reranker":
            raise KeyboardInterrupt
        return register(self, registry, name, folder, role, record)

    def interrupted_run() -> TrainJob:
        monkeypatch.setattr(TrainJob, "_register", interrupted_at_the_reranker)
        job = TrainJob(client.settings, client.backend, client.embedder, tiny("halfway", minibeir))
        with pytest.raises(KeyboardInterrupt):
            job.run()
        registry = ModelRegistry(client.settings.models_dir)
        try:
            assert [v.ref for v in registry.list() if v.name.startswith("halfway")] == []
        finally:
            registry.close()
        return job

    job = interrupted_run()
    assert job.registration_note == ("halfway-embed@1 was registered and removed again: its reranker was not "
                                     "registered; the same command registers both.")
    assert not (job.run_dir / "embedder" / "registered.json").exists()
    with pytest.raises(Exception) as exit_:
        _interrupted(job, fresh=False)
    assert getattr(exit_.value, "exit_code", None) == 130
    assert "halfway-embed@1 was registered and removed again" in capsys.readouterr().err

    monkeypatch.setattr(TrainJob, "_register", register)
    result = TrainJob(client.settings, client.backend, client.embedder, tiny("halfway", minibeir)).run()
    assert (result.embedder.ref, result.reranker.ref) == ("halfway-embed@2", "halfway-rerank@1")
    assert result.embedder.record["trained_with"] == "halfway-rerank@1"

    # Both versions deleted, the same command re-registers them: its run's markers name the deleted ones,
    # and a failure at the reranker again leaves no embedder standing alone.
    registry = ModelRegistry(client.settings.models_dir)
    try:
        for ref in ("halfway-embed@2", "halfway-rerank@1"):
            registry.delete(ref)
    finally:
        registry.close()
    assert interrupted_run().registration_note.startswith("halfway-embed@3 was registered and removed again")
