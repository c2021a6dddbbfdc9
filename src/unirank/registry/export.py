"""Exporting a registered version's files to a folder or object storage.

The marker file (``MARKER_FILE``) is written last and holds the version's whole record (base model,
dimensions, data hash, hyper-parameters, training-query fingerprints, metrics and the eval sets they
were measured on), its lineage and a digest of its files: registering the folder restores the record,
so evaluation still refuses the queries it was trained on.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unirank.errors import ExportError
from unirank.registry.files import MARKER_FILE, files_digest, model_files, staging_name, sweep_stale
from unirank.timeutil import now_iso

if TYPE_CHECKING:  # store imports this module
    from unirank.registry.store import ModelVersion

log = logging.getLogger(__name__)

#: Written to an object storage export before its files and removed once its marker is written: it names
#: the version, so a prefix left partway (a dropped connection, Ctrl-C), which has no marker, is still
#: known as this version's export, and exporting again replaces it instead of refusing it as other files.
IN_PROGRESS_FILE = "unirank_model.exporting.json"


def export_version(mv: ModelVersion, to: str, storage: Any = None, *, force: bool = False,
                   registry_root: Path | None = None) -> str:
    """Copy ``mv``'s files to ``to``/NAME-vVERSION (a folder or object storage URI); returns its URI.

    Exporting again replaces an earlier export of the version: into a folder, the copy is made in a
    fresh folder beside it and swapped in by renaming, so files of the earlier one never linger; to
    object storage (no renames), a note naming the version (``IN_PROGRESS_FILE``) is written first and
    the earlier marker deleted, the files written, objects not in this export deleted, the marker
    written last and the note removed. A destination that holds anything else is refused unless
    ``force``, and so is a folder inside ``registry_root`` (the registry's own files).
    """
    from unirank.ingest.sources import filesystem_for, missing_bucket, storage_problem
    from unirank.settings import StorageSettings

    storage = storage or StorageSettings()
    if mv.path is None:
        raise ExportError(f"{mv.ref} is a remote endpoint; there are no files to export: its server holds them.")
    missing = mv.files_missing()
    if missing:  # exported nothing, and said it had
        raise ExportError(f"{missing}: nothing was exported. Restore the folder (or the data dir it was in), or "
                          "register the model again.")
    location = filesystem_for(to, storage, what="export destination (--to)")
    dest = f"{location.path.rstrip('/')}/{mv.name}-v{mv.version}"
    if not location.is_object_storage and registry_root is not None:
        _refuse_inside_registry(Path(dest), Path(registry_root))
    if location.is_object_storage:
        _require_bucket(location, storage)
    marker = json.dumps(_export_marker(mv), indent=2)
    try:
        if location.is_object_storage:
            _export_to_objects(mv, location, dest, marker, force)
        else:
            _export_to_folder(mv, Path(dest), marker, force)
    except Exception as exc:  # the storage failing partway (a timeout, a dropped connection) is said as above
        if location.is_object_storage and missing_bucket(exc):  # listed by keys that may not HEAD the bucket
            raise _no_bucket(location) from None
        why = storage_problem(exc, location.scheme, storage) if location.is_object_storage else None
        if why is not None:
            raise ExportError(f"Exporting {mv.ref} to {location.uri(dest)} failed: {why} Nothing in the registry "
                              "changed; export again once it is fixed.") from exc
        if not isinstance(exc, OSError):
            raise
        raise ExportError(f"Exporting {mv.ref} to {location.uri(dest)} failed: {exc}. Nothing in the registry "
                          "changed; fix the destination and export again.") from exc
    return location.uri(dest)


def _require_bucket(location: Any, storage: Any) -> None:
    """Refuse a missing bucket, or storage that cannot be reached, before anything is written. Not fs.exists:
    it answers False for missing credentials or an unreachable endpoint too."""
    from unirank.ingest.sources import storage_endpoint, storage_problem

    bucket = location.path.split("/", 1)[0]
    try:
        location.fs.info(bucket)
    except FileNotFoundError:
        raise _no_bucket(location) from None
    except PermissionError:
        # Keys that may list and write under a prefix alone may not HEAD the bucket (AWS authorises it as a
        # ListBucket without s3:prefix, which their policy denies): the destination's listing answers.
        pass
    except Exception as exc:  # worded as ingest words it: a timeout names the setting to raise
        why = storage_problem(exc, location.scheme, storage) or (
            f"{str(exc).rstrip('.')}. Check {storage_endpoint(location.scheme, storage)[1]} and the credentials.")
        raise ExportError(f"Cannot reach {location.scheme}://{bucket}: {why} Nothing was exported; export "
                          "again once it is fixed.") from exc


def _no_bucket(location: Any) -> ExportError:
    bucket = location.path.split("/", 1)[0]
    return ExportError(f"{location.scheme}://{bucket} does not exist: create the bucket first (export does not "
                       "create buckets), or check the name and storage endpoint.")


def _refuse_inside_registry(dest: Path, registry_root: Path) -> None:
    """An export into the registry's folder wrote into its version folders (--to REGISTRY/NAME/vN), whose
    files are a version's and must not change."""
    dest, root = dest.resolve(), registry_root.resolve()
    if dest == root or root in dest.parents:
        raise ExportError(f"{dest} is inside the model registry ({root}): an export there would write among its "
                          "versions' files. Nothing was exported; export to a folder outside it.")


def _export_marker(mv: ModelVersion) -> dict[str, Any]:
    assert mv.path is not None
    return {"name": mv.name, "version": mv.version, "role": mv.role, "created_at": mv.created_at,
            "aliases": mv.aliases, "exported_at": now_iso(), "files_sha256": files_digest(mv.path),
            "record": mv.record}


def _refuse_other_contents(mv: ModelVersion, where: str, *earlier: Any) -> None:
    """Refuse ``where`` unless one of ``earlier`` (its marker, or an unfinished export's note) names ``mv``."""
    if any(isinstance(e, dict) and e.get("name") == mv.name and e.get("version") == mv.version for e in earlier):
        return  # an earlier export of this version, whole or left partway: replaced
    raise ExportError(f"{where} already holds files that are not an export of {mv.ref} (no {MARKER_FILE} "
                      "naming it): nothing was exported. Remove them or export elsewhere, or pass --force "
                      "to replace them.")


def _export_to_folder(mv: ModelVersion, dest: Path, marker: str, force: bool) -> None:
    assert mv.path is not None
    root = mv.path
    if dest.exists() and not dest.is_dir():
        raise ExportError(f"{dest} exists and is not a folder: nothing was exported. Remove it or export "
                          "elsewhere.")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        try:
            earlier = json.loads((dest / MARKER_FILE).read_text())
        except (OSError, ValueError):
            earlier = None
        _refuse_other_contents(mv, str(dest), earlier)
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging_prefix, replaced_prefix = f".{dest.name}.exporting-", f".{dest.name}.replaced-"
    _sweep_abandoned(dest.parent, staging_prefix, replaced_prefix)
    # Named for this process (staging_name): the next export can tell one left by a killed export from one
    # still being written, and removes it.
    staging = dest.parent / staging_name(staging_prefix)
    replaced = dest.parent / staging_name(replaced_prefix)
    done = False
    try:
        shutil.copytree(root, staging, ignore=lambda folder, names: (
            [MARKER_FILE] if Path(folder) == root else []))
        (staging / MARKER_FILE).write_text(marker)  # last: a copy that has it is whole
        if dest.exists():
            os.rename(dest, replaced)
        try:
            os.rename(staging, dest)
        except OSError:
            if replaced.exists() and not dest.exists():
                os.rename(replaced, dest)  # the earlier export back where it was
            raise
        done = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if done:
            shutil.rmtree(replaced, ignore_errors=True)


def _sweep_abandoned(folder: Path, *prefixes: str) -> None:
    """Remove the copies (and earlier exports moved aside) in ``folder`` that an export killed partway left:
    each a whole model, kept forever."""
    for prefix in prefixes:
        for stale in sweep_stale(folder.iterdir(), prefix):
            log.info("removed %s, left by an export that did not finish", stale)


def _export_to_objects(mv: ModelVersion, location: Any, dest: str, marker: str, force: bool) -> None:
    from unirank.ingest.sources import objects_under

    assert mv.path is not None
    root, fs = mv.path, location.fs
    marker_key, note_key = f"{dest}/{MARKER_FILE}", f"{dest}/{IN_PROGRESS_FILE}"
    _refuse_object_on_the_way(location, dest)
    existing = set(objects_under(fs, dest))
    if existing and not force:
        _refuse_other_contents(mv, location.uri(dest), _json_object(fs, marker_key), _json_object(fs, note_key))
    files = model_files(root)
    keys = {f"{dest}/{path.relative_to(root).as_posix()}" for path in files}
    note = {"name": mv.name, "version": mv.version, "started_at": now_iso()}
    fs.pipe_file(note_key, json.dumps(note).encode())  # before the marker goes: the prefix always names its version
    if marker_key in existing:  # until the new one is written, the copy reads as incomplete
        fs.rm_file(marker_key)
    for path in files:
        fs.put_file(str(path), f"{dest}/{path.relative_to(root).as_posix()}")
    _delete_objects(fs, sorted(existing - keys - {marker_key, note_key}))
    fs.pipe_file(marker_key, marker.encode())
    fs.rm_file(note_key)


#: Keys one DeleteObjects request takes at most (S3's limit).
_DELETE_BATCH = 1000


def _delete_objects(fs: Any, paths: list[str]) -> None:
    """Delete exactly these objects (``bucket/key``), a thousand a request. Not fs.rm, which read `[`, `*`
    and `?` in a key as a pattern and deleted other keys; nor one DeleteObject each, a round trip a key."""
    for start in range(0, len(paths), _DELETE_BATCH):
        batch = paths[start:start + _DELETE_BATCH]
        bucket = batch[0].partition("/")[0]
        answer = fs.call_s3("delete_objects", Bucket=bucket, Delete={
            "Objects": [{"Key": path.partition("/")[2]} for path in batch], "Quiet": True})
        if answer.get("Errors"):
            first = answer["Errors"][0]
            raise OSError(f"{len(answer['Errors'])} stale objects could not be deleted (s3://{bucket}/{first['Key']}: "
                          f"{first.get('Code')} {first.get('Message', '')})")
    if paths:
        fs.invalidate_cache()


def _refuse_object_on_the_way(location: Any, dest: str) -> None:
    """Refuse ``dest`` where it, or a key above it in the bucket (the --to key), is an object: the export's keys
    under it would make a file and a folder of one name, which no download can write, breaking the export
    that holds the object too."""
    bucket, _, key = dest.partition("/")
    parts = key.split("/")
    for depth in range(1, len(parts) + 1):
        above = "/".join(parts[:depth])
        if above and _is_object(location.fs, bucket, above):
            raise ExportError(f"{location.uri(f'{bucket}/{above}')} is an object, not a folder: nothing was "
                              "exported. Export elsewhere.")


def _is_object(fs: Any, bucket: str, key: str) -> bool:
    try:  # a HEAD alone: fs.isfile says False for a timeout too, and fs.info lists the prefix where it finds none
        fs.call_s3("head_object", Bucket=bucket, Key=key)
    except (FileNotFoundError, PermissionError):  # keys allowed under the destination alone may not look above it
        return False
    return True


def _json_object(fs: Any, key: str) -> Any:
    """The JSON in the object ``key``, or None where there is none (or it is not JSON)."""
    try:
        return json.loads(fs.cat_file(key))
    except (OSError, ValueError):
        return None
