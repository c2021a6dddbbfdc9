"""The model registry: SQLite records + immutable copies of each version's files.

``NAME@VERSION`` (a number) or ``NAME@ALIAS`` (``prod``...) or ``NAME`` / ``NAME@latest`` (the latest version)
refer to one version. Every alias change is kept in a history, which is what rollback walks back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

from unirank.errors import (AliasInUseError, AliasMovedError, ConfigurationError, InvalidModelReferenceError,
                            ModelLoadError, ModelNotFoundError, PromotionRefusedError, RegistrationError)
from unirank.registry.evaluations import compare_for_promotion, evaluation_key, evaluations, superseded
from unirank.registry.export import export_version
from unirank.registry.files import MARKER_FILE, file_listing, files_digest, read_marker, staging_name, sweep_stale
from unirank.sqlite_wal import use_wal
from unirank.timeutil import now_iso

__all__ = ["MARKER_FILE", "REGISTRY_LINKS", "RESERVED_NAMES", "ROLES", "ModelRegistry", "ModelVersion", "Role",
           "evaluation_key", "parse_reference"]

log = logging.getLogger(__name__)

Role = Literal["embedder", "reranker"]
ROLES: tuple[str, ...] = ("embedder", "reranker")
#: Record fields that name other versions of the registry they were written in (``NAME@VERSION``): a
#: folder exported and registered again keeps them under ``lineage``, where they link nothing.
REGISTRY_LINKS = ("optimized_from", "serves", "bundled_base", "trained_with")
#: A name goes into folder names, `--models A,B` lists, URLs and settings as it is.
_MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: ``v3``: an alias so named would read as version 3 (its folder's name), and NAME@v3 typed for NAME@3 is that.
_VERSION_LIKE = re.compile(r"[vV][0-9]+")
#: The largest whole number SQLite stores; a version number above it names no version.
_LARGEST_VERSION = 2**63 - 1
#: Words that already mean something wherever a model is named: the bundled model, and no reranker.
RESERVED_NAMES = ("base", "none")
#: A registration's copy is made in NAME/INCOMING... (``staging_name``), then renamed to NAME/vVERSION.
INCOMING = ".incoming-"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL, path TEXT,
    record TEXT NOT NULL, created_at TEXT NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS deleted_versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, role TEXT NOT NULL, record TEXT NOT NULL,
    created_at TEXT NOT NULL, deleted_at TEXT NOT NULL, PRIMARY KEY (name, version)
);
CREATE TABLE IF NOT EXISTS alias_history (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, alias TEXT NOT NULL,
    version INTEGER, changed_at TEXT NOT NULL, note TEXT NOT NULL
);
"""


@dataclass
class ModelVersion:
    name: str
    version: int
    role: str
    #: Folder holding the model files (None for a remote endpoint).
    path: Path | None
    created_at: str
    #: base_model, dims, max_seq_length, data_hash, hyperparameters, metrics, endpoint, api...
    record: dict[str, Any] = field(default_factory=dict)
    aliases: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def metrics(self) -> dict[str, Any]:
        """The figures of the version's latest evaluation (``evaluations`` holds every eval set's)."""
        return self.record.get("metrics") or {}

    @property
    def evaluations(self) -> dict[str, dict[str, Any]]:
        return evaluations(self.record)

    def files_missing(self) -> str | None:
        """Why this version's files cannot be used (its folder deleted or emptied by hand, or files of it
        removed or cut short), as `models export` words it; None when they are there, or it has none (an
        endpoint). A folder that had lost its weights was promoted, rolled back to and exported."""
        if self.path is None:
            return None
        if not (self.path.is_dir() and any(self.path.iterdir())):
            return f"The files of {self.ref} are missing from {self.path}"
        listing = self.record.get("files")
        lost = _lost_files(self.path, listing) if isinstance(listing, dict) else _lost_model_files(self.path)
        if lost:
            return f"{len(lost)} of the files of {self.ref} are missing or changed in {self.path} (e.g. {lost[0]})"
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "role": self.role,
                "path": str(self.path) if self.path else None, "created_at": self.created_at,
                "aliases": self.aliases, **self.record}


#: What a model folder registered before file listings were recorded needs to load: a configuration and weights.
_CONFIG_FILES = ("config.json", "modules.json")
_WEIGHT_FILES = ("*.safetensors", "pytorch_model*.bin", "*.onnx")


def _lost_files(folder: Path, listing: dict[str, int]) -> list[str]:
    """The files of the registration's listing (``file_listing``: path -> size) gone from ``folder`` or of
    another size now; files added since are not counted. Only stats them: this runs at every load."""
    lost = []
    for relative, size in listing.items():
        try:
            if (folder / relative).stat().st_size != size:
                lost.append(relative)
        except OSError:
            lost.append(relative)
    return lost


def _lost_model_files(folder: Path) -> list[str]:
    """For a version registered before listings were recorded: what no model folder loads without."""
    lost = [] if any((folder / name).is_file() for name in _CONFIG_FILES) else ["config.json"]
    if not any(next(folder.rglob(pattern), None) for pattern in _WEIGHT_FILES):
        lost.append("model.safetensors")
    return lost


