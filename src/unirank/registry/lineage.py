"""Which model versions make the same vectors.

An optimized copy (ONNX, int8, OpenVINO, bf16, a shorter window: ``unirank models optimize``) makes
the vectors of the version it was made from, to within rounding, so an index embedded by one can be
searched and extended with the other. Vectors of any two other models are not comparable, even at
the same dimensions: a query embedded by one model finds nothing meaningful among another's.
"""

from __future__ import annotations

from typing import Iterable

from unirank.registry.store import ModelVersion


def _source_of(version: ModelVersion, by_ref: dict[str, ModelVersion]) -> str:
    """The version an optimized copy was made from, followed to the one that was not optimized."""
    ref, seen = version.ref, set()
    while ref not in seen and ref in by_ref and by_ref[ref].record.get("optimized_from"):
        seen.add(ref)
        ref = str(by_ref[ref].record["optimized_from"])
    return ref


def same_vector_refs(versions: Iterable[ModelVersion], ref: str, *, bundled_base_ref: str) -> frozenset[str]:
    """Refs whose vectors are interchangeable with ``ref``'s: itself, its source and its source's copies.

    ``bundled_base_ref`` is how an index names vectors of the bundled base model loaded as ``base``;
    ``models optimize base`` registers that model (``bundled_base``), so it and its copies join it.
    """
    by_ref = {v.ref: v for v in versions}
    if ref == bundled_base_ref:
        sources = {_source_of(v, by_ref) for v in by_ref.values() if v.record.get("bundled_base")}
    elif ref in by_ref:
        sources = {_source_of(by_ref[ref], by_ref)}
    else:
        return frozenset({ref})
    family = {ref, *sources} | {r for r, v in by_ref.items() if _source_of(v, by_ref) in sources}
    if any(by_ref[r].record.get("bundled_base") for r in family if r in by_ref):
        family.add(bundled_base_ref)
    return frozenset(family)
