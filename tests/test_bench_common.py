"""The benchmarks' own checks (bench/): helpers of bench/_common.py and the scripts' command lines.

No model is loaded and no CISI run starts: these take seconds.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def import_bench(name: str):
    """A bench module, imported without leaving its environment defaults (TOKENIZERS_PARALLELISM ...) behind."""
    saved_env, saved_path = dict(os.environ), list(sys.path)
    sys.path.insert(0, str(BENCH))
    try:
        return importlib.import_module(name)
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


@pytest.fixture(scope="module")
def common():
    return import_bench("_common")


def unit_vectors(rows: int = 5, dims: int = 384) -> np.ndarray:
    vectors = np.random.default_rng(7).standard_normal((rows, dims)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def test_vectors_match_is_false_for_other_vectors(common):
    vectors = unit_vectors()
    assert not common.vectors_match(vectors, -vectors)
    assert common.max_vector_difference(vectors, -vectors) > common.VECTOR_TOLERANCE


def test_vectors_match_takes_float_noise_of_another_encode(common):
    vectors = unit_vectors()
    assert common.vectors_match(vectors, vectors + 1e-6)
    assert common.vectors_match(vectors.astype(np.float64), vectors)


def test_vectors_match_is_false_for_a_different_count_or_nan(common):
    vectors = unit_vectors()
    assert not common.vectors_match(vectors, vectors[:-1])
    broken = vectors.copy()
    broken[2, 3] = np.nan
    assert not common.vectors_match(vectors, broken)


@pytest.mark.parametrize("text", ["0", "-3"])
def test_positive_int_refuses_zero_and_below(common, text):
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 1"):
        common.positive_int(text)


def test_count_types_take_their_smallest_value(common):
    assert common.positive_int("1") == 1
    assert common.non_negative_int("0") == 0
    assert common.non_negative_float("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match="must be >= 0"):
        common.non_negative_int("-1")


@pytest.mark.parametrize("text", ["-0.25", "nan", "inf"])
def test_non_negative_float_refuses_negative_and_non_finite(common, text):
    with pytest.raises(argparse.ArgumentTypeError, match="finite number >= 0"):
        common.non_negative_float(text)


def run_bench(script: str, *args: str) -> subprocess.CompletedProcess:
    """The bench script as a user runs it; the timeout turns a bench that started for real into a failure."""
    return subprocess.run([sys.executable, str(BENCH / f"{script}.py"), *args], cwd=BENCH.parent,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "HF_HUB_OFFLINE": "1"})


@pytest.mark.parametrize(("script", "option", "value"), [
    ("ingest_throughput", "--repeats", "0"),
    ("onnx_quality", "--repeats", "0"),
    ("serving", "--repeats", "0"),
    ("serving", "--replicas", "0"),
    ("serving", "--rerank-requests", "-1"),
    ("query_latency", "--queries", "0"),
    ("query_latency", "--noise", "-0.1"),
    ("chat_answers", "--queries", "0"),
    ("bulk_and_search", "--bulk-requests", "0"),
    ("bulk_and_search", "--interval", "-1"),
    ("finetune_cisi", "--epochs", "0"),
    ("finetune_cisi", "--epochs", "nan"),
    ("finetune_cisi", "--max-pairs", "0"),
])
def test_bench_refuses_a_count_it_cannot_run_with(script, option, value):
    result = run_bench(script, option, value)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"argument {option}: must be" in result.stderr


def test_rerank_passages_refuses_more_words_than_the_corpus_holds():
    """Slices past the corpus's end were empty or short passages, sent and timed as full ones."""
    serving = import_bench("serving")
    corpus = [{"title": "One", "text": "two three four five"}, {"title": "Six", "text": "seven eight nine"}]
    assert serving.rerank_passages(corpus, 3, 3) == ["One. two three", "four five Six.", "seven eight nine"]
    with pytest.raises(SystemExit, match="3 passages of 4 words need 12 words; the corpus has 9"):
        serving.rerank_passages(corpus, 3, 4)


