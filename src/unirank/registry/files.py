"""A model folder's files and their digest: what tells an identical copy from a changed one.

Here rather than in ``store`` so that exports (``export``) and the registry can both use it without
importing each other.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Iterable

from unirank.processes import is_running

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


#: A staging folder whose writer cannot be asked (another machine's, or named before writers were) is
#: taken as abandoned once this old: a registration's copy or an export takes minutes.
STALE_AFTER_S = 6 * 3600


def staging_name(prefix: str) -> str:
    """A staging folder's name, ``PREFIXPID-HOST-RANDOM``: it says which process writes it, so a later
    one can tell a folder left by a killed registration or optimize (hundreds of MB, kept forever) from
    one still being written. (No '@': transformers reads a path with one as a hub id at a revision.)"""
    return f"{staging_prefix(prefix)}{uuid.uuid4().hex[:12]}"


def staging_prefix(prefix: str) -> str:
    """``staging_name`` less its random end (for ``tempfile``, which adds its own, without '-')."""
    return f"{prefix}{os.getpid()}-{socket.gethostname()}-"


def sweep_stale(folders: Iterable[Path], prefix: str) -> list[Path]:
    """Remove the staging folders among ``folders`` (named ``staging_name(prefix)``, or ``prefix...``
    before that) whose writer is gone: a process of this machine that no longer runs, or, where that
    cannot be asked, a folder unchanged for ``STALE_AFTER_S``. Returns those removed."""
    removed = []
    for folder in folders:
        if folder.name.startswith(prefix) and folder.is_dir() and _abandoned(folder, prefix):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def writer_gone(named: str, host: str) -> bool | None:
    """For a name ending ``PID-HOST-RANDOM`` (``named``, its prefix taken off): whether its writer, a process
    of this machine (``host`` as such names spell it), is gone; None where the name cannot say (another
    machine's, an older form) or the system cannot be asked."""
    pid, sep, named_host = named.rpartition("-")[0].partition("-")
    if sep and pid.isascii() and pid.isdigit() and named_host == host and os.name == "posix":
        return not is_running(int(pid))
    return None


def _abandoned(folder: Path, prefix: str) -> bool:
    gone = writer_gone(folder.name[len(prefix):], socket.gethostname())
    if gone is not None:
        return gone
    try:
        stat = folder.stat()
    except OSError:
        return False
    # ctime too: copytree gives a copy its source's (old) mtime, and changes its ctime in doing so.
    return time.time() - max(stat.st_mtime, stat.st_ctime) > STALE_AFTER_S
