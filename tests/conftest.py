"""Shared fixtures: the real bundled base model, loaded once per test session."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from env_helpers import clear_unirank_settings

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def pytest_configure(config: pytest.Config) -> None:
    """A run started in the background of a non-interactive shell (`./scripts/test.sh &`, nohup, some CI
    runners) has SIGINT ignored, and every process it starts inherits that: the Ctrl-C tests' children then
    never saw their interrupt and ran to the end (exit 0, not 130). A handler, unlike SIG_IGN, is not
    inherited across exec, so the children start with Python's own."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def base_embedder():
    from unirank.models.loading import load_embedder
    from unirank.settings import Settings

    return load_embedder(Settings(_env_file=None))


@pytest.fixture()
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Settings isolated from the developer's unirank.toml and UNIRANK_* variables."""
    from unirank.settings import Settings

    clear_unirank_settings(monkeypatch)
    monkeypatch.setenv("UNIRANK_CONFIG", os.devnull)
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory):
    """``settings``, shared by one module's tests: one registry, so a model is exported or copied once."""
    from unirank.settings import Settings

    with pytest.MonkeyPatch.context() as mp:
        clear_unirank_settings(mp)
        root = tmp_path_factory.mktemp("module")
        mp.setenv("UNIRANK_CONFIG", os.devnull)
        yield Settings(data_dir=root / "data")


@pytest.fixture()
def client(settings, base_embedder):
    """A Unirank client on a temporary data dir that reuses the session's loaded model."""
    from unirank.api import Unirank

    ur = Unirank(settings)
    ur.__dict__["embedder"] = base_embedder
    yield ur
    ur.close()


@pytest.fixture(scope="module")
def module_client(module_settings, base_embedder):
    """``client``, shared by one module's tests (training once is what they share)."""
    from unirank.api import Unirank

    ur = Unirank(module_settings)
    ur.__dict__["embedder"] = base_embedder
    yield ur
    ur.close()


def register_base_copy(settings, name: str):
    """The bundled base model registered as ``name@1``: another model to the index (its own signature)."""
    from unirank.models.loading import resolve_model_path
    from unirank.registry import ModelRegistry
    from unirank.registry.describe import describe_model_folder
    from unirank.search.types import ModelSignature

    base = Path(resolve_model_path("base")[0])
    registry = ModelRegistry(settings.models_dir)
    try:
        version = registry.register(name, "embedder", path=base, record=describe_model_folder(base, "embedder"))
    finally:
        registry.close()
    return ModelSignature(name=name, version=str(version.version), dims=384)


def shared_path(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent: the shared data set is not beside this checkout")
    return path


@pytest.fixture(scope="session")
def s3_endpoint():
    """A real S3-protocol server (moto) on a loopback port: object storage without a cloud account."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
