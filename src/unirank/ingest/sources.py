"""Where documents come from: a local folder or file, or S3-compatible object storage, via fsspec.

``oss://bucket/prefix`` is Alibaba OSS through its S3-compatible endpoint
(``storage.oss_endpoint_url``); ``s3://`` uses ``storage.endpoint_url`` when set (MinIO, etc.).
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, replace
from functools import cache, cached_property
from pathlib import Path
from typing import Any, Collection, Iterable

import fsspec

from unirank.errors import SourceError
from unirank.ingest.uris import at_or_under, local_path, printable
from unirank.settings import StorageSettings

OBJECT_SCHEMES = ("s3", "oss")
_SET_CREDENTIALS = ("Set storage.access_key_id and storage.secret_access_key (UNIRANK_STORAGE__ACCESS_KEY_ID and "
                    "UNIRANK_STORAGE__SECRET_ACCESS_KEY), or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")


@dataclass(frozen=True)
class SourceFile:
    uri: str
    size: int
    #: A change marker: mtime for local files, ETag or LastModified for objects.
    modified: str
    #: A symbolic link to nothing (an unmounted share, a moved file), or a folder that cannot be listed (no
    #: permission): it fails in the report whatever its name, and --prune keeps what was ingested at or under it.
    broken: bool = False


class DocumentSource:
    """Lists and reads the files under one URI (a folder, prefix or single file)."""

    def __init__(self, uri: str, storage: StorageSettings | None = None) -> None:
        # The URI alone makes the root: the filesystem (and the storage settings it needs) waits for
        # list() or read(), so `index remove IDX oss://...` works without an OSS endpoint or keys.
        self.scheme, self.path, self._folder = _parse(uri)
        self._storage = storage or StorageSettings()
        self.root_uri = self._uri(self.path)
        #: What --prune and `index remove` look under: the root, and the root resolved through its links,
        #: which is what an index made before roots were left unresolved holds (``/mnt/share/a.txt`` for
        #: ``docs/share``), so those documents are still found, and pruned once ingested by the new path.
        self._roots = [self.root_uri.rstrip("/")]
        if self.scheme == "file" and os.path.realpath(self.path) != self.path:
            self._roots.append(self._uri(os.path.realpath(self.path)).rstrip("/"))
        #: How errors name the source: a local one as its path, not a percent-encoded URI (nor a name's
        #: bytes that are not UTF-8, which no terminal prints).
        self.shown = printable(f"{self.scheme}://{self.path}{'/' * self._folder}" if self.scheme in OBJECT_SCHEMES
                               else self.path)
        #: The objects list() found and passed over by design (hidden keys, lock files): see passed_over.
        self._passed_over: set[str] = set()

    @cached_property
    def fs(self) -> Any:
        return _fsspec_filesystem(self.scheme, self._storage)

    def _uri(self, path: str) -> str:
        if self.scheme == "file":  # not resolved: a file in a linked folder keeps its path under the source
            return Path(path).as_uri()
        return f"{self.scheme}://{path.rstrip('/')}"

    def list(self) -> list[SourceFile]:
        fs = self.fs  # outside the try: settings it refuses (no OSS endpoint) are said as they are, not "Cannot list"
        try:  # not fs.exists: on object storage it answers False for missing credentials too
            if self.scheme in OBJECT_SCHEMES:
                entries = self._objects(fs)
            else:
                root = fs.info(self.path)
                entries = {self.path: root} if root.get("type", "file") == "file" else _local_files(self.path)
        except SourceError:
            raise
        except FileNotFoundError as exc:
            if self.scheme == "file" and os.path.islink(self.path):
                raise SourceError(f"{self.shown} is {self._broken(self.path)}. Check the link (an unmounted share "
                                  "leaves its links broken).") from None
            raise SourceError(self._not_found(exc)) from None
        except Exception as exc:  # permissions, credentials, network: say which source failed
            raise SourceError(f"Cannot list {self.shown}: {self._why(exc)}") from exc
        files, self._passed_over = [], set()
        for path, info in sorted(entries.items()):
            if info.get("type", "file") != "file" or path.endswith("/"):
                continue  # a key ending in '/' is the folder marker a console makes, not a file
            if _not_a_document(path, self.path):
                self._passed_over.add(self._uri(path))
                continue
            files.append(SourceFile(uri=self._uri(path), size=int(info.get("size") or 0),
                                    modified=_change_marker(info), broken=bool(info.get("broken"))))
        return files

    def _objects(self, fs: Any) -> dict[str, dict[str, Any]]:
        """The objects at and under the root. ``s3://b/notes/`` is the prefix ``notes/`` alone. ``s3://b/notes``
        is the object ``notes`` and the objects under ``notes/``, where both exist: --prune and `index remove`
        take both as at or under it, so listing one alone pruned the other's documents."""
        key = self.path.partition("/")[2]
        # Under path + "/"; where nothing is, fs.find gives the object path itself. It lists a key's leading "/"
        # away (s3://b//docs listed docs/): such keys are listed as they are.
        entries = objects_under(fs, self.path) if key.startswith("/") else fs.find(self.path, detail=True)
        if self._folder:
            if entries.pop(self.path, None) is not None and not entries:
                raise SourceError(f"{self.shown} is not a folder: {self.shown[:-1]} is an object and nothing is "
                                  "under it. Drop the trailing slash to read the object.")
        elif key and self.path not in entries:
            try:  # refresh: find's listing cached notes as a folder, hiding the object of the same name
                info = fs.info(self.path, refresh=True)
            except FileNotFoundError:
                info = {}
            except PermissionError:  # keys that may read notes/* alone may not look at an object `notes`
                if not entries:
                    raise  # nothing under it either: the denial is the answer
                info = {}
            if info.get("type") == "file":
                entries[self.path] = info
        if key and not entries:
            raise FileNotFoundError(self.path)
        return entries

    def passed_over(self, uri: str) -> bool:
        """Whether ``uri`` is a file the listing passes over by design (a hidden file, one in a hidden folder,
        an Office lock file) that is still there: ingested by naming it, it is not gone from the source, and
        --prune removed it. A local folder's listing never enters a hidden folder, so the file is looked at."""
        if self.scheme != "file":
            return uri in self._passed_over
        path = local_path(uri)
        return (any(_not_a_document(path, root) for root in (self.path, os.path.realpath(self.path)))
                and os.path.lexists(path))

    def as_indexed(self, files: list[SourceFile], indexed: Collection[str]) -> list[SourceFile]:
        """``files`` under the URIs ``indexed`` already holds them by, where it holds them by another path:
        a plain re-run finds them unchanged, where it would index each a second time under its new path."""
        if not indexed:
            return files
        files = self._as_resolved(files, indexed)
        return self._as_linked(files, indexed) if self.scheme == "file" else files

    def _as_resolved(self, files: list[SourceFile], indexed: Collection[str]) -> list[SourceFile]:
        """``files`` under the URIs an index made before roots were left unresolved holds them by
        (``/mnt/share/a.txt`` for ``docs/share/a.txt``)."""
        if len(self._roots) < 2:
            return files
        root, resolved = self._roots
        listed = {f.uri for f in files}
        adopted = []
        for file in files:
            legacy = resolved + file.uri[len(root):] if at_or_under(file.uri, root) else None
            if file.uri not in indexed and legacy in indexed and legacy not in listed:
                file = replace(file, uri=legacy)
            adopted.append(file)
        return adopted

    def _as_linked(self, files: list[SourceFile], indexed: Collection[str]) -> list[SourceFile]:
        """``files`` under the URIs an index holds them by through a link from outside this source:
        ``real/a.md`` ingested first as ``link/a.md`` (``link`` -> ``real``) is that file, not a new one.
        Only files not indexed by their own URI pay for resolving the index's paths."""
        if all(f.uri in indexed or f.broken for f in files):
            return files
        by_real: dict[str, str] = {}
        for uri in sorted(indexed):
            if uri.startswith("file://") and not self.contains(uri):
                by_real.setdefault(os.path.realpath(local_path(uri)), uri)
        taken = {f.uri for f in files}
        adopted = []
        for file in files:
            other = (None if file.uri in indexed or file.broken
                     else by_real.get(os.path.realpath(local_path(file.uri))))
            if other is not None and other not in taken:
                taken.add(other)
                file = replace(file, uri=other)
            adopted.append(file)
        return adopted

    def _not_found(self, exc: FileNotFoundError) -> str:
        """s3fs makes any 404 a FileNotFoundError, the answer of a server that is no S3 endpoint (a wrong
        port, a web server) too: that was said as a missing bucket. S3 says why in its error body (a
        listing's 404 is NoSuchBucket); a 404 without one is the endpoint's."""
        if self.scheme not in OBJECT_SCHEMES:
            return f"{self.shown} does not exist. Check the path or bucket name."
        endpoint, setting = storage_endpoint(self.scheme, self._storage)
        code, _ = _s3_error(exc)
        if code and code.isdigit():
            return (f"Cannot list {self.shown}: {endpoint} answered {code} without an S3 error, so it is not an S3 "
                    f"endpoint (or not this storage's). Check {setting}.")
        bucket = self.path.split("/", 1)[0]
        if code == "NoSuchBucket":
            return (f"{self.shown} does not exist: {endpoint} has no bucket {bucket!r}. Check the bucket name "
                    f"and {setting}.")
        return f"{self.shown} does not exist at {endpoint}. Check the path or bucket name."

    def _why(self, exc: Exception) -> str:
        """botocore's words ("Unable to locate credentials", "Forbidden") name no setting to fix."""
        if self.scheme not in OBJECT_SCHEMES:
            return str(exc)
        return storage_problem(exc, self.scheme, self._storage) or str(exc)

    def read(self, file: SourceFile) -> bytes:
        path = self._path_of(file.uri)
        if self.scheme == "file" and os.path.islink(path) and not os.path.exists(path):
            raise self._broken(path)
        if self.scheme == "file" and file.broken and os.path.isdir(path):
            raise PermissionError(_unlistable(path))
        if self.scheme not in OBJECT_SCHEMES:
            return self.fs.cat_file(path)
        from botocore.exceptions import ConnectionError as NoConnection, HTTPClientError

        try:
            return self.fs.cat_file(path)
        except (NoConnection, HTTPClientError) as exc:  # the storage failed, not the file: say which endpoint
            raise SourceError(self._why(exc)) from exc
        except PermissionError as exc:  # s3fs says "Access Denied": no permission, no setting named
            # Still this file's failure, not the run's: keys may be denied some objects only (another KMS key's).
            raise PermissionError(access_denied(exc, f"read this object ({self.scheme}:GetObject)")) from exc

    @staticmethod
    def _broken(path: str) -> OSError:
        """Why the link ``path`` leads to no file: its target is missing, the links go round in a loop, or
        a folder on the way cannot be entered (the last two said as missing, the user went looking for a
        file that was there)."""
        target = printable(os.readlink(path))
        try:
            os.stat(path)
        except PermissionError as exc:
            return PermissionError(f"a symbolic link whose target cannot be reached: it points to {target}, inside "
                                   f"a folder that cannot be entered (no execute permission): {exc.strerror or exc}")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return FileNotFoundError(f"a symbolic link loop: {_link_chain(path)}")
        return FileNotFoundError(f"a broken symbolic link: it points to {target}, which does not exist")

    def _path_of(self, uri: str) -> str:
        return local_path(uri)  # a file:// URI is percent-encoded: "with%20space.txt" is "with space.txt"

    def contains(self, uri: str) -> bool:
        """Is ``uri`` under this source's root (so --prune may remove it)?"""
        if self._folder:  # s3://b/notes/ holds notes/a.md, not the object s3://b/notes beside it
            return uri.startswith(self.root_uri + "/")
        return any(at_or_under(uri, root) for root in self._roots)

    def under(self, uris: Iterable[str]) -> list[str]:
        """The ``uris`` at or under this source's root, sorted: what --prune or `index remove` may remove."""
        return sorted(uri for uri in uris if self.contains(uri))


