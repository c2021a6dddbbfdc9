"""The full fine-tuning loop on CISI, two strategies, scored on held-out queries.

1. corpus only: pseudo-queries from CISI's documents, no labels; scored on all 76 judged queries
   (none was ever trained on).
2. labels: half of the judged queries (split by query id, seeded) as training labels, scored on
   the other half.

Prints nDCG@10 for bm25 / base knn / tuned knn / base hybrid / tuned hybrid / tuned hybrid +
tuned rerank (and base hybrid + base rerank), with training time. Targets: corpus-only tuned
hybrid+rerank >= base hybrid + 0.03; with labels >= + 0.06.

    .venv/bin/python bench/finetune_cisi.py [--only corpus|labels] [--epochs 1]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import fmt, isolated_settings, require_cisi, table, write_json  # noqa: E402


def run_strategy(strategy: str, cisi: Path, work: Path, epochs: float, max_pairs: int, bf16: bool = False) -> dict:
    from unirank.api import Unirank
    from unirank.evaluation.datasets import load_beir
    from unirank.evaluation.runner import Evaluation, resolve_specs
    from unirank.registry import ModelRegistry
    from unirank.training.embedder_trainer import EmbedderTrainingConfig
    from unirank.training.job import TrainJob, TrainRequest, ensure_beir_index
    from unirank.training.reranker_trainer import RerankerTrainingConfig

    settings = isolated_settings(work / strategy)
    data = load_beir(cisi).judged()
    log = lambda m: print(f"  [{strategy}] {m}", flush=True)  # noqa: E731
    request = TrainRequest(name=f"cisi-{strategy}", beir=cisi, max_pseudo_pairs=max_pairs,
                           embedder=EmbedderTrainingConfig(epochs=epochs, bf16=bf16),
                           reranker=RerankerTrainingConfig(epochs=epochs, bf16=bf16))
    held_out = data
    if strategy == "labels":
        qids = sorted(data.queries)
        random.Random(0).shuffle(qids)
        train_ids = set(qids[: len(qids) // 2])
        qrels_file = work / "train-qrels.tsv"
        qrels_file.write_text("query-id\tcorpus-id\tscore\n" + "".join(
            f"{q}\t{d}\t{s}\n" for q in sorted(train_ids) for d, s in data.qrels[q].items()))
        request.qrels = qrels_file
        held_out = data.subset(set(qids) - train_ids)

    with Unirank(settings) as ur:
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
            "timings": result.embedder.record.get("timings"), "data": result.stats, "systems": rows,
            "gain_vs_base_hybrid": round(rows["tuned hybrid + tuned rerank"]["ndcg@10"] - rows["base hybrid"]["ndcg@10"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", choices=["corpus", "labels"])
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--max-pairs", type=int, default=1500)
    parser.add_argument("--work-dir", type=Path, help="Keep runs here (resumable) instead of a temp dir.")
    parser.add_argument("--bf16", action="store_true",
                        help="Train both models in bf16 mixed precision (`unirank train --bf16`; CPUs with AMX).")
    args = parser.parse_args()
    cisi = require_cisi()
    strategies = [args.only] if args.only else ["corpus", "labels"]
    report: dict = {}
    with tempfile.TemporaryDirectory(prefix="unirank-finetune-") as tmp:
        work = args.work_dir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for strategy in strategies:
            print(f"\n== strategy: {strategy} ==", flush=True)
            report[strategy] = run_strategy(strategy, cisi, work, args.epochs, args.max_pairs, args.bf16)
    targets = {"corpus": 0.03, "labels": 0.06}
    for strategy, r in report.items():
        print(f"\n{strategy}: {r['queries']} held-out queries, training {r['train_seconds']} s "
              f"({r['timings']}); data {r['data']}")
        print(table(["system", "nDCG@10", "Recall@100", "MRR@10"],
                    [[name, fmt(s["ndcg@10"]), fmt(s["recall@100"]), fmt(s["mrr@10"])] for name, s in r["systems"].items()]))
        print(f"tuned hybrid+rerank vs base hybrid: {r['gain_vs_base_hybrid']:+.4f} nDCG@10 "
              f"(target {targets[strategy]:+.2f})")
    write_json("finetune_cisi", {"epochs": args.epochs, "max_pairs": args.max_pairs, "bf16": args.bf16,
                                  "results": report})


if __name__ == "__main__":
    main()
