"""Run the model server: one process, or N replicas behind one port (uvicorn's supervisor restarts a dead one)."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Mapping

from unirank.serving.metrics import MULTIPROC_ENV
from unirank.settings import ServingSettings, Settings

log = logging.getLogger(__name__)
#: The variables that choose how OpenMP threads wait; one already set is left as it is.
OPENMP_VARIABLES = ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")


def openmp_environment(serving: ServingSettings, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables the server sets before torch loads OpenMP (see ``serving.openmp_spin_count``).

    Nothing when the setting is None or the environment already chooses how OpenMP threads wait.
    """
    if serving.openmp_spin_count is None or any(name in environ for name in OPENMP_VARIABLES):
        return {}
    return {"GOMP_SPINCOUNT": str(serving.openmp_spin_count)}


def exit_with_parent() -> None:
    """In a replica: stop (SIGTERM, a graceful shutdown) when the supervisor dies, even by SIGKILL or the
    OOM killer, which give it no chance to stop its replicas: they went on holding the port, so a
    restarted server could not listen there."""
    import multiprocessing

    parent = multiprocessing.parent_process()
    if parent is None:  # not a replica: one process serves
        return
    if sys.platform.startswith("linux") and _parent_death_signal(signal.SIGTERM):
        if os.getppid() != parent.pid:  # it died before the request took effect
            os.kill(os.getpid(), signal.SIGTERM)
        return

    def watch() -> None:  # elsewhere: notice that this process was handed to another parent
        while os.getppid() == parent.pid:
            time.sleep(1)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _parent_death_signal(signum: int) -> bool:
    """Linux's prctl(PR_SET_PDEATHSIG): the kernel sends ``signum`` when the parent exits."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(1, signum, 0, 0, 0) == 0  # 1 is PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # no libc with prctl: the watcher thread instead
        return False


METRICS_DIR_PREFIX = "unirank-metrics-"


def replicas_metrics_dir() -> str:
    """A new folder for the replicas' shared metrics files, named for this process, after removing those
    of servers that are gone: one killed with SIGKILL never removed its own, and each was left in the
    temp folder for good."""
    from unirank.registry.files import staging_prefix, sweep_stale

    mine = re.compile(rf"{METRICS_DIR_PREFIX}\d+-{re.escape(socket.gethostname())}-")
    leftovers = (path for path in Path(tempfile.gettempdir()).glob(f"{METRICS_DIR_PREFIX}*") if mine.match(path.name))
    sweep_stale(leftovers, METRICS_DIR_PREFIX)  # only folders named for a process: an older unirank's are left
    return tempfile.mkdtemp(prefix=staging_prefix(METRICS_DIR_PREFIX))


def run_model_server(settings: Settings, refs: list[str], *, host: str, port: int, replicas: int,
                     log_level: str = "info") -> None:
    import uvicorn

    openmp = openmp_environment(settings.serving, os.environ)
    if openmp and "torch" in sys.modules:
        log.warning("torch is already loaded, so serving.openmp_spin_count cannot take effect in this process")
    os.environ.update(openmp)  # replicas inherit it
    # Replicas are fresh processes that read their settings from the environment.
    os.environ["UNIRANK_SERVING__MODELS"] = json.dumps(refs)
    os.environ["UNIRANK_SERVING__REPLICAS"] = str(replicas)
    metrics_dir = None
    if replicas > 1 and not os.environ.get(MULTIPROC_ENV):
        metrics_dir = replicas_metrics_dir()
        os.environ[MULTIPROC_ENV] = metrics_dir
    try:
        uvicorn.run("unirank.serving.app:app_from_environment", factory=True, host=host, port=port,
                    workers=replicas if replicas > 1 else None, log_level=log_level,
                    timeout_graceful_shutdown=settings.serving.graceful_shutdown_s)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