def objects_under(fs: Any, path: str) -> dict[str, dict[str, Any]]:
    """The objects under ``path`` (``bucket/key``) + "/", or in the whole bucket, by path, with the keys as
    they are, as ``fs.find`` gives them. Not fs.find: where nothing is under the prefix it looks for an object
    ``path`` itself, a HEAD that keys allowed only under the prefix may not make; and it drops the key's
    leading "/" (``s3://b//docs`` listed ``docs/``)."""
    bucket, _, key = path.partition("/")
    request = {"Bucket": bucket, "Prefix": f"{key}/" if key else ""}
    objects: dict[str, dict[str, Any]] = {}
    while True:
        page = fs.call_s3("list_objects_v2", **request)
        for obj in page.get("Contents", []):
            name = f"{bucket}/{obj['Key']}"
            objects[name] = {**obj, "name": name, "type": "file", "size": obj["Size"]}
        if not page.get("IsTruncated"):
            return objects
        request["ContinuationToken"] = page["NextContinuationToken"]


def storage_endpoint(scheme: str, storage: StorageSettings) -> tuple[str, str]:
    """The endpoint ``scheme``'s object storage is reached at, and the setting (and variable) that names it."""
    if scheme == "oss":
        return str(storage.oss_endpoint_url), "storage.oss_endpoint_url (UNIRANK_STORAGE__OSS_ENDPOINT_URL)"
    return storage.endpoint_url or "AWS S3", "storage.endpoint_url (UNIRANK_STORAGE__ENDPOINT_URL)"


