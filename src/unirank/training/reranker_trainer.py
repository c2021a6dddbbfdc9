"""Fine-tune a cross-encoder reranker on positives and mined hard negatives (binary cross-entropy).

Why BCE and not a ranking loss: on labelled CISI (35 training queries, the same pairs, one epoch each),
MultipleNegativesRankingLoss with 3 in-batch negatives ranked better alone (held-out nDCG@10 0.347
against 0.275) but not once blended with the hybrid rank, which is how it serves (best 0.487
against 0.488), for 25 % more training time; LambdaLoss gained ~0.007 for 4x the time.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from unirank.models.precision import refuse_emulated_bf16_training
from unirank.training.checkpoints import best_checkpoint_arguments, resumable_checkpoint
from unirank.training.examples import RandomNegatives, TrainingPair
from unirank.training.validation import validation_queries

log = logging.getLogger(__name__)


@dataclass
class RerankerTrainingConfig:
    epochs: float = 1.0
    batch_size: int = 32
    #: The encoder's rate. A cross-encoder started from a bi-encoder needs a higher one than
    #: fine-tuning usually takes: at 5e-5 its loss stayed at ln 2 for a whole CPU-sized epoch.
    learning_rate: float = 2e-4
    #: The new scoring head's rate: it starts from random weights and must catch up in few steps.
    head_learning_rate: float = 2e-3
    warmup_ratio: float = 0.1
    #: Inference length saved with the model; training truncates at ``train_length``.
    max_length: int = 256
    train_length: int = 160
    #: Hard negatives per positive in the reranker's data (CPU time grows with it).
    negatives_per_positive: int = 1
    #: Negatives drawn at random from other pairs: easy ones that teach plain topicality first.
    random_negatives_per_positive: int = 1
    #: Start the cross-encoder from the embedder this run just tuned (when the base is a bi-encoder):
    #: on CISI with labels, from the base it lost 0.009 nDCG@10 to hybrid, from the tuned one it gained 0.011.
    start_from_tuned_embedder: bool = True
    seed: int = 13
    eval_steps: int = 0
    #: Stop after this many steps (-1: train the full epochs).
    max_steps: int = -1
    #: bf16 mixed precision (fp32 master weights), as ``EmbedderTrainingConfig.bf16``.
    bf16: bool = False
    #: Keep only the encoder's first N layers (None: all of them). A cross-encoder reads every
    #: candidate at every query, so its time is per layer: 3 of MiniLM's 6 halve it.
    layers: int | None = None

    def __post_init__(self) -> None:
        if self.bf16:
            refuse_emulated_bf16_training()


def _rows(pairs: Sequence[TrainingPair], negatives_per_positive: int, random_negatives: int = 0,
          seed: int = 13) -> dict[str, list]:
    rows: dict[str, list] = {"query": [], "passage": [], "label": []}
    easy = RandomNegatives(pairs, seed)
    for pair in pairs:
        rows["query"].append(pair.query)
        rows["passage"].append(pair.positive)
        rows["label"].append(1.0)
        for negative in pair.negatives[:negatives_per_positive] + easy.draw(pair, random_negatives):
            rows["query"].append(pair.query)
            rows["passage"].append(negative)
            rows["label"].append(0.0)
    return rows


def build_cross_encoder(base_path: str, max_length: int):
    """The base as a cross-encoder: a given cross-encoder as it is; a bi-encoder gets a linear
    scoring head on its mean-pooled tokens.

    Why not the usual classification head on [CLS]: all-MiniLM-L6-v2 was trained for mean
    pooling, and its [CLS]/pooler output hardly varies between pairs (std 0.03), so that head
    had nothing to learn from and its loss stayed at ln 2.
    """
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from unirank.models.loading import is_cross_encoder

    local = Path(base_path).exists()
    if is_cross_encoder(base_path):
        return CrossEncoder(base_path, num_labels=1, max_length=max_length, device="cpu", local_files_only=local)
    encoder = Transformer(base_path, transformer_task="feature-extraction", max_seq_length=max_length,
                          model_kwargs={"local_files_only": local}, processor_kwargs={"local_files_only": local},
                          config_kwargs={"local_files_only": local})
    dims = encoder.get_embedding_dimension()
    head = Dense(dims, 1, activation_function=None, module_output_name="scores")
    return CrossEncoder(modules=[encoder, Pooling(dims, "mean"), head], device="cpu")


def layer_stack(auto_model):
    """The transformer's list of layers ``keep_first_layers`` cuts (BERT, RoBERTa, MiniLM, MPNet, ELECTRA);
    None for an architecture that keeps them elsewhere (DistilBERT, ALBERT)."""
    return getattr(getattr(auto_model.base_model, "encoder", None), "layer", None)


def keep_first_layers(model, layers: int) -> None:
    """Cut the cross-encoder's transformer to its first ``layers`` layers, in place (saved so: the
    config's ``num_hidden_layers`` says it). The lower layers are kept, not every other one: they
    are the ones the embeddings above them were built on (Sajjad et al., 2023, "On the effect of
    dropping layers of pre-trained transformer models")."""
    from unirank.errors import TrainingError

    auto_model = model[0].auto_model
    stack = layer_stack(auto_model)
    if stack is None:
        raise TrainingError(f"--reranker-layers cuts a BERT-style encoder's layers; "
                            f"{type(auto_model).__name__} has none to cut: leave --reranker-layers out.")
    if not 1 <= layers <= len(stack):
        raise TrainingError(f"--reranker-layers must be 1 to {len(stack)} (the base's layers), got {layers}.")
    del stack[layers:]
    auto_model.config.num_hidden_layers = layers


def _optimizer(model, config: RerankerTrainingConfig):
    """AdamW with the scoring head on its own, higher rate (the Trainer adds the schedule)."""
    import torch

    def is_head(name: str) -> bool:
        if len(model) > 1:  # modules: encoder, pooling, head
            return name.startswith(f"{len(model) - 1}.")
        return bool({"classifier", "pooler", "score"} & set(name.split(".")))

    named = list(model.named_parameters())
    groups = [{"params": [p for n, p in named if not is_head(n)], "lr": config.learning_rate},
              {"params": [p for n, p in named if is_head(n)], "lr": config.head_learning_rate}]
    return torch.optim.AdamW([g for g in groups if g["params"]], weight_decay=0.01)


def train_reranker(
    base_path: str,
    train: Sequence[TrainingPair],
    validation: Sequence[TrainingPair],
    output_dir: Path,
    config: RerankerTrainingConfig,
    baseline: str | None = None,
) -> dict:
    """A cross-encoder head on the base encoder (or a given cross-encoder), trained and saved to
    ``output_dir/final``; best checkpoint by validation reranking nDCG@10; resumable.

    Returns the kept model's validation figures at the length it serves at (``max_length``), with
    ``selection_ndcg@10``, the figure the checkpoint was chosen by (at ``train_length``: the two differ,
    and recording only the first made the record disagree with the trainer's log), and under ``base``
    the same figures for ``baseline`` (a cross-encoder as it is, a bi-encoder by cosine, as the
    ``base`` reranker scores), on the same validation samples."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    from transformers import set_seed

    set_seed(config.seed)  # the new head's initial weights too, not only the Trainer's steps
    model = build_cross_encoder(base_path, config.train_length)
    if config.layers is not None:
        keep_first_layers(model, config.layers)
    rows = _rows(train, config.negatives_per_positive, config.random_negatives_per_positive, config.seed)
    dataset = Dataset.from_dict(rows)
    positives = sum(1 for y in rows["label"] if y > 0)
    negatives = len(rows["label"]) - positives
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(max(1.0, negatives / max(1, positives))))
    grouped = [q for q in validation_queries(validation) if q.negatives]
    samples = [{"query": q.query, "positive": q.positives, "negative": q.negatives} for q in grouped]
    evaluator = CrossEncoderRerankingEvaluator(samples=samples, at_k=10, name="val", batch_size=64,
                                               write_csv=False, always_rerank_positives=True)
    steps_per_epoch = max(1, len(dataset) // config.batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else int(steps_per_epoch * config.epochs)
    eval_steps = config.eval_steps or min(steps_per_epoch, max(1, total_steps))
    checkpoints = output_dir / "checkpoints"
    args = CrossEncoderTrainingArguments(
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * config.epochs),
        **best_checkpoint_arguments(checkpoints, eval_steps=eval_steps, metric="eval_val_ndcg@10",
                                    seed=config.seed, bf16=config.bf16),
    )
    resume = resumable_checkpoint(checkpoints)
    if resume:
        log.info("resuming reranker training from %s", resume)
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator,
                                  optimizers=(_optimizer(model, config), None))
    trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    selection = _figures(evaluator(model))  # as the checkpoint was chosen: at the training length
    model.max_seq_length = config.max_length
    model.save(str(final))
    metrics: dict = _figures(evaluator(model))  # as it serves
    metrics.update({"selection_ndcg@10": selection["ndcg@10"], "selection_length": config.train_length,
                    "max_length": config.max_length, "validation_queries": len(samples),
                    "validation_written_by_people": sum(1 for q in grouped if q.written_by_people)})
    if baseline is not None:
        metrics["base"] = {"model": baseline, **base_figures(baseline, evaluator, samples, config.max_length)}
    return metrics


def _figures(scores: dict) -> dict[str, float]:
    return {k.removeprefix("val_"): float(v) for k, v in scores.items() if k.startswith("val_")}


def base_figures(base_path: str, evaluator, samples: list[dict], max_length: int) -> dict[str, float]:
    """The validation figures of the reranker there is before training: a cross-encoder base as it is,
    a bi-encoder base by full-passage cosine (what ``reranker.model = base`` does)."""
    import numpy as np

    from unirank.models.loading import is_cross_encoder, load_sentence_transformer

    if is_cross_encoder(base_path):
        return _figures(evaluator(build_cross_encoder(base_path, max_length)))
    model = load_sentence_transformer(base_path)
    mrr, ndcg, ap = [], [], []
    for sample in samples:
        docs = sample["positive"] + [d for d in sample["negative"] if d not in sample["positive"]]
        vectors = model.encode([sample["query"], *docs], normalize_embeddings=True, show_progress_bar=False)
        scores = np.asarray(vectors[1:]) @ np.asarray(vectors[0])
        relevant = [True] * len(sample["positive"]) + [False] * (len(docs) - len(sample["positive"]))
        m, n, a = evaluator.compute_metrics(relevant, scores, len(sample["positive"]))
        mrr.append(m), ndcg.append(n), ap.append(a)
    at = evaluator.at_k
    return {"map": float(np.mean(ap)), f"mrr@{at}": float(np.mean(mrr)), f"ndcg@{at}": float(np.mean(ndcg))}
