"""The offline chatbot on CISI: answer latency, citation faithfulness, and the 'not covered' threshold.

1. Ingests CISI (``../shared/data/cisi/corpus.jsonl``) through ``Unirank.ingest`` (default settings).
2. Asks CISI queries through ``ChatService`` with the offline extractive answerer (hybrid search,
   base bi-encoder rerank of ``chat.rerank_candidates`` passages, sentence scoring) and measures,
   per question, the time to the first streamed token and to the whole answer (p50/p95).
   **Baseline** in the same run, on the same queries: plain ``Unirank.search`` (hybrid, top_k =
   ``chat.top_k``, no rerank), i.e. what a search box would cost.
3. Citation faithfulness: the fraction of answers whose every quoted sentence is inside the
   passage its ``[n]`` cites, that passage being the indexed chunk's text (target 1.0).
4. The 'not covered' threshold: the best rerank score of on-topic questions (CISI queries; the
   sample handbook's questions) against off-topic ones (general knowledge), the share answered /
   refused at the default ``chat.min_score_cosine``, and the threshold that would separate them best.

    .venv/bin/python bench/chat_answers.py [--queries 50] [--reranker PATH_TO_CROSS_ENCODER]
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

NAME = "chat_answers"
#: A run of quotes from one passage and its one marker: "A" "B" [1].
QUOTED_RUN = re.compile(r"((?:\u201c[^\u201d]+\u201d ?)+)\[(\d+)\]")
QUOTE = re.compile(r"\u201c([^\u201d]+)\u201d")

#: Questions the sample handbook answers, and ones it does not.
SAMPLE_ON = [
    "How do I rotate an API key?", "how long do old API keys keep working after rotation",
    "who updates the status page during an outage", "what does SEV2 mean", "where is customer data kept",
    "recovery point objective", "How do I reset my password?", "how much does the team plan cost",
    "what should I do on my first day", "how often are backups taken", "rate limit per key", "Do you support SSO?",
]
#: General-knowledge questions: neither CISI (library and information science) nor the handbook covers them.
OFF_TOPIC = [
    "What is the capital of France?", "How do I bake sourdough bread?", "Who won the 2018 football world cup?",
    "What is the boiling point of water at sea level?", "How to train a puppy to sit", "Explain quantum entanglement",
    "best hiking trails in Colorado", "What is the plot of Hamlet?", "how do I change a car tire",
    "What causes the seasons on Earth?", "How many calories are in a banana?", "Who painted the Mona Lisa?",
    "How do I fix a leaking faucet?", "What is the speed of light?", "Which planet has the most moons?",
    "How do vaccines work?", "What is the tallest mountain in Africa?", "How do I make espresso at home?",
    "What are the rules of cricket?", "How long should I boil an egg?", "Why is the sky blue?",
    "What is photosynthesis?", "How do I tie a bowline knot?", "What is the population of Tokyo?",
    "Best exercises for lower back pain", "How do solar panels produce electricity?",
]


def faithful(answer, texts: dict[str, str]) -> bool:
    """Every quoted sentence is one of the spans its [n] cites, and that passage is the indexed chunk. Quotes
    from one passage share a marker ("A" "B" [1]); read as one quote, such a run failed the check."""
    by_n = {c.n: c for c in answer.citations}
    quotes = [(quote.group(1), int(run.group(2)))
              for run in QUOTED_RUN.finditer(answer.answer) for quote in QUOTE.finditer(run.group(1))]
    if not quotes:
        return False
    for sentence, n in quotes:
        c = by_n.get(n)
        if c is None or c.passage != texts.get(c.chunk_id) or c.passage[c.start:c.end] != c.text:
            return False
        if as_quoted(sentence) not in [as_quoted(c.passage[a:b]) for a, b in c.spans]:
            return False
    return True


def as_quoted(text: str) -> str:
    """A span as the extractive answerer quotes it: whitespace squashed, its own curly double quotes single."""
    return " ".join(text.split()).replace("\u201c", "\u2018").replace("\u201d", "\u2019")


def relevance(service, question: str, index: str) -> float:
    retrieval = service.retriever.retrieve(question, index)
    return float(retrieval.relevance if retrieval.relevance is not None else float("-inf"))


def best_threshold(on: list[float], off: list[float]) -> tuple[float, float]:
    """The cut that maximises balanced accuracy (answered on-topic + refused off-topic, halved)."""
    best = (float("nan"), -1.0)
    for cut in sorted(set(on + off)):
        acc = (sum(s >= cut for s in on) / len(on) + sum(s < cut for s in off) / len(off)) / 2
        if acc > best[1]:
            best = (cut, acc)
    return best


def calibration(service, index: str, on_topic: list[str] | list[float], off_qs: list[str]) -> dict:
    """``on_topic``: questions, or their scores when the answers already measured them."""
    threshold = service.retriever.threshold
    on = [s if isinstance(s, float) else relevance(service, s, index) for s in on_topic]
    off = [relevance(service, q, index) for q in off_qs]
    cut, acc = best_threshold(on, off)
    passed = [f"{q} ({s:.2f})" for q, s in zip(off_qs, off) if s >= threshold]
    if passed:
        print(f"  {index}: off-topic questions above the threshold: {'; '.join(passed)}")
    return {
        "threshold": threshold, "on_topic": len(on), "off_topic": len(off),
        "on_answered": sum(s >= threshold for s in on) / len(on),
        "off_refused": sum(s < threshold for s in off) / len(off),
        "on_p5": C.percentile(on, 5), "on_p50": C.percentile(on, 50), "on_min": min(on),
        "off_p50": C.percentile(off, 50), "off_p95": C.percentile(off, 95), "off_max": max(off),
        "best_threshold": cut, "best_balanced_accuracy": acc, "off_topic_answered": passed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--queries", type=C.positive_int, default=50, help="CISI queries to answer (of 112)")
    parser.add_argument("--data-dir", type=Path, help="reuse this data dir (CISI is indexed once, then skipped)")
    parser.add_argument("--reranker", help="calibrate a cross-encoder too (a folder or registry ref)")
    parser.add_argument("--rerank-candidates", type=C.positive_int, help="override chat.rerank_candidates")
    args = parser.parse_args()
    cisi = C.require_cisi()
    C.warn_if_busy()
    with tempfile.TemporaryDirectory() as tmp:
        run(cisi, args.data_dir or Path(tmp), args)


def run(cisi: Path, data_dir: Path, args) -> None:
    from unirank.api import Unirank
    from unirank.chat import ChatService
    from unirank.chat.types import Completed, Delta

    settings = C.isolated_settings(data_dir)
    if args.rerank_candidates:
        settings.chat.rerank_candidates = args.rerank_candidates
    ur = Unirank(settings)
    started = time.perf_counter()
    report = ur.ingest(str(cisi / "corpus.jsonl"), "cisi")
    print(f"CISI index: {ur.index_info('cisi').chunk_count} chunks ({time.perf_counter() - started:.0f}s, "
          f"{len(report.skipped)} unchanged files skipped)")
    ur.ingest(str(C.PROJECT_ROOT / "examples" / "sample-docs"), "sample")
    texts = {c.id: c.text for batch in ur.backend.iter_chunks("cisi") for c in batch}
    queries = [q for _, q in sorted(C.load_queries(cisi).items(), key=lambda kv: int(kv[0]))][: args.queries]
    service = ChatService(ur)  # no store: nothing is written
    chat = settings.chat

    for q in queries[:3]:  # warm-up: models loaded, caches filled
        ur.search(q, "cisi", top_k=chat.top_k)
        service.ask(q, "cisi")

    search_ms, ttft_ms, total_ms, retrieve_ms, scores = [], [], [], [], []
    grounded = faithful_count = 0
    for n, q in enumerate(queries, start=1):
        t = time.perf_counter()
        ur.search(q, "cisi", top_k=chat.top_k)
        search_ms.append((time.perf_counter() - t) * 1000)

        t = time.perf_counter()
        first = None
        for event in service.stream(q, "cisi"):
            if isinstance(event, Delta) and first is None:
                first = (time.perf_counter() - t) * 1000
            elif isinstance(event, Completed):
                answer = event.answer
        total_ms.append((time.perf_counter() - t) * 1000)
        ttft_ms.append(first if first is not None else total_ms[-1])
        retrieve_ms.append(answer.timings_ms.get("retrieve", float("nan")))
        scores.append(float(answer.relevance))
        if answer.grounded:
            grounded += 1
            faithful_count += faithful(answer, texts)
        if n % 10 == 0:
            print(f"  {n}/{len(queries)} questions")

    pct = lambda v, q: round(C.percentile(v, q), 1)  # noqa: E731
    rows = [
        ["plain search (baseline: hybrid, top 8, no rerank)", pct(search_ms, 50), pct(search_ms, 95)],
        [f"chat retrieval (hybrid + rerank of {chat.rerank_candidates})", pct(retrieve_ms, 50), pct(retrieve_ms, 95)],
        ["chat: time to first token", pct(ttft_ms, 50), pct(ttft_ms, 95)],
        ["chat: whole answer", pct(total_ms, 50), pct(total_ms, 95)],
    ]
    print(f"\nOffline extractive answerer on {len(queries)} CISI queries (base model, defaults):")
    print(C.table(["", "p50 ms", "p95 ms"], rows))
    fraction = faithful_count / grounded if grounded else float("nan")
    print(f"\nCitation faithfulness: {faithful_count}/{grounded} grounded answers quote only sentences that are in "
          f"the passages they cite = {fraction:.3f} (target 1.0)")
    print(f"Answered (relevance >= {service.retriever.threshold}): {grounded}/{len(queries)} CISI queries")

    print("\n'Not covered' calibration (best rerank score per question):")
    calib = {"cisi": calibration(service, "cisi", scores, OFF_TOPIC),
             "sample": calibration(service, "sample", SAMPLE_ON, OFF_TOPIC)}
    if args.reranker:
        cross_settings = settings.model_copy(deep=True)
        cross_settings.reranker.model = args.reranker
        cross = Unirank(cross_settings)
        cross.__dict__.update(embedder=ur.embedder, backend=ur.backend)
        cross_service = ChatService(cross)
        calib[f"cisi+{Path(args.reranker).name}"] = calibration(cross_service, "cisi", queries, OFF_TOPIC)
        calib[f"sample+{Path(args.reranker).name}"] = calibration(cross_service, "sample", SAMPLE_ON, OFF_TOPIC)
    headers = ["corpus", "threshold", "on answered", "off refused", "on p5", "on min", "off p95", "off max",
               "best cut", "bal. acc"]
    print(C.table(headers, [[k, v["threshold"], C.fmt(v["on_answered"], 3), C.fmt(v["off_refused"], 3),
                             C.fmt(v["on_p5"], 3), C.fmt(v["on_min"], 3), C.fmt(v["off_p95"], 3),
                             C.fmt(v["off_max"], 3), C.fmt(v["best_threshold"], 3),
                             C.fmt(v["best_balanced_accuracy"], 3)] for k, v in calib.items()]))
    ur.close()
    C.write_json(NAME, {
        "queries": len(queries), "settings": {"chat": chat.model_dump(mode="json"),
                                              "reranker": settings.reranker.model},
        "latency_ms": {"search_baseline": {"p50": pct(search_ms, 50), "p95": pct(search_ms, 95)},
                       "chat_retrieval": {"p50": pct(retrieve_ms, 50), "p95": pct(retrieve_ms, 95)},
                       "time_to_first_token": {"p50": pct(ttft_ms, 50), "p95": pct(ttft_ms, 95)},
                       "answer_total": {"p50": pct(total_ms, 50), "p95": pct(total_ms, 95)}},
        "grounded": grounded, "faithful": faithful_count, "faithfulness": fraction,
        "not_covered_calibration": calib,
    })


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
