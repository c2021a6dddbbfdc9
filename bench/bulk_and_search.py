"""A search's query while a bulk ingest embeds through the same model server.

One run, one machine, ``unirank serve models --model base`` started four times (``serving.max_batch_size``
256, 64, 32 and 16):

* **Baseline:** ``serving.max_batch_size`` 256, so a 256-text request runs as one forward pass, as every
  request did before the micro-batcher cut large requests into turns.
* **Ours:** the default 32: a large request runs 32 texts at a time, its rest queued behind whatever
  arrived meanwhile (turns of 64 and 16 are measured too: the setting trades a waiting query's latency
  against the bulk's throughput).

On each, a bulk client POSTs ``/v1/embeddings`` with 256 CISI passages of ``--words`` words (about an
ingest batch of full chunks) ``--bulk-requests`` times back to back. Meanwhile a search client sends
one CISI query at a time, ``--interval`` seconds apart. Printed: the query latency p50/p95/max during
the bulk, the queries slower than ``remote.timeout_s`` (10 s: the remote client then gives up and
retries), and the bulk's texts/s (what taking turns costs it).

    .venv/bin/python bench/bulk_and_search.py [--words 180] [--bulk-requests 3] [--interval 0.25]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402
from serving import rerank_passages  # noqa: E402  (passages of exactly N words of the running CISI text)

sys.path.insert(0, str(C.PROJECT_ROOT / "tests"))
from serving_helpers import ModelServer  # noqa: E402

NAME = "bulk_and_search"
BULK_TEXTS = 256
#: The remote client's default per-request timeout (remote.timeout_s).
CLIENT_TIMEOUT_S = 10.0
BASELINE, OURS = "one pass per request (max_batch_size 256): baseline", "turns of 32 (the default): ours"
SETUPS = ((BASELINE, 256), ("turns of 64", 64), (OURS, 32), ("turns of 16", 16))


async def measure(url: str, bulk: list[str], queries: list[str], bulk_requests: int,
                  interval: float) -> tuple[float, list[float]]:
    """Seconds the bulk took, and each query's latency while it ran."""
    async with httpx.AsyncClient(base_url=url, timeout=300) as http:
        (await http.post("/v1/embeddings", json={"input": bulk[:16], "truncate": True})).raise_for_status()
        finished = asyncio.Event()
        latencies: list[float] = []

        async def ingest() -> float:
            started = time.perf_counter()
            for _ in range(bulk_requests):
                (await http.post("/v1/embeddings", json={"input": bulk, "truncate": True})).raise_for_status()
            finished.set()
            return time.perf_counter() - started

        async def search() -> None:
            await asyncio.sleep(interval)  # the bulk's first request is in
            n = 0
            while not finished.is_set():
                started = time.perf_counter()
                query = queries[n % len(queries)]
                (await http.post("/v1/embeddings", json={"input": query, "truncate": True})).raise_for_status()
                latencies.append(time.perf_counter() - started)
                n += 1
                await asyncio.sleep(interval)

        bulk_s, _ = await asyncio.gather(ingest(), search())
        return bulk_s, latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--words", type=C.positive_int, default=180,
                        help="Words per bulk passage (~256 tokens at 180).")
    parser.add_argument("--bulk-requests", type=C.positive_int, default=3, help="256-text requests the bulk sends.")
    parser.add_argument("--interval", type=C.non_negative_float, default=0.25,
                        help="Seconds between a search's queries.")
    args = parser.parse_args()

    cisi = C.require_cisi()
    load_before = C.warn_if_busy()
    bulk = rerank_passages(C.load_corpus(cisi), BULK_TEXTS, args.words)
    queries = list(C.load_queries(cisi).values())
    results = {}
    with tempfile.TemporaryDirectory(prefix="unirank-bulk-bench-") as tmp:
        for label, max_batch in SETUPS:
            server = ModelServer(Path(tmp) / f"batch{max_batch}", ["base"],
                                 env={"UNIRANK_SERVING__MAX_BATCH_SIZE": str(max_batch)})
            try:
                server.wait_ready()
                bulk_s, latencies = asyncio.run(measure(server.url, bulk, queries, args.bulk_requests, args.interval))
            finally:
                server.stop()
            results[label] = {
                "max_batch_size": max_batch, "queries": len(latencies),
                "query_p50_ms": round(C.percentile(latencies, 50) * 1000, 1),
                "query_p95_ms": round(C.percentile(latencies, 95) * 1000, 1),
                "query_max_ms": round(max(latencies, default=float("nan")) * 1000, 1),
                "queries_over_client_timeout": sum(t > CLIENT_TIMEOUT_S for t in latencies),
                "bulk_texts_per_s": round(BULK_TEXTS * args.bulk_requests / bulk_s, 1),
            }
            print(f"{label}: {results[label]}")

    print(f"\nA search's query embedding while a bulk client embeds {args.bulk_requests} x {BULK_TEXTS} passages of "
          f"{args.words} words (one query at a time, {args.interval:g} s apart)")
    print(C.table(["server", "queries", "p50 ms", "p95 ms", "max ms", f"> {CLIENT_TIMEOUT_S:g} s", "bulk texts/s"],
                  [[label, r["queries"], r["query_p50_ms"], r["query_p95_ms"], r["query_max_ms"],
                    r["queries_over_client_timeout"], r["bulk_texts_per_s"]] for label, r in results.items()]))
    base, ours = results[BASELINE], results[OURS]
    print(f"query p95: {ours['query_p95_ms']:.0f} ms against {base['query_p95_ms']:.0f} ms for one pass per request; "
          f"bulk throughput {ours['bulk_texts_per_s'] / base['bulk_texts_per_s']:.2f}x the baseline's")
    C.write_json(NAME, {"dataset": "cisi", "words": args.words, "bulk_requests": args.bulk_requests,
                        "bulk_texts": BULK_TEXTS, "interval_s": args.interval, "load_before": load_before,
                        "results": results})


if __name__ == "__main__":
    main()
