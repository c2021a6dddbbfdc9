"""bfloat16 copies (``unirank models optimize --dtype bfloat16``): the real base model and a cross-encoder
copied in bf16, registered, loaded from the registry in bf16, scoring like their fp32 sources, checked
on a BEIR set, and the refusals."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from data.make_minibeir import write as write_minibeir
from serving_helpers import isolated_env
from unirank.errors import UnirankError
from unirank.models.loading import load_embedder, load_reranker, resolve_model_path
from unirank.models.optimize import Optimizer
from unirank.models import precision
from unirank.registry import ModelRegistry
from unirank.settings import Settings

TEXTS = [
    "How do I rotate an API key?",
    "Databases are snapshotted every six hours and the write-ahead log is shipped to object storage. " * 6,
    "Laptops use full disk encryption; lost laptops must be reported to the security team within one hour.",
]

@pytest.fixture(scope="module")
def settings(module_settings):
    return module_settings


@pytest.fixture(scope="module")
def copied(settings):
    """`base` registered as minilm@1, its bf16 copy as minilm@2."""
    registry = ModelRegistry(settings.models_dir)
    result = Optimizer(settings, registry).run("base", name="minilm", dtype="bfloat16")
    yield result
    registry.close()


def _settings_for(settings: Settings, embedder: str | None = None, reranker: str | None = None) -> Settings:
    s = settings.model_copy(deep=True)
    if embedder:
        s.embedder.model = embedder
    if reranker:
        s.reranker.model = reranker
    return s


def test_the_copy_is_registered_with_its_dtype_and_half_the_weights(copied):
    source, mv = copied.source, copied.version
    assert (source.ref, mv.ref) == ("minilm@1", "minilm@2")
    assert mv.record["backend"] == "torch" and mv.record["dtype"] == "bfloat16"
    assert mv.record["optimized_from"] == "minilm@1" and mv.record["dims"] == 384
    fp32_bytes = (Path(resolve_model_path("base")[0]) / "model.safetensors").stat().st_size
    bf16_bytes = (mv.path / "model.safetensors").stat().st_size
    assert 0.45 < bf16_bytes / fp32_bytes < 0.55


def test_the_registry_version_loads_in_bf16_and_embeds_like_fp32(copied, settings):
    fp32 = load_embedder(_settings_for(settings, embedder="minilm@1"))
    bf16 = load_embedder(_settings_for(settings, embedder="minilm@2"))
    assert next(fp32.model.parameters()).dtype == torch.float32
    assert next(bf16.model.parameters()).dtype == torch.bfloat16 and bf16.dtype == "bfloat16"
    a, b = fp32.embed_documents(TEXTS), bf16.embed_documents(TEXTS)
    assert b.dtype == np.float32 and b.shape == (3, 384)  # the index still gets float32 vectors
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.99
    assert not np.allclose(a, b, atol=1e-4)  # really computed in bf16


def test_search_through_the_client_with_the_bf16_model(copied, settings, tmp_path_factory):
    from unirank.api import Unirank

    minibeir = write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")
    with Unirank(_settings_for(settings, embedder="minilm@2")) as ur:
        assert ur.embedder.dtype == "bfloat16"
        assert ur.ingest(str(minibeir / "corpus.jsonl"), index="bf16-docs").to_dict()["failed"] == 0
        info = ur.index_info("bf16-docs")
        assert info.model.name == "minilm" and info.model.version == "2" and info.model.dims == 384
        hits = ur.search("what should I do if my computer is stolen", index="bf16-docs", mode="knn", top_k=3).hits
    assert hits[0].chunk.doc_id == "d8"


@pytest.mark.slow  # trains and checks a bf16 cross-encoder (~40 s): in the slow step, for the default run's margin
def test_a_bf16_cross_encoder_with_a_shorter_window_passes_the_check(settings, tmp_path_factory):
    """The hybrid + rerank check on a BEIR set registers it; its scores follow the fp32 source's."""
    from unirank.api import Unirank
    from unirank.training.reranker_trainer import build_cross_encoder

    minibeir = write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")
    folder = tmp_path_factory.mktemp("ce") / "ce"
    torch.manual_seed(0)  # an untrained head: seeded so its scores are the same every run
    build_cross_encoder(resolve_model_path("base")[0], max_length=256).save_pretrained(str(folder))
    with Unirank(settings) as ur:
        registry = ModelRegistry(settings.models_dir)
        try:
            registry.register("ce", "reranker", path=folder, record={"dims": None, "max_seq_length": 256})
            result = Optimizer(settings, registry, ur.backend).run("ce@1", dtype="bfloat16", max_seq_length=128,
                                                                  check_beir=minibeir, max_drop=0.05)
        finally:
            registry.close()
    mv, check = result.version, result.check
    assert mv.ref == "ce@2" and mv.record["dtype"] == "bfloat16" and mv.record["max_seq_length"] == 128
    assert check is not None and check.system == "hybrid:base+rerank" and check.passed
    assert mv.record["quality_check"] == check.to_dict()
    source = load_reranker(_settings_for(settings, reranker="ce@1"))
    copy = load_reranker(_settings_for(settings, reranker="ce@2"))
    assert next(copy.model.parameters()).dtype == torch.bfloat16 and copy.model.max_seq_length == 128
    passages = ["Keys are rotated every ninety days.", "Vacation is requested two weeks ahead.",
                "API keys are rotated on a schedule by the platform team.", TEXTS[2]]
    query = "how often are API keys rotated"
    a, b = np.array(source.score(query, passages)), np.array(copy.score(query, passages))
    assert np.corrcoef(a, b)[0, 1] > 0.98


