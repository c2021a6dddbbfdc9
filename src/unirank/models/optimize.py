"""``unirank models optimize``: register a faster copy of a version as the next version.

The copy is an ONNX export (optionally int8), or with ``dtype`` a PyTorch copy in bfloat16 for hardware
that computes in it; with ``provider="openvino"`` the fp32 ONNX export runs on ONNX Runtime's OpenVINO
execution provider (in bfloat16 too, with ``dtype``). The new version's record is the source's (base
model, dimensions, training fingerprints; not its held-out figures, measured on other weights) plus
``backend: "onnx"``, ``onnx_file`` and ``onnx_provider``, or ``dtype``, and ``optimized_from``; loading
runs it accordingly. With a BEIR folder the copy is scored against its source first (nDCG@10, kNN for
an embedder, hybrid + rerank for a reranker) and nothing is registered when it loses more than
``max_drop``; the copy's figure is recorded as its own evaluation, under the system that measured it.
"""

from __future__ import annotations

import math
import os
import socket
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from unirank.errors import (
    ConfigurationError,
    EvaluationDataError,
    ModelLoadError,
    ModelNotFoundError,
    OptimizationRefusedError,
    RegistrationError,
    UnirankError,
)
from unirank.models.backends import ONNX_ATTENTION, record_backend, require_onnx_provider
from unirank.models.embedder import SentenceTransformerEmbedder
from unirank.models.loading import (
    BASE_ALIAS,
    BASE_MODEL_NAME,
    is_cross_encoder,
    load_embedder,
    load_reranker,
    resolve_model_path,
)
from unirank.models.onnx_export import (
    QUANTIZED_OPERATORS,
    check_quantization,
    export_onnx,
    refuse_longer_window,
    refuse_short_window,
)
from unirank.models.precision import check_dtype, save_dtype_copy
from unirank.models.reranker import BiEncoderReranker, CrossEncoderReranker
from unirank.registry import ModelRegistry, ModelVersion
from unirank.registry.describe import describe_model_folder
from unirank.registry.files import STALE_AFTER_S, files_digest, staging_prefix, sweep_stale, writer_gone
from unirank.search.backend import SearchBackend, derived_index_name
from unirank.settings import Settings

if TYPE_CHECKING:
    from unirank.evaluation.datasets import EvalSet

Stage = Callable[[str], None]
#: The most nDCG@10 an optimized file may lose against its source (the issue's bar for int8).
DEFAULT_MAX_DROP = 0.005
METRIC = "ndcg@10"
#: The export is made in DATA_DIR/STAGING... (``staging_prefix``) and registered from there.
STAGING = "optimize-"
#: Source record fields an optimized copy does not take: figures measured on the source's weights.
SOURCE_FIGURES = ("metrics", "evaluations")
#: The quality check indexes the copy's vectors into CANDIDATE_INDEX + PID-HOST-RANDOM, a name of its run
#: alone (``candidate_index_name``): under one fixed name, a killed run's index was found "unchanged" by the
#: next check, which scored the old copy's vectors and recorded that figure as the new copy's.
CANDIDATE_INDEX = "optimize-candidate-"


@dataclass(frozen=True)
class QualityCheck:
    eval_set: str
    system: str
    queries: int
    source: float
    optimized: float
    max_drop: float

    @property
    def drop(self) -> float:
        return round(self.source - self.optimized, 4)

    @property
    def passed(self) -> bool:
        return self.drop <= self.max_drop

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "metric": METRIC, "drop": self.drop}


@dataclass(frozen=True)
class OptimizedCopy:
    """A model folder made from a source version, and how to load it (before it is registered)."""

    folder: Path
    kind: str
    #: How errors and progress name it: the ONNX file, or "the bfloat16 copy".
    label: str
    #: What the registry version's record adds to the source's.
    record: dict[str, Any]

    @property
    def load(self) -> dict[str, Any]:
        """Keyword arguments for the embedder and reranker classes that load it as it will be registered."""
        return record_backend(self.record)