def storage_problem(exc: BaseException, scheme: str, storage: StorageSettings) -> str | None:
    """Why object storage (``scheme`` s3 or oss, reached with ``storage``) failed, naming the setting to fix,
    as one or more sentences; None for an error it has no better words for than ``exc``'s own. botocore's
    ("Read timeout on endpoint URL", "Unable to locate credentials", "Forbidden") name no setting. Ingest,
    `index remove` and `models export` all say storage errors with it."""
    from botocore.exceptions import ConnectionError as NoConnection
    from botocore.exceptions import (ConnectTimeoutError, InvalidRegionError, NoCredentialsError,
                                     PartialCredentialsError, ReadTimeoutError)

    endpoint, setting = storage_endpoint(scheme, storage)
    if isinstance(exc, (ConnectTimeoutError, ReadTimeoutError)):  # before NoConnection: a connect timeout is one
        waited, limit = (("connect", "connect_timeout_s") if isinstance(exc, ConnectTimeoutError)
                         else ("answer", "read_timeout_s"))
        attempts = storage.attempts
        return (f"{endpoint} did not {waited} within {getattr(storage, limit):g} s ({attempts} attempt"
                f"{'s' * (attempts != 1)}). Check {setting} and that the storage is up; for a slow one, "
                f"raise storage.{limit} (UNIRANK_STORAGE__{limit.upper()}).")
    if isinstance(exc, NoConnection):  # refused, dropped, no such host
        return f"{str(exc).rstrip('.')}. Check {setting}{_virtual_host_hint(exc, scheme, storage)}."
    if isinstance(exc, InvalidRegionError):  # said as the endpoint's, or with no setting named
        return f"{str(exc).rstrip('.')}. {_REGION_FROM_SETTINGS if storage.region else _REGION_FROM_BOTO}"
    if isinstance(exc, PartialCredentialsError):
        return f"the credentials are incomplete ({exc}). {_SET_CREDENTIALS}"
    if isinstance(exc, NoCredentialsError):
        return f"no credentials were found. {_SET_CREDENTIALS}"
    if isinstance(exc, PermissionError):
        return access_denied(exc, "list this bucket")
    return None