def parse_reference(ref: str) -> tuple[str, str | None]:
    """``name@3`` -> (name, "3"); ``name@prod`` -> (name, "prod"); ``name`` -> (name, None)."""
    _require_text(ref, "A model reference", "NAME, NAME@VERSION or NAME@ALIAS")
    name, sep, selector = ref.partition("@")
    if not name or (sep and not selector):
        raise ModelNotFoundError(f"{ref!r} is not a model reference: use NAME, NAME@VERSION or NAME@ALIAS.")
    if "@" in selector:  # read as the alias "1@2", which promote refuses to set
        example = next((part for part in selector.split("@") if part), "1")  # NAME@@1: the 1, not nothing
        raise ModelNotFoundError(f"{ref!r} is not a model reference: it has more than one '@'; use NAME, "
                                 f"NAME@VERSION or NAME@ALIAS (e.g. {name}@{example}).")
    return name, selector or None


def _require_text(value: Any, what: str, form: str) -> None:
    """A reference, name or alias from Python that is not a str: an AttributeError or TypeError from deep
    inside said nothing of what was wrong."""
    if not isinstance(value, str):
        raise InvalidModelReferenceError(f"{what} must be a str ({form}), got {value!r} ({type(value).__name__}).")


def _refuse_no_model_folder(path: Any) -> None:
    """What ``models register`` refuses before it loads a model (``describe_model_folder``), refused from
    Python too: a folder of documents was registered, promoted, and failed at the first ingest."""
    if not isinstance(path, (str, os.PathLike)) or not Path(path).is_dir():
        raise RegistrationError(f"{path} is not a model folder.")
    if not any((Path(path) / name).is_file() for name in ("config.json", "modules.json")):
        raise RegistrationError(f"{path} is not a model folder: it has no config.json (nor modules.json), as a folder "
                                "saved by transformers or sentence-transformers has. Give the folder the model was "
                                "saved to.")


def _copy_model_folder(path: Path, to: Path) -> None:
    """Copy a folder to register; a file that cannot be copied is a ModelLoadError naming it (a raw
    shutil.Error traceback said nothing of what to do)."""
    try:
        shutil.copytree(path, to)
    except shutil.Error as exc:  # one (source, copy, why) per file that failed; the rest were copied
        failures = exc.args[0] if exc.args and isinstance(exc.args[0], list) else []
        first = failures[0] if failures and len(failures[0]) == 3 else None
        what = f"{first[0]}: {first[2]}" if first else str(exc)
        more = f" (and {len(failures) - 1} more)" if len(failures) > 1 else ""
        raise ModelLoadError(f"Cannot copy {path} into the registry: {what}{more}. Nothing was registered. Fix or "
                             "remove that file (a link to a file that is gone, one this user may not read) and "
                             "register the folder again.") from None
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ModelLoadError(f"Cannot copy {path} into the registry: {where}{exc.strerror or exc}. Nothing was "
                             "registered. Fix that (a file this user may not read, a full disk) and register the "
                             "folder again.") from None


def _is_version_number(selector: str) -> bool:
    """``3`` in ``NAME@3``: ASCII digits only. str.isdigit() takes '²' (int() then raised ValueError) and
    other scripts' digits ('٣', which int() read as 3)."""
    return selector.isascii() and selector.isdigit()


