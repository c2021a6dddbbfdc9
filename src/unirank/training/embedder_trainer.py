"""Fine-tune the bi-encoder on in-batch + mined hard negatives (MNRL, or GISTEmbed guided by the base)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from unirank.errors import ConfigurationError, TrainingError
from unirank.models.loading import load_sentence_transformer
from unirank.models.precision import refuse_emulated_bf16_training
from unirank.training.checkpoints import best_checkpoint_arguments, resumable_checkpoint
from unirank.training.centering import DEFAULT_WHITENING, check_whitening_strength, freeze_centering
from unirank.training.examples import TrainingPair
from unirank.training.losses import KnownPositivesMNRL
from unirank.training.validation import validation_queries

log = logging.getLogger(__name__)


@dataclass
class EmbedderTrainingConfig:
    """Not done, measured on corpus-only CISI (all 76 judged queries; the tuned model's held-out kNN /
    hybrid nDCG@10 was 0.452 / 0.469): averaging its weights with the base model's (WiSE-FT) lost
    (0.439 / 0.456 half-way, 0.441 / 0.457 at 0.7 tuned), going past them along the same direction
    helped kNN only (1.3x: 0.456 / 0.465, 1.6x: 0.459 / 0.467), and averaging the checkpoints of its
    two epochs lost too (0.450 / 0.462). Nor did a soup of two runs on the same pairs (seeds 13 and 7,
    weights averaged; twice the training): 0.450 / 0.468 against 0.452 / 0.468 and 0.447 / 0.469 alone.
    On labelled CISI (held-out half, seed 13: 0.478 / 0.505), training once more from the base on the
    training and validation queries for the validated step count (3 more queries, 8 % more labels)
    raised kNN and not hybrid: 0.492 / 0.498, and 0.493 / 0.500 against 0.492 / 0.500 with seed 7.
    (A first version that kept the refit's best checkpoint on those now trained-on pairs, step 54 of
    84, gave 0.487 / 0.513 at seed 13: the spread of one idea's variants is the run-to-run noise.)"""

    epochs: float = 1.0
    #: Larger batches give more in-batch negatives, but not a clear gain here: CachedGISTEmbedLoss at 128
    #: (mini-batches of 32, 29 steps, 5e-5) gave corpus-only CISI held-out tuned kNN / hybrid nDCG@10
    #: 0.460 / 0.470 against 0.452 / 0.469 (within run-to-run noise), training 1,294 s against 545 s.
    #: Plain GIST at 64 (84 steps on the same pairs) gave 0.446 / 0.465 against 0.452 / 0.468, in 938 s.
    batch_size: int = 32
    #: The rate for pseudo-queries alone. On CISI, 5e-5 fitted their noise: held-out tuned kNN / hybrid
    #: nDCG@10 0.421 / 0.450 against 0.425 / 0.452 at 2e-5. With GIST, 3e-5 lost too (0.454 / 0.458 against
    #: 0.452 / 0.468), and so did freezing the token embeddings at 2e-5 (0.452 / 0.465).
    learning_rate: float = 2e-5
    #: The rate when people's labels are in the data: few pairs and ~80 steps need a larger one. On CISI
    #: (half the judged queries as labels), tuned kNN / hybrid nDCG@10 on the other half were 0.479 / 0.507
    #: at 5e-5 against 0.470 / 0.483 at 2e-5, and 0.494 / 0.488 against 0.471 / 0.476 with the halves swapped.
    #: Higher lost: 1e-4 gave 0.477 / 0.496 against 0.478 / 0.505 (known-positive mask, seed 13).
    labelled_learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    #: Loss for pseudo-queries alone. "gist" (GISTEmbedLoss) is MNRL that drops every in-batch or hard
    #: negative the guide (the model training starts from) scores above the positive: a pseudo-query
    #: is vague, and other passages in its batch often answer it too. On CISI, held-out tuned kNN / hybrid
    #: nDCG@10 0.443 / 0.461 against 0.425 / 0.452 with "mnrl", and 0.443 / 0.458 against 0.423 / 0.454
    #: with seed 7. A second round (pairs re-mined with the tuned model's index, GIST guided by it,
    #: trained from the base again) did not beat one: 0.442 / 0.457 against 0.445 / 0.462. Nor did
    #: distilling the hybrid into it (GIST plus a listwise KL toward base cosine + BM25/max over the
    #: positive, its negative and the two top hybrid hits; that teacher ranks the positive first for 88 %
    #: of pseudo-queries, the base alone for 50 %): 0.449 / 0.455. kNN learns BM25's view and the hybrid
    #: loses what made its two halves complementary.
    pseudo_query_loss: Literal["mnrl", "gist"] = "gist"
    #: Loss when people's labels are in the data; GIST did not help there (labelled CISI, held-out
    #: tuned hybrid 0.485 against 0.483 at 2e-5, below MNRL's 0.507 at 5e-5).
    labelled_loss: Literal["mnrl", "gist"] = "mnrl"
    #: With MNRL, never use a passage paired with the anchor's own query as one of its in-batch or hard
    #: negatives (``unirank.training.losses.KnownPositivesMNRL``). Labelled CISI, held-out tuned hybrid
    #: nDCG@10 with seeds 13 / 7 / 21: 0.5045 / 0.5000 / 0.5051 against 0.5058 / 0.5005 / 0.4943 without
    #: (and 0.5061 with seed 42).
    mask_known_positives: bool = True
    #: GISTEmbedLoss's similarity temperature (its default, 0.01, is for larger batches). A softer 0.1
    #: was worse on corpus-only CISI: held-out tuned kNN / hybrid nDCG@10 0.447 / 0.453 against 0.445 / 0.462.
    #: On the same pairs another day (bf16, all 76 judged queries): 0.02 gave 0.424 / 0.457 and 0.07 gave
    #: 0.458 / 0.465 against 0.452 / 0.468 at 0.05 (base 0.420 / 0.443): a softer one helps kNN, not hybrid.
    #: Its margin stays 0: masking also the negatives the guide scores within 0.05 (cosine) of the positive
    #: lost on the same pairs (0.449 / 0.456 against 0.452 / 0.469, bench/finetune_cisi.py --bf16). Its
    #: query-query and passage-passage negatives (contrast_anchors / contrast_positives, on by default)
    #: stay too: without them the same pairs gave 0.446 / 0.458 against 0.452 / 0.468.
    guide_temperature: float = 0.05
    #: Hard negatives per example given to the loss (0 = in-batch negatives only). The mined one earns its
    #: keep: in-batch negatives alone gave corpus-only CISI held-out tuned kNN / hybrid nDCG@10 0.446 / 0.461
    #: against 0.452 / 0.468 (same pairs, GIST). Two a row on labelled CISI (MNRL with the known-positive
    #: mask; only pairs with two mined negatives) gave held-out 0.482 / 0.494 against 0.478 / 0.505 (seed 13).
    hard_negatives: int = 1
    #: Training truncates here (CPU time grows with it); inference keeps the model maximum. 41 % of
    #: CISI's documents run past 160 tokens, but training at 256 was worse on corpus-only CISI (held-out
    #: tuned kNN / hybrid nDCG@10 0.449 / 0.463 against 0.452 / 0.469, bench/finetune_cisi.py --bf16)
    #: and took 1,127 s against 545 s.
    max_seq_length: int = 160
    seed: int = 13
    eval_steps: int = 0  # 0: evaluate once per epoch, at most max_evaluations times
    #: Small data trains many short epochs to reach ``min_steps`` (156 click pairs on CISI: 5 steps an
    #: epoch, 20 epochs), and evaluating and checkpointing after each cost ~10 s against a step's ~4.
    max_evaluations: int = 8
    #: Stop after this many steps (-1: train the full epochs).
    max_steps: int = -1
    #: Train at least this many steps, adding epochs when the data is small. Labelled CISI gives ~800
    #: pairs, 27 steps an epoch at batch 32, and one epoch under-trains: held-out tuned hybrid nDCG@10
    #: was 0.469 after 1 epoch, 0.484 after 2 and 0.491 after 3 (at 2e-5). Pseudo-queries (1,500 at
    #: most, 42 steps an epoch on CISI) get the floor with GIST: tuned kNN / hybrid 0.454 / 0.465 after
    #: 2 epochs against 0.443 / 0.461 after 1, and 0.448 / 0.460 against 0.443 / 0.458 with seed 7 (a
    #: small gain, mostly kNN's). Not with plain MNRL, which fitted their noise in ~1.9 epochs (held-out
    #: tuned kNN 0.424 -> 0.412). A 120-step floor (2.9 epochs) lost GIST's gain again (0.446 / 0.460
    #: against 0.455 / 0.468 at 80, default kinds), though validation picked the last epoch all the same.
    #: Labels did not gain from more either: 135 steps (5 epochs) gave held-out tuned kNN / hybrid
    #: 0.481 / 0.495 against 0.478 / 0.505 at 80 (labelled CISI, seed 13), validation picking step 104.
    min_steps: int = 80
    #: bf16 mixed precision (fp32 master weights) where the CPU computes bf16 natively (AMX or
    #: AVX512-BF16); ``unirank train --bf16`` sets it for both models. bench/finetune_cisi.py --bf16:
    #: held-out tuned hybrid + rerank +0.0253 over base hybrid corpus-only (fp32: +0.0200) and +0.0601
    #: with labels (fp32: +0.0615), training 891 s and 618 s (fp32, another day: ~1,140 s corpus-only);
    #: side by side, a forward + backward of 96 texts at 160 tokens took 5.4 s against 8.1 s. One run
    #: of each is no evidence of a quality change either way, so it is a speed option; off by default.
    bf16: bool = False
    #: Start from the base centred on the corpus and partly whitened (``unirank.training.centering``):
    #: learned from the passages alone and held fixed in training. Corpus-only CISI, held-out tuned
    #: hybrid nDCG@10 over seeds 13 / 7 / 21: 0.475 / 0.470 / 0.473 against 0.468 / 0.459 / 0.452
    #: from the plain base (kNN: 0.484 / 0.470 / 0.472 against 0.452 / 0.447 / 0.438).
    center_on_corpus: bool = True
    #: Fewer passages than this give a mean of a few texts, not of the domain: no centring then.
    center_min_passages: int = 100
    #: With centring, how far the corpus's principal directions are evened out (0: centring only,
    #: 0.5: full whitening; ``unirank.training.centering.whitening``). Applied with at least two
    #: passages a dimension (768 for a 384-dimensional model), else centring only.
    whitening_strength: float = DEFAULT_WHITENING

    def __post_init__(self) -> None:
        check_whitening_strength(self.whitening_strength)
        for name in ("pseudo_query_loss", "labelled_loss"):
            if getattr(self, name) not in ("mnrl", "gist"):
                raise ConfigurationError(f"Unknown embedder {name} {getattr(self, name)!r}: use 'mnrl' or 'gist'.")
            if getattr(self, name) == "gist" and self.hard_negatives > 1:
                raise ConfigurationError(
                    f"{name} 'gist' takes one hard negative per example (GISTEmbedLoss), but hard_negatives is "
                    f"{self.hard_negatives}: set hard_negatives to 0 or 1, or {name} to 'mnrl'.")
        if self.bf16:
            refuse_emulated_bf16_training()


def _usable(pairs: Sequence[TrainingPair], negatives: int) -> list[TrainingPair]:
    """The pairs that mining found ``negatives`` hard negatives for; the others are left out.

    Keeping them hurt. On labelled CISI queries (1,601 positives, 707 with no negative left once the
    judged-relevant hits were removed), held-out tuned kNN nDCG@10 was 0.456 without them, 0.433 with
    random negatives filled in, and 0.416 with every pair on in-batch negatives alone. That was before
    the known-positive mask; with it, random negatives filled in still lost (1,522 rows against ~860:
    tuned kNN / hybrid 0.463 / 0.477 against 0.478 / 0.505, seed 13): the weakly matched positives
    themselves hurt, not the false negatives they brought into each batch.
    """
    return [p for p in pairs if len(p.negatives) >= negatives]


def _columns(usable: Sequence[TrainingPair], negatives: int, *, row_labels: bool) -> dict[str, list]:
    """The trainer's columns; ``label`` carries each row's index to a loss that looks rows up."""
    rows: dict[str, list] = {"anchor": [p.query for p in usable], "positive": [p.positive for p in usable]}
    for i in range(negatives):
        rows[f"negative_{i + 1}"] = [p.negatives[i] for p in usable]
    if row_labels:
        rows["label"] = list(range(len(usable)))
    return rows


def planned_loss(config: EmbedderTrainingConfig, *, labelled: bool) -> str:
    """``labelled_loss`` when the data has labels, else ``pseudo_query_loss`` (see the config)."""
    return config.labelled_loss if labelled else config.pseudo_query_loss


def planned_max_steps(config: EmbedderTrainingConfig, steps_per_epoch: int, *, labelled: bool) -> int:
    """``config.max_steps``, or ``min_steps`` when ``config.epochs`` would train fewer, except MNRL on
    pseudo-queries (see the config); -1 trains ``config.epochs``.

    A step count, not epochs scaled from ``steps_per_epoch``: the trainer rounds epochs up to whole
    batches, and scaled epochs overshot (counted as ``len // batch_size``, the sample corpus's 33
    pairs at batch 32 made 2 batches an epoch, not 1, and a floor of 80 steps trained 160).
    """
    fits_noise = not labelled and planned_loss(config, labelled=False) == "mnrl"
    if not fits_noise and config.max_steps <= 0 and steps_per_epoch * config.epochs < config.min_steps:
        return config.min_steps
    return config.max_steps


def planned_eval_steps(config: EmbedderTrainingConfig, steps_per_epoch: int, total_steps: int) -> int:
    """``config.eval_steps``, else once an epoch but at most ``max_evaluations`` times (see the config)."""
    if config.eval_steps:
        return config.eval_steps
    return max(min(steps_per_epoch, max(1, total_steps)), math.ceil(total_steps / config.max_evaluations))


def planned_learning_rate(config: EmbedderTrainingConfig, *, labelled: bool) -> float:
    """``labelled_learning_rate`` when the data has labels, else ``learning_rate`` (see the config)."""
    return config.labelled_learning_rate if labelled else config.learning_rate


def _masks_known_positives(name: str, config: EmbedderTrainingConfig) -> bool:
    return name == "mnrl" and config.mask_known_positives


def _loss(name: str, model, base_path: str, config: EmbedderTrainingConfig, rows: Sequence[TrainingPair]):
    from sentence_transformers.sentence_transformer.losses import GISTEmbedLoss, MultipleNegativesRankingLoss

    if _masks_known_positives(name, config):
        return KnownPositivesMNRL(model, rows, config.hard_negatives)
    if name == "mnrl":
        return MultipleNegativesRankingLoss(model)
    return GISTEmbedLoss(model, load_sentence_transformer(base_path), temperature=config.guide_temperature)


def train_embedder(
    base_path: str,
    train: Sequence[TrainingPair],
    validation: Sequence[TrainingPair],
    corpus: dict[str, str],
    output_dir: Path,
    config: EmbedderTrainingConfig,
    baseline: str | None = None,
) -> dict:
    """Train, keep the best checkpoint on the validation queries, save to ``output_dir/final``.

    The figures returned are the kept model's at its inference length, as it serves, with
    ``selection_ndcg@10``, the one the checkpoint was chosen by (at the training length); under
    ``base``, ``baseline``'s on the same queries and passages (the model before any training).

    Checkpoints go to ``output_dir/checkpoints``; a re-run resumes from the latest one.
    Returns the best validation metrics.

    It starts from the base itself, with no unsupervised domain pass first: one TSDAE epoch on the
    corpus's sentences (7,200 on CISI, 631 s) wrecked the base's space (kNN nDCG@10 0.420 -> 0.130),
    and pseudo-query training from there reached only 0.398 / 0.436 kNN / hybrid, not 0.445 / 0.462.
    """
    from datasets import Dataset
    from sentence_transformers.sentence_transformer.evaluation import InformationRetrievalEvaluator
    from sentence_transformers.sentence_transformer.trainer import SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers,
        SentenceTransformerTrainingArguments,
    )

    model = load_sentence_transformer(base_path)
    if freeze_centering(model):
        log.info("the base is centred on the corpus: its centring stays fixed while the encoder trains")
    inference_length = model.max_seq_length
    model.max_seq_length = min(inference_length, config.max_seq_length)
    rows = _usable(train, config.hard_negatives)
    if not rows:  # a Trainer on no rows "trains" 0 steps and saves the base as if tuned
        raise TrainingError(f"None of the {len(train)} training pairs has {config.hard_negatives} hard negative(s): "
                            "mining found none (too few documents in the index): give the index more documents.")
    labelled = any(p.written_by_people for p in train)
    loss = planned_loss(config, labelled=labelled)
    dataset = Dataset.from_dict(_columns(rows, config.hard_negatives,
                                         row_labels=_masks_known_positives(loss, config)))
    if len(dataset) < config.batch_size:
        config.batch_size = max(2, len(dataset))

    grouped = validation_queries(validation)
    queries = {f"v{i}": q.query for i, q in enumerate(grouped)}
    relevant = {f"v{i}": q.doc_ids for i, q in enumerate(grouped)}
    evaluator = InformationRetrievalEvaluator(queries=queries, corpus=corpus, relevant_docs=relevant,
                                              name="val", ndcg_at_k=[10], mrr_at_k=[10],
                                              accuracy_at_k=[1, 10], precision_recall_at_k=[10],
                                              map_at_k=[100], batch_size=64, write_csv=False)
    steps_per_epoch = math.ceil(len(dataset) / config.batch_size)  # the loader keeps a short last batch
    log.info("embedder loss: %s (%s data)", loss, "labelled" if labelled else "pseudo-query")
    max_steps = planned_max_steps(config, steps_per_epoch, labelled=labelled)
    if max_steps != config.max_steps:
        log.info("%d pairs make %d steps an epoch: training %d steps", len(dataset), steps_per_epoch, max_steps)
    total_steps = max_steps if max_steps > 0 else int(steps_per_epoch * config.epochs)
    eval_steps = planned_eval_steps(config, steps_per_epoch, total_steps)
    checkpoints = output_dir / "checkpoints"
    args = SentenceTransformerTrainingArguments(
        num_train_epochs=config.epochs,
        max_steps=max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=planned_learning_rate(config, labelled=labelled),
        warmup_steps=int(config.warmup_ratio * total_steps),
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        **best_checkpoint_arguments(checkpoints, eval_steps=eval_steps, metric="eval_val_cosine_ndcg@10",
                                    seed=config.seed, bf16=config.bf16),
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=dataset,
                                         loss=_loss(loss, model, base_path, config, rows), evaluator=evaluator)
    resume = resumable_checkpoint(checkpoints)
    if resume:
        log.info("resuming embedder training from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    selection = _figures(evaluator(model))  # as the checkpoint was chosen: at the training length
    model.max_seq_length = inference_length  # chunks are cut to the model maximum, not the training one
    model.save(str(final))
    metrics: dict = _figures(evaluator(model))
    metrics.update({"selection_ndcg@10": selection["ndcg@10"], "selection_length": min(inference_length, config.max_seq_length),
                    "max_length": inference_length, "validation_queries": len(queries),
                    "validation_written_by_people": sum(1 for q in grouped if q.written_by_people)})
    if baseline is not None:
        metrics["base"] = {"model": baseline, **_figures(evaluator(load_sentence_transformer(baseline)))}
    return metrics


def _figures(scores: dict) -> dict[str, float]:
    return {k.removeprefix("val_cosine_"): float(v) for k, v in scores.items() if k.startswith("val_cosine_")}