@dataclass(frozen=True)
class OptimizeResult:
    source: ModelVersion
    version: ModelVersion
    check: QualityCheck | None


class Optimizer:
    def __init__(self, settings: Settings, registry: ModelRegistry, backend: SearchBackend | None = None,
                 stage: Stage | None = None) -> None:
        self.settings = settings
        self.registry = registry
        self.backend = backend
        self.stage = stage or (lambda _: None)
        #: The versions this optimizer registered (the bundled base, the copy): what an interrupted run
        #: says it left behind.
        self.registered: list[str] = []

    def run(self, ref: str, *, name: str | None = None, quantize: str | None = None, dtype: str | None = None,
            check_beir: Path | None = None, max_drop: float | None = None,
            max_seq_length: int | None = None, provider: str | None = None, force: bool = False) -> OptimizeResult:
        """``max_drop`` (with ``check_beir`` only; default ``DEFAULT_MAX_DROP``): the most nDCG@10 the copy may
        lose. ``force`` registers a copy whose files a version of the name holds already."""
        max_drop = checked_max_drop(max_drop, check_beir)
        if check_beir is not None and self.backend is None:
            raise ConfigurationError("A quality check needs a search backend to index the BEIR corpus: pass "
                                     "Optimizer(settings, registry, backend).")
        if quantize is not None and dtype is not None:
            raise ConfigurationError("--quantize makes an ONNX int8 copy and --dtype a copy that computes in "
                                     "another precision: choose one.")
        if dtype is not None:
            check_dtype(dtype)
        check_quantization(quantize)  # these two before a quarter of a minute of exporting, not after
        refuse_short_window(max_seq_length)
        if provider is not None:
            require_onnx_provider(provider, ref, dtype)  # before a quarter of a minute of exporting
            if provider == "openvino" and quantize is not None:
                # Measured: 50 pairs at 128 tokens, 1,320 ms on OpenVINO against 459 ms on the CPU provider.
                # A static int8 file (QDQ MatMuls, per-channel weights, activations calibrated on CISI pairs)
                # was no better: 50 pairs at 256 tokens took 454 ms on OpenVINO against 402 ms for the fp32
                # file in bf16, and its scores kept only 0.75 Kendall tau of fp32's order.
                raise ConfigurationError("OpenVINO runs the int8 file slower than ONNX Runtime's CPU provider: use "
                                         "--provider openvino --dtype bfloat16 (or --quantize int8 alone).")
        source, unregistered_base = self._source(ref, name)
        assert source.path is not None
        window = source.record.get("max_seq_length")
        if max_seq_length is not None and window:
            # Checked before the export too: it takes a quarter of a minute and would be thrown away.
            refuse_longer_window(source.ref, int(window), max_seq_length)
        # The queries too: a missing or empty BEIR folder was said only after the export.
        data = _judged_queries(Path(check_beir)) if check_beir is not None else None
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        # A killed optimize left its export here (hundreds of MB), kept forever: the folder names its process.
        for stale in sweep_stale(self.settings.data_dir.glob(f"{STAGING}*"), STAGING):
            self.stage(f"removed {stale.name}, left by an optimize that did not finish")
        with tempfile.TemporaryDirectory(prefix=staging_prefix(STAGING), dir=self.settings.data_dir) as tmp:
            copy = self._make_copy(source, Path(tmp) / "model", quantize, dtype, max_seq_length, provider)
            window = max_seq_length if max_seq_length is not None else source.record.get("max_seq_length")
            # The versions with these files (hashed once: an ONNX folder is hundreds of MB), before the check:
            # minutes spent on a copy that would not be registered.
            same_files = [] if force else self.registry.identical_versions(
                source.name, copy.folder, digest=files_digest(copy.folder))
            self._refuse_identical(source, copy, window, same_files)
            check = None
            if check_beir is not None:
                assert data is not None
                check = self._check(ref if ref == BASE_ALIAS else source.ref, source, copy, Path(check_beir),
                                    data, max_drop)
                if not check.passed:
                    keep = ("Register the fp32 ONNX file instead (run without --quantize), or keep the PyTorch "
                            "version." if quantize else "Keep the fp32 version.")
                    raise OptimizationRefusedError(
                        f"{copy.label} scores {METRIC} {check.optimized:.4f} on {check.eval_set} against "
                        f"{check.source:.4f} for {source.ref}: a drop of {check.drop:.4f}, more than the "
                        f"{max_drop:.4f} allowed. Nothing was registered. {keep}")
            if unregistered_base:
                # First: the copy's record names the version the base is registered as, not the number
                # guessed before (a deleted version's number is never given again).
                self.stage(f"registering the bundled base model as the next version of {source.name}")
                source = self.registry.register(source.name, source.role, path=source.path, record=source.record)
                self.registered.append(source.ref)
            # Not the source's held-out figures: measured on other weights, `models list` showed them as the
            # copy's and promotion took an unmeasured int8 copy as checked against its source.
            record = {**{k: v for k, v in source.record.items() if k not in SOURCE_FIGURES}, **copy.record,
                      "optimized_from": source.ref}
            if max_seq_length is not None:
                record["max_seq_length"] = max_seq_length
                record["source_max_seq_length"] = source.record.get("max_seq_length")
            if check is not None:
                record["quality_check"] = check.to_dict()
            self.stage(f"registering the {copy.kind} copy as the next version of {source.name}")
            # allow_identical: checked again under the registry's lock (an optimize of the same source at once),
            # unless the files are those of a copy run otherwise (the fp32 ONNX file on OpenVINO in bf16).
            version = self.registry.register(source.name, source.role, path=copy.folder, record=record,
                                             allow_identical=force or bool(same_files))
            self.registered.append(version.ref)
            if check is not None:
                assert data is not None
                version = self._record_check(version, check, data)
        return OptimizeResult(source=source, version=version, check=check)

    def _refuse_identical(self, source: ModelVersion, copy: OptimizedCopy, window: int | None,
                          same_files: list[ModelVersion]) -> None:
        """A second optimize of one version with the same options makes the same files: registered again,
        it was a second version no one can tell from the first (`models register` refuses such files).
        The same files run another way are another copy: the fp32 ONNX file on OpenVINO in bf16 (``window``:
        the copy's token window, as recorded; ``same_files``: the versions of the source's name with its files)."""
        same = [v for v in same_files if record_backend(v.record) == copy.load and v.record.get("max_seq_length") == window]
        if same:
            raise RegistrationError(
                f"{same[-1].ref} already is this copy of {source.ref} (the same files): nothing was registered. "
                f"Use {same[-1].ref}, or pass --force to register it again as a new version of {source.name}.")

    def _sweep_candidate_indexes(self) -> None:
        """Remove the candidate indexes of quality checks that did not finish (a killed run keeps its copy's
        index, the whole corpus, for ever): those of a process of this machine that is gone, or, for another
        machine's or the fixed names of earlier releases, unchanged for ``STALE_AFTER_S``."""
        assert self.backend is not None
        for info in self.backend.list_indexes():
            if _abandoned_candidate(info.name, info.model.version, info.updated_at):
                try:
                    self.backend.delete_index(info.name)
                except UnirankError:  # in use after all (locked): the next run asks again
                    continue
                self.stage(f"removed index {info.name}, left by a quality check that did not finish")

    def _record_check(self, version: ModelVersion, check: QualityCheck, data: EvalSet) -> ModelVersion:
        """The copy's figure in the quality check, as an evaluation of its own (what promotion compares),
        under the system that measured it: kNN, or the base's hybrid results reranked. Not where the
        source was trained on some of the queries, as `unirank eval` would refuse them."""
        from unirank.evaluation.leakage import leaked_queries
        from unirank.evaluation.runner import qrels_digest, queries_digest

        if leaked_queries(data.queries, [version], self.registry):
            self.stage(f"not recording the check as a held-out figure of {version.ref}: it was trained on some "
                       "of the queries")
            return version
        system = f"knn:{version.ref}" if version.role == "embedder" else f"hybrid+rerank:{BASE_ALIAS}+{version.ref}"
        return self.registry.record_evaluation(version.ref, {
            METRIC: check.optimized, "eval_set": check.eval_set, "eval_queries": queries_digest(data.queries),
            "eval_qrels": qrels_digest(data.qrels, data.queries), "system": system, "measured_by": "models optimize --check-beir"})

    def _make_copy(self, source: ModelVersion, dest: Path, quantize: str | None, dtype: str | None,
                   max_seq_length: int | None, provider: str | None) -> OptimizedCopy:
        assert source.path is not None
        window = f", reading at most {max_seq_length} tokens" if max_seq_length else ""
        if dtype is not None and provider is None:
            self.stage(f"saving a {dtype} copy of {source.ref}{window}")
            # save_dtype_copy picks the model class by role: a bi-encoder reranker is saved as the bi-encoder
            # it is (as a CrossEncoder it got a random classifier head).
            kind = "reranker" if _is_cross_encoder(source) else "embedder"
            folder = save_dtype_copy(source.path, dest, kind, dtype, max_seq_length=max_seq_length)
            return OptimizedCopy(folder=folder, kind=dtype, label=f"the {dtype} copy",
                                 record={"backend": "torch", "dtype": dtype})
        self.stage(f"exporting {source.ref} to ONNX" + (f" and quantizing to {quantize}" if quantize else "") + window)
        export = export_onnx(source.path, dest, source.role, quantize=quantize, max_seq_length=max_seq_length)
        runs_on = {"onnx_provider": provider or "cpu", **({"dtype": dtype} if dtype else {})}
        return OptimizedCopy(
            folder=export.folder, kind="ONNX", label=export.served_file + (f" on {provider}" if provider else ""),
            record={"backend": "onnx", "onnx_file": export.served_file, "onnx_fp32_file": export.fp32_file, **runs_on,
                    "onnx_attention": ONNX_ATTENTION,
                    "quantization": ({"method": "dynamic", "dtype": "qint8", "config": export.arch,
                                      "operators": QUANTIZED_OPERATORS} if export.int8_file else None)})

    def _source(self, ref: str, name: str | None) -> tuple[ModelVersion, bool]:
        """The version to optimize, and whether it is the bundled base model still to be registered.

        ``base`` becomes NAME@1 (registered with its ONNX copy, NAME@2, once that passes any check), so
        the two can be told apart, compared and promoted like any other versions."""
        if ref != BASE_ALIAS:
            if name is not None:
                raise ConfigurationError("--name applies only to `base`; a registered model's ONNX copy keeps "
                                         "its name.")
            source = self.registry.get(ref)
            if source.path is None:
                raise ModelLoadError(f"{source.ref} is a remote endpoint: there are no weights to export.")
            if source.record.get("backend", "torch") != "torch" or source.record.get("dtype"):
                raise ModelLoadError(self._already_optimized(source))
            missing = source.files_missing()
            if missing:  # else a raw FileNotFoundError from the export, or a message naming its temp folder
                raise ModelLoadError(f"{missing}: there is nothing to optimize. Restore the folder (or the data dir "
                                     f"it was in), or register the model again (`unirank models register "
                                     f"{source.name} --role {source.role} --path FOLDER`) and optimize that version.")
            return source, False
        name = name or BASE_MODEL_NAME
        # A name that cannot be registered ('bad name', `none`) was refused only after the export.
        self.registry.check_registrable(name, "embedder")
        versions = self._versions(name)
        # Not a copy: copies keep `bundled_base` from their source's record (their vectors are the base's).
        registered = [v for v in versions if v.record.get("bundled_base") and not v.record.get("optimized_from")]
        if registered:
            return registered[0], False
        if any(not v.record.get("bundled_base") for v in versions):
            raise ConfigurationError(f"{name!r} already names other models; give the base model's copies "
                                     "another name with --name.")
        # Not registered yet, or deleted while copies of it were kept: registered (again) with its copy.
        path = Path(resolve_model_path(BASE_ALIAS)[0])
        record = {**describe_model_folder(path, "embedder"), "bundled_base": True}
        return ModelVersion(name=name, version=self._next_number(name), role="embedder", path=path, created_at="",
                            record=record), True

    def _next_number(self, name: str) -> int:
        """The version number ``name``'s next registration most likely takes (deleted numbers are never
        given again), for the messages said before the base is registered; the registered version is
        what the copy's record names."""
        taken = [v.version for v in [*self._versions(name), *self.registry.deleted_versions()] if v.name == name]
        return max(taken, default=0) + 1

    def _already_optimized(self, copy: ModelVersion) -> str:
        """Why a copy is not optimized again, and what to optimize instead: its source, or, when that was
        deleted (it was named all the same), what still works."""
        origin = copy.record.get("optimized_from")
        if origin is None:
            return f"{copy.ref} is already an optimized copy; optimize its fp32 PyTorch version instead."
        try:
            self.registry.get(origin)
        except ModelNotFoundError:
            return (f"{copy.ref} is already an optimized copy, and its source {origin} was deleted: there is no "
                    f"PyTorch version of it to optimize. Register the source's folder again (`unirank models "
                    f"register {copy.name} --role {copy.role} --path FOLDER`) and optimize that version, or use "
                    f"{copy.ref} as it is.")
        return f"{copy.ref} is already an optimized copy; optimize {origin} instead."

    def _versions(self, name: str) -> list[ModelVersion]:
        return [v for v in self.registry.list() if v.name == name]

    def _check(self, source_ref: str, source: ModelVersion, copy: OptimizedCopy, folder: Path, data: EvalSet,
               max_drop: float) -> QualityCheck:
        """Score source and optimized copy on the same queries with the project's evaluation code.

        Both share their weights, so queries a model was trained on favour both alike: the comparison
        is what matters here, not the absolute figure.
        """
        from unirank.evaluation.metrics import score_run
        from unirank.evaluation.systems import SystemRunner
        from unirank.training.job import beir_set_name, ensure_beir_index

        assert self.backend is not None
        settings = self.settings.model_copy(deep=True)
        candidate_version = f"{source.version}-{copy.kind.lower()}-candidate"
        self._sweep_candidate_indexes()
        if source.role == "embedder":
            settings.embedder.model = source_ref
            scores = []
            # The source's index is cached (made once per folder and model); the copy's is of this run alone.
            for label, embedder, index_name in (
                (source.ref, load_embedder(settings), None),
                (copy.label, SentenceTransformerEmbedder(
                    str(copy.folder), name=source.name, version=candidate_version,
                    batch_size=settings.embedder.batch_size, **copy.load), candidate_index_name()),
            ):
                self.stage(f"kNN {METRIC} of {label} on {folder.name}")
                try:
                    index = ensure_beir_index(settings, self.backend, embedder, folder, self.stage, name=index_name)
                    run = SystemRunner(self.backend, index, settings.search).knn(data.queries, embedder)
                    scores.append(score_run(data.qrels, run)[METRIC])
                finally:
                    if index_name is not None and self.backend.exists(index_name):
                        self.backend.delete_index(index_name)
            system = "knn"
        else:
            settings.embedder.model = BASE_ALIAS
            settings.reranker.model = source_ref
            embedder = load_embedder(settings)
            index = ensure_beir_index(settings, self.backend, embedder, folder, self.stage)
            runner = SystemRunner(self.backend, index, settings.search)
            hits = runner.hybrid_hits(data.queries, embedder)
            scores = []
            source_reranker = load_reranker(settings, embedder)
            copy_name = f"{source.name}@{candidate_version}"
            copy_reranker: CrossEncoderReranker | BiEncoderReranker
            if _is_cross_encoder(source):
                copy_reranker = CrossEncoderReranker(str(copy.folder), name=copy_name,
                                                     batch_size=settings.reranker.batch_size, **copy.load)
            else:  # scored by cosine, as load_reranker scores its source and will score the copy
                copy_reranker = BiEncoderReranker(SentenceTransformerEmbedder(
                    str(copy.folder), name=source.name, version=candidate_version,
                    batch_size=settings.embedder.batch_size, **copy.load), name=copy_name)
            # Both at the weight searches will use (reranker.blend_weight overrides the stored one).
            copy_reranker.blend_weight = source_reranker.blend_weight
            for label, reranker in ((source.ref, source_reranker), (copy.label, copy_reranker)):
                self.stage(f"hybrid + rerank {METRIC} of {label} on {folder.name}")
                scores.append(score_run(data.qrels, runner.rerank(data.queries, hits, reranker))[METRIC])
            system = f"hybrid:{BASE_ALIAS}+rerank"
        return QualityCheck(eval_set=f"beir:{beir_set_name(folder)}", system=system, queries=len(data.queries),
                            source=scores[0], optimized=scores[1], max_drop=max_drop)


