"""Pick the checkpoint to resume from: the newest *complete* one.

A run killed while writing a checkpoint leaves a folder without ``trainer_state.json``; resuming
from it fails, so such folders are removed and the previous checkpoint is used.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

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