def test_an_embedding_level_counts_only_the_embeddings_that_came_back():
    """Every request of a level refused (503) was counted as embeddings/s, and the target read as met."""
    serving = import_bench("serving")
    from serving_helpers import JsonHandler, http_endpoint

    class Refusing(JsonHandler):
        def do_POST(self):
            self.answer(503, {"error": {"message": "busy"}})

    with http_endpoint(Refusing) as url:
        level = serving.asyncio.run(serving._embed_level(url, ["some text"] * 20, 4))
    assert level["failures"] == 20 and level["embeddings_per_s"] == 0.0


def test_query_latency_refuses_an_index_smaller_than_its_top_k():
    result = run_bench("query_latency", "--sizes", "10")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "argument --sizes: each size must be > 10" in result.stderr


def test_waiting_for_every_replica_raises_when_none_answers():
    serving = import_bench("serving")
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="Not every replica .* answered /ready 20 times in a row within 0.5 s"):
        serving.wait_all_replicas_ready(f"http://127.0.0.1:{port}", timeout=0.5)
    assert time.monotonic() - started < 10


def test_every_bench_json_records_the_cuda_devices_it_saw(common, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(common, "PROJECT_ROOT", tmp_path)
    monkeypatch.setattr(common, "OUT_DIR", tmp_path / "out")
    written = json.loads(common.write_json("probe", {"figure": 1}).read_text())
    seen = written["machine"]
    assert seen["cuda_available"] is torch.cuda.is_available()
    assert seen["cuda_device_count"] == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    assert len(seen["cuda_devices"]) == seen["cuda_device_count"]
    assert all(isinstance(name, str) and name for name in seen["cuda_devices"])


BENCHES = ["retrieval_quality", "ingest_throughput", "query_latency", "onnx_quality", "serving", "bulk_and_search",
           "chat_answers", "chat_follow_ups", "duplicate_chunks", "finetune_cisi"]


def test_every_bench_script_is_listed_here():
    assert sorted(BENCHES) == sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("script", BENCHES)
def test_every_bench_answers_help_without_running(script):
    result = run_bench(script, "--help")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith(f"usage: {script}.py")


@pytest.mark.parametrize("script", ["retrieval_quality", "chat_follow_ups", "duplicate_chunks"])
def test_a_bench_without_options_refuses_an_unknown_one(script):
    result = run_bench(script, "--bogus")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "unrecognized arguments: --bogus" in result.stderr


def test_duplicate_chunks_loads_its_two_indexes_in_an_order_that_does_not_crash():
    """onnxruntime loaded after usearch died with SIGSEGV (exit -11) before the bench's first case."""
    code = "import duplicate_chunks as d; d.index_classes(); print('loaded')"
    result = subprocess.run([sys.executable, "-c", code], cwd=BENCH, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(BENCH)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "loaded"


def test_a_quote_whose_sentence_holds_curly_quotes_is_faithful():
    """The extractive answerer writes a quoted sentence's own “ ” as ‘ ’ (a quote inside a quote): read
    against the passage's words as they are, every such answer was counted unfaithful."""
    from types import SimpleNamespace

    chat_answers = import_bench("chat_answers")
    passage = "Intro. The “blue gauge” is kept in cabinet 4. Outro."
    start, end = passage.index("The"), passage.index("Outro") - 1
    citation = SimpleNamespace(n=1, chunk_id="c1", passage=passage, start=start, end=end,
                               text=passage[start:end], spans=[(start, end)])
    quoted = "From the documents: “The ‘blue gauge’ is kept in cabinet 4.” [1]"
    assert chat_answers.faithful(SimpleNamespace(answer=quoted, citations=[citation]), {"c1": passage})
    altered = quoted.replace("cabinet 4", "cabinet 5")
    assert not chat_answers.faithful(SimpleNamespace(answer=altered, citations=[citation]), {"c1": passage})