def test_refusals(copied, settings):
    registry = ModelRegistry(settings.models_dir)
    try:
        before = [v.ref for v in registry.list()]
        with pytest.raises(UnirankError, match="Unknown dtype 'float16'"):
            Optimizer(settings, registry).run("minilm@1", dtype="float16")
        with pytest.raises(UnirankError, match="choose one"):
            Optimizer(settings, registry).run("minilm@1", dtype="bfloat16", quantize="int8")
        with pytest.raises(UnirankError, match="minilm@2 is already an optimized copy; optimize minilm@1 instead"):
            Optimizer(settings, registry).run("minilm@2", dtype="bfloat16")
        assert [v.ref for v in registry.list()] == before
    finally:
        registry.close()


def test_optimize_base_after_deletions_registers_the_base_again_and_names_it(settings):
    """Deleted numbers are never given again, and copies keep `bundled_base` from the base's record:
    the copy named a guessed rebase@1 as its source, and once the base was deleted `base` was a copy."""
    registry = ModelRegistry(settings.models_dir)
    try:
        Optimizer(settings, registry).run("base", name="rebase", dtype="bfloat16")  # rebase@1, its copy @2
        registry.delete("rebase@2")
        registry.delete("rebase@1")
        again = Optimizer(settings, registry).run("base", name="rebase", dtype="bfloat16")
        assert (again.source.ref, again.version.ref) == ("rebase@3", "rebase@4")
        assert again.version.record["optimized_from"] == "rebase@3"
        registry.delete("rebase@3")  # rebase@4, the copy, is kept
        shorter = Optimizer(settings, registry).run("base", name="rebase", dtype="bfloat16", max_seq_length=128)
        assert (shorter.source.ref, shorter.version.ref) == ("rebase@5", "rebase@6")
        assert shorter.source.record.get("optimized_from") is None and "dtype" not in shorter.source.record
        assert shorter.version.record["optimized_from"] == "rebase@5"
    finally:
        registry.close()


def test_cli_registers_a_bf16_copy(copied, settings):
    env = isolated_env(settings.data_dir, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "models", "optimize", "minilm@1",
                           "--dtype", "bfloat16", "--force"], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Registered minilm@3: bfloat16 weights (PyTorch) from minilm@1." in proc.stdout


def test_loading_a_bf16_copy_warns_where_the_cpu_emulates_bf16(copied, settings, monkeypatch):
    """It still loads and embeds (emulated bf16 is correct, only slower than fp32), with a warning that
    says what to serve instead. The hardware answer is patched: this test's CPU may have bf16 units."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.warns(RuntimeWarning, match="has no native bf16 .* Serve its fp32 source or an ONNX copy"):
        embedder = load_embedder(_settings_for(settings, embedder="minilm@2"))
    assert embedder.embed_documents(TEXTS[:1]).shape == (1, 384)


def _trained_in_bf16(run_dir: Path) -> bool:
    """Whether the Trainer that wrote ``run_dir``'s checkpoints ran with ``bf16`` on."""
    args = torch.load(next((run_dir / "checkpoints").glob("checkpoint-*")) / "training_args.bin", weights_only=False)
    return args.bf16 is True


