"""The search layer: one backend Protocol (backend.py), the embedded default (embedded/), fusion and the searcher."""
