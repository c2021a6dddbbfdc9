"""Routing to remote models: ingestion, search and reranking through the real model server.

One server (``unirank serve models``) is shared by the module; it serves the bundled base model,
a 128-dimensional variant of it, a small cross-encoder, and an alias that a test re-points (hot
swap) to another size.
Token rotation and retries use a second server, started with a keys file while a client is
already knocking.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import numpy as np
import pytest

from env_helpers import without_unirank_settings
from unirank.api import Unirank
from unirank.errors import DimensionMismatchError, RemoteModelError
from unirank.models.loading import describe_remote, load_embedder, load_reranker, resolve_model_path
from unirank.models.remote import (
    UNLISTED_MAX_INPUTS,
    Endpoint,
    RemoteEmbedder,
    RemoteReranker,
    TokenSource,
    describe_endpoint,
)
from unirank.registry import ModelRegistry
from unirank.registry.describe import describe_model_folder
from unirank.settings import Settings

sys.path.insert(0, str(Path(__file__).parent))
from serving_helpers import ModelServer, free_port  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "sample-docs"
QUERIES = ["how often are databases snapshotted", "who updates the status page during an outage",
           "what does it cost per seat", "how do I reset my password"]
TEXTS = ["Backups run nightly and are kept for 30 days.", "SEV1 means customers cannot log in.",
         "pricing " * 300]  # the last is over the window: cut, as the local embedder does


def _base_with_dense(folder: Path, base_embedder, dims: int, seed: int) -> Path:
    """A real sentence-transformers model: the base model plus a seeded Dense layer to ``dims``."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    torch.manual_seed(seed)
    dense = models.Dense(384, dims, bias=False, activation_function=torch.nn.Identity())
    SentenceTransformer(modules=[*base_embedder.model, dense], device="cpu").save(str(folder))
    return folder


@pytest.fixture(scope="module")
def small_model(tmp_path_factory, base_embedder) -> Path:
    """A 128-dimensional model."""
    return _base_with_dense(tmp_path_factory.mktemp("small") / "minilm-128", base_embedder, 128, seed=0)


@pytest.fixture(scope="module")
def twisted_model(tmp_path_factory, base_embedder) -> Path:
    """Another 384-dimensional model, with vectors other than the base's."""
    return _base_with_dense(tmp_path_factory.mktemp("twisted") / "minilm-twisted", base_embedder, 384, seed=1)


@pytest.fixture(scope="module")
def cross_encoder(tmp_path_factory) -> Path:
    """A real cross-encoder: the base encoder with a seeded one-logit head."""
    import torch
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("cross") / "tiny-cross"
    CrossEncoder(resolve_model_path("base")[0], num_labels=1, local_files_only=True).save(str(path))
    return path


@pytest.fixture(scope="module")
def server(tmp_path_factory, small_model, twisted_model, cross_encoder):
    data = tmp_path_factory.mktemp("server")
    registry = ModelRegistry(data / "models")
    base = Path(resolve_model_path("base")[0])
    registry.register("small-embed", "embedder", path=small_model, record=describe_model_folder(small_model, "embedder"))
    registry.register("swap-embed", "embedder", path=small_model, record={"dims": 128})
    registry.register("swap-embed", "embedder", path=base, record={"dims": 384})
    registry.register("swap-embed", "embedder", path=twisted_model, record={"dims": 384})
    registry.promote("swap-embed@1")
    registry.register("tiny-cross", "reranker", path=cross_encoder)
    registry.close()
    srv = ModelServer(data, ["base", "small-embed@1", "swap-embed@prod", "tiny-cross@1"],
                      env={"UNIRANK_SERVING__REGISTRY_POLL_S": "0.5"})
    srv.data_dir = data  # type: ignore[attr-defined]
    try:
        yield srv.wait_ready()
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def client_settings(tmp_path_factory) -> Settings:
    data = tmp_path_factory.mktemp("client")
    return Settings(_env_file=None, data_dir=data / "data")


def _register(settings: Settings, name: str, role: str, url: str, **endpoint) -> str:
    """As `unirank models register NAME --endpoint URL` does."""
    record = describe_remote(Endpoint(url=url, role=role, **endpoint), settings)
    registry = ModelRegistry(settings.models_dir)
    try:
        return registry.register(name, role, record=record).ref
    finally:
        registry.close()


def _with(settings: Settings, **changes) -> Settings:
    copy = settings.model_copy(deep=True)
    for dotted, value in changes.items():
        section, _, field = dotted.partition("__")
        setattr(getattr(copy, section), field, value) if field else setattr(copy, section, value)
    return copy


@pytest.fixture(scope="module")
def remote(server, client_settings):
    """Remote versions registered against the module server, by name."""
    s = client_settings
    return {
        "openai": _register(s, "r-openai", "embedder", server.url, api="openai", remote_model="base"),
        "tei": _register(s, "r-tei", "embedder", server.url, api="tei", remote_model="base"),
        "rerank-tei": _register(s, "r-rerank-tei", "reranker", server.url, api="tei", remote_model="base"),
        "rerank-cohere": _register(s, "r-rerank-cohere", "reranker", server.url, api="cohere", remote_model="base"),
        "cross-tei": _register(s, "r-cross-tei", "reranker", server.url, api="tei", remote_model="tiny-cross@1"),
        "cross-cohere": _register(s, "r-cross-cohere", "reranker", server.url, api="cohere",
                                  remote_model="tiny-cross@1"),
        "small": _register(s, "r-small", "embedder", server.url, api="tei", remote_model="small-embed@1"),
    }


@pytest.fixture(scope="module")
def indexes(client_settings, remote, base_embedder):
    """The sample docs indexed in process ('local') and through the server ('remote')."""
    local = Unirank(_with(client_settings))
    local.__dict__["embedder"] = base_embedder
    local.ingest(str(SAMPLES), "local")
    through = Unirank(_with(client_settings, embedder__model="r-openai", reranker__model="r-rerank-tei"))
    report = through.ingest(str(SAMPLES), "remote")
    assert len(report.ingested) >= 6 and not report.failed
    yield local, through
    local.close()
    through.close()


