"""The models one server process serves, loaded once and swapped when a registry alias moves."""

from __future__ import annotations

import copy
import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unirank.errors import (ConfigurationError, ModelLoadError, ModelNotFoundError, ServingRequestError,
                            UnirankError)
from unirank.models.embedder import Embedder
from unirank.models.loading import (BASE_ALIAS, is_cross_encoder, load_embedder, load_reranker, registry_version,
                                    resolve_model_path)
from unirank.models.reranker import BiEncoderReranker, Reranker
from unirank.registry.store import ModelVersion, parse_reference
from unirank.search.types import is_folder_version
from unirank.settings import ServingSettings, Settings

log = logging.getLogger(__name__)


@dataclass
class ServedModel:
    """One loaded model version. An embedder can also rerank (by cosine), as ``reranker.model = base`` does."""

    id: str
    role: str
    version: str
    reranker: Reranker
    embedder: Embedder | None
    #: The server's own copy for counting and cutting inputs on the event loop: each call to a fast
    #: tokenizer resets its truncation settings, so it is not shared with the thread running the model.
    tokenizer: Any
    max_seq_length: int
    #: OpenAI's ``created``: when the model's files were written (Unix seconds); 0 when there are none here.
    created: int = 0

    def __post_init__(self) -> None:
        self.tokenizer = copy.deepcopy(self.tokenizer)

    @property
    def dims(self) -> int | None:
        return self.embedder.dims if self.embedder is not None else None

    @property
    def is_cross_encoder(self) -> bool:
        return self.embedder is None

    @property
    def label(self) -> str:
        """The id, with the version an alias stands for: ``hb-embed@prod (version 3)``; ``base``."""
        exact = (self.version in (self.id, "hub") or is_folder_version(self.version)
                 or self.id.endswith(f"@{self.version}"))
        return self.id if exact else f"{self.id} (version {self.version})"

    def token_limit(self, limits: ServingSettings) -> int:
        """The tokens one input may hold here: the model's window, or ``serving.max_input_tokens`` if smaller."""
        return min(self.max_seq_length, limits.max_input_tokens)

    def describe(self, limits: ServingSettings) -> dict[str, Any]:
        """The model card: ``max_seq_length`` is the window a client should chunk to (the effective one,
        not the model's own when the server allows fewer tokens), with the server's per-request limits."""
        return {"id": self.id, "object": "model", "created": self.created, "owned_by": "unirank", "role": self.role,
                "version": self.version, "dims": self.dims, "max_seq_length": self.token_limit(limits),
                "max_inputs": limits.max_inputs, "max_rerank_documents": limits.max_rerank_documents}


@dataclass(frozen=True)
class FailedSwap:
    """An alias moved to a version that failed to load, or (``version`` None) what the ref names could not
    be found (its folder or registry entry is gone): the version before it still serves."""

    ref: str
    version: str | None
    serving: str
    error: str


@dataclass
class RefreshOutcome:
    """What one registry poll did: the refs swapped to a new version, and those whose new version failed."""

    swapped: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Target:
    """What a ref names now: what the loaders are given (``exact``), its version, files and registry row."""

    exact: str
    version: str
    path: str
    registered: ModelVersion | None


