"""Run the model server: one process, or N replicas behind one port (uvicorn's supervisor restarts a dead one)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile

from unirank.serving.metrics import MULTIPROC_ENV
from unirank.settings import Settings


def run_model_server(settings: Settings, refs: list[str], *, host: str, port: int, replicas: int,
                     log_level: str = "info") -> None:
    import uvicorn

    # Replicas are fresh processes that read their settings from the environment.
    os.environ["UNIRANK_SERVING__MODELS"] = json.dumps(refs)
    os.environ["UNIRANK_SERVING__REPLICAS"] = str(replicas)
    metrics_dir = None
    if replicas > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = tempfile.mkdtemp(prefix="unirank-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run("unirank.serving.app:app_from_environment", factory=True, host=host, port=port,
                    workers=replicas if replicas > 1 else None, log_level=log_level,
                    timeout_graceful_shutdown=10)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