def _refused_without_bf16_units(config_class, monkeypatch) -> None:
    from unirank.errors import ConfigurationError

    monkeypatch.setattr(precision, "native_bf16", lambda device: False)
    with pytest.raises(ConfigurationError, match="bf16 training needs a CPU that computes bf16 natively"):
        config_class(bf16=True)


def _as_if_bf16_were_native(monkeypatch) -> None:
    """The config refuses bf16 where the CPU would emulate it (slower, not wrong): a CPU without bf16 units
    (an AMD EPYC without AVX-512, say) still runs these few steps, emulated, so the training is checked
    everywhere, not only where bf16 is native."""
    monkeypatch.setattr(precision, "native_bf16", lambda device: True)


@pytest.mark.slow  # emulated bf16 on CPUs without its units: ~80 s each, in the slow step
def test_the_embedder_trains_in_bf16_mixed_precision(tmp_path, monkeypatch):
    """A few real steps with ``bf16=True``: the trainer ran in bf16 autocast, the saved model keeps fp32
    master weights and has moved from the base; on a CPU without bf16 units the config is refused."""
    from test_reranker_training import title_pairs

    from unirank.training.embedder_trainer import EmbedderTrainingConfig, train_embedder

    pairs = title_pairs()
    corpus = {p.doc_id: p.positive for p in pairs}
    _as_if_bf16_were_native(monkeypatch)
    config = EmbedderTrainingConfig(batch_size=8, max_steps=3, eval_steps=3, bf16=True, pseudo_query_loss="mnrl")
    base = resolve_model_path("base")[0]
    train_embedder(base, pairs[:20], pairs[20:], corpus, tmp_path / "emb", config)
    assert _trained_in_bf16(tmp_path / "emb")
    from sentence_transformers import SentenceTransformer

    tuned, start = (SentenceTransformer(str(p), device="cpu", local_files_only=True)
                    for p in (tmp_path / "emb" / "final", base))
    assert next(tuned.parameters()).dtype == torch.float32
    moved = (tuned.encode(TEXTS) * start.encode(TEXTS)).sum(axis=1) / (
        np.linalg.norm(tuned.encode(TEXTS), axis=1) * np.linalg.norm(start.encode(TEXTS), axis=1))
    assert moved.min() < 0.99999
    _refused_without_bf16_units(EmbedderTrainingConfig, monkeypatch)


@pytest.mark.slow  # emulated bf16 on CPUs without its units: ~80 s each, in the slow step
def test_the_reranker_trains_in_bf16_mixed_precision(tmp_path, monkeypatch):
    """The cross-encoder too: bf16 autocast in the trainer, fp32 weights saved, scores moved from the
    seeded start; refused on a CPU without bf16 units."""
    from sentence_transformers import CrossEncoder
    from test_reranker_training import title_pairs
    from transformers import set_seed

    from unirank.training.reranker_trainer import RerankerTrainingConfig, build_cross_encoder, train_reranker

    pairs = title_pairs()
    _as_if_bf16_were_native(monkeypatch)
    config = RerankerTrainingConfig(batch_size=8, max_steps=3, eval_steps=3, bf16=True)
    base = resolve_model_path("base")[0]
    train_reranker(base, pairs[:20], pairs[20:], tmp_path / "rr", config)
    assert _trained_in_bf16(tmp_path / "rr")
    tuned = CrossEncoder(str(tmp_path / "rr" / "final"), device="cpu", local_files_only=True)
    assert next(tuned.parameters()).dtype == torch.float32
    set_seed(config.seed)  # the head train_reranker started from
    start = build_cross_encoder(base, config.train_length)
    sample = [(p.query, p.positive) for p in pairs[:6]]
    assert not np.allclose(tuned.predict(sample), start.predict(sample), atol=1e-4)
    _refused_without_bf16_units(RerankerTrainingConfig, monkeypatch)
