"""A model folder's files and their digest: what tells an identical copy from a changed one.

Here rather than in ``store`` so that exports (``export``) and the registry can both use it without
importing each other.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: Written into every version's folder (name, version, role). An export writes it last, with the
#: version's whole record (``record``) and a digest of the files (``files_sha256``): registering the
#: exported folder restores the record (``unirank.registry.describe.exported_record``).
MARKER_FILE = "unirank_model.json"


def read_marker(folder: Path) -> dict[str, Any] | None:
    """A model folder's marker, or None when it has none (or holds no mapping). Raises OSError or
    ValueError when the file is there but cannot be read as JSON."""
    path = Path(folder) / MARKER_FILE
    if not path.is_file():
        return None
    marker = json.loads(path.read_text())
    return marker if isinstance(marker, dict) else None


def model_files(folder: Path) -> list[Path]:
    """A model folder's files, its marker (which says where the copy came from) left out."""
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.relative_to(folder).as_posix() != MARKER_FILE)


def file_listing(folder: Path) -> list[tuple[str, int]]:
    """Paths and sizes of a model folder's files: a cheap first test before digesting its contents."""
    return [(p.relative_to(folder).as_posix(), p.stat().st_size) for p in model_files(folder)]


def files_digest(folder: Path) -> str:
    """sha256 of a model folder's files (paths, sizes and contents; the marker left out): the same for
    an identical copy, whatever it is called, and different after any change to the weights."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for file in model_files(folder):
        digest.update(f"{file.relative_to(folder).as_posix()}\0{file.stat().st_size}\0".encode())
        with file.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