def checked_max_drop(max_drop: float | None, check_beir: Path | None) -> float:
    """The quality check's tolerance: refused without a check (a limit asked for, an unchecked copy
    registered), and outside [0, 1] (nan let every copy through, a negative one none)."""
    if max_drop is None:
        return DEFAULT_MAX_DROP
    if check_beir is None:
        raise ConfigurationError(f"--max-drop {max_drop} limits the quality check, and no check runs without "
                                 "--check-beir: give --check-beir DIR too (a BEIR folder to score the copy on), "
                                 "or leave --max-drop out.")
    if isinstance(max_drop, bool) or not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) \
            or not 0 <= max_drop <= 1:
        raise ConfigurationError(f"--max-drop {max_drop!r} is not an nDCG@10 the copy may lose: give a number "
                                 f"from 0 to 1 (default {DEFAULT_MAX_DROP}).")
    return float(max_drop)


def candidate_index_name() -> str:
    """The index of one quality check's copy: ``CANDIDATE_INDEX`` + PID-HOST-RANDOM, which tells a killed
    run's from one still going (as ``registry.files.staging_name`` names folders)."""
    return f"{CANDIDATE_INDEX}{os.getpid()}-{_candidate_host()}-{uuid.uuid4().hex[:12]}"


def _candidate_host() -> str:
    """This machine as candidate index names spell it: written and matched alike."""
    return derived_index_name(socket.gethostname())[:40]


