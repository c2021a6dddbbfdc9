"""Prometheus metrics, one registry per app (several replicas aggregate through a shared folder)."""

from __future__ import annotations

import glob
import os
import re
import time
from typing import Any, Awaitable, Callable, MutableMapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess

from unirank.processes import is_running

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class ServerMetrics:
    def __init__(self) -> None:
        #: With replicas, each process writes to the shared folder and any one can report all.
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry()
        own = None if self.multiprocess else self.registry
        self.requests = Counter("unirank_requests", "HTTP requests served.",
                                ["endpoint", "status"], registry=own)
        self.latency = Histogram("unirank_request_latency_seconds", "Request latency.",
                                 ["endpoint"], buckets=_LATENCY_BUCKETS, registry=own)
        self.inputs = Counter("unirank_inputs", "Texts embedded or pairs reranked.",
                              ["model", "kind"], registry=own)
        self.batch_size = Histogram("unirank_batch_size", "Items per model forward pass (micro-batch).",
                                    ["model", "kind"], buckets=_BATCH_BUCKETS, registry=own)
        self.queue_depth = Gauge("unirank_queue_depth", "Items waiting for the model.",
                                 ["model", "kind"], registry=own, multiprocess_mode="livesum")
        self.swaps = Counter("unirank_model_swaps", "Hot swaps after an alias moved.", ["model"],
                             registry=own)
        self.swap_failures = Counter("unirank_model_swap_failures",
                                     "Versions an alias moved to that failed to load (the old one kept serving).",
                                     ["model"], registry=own)
        if self.multiprocess:
            forget_dead_processes(os.environ[MULTIPROC_ENV])
            multiprocess.MultiProcessCollector(self.registry)

    def exposition(self) -> bytes:
        if self.multiprocess:  # a replica killed since this one started
            forget_dead_processes(os.environ[MULTIPROC_ENV])
        return generate_latest(self.registry)

    def process_exited(self) -> None:
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


def forget_dead_processes(directory: str) -> None:
    """Drop the live gauges of processes that died without a clean exit (SIGKILL, the OOM killer): only a
    clean exit marks a process dead, so unirank_queue_depth summed a killed replica's last queue for ever."""
    if os.name != "posix":  # os.kill(pid, 0) would end the process on Windows
        return
    for path in glob.glob(os.path.join(directory, "gauge_live*_*.db")):
        match = re.search(r"_(\d+)\.db$", path)
        if match and not is_running(int(match.group(1))):
            try:
                multiprocess.mark_process_dead(int(match.group(1)), directory)
            except FileNotFoundError:  # another replica removed it first
                pass


Message = MutableMapping[str, Any]


class RequestMetricsMiddleware:
    """Counts requests by route and status and times them.

    Plain ASGI rather than ``@app.middleware("http")``, whose per-request wrapping of the request and
    response streams cost the server CPU on every small embedding request."""

    def __init__(self, app: Callable[..., Awaitable[None]], metrics: ServerMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception before the response started is a server error, as clients see it

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            endpoint = getattr(scope.get("route"), "path", "unmatched")  # set by the router on a match
            self.metrics.requests.labels(endpoint=endpoint, status=str(status)).inc()
            self.metrics.latency.labels(endpoint=endpoint).observe(time.perf_counter() - started)
