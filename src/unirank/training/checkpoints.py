"""Checkpoints: how both trainers save them, and which one a re-run resumes from.

A run killed while writing a checkpoint leaves a folder without ``trainer_state.json``; resuming
from it fails, so such folders are removed and the previous checkpoint is used.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def resumable_checkpoint(checkpoints: Path) -> str | None:
    if not checkpoints.exists():
        return None
    found = sorted((p for p in checkpoints.glob("checkpoint-*") if p.name.split("-")[-1].isdigit()),
                   key=lambda p: int(p.name.split("-")[-1]))
    complete = None
    for folder in found:
        if (folder / "trainer_state.json").exists():
            complete = folder
        else:
            log.warning("removing incomplete checkpoint %s (the run was killed while saving it)", folder)
            shutil.rmtree(folder, ignore_errors=True)
    return str(complete) if complete else None


def remove_checkpoints(stage_dir: Path) -> None:
    """Remove a registered stage's checkpoints: each is a copy of the model with its optimizer state (about
    260 MB a stage for the bundled base's size), needed only to resume the stage. The last one's
    ``trainer_state.json`` (the loss and validation history, the best checkpoint's figure) is kept beside
    ``final/``, which stays for a re-run to register again."""
    checkpoints = stage_dir / "checkpoints"
    last = resumable_checkpoint(checkpoints)
    if last is not None:
        shutil.copyfile(Path(last) / "trainer_state.json", stage_dir / "trainer_state.json")
    shutil.rmtree(checkpoints, ignore_errors=True)


def best_checkpoint_arguments(checkpoints: Path, *, eval_steps: int, metric: str, seed: int,
                              bf16: bool) -> dict[str, Any]:
    """Trainer arguments the embedder and reranker share: validate and save every ``eval_steps``, keep
    the checkpoint best on ``metric`` (and one more, to resume from), seeded, on the CPU."""
    return dict(
        output_dir=str(checkpoints),
        seed=seed,
        data_seed=seed,
        eval_strategy="steps",
        eval_steps=eval_steps,
        save_strategy="steps",
        save_steps=eval_steps,
        save_total_limit=2,
        load_best_model_at_end=True,
        metric_for_best_model=metric,
        greater_is_better=True,
        logging_steps=max(1, eval_steps // 4),
        report_to="none",
        use_cpu=True,
        bf16=bf16,
        dataloader_num_workers=0,
    )