# -- registration ---------------------------------------------------------------------------------
def test_cli_registers_an_endpoint_with_what_it_probed(server, tmp_path):
    env = without_unirank_settings(os.environ)
    env.update(HF_HUB_OFFLINE="1", UNIRANK_DATA_DIR=str(tmp_path / "data"), COLUMNS="200", MY_TOKEN="s3cret")

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "unirank.cli.main", "models", *args], env=env,
                              capture_output=True, text=True, timeout=300)

    proc = cli("register", "edge", "--endpoint", server.url, "--role", "embedder", "--api", "tei",
               "--remote-model", "base", "--token-env", "MY_TOKEN")
    assert proc.returncode == 0, proc.stderr
    assert "edge@1" in proc.stdout and "384 dims" in proc.stdout
    registry = ModelRegistry(tmp_path / "data" / "models")
    mv = registry.get("edge@1")
    registry.close()
    assert mv.path is None
    assert {k: mv.record[k] for k in ("endpoint", "api", "remote_model", "dims", "max_seq_length",
                                      "tokenizer", "token_env", "token_file")} == {
        "endpoint": server.url, "api": "tei", "remote_model": "base", "dims": 384,
        "max_seq_length": 256, "tokenizer": "base", "token_env": "MY_TOKEN", "token_file": None}
    assert "s3cret" not in str(mv.record)

    dead = f"http://127.0.0.1:{free_port()}"
    proc = cli("register", "gone", "--endpoint", dead, "--role", "reranker")
    assert proc.returncode != 0 and "Cannot reach" in proc.stderr and "unirank serve models" in proc.stderr
    with pytest.raises(RemoteModelError, match="A reranker endpoint speaks tei or cohere, not 'openai'"):
        Endpoint(url=server.url, api="openai", role="reranker")


def test_registration_without_a_model_id_uses_the_server_default_and_refuses_unknown_ids(server, tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path)
    # Three embedders are served, so none is picked: requests omit `model` and get the default (base),
    # whose window is recorded.
    record = describe_endpoint(Endpoint(url=server.url, api="openai", role="embedder"), settings.remote)
    assert record["remote_model"] is None and record["dims"] == 384 and record["max_seq_length"] == 256
    started = time.perf_counter()
    with pytest.raises(RemoteModelError, match=r"HTTP 404.*'nope' is not served here"):
        describe_endpoint(Endpoint(url=server.url, api="tei", role="embedder", remote_model="nope"),
                          settings.remote)
    assert time.perf_counter() - started < 2  # a 4xx is not retried


def test_a_bare_model_name_finds_the_listed_model_as_the_server_does(server, tmp_path):
    """The server answers `small-embed` with small-embed@1; registration looked for that exact id in
    the listing, missed it, and recorded the default 512-token window for a 256-token model."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    for name in ("small-embed", "small-embed@1"):
        record = describe_endpoint(Endpoint(url=server.url, api="tei", role="embedder", remote_model=name),
                                   settings.remote)
        assert (record["remote_model"], record["dims"], record["max_seq_length"]) == (name, 128, 256)


def test_an_openai_style_base_url_ending_in_v1_names_the_same_server(server, tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path)
    record = describe_endpoint(Endpoint(url=f"{server.url}/v1/", api="openai", role="embedder",
                                        remote_model="base"), settings.remote)
    assert record["endpoint"] == server.url and record["dims"] == 384
    with pytest.raises(RemoteModelError, match="names no host"):
        Endpoint(url="http:///v1", api="openai", role="embedder")


# -- same model, same answers --------------------------------------------------------------------
@pytest.mark.parametrize("api", ["openai", "tei"])
def test_remote_vectors_equal_in_process_vectors(client_settings, remote, base_embedder, api):
    embedder = load_embedder(_with(client_settings, embedder__model=remote[api]))
    try:
        assert isinstance(embedder, RemoteEmbedder) and embedder.signature.dims == 384
        vectors = embedder.embed_documents(TEXTS)
        assert vectors.dtype == np.float32 and vectors.shape == (3, 384)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
        np.testing.assert_allclose(vectors, base_embedder.embed_documents(TEXTS), atol=1e-5)
        np.testing.assert_allclose(embedder.embed_query(QUERIES[0]), base_embedder.embed_query(QUERIES[0]),
                                   atol=1e-5)
    finally:
        embedder.close()


def test_large_ingestion_batches_are_split_into_requests(client_settings, remote, base_embedder, server):
    settings = _with(client_settings, embedder__model=remote["tei"])
    settings.remote.batch_inputs = 7
    embedder = load_embedder(settings)

    def embed_requests() -> float:
        text = httpx.get(f"{server.url}/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("unirank_requests_total") and 'endpoint="/embed"' in line)

    texts = [f"passage number {i} about backups" for i in range(30)]
    before = embed_requests()
    vectors = embedder.embed_documents(texts)
    embedder.close()
    assert embed_requests() - before == 1 + 5  # the first probe, then ceil(30 / 6): each carries the probe
    np.testing.assert_allclose(vectors, base_embedder.embed_documents(texts), atol=1e-5)


@pytest.mark.parametrize("mode", ["knn", "hybrid"])
def test_search_through_the_server_equals_in_process_search(indexes, mode):
    local, through = indexes
    for query in QUERIES:
        a = local.search(query, "local", mode=mode, top_k=5, rerank=False)
        b = through.search(query, "remote", mode=mode, top_k=5, rerank=False)
        assert [h.id for h in b.hits] == [h.id for h in a.hits]
        np.testing.assert_allclose([h.score for h in b.hits], [h.score for h in a.hits], atol=1e-5)


def test_a_closed_client_searches_again_through_the_server(client_settings, remote, indexes):
    """close() released the remote models' connection pools for good: the next search failed with httpx's
    "Cannot send a request, as the client has been closed" instead of connecting again."""
    ur = Unirank(_with(client_settings, embedder__model="r-openai", reranker__model="r-rerank-tei"))
    before = ur.search(QUERIES[0], "remote", top_k=3, rerank=True)
    ur.close()
    after = ur.search(QUERIES[0], "remote", top_k=3, rerank=True)
    ur.close()
    assert [h.id for h in after.hits] == [h.id for h in before.hits] and not after.degraded


@pytest.mark.parametrize("api", ["rerank-tei", "rerank-cohere"])
def test_remote_rerank_equals_in_process_rerank(indexes, remote, client_settings, api):
    local, through = indexes
    settings = _with(client_settings, reranker__model=remote[api])
    settings.remote.rerank_timeout_s = 60  # 50 passages on a busy 2-core machine; timeouts are tested below
    reranker = load_reranker(settings)
    assert isinstance(reranker, RemoteReranker)
    through.searcher.reranker = reranker
    local.searcher.rerank_top_k = through.searcher.rerank_top_k = 20  # fewer passages: a faster test
    try:
        for query in QUERIES:
            a = local.search(query, "local", top_k=5, rerank=True)
            b = through.search(query, "remote", top_k=5, rerank=True)
            assert b.reranked and not b.degraded
            assert [h.id for h in b.hits] == [h.id for h in a.hits]
            np.testing.assert_allclose([h.scores["rerank"] for h in b.hits],
                                       [h.scores["rerank"] for h in a.hits], atol=1e-5)
    finally:
        local.searcher.rerank_top_k = through.searcher.rerank_top_k = 50
        reranker.close()


@pytest.mark.parametrize("api", ["cross-tei", "cross-cohere"])
def test_a_remote_cross_encoder_scores_what_it_scores_in_process(remote, client_settings, cross_encoder, api):
    """Probabilities both ways: the blend weight and the chat's threshold were set on them."""
    from unirank.models.reranker import CrossEncoderReranker

    settings = _with(client_settings, reranker__model=remote[api])
    settings.remote.rerank_timeout_s = 60
    reranker = load_reranker(settings)
    try:
        assert isinstance(reranker, RemoteReranker)
        local = CrossEncoderReranker(str(cross_encoder), name="tiny-cross").score(QUERIES[0], TEXTS)
        np.testing.assert_allclose(reranker.score(QUERIES[0], TEXTS), local, atol=1e-5)
    finally:
        reranker.close()


