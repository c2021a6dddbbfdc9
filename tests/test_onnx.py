"""ONNX backend: export the real base model (fp32 + int8), register it, load it from the registry, search
with it, and refuse to register a copy that loses too much nDCG@10."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("optimum.onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")

from data.make_minibeir import write as write_minibeir  # noqa: E402
from serving_helpers import isolated_env  # noqa: E402
from unirank.errors import (  # noqa: E402
    ConfigurationError,
    ModelLoadError,
    OptimizationRefusedError,
    RegistrationError,
)
from unirank.models.backends import onnx_provider_available  # noqa: E402
from unirank.models.embedder import SentenceTransformerEmbedder  # noqa: E402
from unirank.models.loading import load_embedder, load_reranker  # noqa: E402
from unirank.models import optimize as optimize_module  # noqa: E402
from unirank.models.optimize import Optimizer  # noqa: E402
from unirank.registry import ModelRegistry  # noqa: E402
from unirank.training.job import beir_set_name  # noqa: E402

TEXTS = [
    "How do I rotate an API key?",
    "Databases are snapshotted every six hours and the write-ahead log is shipped to object storage. " * 6,
    "SEV1",
    "Laptops use full disk encryption; lost laptops must be reported to the security team within one hour.",
]


@pytest.fixture(scope="module")
def settings(module_settings):
    return module_settings


@pytest.fixture(scope="module")
def minibeir(tmp_path_factory) -> Path:
    return write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")


@pytest.fixture(scope="module")
def optimized(settings):
    """`base` exported once for the module: registered as minilm@1 (PyTorch), its int8 copy as minilm@2."""
    registry = ModelRegistry(settings.models_dir)
    stages: list[str] = []
    result = Optimizer(settings, registry, stage=stages.append).run("base", name="minilm", quantize="int8")
    yield result
    registry.close()


def _op_counts(onnx_file: Path) -> Counter[str]:
    import onnx

    return Counter(node.op_type for node in onnx.load(str(onnx_file)).graph.node)


def _traced_with_eager_attention(copy: Path, onnx_file: str) -> None:
    """SDPA's export masks every attention score with ``Where``/``IsNaN`` passes (a quarter of the int8
    rerank time); the eager trace has none. The copy's config does not keep the export's choice, so on
    PyTorch it runs SDPA like its source."""
    served = _op_counts(copy / onnx_file)
    fp32 = served if onnx_file == "onnx/model.onnx" else _op_counts(copy / "onnx/model.onnx")
    assert "IsNaN" not in served and "MatMul" in fp32
    assert not [key for key in json.loads((copy / "config.json").read_text()) if "attn_implementation" in key]


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_base_is_registered_and_its_onnx_copy_is_the_next_version(optimized):
    source, mv = optimized.source, optimized.version
    assert source.ref == "minilm@1" and source.record.get("backend", "torch") == "torch"
    assert mv.ref == "minilm@2" and mv.role == "embedder"
    record = mv.record
    assert record["backend"] == "onnx"
    assert record["onnx_file"].startswith("onnx/model_qint8_") and record["onnx_file"].endswith(".onnx")
    assert record["onnx_fp32_file"] == "onnx/model.onnx"
    assert record["optimized_from"] == "minilm@1"
    assert record["dims"] == 384 and record["base_model"] == source.record["base_model"]
    assert record["quantization"]["dtype"] == "qint8" and record["quantization"]["operators"] == ["MatMul"]
    assert record["quantization"]["config"] in record["onnx_file"]
    int8, fp32 = mv.path / record["onnx_file"], mv.path / record["onnx_fp32_file"]
    assert int8.is_file() and fp32.is_file()
    assert int8.stat().st_size < 0.75 * fp32.stat().st_size  # int8 MatMul weights; the embedding table stays fp32
    _traced_with_eager_attention(mv.path, record["onnx_file"])
    assert record["onnx_attention"] == "eager"
    # 6 layers x (query, key, value, output, 2 feed-forward) weights in int8; attention's 2 products fp32
    int8_ops = _op_counts(int8)
    assert int8_ops["MatMulInteger"] == 36 and int8_ops["MatMul"] == 12


def test_onnx_embeddings_match_torch(optimized, base_embedder):
    mv = optimized.version
    torch_vectors = base_embedder.embed_documents(TEXTS)
    fp32 = SentenceTransformerEmbedder(str(mv.path), name="m", version="fp32", backend="onnx",
                                       onnx_file=mv.record["onnx_fp32_file"])
    int8 = SentenceTransformerEmbedder(str(mv.path), name="m", version="int8", backend="onnx",
                                       onnx_file=mv.record["onnx_file"])
    assert fp32.model.get_backend() == "onnx" and fp32.dims == 384
    fp32_vectors, int8_vectors = fp32.embed_documents(TEXTS), int8.embed_documents(TEXTS)
    assert _cosines(torch_vectors, fp32_vectors).min() > 0.999
    assert _cosines(torch_vectors, int8_vectors).min() > 0.98
    assert not np.allclose(fp32_vectors, int8_vectors, atol=1e-4)  # the int8 file really is quantized


def test_loading_a_registry_version_runs_its_onnx_file(optimized, settings):
    mv = optimized.version
    s = settings.model_copy(deep=True)
    s.embedder.model = "minilm@2"
    embedder = load_embedder(s)
    assert embedder.backend == "onnx" and embedder.model.get_backend() == "onnx"
    assert embedder.signature.name == "minilm" and embedder.signature.version == "2"
    direct = SentenceTransformerEmbedder(str(mv.path), name="m", version="int8", backend="onnx",
                                         onnx_file=mv.record["onnx_file"])
    np.testing.assert_allclose(embedder.embed_documents(TEXTS), direct.embed_documents(TEXTS), atol=1e-6)
    s.embedder.model = "minilm@1"
    assert load_embedder(s).backend == "torch"


def test_a_missing_onnx_file_is_a_clear_error(optimized):
    with pytest.raises(ModelLoadError, match="missing"):
        SentenceTransformerEmbedder(str(optimized.version.path), name="m", version="x", backend="onnx",
                                    onnx_file="onnx/absent.onnx")


def test_search_through_the_client_with_the_onnx_model(optimized, settings, minibeir):
    from unirank.api import Unirank

    s = settings.model_copy(deep=True)
    s.embedder.model = "minilm@2"
    with Unirank(s) as ur:
        assert ur.embedder.backend == "onnx"
        report = ur.ingest(str(minibeir / "corpus.jsonl"), index="onnx-docs")
        assert report.to_dict()["failed"] == 0
        info = ur.index_info("onnx-docs")
        assert info.model.name == "minilm" and info.model.version == "2"
        hits = ur.search("what should I do if my computer is stolen", index="onnx-docs", mode="knn", top_k=3).hits
        assert hits[0].chunk.doc_id == "d8"
    # The copy's vectors are its source's: the PyTorch version and the bundled `base` search its index.
    for source in ("minilm@1", "base"):
        s.embedder.model = source
        with Unirank(s) as ur:
            assert source in ("base", str(ur.embedder.signature)) and "minilm@2" in ur.embedder.same_vectors_as
            hits = ur.search("what should I do if my computer is stolen", index="onnx-docs", mode="knn", top_k=3).hits
            assert hits[0].chunk.doc_id == "d8"


def test_quality_check_refuses_and_registers_nothing(optimized, settings, minibeir, monkeypatch):
    """A copy that fails the check (made to, whatever its drop: a negative tolerance is refused up front)."""
    from unirank.api import Unirank

    monkeypatch.setattr(optimize_module.QualityCheck, "passed", property(lambda check: False))
    with Unirank(settings) as ur:
        registry = ModelRegistry(settings.models_dir)
        try:
            before = [v.ref for v in registry.list()]
            indexes_before = {i.name for i in ur.list_indexes()}
            with pytest.raises(OptimizationRefusedError, match=r"ndcg@10 .* a drop of .* Nothing was registered"):
                Optimizer(settings, registry, ur.backend).run("base", name="fresh", quantize="int8",
                                                              check_beir=minibeir, max_drop=0.0)
            assert [v.ref for v in registry.list()] == before
            assert not registry.exists("fresh")  # not even the base model it would have been copied from
            new_indexes = {i.name for i in ur.list_indexes()} - indexes_before
            assert all("candidate" not in name for name in new_indexes)  # the candidate's index is dropped
            assert not list(settings.data_dir.glob("optimize-*"))  # the staged export is removed
        finally:
            registry.close()


class _Scrambled:
    """Random vectors under ``signature``: what a killed check's candidate index holds, as far as the next
    check can tell (the vectors of another copy)."""

    def __init__(self, inner, signature):
        self.inner, self.signature, self.same_vectors_as = inner, signature, frozenset()
        self.max_seq_length = inner.max_seq_length
        self.rng = np.random.default_rng(0)

    dims = property(lambda self: self.inner.dims)
    tokenizer = property(lambda self: self.inner.tokenizer)

    def embed_documents(self, texts):
        vectors = self.rng.standard_normal((len(texts), self.dims)).astype(np.float32)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def embed_query(self, text):
        return self.embed_documents([text])[0]


def _leftover_candidate_indexes(ur, settings, minibeir, base_embedder) -> tuple[str, str]:
    """A killed run's candidate index under the fixed name checks used (the corpus, with other vectors),
    and one named for a process that is gone."""
    from unirank.ingest.pipeline import Ingestor
    from unirank.search.types import ModelSignature
    from unirank.training.job import beir_index_name

    scrambled = _Scrambled(base_embedder, ModelSignature("minilm", "1-onnx-candidate", 384))
    fixed_name = beir_index_name(minibeir, scrambled)
    Ingestor(ur.backend, scrambled, settings.chunking, settings.storage, settings.ingest).run(
        str(minibeir.resolve() / "corpus.jsonl"), fixed_name)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    killed_name = optimize_module.candidate_index_name().replace(f"-{os.getpid()}-", f"-{gone.stdout.strip()}-", 1)
    ur.backend.create_index(killed_name, scrambled.signature)
    return fixed_name, killed_name


def test_quality_check_passes_and_is_recorded(optimized, settings, minibeir, base_embedder):
    """fp32 ONNX computes what PyTorch does: no drop on the same queries, so it is registered. The copy's
    index is its run's own: a killed check left its copy's index under a fixed name, which the next check
    found "unchanged" and scored (the old copy's vectors, recorded as the new copy's figure)."""
    from unirank.api import Unirank

    with Unirank(settings) as ur:
        fixed_name, killed_name = _leftover_candidate_indexes(ur, settings, minibeir, base_embedder)
        registry = ModelRegistry(settings.models_dir)
        try:
            result = Optimizer(settings, registry, ur.backend).run("minilm@1", check_beir=minibeir)
        finally:
            registry.close()
        assert not ur.backend.exists(killed_name)  # its process is gone: removed
        assert not [i.name for i in ur.list_indexes() if i.name.startswith(optimize_module.CANDIDATE_INDEX)]
        ur.backend.delete_index(fixed_name)  # kept (an earlier release's check may be using it) until stale
    mv, check = result.version, result.check
    assert mv.ref == "minilm@3" and mv.record["onnx_file"] == "onnx/model.onnx"
    assert check is not None and check.passed and check.system == "knn" and check.queries == 12
    assert check.source > 0.5 and abs(check.drop) <= 0.005
    assert check.eval_set == f"beir:{beir_set_name(minibeir)}"  # as eval names the folder's figures
    assert mv.record["quality_check"] == check.to_dict()


@pytest.mark.slow  # two CLI subprocesses (~16 s): kept out of the default run for time
def test_a_fresh_process_ingests_with_an_onnx_version(optimized, settings, tmp_path):
    """onnxruntime loaded after usearch (the index opens before the model loads) died with SIGSEGV: every
    ingest and search with an ONNX version crashed, while in-process tests had loaded onnxruntime first."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "keys.txt").write_text("Rotate API keys every ninety days; the old key works for one more day.\n")
    env = isolated_env(settings.data_dir, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "ingest", str(docs), "--index", "onnx-cli",
                           "--model", "minilm@2"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "search", "key rotation", "--index", "onnx-cli",
                           "--mode", "knn", "--no-rerank", "--json"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, (proc.returncode, proc.stderr[-2000:])
    assert json.loads(proc.stdout)["hits"][0]["source_uri"] == (docs / "keys.txt").as_uri()


def test_cli_optimize_refuses_an_onnx_version(optimized, settings):
    env = isolated_env(settings.data_dir, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "models", "optimize", "minilm@2",
                           "--quantize", "int8"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "minilm@2 is already an optimized copy; optimize minilm@1 instead" in proc.stderr


def mean_pooled_head(base: str):
    """The head is untrained: seeded, so what its scores show (e.g. a window's effect) is the same
    every run. Unseeded, the long passage's score moved by 8e-5 to 0.012 with the 64-token window."""
    import torch

    from unirank.training.reranker_trainer import build_cross_encoder

    torch.manual_seed(0)
    return build_cross_encoder(base, max_length=256)


def classification_head(base: str):
    from sentence_transformers import CrossEncoder

    return CrossEncoder(base, num_labels=1, local_files_only=True)


@pytest.mark.parametrize("build", [mean_pooled_head, pytest.param(classification_head, marks=pytest.mark.slow)],
                         ids=["trained-kind", "given-kind"])  # the given kind (~12 s) in the slow step, for time
def test_cross_encoder_reranker_runs_on_onnx(settings, tmp_path_factory, minibeir, build):
    """A cross-encoder (an untrained head on the base encoder: the scores are meaningless, the plumbing
    is real) exported to fp32 ONNX passes the hybrid + rerank check, scores like PyTorch and loads from
    the registry by reference. Both kinds: the mean-pooled head ``unirank train`` builds, and the
    [CLS] classification head of a cross-encoder given as ``--base``."""
    from unirank.api import Unirank
    from unirank.models.loading import resolve_model_path

    name = "ce-" + build.__name__.replace("_", "-")  # a name of its own in the shared registry
    folder = tmp_path_factory.mktemp("ce") / "ce"
    build(resolve_model_path("base")[0]).save_pretrained(str(folder))
    with Unirank(settings) as ur:
        registry = ModelRegistry(settings.models_dir)
        try:
            registry.register(name, "reranker", path=folder, record={"dims": None})
            result = Optimizer(settings, registry, ur.backend).run(f"{name}@1", check_beir=minibeir)
        finally:
            registry.close()
    mv = result.version
    assert mv.ref == f"{name}@2" and mv.record["onnx_file"] == "onnx/model.onnx" and mv.record["quantization"] is None
    assert result.check is not None and result.check.system == "hybrid:base+rerank" and abs(result.check.drop) <= 0.001
    _traced_with_eager_attention(mv.path, mv.record["onnx_file"])
    s = settings.model_copy(deep=True)
    passages = ["Keys are rotated every ninety days.", "Vacation is requested two weeks ahead.", TEXTS[1]]
    s.reranker.model = f"{name}@1"
    torch_scores = load_reranker(s).score("how often are keys rotated", passages)
    s.reranker.model = f"{name}@2"
    onnx_reranker = load_reranker(s)
    assert onnx_reranker.model.get_backend() == "onnx"
    np.testing.assert_allclose(onnx_reranker.score("how often are keys rotated", passages), torch_scores, atol=1e-4)


@pytest.mark.slow  # a third ONNX export and check (~12 s): kept out of the default run for time
def test_the_quality_check_scores_both_rerankers_at_the_blend_weight_set(settings, tmp_path_factory, minibeir):
    """``reranker.blend_weight`` 0 keeps the hybrid order: source and copy must then score the same.
    The untrained head, read alone (its stored weight, 1.0), would order the hits otherwise."""
    from unirank.api import Unirank
    from unirank.models.loading import resolve_model_path

    folder = tmp_path_factory.mktemp("ce") / "ce"
    mean_pooled_head(resolve_model_path("base")[0]).save_pretrained(str(folder))
    weighted = settings.model_copy(deep=True)
    weighted.reranker.blend_weight = 0.0
    with Unirank(weighted) as ur:
        registry = ModelRegistry(weighted.models_dir)
        try:
            registry.register("ce-weight", "reranker", path=folder, record={"dims": None})
            check = Optimizer(weighted, registry, ur.backend).run("ce-weight@1", check_beir=minibeir).check
        finally:
            registry.close()
    assert check is not None and check.system == "hybrid:base+rerank"
    assert check.optimized == check.source and check.drop == 0


def test_a_shorter_token_window_is_saved_with_the_onnx_copy(settings, tmp_path_factory, monkeypatch):
    """``--max-length``: the copy reads fewer tokens (what makes reranking 50 long passages fast), the
    registry records it, every loader honours it, and a window past the source's is refused."""
    from unirank.errors import UnirankError
    from unirank.models.loading import resolve_model_path

    folder = tmp_path_factory.mktemp("ce-window") / "ce"
    mean_pooled_head(resolve_model_path("base")[0]).save_pretrained(str(folder))
    registry = ModelRegistry(settings.models_dir)
    try:
        registry.register("ce-window", "reranker", path=folder, record={"dims": None, "max_seq_length": 256})
        with monkeypatch.context() as patch:  # refused up front, before a costly export
            patch.setattr(optimize_module, "export_onnx", lambda *a, **k: pytest.fail("exported anyway"))
            with pytest.raises(UnirankError, match="use at least 32"):
                Optimizer(settings, registry).run("ce-window@1", max_seq_length=8)
            with pytest.raises(UnirankError, match="Unknown quantization 'int4'"):
                Optimizer(settings, registry).run("ce-window@1", quantize="int4")
            with pytest.raises(UnirankError, match="reads at most 256 tokens"):  # from the record
                Optimizer(settings, registry).run("ce-window@1", max_seq_length=512)
        assert [v.ref for v in registry.list() if v.name == "ce-window"] == ["ce-window@1"]
        mv = Optimizer(settings, registry).run("ce-window@1", max_seq_length=64).version
    finally:
        registry.close()
    assert mv.ref == "ce-window@2"
    assert mv.record["max_seq_length"] == 64 and mv.record["source_max_seq_length"] == 256
    s = settings.model_copy(deep=True)
    s.reranker.model = "ce-window@1"
    full = load_reranker(s)
    long_passage = TEXTS[1]  # ~130 tokens: the window cuts it
    passages = ["Keys are rotated every ninety days.", long_passage]
    full_scores = full.score("how often are snapshots taken", passages)
    full.model.max_seq_length = 64
    cut_scores = full.score("how often are snapshots taken", passages)
    s.reranker.model = "ce-window@2"
    short = load_reranker(s)
    assert short.model.max_seq_length == 64
    np.testing.assert_allclose(short.score("how often are snapshots taken", passages), cut_scores, atol=1e-4)
    assert abs(full_scores[1] - cut_scores[1]) > 1e-3  # the window changed what the long passage scores


def test_an_onnx_copy_exported_before_eager_attention_warns_when_loaded(optimized):
    """Its record has no onnx_attention: it still loads as recorded, with a warning naming the fix."""
    import dataclasses

    from unirank.models.backends import registry_backend

    current = optimized.version
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert registry_backend(current)["backend"] == "onnx"  # a current copy loads quietly
    older = dataclasses.replace(current, record={k: v for k, v in current.record.items() if k != "onnx_attention"})
    with pytest.warns(RuntimeWarning, match=r"minilm@2's ONNX file was exported with SDPA attention.*"
                                            r"unirank models optimize minilm@1"):
        assert registry_backend(older) == registry_backend(current)


def test_a_bi_encoder_registered_as_a_reranker_is_exported_as_the_bi_encoder_it_is(settings, minibeir):
    """A bi-encoder reranker (record scoring "bi-encoder cosine") was exported as a CrossEncoder: a newly
    initialised classifier head, registered as its copy. Its copy scores by cosine like its source."""
    from unirank.api import Unirank
    from unirank.models.loading import resolve_model_path
    from unirank.models.reranker import BiEncoderReranker
    from unirank.registry.describe import registration_record

    base = Path(resolve_model_path("base")[0])
    with Unirank(settings) as ur:
        registry = ModelRegistry(settings.models_dir)
        try:
            record, _ = registration_record(base, "reranker")
            assert record["scoring"] == "bi-encoder cosine"
            registry.register("bi-rerank", "reranker", path=base, record=record)
            result = Optimizer(settings, registry, ur.backend).run("bi-rerank@1", check_beir=minibeir)
        finally:
            registry.close()
    mv = result.version
    assert mv.ref == "bi-rerank@2" and mv.record["backend"] == "onnx"
    assert result.check is not None and abs(result.check.drop) <= 0.001
    assert not (mv.path / "config_sentence_transformers.json").read_text().count("CrossEncoder")
    s = settings.model_copy(deep=True)
    passages = ["Keys are rotated every ninety days.", "Vacation is requested two weeks ahead.", TEXTS[1]]
    s.reranker.model = "bi-rerank@1"
    torch_scores = load_reranker(s).score("how often are keys rotated", passages)
    s.reranker.model = "bi-rerank@2"
    copy = load_reranker(s)
    assert isinstance(copy, BiEncoderReranker) and copy.embedder.backend == "onnx"
    np.testing.assert_allclose(copy.score("how often are keys rotated", passages), torch_scores, atol=1e-4)


def test_a_name_or_beir_folder_that_would_fail_is_refused_before_the_export(settings, tmp_path, monkeypatch):
    """`--name 'bad name'`, `--name none` and a missing `--check-beir` folder were refused only after a
    quarter of a minute of exporting, which was thrown away."""
    from unirank.errors import UnirankError

    monkeypatch.setattr(optimize_module, "export_onnx", lambda *a, **k: pytest.fail("exported anyway"))
    monkeypatch.setattr(optimize_module, "save_dtype_copy", lambda *a, **k: pytest.fail("copied anyway"))
    registry = ModelRegistry(settings.models_dir)
    optimizer = Optimizer(settings, registry, backend=object())  # no search runs before the export
    try:
        with pytest.raises(UnirankError, match="Invalid model name 'bad name'"):
            optimizer.run("base", name="bad name", quantize="int8")
        with pytest.raises(UnirankError, match="'none' cannot be a registry name"):
            optimizer.run("base", name="none", dtype="bfloat16")
        with pytest.raises(UnirankError, match="does not exist: give a BEIR folder"):
            optimizer.run("base", name="fresh-name", check_beir=tmp_path / "nonexistent")
        (tmp_path / "empty").mkdir()
        with pytest.raises(UnirankError, match="corpus.jsonl is missing"):
            optimizer.run("base", name="fresh-name", check_beir=tmp_path / "empty")
        assert not registry.exists("fresh-name")
    finally:
        registry.close()


def test_an_optimized_copy_has_only_the_figures_measured_on_it(settings, minibeir, monkeypatch):
    """A copy took its source's nDCG figures: `models list` showed them as its own, and promotion took an
    unmeasured int8 copy as checked ("ndcg@10 0.5446 against 0.5446"). The quality check is its own
    figure, for the system that measured it (kNN), which a hybrid figure is not compared with."""
    import shutil

    from unirank.errors import PromotionRefusedError
    from unirank.evaluation.datasets import load_beir
    from unirank.evaluation.runner import qrels_digest, queries_digest
    from unirank.models.loading import resolve_model_path
    from unirank.models.onnx_export import OnnxExport
    from unirank.models.optimize import QualityCheck

    def copied(source, dest, role, **_):  # what matters here is the record, not the export
        shutil.copytree(source, dest)
        (Path(dest) / "onnx").mkdir()
        (Path(dest) / "onnx" / "model.onnx").write_text("not read")
        return OnnxExport(folder=Path(dest), fp32_file="onnx/model.onnx")

    monkeypatch.setattr(optimize_module, "export_onnx", copied)
    judged = load_beir(minibeir).judged()
    eval_set, digest = f"beir:{beir_set_name(minibeir)}", queries_digest(judged.queries)
    registry = ModelRegistry(settings.models_dir)
    try:
        registry.register("fig-embed", "embedder", path=Path(resolve_model_path("base")[0]), record={"dims": 384})
        registry.record_evaluation("fig-embed@1", {"ndcg@10": 0.5446, "eval_set": eval_set, "eval_queries": digest,
                                                   "system": "hybrid:fig-embed@1"})
        registry.promote("fig-embed@1")
        unmeasured = Optimizer(settings, registry).run("fig-embed@1").version
        assert unmeasured.metrics == {} and unmeasured.evaluations == {}
        with pytest.raises(PromotionRefusedError, match="fig-embed@2 has no held-out ndcg@10"):
            registry.promote("fig-embed@2")

        monkeypatch.setattr(Optimizer, "_check", lambda *a, **k: QualityCheck(
            eval_set=eval_set, system="knn", queries=12, source=0.61, optimized=0.6, max_drop=0.05))
        checked = Optimizer(settings, registry, backend=object()).run("fig-embed@1", check_beir=minibeir,
                                                                      force=True).version
        assert list(checked.evaluations.values()) == [checked.metrics] and checked.metrics == {
            "ndcg@10": 0.6, "eval_set": eval_set, "eval_queries": digest, "system": "knn:fig-embed@3",
            "eval_qrels": qrels_digest(judged.qrels, judged.queries), "measured_by": "models optimize --check-beir"}
        with pytest.raises(PromotionRefusedError, match="another system"):  # kNN against hybrid
            registry.promote("fig-embed@3")
    finally:
        registry.close()


def _tiny_folder(tmp_path: Path, text: str = "{}") -> Path:
    """A folder the registry takes as a version: these tests stop before anything loads it."""
    folder = tmp_path / "tiny"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(text)
    return folder


@pytest.fixture()
def no_export(monkeypatch):
    monkeypatch.setattr(optimize_module, "export_onnx", lambda *a, **k: pytest.fail("exported anyway"))
    monkeypatch.setattr(optimize_module, "save_dtype_copy", lambda *a, **k: pytest.fail("copied anyway"))


def test_a_version_whose_files_were_deleted_is_refused_before_the_export(settings, tmp_path, no_export):
    """A version folder deleted by hand failed with a raw FileNotFoundError from the export's copytree, and
    an emptied one with a message naming the export's temp folder."""
    import shutil

    registry = ModelRegistry(settings.models_dir)
    try:
        gone = registry.register("gone-files", "embedder", path=_tiny_folder(tmp_path))
        emptied = registry.register("gone-files", "embedder", path=_tiny_folder(tmp_path, '{"x": 1}'))
        shutil.rmtree(gone.path)
        for path in emptied.path.iterdir():
            path.unlink()
        for version in (gone, emptied):
            with pytest.raises(ModelLoadError, match=rf"The files of {version.ref} are missing from .*nothing to "
                                                     r"optimize.*models register gone-files --role embedder"):
                Optimizer(settings, registry).run(version.ref, quantize="int8")
    finally:
        registry.close()


def test_a_copy_whose_source_was_deleted_says_so(settings, tmp_path, no_export):
    """It said "orphan@2 is already an optimized copy; optimize orphan@1 instead", of a deleted orphan@1."""
    registry = ModelRegistry(settings.models_dir)
    try:
        registry.register("orphan", "embedder", path=_tiny_folder(tmp_path))
        registry.register("orphan", "embedder", path=_tiny_folder(tmp_path, '{"x": 1}'), record={
            "backend": "onnx", "onnx_file": "onnx/model.onnx", "optimized_from": "orphan@1"})
        with pytest.raises(ModelLoadError, match="optimize orphan@1 instead"):
            Optimizer(settings, registry).run("orphan@2")
        registry.delete("orphan@1")
        with pytest.raises(ModelLoadError, match=r"its source orphan@1 was deleted.*`unirank models register "
                                                 r"orphan --role embedder --path FOLDER`.*or use orphan@2 as it is"):
            Optimizer(settings, registry).run("orphan@2")
    finally:
        registry.close()


@pytest.mark.parametrize("max_drop", [float("nan"), -0.01, 1.5, float("inf")])
def test_a_max_drop_outside_0_to_1_is_refused(settings, minibeir, no_export, max_drop):
    """nan let every copy through the check, and a negative one none."""
    with pytest.raises(ConfigurationError, match="from 0 to 1"):
        Optimizer(settings, ModelRegistry(settings.models_dir), backend=object()).run(
            "base", name="drop-name", check_beir=minibeir, max_drop=max_drop)


def test_a_max_drop_without_a_check_is_refused(settings, no_export):
    """It was ignored: a limit asked for, and an unchecked copy registered."""
    with pytest.raises(ConfigurationError, match="no check runs without --check-beir"):
        Optimizer(settings, ModelRegistry(settings.models_dir)).run("base", name="drop-name", max_drop=0.01)
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "models", "optimize", "base", "--max-drop",
                           "0.01"], env=isolated_env(settings.data_dir, COLUMNS="200"), capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and "no check runs without --check-beir" in proc.stderr, proc.stderr[-2000:]


def test_optimizing_twice_is_refused_naming_the_copy(settings, tmp_path, monkeypatch):
    """The same copy was registered again, a version no one could tell from the first, without a word
    (`models register` refuses identical files); --force registers it all the same."""
    import shutil

    from unirank.models.onnx_export import OnnxExport

    def copied(source, dest, role, **_):  # the same files each time, as an export of one version makes
        shutil.copytree(source, dest)
        (Path(dest) / "onnx").mkdir()
        (Path(dest) / "onnx" / "model.onnx").write_text("not read")
        return OnnxExport(folder=Path(dest), fp32_file="onnx/model.onnx")

    monkeypatch.setattr(optimize_module, "export_onnx", copied)
    registry = ModelRegistry(settings.models_dir)
    try:
        registry.register("twice", "embedder", path=_tiny_folder(tmp_path))
        assert Optimizer(settings, registry).run("twice@1").version.ref == "twice@2"
        with pytest.raises(RegistrationError, match="twice@2 already is this copy of twice@1 .* pass --force"):
            Optimizer(settings, registry).run("twice@1")
        assert [v.ref for v in registry.list() if v.name == "twice"] == ["twice@1", "twice@2"]
        assert Optimizer(settings, registry).run("twice@1", force=True).version.ref == "twice@3"
        if onnx_provider_available("openvino"):  # the same fp32 file run otherwise is another copy
            openvino = Optimizer(settings, registry).run("twice@1", dtype="bfloat16", provider="openvino").version
            assert openvino.ref == "twice@4" and openvino.record["onnx_provider"] == "openvino"
            with pytest.raises(RegistrationError, match="twice@4 already is this copy of twice@1"):
                Optimizer(settings, registry).run("twice@1", dtype="bfloat16", provider="openvino")
    finally:
        registry.close()


def test_option_errors_are_configuration_errors(settings, tmp_path, no_export):
    """They were plain UnirankError: a caller could not tell an option to fix from a model that fails."""
    registry = ModelRegistry(settings.models_dir)
    optimizer = Optimizer(settings, registry)
    try:
        registry.register("opts", "embedder", path=_tiny_folder(tmp_path))
        for options, says in (
                (dict(quantize="int8", dtype="bfloat16"), "choose one"),
                (dict(quantize="int4"), "Unknown quantization"),
                (dict(dtype="float8"), "Unknown dtype"),
                (dict(max_seq_length=4), "too short"),
                (dict(name="other"), "--name applies only to `base`"),
                (dict(check_beir=tmp_path), "needs a search backend")):
            with pytest.raises(ConfigurationError, match=says):
                optimizer.run("opts@1", **options)
        registry.register("opts-endpoint", "embedder", record={"endpoint": "http://127.0.0.1:9", "api": "openai"})
        with pytest.raises(ModelLoadError, match="remote endpoint: there are no weights"):  # the source, not an option
            optimizer.run("opts-endpoint@1")
    finally:
        registry.close()


@pytest.mark.slow  # a CLI subprocess (~7 s): kept out of the default run for time
def test_ctrl_c_says_nothing_was_registered(settings):
    """Ctrl-C exited 130 without a word."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "unirank.cli.main", "models", "optimize", "base", "--name",
                             "interrupted"], env=isolated_env(settings.data_dir, COLUMNS="200"),
                            stderr=subprocess.PIPE, text=True)
    try:
        said = []
        for line in proc.stderr:  # interrupted once the export has begun, inside the command
            said.append(line)
            if "exporting" in line:
                proc.send_signal(signal.SIGINT)
                break
        said.append(proc.stderr.read())
        assert proc.wait(timeout=120) == 130, "".join(said)
    finally:
        proc.kill()
    assert "interrupted: nothing was registered." in "".join(said)
    registry = ModelRegistry(settings.models_dir)
    try:
        assert not registry.exists("interrupted")
    finally:
        registry.close()