def _abandoned_candidate(index: str, model_version: str, updated_at: str) -> bool:
    """Whether ``index`` is a quality check's copy that no running check will use or delete."""
    if index.startswith(CANDIDATE_INDEX):
        gone = writer_gone(index[len(CANDIDATE_INDEX):], _candidate_host())
        if gone is not None:
            return gone
    elif not (index.startswith("beir-") and model_version.endswith("-candidate")):  # the fixed names before:
        # beir-SET--NAME-V-KIND-candidate, which a check of an earlier release may still be using
        return False
    return _older_than(updated_at, STALE_AFTER_S)


def _older_than(timestamp: str, seconds: float) -> bool:
    from datetime import datetime

    try:
        when = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return False
    return time.time() - when.timestamp() > seconds


def _is_cross_encoder(version: ModelVersion) -> bool:
    """Whether a version's files are a cross-encoder: a reranker may be a bi-encoder scoring by cosine."""
    return version.role == "reranker" and version.path is not None and is_cross_encoder(str(version.path))


def _judged_queries(folder: Path) -> EvalSet:
    """The BEIR folder's judged queries, which the quality check scores both models on."""
    from unirank.evaluation.datasets import load_beir

    data = load_beir(folder).judged()
    if not data.queries:
        raise EvaluationDataError(f"{folder} has no judged queries to check the optimized model on.")
    return data
