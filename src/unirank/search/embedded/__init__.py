"""Embedded backend: SQLite + tantivy + usearch."""