def test_a_remote_bi_encoder_reranker_is_held_to_the_cosine_threshold_as_in_process(indexes, remote,
                                                                                      client_settings, base_embedder):
    """A unirank server reranks with `base` by cosine (scores below 0 too), but the chat held the remote
    reranker's scores to the cross-encoder threshold (0.5): "How much does the team plan cost?" (best passage
    0.44) was "not covered" through the endpoint and answered with `reranker.model = base` in process."""
    from unirank.chat.service import ChatService

    registry = ModelRegistry(client_settings.models_dir)
    scores = {key: registry.get(remote[key]).record.get("scores") for key in ("rerank-tei", "rerank-cohere", "cross-tei")}
    registry.close()
    assert scores == {"rerank-tei": "cosine", "rerank-cohere": "cosine", "cross-tei": "probability"}
    answers = {}
    for model in ("base", remote["rerank-tei"]):
        settings = _with(client_settings, reranker__model=model)
        settings.remote.rerank_timeout_s = 60  # a busy 2-core machine
        with Unirank(settings) as ur:
            ur.__dict__["embedder"] = base_embedder
            answers[model] = ChatService(ur).ask("How much does the team plan cost?", "local")
    here, through = answers["base"], answers[remote["rerank-tei"]]
    assert 0.30 < here.relevance < 0.5  # between the two thresholds: the case that split
    assert through.relevance == pytest.approx(here.relevance, abs=1e-5)
    assert through.threshold == here.threshold == client_settings.chat.min_score_cosine
    assert here.grounded and (through.grounded, through.answer) == (True, here.answer)


def test_a_remote_reranker_registered_before_scores_were_recorded_is_judged_by_its_model_id(
        server, remote, client_settings):
    """A record without `scores` still loads: `base` or an embedder registered here is served to rerank by
    cosine; a model id this registry does not know (or none) keeps the cross-encoder threshold, as before."""
    from unirank.chat.retrieval import scores_cosine

    registry = ModelRegistry(client_settings.models_dir)
    refs = {remote_model: registry.register(f"old-rerank-{i}", "reranker", record={
                "endpoint": server.url, "api": "tei", "remote_model": remote_model}).ref
            for i, remote_model in enumerate(["base", remote["openai"], "tiny-cross@1", None])}
    registry.close()
    judged = {}
    for remote_model, ref in refs.items():
        reranker = load_reranker(_with(client_settings, reranker__model=ref))
        judged[remote_model] = scores_cosine(reranker)
        reranker.close()
    assert judged == {"base": True, remote["openai"]: True, "tiny-cross@1": False, None: False}


# -- dimensions are checked against the live endpoint before any write -----------------------------
def _new_doc(tmp_path: Path) -> str:
    folder = tmp_path / "new-docs"
    folder.mkdir(parents=True)
    (folder / "vpn.md").write_text("# VPN\n\nConnect to the VPN before opening the admin console.\n")
    return str(folder)


def test_an_endpoint_serving_a_model_registered_here_searches_its_indexes(indexes, remote, client_settings):
    """r-openai serves `base`, which answers the probe text as it does here: the index built in process
    is searched through the endpoint, and the one built through it in process, without re-embedding."""
    local, through = indexes
    registry = ModelRegistry(client_settings.models_dir)
    served = {key: registry.get(remote[key]).record.get("serves") for key in ("openai", "tei", "small")}
    registry.close()
    assert served == {"openai": "all-MiniLM-L6-v2@base", "tei": "all-MiniLM-L6-v2@base", "small": None}
    for query in QUERIES:
        expected = [h.id for h in local.search(query, "local", mode="knn", top_k=5, rerank=False).hits]
        assert [h.id for h in through.search(query, "local", mode="knn", top_k=5, rerank=False).hits] == expected
    with Unirank(_with(client_settings)) as here:  # `base` loaded with this registry: it knows r-openai
        assert "r-openai@1" in here.embedder.same_vectors_as
        expected = [h.id for h in through.search(QUERIES[0], "remote", mode="knn", top_k=5, rerank=False).hits]
        assert [h.id for h in here.search(QUERIES[0], "remote", mode="knn", top_k=5, rerank=False).hits] == expected


def test_an_embedder_of_other_dims_is_refused_before_any_write(indexes, client_settings, remote, small_model,
                                                               tmp_path):
    _, through = indexes
    before = through.index_info("remote").to_dict()
    states = through.backend.source_states("remote")
    registry = ModelRegistry(client_settings.models_dir)
    registry.register("local-small", "embedder", path=small_model,
                      record=describe_model_folder(small_model, "embedder"))
    registry.close()
    for model, dims in ((remote["small"], 128), ("local-small", 128)):
        ur = Unirank(_with(client_settings, embedder__model=model))
        with pytest.raises(DimensionMismatchError, match=f"384 dimensions.*produces {dims} dimensions"):
            ur.ingest(_new_doc(tmp_path / model.replace("@", "-")), "remote")
        ur.close()
    assert through.index_info("remote").to_dict() == before
    assert through.backend.source_states("remote") == states