_REGION_FROM_SETTINGS = "Check storage.region (UNIRANK_STORAGE__REGION): a region name such as eu-central-1."
_REGION_FROM_BOTO = ("storage.region is unset, so boto read it from AWS_REGION, AWS_DEFAULT_REGION or the AWS config "
                     "file: fix it there, or set storage.region (UNIRANK_STORAGE__REGION), e.g. eu-central-1.")


def _virtual_host_hint(exc: Exception, scheme: str, storage: StorageSettings) -> str:
    """Where an oss:// bucket was put in the endpoint's host name (virtual addressing, what OSS wants), the
    setting a local S3-compatible server needs instead: such a host (docs.localhost) does not exist."""
    from urllib.parse import urlsplit

    if scheme != "oss" or storage.oss_addressing_style != "virtual" or not storage.oss_endpoint_url:
        return ""
    failed = urlsplit(str(getattr(exc, "kwargs", {}).get("endpoint_url") or "")).hostname or ""
    endpoint = urlsplit(storage.oss_endpoint_url).hostname or ""
    if not endpoint or not failed.endswith(f".{endpoint}") or not _local_server(endpoint):
        return ""  # OSS itself (*.aliyuncs.com) wants virtual addressing: any failure there is another one
    return (f"; for a local S3-compatible server, set storage.oss_addressing_style = \"path\" "
            f"(UNIRANK_STORAGE__OSS_ADDRESSING_STYLE=path): \"virtual\" puts the bucket in the host name ({failed})")


