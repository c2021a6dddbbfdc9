"""ONNX copies on ONNX Runtime's OpenVINO execution provider (``unirank models optimize --provider openvino
--dtype bfloat16``): registered with their provider, loaded on it from the registry in bf16, scoring like
their source and checked on a BEIR set; every other ONNX copy stays on the CPU provider; the refusals."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

pytest.importorskip("optimum.onnxruntime", reason="the onnx extra is not installed: pip install -e '.[onnx]'")
import onnxruntime  # noqa: E402

from data.make_minibeir import write as write_minibeir  # noqa: E402
from serving_helpers import isolated_env  # noqa: E402
from unirank.errors import ModelLoadError, UnirankError  # noqa: E402
from unirank.models.backends import onnx_provider_available  # noqa: E402
from unirank.models.loading import load_reranker, resolve_model_path  # noqa: E402
from unirank.models.optimize import Optimizer  # noqa: E402
from unirank.models.precision import native_bf16  # noqa: E402
from unirank.models.reranker import CrossEncoderReranker  # noqa: E402
from unirank.registry import ModelRegistry  # noqa: E402

HAS_OPENVINO = onnx_provider_available("openvino")
needs_openvino = pytest.mark.skipif(
    not HAS_OPENVINO, reason="ONNX Runtime here is not the OpenVINO build (the onnx extra installs "
                             "onnxruntime-openvino on x86-64 Linux only)")
QUERY = "how often are API keys rotated"
PASSAGES = ["Keys are rotated every ninety days.", "Vacation is requested two weeks ahead.",
            "API keys are rotated on a schedule by the platform team.",
            "Databases are snapshotted every six hours and the write-ahead log is shipped to object storage. " * 6]


@pytest.fixture(scope="module")
def settings(module_settings):
    return module_settings


@pytest.fixture(scope="module")
def source(settings, tmp_path_factory) -> str:
    """The cross-encoder ``unirank train`` builds (untrained head, seeded), registered as ce@1."""
    from unirank.training.reranker_trainer import build_cross_encoder

    folder = tmp_path_factory.mktemp("ce") / "ce"
    torch.manual_seed(0)
    build_cross_encoder(resolve_model_path("base")[0], max_length=256).save_pretrained(str(folder))
    registry = ModelRegistry(settings.models_dir)
    try:
        return registry.register("ce", "reranker", path=folder, record={"dims": None, "max_seq_length": 256}).ref
    finally:
        registry.close()


@pytest.fixture(scope="module")
def on_openvino(settings, source, tmp_path_factory):
    """ce@1's ONNX copy on OpenVINO in bf16 at 128 tokens, checked on a BEIR set: ce@2."""
    from unirank.api import Unirank

    if not HAS_OPENVINO:
        pytest.skip("ONNX Runtime here is not the OpenVINO build")
    minibeir = write_minibeir(tmp_path_factory.mktemp("beir") / "minibeir")
    with Unirank(settings) as ur:
        registry = ModelRegistry(settings.models_dir)
        try:
            yield Optimizer(settings, registry, ur.backend).run(
                source, provider="openvino", dtype="bfloat16", max_seq_length=128, check_beir=minibeir,
                max_drop=0.05)
        finally:
            registry.close()


def _providers(reranker: CrossEncoderReranker) -> list[str]:
    return list(reranker.model[0].auto_model.providers)


def _reranker_for(settings, ref: str):
    s = settings.model_copy(deep=True)
    s.reranker.model = ref
    return load_reranker(s)


@needs_openvino
def test_the_copy_is_registered_with_its_provider_and_passes_the_check(on_openvino, source):
    mv, check = on_openvino.version, on_openvino.check
    assert mv.ref == "ce@2" and mv.record["optimized_from"] == source
    assert mv.record["backend"] == "onnx" and mv.record["onnx_file"] == "onnx/model.onnx"
    assert mv.record["onnx_provider"] == "openvino" and mv.record["dtype"] == "bfloat16"
    assert mv.record["max_seq_length"] == 128 and mv.record["quantization"] is None
    assert check is not None and check.system == "hybrid:base+rerank" and check.passed
    assert mv.record["quality_check"] == check.to_dict()


@needs_openvino
def test_the_registry_version_runs_on_openvino_and_scores_like_its_source(on_openvino, settings, source):
    copy = _reranker_for(settings, on_openvino.version.ref)
    assert copy.model.get_backend() == "onnx" and _providers(copy)[0] == "OpenVINOExecutionProvider"
    assert copy.model.max_seq_length == 128
    a = np.array(_reranker_for(settings, source).score(QUERY, PASSAGES))
    b = np.array(copy.score(QUERY, PASSAGES))
    assert np.corrcoef(a, b)[0, 1] > 0.98


@needs_openvino
def test_bf16_is_what_openvino_computes_in_where_the_cpu_has_it(on_openvino):
    """The same file on the CPU provider and on OpenVINO in fp32 agree to float rounding; OpenVINO asked
    for bf16 departs from them on a CPU with bf16 units (and runs fp32, identical, on one without)."""
    folder, onnx_file = str(on_openvino.version.path), on_openvino.version.record["onnx_file"]
    runs = {label: np.array(CrossEncoderReranker(folder, name=label, backend="onnx", onnx_file=onnx_file, **kw)
                            .score(QUERY, PASSAGES))
            for label, kw in (("cpu", {}), ("openvino-f32", {"onnx_provider": "openvino"}),
                              ("openvino-bf16", {"onnx_provider": "openvino", "dtype": "bfloat16"}))}
    np.testing.assert_allclose(runs["openvino-f32"], runs["cpu"], atol=1e-4)
    bf16_gap = np.abs(runs["openvino-bf16"] - runs["cpu"]).max()
    if native_bf16("cpu"):
        assert 1e-5 < bf16_gap < 0.05
    else:
        assert bf16_gap < 1e-4