def test_an_endpoint_that_now_serves_other_dims_is_refused(server, client_settings, tmp_path):
    ref = _register(client_settings, "r-swap", "embedder", server.url, api="openai", remote_model="swap-embed@prod")
    ur = Unirank(_with(client_settings, embedder__model=ref))
    ur.ingest(_new_doc(tmp_path / "a"), "swap")
    assert ur.index_info("swap").model.dims == 128
    before = ur.index_info("swap").to_dict()
    ur.close()

    registry = ModelRegistry(server.data_dir / "models")
    registry.promote("swap-embed@2")  # the server hot-swaps to the 384-dimensional version
    registry.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        served = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
        if served["swap-embed@prod"]["dims"] == 384:
            break
        time.sleep(0.3)
    else:
        pytest.fail("the server did not swap swap-embed@prod")

    ur = Unirank(_with(client_settings, embedder__model=ref))
    with pytest.raises(RemoteModelError, match="now serves 384-dimensional vectors.*registered with 128"):
        ur.ingest(_new_doc(tmp_path / "b"), "swap")
    assert ur.index_info("swap").to_dict() == before
    ur.close()


def _serve_version(server, ref: str) -> None:
    """Promote ``ref`` to prod in the server's registry and wait for its hot swap."""
    registry = ModelRegistry(server.data_dir / "models")
    registry.promote(ref, force=True)
    registry.close()
    version = ref.partition("@")[2]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        served = {m["id"]: m for m in httpx.get(f"{server.url}/v1/models").json()["data"]}
        if str(served["swap-embed@prod"]["version"]) == version:
            return
        time.sleep(0.3)
    pytest.fail(f"the server did not swap swap-embed@prod to {ref}")


def test_an_endpoint_that_now_serves_another_model_of_the_same_dims_is_refused(server, client_settings, tmp_path):
    """Promoting a tuned version swaps 384 dims for 384: only the vectors tell the models apart."""
    _serve_version(server, "swap-embed@2")
    ref = _register(client_settings, "r-same-dims", "embedder", server.url, api="tei", remote_model="swap-embed@prod")
    ur = Unirank(_with(client_settings, embedder__model=ref))
    ur.ingest(_new_doc(tmp_path / "a"), "same-dims")
    assert ur.search("a new document", "same-dims", mode="knn", rerank=False).hits
    before = ur.index_info("same-dims").to_dict()
    ur.close()

    _serve_version(server, "swap-embed@3")
    ur = Unirank(_with(client_settings, embedder__model=ref))
    with pytest.raises(RemoteModelError, match=r"now serves other vectors than when r-same-dims@1 was registered"):
        ur.ingest(_new_doc(tmp_path / "b"), "same-dims")
    with pytest.raises(RemoteModelError, match="other vectors"):
        ur.search("a new document", "same-dims", mode="knn", rerank=False)
    assert ur.index_info("same-dims").to_dict() == before
    ur.close()


def test_a_long_running_process_notices_a_hot_swap(server, client_settings, tmp_path):
    """The app server or a notebook keeps one embedder: it probed once, then searched the swapped
    model's vectors (meaningless negative scores) and wrote them into the index."""
    _serve_version(server, "swap-embed@2")
    ref = _register(client_settings, "r-long-lived", "embedder", server.url, api="tei",
                    remote_model="swap-embed@prod")
    ur = Unirank(_with(client_settings, embedder__model=ref, remote__verify_interval_s=1.0))
    ur.ingest(_new_doc(tmp_path / "a"), "long-lived")
    assert ur.search("a new document", "long-lived", mode="knn", rerank=False).hits
    before = ur.index_info("long-lived").to_dict()
    _serve_version(server, "swap-embed@3")
    # Within the interval: every request of an ingestion carries the probe text.
    with pytest.raises(RemoteModelError, match="other vectors"):
        ur.ingest(_new_doc(tmp_path / "b"), "long-lived")
    time.sleep(1.0)
    with pytest.raises(RemoteModelError, match="other vectors"):
        ur.search("a new document", "long-lived", mode="knn", rerank=False)
    assert ur.index_info("long-lived").to_dict() == before
    ur.close()


# -- graceful degradation ------------------------------------------------------------------------
def test_a_rerank_timeout_returns_unreranked_results_marked_degraded(indexes, remote, client_settings, caplog):
    _, through = indexes
    settings = _with(client_settings, reranker__model=remote["rerank-tei"])
    settings.remote.rerank_timeout_s = 0.001
    through.searcher.reranker = load_reranker(settings)
    plain = through.search(QUERIES[1], "remote", top_k=5, rerank=False)
    with caplog.at_level(logging.WARNING, logger="unirank.search.searcher"):
        results = through.search(QUERIES[1], "remote", top_k=5, rerank=True)
    assert results.timings_ms["rerank"] < 500  # a timeout is not retried
    assert results.degraded and not results.reranked
    assert [h.id for h in results.hits] == [h.id for h in plain.hits]
    assert "rerank" not in results.hits[0].scores and results.to_dict()["degraded"] is True
    failed = [r.getMessage() for r in caplog.records if "r-rerank-tei@1 failed" in r.getMessage()]
    assert failed and "marked degraded" in failed[0]
    # The setting that applied, at its value: it said "within 0.000986 s", what was left of it for the request.
    assert "within remote.rerank_timeout_s (0.001 s) in all" in failed[0], failed[0]


def test_a_dead_rerank_endpoint_degrades_fast(indexes, client_settings):
    _, through = indexes
    registry = ModelRegistry(client_settings.models_dir)
    dead = f"http://127.0.0.1:{free_port()}"
    ref = registry.register("r-dead", "reranker", record={"endpoint": dead, "api": "cohere"}).ref
    registry.close()
    through.searcher.reranker = load_reranker(_with(client_settings, reranker__model=ref))
    results = through.search(QUERIES[0], "remote", top_k=3, rerank=True)
    assert results.degraded and not results.reranked and len(results.hits) == 3
    # retries (0.2 s, 0.4 s) on refused connections, stopped by remote.rerank_timeout_s (2 s)
    assert 600 <= results.timings_ms["rerank"] < 2000


def test_the_chat_answers_when_the_rerank_endpoint_is_down(indexes, client_settings, base_embedder):
    """Before, search degraded but the offline answerer then scored sentences with the dead reranker: the
    answer began ("From the documents:") and failed."""
    from unirank.chat.service import ChatService

    local, _ = indexes
    registry = ModelRegistry(client_settings.models_dir)
    ref = registry.register("r-down", "reranker",
                            record={"endpoint": f"http://127.0.0.1:{free_port()}", "api": "tei"}).ref
    registry.close()
    with Unirank(_with(client_settings, reranker__model=ref)) as ur:
        ur.__dict__["embedder"] = base_embedder
        answer = ChatService(ur).ask("How often are backups taken?", "local")
    assert answer.answer.startswith("From the documents:") and answer.citations
    assert answer.citations[0].title == "Backup and restore policy"