def _local_server(host: str) -> bool:
    """A test or self-hosted server's host (localhost, an IP address, a name with no dot), not a cloud's."""
    import ipaddress

    try:
        ipaddress.ip_address(host.strip("[]"))
        return True
    except ValueError:
        return host == "localhost" or host.endswith(".localhost") or "." not in host


def access_denied(exc: PermissionError, action: str) -> str:
    """A 403 from object storage, worded with the settings to fix: the keys were rejected, or they may not
    ``action`` ("list this bucket", "read this object (s3:GetObject)")."""
    code, message = _s3_error(exc)  # a listing's 403 says why (InvalidAccessKeyId), a HEAD's only "Forbidden"
    said = f"{code}: {message.rstrip('.')}" if code and not code.isdigit() else str(exc)
    return (f"access denied (403 {said}): the storage rejected the credentials, or they may not {action}. "
            f"Check the keys and their permissions. {_SET_CREDENTIALS}")


def missing_bucket(exc: BaseException) -> bool:
    """Whether ``exc`` is S3's NoSuchBucket (which s3fs raises as a FileNotFoundError)."""
    return isinstance(exc, FileNotFoundError) and _s3_error(exc)[0] == "NoSuchBucket"


def _s3_error(exc: BaseException) -> tuple[str | None, str]:
    """The S3 error code and message of the botocore ClientError behind ``exc`` (s3fs raises its own
    FileNotFoundError or PermissionError from it), or None where there is none."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        error = getattr(cause, "response", None)
        if isinstance(error, dict) and error.get("Error", {}).get("Code"):
            return str(error["Error"]["Code"]), str(error["Error"].get("Message") or "")
        cause = cause.__cause__ or cause.__context__
    return None, ""


def _local_files(root: str) -> dict[str, dict[str, Any]]:
    """Every file under ``root``, following symbolic links: fsspec's ``find`` reports a link as type
    "other", so a folder moved away and linked back was skipped, and --prune then removed its documents.
    A folder is walked once, by its real path (a link to an ancestor would loop), and links are followed
    after the real files, so a document reached both ways keeps its own path. A broken link is listed
    too, marked "broken" (a link to a folder as well as one to a file): reading it fails in the report, and
    --prune keeps what was ingested at or under it. Hidden entries are passed over as they are met, not
    after: a hidden copy read first marked its file read, and the link to it (git-annex's layout, each
    document a link into ``.git/annex/objects``) was dropped as a second path to it. A file, folder or
    link gone since its folder was listed is passed over: a temp file made and removed meanwhile failed
    the whole run as a missing source. A folder that cannot be listed (no permission: ``lost+found``), or
    can be listed but not entered (read without execute permission), is listed marked "broken" as well;
    it stopped the whole run."""
    files: dict[str, dict[str, Any]] = {}
    walked: set[str] = set()
    read: set[str] = set()
    links: list[str] = []

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if real not in read:
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                return  # gone since its folder was listed (a sync client's or a download's temp file)
            read.add(real)
            files[path] = {"type": "file", "size": stat.st_size, "mtime": stat.st_mtime}

    def walk(folder: str) -> None:
        real = os.path.realpath(folder)
        if real in walked:
            return
        walked.add(real)
        try:
            with os.scandir(folder) as listing:
                entries = sorted(listing, key=lambda e: e.name)
            _require_enterable(entries)
        except FileNotFoundError:
            if folder == root:
                raise  # the source itself: "does not exist"
            return  # gone since its parent was listed
        except PermissionError:
            if folder == root:
                raise  # the source itself: the run's failure
            files[folder] = {"type": "file", "size": 0, "mtime": None, "broken": True}  # fails alone, as a file
            return
        for entry in entries:
            if _hidden(entry):
                continue
            if entry.is_symlink():
                links.append(entry.path)
            elif entry.is_dir():
                walk(entry.path)
            elif entry.is_file():
                add(entry.path)

    walk(root)
    while links:
        link = links.pop(0)
        if os.path.isdir(link):
            walk(link)
        elif os.path.isfile(link):
            add(link)
        elif os.path.lexists(link) and not os.path.exists(link):  # broken; a link gone since is passed over
            files[link] = {"type": "file", "size": 0, "mtime": None, "broken": True}
    return files


def _link_chain(link: str, most: int = 8) -> str:
    """The links from ``link``, as written, up to the first one met again: ``loop1.md -> loop2.md -> loop1.md``
    (``…`` where it goes on further, or loops through a linked folder on the way)."""
    hops, seen, path = [os.path.basename(link)], set(), os.path.abspath(link)
    while os.path.islink(path) and path not in seen and len(hops) <= most:
        seen.add(path)
        target = os.readlink(path)
        hops.append(target)
        path = os.path.normpath(os.path.join(os.path.dirname(path), target))
    if path not in seen:
        hops.append("…")
    return " -> ".join(printable(hop) for hop in hops)


def _require_enterable(entries: list[os.DirEntry[str]]) -> None:
    """Raise _NotEntered where the folder that listed ``entries`` cannot be entered: with read but no
    execute permission it lists its names, but looking at any of them is denied. One look says so for all
    (a file's own mode never denies it), before the entries are read (``is_dir`` may look too). A link is
    looked at, not followed: a link to a file in a locked folder elsewhere is its own failure."""
    if not entries:
        return
    try:
        os.stat(entries[0].path, follow_symlinks=False)
    except PermissionError as exc:
        raise _NotEntered(exc.errno, exc.strerror, exc.filename) from exc
    except OSError:
        pass  # gone since it was listed: the walk passes it over


class _NotEntered(PermissionError):
    """A folder that can be listed but not entered: its entries cannot be looked at."""

    def __str__(self) -> str:  # the source itself fails the run with it: say what to change
        return f"{super().__str__()}: its folder can be listed but not entered (no execute permission)"


def _unlistable(folder: str) -> str:
    """Why ``folder``, listed as broken, cannot be read: what listing and entering it say now."""
    try:
        with os.scandir(folder) as listing:
            _require_enterable(list(listing))
    except _NotEntered as exc:
        return f"a folder that can be listed but not entered (no execute permission): {exc.strerror or exc}"
    except OSError as exc:
        return f"a folder that cannot be listed: {exc.strerror or exc}"
    return "a folder that could not be listed when the run began and can be now: ingest again to read it"


def _hidden(entry: os.DirEntry[str]) -> bool:
    """An entry ``_not_a_document`` passes over: a hidden file or folder, or an Office lock file."""
    return entry.name.startswith(".") or (entry.name.startswith("~$") and not entry.is_dir())


def _not_a_document(path: str, root: str) -> bool:
    """Files a folder holds beside its documents, passed over without a report line: hidden files and
    anything in a hidden folder under the source (``.git/``, ``.DS_Store``), and the ``~$report.docx``
    lock file Office keeps beside a document while it is open. A hidden folder above the source
    (``~/.local/docs``) is the user's choice and counts as any other. An object key's ``.`` and ``..``
    segments (``odd/./c.md``) are parts of its name, not hidden names: S3 keys are not paths."""
    if path == root:
        return False  # the file the user named, even a hidden one
    prefix = root.rstrip("/") + "/"
    parts = (path[len(prefix):] if path.startswith(prefix) else path.rsplit("/", 1)[-1]).split("/")
    return any(part.startswith(".") and part not in (".", "..") for part in parts) or parts[-1].startswith("~$")


def _change_marker(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "mtime", "LastModified", "last_modified"):
        if info.get(key) is not None:
            return str(info[key])
    return ""


@dataclass(frozen=True)
class StorageLocation:
    """A local folder or an object storage prefix, opened with fsspec."""

    scheme: str  # "file", "s3" or "oss"
    fs: Any
    path: str  # without the scheme: an absolute local path (links not resolved), or "bucket/prefix"

    @property
    def is_object_storage(self) -> bool:
        return self.scheme in OBJECT_SCHEMES

    def uri(self, path: str | None = None) -> str:
        """``path`` (default: this location) as the user would write it: a local path or scheme://bucket/key."""
        path = self.path if path is None else path
        return f"{self.scheme}://{path}" if self.is_object_storage else path


def filesystem_for(uri: str, storage: StorageSettings | None = None, *, what: str = "source") -> StorageLocation:
    """The fsspec filesystem and path for a local path or an s3:// / oss:// URI, reached with ``storage``'s
    endpoints, keys, timeouts and attempts. ``what`` the URI is, as a refusal names it: `models export`'s
    destination was called a "source"."""
    scheme, path, _ = _parse(uri, what)
    return StorageLocation(scheme, _fsspec_filesystem(scheme, storage or StorageSettings()), path)


def _absolute(path: str) -> str:
    """A local source's path, absolute but not resolved: the files under it keep their paths through a
    linked folder (``_local_files``), so a root resolved through a link (``docs/share`` read as
    ``/mnt/share``) named none of them: `index remove IDX docs/share` found nothing, and `ingest docs/share`
    indexed its files a second time."""
    return os.path.abspath(path)


def _parse(uri: str, what: str = "source") -> tuple[str, str, bool]:
    """The scheme ("file", "s3" or "oss") and path of a source, refusing what names none, without the
    storage settings: `index remove` reads no storage, so it needs none of them. And whether an object
    storage URI ends in "/": ``s3://b/notes/`` names the prefix ``notes/``, not an object ``notes``."""
    if not uri.strip():  # read as ".": `index remove IDX "$UNSET" --yes` removed every document under it
        raise SourceError(f"The {what} must be a folder, a file or an s3:// / oss:// URI, got {uri!r}.")
    scheme, sep, rest = uri.partition("://")
    if scheme == "file" and sep:  # before `not sep`: "file://" is refused as a URI, not read as a folder named "file:"
        return "file", _absolute(local_path(uri)), False
    if not sep:
        _refuse_one_slash(uri, what)
        return "file", _absolute(os.path.expanduser(uri)), False
    if scheme not in OBJECT_SCHEMES:
        raise SourceError(f"Unsupported {what} {uri!r}: use a local path, s3://bucket/prefix or oss://bucket/prefix.")
    if not rest.split("/", 1)[0]:  # "s3://" was read as a local folder named "s3:"; "s3:///key" has no bucket either
        raise SourceError(f"{scheme}:// needs a bucket: {scheme}://bucket/prefix")
    return scheme, rest.rstrip("/"), rest.endswith("/")


def _refuse_one_slash(uri: str, what: str) -> None:
    """Refuse ``s3:/bucket/x``, ``oss:bucket``: read as a local path, `models export --to s3:/models/x` copied
    the model into a folder named "s3:" and said it was exported."""
    written = re.match(r"(s3|oss):/?(.*)", uri, re.IGNORECASE | re.DOTALL)
    if written:
        scheme, rest = written[1], written[2]
        meant = f"{scheme.lower()}://{rest or 'bucket/prefix'}"
        raise SourceError(f"The {what} {uri!r} is not an object storage URI ({scheme}:// takes two slashes): did "
                          f"you mean {meant}? For a local folder of that name, write ./{uri}.")


def _fsspec_filesystem(scheme: str, storage: StorageSettings) -> Any:
    if scheme == "file":
        return fsspec.filesystem("file")
    endpoint = storage.oss_endpoint_url if scheme == "oss" else storage.endpoint_url
    if scheme == "oss" and not endpoint:
        raise SourceError(
            "oss:// needs the OSS S3-compatible endpoint: set storage.oss_endpoint_url "
            "(or UNIRANK_STORAGE__OSS_ENDPOINT_URL), e.g. https://oss-cn-hangzhou.aliyuncs.com."
        )
    client_kwargs: dict[str, Any] = {}
    if endpoint:
        client_kwargs["endpoint_url"] = endpoint
    if storage.region:
        client_kwargs["region_name"] = storage.region
    options: dict[str, Any] = {"client_kwargs": client_kwargs, "skip_instance_cache": True}
    if bool(storage.access_key_id) != bool(storage.secret_access_key):
        given, missing = (("access_key_id", "secret_access_key") if storage.access_key_id
                          else ("secret_access_key", "access_key_id"))
        raise SourceError(f"storage.{given} is set but storage.{missing} is not: set both (UNIRANK_STORAGE__"
                          f"{given.upper()} and UNIRANK_STORAGE__{missing.upper()}), or neither to use "
                          "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY.")
    if storage.access_key_id:
        options["key"] = storage.access_key_id
        options["secret"] = storage.secret_access_key
    config: dict[str, Any] = {"connect_timeout": storage.connect_timeout_s, "read_timeout": storage.read_timeout_s,
                              "retries": {"mode": "standard", "total_max_attempts": storage.attempts}}
    if scheme == "oss":
        config["s3"] = {"addressing_style": storage.oss_addressing_style}
    options["config_kwargs"] = config
    try:
        fs = _keyed_s3()(**options)
    except ImportError as exc:  # pragma: no cover - s3fs is a dependency
        raise SourceError("Object storage needs s3fs: pip install s3fs") from exc
    # botocore makes the attempts; s3fs's own tries (5) multiplied them, twice over for a read (its
    # read retries wrap its request's).
    fs.retries = 1
    return fs


_VERSION_MARK = "?versionId="
_STAND_IN = "\x00"  # a NUL: in no key listed (S3 lists in XML 1.0, which cannot carry one)


@cache
def _keyed_s3() -> type:
    """s3fs's filesystem, reading a path as bucket/key whole. s3fs cuts a key at "?versionId=" (its way
    to name an object version, used only when version_aware): "v/a.md?versionId=2.md" read, listed
    and checked the object "v/a.md", whose text was indexed under the other key's URI."""
    from s3fs import S3FileSystem

    class KeyedS3FileSystem(S3FileSystem):
        def split_path(self, path: str) -> tuple[str, str, str | None]:
            if self.version_aware or _VERSION_MARK not in path or _STAND_IN in path:
                return super().split_path(path)
            bucket, key, _ = super().split_path(path.replace(_VERSION_MARK, _STAND_IN))
            return bucket, key.replace(_STAND_IN, _VERSION_MARK), None

    return KeyedS3FileSystem
