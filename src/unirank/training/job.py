"""``unirank train``: data -> hard negatives -> embedder -> reranker -> held-out eval -> registry.

Every stage leaves its output in the run folder (``data_dir/runs/NAME-<config hash>``) and a
marker; running the same command again resumes after the last finished stage, and inside a
training stage from the last checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import random
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

from unirank.errors import (EvaluationDataError, ModelLoadError, ModelNotFoundError, TrainingError,
                            TrainingRunningError)
from unirank.evaluation.datasets import beir_queries, corpus_ids, load_qrels, load_queries
from unirank.models.embedder import Embedder, loaded, makes_vectors_of
from unirank.models.loading import (index_model_settings, is_cross_encoder, load_embedder, require_hub_model,
                                    resolve_model_path)
from unirank.registry import ModelRegistry, ModelVersion
from unirank.registry.lineage import training_queries_with_bases
from unirank.registry.store import RESERVED_NAMES
from unirank.search.backend import SearchBackend, derived_index_name
from unirank.search.rebuild import reembedded_index
from unirank.search.types import Chunk
from unirank.settings import Settings, masked_url
from unirank.training.blend_selection import choose_blend_weight
from unirank.training.centering import DEFAULT_WHITENING, check_whitening_strength, save_centered_copy
from unirank.training.checkpoints import remove_checkpoints
from unirank.training.doc2query import LLM_KIND, LLMQueryWriter, require_llm
from unirank.training.embedder_trainer import EmbedderTrainingConfig, train_embedder
from unirank.training.examples import (TrainingPair, data_hash, query_fingerprints, read_pairs, without_own_positives,
                                       write_pairs)
from unirank.training.labelled import load_pair_file, pairs_from_qrels, read_pair_file, with_documents
from unirank.training.mining import HardNegativeMiner, MiningConfig, judged_documents
from unirank.training.pseudo_queries import DEFAULT_KINDS, PseudoQueryGenerator, check_kinds
from unirank.training.reranker_trainer import RerankerTrainingConfig, train_reranker
from unirank.training.validation import Split, split_pairs

if TYPE_CHECKING:  # the chat store is imported only by a run that reads feedback
    from unirank.training.feedback import FeedbackPairs

log = logging.getLogger(__name__)
Stage = Callable[[str], None]


@dataclass
class TrainRequest:
    name: str
    index: str | None = None
    beir: Path | None = None
    pairs: Path | None = None
    qrels: Path | None = None
    queries: Path | None = None
    base: str = "base"
    pseudo: bool | None = None  # None: pseudo-queries only when no labels are given
    pseudo_kinds: tuple[str, ...] = DEFAULT_KINDS
    seed: int = 13
    embedder: EmbedderTrainingConfig = field(default_factory=EmbedderTrainingConfig)
    reranker: RerankerTrainingConfig = field(default_factory=RerankerTrainingConfig)
    mining: MiningConfig = field(default_factory=MiningConfig)
    #: Cap on pseudo-query pairs (sampled evenly by kind): CPU training time grows with it, and more
    #: is not better: on CISI, 3,000 pairs gave tuned kNN nDCG@10 0.415 and hybrid 0.446 against
    #: 0.425 and 0.452 with 1,500 (base 0.420 / 0.443): the extra pseudo-queries add their noise.
    max_pseudo_pairs: int = 1500
    fresh: bool = False
    #: A chat database whose feedback (thumbs up/down, citation clicks) adds labelled pairs.
    feedback: Path | None = None
    #: A search click log (JSONL result pages, ``unirank.training.clicks``) that adds labelled pairs.
    clicks: Path | None = None
    #: A click whose user came back sooner than this (seconds) is a bounce, not a positive.
    min_dwell_s: float = 0.0

    #: The options that name input files: checked up front, and their contents are in the fingerprint.
    INPUT_FILES = ("pairs", "qrels", "queries", "clicks")
    #: (config, option) pairs added after run folders existed, left out of the fingerprint while unset, so
    #: that a run interrupted before the upgrade resumes in its folder.
    LATER_OPTIONS = (("reranker", "layers"),)

    def validate(self) -> None:
        if (self.index is None) == (self.beir is None):
            raise TrainingError("Give exactly one of --index NAME or --beir DIR.")
        if self.qrels and not (self.queries or self.beir):
            raise TrainingError("--qrels needs the query texts: --queries FILE (or --beir DIR).")
        if self.name.lower() in RESERVED_NAMES:  # eval --models base means the bundled model, whatever is registered
            raise TrainingError(f"--name {self.name}: `{self.name}` stands for the "
                                f"{'bundled model' if self.name.lower() == 'base' else 'absence of a model'} "
                                "wherever models are named; choose another name.")
        if self.beir is not None:
            check_beir_folder(self.beir)
            if self.qrels and not self.queries and not (Path(self.beir) / "queries.jsonl").is_file():
                # it was said as "Query file DIR/queries.jsonl does not exist: give the file's path"
                raise TrainingError(f"--beir {self.beir} has no queries.jsonl: give the query texts of --qrels "
                                    "with --queries FILE.")
        if self.feedback and self.beir:  # it took the feedback of every index's chats
            raise TrainingError("--feedback adds the votes and clicks of chats over --index NAME; a --beir run "
                                "has no such index: train with --index to use them.")
        for option in self.INPUT_FILES:
            path = getattr(self, option)
            if path is not None and Path(path).is_dir():  # "no such file" sent the user looking for a typo
                raise TrainingError(f"--{option} {path} is a folder: give the {option} file.")
            if path is not None and not Path(path).is_file():
                raise TrainingError(f"--{option} {path}: no such file.")
        if not 0 <= self.min_dwell_s < math.inf:  # NaN fails this too
            raise TrainingError(f"--min-dwell must be 0 or more seconds, got {self.min_dwell_s}.")
        self._check_companions()
        self._check_numbers()
        for epochs in (self.embedder.epochs, self.reranker.epochs):
            if not 0 < epochs < math.inf:  # NaN and inf failed in the trainer, after mining
                raise TrainingError(f"--epochs must be a number above 0, got {epochs}.")
        if self.embedder.min_steps < 0:
            raise TrainingError(f"--min-steps must be 0 or more, got {self.embedder.min_steps}.")
        if self.embedder.batch_size < 2 or self.reranker.batch_size < 2:
            # In-batch negatives need company: a batch of one has no negative to learn from.
            raise TrainingError(f"--batch-size must be at least 2, got {self.embedder.batch_size}.")
        if self.max_pseudo_pairs < 1:
            raise TrainingError(f"The pseudo-query cap must be at least 1, got {self.max_pseudo_pairs}.")
        check_kinds(self.pseudo_kinds)

    def _check_companions(self) -> None:
        """An option that only means something with another was taken without it, silently ignored (yet
        part of the run's fingerprint): refused, as ``--qrels`` without its query texts is."""
        if self.queries and not self.qrels:
            raise TrainingError("--queries gives the query texts of --qrels: add --qrels FILE (for labelled "
                                "pairs without qrels, use --pairs FILE).")
        if self.min_dwell_s and not self.clicks:
            raise TrainingError("--min-dwell applies to the clicks of a click log: add --clicks FILE, or leave "
                                "--min-dwell out.")
        if self.pseudo is False and tuple(self.pseudo_kinds) != tuple(DEFAULT_KINDS):
            raise TrainingError("--pseudo-kinds chooses the pseudo-queries that --no-pseudo turns off: leave one out.")
        labels = self.pairs or self.qrels or self.clicks or self.feedback
        if self.pseudo is False and not labels:  # found only after indexing and mining, as "0 usable pairs"
            raise TrainingError("--no-pseudo leaves nothing to train on without labels: add --pairs, --qrels, "
                                "--clicks or --feedback, or leave --no-pseudo out.")
        if self.pseudo is None and labels and tuple(self.pseudo_kinds) != tuple(DEFAULT_KINDS):
            # and `llm` in it was refused for want of an endpoint the run would never ask
            raise TrainingError("--pseudo-kinds chooses pseudo-queries, which a run with labels (--pairs, --qrels, "
                                "--clicks, --feedback) makes only with --pseudo: add --pseudo, or leave "
                                "--pseudo-kinds out.")
        if not self.embedder.center_on_corpus and self.embedder.whitening_strength != DEFAULT_WHITENING:
            raise TrainingError("--whiten sets the whitening done with centring, which --no-center turns off: "
                                "leave one out.")

    def _check_numbers(self) -> None:
        """Seeds a generator takes, and rates and ratios that are finite (NaN and inf failed after mining)."""
        for seed in {self.seed, self.embedder.seed, self.reranker.seed}:
            if not 0 <= seed <= 2**32 - 1:  # numpy's and transformers' set_seed refuse others
                raise TrainingError(f"--seed must be 0 to {2**32 - 1}, got {seed}.")
        e, r = self.embedder, self.reranker
        if r.layers is not None and r.layers < 1:
            raise TrainingError(f"--reranker-layers must be 1 or more, got {r.layers}.")
        for what, value in (("The embedder's learning rate", e.learning_rate),
                            ("The embedder's labelled learning rate", e.labelled_learning_rate),
                            ("The reranker's learning rate", r.learning_rate),
                            ("The reranker's head learning rate", r.head_learning_rate)):
            if not 0 < value < math.inf:
                raise TrainingError(f"{what} must be a number above 0, got {value}.")
        for what, value in (("The embedder's warmup ratio", e.warmup_ratio), ("The reranker's warmup ratio", r.warmup_ratio)):
            if not 0 <= value <= 1:
                raise TrainingError(f"{what} must be 0 to 1, got {value}.")
        if not 0 < e.guide_temperature < math.inf:
            raise TrainingError(f"The guide temperature must be a number above 0, got {e.guide_temperature}.")
        check_whitening_strength(e.whitening_strength)  # --whiten nan/inf: refused here too, not only at the config

    def fingerprint(self, inputs: dict[str, str] | None = None) -> str:
        """The run folder's key: a re-run of the same command on the same inputs resumes. ``inputs``: what
        the request only names (the index's contents, the version the base names now)."""
        fields = asdict(self)
        for section, option in self.LATER_OPTIONS:  # unset, as every run before it had them: same folder
            if fields[section][option] is None:
                del fields[section][option]
        data = {k: str(v) for k, v in fields.items() if k not in {"fresh", "name"}}
        data.update(inputs or {})
        for key in self.INPUT_FILES:
            path = getattr(self, key)
            if path:
                data[key + "_sha"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if self.feedback and Path(self.feedback).exists():
            from unirank.training.feedback import feedback_digest

            data["feedback_sha"] = feedback_digest(self.feedback)
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:10]


@dataclass
class TrainResult:
    run_dir: Path
    embedder: ModelVersion
    reranker: ModelVersion
    stats: dict
    metrics: dict
    #: Each version was registered by an earlier run of the same command and reused (not registered again).
    embedder_registered_before: bool = False
    reranker_registered_before: bool = False

    @property
    def registered_before(self) -> bool:
        """Both versions were an earlier run's: nothing new was registered."""
        return self.embedder_registered_before and self.reranker_registered_before


class TrainJob:
    def __init__(self, settings: Settings, backend: SearchBackend, base_embedder: Embedder | Callable[[], Embedder],
                 request: TrainRequest, stage: Stage | None = None) -> None:
        """``base_embedder`` may be a loader, called after the preflight: a typo in the index's name or a
        malformed label file is then said in a second, not after the model's ten-second load."""
        request.validate()
        if LLM_KIND in request.pseudo_kinds and request.pseudo is not False:
            require_llm(settings.chat)
        self.settings = settings
        self.backend = backend
        self._base_embedder = base_embedder
        self.request = request
        self.stage = stage or (lambda message: log.info(message))
        #: What an interrupted or failed registration left in the registry, for the interrupt's message.
        self.registration_note: str | None = None

    @cached_property
    def run_dir(self) -> Path:
        """Keyed by the inputs as they are now: a re-run after an ingest, or after the base's alias moved,
        reused the earlier run and registered its models again as if trained on the new data."""
        req = self.request
        # The mining model too (loaded here): pairs mined with another were reused after embedder.model changed.
        inputs = {"base": self.base_ref, "mining_embedder": str(self.embedder.signature)}
        if req.index and self.backend.exists(req.index):  # a missing one is said by the preflight
            info = self.backend.info(req.index)
            inputs["index"] = f"{info.model}:{info.chunk_count}:{info.source_count}:{info.updated_at}"
        corpus = Path(req.beir) / "corpus.jsonl" if req.beir else None
        if corpus is not None and corpus.is_file():  # a missing one is said when the corpus is read
            inputs["beir_corpus"] = f"{corpus.stat().st_size}:{corpus.stat().st_mtime_ns}"
        if req.beir:  # which folder, not only the path as given: `--beir beir` run from two places
            inputs["beir_folder"] = beir_set_name(req.beir)
        return self.settings.data_dir / "runs" / f"{req.name}-{req.fingerprint(inputs)}"

    @cached_property
    def feedback_pairs(self) -> FeedbackPairs:
        """The chat database's pairs for the index, read once: checked before any work, trained on later."""
        from unirank.training.feedback import require_feedback_pairs

        return require_feedback_pairs(self.request.feedback, index=self.request.index)  # type: ignore[arg-type]

    @cached_property
    def qrels_queries(self) -> dict[str, str]:
        """The query texts of --qrels (--queries, else the --beir folder's), read once: checked before any
        work, matched against the qrels, trained on later."""
        req = self.request
        return load_queries(req.queries) if req.queries else beir_queries(req.beir)[0]  # type: ignore[arg-type]

    @cached_property
    def base_ref(self) -> str:
        """The base as a version (``tuned-embed@2``, not ``tuned-embed@prod``), for the run's key and record."""
        if self.request.base == "base":
            return "base"
        _, name, version = resolve_model_path(self.request.base, self.settings.models_dir)
        return f"{name}@{version}"

    @cached_property
    def embedder(self) -> Embedder:
        """What mines the hard negatives, filters the pseudo-queries and picks the blend weight: for --index,
        the model search serves that index with (its own, when it loads here), so the index is mined as it is
        searched. Else the given embedder, for which an index of another model is re-embedded into a copy."""
        return self._index_own_embedder() or loaded(self._base_embedder)

    def _index_own_embedder(self) -> Embedder | None:
        """The model that made the --index, loaded as ``Unirank.embedder_for`` does, when it is not the
        configured one; None when it is, when ``embedder.model`` names another (search serves that one), or
        when it cannot be loaded here. A run mined with the configured model (the bundled base by default),
        after re-embedding a whole copy of an index that the model --base named had made."""
        index = self.request.index
        if not index or not self.backend.exists(index):  # a missing one is said by the preflight
            return None
        model = self.backend.model(index)
        try:
            own = index_model_settings(self.settings, model)
            if own is None:
                return None
            embedder = load_embedder(own)
        except (ModelNotFoundError, ModelLoadError) as exc:
            self.stage(f"{index}'s model {model} cannot be loaded here ({exc}): mining in a copy re-embedded "
                       "with the configured embedder")
            return None
        self.stage(f"mining {index} with {model}, the model it is searched with")
        return embedder

    def _preflight(self) -> str:
        """Refuse in seconds what would otherwise fail after minutes of indexing, mining and training:
        names the registry cannot take, a base model that cannot be loaded here, malformed label files
        and a missing index. Returns the base model's path."""
        registry = ModelRegistry(self.settings.models_dir)
        try:
            for name, role in ((f"{self.request.name}-embed", "embedder"), (f"{self.request.name}-rerank", "reranker")):
                registry.check_registrable(name, role)
        finally:
            registry.close()
        base_path = resolve_model_path(self.request.base, self.settings.models_dir)[0]
        if not Path(base_path).exists():
            require_hub_model(base_path)
        self._check_reranker_layers(base_path)
        self._check_label_files()
        if self.request.index:
            self.backend.info(self.request.index)  # a missing index raises, naming the ones there are
        self._check_qrels_match_the_data()
        self._check_click_log()
        return base_path

    def _check_reranker_layers(self, base_path: str) -> None:
        """More layers than the base has, or a base whose layers are not where they are cut: refused now,
        not when the reranker is built after the embedder's minutes of training."""
        layers = self.request.reranker.layers
        if layers is None:
            return
        import torch
        from transformers import AutoConfig, AutoModel

        from unirank.training.reranker_trainer import layer_stack

        config = AutoConfig.from_pretrained(base_path, local_files_only=Path(base_path).exists())
        with torch.device("meta"):  # the architecture without its weights: no memory, no time
            skeleton = AutoModel.from_config(config)
        stack = layer_stack(skeleton)  # what keep_first_layers will cut, so its count is the one to check
        if stack is None:
            raise TrainingError(f"--reranker-layers cuts a BERT-style encoder's layers; the base {self.request.base} "
                                f"is a {type(skeleton).__name__}, which keeps them elsewhere: leave --reranker-layers out.")
        if layers > len(stack):
            raise TrainingError(f"--reranker-layers {layers}: the base {self.request.base} has {len(stack)} layers; "
                                f"give 1 to {len(stack)}.")

    def _check_qrels_match_the_data(self) -> None:
        """Qrels whose query ids are none of the query file's, or whose relevant documents are none of the
        corpus's, train on nothing: that was said only after the corpus was indexed (minutes, for a --beir
        corpus), and it left a run folder behind."""
        req = self.request
        if not req.qrels:
            return
        qrels = load_qrels(req.qrels)
        queries = self.qrels_queries
        if not any(qid in queries for qid in qrels):
            raise TrainingError(f"None of the query ids of --qrels {req.qrels} is in the query file "
                                f"({req.queries or Path(req.beir) / 'queries.jsonl'}; e.g. {min(qrels)!r}): wrong "
                                "--queries?")
        relevant = {doc for judged in qrels.values() for doc, grade in judged.items() if grade > 0}
        present, where = self._documents_present(relevant)
        if not present:
            raise TrainingError(f"--qrels {req.qrels} judges relevant no document of {where} (e.g. "
                                f"{min(relevant)!r}): its corpus-ids must be the documents' ids, as `unirank "
                                "search --json` shows them (doc_id).")

    def _check_click_log(self) -> None:
        """Parse the click log, and refuse one written against other data: it trained on nothing, and that
        was said only after a --beir corpus was indexed. Chunk ids count by their document, so a log that
        passes may still name chunks the index lacks; those are counted and left out when it is read."""
        from unirank.training.clicks import check_click_log, documents_named

        if not self.request.clicks:
            return
        ids = check_click_log(self.request.clicks)
        present, where = self._documents_present(documents_named(ids))
        if not present:
            raise TrainingError(f"None of the ids in click log {self.request.clicks} is a document or chunk of "
                                f"{where} (e.g. {min(ids)!r}): was the log written against another index? Its ids "
                                "must be the doc_id or id that `unirank search --json` shows.")

    def _documents_present(self, doc_ids: set[str]) -> tuple[set[str], str]:
        """Which of ``doc_ids`` the data trained on has, and how to name that data in an error."""
        req = self.request
        if req.index:
            return self.backend.documents_present(req.index, doc_ids), f"index {req.index!r}"
        corpus = Path(req.beir) / "corpus.jsonl"  # type: ignore[arg-type]
        return doc_ids & corpus_ids(corpus), str(corpus)

    def _check_label_files(self) -> None:
        """Parse the label files now, as they are read after the corpus is indexed (their ids and texts
        are matched against it): a malformed line is found in a second, not after minutes of indexing."""
        req = self.request
        if req.pairs:
            load_pair_file(req.pairs)
        if req.qrels:
            _check_training_qrels(req.qrels)
        if req.queries:
            self.qrels_queries  # noqa: B018 - a cached property: reading it is the check
        if req.feedback:  # a chat database, read in a moment: no pair for this index is said now
            self.feedback_pairs  # noqa: B018 - a cached property: reading it is the check

    # -- stages ---------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        req = self.request
        base_path = self._preflight()
        with self._only_run_in_folder():
            if req.fresh and self.run_dir.exists():
                import shutil

                shutil.rmtree(self.run_dir)
            self.run_dir.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            try:
                return self._run(base_path, started)
            finally:  # an interrupted or failed attempt's time counts too: a resumed run builds on it
                self._ledger.add("run", time.perf_counter() - started)

    @contextmanager
    def _only_run_in_folder(self) -> Iterator[None]:
        """The same training started twice at once (a retry while the first still runs) wrote one set of
        checkpoints from two processes. The lock file sits beside the folder, which --fresh deletes."""
        from filelock import FileLock, Timeout

        self.run_dir.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(self.run_dir.parent / f"{self.run_dir.name}.lock"), timeout=0)
        try:
            lock.acquire()
        except Timeout:
            raise TrainingRunningError(str(self.run_dir)) from None
        try:
            yield
        finally:
            lock.release()

    def _run(self, base_path: str, started: float) -> TrainResult:
        req = self.request
        earlier_runs = self._ledger.seconds("run")
        index = self._corpus_index()
        chunks = [c for batch in self.backend.iter_chunks(index) for c in batch]
        if not chunks:
            raise TrainingError(f"Index {index!r} is empty: ingest documents before training.")
        pairs, stats = self._training_data(index, chunks)
        split = split_pairs(pairs, seed=req.seed)
        if not split.validation or len(split.train) < 8:
            generated = sum(stats.get("pseudo_generated", {}).values())
            made = (f" ({generated} pseudo-queries made from {len(chunks)} passages, "
                    f"{sum(stats.get('pseudo_kept', {}).values())} kept after the consistency filter and mining)"
                    if "pseudo_generated" in stats else "")
            raise TrainingError(f"Only {len(pairs)} usable training pairs{made}; training needs at least 8 and a "
                                "validation split: give more documents or labels.")
        self._check_hard_negatives(split, chunks)
        corpus = validation_corpus(chunks, split.validation, req.seed)

        embedder_start, centering, not_centered = self._embedder_start(base_path, chunks)
        embed_val = self._stage("embedder", lambda out: train_embedder(
            embedder_start, split.train, split.validation, corpus, out, req.embedder,
            baseline=None if is_cross_encoder(base_path) else base_path))
        reranker_base = self._reranker_start(base_path)
        rerank_val = self._stage("reranker", lambda out: train_reranker(
            reranker_base, split.train, split.validation, out, req.reranker, baseline=base_path))
        blend = self._stage("blend", lambda out: choose_blend_weight(
            self.run_dir / "reranker" / "final", self.backend, index, self.embedder, self.settings.search,
            split.validation, seed=req.seed))
        rerank_val = {**rerank_val, "blend": blend}
        # The time each stage took when it ran, though that was in an earlier, interrupted run of this
        # command (a resumed run recorded 0.0 for the embedder it reused); the total is every run's.
        ledger = self._ledger
        timings = {"embedder_s": round(ledger.seconds("centering") + ledger.seconds("embedder"), 1),
                   "reranker_s": round(ledger.seconds("reranker") + ledger.seconds("blend"), 1),
                   "total_s": round(earlier_runs + time.perf_counter() - started, 1)}

        own = {fp for p in pairs if p.written_by_people for fp in query_fingerprints(p.query)}
        inherited, inherited_from = self._base_training_queries()
        common = {"base_model": self.base_ref, "data_hash": data_hash(pairs), "run_dir": str(self.run_dir),
                  "training_pairs": len(split.train), "validation_pairs": len(split.validation),
                  # the base's too: a model trained from it has seen what it saw (the leakage check reads these)
                  "training_queries": sorted(own | inherited),
                  "training_queries_inherited_from": inherited_from,  # [] too: this record is complete
                  "data_stats": stats, "timings": timings, "corpus_index": index}
        registry = ModelRegistry(self.settings.models_dir)
        embedder_version = reranker_version = None
        embedder_reused = True
        try:
            # center_on_corpus says what was done, not what was asked (it was true when centring was skipped)
            hyperparameters = {**asdict(req.embedder), "center_on_corpus": centering is not None}
            embedder_version, embedder_reused = self._register(registry, f"{req.name}-embed", "embedder", "embedder", {
                **common, "hyperparameters": hyperparameters, "validation": embed_val,
                "centered_on_corpus": centering, **({"not_centered": not_centered} if not_centered else {})})
            reranker_version, reranker_reused = self._register(registry, f"{req.name}-rerank", "reranker", "reranker", {
                **common, "hyperparameters": asdict(req.reranker), "validation": rerank_val,
                "initialised_from": "tuned embedder" if reranker_base != base_path else self.base_ref,
                "trained_with": embedder_version.ref})
            if embedder_version.record.get("trained_with") != reranker_version.ref:  # eval's NAME@N pairs by it
                embedder_version = registry.update_record(embedder_version.ref, trained_with=reranker_version.ref)
        except BaseException:
            # Only a version this call registered: one an earlier run registered (with its reranker) stays.
            # A marker is not that proof: a re-run whose versions were deleted since registers anew.
            if embedder_version is not None and not embedder_reused and reranker_version is None:
                self._unregister_embedder(registry, embedder_version)
            raise
        finally:
            registry.close()
        for folder in ("embedder", "reranker"):  # both registered: final/ is all a re-registration needs
            remove_checkpoints(self.run_dir / folder)
        return TrainResult(run_dir=self.run_dir, embedder=embedder_version, reranker=reranker_version,
                           stats=stats, metrics={"embedder": embed_val, "reranker": rerank_val},
                           embedder_registered_before=embedder_reused, reranker_registered_before=reranker_reused)

    def _check_hard_negatives(self, split: Split, chunks: list[Chunk]) -> None:
        """Mining skips each query's top documents and its judged ones: in an index of a few documents
        none are left, and the embedder then "trained" 0 steps and the reranker failed on empty samples."""
        needed = max(1, self.request.embedder.hard_negatives)
        usable = sum(1 for p in split.train if len(p.negatives) >= needed)
        validated = sum(1 for p in split.validation if p.negatives)
        if usable >= 8 and validated:
            return
        documents = len({c.doc_id for c in chunks})
        raise TrainingError(
            f"Only {usable} of {len(split.train)} training pairs and {validated} of {len(split.validation)} "
            f"validation pairs have a hard negative; training needs at least 8 and one validation pair with one. "
            f"Mining skips each query's top {self.request.mining.skip_top} documents and its judged-relevant "
            f"ones, and the index holds {documents} document(s): too few documents in the index, give it more "
            "documents.")

    def _embedder_start(self, base_path: str, chunks: list[Chunk]) -> tuple[str, dict | None, str | None]:
        """The base centred on this corpus (``unirank.training.centering``), what to record of it, and why
        it was not centred: the base as it is when centring is off, the corpus too small, or the base not
        a local bi-encoder."""
        config = self.request.embedder
        if not config.center_on_corpus:
            return base_path, None, "turned off (--no-center)"
        if is_cross_encoder(base_path):
            return base_path, None, "the base is not a local bi-encoder"
        if len(chunks) < config.center_min_passages:
            why = f"{len(chunks)} passages are fewer than {config.center_min_passages}"
            self.stage(f"centring: skipped, {why}")
            return base_path, None, why
        info = self._stage("centering", lambda out: save_centered_copy(
            base_path, [c.embedding_input() for c in chunks], out / "model", seed=self.request.seed,
            strength=config.whitening_strength),
            doing="centring the base on the corpus")
        return str(self.run_dir / "centering" / "model"), info, None

    def _reranker_start(self, base_path: str) -> str:
        """A given cross-encoder is fine-tuned as it is; a bi-encoder base gives the reranker the
        encoder this run just tuned, so it starts from the domain's vocabulary and topics."""
        if is_cross_encoder(base_path) or not self.request.reranker.start_from_tuned_embedder:
            return base_path
        return str(self.run_dir / "embedder" / "final")

    def _stage(self, name: str, train: Callable[[Path], dict], doing: str | None = None) -> dict:
        out = self.run_dir / name
        marker = out / "done.json"
        if marker.exists():
            self.stage(f"{name}: already trained in {out}, reusing it")
            return json.loads(marker.read_text())
        self.stage(doing or f"training the {name}")
        out.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        try:
            metrics = train(out)
        finally:  # an interrupted stage's time too: the next run resumes from its checkpoint
            self._ledger.add(name, time.perf_counter() - started)
        marker.write_text(json.dumps(metrics))
        return metrics

    @cached_property
    def _ledger(self) -> _TimeLedger:
        return _TimeLedger(self.run_dir / "timings.json")

    def _base_training_queries(self) -> tuple[set[str], list[str]]:
        """The training-query fingerprints of the base (a registry version, a registry folder, or a folder
        exported with its record) and of the bases it was trained from, with the versions that had any.
        A model trained from ``t1-embed@1`` has seen t1's training queries: the leakage check must refuse
        them. Records written since carry their bases' (``training_queries_inherited_from``, even
        empty); older ones name their base, followed here."""
        ref, record = self._base_record()
        registry = ModelRegistry(self.settings.models_dir)
        try:
            folder = Path(self.request.base).expanduser()
            if record is None and self.request.base != "base" and folder.is_dir():
                return self._training_of_plain_folder(registry, folder)
            return training_queries_with_bases(registry, ref, record)
        finally:
            registry.close()

    @staticmethod
    def _training_of_plain_folder(registry: ModelRegistry, folder: Path) -> tuple[set[str], list[str]]:
        """A base folder of no registry record (a run's ``final/``, a plain copy of a version's folder) that
        holds the files of versions registered here was trained on their queries: found by its files."""
        from unirank.registry.files import files_digest

        copy = registry.training_of_files(files_digest(folder))
        return set(copy.get("training_queries", [])), list(copy.get("training_queries_inherited_from", []))

    def _base_record(self) -> tuple[str | None, dict | None]:
        """The base's ref and registry record: none for `base`, a hub id or a folder of no registry."""
        if self.request.base == "base":
            return None, None
        folder = Path(self.request.base).expanduser()
        if folder.is_dir():
            from unirank.registry.store import MARKER_FILE

            try:  # a registry's folder names its version; one `models export` wrote also carries its record
                marker = json.loads((folder / MARKER_FILE).read_text())
                ref = f"{marker['name']}@{marker['version']}"
            except (OSError, ValueError, KeyError, TypeError):
                return None, None
            if isinstance(marker.get("record"), dict):
                return ref, {**marker["record"], "lineage": {"exported_from": ref}}
        else:
            ref = self.base_ref
        registry = ModelRegistry(self.settings.models_dir)
        try:
            return (ref, registry.get(ref).record) if registry.exists(ref) else (ref, None)
        finally:
            registry.close()

    def _register(self, registry: ModelRegistry, name: str, folder: str, role: str,
                  record: dict) -> tuple[ModelVersion, bool]:
        """Register once per run: a resumed run that already registered reuses that version (True); one
        whose version was deleted since registers a new one (False), which a marker alone did not tell."""
        marker = self.run_dir / folder / "registered.json"
        if marker.exists():
            ref = json.loads(marker.read_text())["ref"]
            if registry.exists(ref):
                return registry.get(ref), True
        from unirank.registry.describe import describe_model_folder

        path = self.run_dir / folder / "final"
        version = registry.register(name, role, path=path, record={**describe_model_folder(path, role), **record})
        marker.write_text(json.dumps({"ref": version.ref}))
        return version, False

    def _unregister_embedder(self, registry: ModelRegistry, version: ModelVersion) -> None:
        """Remove the embedder this run registered when its reranker was not (Ctrl-C or an error between
        the two): left, NAME-embed@N stood without its reranker, and --fresh then orphaned it. What was
        done is kept in ``registration_note`` for the interrupt's message."""
        try:
            registry.delete(version.ref)
            (self.run_dir / "embedder" / "registered.json").unlink(missing_ok=True)
        except BaseException as exc:  # a second Ctrl-C, or the registry busy: say what is left
            self.registration_note = (f"{version.ref} is registered without its reranker ({exc!r} stopped its "
                                      f"removal): delete it with `unirank models delete {version.ref}`, or run "
                                      "the same command again to register the reranker beside it.")
            log.warning(self.registration_note)
            return
        self.registration_note = (f"{version.ref} was registered and removed again: its reranker was not "
                                  "registered; the same command registers both.")

    def _corpus_index(self) -> str:
        req = self.request
        if req.index:
            if makes_vectors_of(self.embedder, self.backend.model(req.index)):
                return req.index
            # Hard negatives are mined with this embedder's query vectors: they need its document vectors.
            return reembedded_index(self.backend, req.index, self.embedder, stage=self.stage)
        assert req.beir is not None
        return ensure_beir_index(self.settings, self.backend, self.embedder, req.beir, self.stage)

    def _training_data(self, index: str, chunks: list[Chunk]) -> tuple[list[TrainingPair], dict]:
        data_file = self.run_dir / "training_pairs.jsonl"
        stats_file = self.run_dir / "training_data.json"
        if data_file.exists() and stats_file.exists():
            self.stage("training data: reusing the mined pairs of this run")
            return read_pairs(data_file), json.loads(stats_file.read_text())
        req = self.request
        labelled, stats = self._labelled(chunks)
        use_pseudo = req.pseudo if req.pseudo is not None else not labelled
        stats["labelled_pairs"] = len(labelled)
        miner = HardNegativeMiner(self.backend, index, self.embedder, self.settings.search, req.mining,
                                  progress=lambda what, n, total: self.stage(f"{what}: {n}/{total}"))
        pairs: list[TrainingPair] = []
        if labelled:
            mined, mstats = miner.mine(labelled, check_consistency=False, relevant=judged_documents(labelled))
            pairs += mined
            stats["labelled_mining"] = mstats.to_dict()
        if use_pseudo:
            self.stage("generating pseudo-queries")
            generated = PseudoQueryGenerator(seed=req.seed, kinds=req.pseudo_kinds).generate(chunks)
            # Mine a margin more than the cap: the consistency filter drops some.
            with_margin = int(req.max_pseudo_pairs * 1.2)
            if LLM_KIND in req.pseudo_kinds:
                generated += self._llm_queries(chunks, with_margin // len(req.pseudo_kinds))
            sampled = _sample_by_origin(generated, with_margin, req.seed)
            mined, mstats = miner.mine(sampled, check_consistency=True)
            mined = _sample_by_origin(mined, req.max_pseudo_pairs, req.seed)
            pairs += mined
            stats["pseudo_generated"] = _count_origins(generated)
            stats["pseudo_kept"] = _count_origins(mined)
            stats["pseudo_mining"] = mstats.to_dict()
        random.Random(req.seed).shuffle(pairs)
        write_pairs(data_file, pairs)
        stats_file.write_text(json.dumps(stats, indent=1))
        return pairs, stats

    def _llm_queries(self, chunks: list[Chunk], share: int) -> list[TrainingPair]:
        """About ``share`` questions, the ``llm`` kind's part of the pseudo-queries."""
        req, chat = self.request, self.settings.chat
        self.stage(f"asking {chat.llm_model} at {masked_url(chat.llm_base_url or '')} for questions (doc2query)")
        writer = LLMQueryWriter(chat, self.run_dir / "doc2query.jsonl", seed=req.seed,
                                progress=lambda n, total: self.stage(f"doc2query: {n}/{total} passages")
                                if n % 50 == 0 or n == total else None)
        return writer.write(chunks, share)

    def _labelled(self, chunks: list[Chunk]) -> tuple[list[TrainingPair], dict]:
        req = self.request
        pairs: list[TrainingPair] = []
        stats: dict = {}
        if req.pairs:
            pair_file = read_pair_file(req.pairs)
            pairs += with_documents(pair_file.pairs, chunks)
            warning = pair_file.warning(req.pairs)
            if warning:
                self.stage(warning)
                stats["pairs_negative_same_as_positive"] = len(pair_file.negatives_same_as_positive)
        if req.qrels:
            queries = self.qrels_queries
            from_qrels, skipped = pairs_from_qrels(queries, load_qrels(req.qrels), chunks)
            pairs += from_qrels
            if skipped:
                self.stage(f"warning: {sum(skipped.values())} relevant judgements of {req.qrels} left out: "
                           + ", ".join(f"{n} {why.removeprefix('qrels_').replace('_', ' ')}" for why, n in skipped.items()))
                stats.update(skipped)
        if req.feedback:
            feedback = self.feedback_pairs
            self.stage(f"feedback: {len(feedback.pairs)} labelled pairs from {feedback.events} events")
            pairs += feedback.pairs
            stats.update(feedback.stats)
        if req.clicks:
            from unirank.training.clicks import load_click_pairs

            clicks = load_click_pairs(req.clicks, chunks, min_dwell_s=req.min_dwell_s,
                                      max_negatives=req.mining.negatives_per_pair)
            self.stage(f"clicks: {len(clicks.pairs)} labelled pairs from {clicks.stats['click_pages']} result pages")
            pairs += clicks.pairs
            stats.update(clicks.stats)
        pairs, dropped = without_own_positives(pairs)
        if dropped:  # the label sources disagree: one's negative is another's positive of the same query
            self.stage(f"warning: {dropped} negative(s) that are a positive of the same query left out: "
                       "a passage cannot be both")
            stats["negatives_that_are_positives"] = dropped
        return pairs, stats


class _TimeLedger:
    """Seconds spent per stage (and per run) in a run folder, summed over the runs of one command."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _read(self) -> dict[str, float]:
        try:
            return {k: float(v) for k, v in json.loads(self.path.read_text()).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            return {}

    def seconds(self, key: str) -> float:
        return self._read().get(key, 0.0)

    def add(self, key: str, seconds: float) -> None:
        if not self.path.parent.is_dir():
            return
        data = self._read()
        data[key] = round(data.get(key, 0.0) + seconds, 3)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.replace(self.path)


def validation_corpus(chunks: list[Chunk], validation: list[TrainingPair], seed: int,
                      distractors: int = 500) -> dict[str, str]:
    """The validation queries' documents plus a sample of others: re-encoding the whole corpus at
    every evaluation would cost more than the training steps on a CPU."""
    firsts = {c.doc_id: c.embedding_input() for c in chunks if c.ordinal == 0}
    wanted = {p.doc_id for p in validation}
    others = sorted(set(firsts) - wanted)
    sample = random.Random(seed).sample(others, min(distractors, len(others)))
    corpus = {d: firsts[d] for d in sorted(wanted) if d in firsts}
    corpus.update({d: firsts[d] for d in sample})
    for p in validation:  # every validation positive must be findable
        if p.origin == "pairs":  # the passage the pair names, not its document's first one
            corpus[p.doc_id] = p.positive
        corpus.setdefault(p.doc_id, p.positive)
    return corpus


def _sample_by_origin(pairs: list[TrainingPair], cap: int, seed: int) -> list[TrainingPair]:
    """At most ``cap`` pairs, the same share from every kind of pseudo-query."""
    if len(pairs) <= cap:
        return pairs
    groups: dict[str, list[TrainingPair]] = {}
    for p in pairs:
        groups.setdefault(p.origin, []).append(p)
    rng = random.Random(seed)
    share = cap // len(groups)
    out: list[TrainingPair] = []
    for items in groups.values():
        out += rng.sample(items, min(share, len(items)))
    return out


def _count_origins(pairs: list[TrainingPair]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for p in pairs:
        counts[p.origin] = counts.get(p.origin, 0) + 1
    return counts


def _check_training_qrels(path: Path) -> None:
    """Qrels that judge nothing relevant train on nothing: an empty file, or every grade 0, was refused only
    after indexing, as qrels that "name no document that is in the index" (the wrong cause, and no file)."""
    qrels = load_qrels(path)
    if not any(grade > 0 for judged in qrels.values() for grade in judged.values()):
        what = "holds no judgement" if not qrels else "judges no document relevant (every score is 0 or less)"
        raise TrainingError(f"--qrels {path} {what}: training takes pairs from the scores above 0 "
                            "(query-id<TAB>corpus-id<TAB>score); give judgements of relevant documents.")


def check_beir_folder(folder: Path) -> None:
    """A file given as the folder (its corpus.jsonl, most often) was said to "not exist"."""
    folder = Path(folder)
    if folder.is_file():
        hint = f" ({folder.parent}, if this is its corpus)" if folder.suffix.lower() == ".jsonl" else ""
        raise TrainingError(f"--beir {folder} is a file, not a BEIR folder: give the folder that holds corpus.jsonl, "
                            f"queries.jsonl and qrels/{hint}.")
    if not folder.is_dir():
        raise TrainingError(f"--beir {folder}: no such folder (a BEIR folder holds corpus.jsonl, queries.jsonl "
                            "and qrels/).")


def beir_set_name(folder: Path) -> str:
    """A BEIR folder as eval sets (``beir:NAME-DIGEST``) and its cached indexes name it: its name, and a
    digest of its resolved path. By its name alone, two folders called ``beir`` shared one index, and the
    second's corpus was mixed into the first's (eval scored documents of both)."""
    resolved = Path(folder).resolve()
    return f"{resolved.name[:60]}-{hashlib.sha256(os.fsencode(resolved)).hexdigest()[:8]}"


def beir_index_name(folder: Path, embedder: Embedder) -> str:
    sig = embedder.signature
    return derived_index_name(f"beir-{beir_set_name(folder)}", f"{sig.name}-{sig.version}")


def ensure_beir_index(settings: Settings, backend: SearchBackend, embedder: Embedder, folder: Path,
                      stage: Stage, *, name: str | None = None) -> str:
    """Index a BEIR corpus with ``embedder`` once; later calls find it unchanged and skip it.

    ``name``: another index than the cached one, for vectors used once (an optimized copy's quality check:
    under the cached name, a killed check's index passed for the next copy's, whose vectors it is not)."""
    from unirank.ingest.pipeline import PREVIOUS_KEPT, Ingestor

    name = name or beir_index_name(folder, embedder)
    # The resolved path, as the index's name has it: the same folder reached through a link is one source.
    corpus = Path(folder).resolve() / "corpus.jsonl"
    if not corpus.exists():
        raise TrainingError(f"{folder} is not a BEIR folder: corpus.jsonl is missing.")
    cached = backend.model(name) if backend.exists(name) else None
    if cached is not None and not makes_vectors_of(embedder, cached):
        # This function's own cache, yet another model's vectors are in it (an `index rebuild` of it).
        stage(f"{name} holds {cached}'s vectors, not {embedder.signature}'s: indexing it again")
        backend.delete_index(name)
    stage(f"indexing {corpus} into {name} (skipped when unchanged)")
    existed = backend.exists(name)
    report = Ingestor(backend, embedder, settings.chunking, settings.storage, settings.ingest).run(str(corpus), name)
    if not report.ok:
        # A bad line fails the whole file: the index holds the corpus as it was before (or nothing), and
        # scoring it, or saying it "does not exist", hid the line to fix.
        if not existed and backend.exists(name):
            backend.delete_index(name)
        reasons = [reason.removesuffix(PREVIOUS_KEPT) for _, reason in report.failed]
        if report.stopped:
            reasons.append(f"indexing stopped: {report.stopped}")
        raise EvaluationDataError(f"{corpus} could not be indexed: {'; '.join(reasons)}. Nothing was scored or "
                                  "trained on; fix the file and run again.")
    return name
