"""The full fine-tuning loop on CISI, three strategies, scored on held-out queries.

1. corpus only: pseudo-queries from CISI's documents, no labels; scored on all 76 judged queries
   (none was ever trained on).
2. labels: half of the judged queries (split by query id, seeded) as training labels, scored on
   the other half.
3. clicks (only with ``--only clicks``): the same half of the queries, but as a search click log
   instead of labels: each query searched with the base model's hybrid ranking (top 10), and
   SIMULATED users click on it (a position-based click model over the qrels: they look at rank r
   with probability 1/r, click a relevant result they look at with 0.8 and an irrelevant one with
   0.1, and stay 15-90 s on a relevant one, 2-20 s on another; ``--min-dwell 10``). It measures what
   position bias and noisy clicks cost against the labels they come from; no real CISI log exists.

Prints nDCG@10 for bm25 / base knn / tuned knn / base hybrid / tuned hybrid / tuned hybrid +
tuned rerank (and base hybrid + base rerank), with training time. Targets: corpus-only tuned
hybrid+rerank >= base hybrid + 0.03; with labels >= + 0.06.

    .venv/bin/python bench/finetune_cisi.py [--only corpus|labels|clicks] [--epochs 1] [--seed 13]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, isolated_settings, positive_float, positive_int, require_cisi, table, write_json  # noqa: E402

#: `unirank train --seed`'s default; its runs keep the work-dir layout they had before --seed.
DEFAULT_SEED = 13


def run_strategy(strategy: str, cisi: Path, work: Path, epochs: float, max_pairs: int, bf16: bool = False,
                 seed: int = DEFAULT_SEED, reranker_layers: int | None = None) -> dict:
    from unirank.api import Unirank
    from unirank.evaluation.datasets import load_beir
    from unirank.evaluation.runner import Evaluation, resolve_specs
    from unirank.registry import ModelRegistry
    from unirank.training.embedder_trainer import EmbedderTrainingConfig
    from unirank.training.job import TrainJob, TrainRequest, ensure_beir_index
    from unirank.training.reranker_trainer import RerankerTrainingConfig

    folder = strategy if seed == DEFAULT_SEED else f"{strategy}-seed{seed}"
    settings = isolated_settings(work / (folder if reranker_layers is None else f"{folder}-layers{reranker_layers}"))
    data = load_beir(cisi).judged()
    log = lambda m: print(f"  [{strategy}] {m}", flush=True)  # noqa: E731
    request = TrainRequest(name=f"cisi-{strategy}", beir=cisi, max_pseudo_pairs=max_pairs, seed=seed,
                           embedder=EmbedderTrainingConfig(epochs=epochs, bf16=bf16, seed=seed),
                           reranker=RerankerTrainingConfig(epochs=epochs, bf16=bf16, seed=seed, layers=reranker_layers))
    held_out = data
    train_ids: set[str] = set()
    if strategy in ("labels", "clicks"):
        qids = sorted(data.queries)
        random.Random(0).shuffle(qids)
        train_ids = set(qids[: len(qids) // 2])
        held_out = data.subset(set(qids) - train_ids)
    if strategy == "labels":
        qrels_file = work / "train-qrels.tsv"
        qrels_file.write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{s}\n" for q in sorted(train_ids) for d, s in data.qrels[q].items()))
        request.qrels = qrels_file

    with Unirank(settings) as ur:
        if strategy == "clicks":
            request.clicks = simulate_click_log(ur, ensure_beir_index(settings, ur.backend, ur.embedder, cisi, log),
                                                data.subset(train_ids), work / "clicks.jsonl")
            request.min_dwell_s = 10.0
        started = time.perf_counter()
        result = TrainJob(settings, ur.backend, ur.embedder, request, stage=log).run()
        train_seconds = time.perf_counter() - started
        registry = ModelRegistry(settings.models_dir)
        specs = resolve_specs(["base", f"cisi-{strategy}"], registry)
        evaluation = Evaluation(settings, ur.backend, stage=log)
        evaluation._embedders["base"] = ur.embedder
        results = evaluation.run(held_out, specs,
                                 lambda emb: ensure_beir_index(settings, ur.backend, emb, cisi, log))
    tuned_e, tuned_r = result.embedder.ref, result.reranker.ref
    rows = {
        "bm25": results["bm25"],
        "base knn": results["knn:base"],
        "tuned knn": results[f"knn:{tuned_e}"],
        "base hybrid": results["hybrid:base"],
        "tuned hybrid": results[f"hybrid:{tuned_e}"],
        "base hybrid + base rerank": results["hybrid+rerank:base+base"],
        "tuned hybrid + tuned rerank": results[f"hybrid+rerank:{tuned_e}+{tuned_r}"],
    }
    return {"queries": results["_meta"]["queries"], "train_seconds": round(train_seconds, 1),
            "reranker_layers": reranker_layers,
            "timings": result.embedder.record.get("timings"), "data": result.stats, "systems": rows,
            "gain_vs_base_hybrid": round(rows["tuned hybrid + tuned rerank"]["ndcg@10"] - rows["base hybrid"]["ndcg@10"], 4)}


def simulate_click_log(ur, index: str, train, path: Path, pages_per_query: int = 10, seed: int = 0) -> Path:
    """Result pages of the base hybrid ranking with clicks of a position-based click model (see above)."""
    rng = random.Random(seed)
    with path.open("w", encoding="utf-8") as handle:
        for qid in sorted(train.queries):
            hits = ur.search(train.queries[qid], index, mode="hybrid", top_k=10, rerank=False).hits
            relevant = {d for d, grade in train.qrels[qid].items() if grade > 0}
            for _ in range(pages_per_query):
                clicked = []
                for rank, hit in enumerate(hits, start=1):
                    good = hit.chunk.doc_id in relevant
                    if rng.random() < 1 / rank and rng.random() < (0.8 if good else 0.1):
                        clicked.append({"id": hit.id, "dwell_s": round(rng.uniform(15, 90) if good else rng.uniform(2, 20), 1)})
                handle.write(json.dumps({"query": train.queries[qid], "shown": [h.id for h in hits],
                                         "clicked": clicked}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=["corpus", "labels", "clicks"])
    parser.add_argument("--epochs", type=positive_float, default=1.0)
    parser.add_argument("--max-pairs", type=positive_int, default=1500)
    parser.add_argument("--work-dir", type=Path, help="Keep runs here (resumable) instead of a temp dir.")
    parser.add_argument("--bf16", action="store_true",
                        help="Train both models in bf16 mixed precision (`unirank train --bf16`; CPUs with AMX).")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help="Training seed (`unirank train --seed`): the pseudo-query sample, the validation split, "
                             "the training order. The held-out query split stays fixed.")
    parser.add_argument("--reranker-layers", type=positive_int,
                        help="`unirank train --reranker-layers`: keep the base's first N layers in the reranker.")
    args = parser.parse_args()
    cisi = require_cisi()
    strategies = [args.only] if args.only else ["corpus", "labels"]
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="unirank-finetune-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for strategy in strategies:
            print(f"\n== strategy: {strategy} ==", flush=True)
            report[strategy] = run_strategy(strategy, cisi, work, args.epochs, args.max_pairs, args.bf16, args.seed,
                                            args.reranker_layers)
    targets = {"corpus": "target +0.03", "labels": "target +0.06", "clicks": "no target: simulated clicks"}
    for strategy, r in report.items():
        print(f"\n{strategy}: {r['queries']} held-out queries, training {r['train_seconds']} s "
              f"({r['timings']}); data {r['data']}")
        print(table(["system", "nDCG@10", "Recall@100", "MRR@10"],
                    [[name, fmt(s["ndcg@10"]), fmt(s["recall@100"]), fmt(s["mrr@10"])] for name, s in r["systems"].items()]))
        print(f"tuned hybrid+rerank vs base hybrid: {r['gain_vs_base_hybrid']:+.4f} nDCG@10 ({targets[strategy]})")
    write_json("finetune_cisi", {"epochs": args.epochs, "max_pairs": args.max_pairs, "bf16": args.bf16, "seed": args.seed,
                                  "results": report})


if __name__ == "__main__":
    main()
