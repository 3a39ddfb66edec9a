"""Rules on the node directories a cluster block names (POSIX paths on the node, compared lexically)."""
from __future__ import annotations

import posixpath

from dmf.core.errors import InputError, quote


def _normal(path: str) -> str:
    # normpath keeps exactly two leading slashes (POSIX leaves '//' implementation-defined); Linux does not.
    normal = posixpath.normpath(path)
    return "/" + normal.lstrip("/") if normal.startswith("//") else normal


def is_within(path: str, directory: str) -> bool:
    """Whether `path` is `directory` or below it ('/a/commitlog_archive' is not below '/a/commitlog')."""
    path, directory = _normal(path), _normal(directory)
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def check_commitlog_archive_dir(host: str, commitlog_dir: str, archive_dir: str) -> None:
    """Shipping deletes the segments it ships from the archive dir, so it must not overlap the live commit logs."""
    if is_within(archive_dir, commitlog_dir) or is_within(commitlog_dir, archive_dir):
        raise InputError(f"host {host}: commitlog_archive_dir {quote(archive_dir)} overlaps commitlog_dir "
                         f"{quote(commitlog_dir)} (the same directory, or one inside the other); shipping "
                         "deletes what it ships, so it would delete live segments: use a separate directory")
