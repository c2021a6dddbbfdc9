"""Source URIs as unirank writes them, and the paths they name.

A local file's URI is percent-encoded (``Path.as_uri``: a space is ``%20``, a ``?`` is ``%3F``); an
object's URI (``s3://``, ``oss://``) carries its key as it is, where ``?``, ``#``, ``%`` and spaces are
ordinary characters. So only ``file://`` URIs are decoded, and no URI is split at ``?`` or ``#``
except a ``file://`` one, where those can only be encoded.

A ``file://`` URI names a path on this machine: ``file:///abs/path`` (or ``file://localhost/abs/path``).
``file://docs`` is refused: ``docs`` is the URI's host, not a folder, and reading its path alone ("")
took the current folder, so `ingest file://no-such-folder` ingested the whole current folder and
`index remove IDX file://gone` removed every source under it.
"""

from __future__ import annotations

import os
from pathlib import PurePosixPath
from urllib.parse import unquote_to_bytes, urlsplit

from unirank.errors import SourceError


def uri_path(uri: str) -> str:
    """The local path of a ``file://`` URI, ``bucket/key`` of an object's; a plain path as it is. As text
    to show: a byte of a file name that is not UTF-8 is U+FFFD (see :func:`local_path`)."""
    return printable(local_path(uri)) if uri.startswith("file://") else local_path(uri)


def printable(path: str) -> str:
    """``path`` with the bytes of a name that are not UTF-8 (kept by ``os.fsdecode`` as lone surrogates,
    which no terminal or index takes) as U+FFFD, the replacement character."""
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def local_path(uri: str) -> str:
    """:func:`uri_path` to open: a file name that is not UTF-8 (``b"bad\\xffname.txt"``) keeps its bytes, as
    ``os.fsdecode`` writes them, so the file the URI was made from (``Path.as_uri``) is the one read."""
    scheme, sep, rest = uri.partition("://")
    if not sep or len(scheme) <= 1:  # a path (or a Windows drive letter), not a URI
        return uri
    if scheme == "file":
        return os.fsdecode(unquote_to_bytes(_file_uri_path(uri)))
    return rest


def _file_uri_path(uri: str) -> str:
    """The (still percent-encoded) path of a ``file://`` URI that names one on this machine."""
    parts = urlsplit(uri)
    if parts.netloc.lower() not in ("", "localhost") or not parts.path:
        raise SourceError(f"{uri!r} is not a local path: a file:// URI needs three slashes and an absolute "
                          "path (file:///home/me/docs), or write the path itself (docs, /home/me/docs).")
    return parts.path


def at_or_under(uri: str, root: str) -> bool:
    """Whether ``uri`` is ``root`` or names something under it (``root/…``, not ``root-old/…``)."""
    root = root.rstrip("/")
    return uri == root or uri.startswith(root + "/")


def file_name(uri: str) -> str:
    """The last part of the path a URI names (``Travel policy.pdf``)."""
    return PurePosixPath(uri_path(uri).replace("\\", "/")).name