class ModelRegistry:
    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._db: sqlite3.Connection | None = None
        self._on_disk = False

    @property
    def db(self) -> sqlite3.Connection:
        """The registry's database. Until a first registration writes one, reads see an empty one in
        memory: ``models list`` run in the wrong folder used to leave a ``.unirank/`` there."""
        if self._db is None or (not self._on_disk and self.db_path.exists()):  # another process made it
            self._connect(create=False)
        return self._db

    @property
    def db_path(self) -> Path:
        return self.root / "registry.sqlite"

    def _connect(self, *, create: bool) -> None:
        if self._db is not None:
            self._db.close()
        self._on_disk = create or self.db_path.exists()
        if self._on_disk:
            self.root.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.db_path if self._on_disk else ":memory:", check_same_thread=False)
            if self._on_disk:
                use_wal(self._db)
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            if "locked" in str(exc):  # busy, not damaged: said as SQLite says it
                raise
            self.close()
            raise self._unreadable(exc) from None

    def _unreadable(self, exc: sqlite3.DatabaseError) -> ConfigurationError:
        """A damaged registry.sqlite (or another file so named) failed every models command with an
        sqlite3.DatabaseError traceback."""
        return ConfigurationError(
            f"{self.db_path} cannot be read as the model registry's database ({exc}): it is damaged, or is not "
            "one. Restore it from a backup, or move it aside (the registry then starts empty; the version "
            "folders beside it are kept).")

    # -- writes ---------------------------------------------------------------------------------
    def register(self, name: str, role: str, *, path: Path | None = None,
                 record: dict[str, Any] | None = None, allow_identical: bool = True) -> ModelVersion:
        """Copy ``path`` into the registry as the next version of ``name`` (or record an endpoint).

        ``allow_identical=False`` refuses files identical to a version of ``name`` (``check_not_identical``),
        checked in the transaction that takes the version number."""
        self.check_registrable(name, role)
        record = dict(record or {})
        if path is not None:
            _refuse_no_model_folder(path)
        if not self._on_disk:
            self._connect(create=True)
        incoming = self.root / name / staging_name(INCOMING)  # the slow copy, under no lock
        try:
            if path is not None:
                # In the try: a copy that failed partway (a dangling link, a file it may not read) was left
                # in the registry as .incoming-*, a whole model each time.
                _copy_model_folder(Path(path), incoming)
                # What the files are, to tell an identical folder registered again (`identical_versions`) and
                # an exported copy changed since (`describe.exported_record`); a caller's record can't say.
                record["files_sha256"] = files_digest(incoming)
                # What `files_missing` checks the folder against later, at the cost of a stat per file.
                record["files"] = dict(file_listing(incoming))
                if "training_queries" not in record:
                    record.update(self._training_of_copy(incoming, record)
                                  or self.training_of_files(record["files_sha256"], record.get("lineage")))
            # The version number is taken, the folder named after it and the row written in one exclusive
            # transaction: two registrations of a name at once each got version 1, and the second
            # replaced the first one's files before its row was refused.
            with self._writing():
                self.sweep_abandoned()
                self.check_registrable(name, role)
                if not allow_identical and path is not None:
                    # Here, under the write lock: two registrations of one folder at once both passed the
                    # caller's check, made before either had a row, and both registered it.
                    self.check_not_identical(name, incoming, digest=record["files_sha256"])
                version = self._next_version(name)
                target = None
                if path is not None:
                    target = self.root / name / f"v{version}"
                    (incoming / MARKER_FILE).write_text(json.dumps({"name": name, "version": version, "role": role}))
                    # Never onto an existing folder: _next_version numbers past every vN there. One no row
                    # names may be all that is left of a version (its database moved aside), so it is kept.
                    incoming.rename(target)
                self.db.execute(
                    "INSERT INTO versions (name, version, role, path, record, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    # Where the files are, relative to the registry: it may be opened from elsewhere or moved.
                    (name, version, role, f"{name}/v{version}" if target else None, json.dumps(record), now_iso()),
                )
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        return self.get(f"{name}@{version}")

    def sweep_abandoned(self) -> None:
        """Remove the copies of registrations that did not finish (killed, or the machine went down): each
        was hundreds of MB under NAME/, kept forever. Runs at each registration, under its lock."""
        for folder in sweep_stale(self.root.glob(f"*/{INCOMING}*"), INCOMING):
            log.info("removed %s, left by a registration that did not finish", folder)
        for name, version in self.db.execute("SELECT name, version FROM deleted_versions").fetchall():
            folder = self.root / name / f"v{version}"
            if folder.is_dir():
                shutil.rmtree(folder, ignore_errors=True)
                log.info("removed %s, left by the deletion of %s@%s", folder, name, version)

    def _training_of_copy(self, folder: Path, record: dict[str, Any]) -> dict[str, Any]:
        """What a copy of one of this registry's version folders (its marker names that version and its
        files are that version's) was trained on: that version's training queries, its bases' included.
        Registered under a new name with nothing of the kind (such a marker carries no record), the copy
        was scored by `unirank eval` on the very queries the version was trained on."""
        try:
            marker = read_marker(folder)
        except (OSError, ValueError):
            return {}
        if not marker or not _is_version_number(str(marker.get("version", ""))):
            return {}
        ref = f"{marker.get('name')}@{marker['version']}"
        if not self.exists(ref):
            return {}
        source = self.get(ref)
        stored = source.record.get("files_sha256")
        if stored is None and source.path is not None and source.path.is_dir():  # registered before digests
            stored = files_digest(source.path)
        if stored != record["files_sha256"]:
            return {}
        return self._inherited_training([source], record.get("lineage"))

    def _inherited_training(self, sources: list[ModelVersion], lineage: dict[str, Any] | None) -> dict[str, Any]:
        """The record fields of a copy of ``sources``' files: their training queries, their bases' included,
        the versions those came from, and the first source as what it is a copy of."""
        from unirank.registry.lineage import training_queries_with_bases

        prints: set[str] = set()
        came_from: list[str] = []
        for version in sources:
            found, refs = training_queries_with_bases(self, version.ref, version.record)
            prints |= found
            came_from += [ref for ref in refs if ref not in came_from]
        return {"training_queries": sorted(prints), "training_queries_inherited_from": came_from,
                "lineage": {**(lineage or {}), "copy_of": sources[0].ref}}

    def training_of_files(self, digest: str, lineage: dict[str, Any] | None = None) -> dict[str, Any]:
        """What a folder whose files have ``digest`` (``files_digest``) was trained on, when versions of any
        name hold those files: their training queries, their bases' included, with the versions they came
        from, and the version it is a copy of. A run's ``final/`` registered under another name (or a plain
        copy of a version's folder, which has no marker) got none and was scored on its training queries.
        Empty when no such version was trained on real queries."""
        same = sorted(self.versions_with_files(digest), key=lambda v: v.created_at)
        # Copies registered since have their queries from these: named as the sources, they would hide them.
        originals = [v for v in same if "copy_of" not in (v.record.get("lineage") or {})] or same
        inherited = self._inherited_training(originals, lineage) if originals else {}
        return inherited if inherited.get("training_queries") else {}

    def versions_with_files(self, digest: str) -> list[ModelVersion]:
        """The versions of every name, deleted ones too (their records are kept), whose files had ``digest``
        when registered. Versions registered before digests were recorded are not digested again here
        (that would read every model of the registry)."""
        return [v for v in (*self.list(), *self.deleted_versions()) if v.record.get("files_sha256") == digest]

    def check_registrable(self, name: str, role: str) -> None:
        """Whether ``name`` can take a new ``role`` version; callers check before work that takes minutes
        (loading a model, training), so a typo does not waste it."""
        if role not in ROLES:
            raise RegistrationError(f"Unknown role {role!r}: use one of {', '.join(ROLES)}.")
        if not isinstance(name, str) or not _MODEL_NAME.fullmatch(name):
            raise RegistrationError(f"Invalid model name {name!r}: use letters, digits, '.', '-' and '_' (at most 128, "
                               "starting with a letter or digit); '@' separates a name from its version.")
        if name.lower() in RESERVED_NAMES:
            raise RegistrationError(f"{name!r} cannot be a registry name: wherever a model is named, `base` is the "
                               "bundled all-MiniLM-L6-v2 and `none` no reranker. Register under another name.")
        if name.lower().startswith(self.db_path.name.lower()):
            # NAME/ sits beside the database: registry.sqlite-journal is where SQLite writes its rollback
            # journal, and a folder so named broke every later open of the registry.
            raise RegistrationError(f"{name!r} cannot be a registry name: names starting with {self.db_path.name!r} "
                                    "are the registry database's own files. Register under another name.")
        existing_role = self.db.execute("SELECT role FROM versions WHERE name = ? LIMIT 1", (name,)).fetchone()
        if existing_role and existing_role[0] != role:
            raise RegistrationError(f"{name!r} holds {existing_role[0]} models; register the {role} under another name.")

    def _next_version(self, name: str) -> int:
        # Past deleted versions too: an index or a setting naming NAME@3 must never get another model.
        row = self.db.execute("SELECT MAX(v) FROM (SELECT version AS v FROM versions WHERE name = ? UNION ALL "
                              "SELECT version FROM deleted_versions WHERE name = ?)", (name, name)).fetchone()
        return max(row[0] or 0, self._highest_version_folder(name)) + 1

    def _highest_version_folder(self, name: str) -> int:
        """The largest N of the NAME/vN folders on disk, rows or not: a database moved aside (as its error
        says to) or restored from an older backup knows none of them, and version 1 replaced v1's files."""
        numbers = [int(p.name[1:]) for p in (self.root / name).glob("v[0-9]*") if _is_version_number(p.name[1:])]
        return max(numbers, default=0)

    def deletable(self, ref: str) -> ModelVersion:
        """The version ``ref`` names, if ``delete`` may delete it: named by its number, and no alias on it."""
        name, selector = parse_reference(ref)
        if selector is None or not _is_version_number(selector):
            # An alias or "latest" may name another version by the time it is deleted.
            raise InvalidModelReferenceError(f"Name the version to delete by its number: {name}@VERSION (`unirank models list` "
                               f"shows them), not {ref!r}.")
        mv = self.get(ref)
        if mv.aliases:
            named = ", ".join(f"{mv.name}@{alias}" for alias in mv.aliases)
            first = mv.aliases[0]
            which = "each alias" if len(mv.aliases) > 1 else first
            raise AliasInUseError(f"{mv.ref} is {named}: nothing was deleted. Point {which} "
                               f"at another version first (`unirank models promote {mv.name}@VERSION --alias "
                               f"{first}`), or remove it (`unirank models unalias {mv.name} --alias {first}`), "
                               "then delete it.")
        return mv

    def delete(self, ref: str) -> ModelVersion:
        """Delete the version ``NAME@VERSION`` and its files; returns what it was. Refused while an alias
        names it (``deletable``). Its number is never given again. The registry does not know which
        indexes were embedded with it: they are read with a version that makes its vectors, if one is left
        (``deleted_versions``; ``unirank.models.loading.index_model_ref``)."""
        self.deletable(ref)  # said before the lock, and checked again under it
        with self._writing() as db:
            mv = self.deletable(ref)
            db.execute("DELETE FROM versions WHERE name = ? AND version = ?", (mv.name, mv.version))
            db.execute("INSERT OR REPLACE INTO deleted_versions (name, version, role, record, created_at, deleted_at) "
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (mv.name, mv.version, mv.role, json.dumps(mv.record), mv.created_at, now_iso()))
        # The files after the row: a version without its files would still load, and fail. Files a killed
        # deletion leaves, the next registration removes (``sweep_abandoned``).
        if mv.path is not None:
            shutil.rmtree(mv.path, ignore_errors=True)
            with contextlib.suppress(OSError):
                mv.path.parent.rmdir()  # NAME/, when that was its last version
        return mv

    def update_record(self, ref: str, **fields: Any) -> ModelVersion:
        return self.change_record(ref, lambda record: {**record, **fields})

    def record_evaluation(self, ref: str, figures: dict[str, Any]) -> ModelVersion:
        """Keep ``figures`` as the version's evaluation on their eval set and system, and as its latest.
        The system names versions by number: an alias moves, and ``weak@prod`` and ``weak@1`` were two
        systems to promotion though one model."""
        if figures.get("system"):
            figures = {**figures, "system": self._exact_system(figures["system"])}

        def change(record: dict[str, Any]) -> dict[str, Any]:
            kept = {key: stored for key, stored in evaluations(record).items() if not superseded(stored, figures)}
            kept[evaluation_key(figures)] = figures
            return {**record, "metrics": figures, "evaluations": kept}
        return self.change_record(ref, change)

    def _exact_system(self, system: str) -> str:
        """``hybrid+rerank:cisi-embed@prod+cisi-rerank@prod`` as the versions it names now
        (``hybrid+rerank:cisi-embed@2+cisi-rerank@2``); ``base`` and what the registry lacks as given."""
        mode, sep, models = system.partition(":")
        if not sep:
            return system
        return f"{mode}:{'+'.join(self._exact_ref(part) for part in models.split('+'))}"

    def _exact_ref(self, ref: str) -> str:
        try:
            return self.get(ref).ref
        except ModelNotFoundError:  # base, a folder or a hub id: as given
            return ref

    def change_record(self, ref: str, change: Callable[[dict[str, Any]], dict[str, Any]]) -> ModelVersion:
        """Read, change and write a version's record in one write transaction: two evaluations recorded at
        once (each read the record, then wrote it back) lost the first one's figures."""
        mv = self.get(ref)
        with self._writing() as db:  # the write lock before the read
            (stored,) = db.execute("SELECT record FROM versions WHERE name = ? AND version = ?",
                                   (mv.name, mv.version)).fetchone()
            db.execute("UPDATE versions SET record = ? WHERE name = ? AND version = ?",
                       (json.dumps(change(json.loads(stored))), mv.name, mv.version))
        return self.get(mv.ref)

    def promote(self, ref: str, alias: str = "prod", *, force: bool = False,
                warn: Callable[[str], None] | None = None) -> ModelVersion:
        """Point ``alias`` at the version ``ref`` names, if it scores at least as well as the version the
        alias names now, on an evaluation both had. ``warn`` hears of a promotion nothing could check."""
        _require_text(alias, "An alias", "such as prod or staging")
        if not _MODEL_NAME.fullmatch(alias) or _is_version_number(alias) or alias == "latest":
            # NAME@3 means version 3 and NAME@latest the newest, so neither could be read back as an alias;
            # a space or comma would make `models list`'s alias column ambiguous.
            raise InvalidModelReferenceError(f"Invalid alias {alias!r}: use a word such as prod or staging (letters, digits, "
                               "'.', '-' and '_'; not a number, not latest).")
        if _VERSION_LIKE.fullmatch(alias):
            # NAME@v3 would read as version 3 to anyone but the registry (folders are named v3).
            raise InvalidModelReferenceError(f"Invalid alias {alias!r}: it reads like a version (NAME@{alias[1:]} names version "
                               f"{alias[1:]}). Use a word such as prod or staging.")
        name, selector = parse_reference(ref)
        if selector is None:  # it promoted the latest version, which may not be the one meant
            self._require_name(name)
            versions = [str(v) for (v,) in self.db.execute(
                "SELECT version FROM versions WHERE name = ? ORDER BY version", (name,))]
            raise InvalidModelReferenceError(f"Name the version to promote: {name}@VERSION (or {name}@ALIAS). {name} has "
                               f"version{'s' if len(versions) > 1 else ''} {', '.join(versions)} "
                               f"(`unirank models list`), e.g. `unirank models promote {name}@{versions[-1]} "
                               f"--alias {alias}`.")
        candidate = self.get(ref)
        missing = candidate.files_missing()
        if missing:  # promoted, the alias would name a model nothing can load
            raise PromotionRefusedError(f"{missing}: nothing was promoted{self._still_names(candidate.name, alias)}. "
                                        "Restore the folder (or the data dir it was in), or register the model "
                                        "again and promote that version.")
        named = self._alias_version(candidate.name, alias)
        # None when the alias names a version deleted since (set before promotions checked under the lock):
        # the promotion then replaces it unchecked, as over an alias not set.
        current = self._kept_version(candidate.name, named)
        note = "promoted" if current is not None or named is None else f"promoted (it named v{named}, deleted)"
        if current is not None and current.version != candidate.version:
            check = compare_for_promotion(candidate, current)
            if check.refusal and not force:
                raise PromotionRefusedError(f"{check.refusal} Use --force to promote anyway.")
            if check.refusal:
                note = f"forced: {check.refusal}"
                log.warning("forced promotion of %s to %s: %s", candidate.ref, alias, check.refusal)
            elif check.unchecked:
                note = f"promoted, not checked: {check.unchecked}"
                message = (f"The promotion of {candidate.ref} to {alias} (from {current.ref}) was not checked: "
                           f"{check.unchecked}.")
                (warn or log.warning)(message)
            elif check.compared_on:
                note = f"promoted: {check.compared_on}"
        with self._writing():
            # Checked again under the write lock, which `delete` takes too: a version deleted, or the alias
            # moved, since they were read above. The alias was set to a deleted version, after which
            # NAME@ALIAS and any promotion to it failed.
            if self._kept_version(candidate.name, candidate.version) is None:
                raise ModelNotFoundError(
                    f"{candidate.ref} was deleted (`unirank models delete`) while it was being promoted: nothing "
                    f"changed{self._still_names(candidate.name, alias)}. Promote another version: `unirank models "
                    f"promote {candidate.name}@VERSION --alias {alias}`.")
            now = self._alias_version(candidate.name, alias)
            if now != named:
                moved = f"to v{now}" if now is not None else "off (removed)"
                raise AliasMovedError(
                    f"{candidate.name}@{alias} was moved {moved} by another command while the promotion of "
                    f"{candidate.ref} was checked against {f'v{named}' if named is not None else 'no version'}: "
                    f"nothing changed. Run the promotion again to check it against the version {alias} names now.")
            self._set_alias(candidate.name, alias, candidate.version, note)
        return self.get(candidate.ref)

    def rollback(self, name: str, alias: str = "prod") -> ModelVersion:
        """Point ``alias`` at the version promoted before the current one; again, at the one before that.
        (It went back and forth between the last two: v1 of three promotions could not be reached.)
        Deleted versions are skipped, and it goes back no further than the alias's removal (``unalias``); a
        version whose folder is missing is refused, as promote refuses it."""
        _require_text(name, "The name to roll back", "NAME")
        _require_text(alias, "The alias to roll back", "such as prod")
        with self._writing():  # read and written under the lock: a version deleted meanwhile is never set
            rows = self.db.execute(
                "SELECT version, note FROM alias_history WHERE name = ? AND alias = ? ORDER BY seq", (name, alias)
            ).fetchall()
            if not rows:
                self._require_name(name)
                raise ModelNotFoundError(f"{name}@{alias} has never been set; nothing to roll back.")
            named = self._alias_version(name, alias)
            if named is None:
                raise ModelNotFoundError(f"{name}@{alias} is not set (it was removed with `unirank models unalias`):"
                                         f" nothing to roll back. `unirank models promote {name}@VERSION --alias "
                                         f"{alias}` sets it again.")
            removals = [i for i, (version, _) in enumerate(rows) if version is None]
            promoted: list[int] = []  # the versions it went through since it was set, less those rolled back from
            for version, note in rows[removals[-1] + 1 if removals else 0:]:
                if note.startswith("rollback") and promoted:
                    promoted.pop()
                if not promoted or promoted[-1] != version:
                    promoted.append(version)
            existing = {v for (v,) in self.db.execute("SELECT version FROM versions WHERE name = ?", (name,))}
            earlier: list[int] = []  # less deleted versions (`delete`), which cannot be gone back to
            for version in promoted:
                if version in existing and (not earlier or earlier[-1] != version):
                    earlier.append(version)
            while earlier and earlier[-1] == named:  # the current one is no version to go back to
                earlier.pop()
            if not earlier:
                raise ModelNotFoundError(f"{name}@{alias} has no earlier version to roll back to (it is v{named}); "
                                         f"`unirank models promote {name}@VERSION --alias {alias}` names one outright.")
            self._refuse_missing_files(self.get(f"{name}@{earlier[-1]}"), alias, named)
            self._set_alias(name, alias, earlier[-1], f"rollback from v{named}")
        return self.get(f"{name}@{earlier[-1]}")

    def _refuse_missing_files(self, target: ModelVersion, alias: str, named: int) -> None:
        """Rollback is the way back in an emergency (`serve models` swaps to what the alias names): an alias
        pointed at a version whose folder is gone named a model nothing can load, which promote refuses."""
        missing = target.files_missing()
        if missing:
            raise PromotionRefusedError(
                f"{missing}: nothing was rolled back ({target.name}@{alias} still names v{named}). Restore the "
                f"folder (or the data dir it was in), or point {target.name}@{alias} at a version whose files are "
                f"there: `unirank models promote {target.name}@VERSION --alias {alias}`.")

    def unaliasable(self, name: str, alias: str) -> int:
        """The version ``alias`` names (even a deleted one), if ``unalias`` may remove it: it is set."""
        _require_text(name, "The name to remove an alias of", "NAME")
        _require_text(alias, "The alias to remove", "such as prod")
        named = self._alias_version(name, alias)
        if named is None:
            raise ModelNotFoundError(f"{name}@{alias} is not set: nothing was removed ({self.aliases_said(name)}; "
                                     f"`unirank models show {name}` shows them).")
        return named

    def aliases_said(self, name: str) -> str:
        """``its aliases are prod, staging``, or ``it has no aliases``, counting aliases of deleted versions
        (``unalias`` can remove them); ModelNotFoundError for an unknown name."""
        self._require_name(name)
        aliases = [a for (a,) in self.db.execute("SELECT alias FROM aliases WHERE name = ? ORDER BY alias", (name,))]
        return f"its aliases are {', '.join(aliases)}" if aliases else "it has no aliases"

    def unalias(self, name: str, alias: str) -> int:
        """Remove ``alias`` from ``name``; returns the version it named. The removal is kept in the alias's
        history (version None), and rollback goes back no further. There was no way to: a mistyped alias
        stayed, and kept the files of the version it named, as did a name's only version promoted."""
        self.unaliasable(name, alias)  # said before the lock, and checked again under it
        with self._writing():
            named = self.unaliasable(name, alias)
            self.db.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            self.db.execute(
                "INSERT INTO alias_history (name, alias, version, changed_at, note) VALUES (?, ?, NULL, ?, ?)",
                (name, alias, now_iso(), f"removed (it named v{named})"))
        return named

    @contextlib.contextmanager
    def _writing(self):
        """One exclusive write transaction (``BEGIN IMMEDIATE``: the lock before the first read)."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.commit()
        except BaseException:
            db.rollback()
            raise

    def _set_alias(self, name: str, alias: str, version: int, note: str) -> None:
        """Point ``alias`` at ``version`` and record it; inside ``_writing``, which checked that it exists."""
        self.db.execute("INSERT OR REPLACE INTO aliases (name, alias, version) VALUES (?, ?, ?)",
                        (name, alias, version))
        self.db.execute(
            "INSERT INTO alias_history (name, alias, version, changed_at, note) VALUES (?, ?, ?, ?, ?)",
            (name, alias, version, now_iso(), note),
        )

    def _still_names(self, name: str, alias: str) -> str:
        named = self._alias_version(name, alias)
        return f" ({name}@{alias} still names v{named})" if named is not None else f" ({name}@{alias} is not set)"

    def export(self, ref: str, to: str, storage: Any = None, *, force: bool = False) -> str:
        """Copy a version's files to ``to``/NAME-vVERSION (a folder or object storage URI); returns its URI.

        The marker file (``MARKER_FILE``) is written last and holds the version's whole record, so
        registering the folder restores it; exporting again replaces an earlier export of the version,
        and a destination holding anything else is refused unless ``force``
        (``unirank.registry.export.export_version``); so is a folder inside the registry."""
        return export_version(self.get(ref), to, storage, force=force, registry_root=self.root)

    def check_not_identical(self, name: str, path: Path, *, digest: str | None = None) -> None:
        """Refuse the folder ``path`` when a version of ``name`` holds its files already (``digest``: their
        ``files_digest``, when known)."""
        same = self.identical_versions(name, path, digest=digest)
        if same:
            raise RegistrationError(
                f"{same[-1].ref} already holds these files (the same weights and configuration): nothing was "
                f"registered. Use {same[-1].ref} as it is, or pass --force to register them again as a new "
                f"version of {name}.")

    def identical_versions(self, name: str, path: Path, *, digest: str | None = None) -> list[ModelVersion]:
        """The versions of ``name`` whose files are those of the folder ``path`` (its marker left out);
        ``digest``, when known, is the folder's ``files_digest``."""
        path = Path(path)
        if not path.is_dir():
            return []
        listing = None
        same = []
        for (version,) in self.db.execute("SELECT version FROM versions WHERE name = ? AND path IS NOT NULL "
                                          "ORDER BY version", (name,)).fetchall():
            mv = self.get(f"{name}@{version}")
            if mv.path is None or not mv.path.is_dir():
                continue
            stored = mv.record.get("files_sha256")
            if stored is None:  # registered before the digest was recorded: a different listing differs
                listing = listing if listing is not None else file_listing(path)
                if file_listing(mv.path) != listing:
                    continue
                stored = files_digest(mv.path)
            digest = digest or files_digest(path)
            if stored == digest:
                same.append(mv)
        return same

    # -- reads ----------------------------------------------------------------------------------
    def get(self, ref: str) -> ModelVersion:
        name, selector = parse_reference(ref)
        if selector is None or selector == "latest":  # promote refuses "latest" as an alias name: it means this
            row = self.db.execute("SELECT MAX(version) FROM versions WHERE name = ?", (name,)).fetchone()
            if row[0] is None:
                raise ModelNotFoundError(self._missing(name))
            version = int(row[0])
        elif _is_version_number(selector):
            version = int(selector)
            if version > _LARGEST_VERSION:  # SQLite cannot hold it (OverflowError): no version has it
                raise ModelNotFoundError(self._missing(name, version))
        elif not _MODEL_NAME.fullmatch(selector):  # no alias can be named so (promote refuses it)
            raise ModelNotFoundError(f"{ref!r} is not a model reference: after '@' give a version number or an "
                                     f"alias (letters, digits, '.', '-' and '_'), e.g. {name}@1 or {name}@prod.")
        else:
            target = self._alias_target(name, selector)
            if target is None:
                self._require_name(name)
                if _VERSION_LIKE.fullmatch(selector):  # NAME@v3 for NAME@3, as the folders are named
                    raise ModelNotFoundError(f"{name}@{selector} is not set: did you mean {name}@{selector[1:]}? "
                                             f"Versions are named by their number; {self._versions_of(name)}.")
                raise ModelNotFoundError(f"{name}@{selector} is not set. Promote a version with "
                                         f"`unirank models promote {name}@VERSION --alias {selector}`.")
            return target
        row = self.db.execute(
            "SELECT name, version, role, path, record, created_at FROM versions WHERE name = ? AND version = ?",
            (name, version),
        ).fetchone()
        if row is None:
            raise ModelNotFoundError(self._missing(name, version))
        aliases = [a for (a,) in self.db.execute(
            "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias", (name, version))]
        # A version's files are always at NAME/vVERSION under the registry; rows written before kept the path
        # as given then (relative to where a command ran, or to where the data dir was), so it is not read.
        files = self.root / row[0] / f"v{row[1]}" if row[3] else None
        return ModelVersion(name=row[0], version=row[1], role=row[2], path=files,
                            created_at=row[5], record=json.loads(row[4]), aliases=aliases)

    def _alias_target(self, name: str, alias: str) -> ModelVersion | None:
        named = self._alias_version(name, alias)
        if named is None:
            return None
        target = self._kept_version(name, named)
        if target is None:  # set before promotions were checked under the lock `delete` takes
            raise ModelNotFoundError(
                f"{name}@{alias} names {name}@{named}, which was deleted{self._deleted_at(name, named)}. Point it at "
                f"another version (`unirank models promote {name}@VERSION --alias {alias}` or `unirank models "
                f"rollback {name} --alias {alias}`), or remove it (`unirank models unalias {name} --alias {alias}`).")
        return target

    def _alias_version(self, name: str, alias: str) -> int | None:
        """The version number ``alias`` names, even a deleted one; None when it is not set."""
        row = self.db.execute("SELECT version FROM aliases WHERE name = ? AND alias = ?", (name, alias)).fetchone()
        return int(row[0]) if row else None

    def _kept_version(self, name: str, version: int | None) -> ModelVersion | None:
        """``name@version``, or None when ``version`` is None or was deleted."""
        if version is None or not self.db.execute("SELECT 1 FROM versions WHERE name = ? AND version = ?",
                                                  (name, version)).fetchone():
            return None
        return self.get(f"{name}@{version}")

    def _deleted_at(self, name: str, version: int) -> str:
        row = self.db.execute("SELECT deleted_at FROM deleted_versions WHERE name = ? AND version = ?",
                              (name, version)).fetchone()
        return f" at {row[0]}" if row else ""

    def _require_name(self, name: str) -> None:
        if not self.db.execute("SELECT 1 FROM versions WHERE name = ?", (name,)).fetchone():
            raise ModelNotFoundError(self._missing(name))

    def _versions_of(self, name: str) -> str:
        versions = [str(v) for (v,) in self.db.execute("SELECT version FROM versions WHERE name = ? ORDER BY version",
                                                        (name,))]
        return f"{name} has version{'s' if len(versions) > 1 else ''} {', '.join(versions)}"

    def _missing(self, name: str, version: int | None = None) -> str:
        versions = [v for (v,) in self.db.execute("SELECT version FROM versions WHERE name = ?", (name,))]
        if not versions and name.lower() in RESERVED_NAMES:
            return (f"{name!r} is not in the registry: wherever a model is named, `base` is the bundled "
                    "all-MiniLM-L6-v2 and `none` no reranker, with no registration.")
        if not versions:
            if self.db.execute("SELECT 1 FROM deleted_versions WHERE name = ?", (name,)).fetchone():
                return f"{name!r} has no versions left: each was deleted (`unirank models delete`)."
            known = [n for (n,) in self.db.execute("SELECT DISTINCT name FROM versions ORDER BY name")]
            hint = f" Registered: {', '.join(known)}." if known else " The registry is empty."
            return f"No model named {name!r}.{hint}"
        deleted_at = self._deleted_at(name, version) if version is not None and version <= _LARGEST_VERSION else ""
        gone = f" (it was deleted{deleted_at})" if deleted_at else ""
        return f"{name} has no version {version}{gone}; it has {', '.join(map(str, versions))}."

    def exists(self, ref: str) -> bool:
        try:
            self.get(ref)
        except ModelNotFoundError:
            return False
        return True

    def list(self) -> list[ModelVersion]:
        rows = self.db.execute("SELECT name, version FROM versions ORDER BY name, version").fetchall()
        return [self.get(f"{n}@{v}") for n, v in rows]

    def deleted_versions(self) -> list[ModelVersion]:
        """The versions ``delete`` removed, with the records they had (no files, no aliases): an index they
        embedded still names them, and an optimized copy that survives makes their vectors."""
        rows = self.db.execute("SELECT name, version, role, record, created_at, deleted_at FROM deleted_versions "
                               "ORDER BY name, version").fetchall()
        return [ModelVersion(name=n, version=v, role=role, path=None, created_at=created,
                             record={**json.loads(record), "deleted_at": deleted})
                for n, v, role, record, created, deleted in rows]

    def history(self, name: str, alias: str = "prod") -> list[dict[str, Any]]:
        rows = self.db.execute(
            "SELECT version, changed_at, note FROM alias_history WHERE name = ? AND alias = ? ORDER BY seq",
            (name, alias),
        )
        return [{"version": v, "changed_at": t, "note": n} for v, t, n in rows]

    def histories(self, name: str) -> dict[str, list[dict[str, Any]]]:
        """Every alias of ``name`` that was ever set, with its history, in the order first set."""
        found: dict[str, list[dict[str, Any]]] = {}
        for alias, version, changed_at, note in self.db.execute(
                "SELECT alias, version, changed_at, note FROM alias_history WHERE name = ? ORDER BY seq", (name,)):
            found.setdefault(alias, []).append({"version": version, "changed_at": changed_at, "note": note})
        return found

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def __enter__(self) -> ModelRegistry:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
