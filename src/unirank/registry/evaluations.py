"""A version's held-out figures, and the comparison that decides whether it may replace another.

Figures are kept per eval set (``evaluation_key``); a promotion compares two versions only on an
evaluation both had, since figures measured on other queries say nothing about which is better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # store imports this module
    from unirank.registry.store import ModelVersion

#: The held-out metric that decides promotions.
PROMOTION_METRIC = "ndcg@10"


def evaluation_key(figures: dict[str, Any]) -> str:
    """Which evaluation figures come from: the eval set's name and a digest of its queries."""
    eval_set = figures.get("eval_set") or "an unnamed eval set"
    queries = figures.get("eval_queries")
    return f"{eval_set}, queries {str(queries)[:12]}" if queries else str(eval_set)


def evaluations(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every held-out evaluation of a version, by ``evaluation_key``, in the order first recorded.

    Records written before figures were kept per eval set hold one evaluation, ``metrics`` (a later
    evaluation on other queries replaced it, and promotion could then compare nothing)."""
    stored = record.get("evaluations")
    found = {k: v for k, v in stored.items() if isinstance(v, dict)} if isinstance(stored, dict) else {}
    latest = record.get("metrics")
    if isinstance(latest, dict) and latest:
        found.setdefault(evaluation_key(latest), latest)
    return found


def system_setup(figures: dict[str, Any], role: str | None) -> tuple[str, ...] | None:
    """What a figure's system ran the version with: its mode (``knn``, ``hybrid``, ``hybrid+rerank``) and
    the other models in it, the version's own ref left out (None when the figure names no system).

    ``unirank eval`` records ``hybrid:EMBEDDER`` for an embedder and ``hybrid+rerank:EMBEDDER+RERANKER``
    for a reranker: the version is the first model of its system, or a reranker the last."""
    system = figures.get("system")
    if not isinstance(system, str) or not system:
        return None
    if role is None:
        return (system,)
    mode, _, models = system.partition(":")
    parts = models.split("+") if models else []
    return (mode, *(parts[:-1] if role == "reranker" else parts[1:]))


def comparable(a: dict[str, Any], b: dict[str, Any], role: str | None = None) -> bool:
    """Whether two evaluations of two versions of one ``role`` measured the same thing: the same eval set
    where both name one, the same queries where both say which, and the same system where both say which
    (figures recorded before either was kept are compared). Two rerankers' figures over different
    embedders' results, or an embedder's kNN figure and another's hybrid one, say nothing of which
    version is better."""
    if a.get("eval_set") and b.get("eval_set") and a["eval_set"] != b["eval_set"]:
        return False
    setups = system_setup(a, role), system_setup(b, role)
    if None not in setups and setups[0] != setups[1]:
        return False
    if a.get("eval_queries") and b.get("eval_queries"):
        return a["eval_queries"] == b["eval_queries"]
    return True


@dataclass(frozen=True)
class PromotionCheck:
    """What comparing a candidate with the version an alias names found."""

    #: Why the candidate must not replace the current version, or None.
    refusal: str | None = None
    #: Why nothing could be compared (the current version has no held-out figures), or None.
    unchecked: str | None = None
    #: The evaluation both were compared on, when they were.
    compared_on: str | None = None


def _trained_on(version: ModelVersion, eval_set: Any) -> bool:
    """Whether ``eval_set`` (``index:NAME``, ``beir:FOLDER``) is the corpus ``version`` was trained on
    (``corpus_index``: the index, a re-embedded copy ``INDEX--MODEL``, or ``beir-FOLDER--MODEL``)."""
    trained = version.record.get("corpus_index")
    kind, _, name = str(eval_set or "").partition(":")
    if not trained or not name or kind not in ("index", "beir"):
        return False
    base = name if kind == "index" else re.sub(r"[^A-Za-z0-9_-]", "-", f"beir-{name}")
    return trained == base or str(trained).startswith(f"{base}--")


def compare_for_promotion(candidate: ModelVersion, current: ModelVersion) -> PromotionCheck:
    """Compare the two on an evaluation both had (the same eval set and queries): the one of the set
    the candidate was trained on, else the first the candidate was evaluated on."""
    metric = PROMOTION_METRIC
    new_sets = {k: f for k, f in candidate.evaluations.items() if f.get(metric) is not None}
    old_sets = {k: f for k, f in current.evaluations.items() if f.get(metric) is not None}
    evaluate_both = f"unirank eval ... --models {current.ref},{candidate.ref}"
    if not old_sets:
        which = (f"{current.ref} has no held-out {metric} to compare with" if new_sets
                 else f"neither {candidate.ref} nor {current.ref} has a held-out {metric}")
        return PromotionCheck(unchecked=f"{which}. To check it, evaluate both on the same queries "
                                        f"({evaluate_both}) and promote again")
    if not new_sets:
        key, old = next(iter(old_sets.items()))
        return PromotionCheck(refusal=f"{candidate.ref} has no held-out {metric}; {current.ref} (current) "
                                      f"has {old[metric]:.4f} ({key}). Evaluate it first: {evaluate_both}.")
    pairs = [(key, new, old) for key, new in new_sets.items()
             for old in [next((o for o in old_sets.values() if comparable(new, o, candidate.role)), None)]
             if old is not None]
    if not pairs:
        def described(sets: dict[str, dict[str, Any]]) -> str:
            return "; ".join(f"{key}, system {f['system']}" if f.get("system") else key for key, f in sets.items())

        return PromotionCheck(refusal=(
            f"{candidate.ref} was evaluated on other queries or with another system ({described(new_sets)}) "
            f"than {current.ref} ({described(old_sets)}), so their {metric} cannot be compared. Evaluate both "
            f"on the same queries with the same models: {evaluate_both}."))
    key, new, old = next((p for p in pairs if _trained_on(candidate, p[1].get("eval_set"))), pairs[0])
    if new[metric] < old[metric]:
        return PromotionCheck(refusal=f"{candidate.ref} scores {metric} {new[metric]:.4f} on the held-out set "
                                      f"({key}), worse than {current.ref} at {old[metric]:.4f}.")
    return PromotionCheck(compared_on=f"{metric} {new[metric]:.4f} against {old[metric]:.4f} for "
                                      f"{current.ref} on {key}")