def test_the_app_server_answers_502_when_the_embedding_endpoint_of_an_index_is_down(client_settings):
    """It answered 400 (invalid_request_error): the request was fine, the model server behind it was not."""
    from fastapi.testclient import TestClient

    from unirank.app.server import create_app
    from unirank.search.types import ModelSignature

    registry = ModelRegistry(client_settings.models_dir)
    registry.register("r-gone", "embedder", record={"endpoint": f"http://127.0.0.1:{free_port()}", "api": "tei",
                                                    "dims": 384})
    registry.close()
    with Unirank(_with(client_settings)) as ur:
        ur.backend.create_index("gone", ModelSignature(name="r-gone", version="1", dims=384))
        with TestClient(create_app(unirank=ur, warm_up=False)) as http:
            refused = http.post("/v1/search", json={"query": "backups", "index": "gone", "mode": "knn"})
        ur.delete_index("gone")
    assert refused.status_code == 502 and refused.json()["error"]["type"] == "upstream_error"
    assert "Cannot reach" in refused.json()["error"]["message"]


# -- token rotation and retries ------------------------------------------------------------------
def test_tokens(tmp_path, monkeypatch):
    token_file = tmp_path / "token"
    source = TokenSource(file=token_file)
    with pytest.raises(RemoteModelError, match="Cannot read the token file"):
        source.get()
    token_file.write_text("# rotated 2026-11-25\nfirst\n")
    assert source.get() == "first"
    token_file.write_text("second-token\n")
    assert source.get() == "second-token"
    token_file.write_text("")  # a rewrite in place, caught between truncate and write: the last token stays
    assert source.get() == "second-token"
    token_file.write_text("third\n")
    assert source.get() == "third"
    token_file.write_text("")
    with pytest.raises(RemoteModelError, match="empty"):  # nothing read before: nothing to fall back on
        TokenSource(file=token_file).get()
    monkeypatch.delenv("UNIRANK_TEST_TOKEN", raising=False)
    with pytest.raises(RemoteModelError, match="UNIRANK_TEST_TOKEN .* is not set"):
        TokenSource(env="UNIRANK_TEST_TOKEN").get()
    monkeypatch.setenv("UNIRANK_TEST_TOKEN", "from-env")
    assert TokenSource(env="UNIRANK_TEST_TOKEN").get() == "from-env"