class ModelCatalog:
    def __init__(self, settings: Settings, refs: list[str]) -> None:
        if not refs:
            raise ServingRequestError("No models to serve: pass --model REF (e.g. base or NAME@prod).")
        for ref in refs:  # "" was read as the current folder
            if not ref.strip():
                raise ConfigurationError(f"A model to serve is empty ({ref!r}): name base, a model folder, or a "
                                         "registry ref such as NAME@prod (--model, or serving.models).")
        self.settings = settings
        self.refs = list(dict.fromkeys(refs))
        self._models: dict[str, ServedModel] = {}
        self._failed: dict[str, FailedSwap] = {}
        self._lock = threading.Lock()

    # -- loading and hot swap -------------------------------------------------------------------
    def check_refs(self) -> dict[str, str]:
        """Each ref's version, resolved as loading resolves it (all but reading the weights): a ref that
        names nothing, or names something loading could not find, is refused before a server starts."""
        return {ref: self._locate(ref).version for ref in self.refs}

    def load_all(self) -> None:
        for ref in self.refs:
            self._models[ref] = self._load(ref, self._locate(ref))

    def failed_swaps(self) -> dict[str, FailedSwap]:
        """The refs whose alias names a version that failed to load, while the old one still serves."""
        with self._lock:
            return dict(self._failed)

    def refresh(self) -> RefreshOutcome:
        """Load any model whose alias now points at another version, then swap it in.

        The old version keeps answering until the new one is loaded, and a batch already running
        finishes on the model it started with, so no request fails during a swap. A version that fails
        to load is remembered and not tried again (each try loaded its weights and logged a traceback
        on every poll) until the alias moves again; :meth:`failed_swaps` names it.
        """
        outcome = RefreshOutcome()
        for ref in self.refs:
            current = self._models.get(ref)
            if current is None:
                continue
            try:
                resolved = self._resolve(ref)
            except Exception as exc:  # its folder or registry entry is gone: the other refs still swap
                self._unresolved(ref, current, exc)
                continue
            version = resolved[1]
            with self._lock:
                failed = self._failed.get(ref)
                if failed is not None and failed.version != version:  # the alias moved on (or resolves again)
                    del self._failed[ref]
            if version == current.version or (failed is not None and failed.version == version):
                continue
            log.info("%s moved from version %s to %s: loading", ref, current.version, version)
            try:
                replacement = self._load(ref, self._locate(ref, resolved))
            except Exception as exc:  # a broken version (any error its files raise): keep serving the old
                log.exception("%s: version %s failed to load; still serving version %s, and not trying it "
                              "again until the alias moves", ref, version, current.version)
                with self._lock:
                    self._failed[ref] = FailedSwap(ref, version, current.version, f"{type(exc).__name__}: {exc}")
                outcome.failed.append(ref)
                continue
            with self._lock:
                self._models[ref] = replacement
            outcome.swapped.append(ref)
            log.info("%s now serves version %s", ref, version)
        return outcome

    def _unresolved(self, ref: str, current: ServedModel, exc: Exception) -> None:
        """``ref`` could not be resolved this poll: shown on /ready (and logged once) until it resolves again.
        One such ref ended the whole poll, so no other model was swapped, and only the log said so."""
        error = f"{type(exc).__name__}: {exc}"
        with self._lock:
            known = self._failed.get(ref)
            self._failed[ref] = FailedSwap(ref, None, current.version, error)
        if known is None or known.version is not None or known.error != error:
            log.error("%s: cannot tell which version it names (%s); still serving version %s", ref, error,
                      current.version)

    def _resolve(self, ref: str) -> tuple[str, str]:
        """What loading is given for ``ref`` now, and its version, by the rule search loads models by
        (models/loading.py): ``base``; a registered name, as ``NAME@VERSION`` so that an alias moved
        meanwhile cannot change what loads (it wins over a folder of its name in the working directory,
        which ``./NAME`` names); a folder, by its absolute path (its marker's version is not looked up in
        this registry); else a hub id, whose version is ``hub``."""
        if ref == BASE_ALIAS:
            return ref, BASE_ALIAS
        registered = registry_version(ref, self.settings.models_dir)
        if registered is not None:
            if registered.path is None:  # loading it failed, and the server answered 503 with Retry-After for ever
                raise ModelLoadError(
                    f"{ref} is a remote endpoint ({registered.record.get('endpoint')}), not a model with files "
                    "here: `unirank serve models` serves local models only. Send clients to that endpoint, or "
                    "serve a local model (base, a folder, or a registry ref with files).")
            return f"{registered.name}@{registered.version}", str(registered.version)
        folder = Path(ref).expanduser()
        if folder.exists():
            if not (folder / "config.json").is_file():
                raise ModelLoadError(f"{ref} is not a saved model (no config.json in it): give the folder a model "
                                     "was saved to, base, or a registry ref such as NAME@prod.")
            exact = str(folder.resolve())
            return exact, resolve_model_path(exact)[2]
        if ref.startswith(("/", ".", "~")) or "\\" in ref or ref.count("/") > 1:  # a path; a hub id is ORG/NAME
            raise ModelNotFoundError(f"{ref} does not exist. Serve base, a model folder, or a registry ref such as "
                                     "NAME@prod.")
        # A hub id: loading says when it cannot be had (not in the hub cache with HF_HUB_OFFLINE=1).
        return ref, resolve_model_path(ref, self.settings.models_dir)[2]

    def _locate(self, ref: str, resolved: tuple[str, str] | None = None) -> _Target:
        """``ref`` resolved as the loaders resolve it: the start-up check runs this too, so it cannot pass
        where loading then fails to find the model."""
        exact, version = resolved or self._resolve(ref)
        registered = registry_version(exact, self.settings.models_dir)
        path, _, loaded = resolve_model_path(exact, self.settings.models_dir, version=registered)
        if loaded != version:
            raise ModelLoadError(f"{ref} names version {version}, but loading {exact} would give version {loaded}.")
        return _Target(exact, version, path, registered)

    def _load(self, ref: str, target: _Target) -> ServedModel:
        settings = self.settings.model_copy(deep=True)
        exact, version, path = target.exact, target.version, target.path
        if is_cross_encoder(path):
            settings.reranker.model = exact
            reranker = load_reranker(settings)
            tokenizer = reranker.model.tokenizer  # type: ignore[attr-defined]
            max_len = int(getattr(reranker.model, "max_seq_length", None) or tokenizer.model_max_length)
            return ServedModel(ref, "reranker", version, reranker, None, tokenizer, max_len, _written_at(path))
        if target.registered is not None and target.registered.role == "reranker":  # a bi-encoder registered to
            settings.reranker.model = exact  # rerank (by cosine), as search loads it: load_embedder refuses the role
            bi = load_reranker(settings)
            embedder = bi.embedder  # type: ignore[attr-defined]
            return ServedModel(ref, "reranker", version, bi, embedder, embedder.tokenizer, embedder.max_seq_length,
                               _written_at(path))
        settings.embedder.model = exact
        embedder = load_embedder(settings)
        return ServedModel(ref, "embedder", version, BiEncoderReranker(embedder, name=exact), embedder,
                           embedder.tokenizer, embedder.max_seq_length, _written_at(path))

    # -- lookup ---------------------------------------------------------------------------------
    def served(self, ref: str) -> ServedModel:
        """The model loaded under its exact served id: what a batch runs on, the swapped-in version
        once a hot swap has replaced it."""
        with self._lock:
            return self._models[ref]

    def models(self) -> list[ServedModel]:
        with self._lock:
            return [self._models[r] for r in self.refs if r in self._models]

    def get(self, requested: str) -> ServedModel:
        """The served model ``requested`` names: its served id, its bare name, or NAME@VERSION."""
        models = self.models()
        exact = [m for m in models if m.id == requested]  # before a bare name or another alias's version
        for m in exact + models:
            name = parse_reference(m.id)[0]
            if requested in (m.id, name, f"{name}@{m.version}"):
                return m
        raise ServingRequestError(
            f"Model {requested!r} is not served here. Served: {', '.join(m.id for m in models)}.",
            status_code=404, code="model_not_found")

    def find(self, requested: str | None, role: str) -> ServedModel:
        """``requested`` as :meth:`get` takes it, or omitted (the first model of ``role``)."""
        models = self.models()
        if requested:
            m = self.get(requested)
            if role == "embedder" and m.embedder is None:
                raise ServingRequestError(f"{requested!r} is a reranker; it cannot embed.",
                                          status_code=400, code="wrong_model_role")
            return m
        preferred = [m for m in models if m.role == role]
        fallback = [m for m in models if role == "reranker" or m.embedder is not None]
        if preferred or fallback:
            return (preferred or fallback)[0]
        raise ServingRequestError(f"No {role} is served here.", status_code=404, code="model_not_found")


def default_refs(settings: Settings) -> list[str]:
    if settings.serving.models:
        return list(settings.serving.models)
    refs = [settings.embedder.ref]
    if settings.reranker.model.lower() != "none":
        refs.append(settings.reranker.model)
    return list(dict.fromkeys(refs))


__all__ = ["FailedSwap", "ModelCatalog", "RefreshOutcome", "ServedModel", "default_refs", "UnirankError"]


def _written_at(path: str) -> int:
    """A model folder's config.json time; a hub id has no files here."""
    config = Path(path) / "config.json"
    return int(config.stat().st_mtime) if config.is_file() else 0

