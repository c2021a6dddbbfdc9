"""A version's held-out figures, and the comparison that decides whether it may replace another.

Figures are kept per eval set, queries, judgments and system (``evaluation_key``); a promotion compares
two versions only on an evaluation both had, since figures measured on other queries, judgments or
systems say nothing about which is better.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:  # store imports this module
    from unirank.registry.store import ModelVersion

#: The held-out metric that decides promotions.
PROMOTION_METRIC = "ndcg@10"


def evaluation_key(figures: dict[str, Any]) -> str:
    """Which evaluation figures come from: the eval set's name, digests of its queries and of their
    judgments, and the system that measured them. A version keeps one figure per key, so a reranker's pair
    figure is not replaced by a later one over another embedder's results."""
    parts = [str(figures.get("eval_set") or "an unnamed eval set")]
    for field, label in (("eval_queries", "queries"), ("eval_qrels", "qrels")):
        if figures.get(field):
            parts.append(f"{label} {str(figures[field])[:12]}")
    if figures.get("system"):
        parts.append(f"system {figures['system']}")
    return ", ".join(parts)


def evaluations(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every held-out evaluation of a version, by ``evaluation_key``, in the order first recorded.

    Records written before figures were kept per eval set hold one evaluation, ``metrics`` (a later
    evaluation on other queries replaced it, and promotion could then compare nothing). Figures stored
    under an older key are keyed as they are keyed now."""
    stored = record.get("evaluations")
    kept = [v for v in stored.values() if isinstance(v, dict)] if isinstance(stored, dict) else []
    found = {evaluation_key(figures): figures for figures in kept}
    latest = record.get("metrics")
    if isinstance(latest, dict) and latest:
        found.setdefault(evaluation_key(latest), latest)
    return found


def superseded(stored: dict[str, Any], figures: dict[str, Any]) -> bool:
    """Whether ``stored`` figures are an older measurement of what ``figures`` measure: the same eval set,
    queries and system, recorded before judgments were digested (so ``figures`` re-measured them)."""
    return not stored.get("eval_qrels") and bool(figures.get("eval_qrels")) and \
        evaluation_key(stored) == evaluation_key({k: v for k, v in figures.items() if k != "eval_qrels"})


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


def same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two figures were measured on the same eval set, queries and judgments, where both say
    which (figures recorded before a field was kept are compared)."""
    for field in ("eval_set", "eval_queries", "eval_qrels"):
        if a.get(field) and b.get(field) and a[field] != b[field]:
            return False
    return True


def comparable(a: dict[str, Any], b: dict[str, Any], role: str | None = None) -> bool:
    """Whether two evaluations of two versions of one ``role`` measured the same thing: the same eval set,
    queries and judgments (``same_data``), and the same system where both say which. Two rerankers'
    figures over different embedders' results, or an embedder's kNN figure and another's hybrid one, say
    nothing of which version is better (``trained_pairs`` is the exception)."""
    setups = system_setup(a, role), system_setup(b, role)
    if None not in setups and setups[0] != setups[1]:
        return False
    return same_data(a, b)


def trained_with(version: ModelVersion) -> str | None:
    """The version ``version`` was trained with, as this registry names it. None for one registered from a
    copy (``lineage``): registered before ``trained_with`` went under its lineage, an export's record kept it
    here, naming a version of the registry it came from (which this one may lack, or hold as another model)."""
    return None if "lineage" in version.record else version.record.get("trained_with")


def over_its_partner(figures: dict[str, Any], reranker: ModelVersion) -> bool:
    """Whether a reranker's figure ran it over the embedder it was trained with (its ``trained_with``):
    the pair `unirank eval --models NAME@N` scores."""
    partner = trained_with(reranker)
    return bool(partner) and system_setup(figures, "reranker") == ("hybrid+rerank", partner)


def trained_pairs(new: dict[str, Any], old: dict[str, Any], candidate: ModelVersion, current: ModelVersion) -> bool:
    """Whether two rerankers' figures compare their trained pairs: each over the embedder it was trained
    with, on the same data. That is what promoting NAME-embed@2 and then NAME-rerank@2 after `eval --models
    NAME@1,NAME@2` replaces, though the two rerankers ran over different embedders."""
    return (candidate.role == "reranker" and over_its_partner(new, candidate) and over_its_partner(old, current)
            and same_data(new, old))


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
    """Compare the two on an evaluation both had (the same eval set, queries, judgments and system): the
    one of the set the candidate was trained on, else the first the candidate was evaluated on. Two
    rerankers with none in common are compared as trained pairs (``trained_pairs``) where both have one."""
    metric = PROMOTION_METRIC
    new_sets = {k: f for k, f in candidate.evaluations.items() if f.get(metric) is not None}
    old_sets = {k: f for k, f in current.evaluations.items() if f.get(metric) is not None}
    evaluate_both = _evaluate_both(candidate, current, new_sets)
    if not old_sets:
        which = (f"{current.ref} has no held-out {metric} to compare with" if new_sets
                 else f"neither {candidate.ref} nor {current.ref} has a held-out {metric}")
        return PromotionCheck(unchecked=f"{which}. To check it, evaluate both on the same queries "
                                        f"({evaluate_both}) and promote again")
    if not new_sets:
        key, old = next(iter(old_sets.items()))
        return PromotionCheck(refusal=f"{candidate.ref} has no held-out {metric}; {current.ref} (current) "
                                      f"has {old[metric]:.4f} ({key}). Evaluate it first: {evaluate_both}.")
    pairs = _matched(new_sets, old_sets, lambda new, old: comparable(new, old, candidate.role))
    as_pairs = not pairs
    if as_pairs:
        pairs = _matched(new_sets, old_sets, lambda new, old: trained_pairs(new, old, candidate, current))
    if not pairs:
        return PromotionCheck(refusal=(
            f"{candidate.ref} was evaluated on other queries or with another system ({'; '.join(new_sets)}) "
            f"than {current.ref} ({'; '.join(old_sets)}), so their {metric} cannot be compared. Evaluate both "
            f"on the same queries with the same models: {evaluate_both}."))
    key, new, old = next((p for p in pairs if _trained_on(candidate, p[1].get("eval_set"))), pairs[0])
    if as_pairs:
        return _pairs_compared(candidate, current, key, new, old)
    if new[metric] < old[metric]:
        return PromotionCheck(refusal=f"{candidate.ref} scores {metric} {new[metric]:.4f} on the held-out set "
                                      f"({key}), worse than {current.ref} at {old[metric]:.4f}.")
    return PromotionCheck(compared_on=f"{metric} {new[metric]:.4f} against {old[metric]:.4f} for "
                                      f"{current.ref} on {key}")


def _matched(new_sets: dict[str, dict[str, Any]], old_sets: dict[str, dict[str, Any]],
             match: Callable[[dict[str, Any], dict[str, Any]], bool]) -> list[tuple[str, dict, dict]]:
    """Each candidate figure with the first of the current version's that ``match`` pairs it with."""
    return [(key, new, old) for key, new in new_sets.items()
            for old in [next((o for o in old_sets.values() if match(new, o)), None)] if old is not None]


def _pairs_compared(candidate: ModelVersion, current: ModelVersion, key: str, new: dict[str, Any],
                    old: dict[str, Any]) -> PromotionCheck:
    """Two rerankers compared by their trained pairs' figures: said as such, since each ran over another
    embedder, with the command that compares the two rerankers alone."""
    metric = PROMOTION_METRIC

    def pair(version: ModelVersion) -> str:
        return f"{version.record['trained_with']} + {version.ref}"

    same_embedder = _evaluate_both(candidate, current, {key: new})
    if new[metric] < old[metric]:
        return PromotionCheck(refusal=(
            f"the trained pair {pair(candidate)} scores {metric} {new[metric]:.4f} on the held-out set "
            f"({new.get('eval_set')}), worse than {pair(current)} at {old[metric]:.4f}. To compare the two "
            f"rerankers over one embedder's results instead: {same_embedder}."))
    return PromotionCheck(compared_on=(
        f"the trained pairs compared: {pair(candidate)} {metric} {new[metric]:.4f} against {pair(current)} "
        f"{old[metric]:.4f} on {new.get('eval_set')} (each reranker over the embedder it was trained with; over "
        f"one embedder's results: {same_embedder})"))


def _evaluate_both(candidate: ModelVersion, current: ModelVersion, new_sets: dict[str, dict[str, Any]]) -> str:
    """The `unirank eval` command that measures both versions alike, on the eval set the candidate's
    figures name (``eval_options``). Two rerankers rerank one embedder's results: the one the candidate was
    trained with (named alone, rerankers rerank the base model's)."""
    options = next((f["eval_options"] for f in sorted(new_sets.values(), key=lambda f: not _trained_on(
        candidate, f.get("eval_set"))) if f.get("eval_options")), "...")
    models = [current.ref, candidate.ref]
    if candidate.role == "reranker" and trained_with(candidate):
        models.insert(0, trained_with(candidate))
    return f"unirank eval {options} --models {','.join(models)}"