def _write_keys(path: Path, lines: list[str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("\n".join(lines) + "\n")
    tmp.replace(path)


def test_retries_until_the_server_is_up_then_rotates_tokens_without_a_failure(tmp_path, base_embedder,
                                                                              monkeypatch, caplog):
    keys, token = tmp_path / "keys", tmp_path / "client-token"
    _write_keys(keys, ["tok-old"])
    token.write_text("tok-old\n")
    data = tmp_path / "server"
    data.mkdir()
    srv = ModelServer(data, ["base"], env={"UNIRANK_SERVING__API_KEYS_FILE": str(keys)})
    settings = Settings(_env_file=None, data_dir=tmp_path / "client")
    settings.remote.retries, settings.remote.backoff_s = 12, 0.2
    endpoint = Endpoint(url=srv.url, api="openai", role="embedder", token_file=str(token), remote_model="base")
    embedder = RemoteEmbedder(endpoint, settings.remote, name="r", version="1", dims=384, max_seq_length=256,
                              tokenizer_path=resolve_model_path("base")[0])
    try:
        # The server process is still starting: refused connections, then 503 while it loads.
        with caplog.at_level(logging.INFO, logger="unirank.models.remote"):
            first = embedder.embed_query("backup policy")
        assert any("retry" in r.message for r in caplog.records)
        np.testing.assert_allclose(first, base_embedder.embed_query("backup policy"), atol=1e-5)

        failures: list[Exception] = []
        calls = [0]
        stop = threading.Event()

        def keep_calling() -> None:
            while not stop.is_set():
                try:
                    embedder.embed_query(f"query {calls[0]}")
                    calls[0] += 1
                except Exception as exc:  # noqa: BLE001 - any failure fails the test
                    failures.append(exc)

        worker = threading.Thread(target=keep_calling)
        worker.start()
        soon = (datetime.now(timezone.utc) + timedelta(seconds=60)).isoformat()
        for step in (lambda: _write_keys(keys, [f"tok-old {soon}", "tok-new"]),  # overlap window
                     lambda: token.write_text("tok-new\n"),                       # the client rotates
                     lambda: _write_keys(keys, ["tok-new"])):                     # the old one is revoked
            step()
            time.sleep(1.0)
        stop.set()
        worker.join(30)
        assert failures == [] and calls[0] >= 5
        assert httpx.post(f"{srv.url}/embed", json={"inputs": "x"},
                          headers={"Authorization": "Bearer tok-old"}).status_code == 401

        # A rotation the mtime cannot show (same size, same mtime): the 401 makes the client re-read.
        stamp = token.stat()
        _write_keys(keys, ["tok-nxt"])
        time.sleep(0.2)
        token.write_text("tok-nxt\n")
        os.utime(token, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
        assert embedder.client.tokens._stamp == (stamp.st_mtime_ns, stamp.st_size)
        embedder.embed_query("after a silent rotation")
        assert embedder.client.tokens._cached == "tok-nxt"

        # A reranker reading its token from the environment; without it, a clear error.
        reranker = RemoteReranker(Endpoint(url=srv.url, api="cohere", role="reranker", token_env="R_TOKEN"),
                                  settings.remote, name="r")
        monkeypatch.setenv("R_TOKEN", "tok-nxt")
        assert len(reranker.score("backups", ["nightly backups", "pricing"])) == 2
        monkeypatch.setenv("R_TOKEN", "tok-old")
        with pytest.raises(RemoteModelError, match=r"HTTP 401.*check the token in \$R_TOKEN"):
            reranker.score("backups", ["nightly backups"])
        reranker.close()
    finally:
        embedder.close()
        srv.stop()


def test_a_5xx_is_retried_with_backoff_then_reported(tmp_path, caplog):
    """A server whose model failed to load answers 503 to every model call, with no Retry-After (it
    is not going to recover): the client backs off on its own schedule, then says what the server said."""
    data = tmp_path / "server"
    broken = tmp_path / "broken"  # registered, so the ref resolves; its files do not load
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    registry = ModelRegistry(data / "models")
    registry.register("broken-embed", "embedder", path=broken)
    registry.close()
    srv = ModelServer(data, ["broken-embed@1"])
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{srv.url}/health", timeout=2).status_code == 503:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        settings = Settings(_env_file=None, data_dir=tmp_path / "client")
        settings.remote.retries, settings.remote.backoff_s = 2, 0.05
        embedder = RemoteEmbedder(Endpoint(url=srv.url, api="tei", role="embedder"), settings.remote, name="r",
                                  version="1", dims=384, max_seq_length=256, tokenizer_path="base")
        started = time.perf_counter()
        with caplog.at_level(logging.INFO, logger="unirank.models.remote"), \
                pytest.raises(RemoteModelError, match=r"HTTP 503 \(The models failed to load.*after 3 attempt"):
            embedder.embed_query("anything")
        assert time.perf_counter() - started < 1.5  # waits of 0.05 and 0.1 s: no Retry-After to honour
        assert sum("HTTP 503" in r.message for r in caplog.records) == 2
        embedder.close()
    finally:
        srv.stop()


def test_a_429_is_retried_after_the_wait_the_server_asks_for(tmp_path, caplog):
    """A rate-limited endpoint (a gateway, a hosted TEI) says how long to wait in Retry-After; retrying on
    the client's own 0.01 s schedule would spend every attempt inside the limit window."""
    from serving_helpers import JsonHandler, http_endpoint

    seen: list[float] = []

    class RateLimited(JsonHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = self.json_body()
            seen.append(time.perf_counter())
            if len(seen) == 1:
                return self.answer(429, {"error": "rate limited"}, {"Retry-After": "1"})
            self.answer(200, [[float(len(t)), 1.0, 0.0] for t in body["inputs"]])

    settings = Settings(_env_file=None, data_dir=tmp_path / "client")
    settings.remote.retries, settings.remote.backoff_s = 3, 0.01
    with http_endpoint(RateLimited) as url:
        embedder = RemoteEmbedder(Endpoint(url=url, api="tei", role="embedder"), settings.remote, name="r",
                                  version="1", dims=3, max_seq_length=256, tokenizer_path="base")
        try:
            with caplog.at_level(logging.INFO, logger="unirank.models.remote"):
                vector = embedder.embed_query("backup")
        finally:
            embedder.close()
    assert len(seen) == 3  # the refused probe, the probe again, the query
    assert seen[1] - seen[0] >= 0.95, f"retried {seen[1] - seen[0]:.2f} s after a 429 asking for 1 s"
    np.testing.assert_allclose(vector, np.array([6.0, 1.0, 0.0]) / np.sqrt(37.0), rtol=1e-6)
    assert any("HTTP 429" in r.message and "retry 1 in 1.00 s" in r.message for r in caplog.records), \
        [r.message for r in caplog.records]


@pytest.fixture(scope="module")
def limited_server(tmp_path_factory):
    """Two embedders (the base model, first, so the default, and the same model from its folder) and no
    reranker, behind small per-request limits: 16 inputs of 128 tokens, 3 documents a rerank."""
    server = ModelServer(tmp_path_factory.mktemp("limited"), ["base", resolve_model_path("base")[0]], env={
        "UNIRANK_SERVING__MAX_INPUT_TOKENS": "128", "UNIRANK_SERVING__MAX_INPUTS": "16",
        "UNIRANK_SERVING__MAX_RERANK_DOCUMENTS": "3"})
    try:
        yield server.wait_ready()
    finally:
        server.stop()


def _requests_to(server, route: str) -> float:
    """Requests the server has answered on ``route``, from its Prometheus counters."""
    text = httpx.get(f"{server.url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("unirank_requests_total") and f'endpoint="{route}"' in line)


def _record(settings: Settings, ref: str) -> dict:
    registry = ModelRegistry(settings.models_dir)
    try:
        return registry.get(ref).record
    finally:
        registry.close()


def test_registration_records_the_limits_the_server_enforces(limited_server, tmp_path):
    """A server limited to 16 inputs of 128 tokens listed the model's 256-token window: registration
    recorded it, and ingestion then got 413s it could do nothing about."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "client")
    ref = _register(settings, "edge", "embedder", limited_server.url, api="tei", remote_model="base")
    record = _record(settings, ref)
    assert (record["max_seq_length"], record["max_inputs"]) == (128, 16)
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(3):  # ~40 chunks of at most 128 tokens
        (docs / f"long-{i}.txt").write_text(" ".join(f"Paragraph {i}.{j} on wombat burrows and tunnel "
                                                     f"depth in clay soil." for j in range(150)))
    with Unirank(_with(settings, embedder__model=ref)) as ur:
        report = ur.ingest(str(docs), "limited")
    assert report.ok and report.chunks_written > 16, report.to_dict()


def test_a_rerank_of_more_passages_than_the_server_takes_is_split_into_requests(limited_server, tmp_path,
                                                                                 base_embedder):
    """The server reranks at most 3 documents a request: all the passages went in one, the server answered
    413, and every reranked search came back un-reranked, marked degraded. They go in several now."""
    settings = Settings(_env_file=None, data_dir=tmp_path / "client")
    settings.remote.rerank_timeout_s = 60  # a busy 2-core machine; the deadline is tested elsewhere
    passages = [f"Passage {i}: backups of the {name} database run nightly and are kept {i + 2} weeks."
                for i, name in enumerate(["billing", "auth", "search", "audit", "mail", "chat", "wiki", "ci"])]
    local = load_reranker(settings, base_embedder)  # the base model, in process
    expected = local.score(QUERIES[0], passages)
    refs = {}
    for api, route in (("tei", "/rerank"), ("cohere", "/v1/rerank")):
        refs[api] = _register(settings, f"rr-{api}", "reranker", limited_server.url, api=api, remote_model="base")
        assert _record(settings, refs[api])["max_rerank_documents"] == 3
        reranker = load_reranker(_with(settings, reranker__model=refs[api]))
        before = _requests_to(limited_server, route)
        try:
            np.testing.assert_allclose(reranker.score(QUERIES[0], passages), expected, atol=1e-5)
        finally:
            reranker.close()
        assert _requests_to(limited_server, route) - before == 3  # 3 + 3 + 2 passages

    with Unirank(_with(settings, reranker__model=refs["tei"])) as ur:
        ur.__dict__["embedder"] = base_embedder
        ur.ingest(str(SAMPLES), "docs")
        results = ur.search(QUERIES[0], "docs", top_k=5, rerank=True)
    assert results.reranked and not results.degraded
    passages = [h.chunk.embedding_input() for h in results.hits]
    np.testing.assert_allclose([h.scores["rerank"] for h in results.hits], local.score(QUERIES[0], passages),
                               atol=1e-5)


def test_registration_without_a_model_id_records_the_limits_of_the_server_default(limited_server, tmp_path,
                                                                                  base_embedder):
    """Two embedders and no reranker served: registration without --remote-model recorded neither the window
    nor the request limits, so ingestion got 413s ("at most 16 per request") and every rerank degraded."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    settings.remote.rerank_timeout_s = 60  # a busy 2-core machine; the deadline is tested elsewhere
    embedder = _record(settings, _register(settings, "edge", "embedder", limited_server.url, api="openai"))
    assert (embedder["remote_model"], embedder["max_seq_length"], embedder["max_inputs"]) == (None, 128, 16)
    remote_embedder = load_embedder(_with(settings, embedder__model="edge@1"))
    try:  # 16 + 4 texts (unlisted limits allowed 32 in one request: a 413)
        texts = [f"text {i} on wombat burrows" for i in range(20)]
        np.testing.assert_allclose(remote_embedder.embed_documents(texts), base_embedder.embed_documents(texts),
                                   atol=1e-5)
    finally:
        remote_embedder.close()
    ref = _register(settings, "edge-rerank", "reranker", limited_server.url, api="tei")
    assert _record(settings, ref)["max_rerank_documents"] == 3
    passages = [f"Passage {i}: the {name} backups run nightly." for i, name in enumerate("abcdefg")]
    reranker = load_reranker(_with(settings, reranker__model=ref))
    try:  # 3 + 3 + 1 passages: the server took them all
        np.testing.assert_allclose(reranker.score(QUERIES[0], passages),
                                   load_reranker(settings, base_embedder).score(QUERIES[0], passages), atol=1e-5)
    finally:
        reranker.close()


def test_registration_against_a_listing_without_a_default_records_its_smallest_limits(tmp_path):
    """A server listing two models without roles (not a unirank server) has no default to tell: none of
    their limits was recorded; the smallest of each is, so no request exceeds whichever model answers."""
    from serving_helpers import JsonHandler, http_endpoint

    class TwoModels(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.answer(200, {"data": [{"id": "wide", "max_seq_length": 512, "max_inputs": 4},
                                       {"id": "narrow", "max_seq_length": 64, "max_inputs": 8}]})

        def do_POST(self) -> None:  # noqa: N802
            texts = self.json_body()["input"]
            self.answer(200, {"data": [{"index": i, "embedding": [1.0, 0.0, 0.0]} for i in range(len(texts))]})

    settings = Settings(_env_file=None, data_dir=tmp_path)
    with http_endpoint(TwoModels) as url:
        record = describe_endpoint(Endpoint(url=url, api="openai", role="embedder"), settings.remote)
    assert (record["remote_model"], record["max_seq_length"], record["max_inputs"]) == (None, 64, 4)


def test_an_endpoint_given_as_a_route_names_the_root_to_register(limited_server, tmp_path):
    """`--endpoint http://host:port/v1/embeddings` failed with `POST /v1/embeddings/v1/embeddings: Not Found`,
    without saying that --endpoint is the server's root URL."""
    settings = Settings(_env_file=None, data_dir=tmp_path)
    for role, api, route in (("embedder", "openai", "/v1/embeddings"), ("embedder", "tei", "/embed"),
                             ("reranker", "tei", "/rerank"), ("reranker", "cohere", "/v1/rerank")):
        with pytest.raises(RemoteModelError, match=rf"HTTP 404.*ends in the route {route}: --endpoint is the "
                                                   rf"server's root URL.*--endpoint {limited_server.url}$"):
            describe_endpoint(Endpoint(url=f"{limited_server.url}{route}", api=api, role=role), settings.remote)
    # A base URL ending in /v1 is the OpenAI client's way of naming the root: still accepted.
    assert describe_endpoint(Endpoint(url=f"{limited_server.url}/v1", api="openai", role="embedder"),
                             settings.remote)["endpoint"] == limited_server.url


def test_a_server_that_lists_no_limits_gets_at_most_32_texts_a_request(tmp_path):
    """Stock text-embeddings-inference takes 32 texts a request (--max-client-batch-size) and has no
    /v1/models to say so: a rerank of 50 passages was a 413 (every search degraded), and ingestion sent
    64 texts (remote.batch_inputs) a request and failed."""
    from serving_helpers import JsonHandler, http_endpoint

    sizes: list[int] = []

    class Tei(JsonHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.answer(404, {"error": "Not Found"})

        def do_POST(self) -> None:  # noqa: N802
            body = self.json_body()
            texts = body.get("inputs") if self.path == "/embed" else body.get("texts")
            if self.path not in ("/embed", "/rerank"):
                return self.answer(404, {"error": "Not Found"})
            sizes.append(len(texts))
            if len(texts) > 32:
                return self.answer(413, {"error": f"batch size {len(texts)} > maximum allowed batch size 32",
                                         "error_type": "validation"})
            if self.path == "/embed":
                return self.answer(200, [[float(len(t)), 1.0, 0.0] for t in texts])
            self.answer(200, [{"index": i, "score": 1.0 / len(t)} for i, t in enumerate(texts)])

    settings = Settings(_env_file=None, data_dir=tmp_path)
    assert settings.remote.batch_inputs > UNLISTED_MAX_INPUTS == 32
    with http_endpoint(Tei) as url:
        record = describe_endpoint(Endpoint(url=url, api="tei", role="reranker"), settings.remote)
        assert "max_rerank_documents" not in record and "max_inputs" not in record
        reranker = RemoteReranker(Endpoint.from_record("reranker", record), settings.remote, name="r")
        passages = [f"passage {'x' * i}" for i in range(50)]
        assert reranker.score("q", passages) == pytest.approx([1.0 / len(p) for p in passages])
        reranker.close()

        embedder = RemoteEmbedder(Endpoint.from_record("embedder", {"endpoint": url, "api": "tei"}), settings.remote,
                                  name="e", version="1", dims=3, max_seq_length=256, tokenizer_path="base")
        texts = [f"text {'y' * i}" for i in range(70)]
        vectors = embedder.embed_documents(texts)
        embedder.close()
    np.testing.assert_allclose(vectors[:, 0] / vectors[:, 1], [len(t) for t in texts], rtol=1e-5)
    assert max(sizes) == 32
    # A lower remote.batch_inputs caps the requests of both roles, for a server stricter still.
    settings.remote.batch_inputs = 5
    assert RemoteReranker(Endpoint.from_record("reranker", record), settings.remote, name="r").per_request == 5


def test_registration_against_a_server_that_cannot_list_its_models_says_so(tmp_path):
    """A listing that answers 503 (loading, or failed to load) was taken for a server without one, and
    the default 512-token window recorded."""
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{}")  # passes the start-up check, fails to load
    server = ModelServer(tmp_path / "server", [str(broken)])
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{server.url}/health", timeout=2).json()["status"] == "error":
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, server.log()
            time.sleep(0.3)
        settings = Settings(_env_file=None, data_dir=tmp_path / "client")
        settings.remote.retries = 0
        with pytest.raises(RemoteModelError, match=r"/v1/models answered HTTP 503 \(The models failed to load"):
            describe_endpoint(Endpoint(url=server.url, api="tei", role="embedder"), settings.remote)
    finally:
        server.stop()


def test_a_remote_reranker_takes_the_blend_weight_of_the_reranker_registered_here_or_the_one_given(
        tmp_path, monkeypatch):
    """`models register edge-rerank --role reranker --endpoint ...` recorded no blend weight, so the remote
    copy of a trained reranker saved with weight 0 (its unirank_reranker.json) was blended at 1.0: its
    scores reordered the results the reranker itself leaves in the hybrid order. (No server: the probe's
    record stands in for one serving `--remote-model` as its listing names it.)"""
    import json

    from typer.testing import CliRunner

    from env_helpers import clear_unirank_settings
    from unirank.cli.main import app
    from unirank.models import loading

    trained = tmp_path / "trained-rerank"  # as `unirank train` saves a cross-encoder: weight 0, chosen on validation
    trained.mkdir()
    (trained / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (trained / "unirank_reranker.json").write_text(json.dumps({"blend_weight": 0.0}))
    settings = Settings(_env_file=None, data_dir=tmp_path / "data")
    registry = ModelRegistry(settings.models_dir)
    registry.register("handbook-rerank", "reranker", path=trained, record={})
    registry.promote("handbook-rerank@1")
    registry.close()

    def probed(endpoint, remote_settings, *, tokenizer="base"):
        model = endpoint.remote_model or "served-default"
        return {"endpoint": endpoint.url, "api": endpoint.api, "token_env": None, "token_file": None,
                "base_model": f"remote:{model}", "remote_model": model, "max_seq_length": 512}

    monkeypatch.setattr(loading, "describe_endpoint", probed)
    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    monkeypatch.setenv("UNIRANK_DATA_DIR", str(settings.data_dir))

    def cli(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["models", *args])
        return result.exit_code, " ".join(result.output.split())

    def registered(name: str, *options: str) -> tuple[dict, str]:
        code, output = cli("register", name, "--role", "reranker", "--endpoint", "http://models:8080", "--api",
                           "tei", *options)
        assert code == 0, output
        return _record(settings, name), output

    record, output = registered("edge-rerank", "--remote-model", "handbook-rerank@prod")
    assert (record["blend_weight"], record["blend_weight_from"]) == (0.0, "handbook-rerank@1")
    assert "blended with the hybrid rank at weight 0.0, that of handbook-rerank@1" in output, output
    reranker = load_reranker(_with(settings, reranker__model="edge-rerank"))
    try:
        assert isinstance(reranker, RemoteReranker) and reranker.blend_weight == 0.0
    finally:
        reranker.close()

    # The alias moves (the server hot-swaps to what it names): the weight follows it, as in-process loading does.
    retrained = tmp_path / "retrained-rerank"
    retrained.mkdir()
    (retrained / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"]}))
    (retrained / "unirank_reranker.json").write_text(json.dumps({"blend_weight": 0.6}))
    with ModelRegistry(settings.models_dir) as registry:
        registry.register("handbook-rerank", "reranker", path=retrained, record={})
        registry.promote("handbook-rerank@2", force=True)
    reranker = load_reranker(_with(settings, reranker__model="edge-rerank"))
    try:
        assert reranker.blend_weight == 0.6
    finally:
        reranker.close()

    record, _ = registered("edge-given", "--remote-model", "elsewhere@3", "--blend-weight", "0.3")
    assert record["blend_weight"] == 0.3 and "blend_weight_from" not in record
    record, output = registered("edge-unknown")  # the server's default model: nothing here to take it from
    assert "blend_weight" not in record
    assert "no blend weight is recorded" in output and "reranker.blend_weight" in output, output
    code, output = cli("show", "edge-unknown@1", "--json")
    assert code == 0 and "its scores replace the hybrid order (weight 1.0) unless reranker.blend_weight" in output
    code, output = cli("register", "edge-embed", "--role", "embedder", "--endpoint", "http://models:8080",
                       "--blend-weight", "0.5")
    assert code == 2 and "--blend-weight is a reranker's" in output, output
    code, output = cli("register", "edge-rerank", "--role", "reranker", "--endpoint", "http://models:8080",
                       "--blend-weight", "1.5")
    assert code == 2 and "1.5" in output, output


@pytest.mark.parametrize("api, bad", [("tei", float("nan")), ("cohere", float("inf"))])
def test_a_rerank_answer_with_a_score_that_is_not_a_number_is_refused(tmp_path, api, bad):
    """A NaN score passed as a score: the search stayed in first-stage order, marked reranked, and its JSON
    carried NaN (the CLI) or null (HTTP)."""
    from serving_helpers import JsonHandler, http_endpoint

    class Scores(JsonHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            texts = self.json_body().get("texts" if api == "tei" else "documents")
            rows = [{"index": i, "score" if api == "tei" else "relevance_score": bad if i == 1 else 0.5}
                    for i in range(len(texts))]
            self.answer(200, rows if api == "tei" else {"results": rows})

    settings = Settings(_env_file=None, data_dir=tmp_path)
    with http_endpoint(Scores) as url:
        reranker = RemoteReranker(Endpoint.from_record("reranker", {"endpoint": url, "api": api}), settings.remote,
                                  name="r")
        try:
            with pytest.raises(RemoteModelError, match=r"sent 1 score\(s\) that are not finite numbers \(e\.g\. "
                                                       rf"{bad}\): check the model behind it"):
                reranker.score("q", ["a", "b", "c"])
        finally:
            reranker.close()


def test_an_endpoint_with_a_user_and_password_is_refused_before_it_is_probed():
    """The registry stored the URL as given and every connection error printed it: the README promises the
    token is never stored, and --token-env/--token-file are how an endpoint's secret is given."""
    from unirank.models.remote import Endpoint, describe_endpoint
    from unirank.settings import RemoteSettings

    endpoint = Endpoint(url="http://bob:hunter2@127.0.0.1:9/v1", api="openai", role="embedder")
    with pytest.raises(RemoteModelError, match=r"http://\*\*\*@127.0.0.1:9 is given with a user and password") as refused:
        describe_endpoint(endpoint, RemoteSettings())
    assert "hunter2" not in str(refused.value) and "--token-env VAR" in str(refused.value)
