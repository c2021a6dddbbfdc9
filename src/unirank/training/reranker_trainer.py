"""Fine-tune a cross-encoder reranker on positives and mined hard negatives (binary cross-entropy)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from unirank.training.checkpoints import resumable_checkpoint
from unirank.training.examples import TrainingPair

log = logging.getLogger(__name__)


@dataclass
class RerankerTrainingConfig:
    epochs: float = 1.0
    batch_size: int = 32
    learning_rate: float = 5e-5
    warmup_ratio: float = 0.1
    #: Inference length saved with the model; training truncates at ``train_length``.
    max_length: int = 256
    train_length: int = 160
    #: Hard negatives per positive in the reranker's data (CPU time grows with it).
    negatives_per_positive: int = 1
    seed: int = 13
    eval_steps: int = 0
    #: Stop after this many steps (-1: train the full epochs).
    max_steps: int = -1


def _rows(pairs: Sequence[TrainingPair], negatives_per_positive: int) -> dict[str, list]:
    rows: dict[str, list] = {"query": [], "passage": [], "label": []}
    for pair in pairs:
        rows["query"].append(pair.query)
        rows["passage"].append(pair.positive)
        rows["label"].append(1.0)
        for negative in pair.negatives[:negatives_per_positive]:
            rows["query"].append(pair.query)
            rows["passage"].append(negative)
            rows["label"].append(0.0)
    return rows


def train_reranker(
    base_path: str,
    train: Sequence[TrainingPair],
    validation: Sequence[TrainingPair],
    output_dir: Path,
    config: RerankerTrainingConfig,
) -> dict[str, float]:
    """A cross-encoder head on the base encoder (or a given cross-encoder), trained and saved to
    ``output_dir/final``; best checkpoint by validation reranking nDCG@10; resumable."""
    import torch
    from datasets import Dataset
    from sentence_transformers.cross_encoder import CrossEncoder
    from sentence_transformers.cross_encoder.evaluation import CrossEncoderRerankingEvaluator
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from sentence_transformers.cross_encoder.trainer import CrossEncoderTrainer
    from sentence_transformers.cross_encoder.training_args import CrossEncoderTrainingArguments

    model = CrossEncoder(base_path, num_labels=1, max_length=config.train_length, device="cpu",
                         local_files_only=Path(base_path).exists())
    rows = _rows(train, config.negatives_per_positive)
    dataset = Dataset.from_dict(rows)
    positives = sum(1 for y in rows["label"] if y > 0)
    negatives = len(rows["label"]) - positives
    loss = BinaryCrossEntropyLoss(model, pos_weight=torch.tensor(max(1.0, negatives / max(1, positives))))
    samples = [{"query": p.query, "positive": [p.positive], "negative": list(p.negatives)}
               for p in validation if p.negatives]
    evaluator = CrossEncoderRerankingEvaluator(samples=samples, at_k=10, name="val", batch_size=64,
                                               write_csv=False, always_rerank_positives=True)
    steps_per_epoch = max(1, len(dataset) // config.batch_size)
    total_steps = config.max_steps if config.max_steps > 0 else int(steps_per_epoch * config.epochs)
    eval_steps = config.eval_steps or min(steps_per_epoch, max(1, total_steps))
    checkpoints = output_dir / "checkpoints"
    args = CrossEncoderTrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        warmup_steps=int(config.warmup_ratio * steps_per_epoch * config.epochs),
        seed=config.seed,
        data_seed=config.seed,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model="eval_val_ndcg@10",
        greater_is_better=True,
        logging_steps=max(1, eval_steps // 4),
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
    )
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=dataset, loss=loss, evaluator=evaluator)
    resume = resumable_checkpoint(checkpoints)
    if resume:
        log.info("resuming reranker training from %s", resume)
    trainer.train(resume_from_checkpoint=resume)
    final = output_dir / "final"
    model.max_length = config.max_length
    model.save(str(final))
    scores = evaluator(model)
    return {k.removeprefix("val_"): float(v) for k, v in scores.items() if k.startswith("val_")}
