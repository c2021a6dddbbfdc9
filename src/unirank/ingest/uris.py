"""Source URIs as unirank writes them, and the paths they name.

A local file's URI is percent-encoded (``Path.as_uri``: a space is ``%20``, a ``?`` is ``%3F``); an
object's URI (``s3://``, ``oss://``) carries its key as it is, where ``?``, ``#``, ``%`` and spaces are
ordinary characters. So only ``file://`` URIs are decoded, and no URI is split at ``?`` or ``#``
except a ``file://`` one, where those can only be encoded.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from urllib.parse import urlsplit
from urllib.request import url2pathname


def uri_path(uri: str) -> str:
    """The local path of a ``file://`` URI, ``bucket/key`` of an object's; a plain path as it is."""
    scheme, sep, rest = uri.partition("://")
    if not sep or len(scheme) <= 1:  # a path (or a Windows drive letter), not a URI
        return uri
    if scheme == "file":
        return url2pathname(urlsplit(uri).path)
    return rest


def file_name(uri: str) -> str:
    """The last part of the path a URI names (``Travel policy.pdf``)."""
    return PurePosixPath(uri_path(uri).replace("\\", "/")).name