@needs_openvino
@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_full_window_batches_run_on_the_fixed_shape_session_and_score_as_on_the_dynamic_one(on_openvino, dtype):
    """Padded to the window and to whole calls of FIXED_ROWS, a batch gives the dynamic session's
    scores: padding rows are dropped and the token outputs cut back to the batch's length."""
    from unirank.models.fixed_shape import FIXED_ROWS, PAD_FROM

    folder, onnx_file = str(on_openvino.version.path), on_openvino.version.record["onnx_file"]

    def load(fixed: bool) -> CrossEncoderReranker:
        return CrossEncoderReranker(folder, name="ov", backend="onnx", onnx_file=onnx_file, onnx_provider="openvino",
                                    dtype=dtype, openvino_fixed_shape=fixed)

    fixed, dynamic = load(True), load(False)
    assert fixed.fixed_shape is not None and dynamic.fixed_shape is None
    assert fixed.fixed_shape.window == 128
    tokenizer = fixed.model.tokenizer

    def pair_tokens(passage: str) -> int:
        return len(tokenizer(QUERY, passage)["input_ids"])

    words = ("Snapshots of every database are taken six hours apart and shipped to object storage "
             "with the write-ahead log").split()
    near = " ".join(words)
    while pair_tokens(near) < PAD_FROM * 128 + 2:
        near += " " + words[len(near.split()) % len(words)]
    assert PAD_FROM * 128 < pair_tokens(near) < 128  # padded to the window, then cut back

    tolerance = 1e-5 if dtype is None else 1e-3  # equal here; kernels for one shape may round otherwise
    def calls(rows: int) -> int:
        return -(-rows // FIXED_ROWS)

    # A mixed batch padded to the window, rows not a multiple of FIXED_ROWS, a batch cut back from the
    # window, and a short batch that stays on the dynamic session.
    for passages, expected in ((PASSAGES, calls(4)), ([PASSAGES[3]] * 5, calls(5)), ([near] * 3, calls(3)),
                               (PASSAGES[:3], 0)):
        before = fixed.fixed_shape.fixed_calls
        np.testing.assert_allclose(fixed.logits([(QUERY, p) for p in passages]),
                                   dynamic.logits([(QUERY, p) for p in passages]), atol=tolerance)
        assert fixed.fixed_shape.fixed_calls - before == expected, passages


@needs_openvino
def test_other_onnx_copies_stay_on_the_cpu_provider(settings, source):
    """In the OpenVINO build OpenVINO is the first provider, and sentence-transformers takes the first one
    unless told: it would run the int8 files about 3x slower there."""
    assert onnxruntime.get_available_providers()[0] == "OpenVINOExecutionProvider"
    registry = ModelRegistry(settings.models_dir)
    try:
        int8 = Optimizer(settings, registry).run(source, quantize="int8").version
    finally:
        registry.close()
    assert int8.record["onnx_provider"] == "cpu"
    assert _providers(_reranker_for(settings, int8.ref)) == ["CPUExecutionProvider"]


def test_refusals(settings, source, monkeypatch):
    registry = ModelRegistry(settings.models_dir)
    try:
        before = [v.ref for v in registry.list()]
        with pytest.raises(UnirankError, match="ONNX provider 'cuda': use one of cpu, openvino"):
            Optimizer(settings, registry).run(source, provider="cuda")
        with pytest.raises(UnirankError, match="CPU provider computes in the file's own types"):
            Optimizer(settings, registry).run(source, provider="cpu", dtype="bfloat16")
        if HAS_OPENVINO:
            with pytest.raises(UnirankError, match="OpenVINO runs the int8 file slower"):
                Optimizer(settings, registry).run(source, provider="openvino", quantize="int8")
        # A plain ONNX Runtime build: refused before any export, with what to install.
        monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
        with pytest.raises(ModelLoadError, match="lacks .*pip install onnxruntime-openvino"):
            Optimizer(settings, registry).run(source, provider="openvino", dtype="bfloat16")
        assert [v.ref for v in registry.list()] == before
    finally:
        registry.close()


def test_a_copy_on_a_provider_this_build_lacks_is_a_clear_load_error(source, settings, monkeypatch, tmp_path):
    folder = tmp_path / "copy"
    (folder / "onnx").mkdir(parents=True)
    (folder / "onnx" / "model.onnx").write_bytes(b"not read: refused before loading")
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(ModelLoadError, match="OpenVINOExecutionProvider, which this ONNX Runtime build lacks"):
        CrossEncoderReranker(str(folder), name="x", backend="onnx", onnx_file="onnx/model.onnx",
                             onnx_provider="openvino", dtype="bfloat16")


def test_cli_refuses_openvino_int8_before_exporting(settings, source):
    env = isolated_env(settings.data_dir, COLUMNS="200")
    proc = subprocess.run([sys.executable, "-m", "unirank.cli.main", "models", "optimize", source,
                           "--provider", "openvino", "--quantize", "int8"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    expected = "OpenVINO runs the int8 file slower" if HAS_OPENVINO else "lacks"
    assert expected in proc.stderr
