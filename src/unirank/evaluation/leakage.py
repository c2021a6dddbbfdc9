"""Refuse to score a model on queries it was trained on."""

from __future__ import annotations

from unirank.errors import LeakageError
from unirank.registry import ModelRegistry, ModelVersion
from unirank.registry.lineage import training_queries_with_bases
from unirank.training.examples import query_fingerprints


def trained_fingerprints(versions: list[ModelVersion], registry: ModelRegistry | None = None) -> dict[str, set[str]]:
    """Each version's training queries, its bases' included (followed in ``registry`` for records written
    before versions carried them)."""
    if registry is None:
        return {v.ref: set(v.record.get("training_queries") or []) for v in versions}
    return {v.ref: training_queries_with_bases(registry, v.ref, v.record)[0] for v in versions}


def leaked_queries(queries: dict[str, str], versions: list[ModelVersion],
                   registry: ModelRegistry | None = None) -> dict[str, list[str]]:
    """For each model, the evaluation query ids it saw in training: either fingerprint of the query (its
    words only, or as it is) among those recorded (``query_fingerprints``)."""
    prints = {qid: query_fingerprints(text) for qid, text in queries.items()}
    out: dict[str, list[str]] = {}
    for ref, trained in trained_fingerprints(versions, registry).items():
        hit = sorted(q for q, fps in prints.items() if fps & trained)
        if hit:
            out[ref] = hit
    return out


def check_no_leakage(queries: dict[str, str], versions: list[ModelVersion],
                     registry: ModelRegistry | None = None) -> None:
    raise_for_leaks(leaked_queries(queries, versions, registry))


def raise_for_leaks(leaks: dict[str, list[str]]) -> None:
    if leaks:
        detail = "; ".join(f"{ref} was trained on {len(ids)} of them (e.g. {', '.join(ids[:5])})"
                           for ref, ids in leaks.items())
        raise LeakageError(
            f"Refusing to evaluate on training queries: {detail}. Evaluate on held-out queries, or pass "
            "--holdout-only to drop the trained queries from this evaluation."
        )
