"""Which model versions make the same vectors.

An optimized copy (ONNX, int8, OpenVINO, bf16, a shorter window: ``unirank models optimize``) makes
the vectors of the version it was made from, to within rounding, so an index embedded by one can be
searched and extended with the other; so can an endpoint registered as serving a model registered
here (``serves``, checked on its vectors at registration). Vectors of any two other models are not
comparable, even at the same dimensions: a query embedded by one model finds nothing meaningful
among another's.
"""

from __future__ import annotations

from typing import Any, Iterable

from unirank.registry.store import ModelRegistry, ModelVersion


def _source_of(version: ModelVersion, by_ref: dict[str, ModelVersion], bundled_base_ref: str) -> str:
    """The model whose vectors ``version`` makes: followed through ``optimized_from`` (an optimized
    copy) and ``serves`` (an endpoint serving a model registered here) to one that is neither."""
    ref, seen = version.ref, set()
    while ref in by_ref and ref not in seen:
        seen.add(ref)
        record = by_ref[ref].record
        if record.get("bundled_base"):
            return bundled_base_ref
        link = record.get("optimized_from") or record.get("serves")
        if not link:
            return ref
        ref = str(link)
    return ref


def same_vector_refs(versions: Iterable[ModelVersion], ref: str, *, bundled_base_ref: str) -> frozenset[str]:
    """Refs whose vectors are interchangeable with ``ref``'s: the model they come from and every copy
    or endpoint of it.

    ``bundled_base_ref`` is how an index names vectors of the bundled base model loaded as ``base``;
    ``models optimize base`` registers that model (``bundled_base``), so it and its copies join it.
    """
    by_ref = {v.ref: v for v in versions}
    if ref != bundled_base_ref and ref not in by_ref:
        return frozenset({ref})
    source = bundled_base_ref if ref == bundled_base_ref else _source_of(by_ref[ref], by_ref, bundled_base_ref)
    return frozenset({ref, source} | {r for r, v in by_ref.items()
                                      if _source_of(v, by_ref, bundled_base_ref) == source})


def training_queries_with_bases(registry: ModelRegistry, ref: str | None,
                                record: dict[str, Any] | None) -> tuple[set[str], list[str]]:
    """The training-query fingerprints of ``record`` (version ``ref``) and of the versions it was trained
    from, with the refs that had any: a model trained from ``t1-embed@1`` has seen t1's queries too.
    Records written since training carried them (``training_queries_inherited_from``, even empty) are
    complete; older ones name their base, which is followed while it is a version of this registry."""
    prints: set[str] = set()
    sources: list[str] = []
    seen: set[str] = set()
    while record is not None:
        fingerprints = set(record.get("training_queries") or [])
        if fingerprints:
            prints |= fingerprints
            sources.append(ref or "?")
        base = str(record.get("base_model") or "")
        # Complete already, or a copy from another registry (its base_model names a version there).
        if "training_queries_inherited_from" in record or "lineage" in record or "@" not in base:
            break
        seen.add(ref or "")
        if base in seen or not registry.exists(base):
            break
        ref, record = base, registry.get(base).record
    return prints, sources
